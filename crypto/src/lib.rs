//! Cryptographic primitives for Arcanum: keys, AEAD, the barrier keyring, Shamir splitting and tokens.
//!
//! Everything secret is zeroised on drop and redacted from `Debug` output, so that
//! keys cannot leak through logs, panics or freed memory.

mod error;
mod gf256;
mod key;

pub mod aead;
pub mod keyring;
pub mod password;
pub mod pgp;
pub mod shamir;
pub mod token;

pub use error::CryptoError;
pub use key::Key256;
pub use keyring::{Keyring, TermInfo};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of `data` under `key` (any key length is valid, per RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC hashes over-long keys and pads short ones, so this constructor cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 under one key that hashes many inputs (a token store's salt, an audit device's):
/// the key's inner and outer pads are hashed once, here, instead of for every input, which
/// halves the work for short inputs. The prepared state is as secret as the key; it and every
/// copy made of it are zeroised when dropped.
pub struct HmacSha256Key(hmac_prepared::Hmac<sha2_prepared::Sha256>);

impl HmacSha256Key {
    pub fn new(key: &[u8]) -> HmacSha256Key {
        use hmac_prepared::KeyInit as _;
        // HMAC hashes over-long keys and pads short ones, so this constructor cannot fail.
        HmacSha256Key(hmac_prepared::Hmac::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }

    /// The same as [`hmac_sha256`] with this key.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        use hmac_prepared::Mac as _;
        let mut mac = self.0.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256Key(<redacted>)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Inputs of different lengths compare unequal; the lengths themselves are not treated as secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2, 3 and 6 (the last uses a key longer than the block size).
    #[test]
    fn hmac_sha256_rfc4231() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (&[0xaa; 20], &[0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex::encode(hmac_sha256(key, data)), *want);
            let prepared = HmacSha256Key::new(key);
            assert_eq!(hex::encode(prepared.mac(data)), *want, "a prepared key gives the same MAC");
            assert_eq!(hex::encode(prepared.mac(data)), *want, "and again: the prepared state is not used up");
        }
        assert!(!format!("{:?}", HmacSha256Key::new(b"secret-key")).contains("secret"));
    }

    #[test]
    fn constant_time_eq_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"ab", false),
            (b"", b"a", false),
            (&[0u8; 32], &[0u8; 32], true),
        ];
        for (a, b, want) in cases {
            assert_eq!(constant_time_eq(a, b), *want, "{a:?} vs {b:?}");
        }
    }
}
