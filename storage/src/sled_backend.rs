//! Durable backend on an embedded sled database, with group commit so that concurrent writers share fsyncs.
//!
//! Every sled call runs on tokio's blocking pool because any of them may do disk I/O (a cache miss, a full log
//! buffer). Writes are applied to sled first and then acknowledged by the group-commit flusher thread once a
//! flush round that started after them has completed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::disk_sync::DiskSync;
use crate::group_commit::{FlushFn, GroupCommit};
use crate::keys::{list_children, validate_key, validate_ops, validate_prefix};
use crate::{Backend, Op, StorageError};

/// Tuning for [`SledBackend::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledOptions {
    /// Upper bound for sled's page cache. Small by default because the whole server aims at about 30 MiB of idle
    /// RSS; records are small and hot ones stay cached anyway.
    pub cache_capacity_bytes: u64,
}

impl SledOptions {
    pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { cache_capacity_bytes: Self::DEFAULT_CACHE_CAPACITY_BYTES }
    }
}

/// Stores records in a sled database directory; every acknowledged write has been fsynced.
///
/// Dropping it performs a final flush and waits for the flusher thread to exit, so it may block for one fsync; the
/// directory can be reopened as soon as drop returns (unless a cancelled operation is still running on the blocking
/// pool with a handle to the database).
pub struct SledBackend {
    // Declared first so that it is dropped, and its final flush done, before our own database handle goes.
    commit: GroupCommit,
    db: sled::Db,
    /// Sled makes single reads atomic with respect to a batch but not a scan, which advances one key at a time;
    /// batches take this exclusively and listings shared, so a listing never shows half a batch.
    batch_lock: Arc<RwLock<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend").field("path", &self.path).field("commit", &self.commit).finish_non_exhaustive()
    }
}

impl SledBackend {
    /// Opens (creating if needed) the database directory at `path` with [`SledOptions::default`].
    ///
    /// Blocking: recovery may read the whole log. Call it before serving or via `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Like [`open`](Self::open) with explicit options.
    pub fn open_with(path: &Path, options: SledOptions) -> Result<Self, StorageError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            // Our flusher is what acknowledges writes; sled's timer would only add fsyncs and a thread.
            .flush_every_ms(None);
        // Sled's own worker threads (large-value writes) can hold the previous instance's file lock for a moment
        // after it was dropped; a reopen straight after a drop waits for them rather than failing.
        let mut lock_waits = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock && lock_waits < 50 => {
                    lock_waits += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => {
                    break result
                        .map_err(|e| StorageError::Io(format!("opening sled database at {}: {e}", path.display())))?
                }
            }
        };
        let mut disk = DiskSync::open(path)
            .map_err(|e| StorageError::Io(format!("syncing sled database at {}: {e}", path.display())))?;
        let flush_db = db.clone();
        let flush: FlushFn = Box::new(move || {
            flush_db.flush().map_err(|e| format!("sled flush: {e}"))?;
            disk.sync().map_err(|e| format!("fsync: {e}"))
        });
        let commit = GroupCommit::start("arcanum-sled-flush", flush)
            .map_err(|e| StorageError::Io(format!("starting storage flusher thread: {e}")))?;
        Ok(Self { commit, db, batch_lock: Arc::new(RwLock::new(())), path: path.to_owned() })
    }

    /// Flush rounds so far; with concurrent writers this grows more slowly than the number of writes.
    pub fn flush_rounds(&self) -> u64 {
        self.commit.rounds()
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db, &RwLock<()>) -> Result<T, StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        let lock = Arc::clone(&self.batch_lock);
        tokio::task::spawn_blocking(move || f(&db, &lock))
            .await
            .map_err(|e| StorageError::Io(format!("storage task failed: {e}")))?
    }
}

