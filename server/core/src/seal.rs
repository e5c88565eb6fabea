//! Auto-unseal: a seal that protects the root key with a key held elsewhere (another server's
//! Transit key), so a node unseals itself at start, and the recovery key that then stands in
//! for unseal keys (its shares authorise unseal after a manual seal and recovery rekeys).
//!
//! The core knows a seal only through [`AutoSeal`]; the program supplies the implementation
//! (the Transit client lives in the binary, with its HTTP and TLS).

use std::fmt::Debug;

use arcanum_crypto::{aead, Key256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use arcanum_contract::logical::ApiError;

/// `core/recovery-config`: the recovery shares and threshold (plaintext, needed while sealed).
pub(crate) const RECOVERY_CONFIG_PATH: &str = "core/recovery-config";
/// `core/recovery-key`: a constant sealed under the recovery key, so recovery shares can be
/// checked without the seal (they never open the root key by themselves).
pub(crate) const RECOVERY_KEY_PATH: &str = "core/recovery-key";

const RECOVERY_AAD: &[u8] = b"arcanum/recovery-key";
const RECOVERY_CHECK: &[u8] = b"arcanum recovery key check";

/// A seal that wraps the root key with a key kept somewhere else.
#[async_trait::async_trait]
pub trait AutoSeal: Send + Sync + Debug {
    /// The seal's type as `sys/seal-status` names it (`transit`).
    fn kind(&self) -> &'static str;

    /// Wraps `plaintext`; the result is stored as it is.
    async fn encrypt(&self, plaintext: &[u8]) -> Result<String, SealError>;

    /// Unwraps what [`AutoSeal::encrypt`] returned.
    async fn decrypt(&self, wrapped: &str) -> Result<Zeroizing<Vec<u8>>, SealError>;
}

/// Why the seal could not wrap or unwrap. `detail` says what was asked of whom and what came
/// back (for the log); `summary` says only what kind of failure it was, for answers to
/// callers without a token (`sys/init`, `sys/seal-status`), which must not learn where the
/// unsealer is or which key it holds. Neither ever holds a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct SealError {
    pub detail: String,
    pub summary: String,
}

impl From<SealError> for ApiError {
    fn from(err: SealError) -> ApiError {
        tracing::warn!(error = %err.detail, "the seal could not be used");
        ApiError::new(500, format!("the seal could not be used: {}", err.summary))
    }
}

/// The root key as an auto seal stores it at `core/root-key`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WrappedRootKey {
    /// Which seal wrapped it.
    pub seal: String,
    /// What the seal returned (`vault:v<N>:...` for Transit).
    pub ciphertext: String,
}

/// Wraps the root key with `seal`, ready to store.
pub(crate) async fn wrap_root_key(seal: &dyn AutoSeal, root_key: &Key256) -> Result<Vec<u8>, ApiError> {
    let ciphertext = seal.encrypt(root_key.as_bytes()).await?;
    serde_json::to_vec(&WrappedRootKey { seal: seal.kind().to_owned(), ciphertext }).map_err(|_| ApiError::internal())
}

/// Unwraps a stored root key with `seal`.
pub(crate) async fn unwrap_root_key(seal: &dyn AutoSeal, stored: &[u8]) -> Result<Key256, ApiError> {
    let wrapped: WrappedRootKey = serde_json::from_slice(stored).map_err(|_| {
        ApiError::new(500, "the stored root key was not written by an auto seal (was the data sealed with Shamir?)")
    })?;
    let bytes = seal.decrypt(&wrapped.ciphertext).await?;
    Key256::from_slice(&bytes).map_err(|_| ApiError::new(500, "the seal returned a root key of the wrong length"))
}

/// The record that lets recovery shares be checked.
pub(crate) fn recovery_check(recovery_key: &Key256) -> Vec<u8> {
    aead::seal(recovery_key, RECOVERY_CHECK, RECOVERY_AAD)
}

/// Whether `candidate` is the recovery key `check` was made with.
pub(crate) fn recovery_key_matches(candidate: &Key256, check: &[u8]) -> bool {
    aead::open(candidate, check, RECOVERY_AAD).is_ok_and(|opened| opened == RECOVERY_CHECK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recovery_key_passes_its_check() {
        let key = Key256::generate();
        let check = recovery_check(&key);
        assert!(recovery_key_matches(&key, &check));
        assert!(!recovery_key_matches(&Key256::generate(), &check));
        assert!(!recovery_key_matches(&key, &check[..check.len() - 1]));
    }
}
