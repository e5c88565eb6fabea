//! The single error type returned by every fallible operation in this crate.

/// Errors from cryptographic operations.
///
/// Messages never contain key material or plaintext, so they are safe to log or return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authenticated decryption failed: wrong key, wrong associated data, truncation or tampering.
    /// Deliberately says nothing about which, to avoid giving an attacker an oracle.
    #[error("message authentication failed")]
    Decrypt,
    /// A key was supplied with a length other than 32 bytes.
    #[error("invalid key length: expected 32 bytes")]
    InvalidKeyLength,
    /// Invalid parameters or shares for Shamir secret sharing.
    #[error("shamir: {0}")]
    Shamir(String),
    /// Structurally invalid serialised data (it authenticated, or was never authenticated, but does not parse).
    #[error("malformed data: {0}")]
    Malformed(String),
}
