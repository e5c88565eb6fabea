"""Compatibility: response wrapping through the real hvac client — sys.wrap / sys.unwrap,
wrap_ttl on token creation and on any adapter request, auth_cubbyhole (log in with a wrapped
token), KV v1 and v2 reads, and wrapped database credentials whose lease is the original's
(against the real MariaDB, ARCANUM_TEST_MYSQL_ADDR, default 127.0.0.1:3306)."""

import uuid

import hvac
import pytest
from hvac.exceptions import InvalidRequest

from test_hvac_database import MYSQL_ADDR, admin_sql, connect, make_admin, user_exists


def test_wrap_unwrap_and_lookup_through_hvac(root, server):
    wrapped = root.sys.wrap(payload={"api_key": "k-123"}, ttl=120)
    info = wrapped["wrap_info"]
    assert wrapped["data"] is None
    assert info["ttl"] == 120 and info["creation_path"] == "sys/wrapping/wrap"

    looked = root.adapter.post("/v1/sys/wrapping/lookup", json={"token": info["token"]})
    assert looked["data"]["creation_ttl"] == 120

    unwrapped = root.sys.unwrap(info["token"])
    assert unwrapped["data"] == {"api_key": "k-123"}
    with pytest.raises(InvalidRequest, match="wrapping token is not valid or does not exist"):
        root.sys.unwrap(info["token"])

    # A client holding only the wrapping token unwraps with it as its own token.
    wrapped = root.sys.wrap(payload={"n": "1"}, ttl="5m")
    holder = hvac.Client(url=server, token=wrapped["wrap_info"]["token"])
    assert holder.sys.unwrap()["data"] == {"n": "1"}


def test_wrapped_token_creation_and_auth_cubbyhole(root, server):
    wrapped = root.auth.token.create(policies=["default"], ttl="1h", wrap_ttl="5m")
    info = wrapped["wrap_info"]
    assert wrapped["auth"] is None and info["creation_path"] == "auth/token/create"

    # hvac's wrapped login: the unwrapped auth block becomes the client's token.
    client = hvac.Client(url=server)
    answer = client.auth_cubbyhole(info["token"])
    assert answer["auth"]["accessor"] == info["wrapped_accessor"]
    assert client.token == answer["auth"]["client_token"]
    assert client.lookup_token()["data"]["policies"] == ["default"]


def test_wrapped_kv_reads(root):
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(path="app", secret={"password": "v1-pw"}, mount_point="kv1")
    root.sys.enable_secrets_engine("kv", path="kv2", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret(path="app", secret={"password": "v2-pw"}, mount_point="kv2")

    v1 = root.adapter.get("/v1/kv1/app", wrap_ttl="1m")
    assert v1["data"] is None and v1["wrap_info"]["creation_path"] == "kv1/app"
    assert root.sys.unwrap(v1["wrap_info"]["token"])["data"] == {"password": "v1-pw"}

    v2 = root.adapter.get("/v1/kv2/data/app", wrap_ttl=60)
    original = root.sys.unwrap(v2["wrap_info"]["token"])
    assert original["data"]["data"] == {"password": "v2-pw"}
    assert original["data"]["metadata"]["version"] == 1


def test_wrapped_database_credentials_keep_their_lease(root):
    root.sys.enable_secrets_engine("database", path="database")
    admin = make_admin()
    try:
        db = root.secrets.database
        db.configure(
            name="maria",
            plugin_name="mysql-database-plugin",
            allowed_roles=["app"],
            connection_url="{{username}}:{{password}}@tcp(" + MYSQL_ADDR + ")/",
            username=admin,
            password="initial-admin-pw",
        )
        statements = ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'", "GRANT SELECT ON test.* TO '{{name}}'@'%'"]
        db.create_role(name="app", db_name="maria", creation_statements=statements, default_ttl="1h", max_ttl="2h")

        wrapped = root.adapter.get("/v1/database/creds/app", wrap_ttl="5m")
        assert wrapped["data"] is None and wrapped["lease_id"] == ""
        creds = root.sys.unwrap(wrapped["wrap_info"]["token"])
        lease_id = creds["lease_id"]
        assert lease_id.startswith("database/creds/app/") and creds["lease_duration"] == 3600
        username, password = creds["data"]["username"], creds["data"]["password"]
        connect(username, password).close()

        # The lease is the original's: it can be looked up and revoked, and revoking drops the user.
        assert root.sys.read_lease(lease_id=lease_id)["data"]["id"] == lease_id
        root.sys.revoke_lease(lease_id=lease_id)
        assert not user_exists(username)
    finally:
        admin_sql(f"DROP USER IF EXISTS '{admin}'@'%'")


def test_policy_wrapping_bounds_through_hvac(root, server):
    root.sys.enable_secrets_engine("kv", path="kv", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(path="s", secret={"v": "x"}, mount_point="kv")
    name = "wrapped-" + uuid.uuid4().hex[:6]
    root.sys.create_or_update_policy(
        name=name, policy='path "kv/s" {\n  capabilities = ["read"]\n  max_wrapping_ttl = "90s"\n}\n'
    )
    token = root.auth.token.create(policies=[name])["auth"]["client_token"]
    client = hvac.Client(url=server, token=token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v1.read_secret(path="s", mount_point="kv")
    wrapped = client.adapter.get("/v1/kv/s", wrap_ttl="60s")
    assert client.sys.unwrap(wrapped["wrap_info"]["token"])["data"] == {"v": "x"}
