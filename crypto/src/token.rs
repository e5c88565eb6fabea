//! Random tokens, identifiers and salts drawn from the operating system's CSPRNG.

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// Largest multiple of 62 that fits in a byte: bytes at or above it are rejected so that
/// `byte % 62` is exactly uniform.
const BASE62_LIMIT: u8 = 248;

/// `prefix` followed by `len` random base62 characters (`0-9A-Za-z`), unbiased.
///
/// Each character carries log2(62) ≈ 5.95 bits, so 24 characters give over 142 bits.
pub fn generate(prefix: &str, len: usize) -> String {
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    let mut pool = [0u8; 64];
    let mut remaining = len;
    while remaining > 0 {
        OsRng.fill_bytes(&mut pool);
        for &byte in pool.iter().filter(|&&b| b < BASE62_LIMIT).take(remaining) {
            out.push(base62_char(byte % 62));
            remaining -= 1;
        }
    }
    pool.zeroize();
    out
}

/// Maps 0..62 to `0-9A-Za-z` arithmetically rather than by table lookup, so the memory
/// access pattern (and hence cache timing) does not depend on the token's characters.
fn base62_char(v: u8) -> char {
    let v = i16::from(v);
    let mut c = v + i16::from(b'0');
    // Arithmetic shift yields all ones exactly when v is past the digits / upper-case letters.
    c += ((9 - v) >> 15) & (i16::from(b'A') - i16::from(b'9') - 1);
    c += ((35 - v) >> 15) & (i16::from(b'a') - i16::from(b'Z') - 1);
    char::from(c as u8)
}

/// Lowercase hex encoding of `n_bytes` random bytes (so `2 * n_bytes` characters).
pub fn random_hex(n_bytes: usize) -> String {
    let bytes = Zeroizing::new(random_bytes(n_bytes));
    let mut out = String::with_capacity(2 * n_bytes);
    for &b in bytes.iter() {
        out.push(hex_char(b >> 4));
        out.push(hex_char(b & 0x0f));
    }
    out
}

/// Nibble to `0-9a-f` without a secret-indexed table, for the same reason as `base62_char`.
fn hex_char(nibble: u8) -> char {
    let v = i16::from(nibble);
    let c = v + i16::from(b'0') + (((9 - v) >> 15) & (i16::from(b'a') - i16::from(b'9') - 1));
    char::from(c as u8)
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    #[test]
    fn base62_char_maps_whole_alphabet() {
        let mapped: String = (0..62).map(base62_char).collect();
        assert_eq!(mapped, BASE62);
    }

    #[test]
    fn hex_char_maps_all_nibbles() {
        let mapped: String = (0..16).map(hex_char).collect();
        assert_eq!(mapped, "0123456789abcdef");
    }

    #[test]
    fn generate_prefix_length_alphabet() {
        for (prefix, len) in [("hvs.", 24usize), ("", 0), ("", 1), ("s.", 100), ("x", 500)] {
            let token = generate(prefix, len);
            let body = token.strip_prefix(prefix).expect("prefix present");
            assert_eq!(body.chars().count(), len, "{token}");
            assert!(body.chars().all(|c| BASE62.contains(c)), "{token}");
        }
    }

    #[test]
    fn generate_uses_whole_alphabet_and_differs() {
        let body = generate("", 10_000);
        for c in BASE62.chars() {
            assert!(body.contains(c), "character {c} never produced");
        }
        assert_ne!(generate("t.", 24), generate("t.", 24));
    }

    #[test]
    fn random_hex_length_and_alphabet() {
        for n in [0usize, 1, 16, 32] {
            let h = random_hex(n);
            assert_eq!(h.len(), 2 * n);
            assert!(h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{h}");
        }
        assert_ne!(random_hex(16), random_hex(16));
    }

    #[test]
    fn random_bytes_length_and_randomness() {
        for n in [0usize, 1, 32, 1000] {
            assert_eq!(random_bytes(n).len(), n);
        }
        assert_ne!(random_bytes(32), random_bytes(32));
    }
}
