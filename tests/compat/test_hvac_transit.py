"""Compatibility: the Transit engine through hvac's own methods, and ciphertexts checked against
an independent implementation (Python's `cryptography`) laid out as Vault documents them:
`vault:v<N>:` + base64(nonce | ciphertext | tag), derived keys by HKDF-SHA256 with no salt."""

import base64
import hashlib
import hmac as hmac_lib

import hvac
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def unb64(text):
    return base64.b64decode(text)


def vault_layout(version, nonce, sealed):
    return f"vault:v{version}:" + b64(nonce + sealed)


def split(ciphertext):
    prefix, version, body = ciphertext.split(":", 2)
    assert prefix == "vault"
    raw = unb64(body)
    return int(version[1:]), raw[:12], raw[12:]


@pytest.fixture()
def transit(root):
    root.sys.enable_secrets_engine("transit", path="transit")
    return root.secrets.transit


@pytest.mark.parametrize("key_type,cipher", [("aes256-gcm96", AESGCM), ("aes128-gcm96", AESGCM), ("chacha20-poly1305", ChaCha20Poly1305)])
def test_ciphertexts_cross_between_arcanum_and_an_independent_implementation(root, transit, key_type, cipher):
    # hvac's create_key refuses aes128-gcm96 on the client side, though Vault offers it.
    root.write_data("transit/keys/cross", data={"type": key_type, "exportable": True})
    ciphertext = transit.encrypt_data(name="cross", plaintext=b64("from arcanum"))["data"]["ciphertext"]
    exported = transit.export_key(name="cross", key_type="encryption-key", version="latest")
    key = unb64(exported["data"]["keys"]["1"])
    assert len(key) == (16 if key_type == "aes128-gcm96" else 32)

    version, nonce, sealed = split(ciphertext)
    assert version == 1
    assert cipher(key).decrypt(nonce, sealed, None) == b"from arcanum"

    nonce = bytes(range(12))
    local = vault_layout(1, nonce, cipher(key).encrypt(nonce, b"from elsewhere", None))
    assert unb64(transit.decrypt_data(name="cross", ciphertext=local)["data"]["plaintext"]) == b"from elsewhere"


def test_derived_keys_use_hkdf_sha256_with_the_context(transit):
    transit.create_key(name="tenants", derived=True, exportable=True)
    context = b64("tenant-7")
    ciphertext = transit.encrypt_data(name="tenants", plaintext=b64("row"), context=context)["data"]["ciphertext"]
    key = unb64(transit.export_key(name="tenants", key_type="encryption-key")["data"]["keys"]["1"])
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tenant-7").derive(key)
    _, nonce, sealed = split(ciphertext)
    assert AESGCM(derived).decrypt(nonce, sealed, None) == b"row"
    with pytest.raises(hvac.exceptions.InvalidRequest, match="missing 'context'"):
        transit.decrypt_data(name="tenants", ciphertext=ciphertext)


def test_convergent_nonces_follow_vaults_scheme_3(transit):
    transit.create_key(name="conv", derived=True, convergent_encryption=True, exportable=True)
    ciphertext = transit.encrypt_data(name="conv", plaintext=b64("ssn"), context=b64("c"))["data"]["ciphertext"]
    key = unb64(transit.export_key(name="conv", key_type="encryption-key")["data"]["keys"]["1"])
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"c").derive(key)
    nonce = hmac_lib.new(derived[32:], b"ssn", hashlib.sha256).digest()[:12]
    assert ciphertext == vault_layout(1, nonce, AESGCM(derived[:32]).encrypt(nonce, b"ssn", None))


