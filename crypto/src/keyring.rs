//! The barrier keyring: the root key plus one data-encryption key per term, and its sealed storage form.
//!
//! Storage records are encrypted under the active term's key; older terms stay so that
//! records written before a rotation remain readable.

use std::fmt;

use zeroize::Zeroizing;

use crate::aead::{self, Cipher};
use crate::{constant_time_eq, CryptoError, Key256};

/// Associated data binding a keyring sealed under the unseal key to that purpose.
pub const KEYRING_AAD: &[u8] = b"arcanum/keyring";
/// Associated data for the copy of the keyring sealed under its own root key.
pub const KEYRING_ROOT_AAD: &[u8] = b"arcanum/keyring-root";

/// Identifies the serialised format, so that other data unsealed by mistake is rejected early.
const MAGIC: &[u8; 4] = b"ARKR";
const FORMAT_VERSION: u8 = 1;
/// magic, version, root key, term count.
const HEADER_LEN: usize = 4 + 1 + Key256::LEN + 4;
/// term (u32), install time (i64), key.
const ENTRY_LEN: usize = 4 + 8 + Key256::LEN;

/// Public facts about one term, as reported by key-status endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermInfo {
    /// The term number (1 for the first key).
    pub term: u32,
    /// When the term's key was installed, in Unix seconds.
    pub install_time_unix: i64,
    /// Not tracked by the keyring (counting would need interior mutability on every seal);
    /// always 0 here, for the caller to fill in.
    pub encryptions: u64,
}

#[derive(Clone)]
struct Term {
    key: Key256,
    cipher: Cipher,
    install_time_unix: i64,
}

impl Term {
    fn new(key: Key256, install_time_unix: i64) -> Term {
        Term { cipher: Cipher::new(&key), key, install_time_unix }
    }
}

/// The barrier keyring: a root key plus one data key per term (terms start at 1 and increase by 1;
/// the highest term is active).
///
/// Keys and cached ciphers are wiped on drop; `Debug` shows only the active term and term count.
#[derive(Clone)]
pub struct Keyring {
    root: Key256,
    /// `terms[i]` holds term `i + 1`; never empty.
    terms: Vec<Term>,
}

impl Keyring {
    /// A new keyring with a random root key and term 1 holding a random data key installed at `now_unix`.
    pub fn generate(now_unix: i64) -> Keyring {
        Keyring { root: Key256::generate(), terms: vec![Term::new(Key256::generate(), now_unix)] }
    }

    /// The term new data should be encrypted under.
    pub fn active_term(&self) -> u32 {
        // `terms.len()` never exceeds u32::MAX: `rotate` and `from_bytes` both enforce it.
        u32::try_from(self.terms.len()).unwrap_or(u32::MAX)
    }

    fn active(&self) -> &Term {
        // `generate` and `from_bytes` guarantee at least one term, and nothing removes terms.
        self.terms.last().expect("keyring always has a term")
    }

    fn term(&self, term: u32) -> Option<&Term> {
        let index = usize::try_from(term).ok()?.checked_sub(1)?;
        self.terms.get(index)
    }

    /// The active term's data key.
    pub fn active_key(&self) -> &Key256 {
        &self.active().key
    }

    /// A cipher for the active term's key, with its key schedule already computed.
    pub fn active_cipher(&self) -> &Cipher {
        &self.active().cipher
    }

    /// The data key for `term`, if the keyring has it.
    pub fn key_for_term(&self, term: u32) -> Option<&Key256> {
        self.term(term).map(|t| &t.key)
    }

    /// A cached cipher for `term`, if the keyring has it.
    pub fn cipher_for_term(&self, term: u32) -> Option<&Cipher> {
        self.term(term).map(|t| &t.cipher)
    }

    /// When `term` was installed, in Unix seconds.
    pub fn install_time(&self, term: u32) -> Option<i64> {
        self.term(term).map(|t| t.install_time_unix)
    }

    /// Public information about `term` (`encryptions` is always 0; see [`TermInfo`]).
    pub fn term_info(&self, term: u32) -> Option<TermInfo> {
        self.install_time(term).map(|install_time_unix| TermInfo { term, install_time_unix, encryptions: 0 })
    }

    /// All terms, oldest first.
    pub fn terms(&self) -> Vec<u32> {
        (1..=self.active_term()).collect()
    }

