"""Compatibility: PGP-encrypted key shares through hvac, with keys made by GnuPG the way an
operator makes them (`gpg --quick-generate-key`, `gpg --export | base64`) and shares opened by
`gpg --decrypt`: sys.initialize with pgp_keys and root_token_pgp_key, start_rekey with pgp_keys
and backup, read_backup_keys, and root token generation with pgp_key."""

import base64
import os
import subprocess
import tempfile

import hvac
import pytest


class Operator:
    """One operator's GnuPG home with gpg's default key: a signing primary and an encryption subkey."""

    def __init__(self, home, name):
        self.home = home
        self.name = name
        self.gpg("--passphrase", "", "--pinentry-mode", "loopback", "--quick-generate-key",
                 f"{name} <{name}@example.com>", "default", "default", "never")
        exported = self.gpg("--export", f"{name}@example.com").stdout
        assert exported, "gpg exported no key"
        self.public_base64 = base64.b64encode(exported).decode()
        listing = self.gpg("--with-colons", "--list-keys", f"{name}@example.com").stdout.decode()
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")).lower()

    def gpg(self, *args, stdin=None):
        result = subprocess.run(["gpg", "--batch", "--homedir", self.home, *args], input=stdin, capture_output=True)
        assert result.returncode == 0, f"gpg {args}: {result.stderr.decode()}"
        return result

    def decrypt(self, message):
        return self.gpg("--decrypt", stdin=message).stdout.decode()


@pytest.fixture()
def operators():
    if subprocess.run(["gpg", "--version"], capture_output=True).returncode != 0:
        pytest.fail("gpg is required (scripts/test installs Debian's gnupg)")
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        for name in ["alice", "bob"]:
            home = os.path.join(tmp, name)
            os.mkdir(home, 0o700)
            made.append(Operator(home, name))
        yield made
        for op in made:
            subprocess.run(["gpgconf", "--homedir", op.home, "--kill", "all"], capture_output=True)


def test_pgp_shares_through_hvac_and_gpg(server, operators):
    client = hvac.Client(url=server)
    keys = [op.public_base64 for op in operators]
    result = client.sys.initialize(
        secret_shares=2, secret_threshold=2, pgp_keys=keys, root_token_pgp_key=operators[0].public_base64
    )
    shares = [op.decrypt(bytes.fromhex(share)) for op, share in zip(operators, result["keys"])]
    assert all(len(share) == 66 for share in shares)
    root_token = operators[0].decrypt(base64.b64decode(result["root_token"]))
    client.sys.submit_unseal_keys(shares)
    client.token = root_token
    assert client.lookup_token()["data"]["policies"] == ["root"]

    started = client.sys.start_rekey(secret_shares=2, secret_threshold=2, pgp_keys=keys, backup=True)
    assert started["pgp_fingerprints"] == [op.fingerprint for op in operators] and started["backup"] is True
    done = None
    for share in shares:
        done = client.sys.rekey(key=share, nonce=started["nonce"])
        if done.get("complete"):
            break
    assert done["complete"] is True
    new_shares = [op.decrypt(bytes.fromhex(share)) for op, share in zip(operators, done["keys"])]
    backup = client.sys.read_backup_keys()["data"]
    assert backup["keys"][operators[1].fingerprint] == [done["keys"][1]]
    client.sys.seal()
    client.sys.submit_unseal_keys(new_shares)
    assert client.sys.is_sealed() is False

    started = client.sys.start_root_token_generation(pgp_key=operators[1].public_base64)
    assert started["pgp_fingerprint"] == operators[1].fingerprint
    for share in new_shares:
        done = client.sys.generate_root(key=share, nonce=started["nonce"])
    assert done["complete"] is True
    token = operators[1].decrypt(base64.b64decode(done["encoded_token"]))
    assert hvac.Client(url=server, token=token).lookup_token()["data"]["policies"] == ["root"]
