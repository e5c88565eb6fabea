//! Test operators with OpenPGP keys made in the test: their public keys as Vault takes them
//! (base64 of the binary key), and decryption with the `pgp` crate and with `gpg`.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, Message, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails as _, Password};

/// An operator: a secret key with an encryption subkey, and its public key as Vault takes it.
pub struct Operator {
    secret: SignedSecretKey,
    pub public_base64: String,
    pub fingerprint: String,
}

pub fn operator(name: &str, rsa: bool) -> Operator {
    let (primary, subkey) = if rsa {
        (KeyType::Rsa(2048), KeyType::Rsa(2048))
    } else {
        (KeyType::Ed25519Legacy, KeyType::ECDH(ECCCurve::Curve25519Legacy))
    };
    let mut encryption = SubkeyParamsBuilder::default();
    encryption.key_type(subkey).can_sign(false).can_encrypt(EncryptionCaps::All).can_authenticate(false);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(primary)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(format!("{name} <{name}@example.com>"))
        .subkeys(vec![encryption.build().unwrap()]);
    let secret = params.build().unwrap().generate(rand::rngs::OsRng).unwrap();
    let public = secret.to_public_key();
    let public_base64 = base64::engine::general_purpose::STANDARD.encode(public.to_bytes().unwrap());
    let fingerprint = public.fingerprint().to_string();
    Operator { secret, public_base64, fingerprint }
}

impl Operator {
    pub fn decrypt(&self, message: &[u8]) -> String {
        let mut opened = Message::from_bytes(message).unwrap().decrypt(&Password::empty(), &self.secret).unwrap();
        String::from_utf8(opened.as_data_vec().unwrap()).unwrap()
    }

    pub fn decrypt_base64(&self, encoded: &str) -> String {
        self.decrypt(&base64::engine::general_purpose::STANDARD.decode(encoded).unwrap())
    }

    pub fn decrypt_hex(&self, encoded: &str) -> String {
        self.decrypt(&hex_decode(encoded))
    }

    /// What `gpg --decrypt` makes of `message` with this operator's secret key imported.
    pub fn gpg_decrypt(&self, home: &Path, message: &[u8]) -> String {
        assert!(
            Command::new("gpg").arg("--version").output().is_ok_and(|out| out.status.success()),
            "gpg is required (scripts/test installs Debian's gnupg)"
        );
        std::fs::create_dir_all(home).unwrap();
        let key_file = home.join("secret.asc");
        std::fs::write(&key_file, self.secret.to_armored_string(ArmorOptions::default()).unwrap()).unwrap();
        let message_file = home.join("message.gpg");
        std::fs::write(&message_file, message).unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg").arg("--batch").arg("--homedir").arg(home).args(args).output().unwrap();
            assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        gpg(&["--import", key_file.to_str().unwrap()]);
        String::from_utf8(gpg(&["--decrypt", message_file.to_str().unwrap()])).unwrap()
    }
}

pub fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// A fresh GnuPG home (mode 0700, as gpg insists) under `dir`.
pub fn gnupg_home(dir: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    home
}