    /// Installs term `active + 1` with a fresh random key at `now_unix` and makes it active;
    /// returns the new term. Older terms are kept for decryption.
    ///
    /// # Panics
    ///
    /// After 2^32 − 1 terms, which would need over 300 GiB of keys in memory.
    pub fn rotate(&mut self, now_unix: i64) -> u32 {
        let next = self.active_term().checked_add(1).expect("keyring term counter exhausted");
        self.terms.push(Term::new(Key256::generate(), now_unix));
        next
    }

    /// The root key.
    pub fn root_key(&self) -> &Key256 {
        &self.root
    }

    /// Serialises the keyring. The result contains every key, hence `Zeroizing`.
    ///
    /// Format (version 1, integers big-endian): `"ARKR"`, version byte `1`, 32-byte root key,
    /// `u32` term count, then per term in order: `u32` term, `i64` install time, 32-byte key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Exact capacity so the buffer never reallocates and leaves unwiped copies behind.
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.terms.len()));
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(&self.active_term().to_be_bytes());
        for (term, entry) in (1u32..).zip(&self.terms) {
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(&entry.install_time_unix.to_be_bytes());
            out.extend_from_slice(entry.key.as_bytes());
        }
        out
    }

    /// Parses the output of [`Keyring::to_bytes`]; never panics on arbitrary input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, CryptoError> {
        let malformed = |msg: &str| CryptoError::Malformed(format!("keyring: {msg}"));
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()).ok_or_else(|| malformed("truncated"))? != MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = r.take(1).ok_or_else(|| malformed("truncated"))?[0];
        if version != FORMAT_VERSION {
            return Err(malformed(&format!("unsupported version {version}")));
        }
        let root = Key256::from_slice(r.take(Key256::LEN).ok_or_else(|| malformed("truncated"))?)?;
        let count = r.u32().ok_or_else(|| malformed("truncated"))?;
        if count == 0 {
            return Err(malformed("no terms"));
        }
        // Check the length before allocating so a forged count cannot force a huge allocation.
        let count = usize::try_from(count).map_err(|_| malformed("too many terms"))?;
        if count.checked_mul(ENTRY_LEN) != Some(r.0.len()) {
            return Err(malformed("length does not match term count"));
        }
        let mut terms = Vec::with_capacity(count);
        for expected in 1..=count {
            let term = r.u32().ok_or_else(|| malformed("truncated"))?;
            if usize::try_from(term).ok() != Some(expected) {
                return Err(malformed("terms must be numbered 1, 2, 3, ... in order"));
            }
            let install_time_unix = r.i64().ok_or_else(|| malformed("truncated"))?;
            let key = Key256::from_slice(r.take(Key256::LEN).ok_or_else(|| malformed("truncated"))?)?;
            terms.push(Term::new(key, install_time_unix));
        }
        Ok(Keyring { root, terms })
    }

    /// Seals the serialised keyring under `unseal_key`, bound to [`KEYRING_AAD`].
    pub fn seal(&self, unseal_key: &Key256) -> Vec<u8> {
        self.seal_with(unseal_key, KEYRING_AAD)
    }

    /// Inverse of [`Keyring::seal`]. A wrong key gives [`CryptoError::Decrypt`].
    pub fn unseal(unseal_key: &Key256, sealed: &[u8]) -> Result<Keyring, CryptoError> {
        Self::unseal_with(unseal_key, sealed, KEYRING_AAD)
    }

    /// Seals the keyring under its own root key, bound to [`KEYRING_ROOT_AAD`]: the second stored
    /// copy that lets a rekey re-wrap the keyring.
    pub fn seal_with_root(&self) -> Vec<u8> {
        self.seal_with(&self.root, KEYRING_ROOT_AAD)
    }

    /// Inverse of [`Keyring::seal_with_root`]. Also checks that the recovered keyring's root key
    /// is `root_key`, rejecting a copy that was swapped for another keyring's.
    pub fn unseal_with_root(root_key: &Key256, sealed: &[u8]) -> Result<Keyring, CryptoError> {
        let keyring = Self::unseal_with(root_key, sealed, KEYRING_ROOT_AAD)?;
        if !constant_time_eq(keyring.root.as_bytes(), root_key.as_bytes()) {
            return Err(CryptoError::Malformed("keyring: root key does not match the key it was sealed under".into()));
        }
        Ok(keyring)
    }

    /// Seals the serialised keyring under `key` with associated data `aad`.
    pub fn seal_with(&self, key: &Key256, aad: &[u8]) -> Vec<u8> {
        aead::seal(key, &self.to_bytes(), aad)
    }

    /// Inverse of [`Keyring::seal_with`].
    pub fn unseal_with(key: &Key256, sealed: &[u8], aad: &[u8]) -> Result<Keyring, CryptoError> {
        let plaintext = Zeroizing::new(aead::open(key, sealed, aad)?);
        Self::from_bytes(&plaintext)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active_term())
            .field("terms", &self.terms.len())
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

