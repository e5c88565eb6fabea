//! The token store, as far as the sealed core needs it: the root token.
//!
//! Tokens are stored under `sys/token/id/<HMAC(salt, token)>`, never by value, so a copy of
//! the storage (even decrypted) does not hand out working tokens. The salt is a random key
//! kept behind the barrier. The full token store (create, renew, revoke, roles) arrives with
//! the ACL work; this module is its seed.

use std::sync::Arc;

use arcanum_crypto::{hmac_sha256, token};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::barrier::{unix_now, Barrier, BarrierError, BarrierOp};

const SALT_PATH: &str = "sys/token/salt";
const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";

/// Service tokens look like Vault's (`hvs.` + base62), so existing secret scanners flag leaks.
const TOKEN_PREFIX: &str = "hvs.";
const TOKEN_RANDOM_LEN: usize = 24;
const ACCESSOR_LEN: usize = 24;

/// What the store knows about a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub accessor: String,
    pub policies: Vec<String>,
    pub display_name: String,
    pub path: String,
    pub creation_time: i64,
}

impl TokenEntry {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|policy| policy == "root")
    }
}

/// Token lookups and creation over the barrier.
pub struct TokenStore {
    barrier: Arc<Barrier>,
    salt: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").field("barrier", &self.barrier).field("salt", &"<redacted>").finish()
    }
}

impl TokenStore {
    /// Loads the salt, creating it on first use (at initialisation).
    pub async fn open(barrier: Arc<Barrier>) -> Result<TokenStore, BarrierError> {
        let salt = match barrier.get(SALT_PATH).await? {
            Some(salt) => salt,
            None => {
                let salt = token::random_bytes(32);
                barrier.put(SALT_PATH, &salt).await?;
                salt
            }
        };
        Ok(TokenStore { barrier, salt: Zeroizing::new(salt) })
    }

    fn hashed(&self, value: &str) -> String {
        hex::encode(hmac_sha256(&self.salt, value.as_bytes()))
    }

    /// Creates the root token handed out by `sys/init`; a random one unless `chosen` is given.
    pub async fn create_root(&self, chosen: Option<Zeroizing<String>>) -> Result<Zeroizing<String>, BarrierError> {
        let token = chosen.unwrap_or_else(|| Zeroizing::new(token::generate(TOKEN_PREFIX, TOKEN_RANDOM_LEN)));
        let entry = TokenEntry {
            accessor: token::generate("", ACCESSOR_LEN),
            policies: vec!["root".into()],
            display_name: "root".into(),
            path: "auth/token/root".into(),
            creation_time: unix_now(),
        };
        let id_key = format!("{ID_PREFIX}{}", self.hashed(&token));
        let accessor_key = format!("{ACCESSOR_PREFIX}{}", self.hashed(&entry.accessor));
        let raw = serde_json::to_vec(&entry).map_err(|err| BarrierError::Corrupt(err.to_string()))?;
        self.barrier
            .batch(vec![
                BarrierOp::Put { path: id_key.clone(), value: raw },
                BarrierOp::Put { path: accessor_key, value: id_key.into_bytes() },
            ])
            .await?;
        Ok(token)
    }

    /// Looks a token up by value. The lookup key is an HMAC, so no stored token is compared
    /// byte by byte against the presented one.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, BarrierError> {
        if token.is_empty() {
            return Ok(None);
        }
        let Some(raw) = self.barrier.get(&format!("{ID_PREFIX}{}", self.hashed(token))).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw).map(Some).map_err(|err| BarrierError::Corrupt(format!("token entry: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_crypto::keyring::Keyring;
    use arcanum_storage::{Backend, InmemBackend};

    #[tokio::test]
    async fn root_token_is_found_by_value_and_stored_only_hashed() {
        let backend: Arc<dyn Backend> = Arc::new(InmemBackend::new());
        let barrier = Barrier::open(Arc::clone(&backend), Keyring::generate(0), u64::MAX).await.unwrap();
        let store = TokenStore::open(Arc::clone(&barrier)).await.unwrap();
        let root = store.create_root(None).await.unwrap();
        assert!(root.starts_with("hvs.") && root.len() == 28);
        let entry = store.lookup(&root).await.unwrap().expect("root token found");
        assert!(entry.is_root());
        assert_eq!(store.lookup("hvs.notatoken").await.unwrap(), None);
        assert_eq!(store.lookup("").await.unwrap(), None);
        let ids = barrier.list(ID_PREFIX).await.unwrap();
        assert_eq!(ids.len(), 1);
        assert!(!ids[0].contains(root.trim_start_matches("hvs.")));
        // A reopened store (same salt) still finds it.
        let again = TokenStore::open(barrier).await.unwrap();
        assert!(again.lookup(&root).await.unwrap().is_some());
    }
}