fn sled_err(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn apply_one(db: &sled::Db, op: &Op) -> Result<(), StorageError> {
    match op {
        Op::Put { key, value } => db.insert(key.as_bytes(), value.as_slice()).map(drop),
        Op::Delete { key } => db.remove(key.as_bytes()).map(drop),
    }
    .map_err(sled_err)
}

fn utf8_key(key: sled::IVec) -> Result<String, StorageError> {
    String::from_utf8(key.to_vec()).map_err(|_| StorageError::Io("stored key is not valid UTF-8".to_owned()))
}

#[async_trait::async_trait]
impl Backend for SledBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        // Called inline, not on the blocking pool: a read of cached data never blocks in sled
        // (its README says as much), and the hand-off to another thread cost more than the
        // read itself on the server's hottest path. A cold read is one page from the OS cache.
        self.db.get(key.as_bytes()).map(|value| value.map(|v| v.to_vec())).map_err(sled_err)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        validate_key(key)?;
        self.commit.check()?;
        let key = key.to_owned();
        self.blocking(move |db, _| db.insert(key, value).map(drop).map_err(sled_err)).await?;
        self.commit.commit().await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.commit.check()?;
        let key = key.to_owned();
        self.blocking(move |db, _| db.remove(key).map(drop).map_err(sled_err)).await?;
        self.commit.commit().await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.blocking(move |db, lock| {
            let _no_batch = lock.read().unwrap_or_else(PoisonError::into_inner);
            list_children(&prefix, |start| {
                db.range(start.as_bytes().to_vec()..).keys().map(|key| key.map_err(sled_err).and_then(utf8_key))
            })
        })
        .await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        validate_ops(&ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        self.commit.check()?;
        self.blocking(move |db, lock| {
            // The server sends every single write as a one-op batch. A single insert or remove is already atomic, and
            // skipping apply_batch avoids its exclusive lock, which sled makes global to the process and which
            // stalls every concurrent read and listing.
            if let [op] = ops.as_slice() {
                return apply_one(db, op);
            }
            // sled's Batch keeps the last write per key, which is exactly "ops apply in order".
            let mut batch = sled::Batch::default();
            for op in ops {
                match op {
                    Op::Put { key, value } => batch.insert(key.as_bytes(), value),
                    Op::Delete { key } => batch.remove(key.as_bytes()),
                }
            }
            let _exclusive = lock.write().unwrap_or_else(PoisonError::into_inner);
            db.apply_batch(batch).map_err(sled_err)
        })
        .await?;
        self.commit.commit().await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.commit.commit().await
    }

    fn kind(&self) -> &'static str {
        "sled"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exercise_backend, TempSled};

    #[tokio::test]
    async fn conformance() {
        let sled = TempSled::new();
        exercise_backend(&sled.backend).await;
        exercise_backend(&sled.backend).await;
        assert_eq!(sled.backend.list("").await.expect("list"), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_multi_thread() {
        let sled = TempSled::new();
        exercise_backend(&sled.backend).await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        {
            let backend = SledBackend::open(dir.path()).expect("open");
            backend.put("a", b"1".to_vec()).await.expect("put");
            backend.put("gone", b"x".to_vec()).await.expect("put");
            backend.put("big", big.clone()).await.expect("put");
            backend
                .batch(vec![
                    Op::Put { key: "dir/b".into(), value: b"2".to_vec() },
                    Op::Delete { key: "gone".into() },
                    Op::Put { key: "dir/sub/c".into(), value: Vec::new() },
                ])
                .await
                .expect("batch");
        }
        let backend = SledBackend::open(dir.path()).expect("reopen right after drop");
        assert_eq!(backend.get("a").await.expect("get"), Some(b"1".to_vec()));
        assert_eq!(backend.get("gone").await.expect("get"), None);
        assert_eq!(backend.get("big").await.expect("get"), Some(big));
        assert_eq!(backend.get("dir/sub/c").await.expect("get"), Some(Vec::new()));
        assert_eq!(backend.list("").await.expect("list"), ["a", "big", "dir/"]);
        assert_eq!(backend.list("dir/").await.expect("list"), ["b", "sub/"]);
    }

    #[tokio::test]
    async fn second_open_of_same_directory_is_an_error() {
        let sled = TempSled::new();
        let second = SledBackend::open(sled.dir.path());
        assert!(matches!(second, Err(StorageError::Io(_))), "{second:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_share_flush_rounds() {
        const TASKS: usize = 32;
        const PER_TASK: usize = 10;
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
        let before = backend.flush_rounds();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let backend = Arc::clone(&backend);
                tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        backend.put(&format!("w{t}/k{i}"), vec![7; 100]).await.expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer panicked");
        }
        let rounds = backend.flush_rounds() - before;
        let writes = (TASKS * PER_TASK) as u64;
        assert!(rounds > 0 && rounds < writes, "{rounds} flush rounds for {writes} writes");
        assert_eq!(backend.list("").await.expect("list").len(), TASKS);
    }

    #[tokio::test]
    async fn every_write_waits_for_its_own_flush_round() {
        let sled = TempSled::new();
        let backend = &sled.backend;
        let mut rounds = backend.flush_rounds();
        let mut assert_new_round = |what: &str| {
            let now = backend.flush_rounds();
            assert!(now > rounds, "{what} returned without a flush round");
            rounds = now;
        };
        backend.put("k", b"v".to_vec()).await.expect("put");
        assert_new_round("put");
        backend.delete("k").await.expect("delete");
        assert_new_round("delete");
        backend.batch(vec![Op::Put { key: "k".into(), value: Vec::new() }]).await.expect("batch");
        assert_new_round("batch");
        backend.flush().await.expect("flush");
        assert_new_round("flush");
    }

    #[tokio::test]
    async fn raw_prefix_listing() {
        let sled = TempSled::new();
        for key in ["foo", "foo/bar", "foo/baz/q", "foobar/x", "food"] {
            sled.backend.put(key, b"v".to_vec()).await.expect("put");
        }
        assert_eq!(sled.backend.list("foo").await.expect("list"), ["/", "bar/", "d"]);
        assert_eq!(sled.backend.list("foo/").await.expect("list"), ["bar", "baz/"]);
    }

    #[tokio::test]
    async fn small_cache_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SledOptions { cache_capacity_bytes: 1024 * 1024 };
        let backend = SledBackend::open_with(dir.path(), options).expect("open");
        backend.put("k", b"v".to_vec()).await.expect("put");
        backend.flush().await.expect("flush");
        assert_eq!(backend.kind(), "sled");
        assert_eq!(backend.get("k").await.expect("get"), Some(b"v".to_vec()));
    }
}