def test_key_lifecycle_batches_and_helpers_through_hvac(transit):
    transit.create_key(name="app")
    assert transit.read_key(name="app")["data"]["type"] == "aes256-gcm96"
    assert transit.list_keys()["data"]["keys"] == ["app"]

    batch = [{"plaintext": b64(f"item {i}"), "reference": str(i)} for i in range(3)]
    encrypted = transit.encrypt_data(name="app", batch_input=batch)["data"]["batch_results"]
    assert [item["reference"] for item in encrypted] == ["0", "1", "2"]
    decrypted = transit.decrypt_data(
        name="app", batch_input=[{"ciphertext": item["ciphertext"]} for item in encrypted]
    )["data"]["batch_results"]
    assert [unb64(item["plaintext"]) for item in decrypted] == [b"item 0", b"item 1", b"item 2"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data(name="app", batch_input=[{"ciphertext": "vault:v1:AAAA"}])

    transit.rotate_key(name="app")
    rewrapped = transit.rewrap_data(name="app", ciphertext=encrypted[0]["ciphertext"])["data"]
    assert rewrapped["key_version"] == 2 and rewrapped["ciphertext"].startswith("vault:v2:")
    transit.update_key_configuration(name="app", min_decryption_version=2)
    transit.update_key_configuration(name="app", min_encryption_version=2)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="too old"):
        transit.decrypt_data(name="app", ciphertext=encrypted[0]["ciphertext"])
    transit.trim_key(name="app", min_version=2)
    assert list(transit.read_key(name="app")["data"]["keys"]) == ["2"]

    key = transit.generate_data_key(name="app", key_type="plaintext", bits=256)["data"]
    assert transit.decrypt_data(name="app", ciphertext=key["ciphertext"])["data"]["plaintext"] == key["plaintext"]
    assert len(unb64(transit.generate_random_bytes(n_bytes=24)["data"]["random_bytes"])) == 24
    digest = transit.hash_data(hash_input=b64("abc"), algorithm="sha2-512")["data"]["sum"]
    assert digest == hashlib.sha512(b"abc").hexdigest()

    mac = transit.generate_hmac(name="app", hash_input=b64("payload"), algorithm="sha2-256")["data"]["hmac"]
    assert transit.verify_signed_data(name="app", hash_input=b64("payload"), hmac=mac)["data"]["valid"] is True
    assert transit.verify_signed_data(name="app", hash_input=b64("other"), hmac=mac)["data"]["valid"] is False

    with pytest.raises(hvac.exceptions.InvalidRequest, match="deletion is not allowed"):
        transit.delete_key(name="app")
    transit.update_key_configuration(name="app", deletion_allowed=True)
    transit.delete_key(name="app")
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key(name="app")


def test_encrypting_with_a_new_name_creates_the_key(transit):
    transit.encrypt_data(name="upserted", plaintext=b64("x"))
    assert transit.read_key(name="upserted")["data"]["latest_version"] == 1


@pytest.mark.parametrize(
    "key_type,curve_hash",
    [("ecdsa-p256", "sha2-256"), ("ecdsa-p384", "sha2-384"), ("ecdsa-p521", "sha2-256")],
)
def test_ecdsa_signatures_cross_with_an_independent_implementation(transit, key_type, curve_hash):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    transit.create_key(name="ec", key_type=key_type, exportable=True)
    hash_cls = {"sha2-256": hashes.SHA256, "sha2-384": hashes.SHA384}[curve_hash]
    signed = transit.sign_data(name="ec", hash_input=b64("invoice"), hash_algorithm=curve_hash)["data"]
    public_pem = transit.read_key(name="ec")["data"]["keys"]["1"]["public_key"]
    public = serialization.load_pem_public_key(public_pem.encode())
    der = unb64(signed["signature"].split(":", 2)[2])
    public.verify(der, b"invoice", ec.ECDSA(hash_cls()))
    with pytest.raises(InvalidSignature):
        public.verify(der, b"invoicf", ec.ECDSA(hash_cls()))

    # JWS: r || s, base64url without padding.
    jws = transit.sign_data(name="ec", hash_input=b64("invoice"), hash_algorithm=curve_hash, marshaling_algorithm="jws")
    raw = base64.urlsafe_b64decode(jws["data"]["signature"].split(":", 2)[2] + "==")
    half = len(raw) // 2
    r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    public.verify(utils.encode_dss_signature(r, s), b"invoice", ec.ECDSA(hash_cls()))

    # A signature made elsewhere with the exported private key verifies here.
    pem = transit.export_key(name="ec", key_type="signing-key", version="1")["data"]["keys"]["1"]
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    foreign = "vault:v1:" + b64(private.sign(b"from outside", ec.ECDSA(hash_cls())))
    verified = transit.verify_signed_data(name="ec", hash_input=b64("from outside"), signature=foreign, hash_algorithm=curve_hash)
    assert verified["data"]["valid"] is True


