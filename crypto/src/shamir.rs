//! Shamir secret sharing over GF(2^8), share-compatible with HashiCorp Vault's `shamir` package.
//!
//! Each byte of the secret is the constant term of its own random polynomial of degree
//! `threshold - 1`. A share is the polynomials' values at one point `x`, laid out as Vault
//! does: `secret.len()` bytes of y values followed by the single byte `x`.

use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::gf256;
use crate::CryptoError;

/// Most shares possible: x must be a distinct non-zero byte.
pub const MAX_SHARES: usize = 255;

fn err(msg: impl Into<String>) -> CryptoError {
    CryptoError::Shamir(msg.into())
}

/// Splits `secret` (any non-empty length) into `shares` shares, any `threshold` of which recover it.
///
/// Requires `1 <= threshold <= shares <= 255`. Each share is `secret.len() + 1` bytes:
/// y values, then a distinct non-zero x coordinate; x values are in random order.
/// With `threshold == 1` every share's y values are the secret itself (still valid to combine).
pub fn split(secret: &[u8], shares: usize, threshold: usize) -> Result<Vec<Zeroizing<Vec<u8>>>, CryptoError> {
    if secret.is_empty() {
        return Err(err("secret must not be empty"));
    }
    if shares == 0 || shares > MAX_SHARES {
        return Err(err(format!("number of shares must be between 1 and {MAX_SHARES} (got {shares})")));
    }
    if threshold == 0 || threshold > shares {
        return Err(err(format!(
            "threshold must be between 1 and the number of shares (got {threshold} for {shares} shares)"
        )));
    }

    // Random distinct x values, as Vault does, so a share's x reveals nothing about how many
    // shares exist or which were handed out first.
    let mut xs: Vec<u8> = (1..=255).collect();
    xs.shuffle(&mut OsRng);
    xs.truncate(shares);

    let len = secret.len();
    let mut out: Vec<Zeroizing<Vec<u8>>> = xs
        .iter()
        .map(|&x| {
            let mut share = Zeroizing::new(vec![0u8; len + 1]);
            share[len] = x;
            share
        })
        .collect();

    // coeffs[0] is the secret byte; the rest are random. Zeroizing because they determine the secret.
    let mut coeffs = Zeroizing::new(vec![0u8; threshold]);
    for (i, &secret_byte) in secret.iter().enumerate() {
        coeffs[0] = secret_byte;
        OsRng.fill_bytes(&mut coeffs[1..]);
        for (share, &x) in out.iter_mut().zip(&xs) {
            share[i] = evaluate(&coeffs, x);
        }
    }
    Ok(out)
}

/// Horner evaluation of the polynomial with `coeffs[k]` the coefficient of x^k.
fn evaluate(coeffs: &[u8], x: u8) -> u8 {
    coeffs.iter().rev().fold(0u8, |acc, &c| gf256::add(gf256::mul(acc, x), c))
}

