"""Compatibility: root token generation through hvac's system backend, decoded as Vault's CLI
decodes it (unpadded base64 of the token XOR the OTP)."""

import base64

import hvac


def test_generate_root_through_hvac(server):
    client = hvac.Client(url=server)
    keys = client.sys.initialize(secret_shares=1, secret_threshold=1)["keys"]
    client.sys.submit_unseal_keys(keys)
    progress = client.sys.read_root_generation_progress()
    assert progress["started"] is False and progress["otp_length"] == 28

    otp = "B" * 28
    started = client.sys.start_root_token_generation(otp=otp)
    assert started["started"] is True and started["required"] == 1
    done = client.sys.generate_root(key=keys[0], nonce=started["nonce"])
    assert done["complete"] is True
    encoded = done["encoded_token"]
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    token = bytes(a ^ b for a, b in zip(raw, otp.encode())).decode()
    assert hvac.Client(url=server, token=token).lookup_token()["data"]["policies"] == ["root"]

    client.sys.start_root_token_generation()
    client.sys.cancel_root_generation()
    assert client.sys.read_root_generation_progress()["started"] is False
