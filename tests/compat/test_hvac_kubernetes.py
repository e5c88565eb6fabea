"""Compatibility: the Kubernetes auth method through the real hvac client: config and roles,
a login against the stand-in API server (the `k8s_standin` example, $ARCANUM_K8S_STANDIN), and
a login against an unreachable API server, which must come back as hvac's Forbidden, not hang.
"""

import json
import os
import subprocess

import hvac
import pytest



def test_kubernetes_config_and_roles_through_hvac(root, server):
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(
        kubernetes_host="https://127.0.0.1:1",
        token_reviewer_jwt="reviewer.jwt.value",
        disable_local_ca_jwt=True,
    )
    config = root.auth.kubernetes.read_config()
    assert config["kubernetes_host"] == "https://127.0.0.1:1"
    assert "token_reviewer_jwt" not in config, "the reviewer JWT must never be read back"

    root.auth.kubernetes.create_role(
        name="app",
        bound_service_account_names=["app"],
        bound_service_account_namespaces=["apps", "team-*"],
        policies=["app-read"],
        ttl="1h",
    )
    role = root.auth.kubernetes.read_role(name="app")
    assert role["bound_service_account_names"] == ["app"]
    assert role["bound_service_account_namespaces"] == ["apps", "team-*"]
    assert "app-read" in role["token_policies"]
    assert role["token_ttl"] == 3600
    assert root.auth.kubernetes.list_roles()["keys"] == ["app"]

    # Not a JWT: refused before any call to the API server.
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        hvac.Client(url=server).auth.kubernetes.login(role="app", jwt="not-a-jwt")

    root.auth.kubernetes.delete_role(name="app")
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.auth.kubernetes.list_roles()


@pytest.fixture()
def standin():
    path = os.environ.get("ARCANUM_K8S_STANDIN")
    assert path and os.path.exists(path), "ARCANUM_K8S_STANDIN must point at the k8s_standin example binary"
    proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_kubernetes_login_through_hvac(root, standin):
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(
        kubernetes_host=standin["host"],
        kubernetes_ca_cert=standin["ca_pem"],
        token_reviewer_jwt=standin["reviewer"],
    )
    root.sys.create_or_update_policy("app-read", 'path "secret/data/app/*" { capabilities = ["read"] }')
    root.auth.kubernetes.create_role(
        name="app",
        bound_service_account_names=["app-sa"],
        bound_service_account_namespaces=["prod"],
        policies=["app-read"],
        ttl="1h",
    )
    client = hvac.Client(url=root.url)
    answer = client.auth.kubernetes.login(role="app", jwt=standin["jwt"])
    auth = answer["auth"]
    assert client.token == auth["client_token"] and client.is_authenticated()
    assert auth["policies"] == ["app-read", "default"] and auth["lease_duration"] == 3600
    assert auth["metadata"]["service_account_name"] == "app-sa"
    assert auth["metadata"]["service_account_namespace"] == "prod"
    assert client.auth.token.lookup_self()["data"]["display_name"] == "kubernetes-prod-app-sa"
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=root.url).auth.kubernetes.login(role="app", jwt=standin["jwt"] + "x")
