"""Compatibility: the AppRole auth method through the real hvac client (every AppRole call hvac
has), and the request sequences External Secrets Operator and vault agent send for AppRole."""

import hvac
import pytest
from hvac.exceptions import InvalidPath, InvalidRequest


@pytest.fixture()
def approle(root):
    root.sys.enable_auth_method("approle")
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    root.sys.create_or_update_policy("app", 'path "secret/data/app/*" { capabilities = ["read"] }')
    return root


def test_roles_and_role_ids(approle):
    approle.auth.approle.create_or_update_approle(
        "web",
        token_policies=["app"],
        token_ttl="10m",
        token_max_ttl="1h",
        secret_id_ttl="30m",
        secret_id_num_uses=5,
        secret_id_bound_cidrs=["127.0.0.0/8"],
        token_type="default",
        enable_local_secret_ids=False,
    )
    role = approle.auth.approle.read_role("web")["data"]
    assert role["token_policies"] == ["app"] and role["policies"] == ["app"]
    assert (role["token_ttl"], role["token_max_ttl"], role["secret_id_ttl"]) == (600, 3600, 1800)
    assert role["secret_id_num_uses"] == 5 and role["bind_secret_id"] is True
    assert role["secret_id_bound_cidrs"] == ["127.0.0.0/8"]
    assert approle.auth.approle.list_roles()["data"]["keys"] == ["web"]

    role_id = approle.auth.approle.read_role_id("web")["data"]["role_id"]
    assert len(role_id) == 36
    approle.auth.approle.update_role_id("web", "my-chosen-role-id")
    assert approle.auth.approle.read_role_id("web")["data"]["role_id"] == "my-chosen-role-id"

    approle.auth.approle.delete_role("web")
    with pytest.raises(InvalidPath):
        approle.auth.approle.read_role("web")


def test_secret_ids_by_value_and_accessor(approle):
    approle.auth.approle.create_or_update_approle("web", token_policies=["app"])
    made = approle.auth.approle.generate_secret_id(
        "web", metadata={"team": "payments"}, cidr_list=["127.0.0.1/32"]
    )["data"]
    secret_id, accessor = made["secret_id"], made["secret_id_accessor"]

    looked = approle.auth.approle.read_secret_id("web", secret_id)["data"]
    assert looked["metadata"] == {"team": "payments"}
    assert looked["cidr_list"] == ["127.0.0.1/32"] and looked["secret_id_accessor"] == accessor
    assert approle.auth.approle.read_secret_id_accessor("web", accessor)["data"]["metadata"] == {"team": "payments"}

    custom = approle.auth.approle.create_custom_secret_id("web", "my-custom-secret-id")["data"]
    listed = approle.auth.approle.list_secret_id_accessors("web")["data"]["keys"]
    assert sorted(listed) == sorted([accessor, custom["secret_id_accessor"]])

    approle.auth.approle.destroy_secret_id("web", secret_id)
    approle.auth.approle.destroy_secret_id_accessor("web", custom["secret_id_accessor"])
    with pytest.raises(InvalidPath):
        approle.auth.approle.list_secret_id_accessors("web")
    with pytest.raises(InvalidRequest, match="invalid role or secret ID"):
        approle.auth.approle.login(approle.auth.approle.read_role_id("web")["data"]["role_id"], secret_id)


def test_login_and_wrapped_secret_id(approle, server):
    approle.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "pw"})
    approle.auth.approle.create_or_update_approle("web", token_policies=["app"], token_ttl="20m")
    role_id = approle.auth.approle.read_role_id("web")["data"]["role_id"]
    wrapped = approle.auth.approle.generate_secret_id("web", metadata={"host": "ci-7"}, wrap_ttl="2m")
    assert wrapped["data"] is None
    assert wrapped["wrap_info"]["creation_path"] == "auth/approle/role/web/secret-id"

    # The app holds only the wrapping token, so it unwraps with it as its own token.
    holder = hvac.Client(url=server, token=wrapped["wrap_info"]["token"])
    secret_id = holder.sys.unwrap()["data"]["secret_id"]
    app = hvac.Client(url=server)
    auth = app.auth.approle.login(role_id, secret_id)["auth"]
    assert auth["metadata"] == {"host": "ci-7", "role_name": "web"}
    assert auth["policies"] == ["app", "default"] and auth["token_policies"] == ["app", "default"]
    assert auth["lease_duration"] == 1200 and auth["renewable"] is True
    assert app.is_authenticated()
    assert app.secrets.kv.v2.read_secret_version(path="app/db")["data"]["data"] == {"password": "pw"}


def test_role_without_secret_id_bound_by_cidr(approle, server):
    approle.auth.approle.create_or_update_approle(
        "ci", bind_secret_id=False, secret_id_bound_cidrs=["127.0.0.1/32"], token_policies=["app"]
    )
    role_id = approle.auth.approle.read_role_id("ci")["data"]["role_id"]
    app = hvac.Client(url=server)
    assert app.auth.approle.login(role_id)["auth"]["metadata"] == {"role_name": "ci"}

    approle.auth.approle.create_or_update_approle(
        "ci", bind_secret_id=False, secret_id_bound_cidrs=["10.0.0.0/8"]
    )
    with pytest.raises(InvalidRequest, match="unauthorized by CIDR restrictions"):
        app.auth.approle.login(role_id)


def test_external_secrets_operator_sequence(approle, server):
    """ESO's AppRole provider: POST auth/<mount>/login with role_id and secret_id (the secret ID
    from a Kubernetes Secret), then the KV v2 read with the token it got, then revoke-self when
    the client is closed."""
    approle.sys.enable_auth_method("approle", path="eso-approle")
    approle.secrets.kv.v2.create_or_update_secret(path="app/api", secret={"key": "v"})
    approle.auth.approle.create_or_update_approle("eso", token_policies=["app"], mount_point="eso-approle")
    role_id = approle.auth.approle.read_role_id("eso", mount_point="eso-approle")["data"]["role_id"]
    secret_id = approle.auth.approle.generate_secret_id("eso", mount_point="eso-approle")["data"]["secret_id"]

    eso = hvac.Client(url=server)
    answer = eso.adapter.post("/v1/auth/eso-approle/login", json={"role_id": role_id, "secret_id": secret_id})
    eso.token = answer["auth"]["client_token"]
    read = eso.adapter.get("/v1/secret/data/app/api")
    assert read["data"]["data"] == {"key": "v"}
    eso.adapter.post("/v1/auth/token/revoke-self")
    assert not eso.is_authenticated()
