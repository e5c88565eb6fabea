//! The hash algorithms Transit's `hash`, `hmac`, `sign` and `verify` name, and the digests
//! and HMACs computed with them.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use sha3::{Sha3_224, Sha3_256, Sha3_384, Sha3_512};

use arcanum_contract::logical::ApiError;

/// HMAC with digest `$digest`; HMAC takes keys of any length, so building it cannot fail.
macro_rules! mac {
    ($digest:ty, $key:expr, $input:expr) => {{
        let mut mac = <Hmac<$digest> as Mac>::new_from_slice($key).expect("HMAC accepts keys of any length");
        mac.update($input);
        mac.finalize().into_bytes().to_vec()
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// For signatures only (Vault's `sha1`); `hash` and `hmac` do not offer it.
    Sha1,
    Sha2_224,
    Sha2_256,
    Sha2_384,
    Sha2_512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
}

impl HashAlgorithm {
    const NAMES: [(&'static str, HashAlgorithm); 8] = [
        ("sha2-224", HashAlgorithm::Sha2_224),
        ("sha2-256", HashAlgorithm::Sha2_256),
        ("sha2-384", HashAlgorithm::Sha2_384),
        ("sha2-512", HashAlgorithm::Sha2_512),
        ("sha3-224", HashAlgorithm::Sha3_224),
        ("sha3-256", HashAlgorithm::Sha3_256),
        ("sha3-384", HashAlgorithm::Sha3_384),
        ("sha3-512", HashAlgorithm::Sha3_512),
    ];

    /// The algorithm named `name` (Vault's names; `""` is sha2-256).
    pub fn parse(name: &str) -> Result<HashAlgorithm, ApiError> {
        if name.is_empty() {
            return Ok(HashAlgorithm::Sha2_256);
        }
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, algorithm)| *algorithm)
            .ok_or_else(|| ApiError::bad_request(format!("unsupported algorithm {name}")))
    }

    /// The algorithm a signature hashes with: Vault's names plus `sha1`; `none` is `None`.
    pub fn parse_for_signing(name: &str) -> Result<Option<HashAlgorithm>, ApiError> {
        match name {
            "none" => Ok(None),
            "sha1" => Ok(Some(HashAlgorithm::Sha1)),
            other => HashAlgorithm::parse(other).map(Some),
        }
    }

    pub fn digest(self, input: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha1 => sha1::Sha1::digest(input).to_vec(),
            HashAlgorithm::Sha2_224 => Sha224::digest(input).to_vec(),
            HashAlgorithm::Sha2_256 => Sha256::digest(input).to_vec(),
            HashAlgorithm::Sha2_384 => Sha384::digest(input).to_vec(),
            HashAlgorithm::Sha2_512 => Sha512::digest(input).to_vec(),
            HashAlgorithm::Sha3_224 => Sha3_224::digest(input).to_vec(),
            HashAlgorithm::Sha3_256 => Sha3_256::digest(input).to_vec(),
            HashAlgorithm::Sha3_384 => Sha3_384::digest(input).to_vec(),
            HashAlgorithm::Sha3_512 => Sha3_512::digest(input).to_vec(),
        }
    }

    pub fn hmac(self, key: &[u8], input: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha1 => mac!(sha1::Sha1, key, input),
            HashAlgorithm::Sha2_224 => mac!(Sha224, key, input),
            HashAlgorithm::Sha2_256 => mac!(Sha256, key, input),
            HashAlgorithm::Sha2_384 => mac!(Sha384, key, input),
            HashAlgorithm::Sha2_512 => mac!(Sha512, key, input),
            HashAlgorithm::Sha3_224 => mac!(Sha3_224, key, input),
            HashAlgorithm::Sha3_256 => mac!(Sha3_256, key, input),
            HashAlgorithm::Sha3_384 => mac!(Sha3_384, key, input),
            HashAlgorithm::Sha3_512 => mac!(Sha3_512, key, input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_hmacs_match_published_vectors() {
        // FIPS 180-4 / 202 "abc" vectors.
        assert_eq!(
            hex::encode(HashAlgorithm::Sha2_256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(HashAlgorithm::Sha3_256.digest(b"abc")),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(HashAlgorithm::Sha2_256.hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(HashAlgorithm::parse("").unwrap(), HashAlgorithm::Sha2_256);
        assert!(HashAlgorithm::parse("md5").unwrap_err().errors[0].contains("md5"));
    }
}
