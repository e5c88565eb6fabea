"""Compatibility: rate-limit quotas through the real hvac client (create_or_update_quota,
read_quota, list_quotas, delete_quota), and that hvac surfaces a 429 as its rate-limit error."""

import hvac
import pytest


def test_rate_limit_quotas_through_hvac(root):
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": 2})
    root.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": "v"}, mount_point="secret")

    # hvac sends name, path, rate, interval, block_interval and its `type` field.
    root.sys.create_or_update_quota(name="kv", rate=3.0, path="secret/", interval="1m", rate_limit_type="rate-limit")
    quota = root.sys.read_quota(name="kv")
    assert quota["data"]["name"] == "kv"
    assert quota["data"]["type"] == "rate-limit"
    assert quota["data"]["path"] == "secret/"
    assert quota["data"]["rate"] == 3.0
    assert quota["data"]["interval"] == 60
    assert root.sys.list_quotas()["data"]["keys"] == ["kv"]

    for _ in range(3):
        root.secrets.kv.v2.read_secret_version(path="app", mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.RateLimitExceeded) as refused:
        root.secrets.kv.v2.read_secret_version(path="app", mount_point="secret", raise_on_deleted_version=True)
    assert "rate limit quota exceeded" in str(refused.value)

    # Updating keeps what is not sent; deleting lifts the limit.
    root.sys.create_or_update_quota(name="kv", rate=5.0)
    assert root.sys.read_quota(name="kv")["data"]["path"] == "secret/"
    root.sys.delete_quota(name="kv")
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.read_quota(name="kv")
    root.secrets.kv.v2.read_secret_version(path="app", mount_point="secret", raise_on_deleted_version=True)
