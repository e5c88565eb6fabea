"""Compatibility: KV v1/v2, policies, tokens, mounts and userpass through the real hvac client."""

import hvac
import pytest



def test_kv_v2_through_hvac(root):
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": 2})
    mounts = root.sys.list_mounted_secrets_engines()
    assert mounts["secret/"]["options"]["version"] == "2"
    assert mounts["data"]["secret/"]["type"] == "kv"

    kv = root.secrets.kv.v2
    written = kv.create_or_update_secret(path="app/db", secret={"user": "u1", "pass": "p1"}, mount_point="secret")
    assert written["data"]["version"] == 1
    read = kv.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"user": "u1", "pass": "p1"}
    assert read["data"]["metadata"]["version"] == 1

    kv.patch(path="app/db", secret={"pass": "p2"}, mount_point="secret")
    read = kv.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"user": "u1", "pass": "p2"}
    assert read["data"]["metadata"]["version"] == 2

    # Check-and-set: a stale version is refused with Vault's message.
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        kv.create_or_update_secret(path="app/db", secret={"x": "y"}, cas=1, mount_point="secret")
    assert "did not match the current version" in str(info.value)

    old = kv.read_secret_version(path="app/db", version=1, mount_point="secret", raise_on_deleted_version=True)
    assert old["data"]["data"]["pass"] == "p1"

    kv.delete_latest_version_of_secret(path="app/db", mount_point="secret")
    deleted = kv.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)
    kv.undelete_secret_versions(path="app/db", versions=[2], mount_point="secret")
    assert kv.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]["pass"] == "p2"
    kv.destroy_secret_versions(path="app/db", versions=[1], mount_point="secret")
    metadata = kv.read_secret_metadata(path="app/db", mount_point="secret")
    assert metadata["data"]["versions"]["1"]["destroyed"] is True
    assert metadata["data"]["current_version"] == 2

    kv.update_metadata(path="app/db", max_versions=5, custom_metadata={"owner": "team-a"}, mount_point="secret")
    metadata = kv.read_secret_metadata(path="app/db", mount_point="secret")
    assert metadata["data"]["max_versions"] == 5
    assert metadata["data"]["custom_metadata"] == {"owner": "team-a"}

    kv.create_or_update_secret(path="app/other", secret={"a": "b"}, mount_point="secret")
    listed = kv.list_secrets(path="app", mount_point="secret")
    assert sorted(listed["data"]["keys"]) == ["db", "other"]

    kv.configure(max_versions=3, cas_required=False, mount_point="secret")
    assert kv.read_configuration(mount_point="secret")["data"]["max_versions"] == 3

    kv.delete_metadata_and_all_versions(path="app/db", mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path="app/db", mount_point="secret")


def test_kv_v1_through_hvac(root):
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    kv = root.secrets.kv.v1
    kv.create_or_update_secret(path="team/a", secret={"k": "v"}, mount_point="kv1")
    assert kv.read_secret(path="team/a", mount_point="kv1")["data"] == {"k": "v"}
    kv.create_or_update_secret(path="team/a", secret={"k": "v2"}, mount_point="kv1")
    assert kv.read_secret(path="team/a", mount_point="kv1")["data"] == {"k": "v2"}
    assert kv.list_secrets(path="team", mount_point="kv1")["data"]["keys"] == ["a"]
    kv.delete_secret(path="team/a", mount_point="kv1")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret(path="team/a", mount_point="kv1")


