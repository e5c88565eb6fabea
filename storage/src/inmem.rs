//! Non-durable backend for dev mode and tests: a sorted map behind a lock.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::keys::{list_children, validate_key, validate_ops, validate_prefix};
use crate::{Backend, Op, StorageError};

/// Keeps everything in process memory; "durable" means "visible to later calls" here.
///
/// The lock is only ever held inside synchronous code, never across an `.await`.
#[derive(Debug, Default)]
pub struct InmemBackend {
    map: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl InmemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the map half-updated (each mutation is a single map call, and a
    // batch is validated before it starts), so poisoning carries no information worth failing on.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Backend for InmemBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        Ok(self.read().get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        validate_key(key)?;
        self.write().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.write().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let map = self.read();
        list_children(prefix, |start| map.range(start.to_owned()..).map(|(k, _)| Ok::<_, StorageError>(k.as_str())))
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        validate_ops(&ops)?;
        // One write guard for the whole batch is what makes it atomic to readers.
        let mut map = self.write();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "inmem"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let backend = InmemBackend::new();
        crate::testing::exercise_backend(&backend).await;
        // The suite cleans up after itself, so a second run on the same backend must pass too.
        crate::testing::exercise_backend(&backend).await;
        assert!(backend.read().is_empty());
    }

    #[tokio::test]
    async fn raw_prefix_listing() {
        let backend = InmemBackend::new();
        for key in ["foo", "foo/bar", "foobar/x", "food"] {
            backend.put(key, b"v".to_vec()).await.expect("put");
        }
        assert_eq!(backend.list("foo").await.expect("list"), ["/", "bar/", "d"]);
        assert_eq!(backend.list("").await.expect("list"), ["foo", "foo/", "foobar/", "food"]);
    }
}
