//! Physical storage for Arcanum: the `Backend` trait the barrier writes encrypted records through, and its implementations.
//!
//! Everything above this crate sees opaque byte values under '/'-separated string keys, the same model as Vault's
//! `physical.Backend`. No type from a concrete engine (sled, etcd) appears in this API, so that engines can be added
//! without touching callers.

mod disk_sync;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
pub mod etcd_harness;
mod group_commit;
pub mod ha;
pub mod inmem;
mod keys;
pub mod sled_backend;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use etcd::{EtcdBackend, EtcdOptions, EtcdTls};
pub use ha::{Changes, HaBackend, HeldLock, LockHolder};
pub use inmem::InmemBackend;
pub use sled_backend::{SledBackend, SledOptions};

/// Errors returned by every [`Backend`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed, or durability could not be confirmed. After a failed flush the sled backend keeps
    /// returning this for writes: what reached the disk is unknown, so the process must restart and recover.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The key (or list prefix) is empty where that is not allowed, or contains a NUL byte.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The store cannot be reached, or cannot commit (no quorum, no leader, no space): the
    /// operation was not acknowledged. The same call may succeed once the store is back.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// With HA: this node no longer holds the lock (another node is active, or its lease
    /// ended), so the write was refused and nothing was written.
    #[error("this node is not the active node any more; nothing was written")]
    Fenced,
    /// One write is larger than the store accepts in a request.
    #[error("the value is too large for the {backend} storage backend: a write may carry at most {limit} bytes")]
    TooLarge { backend: &'static str, limit: usize },
}

/// One write inside [`Backend::batch`].
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A key/value store with Vault's physical-backend semantics.
///
/// Keys are non-empty '/'-separated strings without NUL bytes; anything else is rejected with
/// [`StorageError::InvalidKey`].
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The value stored under `key`, or `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Returns only once the write is durable (survives kill -9 / power loss as far as fsync promises).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError>;

    /// Durable like put. Deleting a missing key is Ok.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Vault's physical List semantics: the immediate children of `prefix` (prefix is "" or ends with '/'), as names
    /// relative to the prefix, sorted, with "folders" returned once as "name/". E.g. keys a, b/c, b/d/e under "" ->
    /// ["a", "b/"].
    ///
    /// A prefix that does not end in '/' is treated as a raw key prefix, exactly as Vault's backends do: with keys
    /// `foo/bar`, `foobar/x` and `food`, listing `"foo"` gives `["/", "bar/", "d"]`. A key equal to the prefix itself
    /// is not its own child and is omitted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// All ops applied atomically (all or nothing, also across a crash) and durably.
    ///
    /// Ops apply in order, so a later op on the same key wins. Every key is validated before anything is applied.
    async fn batch(&self, ops: Vec<Op>) -> Result<(), StorageError>;

    /// Ops applied in order and durably, where the caller has made every prefix of them a
    /// consistent state (a record written before what refers to it, deleted after): a crash may
    /// leave any prefix applied, and a concurrent read may see one. A backend whose batches cost
    /// more than in-order writes (sled's, which stores the batch twice) overrides this; the
    /// default is the atomic [`batch`](Backend::batch), which gives more than is asked.
    async fn batch_in_order(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.batch(ops).await
    }

    /// Make everything written so far durable (used at graceful shutdown).
    async fn flush(&self) -> Result<(), StorageError>;

    /// Short name: "sled" or "inmem" (reported as storage_type in seal-status).
    fn kind(&self) -> &'static str;
}
