//! OpenPGP encryption to operators' public keys (Vault's `pgp_keys`, `root_token_pgp_key`,
//! `pgp_key`): the server receives each key as base64 of its binary (non-armored) form and
//! answers binary OpenPGP messages, which only the holder of the matching secret key opens.
//!
//! Messages are what Go's openpgp package writes and what `gpg --decrypt` reads: one
//! public-key-encrypted session key for the key's encryption subkey, and SEIPD v1 (with MDC)
//! under AES-128, literal data, no compression. Only public-key operations happen here, so
//! the `rsa` crate's private-key timing advisory (RUSTSEC-2023-0071) does not apply.

use std::fmt;

use base64::Engine as _;
use pgp::composed::{Deserializable as _, MessageBuilder, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::KeyDetails as _;

/// One operator's public key, parsed and checked.
#[derive(Clone)]
pub struct PgpRecipient {
    key: SignedPublicKey,
    fingerprint: String,
}

impl fmt::Debug for PgpRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgpRecipient").field("fingerprint", &self.fingerprint).finish()
    }
}

impl PgpRecipient {
    /// Parses base64 of a binary public key (as `gpg --export | base64` gives it); its
    /// bindings must verify and it must have a subkey (or primary) that may encrypt.
    pub fn from_base64(encoded: &str) -> Result<PgpRecipient, String> {
        let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let binary = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "the key is not base64 (give base64 of the binary key, e.g. `gpg --export KEY | base64`)")?;
        let key =
            SignedPublicKey::from_bytes(&binary[..]).map_err(|err| format!("not an OpenPGP public key: {err}"))?;
        key.verify_bindings().map_err(|err| format!("the key's self-signatures do not verify: {err}"))?;
        let recipient = PgpRecipient { fingerprint: hex_lower(key.fingerprint().as_bytes()), key };
        if recipient.encryption_subkey().is_none() && !recipient.primary_may_encrypt() {
            return Err(format!("the key {} has no key that may encrypt", recipient.fingerprint));
        }
        Ok(recipient)
    }

    /// Lowercase hex of the primary key's fingerprint (Vault's `pgp_fingerprints`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A binary OpenPGP message holding `plaintext` for this key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut rng = rand::rngs::OsRng;
        let mut builder =
            MessageBuilder::from_bytes("", plaintext.to_vec()).seipd_v1(rng, SymmetricKeyAlgorithm::AES128);
        let result = match self.encryption_subkey() {
            Some(subkey) => builder.encrypt_to_key(&mut rng, subkey),
            None => builder.encrypt_to_key(&mut rng, &self.key),
        };
        result.map_err(|err| format!("encrypting to {}: {err}", self.fingerprint))?;
        builder.to_vec(rng).map_err(|err| format!("encrypting to {}: {err}", self.fingerprint))
    }

    /// The first subkey bound for encryption whose algorithm can encrypt. (An RSA primary
    /// key is usually for signing only; encrypting to it would be wrong.)
    fn encryption_subkey(&self) -> Option<&SignedPublicSubKey> {
        self.key.public_subkeys.iter().find(|subkey| {
            subkey.key.algorithm().can_encrypt()
                && subkey.signatures.iter().any(|sig| {
                    let flags = sig.key_flags();
                    flags.encrypt_comms() || flags.encrypt_storage()
                })
        })
    }

    /// A key without subkeys whose primary is flagged for encryption (rare, but valid).
    fn primary_may_encrypt(&self) -> bool {
        self.key.algorithm().can_encrypt()
            && self.key.details.users.iter().flat_map(|user| &user.signatures).any(|sig| {
                let flags = sig.key_flags();
                flags.encrypt_comms() || flags.encrypt_storage()
            })
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{
        EncryptionCaps, KeyType, Message, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder,
    };
    use pgp::crypto::ecc_curve::ECCCurve;
    use pgp::ser::Serialize as _;
    use pgp::types::Password;

    fn secret_key(with_encryption_subkey: bool) -> SignedSecretKey {
        let mut subkeys = Vec::new();
        if with_encryption_subkey {
            let mut encryption = SubkeyParamsBuilder::default();
            encryption
                .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
                .can_sign(false)
                .can_encrypt(EncryptionCaps::All)
                .can_authenticate(false);
            subkeys.push(encryption.build().unwrap());
        }
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id("Operator <op@example.com>".into())
            .subkeys(subkeys);
        params.build().unwrap().generate(rand::rngs::OsRng).unwrap()
    }

    fn base64_public(secret: &SignedSecretKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(secret.to_public_key().to_bytes().unwrap())
    }

    #[test]
    fn encrypts_to_the_encryption_subkey_and_only_that_secret_key_opens_it() {
        let secret = secret_key(true);
        let recipient = PgpRecipient::from_base64(&base64_public(&secret)).unwrap();
        assert_eq!(recipient.fingerprint(), secret.to_public_key().fingerprint().to_string());
        assert_eq!(recipient.fingerprint().len(), 40);
        assert!(!format!("{recipient:?}").contains("key:"));
        let message = recipient.encrypt(b"0a1b2c").unwrap();
        let mut opened = Message::from_bytes(&message[..]).unwrap().decrypt(&Password::empty(), &secret).unwrap();
        assert_eq!(opened.as_data_vec().unwrap(), b"0a1b2c");
        assert!(Message::from_bytes(&message[..]).unwrap().decrypt(&Password::empty(), &secret_key(true)).is_err());
    }

    #[test]
    fn refuses_what_is_not_a_usable_public_key() {
        assert!(PgpRecipient::from_base64("not base64!").unwrap_err().contains("not base64"));
        assert!(PgpRecipient::from_base64("bm90IGEga2V5").unwrap_err().contains("not an OpenPGP public key"));
        let signing_only = secret_key(false);
        assert!(PgpRecipient::from_base64(&base64_public(&signing_only)).unwrap_err().contains("may encrypt"));
    }
}
