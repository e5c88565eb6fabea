//! Constant-time arithmetic in GF(2^8) with the AES polynomial, the field HashiCorp Vault's Shamir uses.
//!
//! Vault (and most implementations) multiply through log/exp tables, whose secret-indexed
//! memory accesses leak through the cache. Here every operation runs the same instruction
//! sequence whatever the operands, so share and secret bytes cannot be recovered by timing.

/// Low byte of the reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B).
const REDUCE: u8 = 0x1b;

/// Addition (and subtraction) in characteristic 2.
#[inline]
pub(crate) fn add(a: u8, b: u8) -> u8 {
    a ^ b
}

/// Multiplication by shift-and-add over all eight bits of `b`, with masks in place of branches.
#[inline]
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut product = 0u8;
    for _ in 0..8 {
        // 0xFF when the low bit of b is set, else 0x00.
        product ^= a & (b & 1).wrapping_neg();
        // Reduce when the shift carries out of x^7.
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (REDUCE & carry);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse as a^254 (Fermat: a^255 = 1 for a != 0); maps 0 to 0.
///
/// A fixed addition chain, so no branch depends on `a`.
#[inline]
pub(crate) fn inv(a: u8) -> u8 {
    let a2 = mul(a, a);
    let a4 = mul(a2, a2);
    let a8 = mul(a4, a4);
    let a16 = mul(a8, a8);
    let a32 = mul(a16, a16);
    let a64 = mul(a32, a32);
    let a128 = mul(a64, a64);
    // 254 = 2 + 4 + 8 + 16 + 32 + 64 + 128
    let lo = mul(mul(a2, a4), mul(a8, a16));
    let hi = mul(mul(a32, a64), a128);
    mul(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Textbook reference: carry-less multiply into 16 bits, then long division by 0x11B.
    /// Branchy and slow, but structurally unlike `mul`, so agreement is meaningful.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let mut wide = 0u16;
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                wide ^= (a as u16) << bit;
            }
        }
        for bit in (8..16).rev() {
            if wide & (1 << bit) != 0 {
                wide ^= 0x11b << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn known_products() {
        // FIPS-197 §4.2 examples, and the cases from Vault's shamir field tests.
        let cases = [
            (0x57, 0x83, 0xc1),
            (0x57, 0x13, 0xfe),
            (0x57, 0x02, 0xae),
            (3, 7, 9),
            (3, 0, 0),
            (0, 3, 0),
            (1, 0xff, 0xff),
        ];
        for (a, b, want) in cases {
            assert_eq!(mul(a, b), want, "{a:#x} * {b:#x}");
            assert_eq!(slow_mul(a, b), want, "reference {a:#x} * {b:#x}");
        }
    }

    #[test]
    fn mul_matches_reference_exhaustively() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a:#x} * {b:#x}");
            }
        }
    }

    #[test]
    fn inv_is_inverse_exhaustively() {
        assert_eq!(inv(0), 0);
        for a in 1..=255u8 {
            let i = inv(a);
            assert_eq!(mul(a, i), 1, "a={a:#x} inv={i:#x}");
            // The inverse is unique, so the brute-force search must find the same element.
            let brute = (1..=255u8).find(|&b| slow_mul(a, b) == 1).expect("every non-zero element has an inverse");
            assert_eq!(i, brute, "a={a:#x}");
        }
    }

    #[test]
    fn division_examples_from_vault() {
        // Vault's div(a, b) is a * b^-1.
        for (a, b, want) in [(0u8, 7u8, 0u8), (3, 3, 1), (6, 3, 2)] {
            assert_eq!(mul(a, inv(b)), want, "{a} / {b}");
        }
    }

    #[test]
    fn add_is_xor() {
        assert_eq!(add(0x57, 0x83), 0xd4);
        assert_eq!(add(0xff, 0xff), 0);
    }
}
