"""Compatibility: the real hvac client (from PyPI) against the real arcanum binary.

On a server started the way hvac's own test-suite starts Vault (conftest.py: a JSON config with
the legacy `backend` block), drives init, unseal, seal status, health, seal and rekey through hvac.
"""

import hvac
import pytest
import requests


def test_init_unseal_status_health_through_hvac(server):
    client = hvac.Client(url=server)
    assert client.sys.is_initialized() is False
    status = client.sys.read_health_status(method="GET")
    # hvac returns the Response for non-200 health codes; 501 means uninitialised.
    assert getattr(status, "status_code", None) == 501

    result = client.sys.initialize(secret_shares=5, secret_threshold=3)
    assert len(result["keys"]) == 5 and len(result["keys_base64"]) == 5
    assert result["root_token"].startswith("hvs.")
    assert client.sys.is_initialized() is True
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.initialize(secret_shares=5, secret_threshold=3)

    assert client.sys.is_sealed() is True
    seal_status = client.sys.read_seal_status()
    assert seal_status["t"] == 3 and seal_status["n"] == 5 and seal_status["progress"] == 0

    first = client.sys.submit_unseal_key(result["keys"][0])
    assert first["sealed"] is True and first["progress"] == 1
    reset = client.sys.submit_unseal_key(reset=True)
    assert reset["progress"] == 0

    final = client.sys.submit_unseal_keys(result["keys"][1:4])
    assert final["sealed"] is False
    assert client.sys.is_sealed() is False

    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False and health["standby"] is False
    head = client.sys.read_health_status(method="HEAD")
    assert head.status_code == 200

    client.token = result["root_token"]
    client.sys.seal()
    assert client.sys.is_sealed() is True
    health = client.sys.read_health_status(method="GET")
    assert health.status_code == 503

    # Back in with base64 shares.
    final = client.sys.submit_unseal_keys(result["keys_base64"][2:5])
    assert final["sealed"] is False


def test_rekey_through_hvac(server):
    client = hvac.Client(url=server)
    result = client.sys.initialize(secret_shares=3, secret_threshold=2)
    client.sys.submit_unseal_keys(result["keys"][:2])

    started = client.sys.start_rekey(secret_shares=4, secret_threshold=2)
    assert started["started"] is True and started["required"] == 2
    assert client.sys.read_rekey_progress()["started"] is True
    nonce = started["nonce"]
    done = client.sys.rekey_multi(result["keys"][:2], nonce=nonce)
    assert done["complete"] is True and len(done["keys"]) == 4

    client.token = result["root_token"]
    client.sys.seal()
    final = client.sys.submit_unseal_keys(done["keys_base64"][:2])
    assert final["sealed"] is False


def test_errors_come_back_as_hvac_exceptions(server):
    client = hvac.Client(url=server)
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        client.sys.initialize(secret_shares=3, secret_threshold=4)
    assert "threshold cannot be larger than shares" in str(info.value)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.submit_unseal_key("definitely-not-a-key")
    client.sys.submit_unseal_key(result["keys"][0])
    # No token: hvac's Forbidden.
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=server).sys.seal()
    # The raw error body is Vault's shape with an exact JSON content type.
    response = requests.put(f"{server}/v1/sys/seal")
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert "permission denied" in response.json()["errors"]