def test_ed25519_signatures_and_derived_keys_cross_with_an_independent_implementation(transit):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    transit.create_key(name="ed", key_type="ed25519", derived=True, exportable=True)
    signed = transit.sign_data(name="ed", hash_input=b64("msg"), context=b64("tenant"))["data"]
    exported = unb64(transit.export_key(name="ed", key_type="signing-key")["data"]["keys"]["1"])
    assert len(exported) == 64
    # Vault derives the seed by HKDF-SHA256 over the stored 64 bytes, with the context as info.
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tenant").derive(exported)
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw_public = derived.public_bytes_raw()
    assert unb64(signed["public_key"]) == raw_public
    Ed25519PublicKey.from_public_bytes(raw_public).verify(unb64(signed["signature"].split(":", 2)[2]), b"msg")


def test_rsa_keys_cross_with_an_independent_implementation(transit):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    transit.create_key(name="rsa", key_type="rsa-2048", exportable=True)
    info = transit.read_key(name="rsa")["data"]
    assert info["supports_encryption"] and info["supports_signing"]
    assert info["keys"]["1"]["name"] == "rsa-2048"
    public = serialization.load_pem_public_key(info["keys"]["1"]["public_key"].encode())
    private_pem = transit.export_key(name="rsa", key_type="signing-key", version="1")["data"]["keys"]["1"]
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

    # Encrypted elsewhere with the public key, decrypted here; and the other way round.
    foreign = "vault:v1:" + b64(public.encrypt(b"from outside", oaep))
    assert unb64(transit.decrypt_data(name="rsa", ciphertext=foreign)["data"]["plaintext"]) == b"from outside"
    ours = transit.encrypt_data(name="rsa", plaintext=b64("from arcanum"))["data"]["ciphertext"]
    assert private.decrypt(unb64(ours.split(":", 2)[2]), oaep) == b"from arcanum"

    # PSS with Vault's default salt (the longest) and PKCS#1 v1.5 verify with OpenSSL.
    pss = transit.sign_data(name="rsa", hash_input=b64("invoice"), hash_algorithm="sha2-256", signature_algorithm="pss")
    public.verify(
        unb64(pss["data"]["signature"].split(":", 2)[2]),
        b"invoice",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )
    v15 = transit.sign_data(name="rsa", hash_input=b64("invoice"), hash_algorithm="sha2-512", signature_algorithm="pkcs1v15")
    public.verify(unb64(v15["data"]["signature"].split(":", 2)[2]), b"invoice", padding.PKCS1v15(), hashes.SHA512())

    # A PSS signature with the hash-length salt (what most libraries make) verifies here.
    theirs = private.sign(b"elsewhere", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    verified = transit.verify_signed_data(
        name="rsa", hash_input=b64("elsewhere"), signature="vault:v1:" + b64(theirs), signature_algorithm="pss"
    )
    assert verified["data"]["valid"] is True

    with pytest.raises(hvac.exceptions.InvalidRequest, match="RUSTSEC-2023-0071"):
        root_adapter = transit._adapter
        root_adapter.post("/v1/transit/decrypt/rsa", json={"ciphertext": ours, "padding_scheme": "pkcs1v15"})


def _vault_backup(name, key_type_code, entry):
    """A backup as Vault writes one (keysutil.KeyData): Python's json keeps big integers whole."""
    import json

    entry = {"hmac_key": b64(bytes(32)), "time": "2024-01-02T03:04:05Z", "creation_time": 1704164645, **entry}
    policy = {
        "name": name, "keys": {"1": entry}, "derived": False, "kdf": 0, "convergent_encryption": False,
        "exportable": True, "min_decryption_version": 1, "min_encryption_version": 0, "latest_version": 1,
        "archive_version": 1, "archive_min_version": 0, "min_available_version": 0, "deletion_allowed": False,
        "convergent_version": 0, "type": key_type_code, "backup_info": None, "restore_info": None,
        "allow_plaintext_backup": True, "version_template": "", "storage_prefix": "", "auto_rotate_period": 0,
        "Imported": False, "AllowImportedKeyRotation": False,
    }
    empty = {"key": None, "hmac_key": None, "time": "0001-01-01T00:00:00Z", "creation_time": 0}
    data = {"policy": policy, "archived_keys": {"keys": [empty, entry]}}
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_backups_in_vaults_format_restore_and_round_trip(transit):
    import json

    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    # An ECDSA key made elsewhere, in Vault's backup layout (ec_d/ec_x/ec_y as decimal integers).
    private = ec.generate_private_key(ec.SECP384R1())
    numbers = private.private_numbers()
    ec_entry = {
        "ec_d": numbers.private_value,
        "ec_x": numbers.public_numbers.x,
        "ec_y": numbers.public_numbers.y,
    }
    transit.restore_key(backup=_vault_backup("imported-ec", 6, ec_entry))
    assert transit.read_key(name="imported-ec")["data"]["type"] == "ecdsa-p384"
    signed = transit.sign_data(name="imported-ec", hash_input=b64("m"), hash_algorithm="sha2-384")["data"]["signature"]
    private.public_key().verify(unb64(signed.split(":", 2)[2]), b"m", ec.ECDSA(hashes.SHA384()))

    # An RSA key as Go's JSON for rsa.PrivateKey.
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = rsa_private.private_numbers()
    rsa_entry = {
        "rsa_key": {
            "N": n.public_numbers.n, "E": n.public_numbers.e, "D": n.d, "Primes": [n.p, n.q],
            "Precomputed": {"Dp": n.dmp1, "Dq": n.dmq1, "Qinv": n.iqmp, "CRTValues": []},
        },
        "rsa_public_key": {"N": n.public_numbers.n, "E": n.public_numbers.e},
    }
    transit.restore_key(backup=_vault_backup("imported-rsa", 3, rsa_entry), name="renamed-rsa")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    foreign = "vault:v1:" + b64(rsa_private.public_key().encrypt(b"to arcanum", oaep))
    assert unb64(transit.decrypt_data(name="renamed-rsa", ciphertext=foreign)["data"]["plaintext"]) == b"to arcanum"

    # Our own backups read as Vault's: the ECDSA scalar is the same integer, the type a number.
    backup = transit.backup_key(name="imported-ec")["data"]["backup"]
    data = json.loads(base64.b64decode(backup))
    assert data["policy"]["type"] == 6
    assert data["policy"]["keys"]["1"]["ec_d"] == numbers.private_value
    assert transit.read_key(name="imported-ec")["data"]["backup_info"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest, match="already exists"):
        transit.restore_key(backup=backup)
    transit.restore_key(backup=backup, force=True)
    transit.restore_key(backup=backup, name="copy-ec")
    again = transit.sign_data(name="copy-ec", hash_input=b64("m2"), hash_algorithm="sha2-384")["data"]["signature"]
    private.public_key().verify(unb64(again.split(":", 2)[2]), b"m2", ec.ECDSA(hashes.SHA384()))

    transit.create_key(name="locked")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="exporting is disallowed"):
        transit.backup_key(name="locked")
