//! Password hashing with argon2id (PHC strings), for credential backends such as userpass.
//!
//! Verification of an unknown user runs against [`dummy_hash`], a real hash of a random
//! password, so that "no such user" costs the same time as "wrong password" (the userpass
//! timing leak of CVE-2025-6011 came from a dummy hash that failed to parse).

use std::sync::OnceLock;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::CryptoError;

/// Hashes `password` with argon2id and a fresh random salt.
pub fn hash(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| CryptoError::Malformed(format!("password hashing failed: {err}")))
}

/// Checks `password` against a PHC hash; a malformed hash is simply a mismatch.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a random password, made once, to verify against when a user is unknown.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash(&crate::token::generate("", 32)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse", &phc));
        assert!(!verify("wrong horse", &phc));
        assert!(!verify("correct horse", "not a phc string"));
        assert_ne!(hash("correct horse").unwrap(), phc, "salts must differ");
    }

    #[test]
    fn dummy_hash_is_a_valid_hash() {
        assert!(PasswordHash::new(dummy_hash()).is_ok());
        assert!(!verify("", dummy_hash()));
    }
}
