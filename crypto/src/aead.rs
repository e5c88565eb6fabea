//! AES-256-GCM authenticated encryption with random nonces, framed as `nonce || ciphertext || tag`.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;

use crate::{CryptoError, Key256};

/// Length of the random nonce that prefixes every sealed message.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag that ends every sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message is longer than its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// An AES-256-GCM cipher with its key schedule computed once.
///
/// Worth keeping around when many records are sealed under the same key, since building
/// the key schedule and GHASH key costs more than sealing a small record. Its internal
/// state is wiped on drop.
#[derive(Clone)]
pub struct Cipher {
    inner: Aes256Gcm,
}

impl Cipher {
    /// Expands `key` into a ready-to-use cipher.
    pub fn new(key: &Key256) -> Cipher {
        Cipher { inner: Aes256Gcm::new(key.as_bytes().into()) }
    }

    /// Encrypts under a fresh random 96-bit nonce; returns `nonce || ciphertext || tag`.
    ///
    /// Random nonces are safe for roughly 2^32 messages per key (NIST SP 800-38D §8.3);
    /// the keyring's rotation is what keeps usage far below that.
    ///
    /// The nonce comes from the thread's CSPRNG (`rand`'s `ThreadRng`: ChaCha12 seeded from
    /// the operating system, reseeded from it every 64 KiB of output and after a fork), not
    /// from a system call per record: a nonce must be unique, not secret, and the call cost
    /// as much as sealing a small record.
    ///
    /// # Panics
    ///
    /// If `plaintext` is longer than GCM's limit of 2^36 − 32 bytes (about 64 GiB), or if the
    /// operating system's random number generator fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        self.seal_with_nonce(&nonce, plaintext, aad)
    }

    /// Sealing with a caller-chosen nonce is kept private: nonce reuse under GCM leaks the
    /// authentication key, so only `seal` (random nonce) and known-answer tests may use it.
    fn seal_with_nonce(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        // One allocation of the final size: encrypt in place after the nonce, then append the tag.
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .inner
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut out[NONCE_LEN..])
            .expect("plaintext exceeds the AES-GCM length limit of 2^36 - 32 bytes");
        out.extend_from_slice(&tag);
        out
    }

    /// Verifies and decrypts `nonce || ciphertext || tag`.
    ///
    /// Any failure (wrong key, wrong `aad`, modified or truncated input) yields
    /// [`CryptoError::Decrypt`]; no plaintext is released unless the tag verifies.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        // aes-gcm checks the tag before decrypting, so on failure the buffer still holds
        // only ciphertext and can be dropped without wiping.
        self.inner
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut plaintext, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plaintext)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

/// AES-256-GCM with a fresh random 96-bit nonce (see [`Cipher::seal`]); returns `nonce || ciphertext || tag`.
///
/// Builds a [`Cipher`] per call; hold a `Cipher` instead when sealing many messages under one key.
///
/// # Panics
///
/// As [`Cipher::seal`].
pub fn seal(key: &Key256, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    Cipher::new(key).seal(plaintext, aad)
}

