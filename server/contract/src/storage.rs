//! Logical storage and the storage view: the encrypted store (the core's barrier) as an engine
//! is handed it, seen through a key prefix, like a chroot.
//!
//! Each mount gets a view under `logical/<uuid>/` (secret engines) or `auth/<uuid>/`
//! (credential backends), so a backend cannot name a key outside its own prefix: every
//! key it passes is relative, and `..` has no meaning in storage keys.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use crate::logical::ApiError;
use crate::password::PasswordPolicies;

/// Plaintext records at logical paths, stored somewhere the caller need not know (the core
/// implements it with the barrier, which encrypts each record before it reaches the physical
/// backend). Errors are logged where they happen and reach the client as a bare 500.
#[async_trait::async_trait]
pub trait LogicalStorage: Send + Sync + Debug {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ApiError>;
    async fn put(&self, path: &str, value: &[u8]) -> Result<(), ApiError>;
    async fn delete(&self, path: &str) -> Result<(), ApiError>;
    /// Immediate children of `prefix`, folders ending in `/`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError>;
    /// Several writes, all or none.
    async fn batch(&self, ops: Vec<StorageOp>) -> Result<(), ApiError>;

    /// Several writes applied in order, where every prefix of them is a consistent state (a
    /// record written before what refers to it, deleted after what referred to it stops): a
    /// crash may leave a prefix applied and a concurrent read may see one, which is cheaper
    /// for a store whose atomic batches cost more. Atomic by default.
    async fn batch_in_order(&self, ops: Vec<StorageOp>) -> Result<(), ApiError> {
        self.batch(ops).await
    }

    /// A stamp for the record at the path made of `pieces` (concatenated) that changes once
    /// any write to it has completed, so that something derived from a read made after taking
    /// the stamp may be kept while the stamp stays the same ([`ChangeStamps`]). `None` when
    /// a write to it is in flight, or when this storage keeps no stamps: then nothing read
    /// now may be kept.
    fn change_stamp(&self, pieces: &[&str]) -> Option<u64> {
        let _ = pieces;
        None
    }
}

/// Stamps that tell a cache of derived records (parsed KV v2 metadata, say) when what it
/// derived them from may have changed, whoever changed it: every write through the storage,
/// and every change another node made that a standby followed. Paths are hashed into
/// [`ChangeStamps::STRIPES`] stripes; each counts the writes that started and those that
/// completed. A stripe is stable while the two are equal, and its stamp is the completed
/// count. A write that never completes (its caller was cancelled; the storage may still apply
/// it later) leaves its stripe unstable for good: only a few more misses, never a stale hit.
/// Paths that share a stripe only cost each other misses.
pub struct ChangeStamps {
    started: Box<[std::sync::atomic::AtomicU64]>,
    finished: Box<[std::sync::atomic::AtomicU64]>,
}

impl std::fmt::Debug for ChangeStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStamps").field("stripes", &Self::STRIPES).finish_non_exhaustive()
    }
}

impl Default for ChangeStamps {
    fn default() -> Self {
        let stripes = || (0..Self::STRIPES).map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        ChangeStamps { started: stripes(), finished: stripes() }
    }
}

/// A write in flight through [`ChangeStamps::begin`]. [`StampedWrite::complete`] settles its
/// stripes; dropped without it (the write failed, or its caller went away) they never settle.
#[derive(Debug)]
pub struct StampedWrite<'a> {
    stamps: &'a ChangeStamps,
    stripes: Vec<usize>,
    completed: bool,
}