/// Recombines shares produced by [`split`] (or by Vault) into the secret.
///
/// Every share must be the same length (at least 2 bytes) with a distinct non-zero x byte.
/// Given fewer shares than the threshold this returns unrelated bytes: the threshold is not
/// recorded anywhere, so callers must verify the result (e.g. by unsealing with it).
pub fn combine(shares: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let first = shares.first().ok_or_else(|| err("no shares provided"))?;
    let share_len = first.len();
    if share_len < 2 {
        return Err(err("share too short: need at least one secret byte plus the x coordinate"));
    }
    let mut seen = [false; 256];
    let mut xs = Vec::with_capacity(shares.len());
    for share in shares {
        if share.len() != share_len {
            return Err(err("shares have differing lengths"));
        }
        // x coordinates are public, so branching and indexing on them leaks nothing.
        let x = share[share_len - 1];
        if x == 0 {
            return Err(err("invalid share: x coordinate is 0"));
        }
        if seen[usize::from(x)] {
            return Err(err("duplicate share (x coordinate repeated)"));
        }
        seen[usize::from(x)] = true;
        xs.push(x);
    }

    // Lagrange basis polynomials evaluated at 0, where the secret lives:
    // l_i(0) = prod_{j != i} x_j / (x_i - x_j). They depend only on the x values, so they
    // are computed once rather than per secret byte.
    let basis: Vec<u8> = xs
        .iter()
        .enumerate()
        .map(|(i, &xi)| {
            let (mut num, mut den) = (1u8, 1u8);
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    num = gf256::mul(num, xj);
                    den = gf256::mul(den, gf256::add(xi, xj));
                }
            }
            gf256::mul(num, gf256::inv(den))
        })
        .collect();

    let secret_len = share_len - 1;
    let mut secret = Zeroizing::new(vec![0u8; secret_len]);
    for (share, &l) in shares.iter().zip(&basis) {
        for (out, &y) in secret.iter_mut().zip(&share[..secret_len]) {
            *out = gf256::add(*out, gf256::mul(y, l));
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    // Explicit imports: proptest's prelude re-exports traits from its own rand version.
    use rand::seq::SliceRandom;
    use rand::{Rng, RngCore};

    fn refs(shares: &[Zeroizing<Vec<u8>>]) -> Vec<&[u8]> {
        shares.iter().map(|s| s.as_slice()).collect()
    }

    fn random_secret(len: usize) -> Vec<u8> {
        let mut s = vec![0u8; len];
        OsRng.fill_bytes(&mut s);
        s
    }

    /// A random subset of `k` of the shares, in random order.
    fn pick(shares: &[Zeroizing<Vec<u8>>], k: usize) -> Vec<&[u8]> {
        let mut all = refs(shares);
        all.shuffle(&mut OsRng);
        all.truncate(k);
        all
    }

    fn shamir_msg(e: CryptoError) -> String {
        match e {
            CryptoError::Shamir(m) => m,
            other => panic!("expected a Shamir error, got {other:?}"),
        }
    }

    #[test]
    fn share_layout_matches_vault() {
        let secret = random_secret(32);
        let shares = split(&secret, 10, 4).expect("valid parameters");
        assert_eq!(shares.len(), 10);
        let mut xs: Vec<u8> = shares.iter().map(|s| s[32]).collect();
        assert!(shares.iter().all(|s| s.len() == 33));
        assert!(xs.iter().all(|&x| x != 0));
        xs.sort_unstable();
        xs.dedup();
        assert_eq!(xs.len(), 10, "x coordinates must be distinct");
    }

    #[test]
    fn combine_uses_vault_interpolation() {
        // Hand-built shares of f(x) = 0x2a + 0x83 x, evaluated as Vault would at x = 1 and 0x57,
        // using the FIPS-197 product 0x57 * 0x83 = 0xc1 so that field reduction is exercised:
        // f(1) = 0x2a ^ 0x83 = 0xa9, f(0x57) = 0x2a ^ 0xc1 = 0xeb.
        let a: &[u8] = &[0xa9, 1];
        let b: &[u8] = &[0xeb, 0x57];
        assert_eq!(combine(&[a, b]).expect("valid shares").as_slice(), &[0x2a]);
        assert_eq!(combine(&[b, a]).expect("valid shares").as_slice(), &[0x2a]);
    }

    #[test]
    fn any_threshold_subset_recovers() {
        for (n, t) in [(1usize, 1usize), (2, 1), (2, 2), (3, 2), (5, 3), (5, 5), (10, 7), (255, 1), (255, 2)] {
            for secret_len in [1usize, 16, 32, 65] {
                let secret = random_secret(secret_len);
                let shares = split(&secret, n, t).expect("valid parameters");
                assert_eq!(shares.len(), n);
                for _ in 0..8 {
                    let k = OsRng.gen_range(t..=n);
                    let got = combine(&pick(&shares, k)).expect("valid shares");
                    assert_eq!(got.as_slice(), secret.as_slice(), "n={n} t={t} k={k}");
                }
            }
        }
    }

    #[test]
    fn all_255_shares_at_threshold_255() {
        let secret = random_secret(32);
        let shares = split(&secret, 255, 255).expect("valid parameters");
        let got = combine(&refs(&shares)).expect("valid shares");
        assert_eq!(got.as_slice(), secret.as_slice());
        // One short of the threshold must not recover it.
        let short = combine(&refs(&shares)[..254]).expect("valid shares");
        assert_ne!(short.as_slice(), secret.as_slice());
    }

    #[test]
    fn threshold_one_shares_are_the_secret() {
        let secret = random_secret(32);
        let shares = split(&secret, 4, 1).expect("valid parameters");
        for share in &shares {
            assert_eq!(&share[..32], secret.as_slice());
            assert_eq!(combine(&[share.as_slice()]).expect("valid").as_slice(), secret.as_slice());
        }
    }

    #[test]
    fn fewer_than_threshold_gives_wrong_secret() {
        // 32-byte secrets make an accidental match (probability 2^-256) impossible in practice.
        for (n, t) in [(2usize, 2usize), (3, 2), (5, 3), (10, 7), (20, 20)] {
            let secret = random_secret(32);
            let shares = split(&secret, n, t).expect("valid parameters");
            for k in 1..t {
                let got = combine(&pick(&shares, k)).expect("well-formed shares");
                assert_ne!(got.as_slice(), secret.as_slice(), "n={n} t={t} k={k}");
            }
        }
    }

    #[test]
    fn split_rejects_bad_parameters() {
        let cases: &[(usize, usize, usize, &str)] = &[
            (0, 3, 2, "empty"),
            (16, 0, 0, "number of shares"),
            (16, 0, 1, "number of shares"),
            (16, 256, 2, "number of shares"),
            (16, 1000, 2, "number of shares"),
            (16, 5, 0, "threshold"),
            (16, 5, 6, "threshold"),
            (16, 255, 256, "threshold"),
        ];
        for &(len, n, t, want) in cases {
            let msg = shamir_msg(split(&vec![1u8; len], n, t).expect_err("must be rejected"));
            assert!(msg.contains(want), "len={len} n={n} t={t}: {msg}");
        }
    }

    #[test]
    fn combine_rejects_malformed_input() {
        let shares = split(b"the secret", 3, 2).expect("valid parameters");
        let (a, b) = (shares[0].as_slice(), shares[1].as_slice());
        let shorter = &b[1..]; // still ends in b's x byte, but one y byte fewer
        let mut zero_x = a.to_vec();
        *zero_x.last_mut().expect("non-empty") = 0;

        let cases: Vec<(Vec<&[u8]>, &str)> = vec![
            (vec![], "no shares"),
            (vec![&[]], "too short"),
            (vec![&[7]], "too short"),
            (vec![a, shorter], "differing lengths"),
            (vec![a, a], "duplicate share"),
            (vec![a, b, a], "duplicate share"),
            (vec![zero_x.as_slice(), b], "x coordinate is 0"),
            (vec![b, zero_x.as_slice()], "x coordinate is 0"),
        ];
        for (input, want) in cases {
            let msg = shamir_msg(combine(&input).expect_err("must be rejected"));
            assert!(msg.contains(want), "{want}: got {msg}");
        }
    }

    #[test]
    fn duplicate_x_with_different_y_is_rejected() {
        let shares = split(b"abc", 3, 2).expect("valid parameters");
        let mut forged = shares[1].to_vec();
        *forged.last_mut().expect("non-empty") = shares[0][3];
        let msg = shamir_msg(combine(&[&shares[0], &forged]).expect_err("duplicate x"));
        assert!(msg.contains("duplicate share"), "{msg}");
    }

    fn split_case() -> impl Strategy<Value = (Vec<u8>, usize, usize, Vec<usize>)> {
        (proptest::collection::vec(any::<u8>(), 1..64), 1usize..=16)
            .prop_flat_map(|(secret, n)| (Just(secret), Just(n), 1..=n))
            .prop_flat_map(|(secret, n, t)| {
                let chosen = proptest::sample::subsequence((0..n).collect::<Vec<_>>(), t).prop_shuffle();
                (Just(secret), Just(n), Just(t), chosen)
            })
    }

    proptest! {
        #[test]
        fn prop_split_combine_round_trip((secret, n, t, chosen) in split_case()) {
            let shares = split(&secret, n, t)?;
            let subset: Vec<&[u8]> = chosen.iter().map(|&i| shares[i].as_slice()).collect();
            let recovered = combine(&subset)?;
            prop_assert_eq!(recovered.as_slice(), secret.as_slice());
        }
    }
}