def test_policies_through_hvac(root):
    policy = 'path "secret/data/app/*" {\n  capabilities = ["read", "list"]\n}\n'
    root.sys.create_or_update_policy(name="app-read", policy=policy)
    assert "app-read" in root.sys.list_policies()["data"]["policies"]
    assert root.sys.read_policy(name="app-read")["data"]["rules"] == policy
    root.sys.create_or_update_acl_policy(name="other", policy='path "kv1/*" { capabilities = ["read"] }')
    assert "other" in root.sys.list_acl_policies()["data"]["keys"]
    assert "kv1" in root.sys.read_acl_policy(name="other")["data"]["policy"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        root.sys.create_or_update_policy(name="broken", policy='path "x" { capabilities = ["raed"] }')
    assert "raed" in str(info.value)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.delete_policy(name="default")
    root.sys.delete_policy(name="app-read")
    assert "app-read" not in root.sys.list_policies()["data"]["policies"]


def test_tokens_and_enforcement_through_hvac(root, server):
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": 2})
    root.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pass": "s3cret"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(path="other/x", secret={"pass": "nope"}, mount_point="secret")
    root.sys.create_or_update_policy(name="app-read", policy='path "secret/data/app/*" { capabilities = ["read"] }')

    created = root.auth.token.create(policies=["app-read"], ttl="1h")
    token = created["auth"]["client_token"]
    assert created["auth"]["policies"] == ["app-read", "default"]
    assert created["auth"]["lease_duration"] == 3600

    app = hvac.Client(url=server, token=token)
    me = app.auth.token.lookup_self()["data"]
    assert me["policies"] == ["app-read", "default"]
    assert isinstance(me["ttl"], int) and 3500 < me["ttl"] <= 3600
    assert me["type"] == "service" and me["renewable"] is True and me["expire_time"]

    assert app.secrets.kv.v2.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"pass": "s3cret"}
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v2.read_secret_version(path="other/x", mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pass": "hijack"}, mount_point="secret")
    assert root.secrets.kv.v2.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]["pass"] == "s3cret"

    renewed = app.auth.token.renew_self(increment="2h")
    assert renewed["auth"]["client_token"] == token

    orphan = root.auth.token.create_orphan(policies=["app-read"])
    assert orphan["auth"]["orphan"] is True
    looked_up = root.auth.token.lookup(orphan["auth"]["client_token"])["data"]
    assert looked_up["orphan"] is True

    app.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        app.auth.token.lookup_self()


def test_mounts_and_auth_methods_through_hvac(root):
    root.sys.enable_secrets_engine("kv", path="team-kv", description="team secrets", options={"version": "2"})
    assert root.sys.read_mount_configuration(path="team-kv")["data"]["default_lease_ttl"] > 0
    root.sys.tune_mount_configuration(path="team-kv", default_lease_ttl="1h", max_lease_ttl="2h")
    tuned = root.sys.read_mount_configuration(path="team-kv")
    assert tuned["data"]["default_lease_ttl"] == 3600 and tuned["data"]["max_lease_ttl"] == 7200
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_secrets_engine("kv", path="team-kv")
    root.sys.disable_secrets_engine(path="team-kv")
    assert "team-kv/" not in root.sys.list_mounted_secrets_engines()["data"]

    root.sys.enable_auth_method("userpass", path="userpass")
    assert "userpass/" in root.sys.list_auth_methods()["data"]
    assert "token/" in root.sys.list_auth_methods()["data"]
    root.sys.tune_auth_method(path="userpass", default_lease_ttl="30m", max_lease_ttl="1h")
    assert root.sys.read_auth_method_tuning(path="userpass")["data"]["default_lease_ttl"] == 1800
    root.sys.tune_auth_method(
        path="userpass",
        description="people",
        audit_non_hmac_request_keys=["username"],
        audit_non_hmac_response_keys=["username"],
        listing_visibility="unauth",
        passthrough_request_headers=["X-Team"],
        token_type="default-service",
    )
    tuned = root.sys.read_auth_method_tuning(path="userpass")["data"]
    assert tuned["description"] == "people" and tuned["listing_visibility"] == "unauth"
    assert tuned["audit_non_hmac_request_keys"] == ["username"] and tuned["token_type"] == "default-service"
    assert tuned["passthrough_request_headers"] == ["X-Team"] and tuned["default_lease_ttl"] == 1800
    root.sys.disable_auth_method(path="userpass")
    assert "userpass/" not in root.sys.list_auth_methods()["data"]


def test_userpass_login_through_hvac(root, server):
    root.sys.enable_auth_method("userpass")
    root.sys.create_or_update_policy(name="reader", policy='path "cubbyhole/*" { capabilities = ["read"] }')
    root.auth.userpass.create_or_update_user(username="alice", password="correct horse", policies=["reader"])
    client = hvac.Client(url=server)
    login = client.auth.userpass.login(username="alice", password="correct horse")
    assert login["auth"]["client_token"]
    assert "reader" in login["auth"]["policies"] and "default" in login["auth"]["policies"]
    assert login["auth"]["metadata"] == {"username": "alice"}
    assert client.is_authenticated()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=server).auth.userpass.login(username="alice", password="wrong")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=server).auth.userpass.login(username="nobody", password="wrong")