/// Inverse of [`seal`]; any tampering, wrong key or wrong `aad` gives [`CryptoError::Decrypt`].
pub fn open(key: &Key256, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Cipher::new(key).open(sealed, aad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test vector is valid hex")
    }

    /// AES-256 cases 13–16 from McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)",
    /// the test vectors also used by NIST's GCM validation: (key, iv, plaintext, aad, ciphertext, tag).
    const GCM_SPEC_VECTORS: &[(&str, &str, &str, &str, &str, &str)] = &[
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];

    #[test]
    fn known_answer_vectors() {
        for (i, (key, iv, pt, aad, ct, tag)) in GCM_SPEC_VECTORS.iter().enumerate() {
            let key = Key256::from_slice(&unhex(key)).expect("32-byte key");
            let nonce: [u8; NONCE_LEN] = unhex(iv).try_into().expect("12-byte iv");
            let (pt, aad) = (unhex(pt), unhex(aad));
            let want = [nonce.as_slice(), &unhex(ct), &unhex(tag)].concat();

            let cipher = Cipher::new(&key);
            let sealed = cipher.seal_with_nonce(&nonce, &pt, &aad);
            assert_eq!(hex::encode(&sealed), hex::encode(&want), "vector {i}");
            assert_eq!(open(&key, &want, &aad).expect("vector opens"), pt, "vector {i}");
        }
    }

    #[test]
    fn round_trip_sizes() {
        let key = Key256::generate();
        for len in [0usize, 1, 15, 16, 17, 1024, 65_537] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = seal(&key, &pt, b"aad");
            assert_eq!(sealed.len(), len + OVERHEAD);
            assert_eq!(open(&key, &sealed, b"aad").expect("round trip"), pt);
        }
    }

    #[test]
    fn cipher_and_free_functions_interoperate() {
        let key = Key256::generate();
        let cipher = Cipher::new(&key);
        let a = cipher.seal(b"one", b"x");
        let b = seal(&key, b"two", b"y");
        assert_eq!(open(&key, &a, b"x").expect("opens"), b"one");
        assert_eq!(cipher.open(&b, b"y").expect("opens"), b"two");
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let key = Key256::generate();
        let sealed = seal(&key, b"attack at dawn", b"aad");
        // Covers nonce, ciphertext and tag regions alike.
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                assert_eq!(open(&key, &bad, b"aad"), Err(CryptoError::Decrypt), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_aad_or_key_is_rejected() {
        let key = Key256::generate();
        let sealed = seal(&key, b"secret", b"path/a");
        for aad in [&b""[..], b"path/b", b"path/a\0", b"path/"] {
            assert_eq!(open(&key, &sealed, aad), Err(CryptoError::Decrypt));
        }
        assert_eq!(open(&Key256::generate(), &sealed, b"path/a"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn truncated_input_is_rejected() {
        let key = Key256::generate();
        let sealed = seal(&key, b"some plaintext", b"");
        for len in 0..sealed.len() {
            assert_eq!(open(&key, &sealed[..len], b""), Err(CryptoError::Decrypt), "len {len}");
        }
        let mut extended = sealed.clone();
        extended.push(0);
        assert_eq!(open(&key, &extended, b""), Err(CryptoError::Decrypt));
    }

    #[test]
    fn nonces_are_fresh() {
        let key = Key256::generate();
        let a = seal(&key, b"same", b"");
        let b = seal(&key, b"same", b"");
        assert_ne!(a, b);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    /// Each thread draws from a generator of its own: they must be seeded apart, and one must
    /// not repeat itself across its reseeds (every 64 KiB of output, about 5,500 nonces).
    #[test]
    fn nonces_never_repeat_across_threads_or_reseeds() {
        let cipher = Arc::new(Cipher::new(&Key256::generate()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cipher = Arc::clone(&cipher);
                std::thread::spawn(move || {
                    (0..12_000).map(|_| cipher.seal(b"", b"")[..NONCE_LEN].to_vec()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for thread in threads {
            for nonce in thread.join().expect("sealing thread") {
                assert!(seen.insert(nonce), "a nonce came out twice");
            }
        }
        assert_eq!(seen.len(), 48_000);
    }

    #[test]
    fn debug_is_redacted() {
        let key = Key256::from_slice(&[0x42; 32]).expect("valid length");
        assert_eq!(format!("{:?}", Cipher::new(&key)), "Cipher(<redacted>)");
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            pt in proptest::collection::vec(any::<u8>(), 0..2048),
            aad in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let key = Key256::generate();
            let sealed = seal(&key, &pt, &aad);
            prop_assert_eq!(sealed.len(), pt.len() + OVERHEAD);
            prop_assert_eq!(open(&key, &sealed, &aad)?, pt);
        }
    }
}
