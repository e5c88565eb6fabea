"""Fixtures shared by the compatibility tests: a fresh arcanum server on sled, started the way
hvac's own test-suite starts Vault, and an hvac client holding its root token."""

import json
import os
import subprocess
import tempfile
import threading

import hvac
import pytest


def _binary():
    path = os.environ.get("ARCANUM_BIN")
    assert path and os.path.exists(path), "ARCANUM_BIN must point at the arcanum binary"
    return path


def _start(config_path):
    proc = subprocess.Popen(
        [_binary(), "server", f"-config={config_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = None
    for line in proc.stdout:
        if line.startswith("arcanum: listening on "):
            url = line.split("arcanum: listening on ", 1)[1].strip()
            break
    assert url, "server did not report its address"
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, url


@pytest.fixture()
def server():
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "backend": {"sled": {"path": os.path.join(tmp, "data")}},
            "listener": {"tcp": {"address": "127.0.0.1:0", "tls_disable": True}},
            "disable_mlock": True,
            "default_lease_ttl": "768h",
            "max_lease_ttl": "768h",
        }
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        proc, url = _start(config_path)
        try:
            yield url
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture()
def root(server):
    """An hvac client for an initialised, unsealed server, holding the root token."""
    client = hvac.Client(url=server)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_keys(result["keys"])
    client.token = result["root_token"]
    return client
