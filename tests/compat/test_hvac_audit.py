"""Compatibility: audit devices through the real hvac client — enable (with hvac's legacy `path`
option too), list, calculate_hash, disable — and that what hvac writes is in the log as HMACs."""

import json
import os
import tempfile

import hvac
import pytest



def test_audit_devices_through_hvac(root):
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "audit.log")
        legacy = os.path.join(tmp, "legacy.log")
        root.sys.enable_audit_device("file", description="main log", options={"file_path": log})
        root.sys.enable_audit_device("file", options={"path": legacy, "hmac_accessor": False}, path="legacy")

        devices = root.sys.list_enabled_audit_devices()
        assert set(devices["data"]) == {"file/", "legacy/"}
        assert devices["file/"] == devices["data"]["file/"]
        info = devices["data"]["file/"]
        assert info["type"] == "file" and info["description"] == "main log" and info["path"] == "file/"
        assert info["options"]["file_path"] == log
        assert info["failures"] == 0

        root.sys.enable_secrets_engine("kv", path="secret", options={"version": 2})
        planted = "hvac-planted-secret-value"
        root.secrets.kv.v2.create_or_update_secret(path="app", secret={"pw": planted}, mount_point="secret")
        read = root.secrets.kv.v2.read_secret_version(path="app", mount_point="secret", raise_on_deleted_version=True)
        assert read["data"]["data"]["pw"] == planted

        hashed = root.sys.calculate_hash(path="file", input_to_hash=planted)
        digest = hashed["data"]["hash"]
        assert digest.startswith("hmac-sha256:") and len(digest) == len("hmac-sha256:") + 64
        # Each device has its own salt.
        assert root.sys.calculate_hash(path="legacy", input_to_hash=planted)["data"]["hash"] != digest

        with open(log) as f:
            text = f.read()
        assert planted not in text and root.token not in text
        assert digest in text
        entries = [json.loads(line) for line in text.splitlines()]
        assert all(e["type"] in ("request", "response") for e in entries)
        assert all({"seq", "prev_hash", "hash"} <= set(e) for e in entries)
        # hmac_accessor=false on the legacy device: accessors in clear, tokens still hashed.
        with open(legacy) as f:
            legacy_entries = [json.loads(line) for line in f]
        accessor = root.auth.token.lookup_self()["data"]["accessor"]
        assert any(e.get("auth", {}).get("accessor") == accessor for e in legacy_entries)
        assert not any(root.token in json.dumps(e) for e in legacy_entries)

        root.sys.disable_audit_device("legacy")
        assert set(root.sys.list_enabled_audit_devices()["data"]) == {"file/"}
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root.sys.calculate_hash(path="legacy", input_to_hash="x")
        root.sys.disable_audit_device("file")
        assert root.sys.list_enabled_audit_devices()["data"] == {}


def test_unsafe_audit_paths_are_refused_through_hvac(root):
    for options in ({"file_path": "relative.log"}, {"file_path": "/tmp/../etc/x.log"}, {"file_path": "/tmp"}):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root.sys.enable_audit_device("file", options=options, path="bad")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_audit_device("syslog", path="bad")
    assert root.sys.list_enabled_audit_devices()["data"] == {}