/// Bounds-checked cursor over the serialised form; every read returns `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take(8)?.try_into().ok().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_same(a: &Keyring, b: &Keyring) {
        assert_eq!(a.root_key().as_bytes(), b.root_key().as_bytes());
        assert_eq!(a.terms(), b.terms());
        assert_eq!(a.active_term(), b.active_term());
        for term in a.terms() {
            assert_eq!(
                a.key_for_term(term).map(Key256::as_bytes),
                b.key_for_term(term).map(Key256::as_bytes),
                "term {term}"
            );
            assert_eq!(a.term_info(term), b.term_info(term));
        }
    }

    fn rotated(times: usize) -> Keyring {
        let mut kr = Keyring::generate(1_000);
        for i in 0..times {
            kr.rotate(2_000 + i as i64);
        }
        kr
    }

    #[test]
    fn generate_starts_at_term_one() {
        let kr = Keyring::generate(1_700_000_000);
        assert_eq!(kr.active_term(), 1);
        assert_eq!(kr.terms(), vec![1]);
        assert_eq!(kr.install_time(1), Some(1_700_000_000));
        assert_eq!(kr.term_info(1), Some(TermInfo { term: 1, install_time_unix: 1_700_000_000, encryptions: 0 }));
        assert_ne!(kr.root_key().as_bytes(), kr.active_key().as_bytes());
        for missing in [0, 2, u32::MAX] {
            assert!(kr.key_for_term(missing).is_none(), "term {missing}");
            assert!(kr.cipher_for_term(missing).is_none(), "term {missing}");
            assert!(kr.install_time(missing).is_none(), "term {missing}");
            assert!(kr.term_info(missing).is_none(), "term {missing}");
        }
    }

    #[test]
    fn rotate_keeps_old_keys() {
        let mut kr = Keyring::generate(100);
        let root = kr.root_key().as_bytes().to_owned();
        let k1 = kr.active_key().as_bytes().to_owned();
        let sealed_under_1 = kr.active_cipher().seal(b"old record", b"p");

        assert_eq!(kr.rotate(200), 2);
        assert_eq!(kr.rotate(300), 3);

        assert_eq!(kr.active_term(), 3);
        assert_eq!(kr.terms(), vec![1, 2, 3]);
        assert_eq!(kr.key_for_term(1).map(Key256::as_bytes), Some(&k1));
        assert_ne!(kr.active_key().as_bytes(), &k1);
        assert_ne!(kr.key_for_term(2).map(Key256::as_bytes), kr.key_for_term(3).map(Key256::as_bytes));
        assert_eq!(kr.root_key().as_bytes(), &root, "rotation must not change the root key");
        assert_eq!([kr.install_time(1), kr.install_time(2), kr.install_time(3)], [Some(100), Some(200), Some(300)]);
        let old = kr.cipher_for_term(1).expect("term 1 kept");
        assert_eq!(old.open(&sealed_under_1, b"p").expect("opens"), b"old record");
        // The cached active cipher must be the new term's, not a stale one.
        let new_record = kr.active_cipher().seal(b"new", b"");
        assert_eq!(aead::open(kr.key_for_term(3).expect("term 3"), &new_record, b"").expect("opens"), b"new");
    }

    #[test]
    fn bytes_round_trip() {
        for times in [0usize, 1, 5] {
            let kr = rotated(times);
            let bytes = kr.to_bytes();
            assert_eq!(bytes.len(), HEADER_LEN + ENTRY_LEN * (times + 1));
            let back = Keyring::from_bytes(&bytes).expect("round trip");
            assert_same(&kr, &back);
        }
    }

    #[test]
    fn negative_install_time_round_trips() {
        let kr = Keyring::generate(-42);
        let back = Keyring::from_bytes(&kr.to_bytes()).expect("round trip");
        assert_eq!(back.install_time(1), Some(-42));
    }

    #[test]
    fn seal_unseal_round_trip() {
        let kr = rotated(2);
        let unseal_key = Key256::generate();
        let sealed = kr.seal(&unseal_key);
        assert_same(&kr, &Keyring::unseal(&unseal_key, &sealed).expect("unseals"));

        let root_copy = kr.seal_with_root();
        assert_same(&kr, &Keyring::unseal_with_root(kr.root_key(), &root_copy).expect("unseals"));
    }

    #[test]
    fn unseal_rejects_wrong_key_or_purpose() {
        let kr = Keyring::generate(0);
        let unseal_key = Key256::generate();
        let sealed = kr.seal(&unseal_key);
        assert_eq!(Keyring::unseal(&Key256::generate(), &sealed).err(), Some(CryptoError::Decrypt));
        // Same key, other purpose: the aad keeps the two copies from being interchangeable.
        assert_eq!(Keyring::unseal_with(&unseal_key, &sealed, KEYRING_ROOT_AAD).err(), Some(CryptoError::Decrypt));
        assert_eq!(Keyring::unseal(kr.root_key(), &kr.seal_with_root()).err(), Some(CryptoError::Decrypt));
        assert_eq!(Keyring::unseal(&unseal_key, &sealed[..sealed.len() - 1]).err(), Some(CryptoError::Decrypt));
    }

    #[test]
    fn unseal_with_root_rejects_foreign_keyring() {
        // Another keyring sealed under our root key with the root aad must not be accepted.
        let ours = Keyring::generate(0);
        let theirs = Keyring::generate(0);
        let forged = theirs.seal_with(ours.root_key(), KEYRING_ROOT_AAD);
        assert!(matches!(Keyring::unseal_with_root(ours.root_key(), &forged), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        let good = rotated(2).to_bytes().to_vec();
        let with = |offset: usize, patch: &[u8]| {
            let mut b = good.clone();
            b[offset..offset + patch.len()].copy_from_slice(patch);
            b
        };
        let count_at = 5 + 32;
        let first_entry = HEADER_LEN;
        let mut trailing = good.clone();
        trailing.push(0);

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("magic only", MAGIC.to_vec()),
            ("bad magic", with(0, b"XRKR")),
            ("bad version", with(4, &[2])),
            ("header truncated", good[..HEADER_LEN - 1].to_vec()),
            ("zero terms", with(count_at, &0u32.to_be_bytes())),
            ("count too big", with(count_at, &4u32.to_be_bytes())),
            ("count huge", with(count_at, &u32::MAX.to_be_bytes())),
            ("count too small", with(count_at, &2u32.to_be_bytes())),
            ("entry truncated", good[..good.len() - 1].to_vec()),
            ("trailing byte", trailing),
            ("term zero", with(first_entry, &0u32.to_be_bytes())),
            ("term gap", with(first_entry + ENTRY_LEN, &3u32.to_be_bytes())),
            ("term repeated", with(first_entry + ENTRY_LEN, &1u32.to_be_bytes())),
        ];
        for (name, bytes) in cases {
            assert!(matches!(Keyring::from_bytes(&bytes), Err(CryptoError::Malformed(_))), "{name}");
        }
        // Every prefix of a valid encoding is invalid and must not panic.
        for len in 0..good.len() {
            assert!(Keyring::from_bytes(&good[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn debug_reveals_no_key_material() {
        let kr = rotated(2);
        let dbg = format!("{kr:?}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(dbg.contains("active_term: 3"), "{dbg}");
        let mut keys = vec![kr.root_key()];
        keys.extend(kr.terms().into_iter().filter_map(|t| kr.key_for_term(t)));
        for key in keys {
            for rendering in [
                hex::encode(key.as_bytes()),
                hex::encode_upper(key.as_bytes()),
                format!("{:?}", key.as_bytes()),
                hex::encode(&key.as_bytes()[..8]),
            ] {
                assert!(!dbg.contains(&rendering), "{dbg} contains {rendering}");
            }
        }
        assert_eq!(
            format!("{:?}", kr.term_info(1).expect("term 1")),
            "TermInfo { term: 1, install_time_unix: 1000, encryptions: 0 }"
        );
    }
}
