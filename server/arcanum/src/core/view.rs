//! A storage view: the barrier seen through a key prefix, like a chroot.
//!
//! Each mount gets one under `logical/<uuid>/` (secret engines) or `auth/<uuid>/`
//! (credential backends), so a backend cannot name a key outside its own prefix: every
//! key it passes is relative, and `..` has no meaning in storage keys.

use std::sync::Arc;

use super::barrier::{Barrier, BarrierError, BarrierOp};
use crate::logical::ApiError;

/// The barrier below `prefix` (which ends with `/`).
#[derive(Debug, Clone)]
pub struct StorageView {
    barrier: Arc<Barrier>,
    prefix: String,
}

impl StorageView {
    pub fn new(barrier: Arc<Barrier>, prefix: impl Into<String>) -> StorageView {
        StorageView { barrier, prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The system view's password policies (`sys/policies/password`): the one store outside its own
    /// prefix that a backend may reach, read-only in practice, to generate passwords from a named policy.
    pub fn password_policies(&self) -> super::password_policies::PasswordPolicies {
        super::password_policies::PasswordPolicies::new(Arc::clone(&self.barrier))
    }

    /// A view on a sub-prefix of this one.
    pub fn sub_view(&self, prefix: &str) -> StorageView {
        StorageView { barrier: Arc::clone(&self.barrier), prefix: format!("{}{prefix}", self.prefix) }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.barrier.get(&self.key(key)).await.map_err(storage_error)
    }

    /// Reads and parses a JSON record.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get(key).await? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|err| {
                tracing::error!(key = %self.key(key), error = %err, "stored record does not parse");
                ApiError::internal()
            }),
            None => Ok(None),
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.barrier.put(&self.key(key), value).await.map_err(storage_error)
    }

    pub async fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let raw = serde_json::to_vec(value).map_err(|_| ApiError::internal())?;
        self.put(key, &raw).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.barrier.delete(&self.key(key)).await.map_err(storage_error)
    }

    /// Children of `prefix` (relative to this view), folders ending in `/`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        self.barrier.list(&self.key(prefix)).await.map_err(storage_error)
    }

    /// Several writes, atomically. Keys are relative to the view.
    pub async fn batch(&self, ops: Vec<ViewOp>) -> Result<(), ApiError> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                ViewOp::Put { key, value } => BarrierOp::Put { path: self.key(&key), value },
                ViewOp::Delete { key } => BarrierOp::Delete { path: self.key(&key) },
            })
            .collect();
        self.barrier.batch(ops).await.map_err(storage_error)
    }

    /// Every key below `prefix`, recursively (relative to this view).
    pub async fn list_recursive(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut keys = Vec::new();
        let mut folders = vec![prefix.to_owned()];
        while let Some(folder) = folders.pop() {
            for child in self.list(&folder).await? {
                let full = format!("{folder}{child}");
                if child.ends_with('/') {
                    folders.push(full);
                } else {
                    keys.push(full);
                }
            }
        }
        Ok(keys)
    }

    /// Deletes everything in the view (used when a mount is disabled).
    pub async fn clear(&self) -> Result<(), ApiError> {
        let keys = self.list_recursive("").await?;
        for chunk in keys.chunks(256) {
            self.batch(chunk.iter().map(|key| ViewOp::Delete { key: key.clone() }).collect()).await?;
        }
        Ok(())
    }
}

/// A write in [`StorageView::batch`].
#[derive(Debug)]
pub enum ViewOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

fn storage_error(err: BarrierError) -> ApiError {
    tracing::error!(error = %err, "storage operation failed");
    ApiError::internal()
}
