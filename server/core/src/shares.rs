//! Handing out key shares and root tokens: in the clear, or encrypted to operators' OpenPGP
//! keys (Vault's `pgp_keys`, `recovery_pgp_keys`, `root_token_pgp_key`, rekey `backup`).
//!
//! As in Vault, what is encrypted for a share is the *hex text* of the share, so `gpg -d`
//! prints what `arcanum operator unseal` takes; the encrypted share is then handed out as hex
//! (`keys`) and base64 (`keys_base64`) of the binary OpenPGP message. Encryption happens before
//! anything is written, so a key that cannot be encrypted to leaves nothing half-done.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use arcanum_contract::logical::ApiError;
pub use arcanum_crypto::pgp::PgpRecipient;

/// Physical keys (outside the barrier, as in Vault: the shares in them are PGP-encrypted) of
/// the encrypted shares a rekey with `backup = true` keeps.
pub const UNSEAL_KEYS_BACKUP_PATH: &str = "core/unseal-keys-backup";
pub const RECOVERY_KEYS_BACKUP_PATH: &str = "core/recovery-keys-backup";

/// Whom new shares (and a new root token) are for.
#[derive(Debug, Clone, Default)]
pub struct ShareDelivery {
    /// One key per share, in order; empty: shares in the clear.
    pub share_keys: Vec<PgpRecipient>,
    pub root_token_key: Option<PgpRecipient>,
}

impl ShareDelivery {
    /// With keys, there must be exactly one per share.
    pub fn check_count(&self, shares: usize, mismatch: &str) -> Result<(), ApiError> {
        if !self.share_keys.is_empty() && self.share_keys.len() != shares {
            return Err(ApiError::bad_request(mismatch));
        }
        Ok(())
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.share_keys.iter().map(|key| key.fingerprint().to_owned()).collect()
    }

    /// The shares as handed out: each one's hex text encrypted to its key, or as they are.
    pub fn seal_shares(&self, shares: Vec<Zeroizing<Vec<u8>>>) -> Result<Vec<Zeroizing<Vec<u8>>>, ApiError> {
        if self.share_keys.is_empty() {
            return Ok(shares);
        }
        shares
            .iter()
            .zip(&self.share_keys)
            .map(|(share, key)| {
                let text = Zeroizing::new(hex::encode(share.as_slice()));
                key.encrypt(text.as_bytes()).map(Zeroizing::new).map_err(encryption_failed)
            })
            .collect()
    }

    /// The root token as handed out: base64 of a message encrypted to `root_token_key`, or as it is.
    pub fn seal_root_token(&self, token: Zeroizing<String>) -> Result<Zeroizing<String>, ApiError> {
        match &self.root_token_key {
            None => Ok(token),
            Some(key) => encrypt_token(key, &token),
        }
    }
}

/// A token encrypted to `key`, as padded base64 of the binary message (Vault's encoding for
/// `root_token_pgp_key` and generate-root's `pgp_key`).
pub fn encrypt_token(key: &PgpRecipient, token: &str) -> Result<Zeroizing<String>, ApiError> {
    let message = key.encrypt(token.as_bytes()).map_err(encryption_failed)?;
    Ok(Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(message)))
}

fn encryption_failed(reason: String) -> ApiError {
    tracing::error!(%reason, "encrypting to an operator's PGP key failed");
    ApiError::new(500, format!("encrypting to the given PGP key failed: {reason}"))
}

/// Parses base64 public keys as a request gives them (`pgp_keys[i]` names the field).
pub fn parse_keys(field: &str, keys: &[String]) -> Result<Vec<PgpRecipient>, ApiError> {
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            PgpRecipient::from_base64(key)
                .map_err(|reason| ApiError::bad_request(format!("error parsing PGP key {field}[{index}]: {reason}")))
        })
        .collect()
}

/// What a rekey with `backup = true` keeps: the encrypted new shares by key fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeysBackup {
    pub nonce: String,
    /// Fingerprint -> hex of each encrypted share for that key, in share order.
    pub keys: BTreeMap<String, Vec<String>>,
}

impl KeysBackup {
    pub fn of(nonce: &str, delivery: &ShareDelivery, sealed: &[Zeroizing<Vec<u8>>]) -> KeysBackup {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, share) in delivery.share_keys.iter().zip(sealed) {
            keys.entry(key.fingerprint().to_owned()).or_default().push(hex::encode(share.as_slice()));
        }
        KeysBackup { nonce: nonce.to_owned(), keys }
    }
}