impl StampedWrite<'_> {
    /// The storage has applied the write: its stripes may settle. A write that failed is
    /// not completed, since some storage may still apply it after answering (an etcd
    /// request that timed out can commit later).
    pub fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for StampedWrite<'_> {
    fn drop(&mut self) {
        if self.completed {
            for &stripe in &self.stripes {
                self.stamps.finished[stripe].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

impl ChangeStamps {
    pub const STRIPES: usize = 4096;

    fn stripe(pieces: &[&str]) -> usize {
        use std::hash::Hasher as _;
        // Fed byte by byte as one stream, so that a path given in pieces lands where the
        // whole path does.
        let mut hasher = std::hash::DefaultHasher::new();
        for piece in pieces {
            hasher.write(piece.as_bytes());
        }
        (hasher.finish() % Self::STRIPES as u64) as usize
    }

    /// The stamp of the path made of `pieces`, or `None` while a write to its stripe is in
    /// flight. Completed is read before started: equal means no write was in flight when
    /// started was read.
    pub fn stamp(&self, pieces: &[&str]) -> Option<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        let stripe = Self::stripe(pieces);
        let finished = self.finished[stripe].load(SeqCst);
        (self.started[stripe].load(SeqCst) == finished).then_some(finished)
    }

    /// Marks writes to `paths` as started; the returned guard completes them.
    pub fn begin<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> StampedWrite<'_> {
        let mut stripes: Vec<usize> = paths.into_iter().map(|path| Self::stripe(&[path])).collect();
        stripes.sort_unstable();
        stripes.dedup();
        for &stripe in &stripes {
            self.started[stripe].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        StampedWrite { stamps: self, stripes, completed: false }
    }

    /// A change to `path` that is already visible to reads (another node's, followed).
    pub fn changed(&self, path: &str) {
        self.begin([path]).complete();
    }
}

/// A write in [`LogicalStorage::batch`], at a full logical path.
#[derive(Debug)]
pub enum StorageOp {
    Put { path: String, value: Vec<u8> },
    Delete { path: String },
}

impl StorageOp {
    pub fn path(&self) -> &str {
        match self {
            StorageOp::Put { path, .. } | StorageOp::Delete { path } => path,
        }
    }
}

/// The storage below `prefix` (which ends with `/`).
#[derive(Debug, Clone)]
pub struct StorageView {
    storage: Arc<dyn LogicalStorage>,
    prefix: String,
}

impl StorageView {
    pub fn new(storage: Arc<dyn LogicalStorage>, prefix: impl Into<String>) -> StorageView {
        StorageView { storage, prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The system view's password policies (`sys/policies/password`): the one store outside its own
    /// prefix that a backend may reach, read-only in practice, to generate passwords from a named policy.
    pub fn password_policies(&self) -> PasswordPolicies {
        PasswordPolicies::new(Arc::clone(&self.storage))
    }

    /// A view on a sub-prefix of this one.
    pub fn sub_view(&self, prefix: &str) -> StorageView {
        StorageView { storage: Arc::clone(&self.storage), prefix: format!("{}{prefix}", self.prefix) }
    }

    fn key(&self, key: &str) -> String {
        // Every storage call makes one; concatenation costs a fraction of `format!`'s machinery.
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    fn storage_op(&self, op: ViewOp) -> StorageOp {
        match op {
            ViewOp::Put { key, value } => StorageOp::Put { path: self.key(&key), value },
            ViewOp::Delete { key } => StorageOp::Delete { path: self.key(&key) },
        }
    }

    /// [`LogicalStorage::change_stamp`] of the key `section` + `key` in this view.
    pub fn change_stamp(&self, section: &str, key: &str) -> Option<u64> {
        self.storage.change_stamp(&[&self.prefix, section, key])
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.storage.get(&self.key(key)).await
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
        self.storage.put(&self.key(key), value).await
    }

    pub async fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let raw = serde_json::to_vec(value).map_err(|_| ApiError::internal())?;
        self.put(key, &raw).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.storage.delete(&self.key(key)).await
    }

    /// Children of `prefix` (relative to this view), folders ending in `/`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        self.storage.list(&self.key(prefix)).await
    }

    /// Several writes, atomically. Keys are relative to the view.
    pub async fn batch(&self, ops: Vec<ViewOp>) -> Result<(), ApiError> {
        let ops = ops.into_iter().map(|op| self.storage_op(op)).collect();
        self.storage.batch(ops).await
    }

    /// Several writes in order, each prefix of which the caller made consistent (see
    /// [`LogicalStorage::batch_in_order`]). Keys are relative to the view.
    pub async fn batch_in_order(&self, ops: Vec<ViewOp>) -> Result<(), ApiError> {
        let ops = ops.into_iter().map(|op| self.storage_op(op)).collect();
        self.storage.batch_in_order(ops).await
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

/// Logical storage in a map in memory, unencrypted: for tests of what runs on a view.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    records: Mutex<BTreeMap<String, Vec<u8>>>,
    stamps: ChangeStamps,
}

impl MemoryStorage {
    pub fn new() -> Arc<MemoryStorage> {
        Arc::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl LogicalStorage for MemoryStorage {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.records().get(path).cloned())
    }

    async fn put(&self, path: &str, value: &[u8]) -> Result<(), ApiError> {
        let write = self.stamps.begin([path]);
        self.records().insert(path.to_owned(), value.to_vec());
        write.complete();
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let write = self.stamps.begin([path]);
        self.records().remove(path);
        write.complete();
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut children: Vec<String> = Vec::new();
        for key in self.records().range(prefix.to_owned()..).map(|(key, _)| key).take_while(|k| k.starts_with(prefix)) {
            let rest = &key[prefix.len()..];
            let child = match rest.find('/') {
                Some(slash) => &rest[..=slash],
                None => rest,
            };
            if children.last().map(String::as_str) != Some(child) {
                children.push(child.to_owned());
            }
        }
        Ok(children)
    }

    fn change_stamp(&self, pieces: &[&str]) -> Option<u64> {
        self.stamps.stamp(pieces)
    }

    async fn batch(&self, ops: Vec<StorageOp>) -> Result<(), ApiError> {
        let write = self.stamps.begin(ops.iter().map(StorageOp::path));
        {
            let mut records = self.records();
            for op in ops {
                match op {
                    StorageOp::Put { path, value } => records.insert(path, value),
                    StorageOp::Delete { path } => records.remove(&path),
                };
            }
        }
        write.complete();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_settles_only_once_every_write_to_its_stripe_completed() {
        let stamps = ChangeStamps::default();
        let before = stamps.stamp(&["logical/m/", "metadata/", "k"]).expect("no write in flight");
        assert_eq!(stamps.stamp(&["logical/m/metadata/k"]), Some(before), "pieces hash as the whole path");
        let write = stamps.begin(["logical/m/metadata/k"]);
        assert_eq!(stamps.stamp(&["logical/m/", "metadata/k"]), None, "in flight: nothing may be kept");
        write.complete();
        let after = stamps.stamp(&["logical/m/", "metadata/k"]).expect("settled");
        assert_ne!(after, before);
        drop(stamps.begin(["logical/m/metadata/k"]));
        assert_eq!(stamps.stamp(&["logical/m/metadata/k"]), None, "an abandoned write never settles");
        stamps.changed("logical/m/metadata/other");
    }

    #[tokio::test]
    async fn a_view_reads_and_writes_below_its_prefix_only() {
        let storage = MemoryStorage::new();
        let view = StorageView::new(storage.clone(), "logical/m/");
        view.put("a", b"1").await.unwrap();
        view.sub_view("dir/").put("b", b"2").await.unwrap();
        storage.put("logical/other/c", b"3").await.unwrap();
        assert_eq!(view.list("").await.unwrap(), ["a", "dir/"]);
        assert_eq!(view.list_recursive("").await.unwrap().len(), 2);
        assert_eq!(storage.get("logical/m/dir/b").await.unwrap().as_deref(), Some(&b"2"[..]));
        view.clear().await.unwrap();
        assert!(view.list("").await.unwrap().is_empty());
        assert_eq!(storage.list("logical/").await.unwrap(), ["other/"]);
    }
}
