//! The 256-bit symmetric key type shared by every primitive in the crate.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// A 256-bit secret key, wiped from memory when dropped.
///
/// There is intentionally no `PartialEq`: comparing keys with `==` would not be constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key256([u8; 32]);

impl Key256 {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Key256 {
        let mut key = Key256([0u8; 32]);
        OsRng.fill_bytes(&mut key.0);
        key
    }

    /// Copies a key from `bytes`, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Key256, CryptoError> {
        if bytes.len() != Self::LEN {
            return Err(CryptoError::InvalidKeyLength);
        }
        // Copy straight into the zeroising wrapper so no unwiped temporary array is left on the stack.
        let mut key = Key256([0u8; 32]);
        key.0.copy_from_slice(bytes);
        Ok(key)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_slice_lengths() {
        for len in [0usize, 1, 16, 31, 33, 64] {
            assert_eq!(Key256::from_slice(&vec![7u8; len]).err(), Some(CryptoError::InvalidKeyLength), "len {len}");
        }
        let bytes: Vec<u8> = (0u8..32).collect();
        let key = Key256::from_slice(&bytes).expect("32 bytes is valid");
        assert_eq!(key.as_bytes().as_slice(), bytes.as_slice());
    }

    #[test]
    fn generate_is_random() {
        let a = Key256::generate();
        let b = Key256::generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &[0u8; 32]);
    }

    #[test]
    fn debug_is_redacted() {
        let key = Key256::from_slice(&[0xab; 32]).expect("valid length");
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "Key256(<redacted>)");
        assert!(!dbg.contains("171")); // 0xab in decimal, as a derived Debug would print it
    }

    #[test]
    fn clone_is_independent_copy() {
        let a = Key256::generate();
        let b = a.clone();
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn zeroize_wipes() {
        let mut key = Key256::from_slice(&[0x5a; 32]).expect("valid length");
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0u8; 32]);
    }
}
