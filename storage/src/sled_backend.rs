//! Durable backend on an embedded sled database, with group commit so that concurrent writers share fsyncs.
//!
//! Every sled write may do disk I/O (a full log buffer), so none runs on the async workers: one *writer*
//! thread applies them all, in the order they were queued, then hands their replies to the group-commit
//! flusher thread, which acknowledges each once a flush round that started after it has completed (so a
//! caller is woken once, when its write is durable). One thread rather than
//! tokio's blocking pool because writes are applied one at a time anyway: with the pool, 32 concurrent
//! writers meant 32 threads queueing on one lock (and new threads started as callers piled up), and the
//! writer can apply everything queued meanwhile as one group (below).
//!
//! Multi-key batches do not use sled's own `apply_batch`: it takes a lock that is global to the process and
//! holds it across log I/O, so every read in the server stalled for milliseconds behind each batch (measured
//! while the lease reaper deleted thousands of leases). Instead a batch is made atomic by us:
//! - against a crash, by an *intent*: the whole batch is first stored as one record in a tree of its own,
//!   then applied key by key, then the intent is removed. sled recovers a prefix of its log, so after a
//!   crash either the intent is absent (the batch never started, or finished) or it is present and
//!   [`SledBackend::open`] applies it again (its puts and deletes are idempotent);
//! - against concurrent readers, by publishing the batch's final values before applying them: a read looks
//!   at the batch being applied first, so it sees all of the batch or none of it, and never waits for sled.
//!
//! The writer takes whatever is queued when it looks (up to [`MAX_GROUP`] writes) and applies it as one
//! group under the `apply` lock, which keeps batches and single writes to the same key in order and lets
//! listings scan a key space that no write is changing. A group that holds a multi-key batch is made
//! atomic as a whole, with one intent: the intent's two extra sled operations are paid once per group
//! rather than once per batch. An intent still stores every record of the group twice, so batches whose
//! every prefix is consistent ([`Backend::batch_in_order`], KV v2's version-then-metadata) skip it: sled
//! recovering a prefix of its log is all they need.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::oneshot;

use crate::disk_sync::DiskSync;
use crate::group_commit::{CommitQueue, FlushFn, GroupCommit};
use crate::keys::{list_children, validate_key, validate_ops, validate_prefix};
use crate::{Backend, Op, StorageError};

/// Tuning for [`SledBackend::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledOptions {
    /// Upper bound for sled's page cache. It is a bound, not a reservation: an idle server with little data
    /// stays small whatever it is. Too small a bound is what costs: once the records written outgrow it,
    /// every insert first reads its leaf page back from disk (16 MiB made token creation spend an eighth of
    /// its time in `pread`).
    pub cache_capacity_bytes: u64,
}

impl SledOptions {
    pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;
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
    // Declared first so that the writer has applied everything queued before the final flush.
    writer: Writer,
    // Declared before `db` so that it is dropped, and its final flush done, before our own database handle goes.
    commit: GroupCommit,
    db: sled::Db,
    writes: Arc<Writes>,
    /// The runtime whose blocking pool runs listings' scans, whatever runtime the caller is on: a caller on
    /// a low-priority thread (the lease reaper) must not hold the `apply` lock, even shared, from a
    /// low-priority thread. (The writer thread is the opener's, which is never the reaper.) `None` when
    /// opened outside a runtime, as the examples do.
    blocking_pool: Option<tokio::runtime::Handle>,
    path: PathBuf,
}

/// What writers share: see the module documentation.
struct Writes {
    /// Held exclusively while a write is applied to sled, shared while a listing scans. It holds why
    /// writes are refused once a batch failed half-applied: a later write to one of its keys would be
    /// undone when the next open replays the batch's intent.
    apply: RwLock<Option<String>>,
    /// The final value of every key the batch being applied writes (`None`: deleted).
    pending: RwLock<HashMap<String, Option<Vec<u8>>>>,
    /// Batches not yet fully applied, keyed by a big-endian sequence number so that they replay in order.
    intents: sled::Tree,
    next_intent: AtomicU64,
}

/// The most writes the writer applies as one group: enough for every client of a busy server at once,
/// few enough that one group's intent and pending values stay small.
const MAX_GROUP: usize = 256;

/// A write queued for the writer thread, and where its outcome goes.
struct Job {
    ops: Vec<Op>,
    /// The caller made every prefix of `ops` consistent ([`Backend::batch_in_order`]): no intent needed.
    in_order: bool,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The writer thread (see the module documentation): it stops once its queue's sender is dropped.
struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(db: sled::Db, writes: Arc<Writes>, commit: CommitQueue) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("arcanum-sled-write".to_owned()).spawn(move || {
            while let Ok(first) = jobs.recv() {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                let outcomes = writes.apply_group(&db, &group);
                let mut applied = Vec::with_capacity(group.len());
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => applied.push(job.reply),
                        // A caller that went away no longer cares; its write stands (or fails) all the same.
                        Err(err) => drop(job.reply.send(Err(err))),
                    }
                }
                // Applied writes are answered by the flusher, once a round that starts after this has completed.
                commit.enqueue(applied);
            }
        })?;
        Ok(Self { queue: Some(queue), thread: Some(thread) })
    }

    /// Applies `ops` (atomically, unless `in_order`), after every write queued before them, and returns once they
    /// are durable.
    async fn apply(&self, ops: Vec<Op>, in_order: bool) -> Result<(), StorageError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StorageError::Io("the storage writer thread stopped; restart the server".to_owned());
        self.queue.as_ref().ok_or_else(stopped)?.send(Job { ops, in_order, reply }).map_err(|_| stopped())?;
        // A panicking writer or flusher drops the reply: the write's outcome is unknown, and it says so.
        let unknown = || {
            StorageError::Io("the storage writer or flusher thread stopped; the write's outcome is unknown".to_owned())
        };
        outcome.await.map_err(|_| unknown())?.map_err(StorageError::Io)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("storage writer thread panicked");
            }
        }
    }
}

/// Name of the sled tree that holds batch intents; the records live in sled's default tree.
const INTENTS_TREE: &[u8] = b"arcanum/batch-intents";

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
        let private = |e: std::io::Error| StorageError::Io(format!("making {} private: {e}", path.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", path.display())))?;
        restrict_to_owner(path).map_err(private)?;
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
        // What sled just created follows the process umask; make it the owner's alone too.
        restrict_to_owner(path).map_err(private)?;
        let mut disk = DiskSync::open(path)
            .map_err(|e| StorageError::Io(format!("syncing sled database at {}: {e}", path.display())))?;
        let intents = db
            .open_tree(INTENTS_TREE)
            .map_err(|e| StorageError::Io(format!("opening sled database at {}: {e}", path.display())))?;
        let replayed = replay_intents(&db, &intents)
            .map_err(|e| StorageError::Io(format!("completing interrupted batches in {}: {e}", path.display())))?;
        if replayed > 0 {
            db.flush().map_err(|e| StorageError::Io(format!("syncing completed batches: {e}")))?;
            disk.sync().map_err(|e| StorageError::Io(format!("syncing completed batches: {e}")))?;
            tracing::warn!(batches = replayed, "completed batches that a crash had interrupted");
        }
        let flush_db = db.clone();
        let flush: FlushFn = Box::new(move || {
            flush_db.flush().map_err(|e| format!("sled flush: {e}"))?;
            disk.sync().map_err(|e| format!("fsync: {e}"))
        });
        let commit = GroupCommit::start("arcanum-sled-flush", flush)
            .map_err(|e| StorageError::Io(format!("starting storage flusher thread: {e}")))?;
        let writes = Arc::new(Writes {
            apply: RwLock::new(None),
            pending: RwLock::default(),
            intents,
            next_intent: AtomicU64::new(0),
        });
        let writer = Writer::start(db.clone(), Arc::clone(&writes), commit.queue())
            .map_err(|e| StorageError::Io(format!("starting storage writer thread: {e}")))?;
        Ok(Self {
            writer,
            commit,
            db,
            writes,
            blocking_pool: tokio::runtime::Handle::try_current().ok(),
            path: path.to_owned(),
        })
    }

    /// Flush rounds so far; with concurrent writers this grows more slowly than the number of writes.
    pub fn flush_rounds(&self) -> u64 {
        self.commit.rounds()
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db, &Writes) -> Result<T, StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        let writes = Arc::clone(&self.writes);
        let task = move || f(&db, &writes);
        let failed = |e: tokio::task::JoinError| StorageError::Io(format!("storage task failed: {e}"));
        match &self.blocking_pool {
            // tokio starts a pool thread on the thread that calls spawn_blocking, and a thread inherits
            // its creator's niceness; calling it from a task on the pool's runtime keeps a low-priority
            // caller's niceness out of the pool.
            Some(runtime) => {
                let hop = runtime.spawn(async move { tokio::task::spawn_blocking(task).await });
                hop.await.map_err(failed)?.map_err(failed)?
            }
            None => tokio::task::spawn_blocking(task).await.map_err(failed)?,
        }
    }

    /// Stores `ops` as an intent without applying them, as a crash right after would leave them.
    #[cfg(test)]
    fn leave_intent(&self, ops: &[Op]) {
        let seq = self.writes.next_intent.fetch_add(1, Ordering::Relaxed);
        self.writes.intents.insert(seq.to_be_bytes(), encode_ops(ops)).expect("intent");
        self.db.flush().expect("flush");
    }
}

impl Writes {
    /// The lock for a listing's scan.
    fn scan_lock(&self) -> RwLockReadGuard<'_, Option<String>> {
        self.apply.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock for applying a write, unless writes are refused. A write that panicked half-way
    /// (poisoning the lock) refuses them too.
    fn write_lock(&self) -> Result<RwLockWriteGuard<'_, Option<String>>, StorageError> {
        let guard = self.apply.write().map_err(|_| {
            StorageError::Io("storage refuses writes after a write panicked; restart the server".to_owned())
        })?;
        match guard.as_ref() {
            Some(reason) => Err(StorageError::Io(reason.clone())),
            None => Ok(guard),
        }
    }

    /// Applies a group of queued writes; one outcome per job. A group of single-key writes and in-order
    /// batches needs no intent (sled makes each write atomic by itself and recovers a prefix of its log,
    /// which is all an in-order batch asks), so each gets its own outcome; a group with an atomic
    /// multi-key batch in it is applied atomically as a whole and shares one outcome.
    fn apply_group(&self, db: &sled::Db, group: &[Job]) -> Vec<Result<(), String>> {
        let text = |err: StorageError| match err {
            StorageError::Io(text) => text,
            other => other.to_string(),
        };
        let refused = match self.write_lock() {
            Ok(guard) => guard,
            Err(err) => return vec![Err(text(err)); group.len()],
        };
        if group.iter().all(|job| job.in_order || job.ops.len() == 1) {
            return group.iter().map(|job| job.ops.iter().try_for_each(|op| apply_one(db, op)).map_err(text)).collect();
        }
        let ops: Vec<&Op> = group.iter().flat_map(|job| &job.ops).collect();
        let outcome = self.apply_batch(refused, db, &ops).map_err(text);
        vec![outcome; group.len()]
    }

    /// The value a batch being applied gives `key`, if one does.
    fn pending(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        pending.get(key).cloned()
    }

    fn apply_batch(
        &self,
        mut refused: RwLockWriteGuard<'_, Option<String>>,
        db: &sled::Db,
        ops: &[&Op],
    ) -> Result<(), StorageError> {
        let seq = self.next_intent.fetch_add(1, Ordering::Relaxed);
        self.intents.insert(seq.to_be_bytes(), encode_ops(ops.iter().copied())).map_err(sled_err)?;
        let finals: HashMap<String, Option<Vec<u8>>> = ops
            .iter()
            .map(|op| match *op {
                Op::Put { key, value } => (key.clone(), Some(value.clone())),
                Op::Delete { key } => (key.clone(), None),
            })
            .collect();
        *self.pending.write().unwrap_or_else(PoisonError::into_inner) = finals;
        let applied = ops.iter().try_for_each(|&op| apply_one(db, op));
        let result = applied.and_then(|()| self.intents.remove(seq.to_be_bytes()).map(drop).map_err(sled_err));
        match &result {
            Ok(()) => self.pending.write().unwrap_or_else(PoisonError::into_inner).clear(),
            // The intent stays, so the next open finishes the batch; until then nothing may write, and
            // reads keep seeing the batch's final values, which that replay guarantees.
            Err(err) => {
                tracing::error!(error = %err, "a batch failed half-applied; refusing further writes until restart");
                *refused = Some(format!("storage refuses writes after a failed batch ({err}); restart the server"));
            }
        }
        result
    }
}

/// Applies, in order, every batch whose intent a crash left behind; returns how many there were.
fn replay_intents(db: &sled::Db, intents: &sled::Tree) -> Result<usize, String> {
    let mut replayed = 0;
    for entry in intents.iter() {
        let (seq, encoded) = entry.map_err(|e| e.to_string())?;
        let ops = decode_ops(&encoded)?;
        ops.iter().try_for_each(|op| apply_one(db, op)).map_err(|e| e.to_string())?;
        intents.remove(seq).map_err(|e| e.to_string())?;
        replayed += 1;
    }
    Ok(replayed)
}

const INTENT_PUT: u8 = 1;
const INTENT_DELETE: u8 = 2;

/// Each op as: kind byte, key length (u32 LE), key, and for a put the value length (u32 LE) and value.
fn encode_ops<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a record larger than 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                out.push(INTENT_PUT);
                field(&mut out, key.as_bytes());
                field(&mut out, value);
            }
            Op::Delete { key } => {
                out.push(INTENT_DELETE);
                field(&mut out, key.as_bytes());
            }
        }
    }
    out
}

/// The inverse of [`encode_ops`]; a malformed intent is an error (the database is not opened) rather than
/// a batch silently half-replayed.
fn decode_ops(mut input: &[u8]) -> Result<Vec<Op>, String> {
    fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
        if input.len() < len {
            return Err("a stored batch intent is truncated".to_owned());
        }
        let (head, rest) = input.split_at(len);
        *input = rest;
        Ok(head)
    }
    fn field<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let len = take(input, 4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        take(input, len)
    }
    let mut ops = Vec::new();
    while let Some((&kind, rest)) = input.split_first() {
        input = rest;
        let key = String::from_utf8(field(&mut input)?.to_vec())
            .map_err(|_| "a stored batch intent holds a key that is not UTF-8".to_owned())?;
        ops.push(match kind {
            INTENT_PUT => Op::Put { key, value: field(&mut input)?.to_vec() },
            INTENT_DELETE => Op::Delete { key },
            _ => return Err(format!("a stored batch intent holds an unknown operation {kind}")),
        });
    }
    Ok(ops)
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
        if let Some(value) = self.writes.pending(key) {
            return Ok(value);
        }
        // Called inline, not on the blocking pool: a read of cached data never blocks in sled
        // (its README says as much), and the hand-off to another thread cost more than the
        // read itself on the server's hottest path. A cold read is one page from the OS cache.
        self.db.get(key.as_bytes()).map(|value| value.map(|v| v.to_vec())).map_err(sled_err)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        validate_key(key)?;
        self.commit.check()?;
        self.writer.apply(vec![Op::Put { key: key.to_owned(), value }], true).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.commit.check()?;
        self.writer.apply(vec![Op::Delete { key: key.to_owned() }], true).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.blocking(move |db, writes| {
            // A scan advances one key at a time; no write may change the key space under it.
            let _no_writes = writes.scan_lock();
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
        self.writer.apply(ops, false).await
    }

    async fn batch_in_order(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        validate_ops(&ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        self.commit.check()?;
        self.writer.apply(ops, true).await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.commit.commit().await
    }

    fn kind(&self) -> &'static str {
        "sled"
    }
}

/// Makes `dir` and everything in it readable by its owner alone (0700 folders, 0600 files):
/// even encrypted, storage shows which secret paths exist and when they change.
fn restrict_to_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            restrict_to_owner(&entry.path())?;
        } else {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
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
    async fn a_batch_interrupted_by_a_crash_is_completed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend = SledBackend::open(dir.path()).expect("open");
            backend.put("gone", b"x".to_vec()).await.expect("put");
            backend.put("kept", b"old".to_vec()).await.expect("put");
            backend.leave_intent(&[
                Op::Put { key: "kept".into(), value: b"first".to_vec() },
                Op::Delete { key: "gone".into() },
                Op::Put { key: "new/one".into(), value: Vec::new() },
            ]);
            backend.leave_intent(&[Op::Put { key: "kept".into(), value: b"second".to_vec() }]);
            // Half of the first batch had reached the tree when the "crash" came.
            backend.db.insert("new/one", b"").expect("insert");
        }
        let backend = SledBackend::open(dir.path()).expect("reopen");
        assert_eq!(backend.get("kept").await.expect("get"), Some(b"second".to_vec()), "intents replay in order");
        assert_eq!(backend.get("gone").await.expect("get"), None);
        assert_eq!(backend.get("new/one").await.expect("get"), Some(Vec::new()));
        assert_eq!(backend.writes.intents.len(), 0, "replayed intents are removed");
        drop(backend);
        let backend = SledBackend::open(dir.path()).expect("reopen again");
        assert_eq!(backend.get("kept").await.expect("get"), Some(b"second".to_vec()));
    }

    #[tokio::test]
    async fn a_malformed_intent_keeps_the_database_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend = SledBackend::open(dir.path()).expect("open");
            backend.writes.intents.insert(0u64.to_be_bytes(), &[INTENT_PUT, 9, 0, 0, 0, b'k'][..]).expect("insert");
            backend.db.flush().expect("flush");
        }
        let err = SledBackend::open(dir.path()).expect_err("a truncated intent must not open");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[tokio::test]
    async fn after_a_half_applied_batch_writes_are_refused_and_reads_go_on() {
        let sled = TempSled::new();
        let backend = &sled.backend;
        backend.put("k", b"v".to_vec()).await.expect("put");
        // The state a batch that failed between its first and last key leaves behind.
        *backend.writes.apply.write().unwrap() = Some("storage refuses writes after a failed batch".into());
        for refused in [
            backend.put("k", b"w".to_vec()).await,
            backend.delete("k").await,
            backend.batch(vec![Op::Delete { key: "k".into() }]).await,
            backend.batch(vec![Op::Delete { key: "k".into() }, Op::Delete { key: "j".into() }]).await,
        ] {
            let err = refused.expect_err("a write after a failed batch");
            assert!(err.to_string().contains("refuses writes"), "{err}");
        }
        assert_eq!(backend.get("k").await.expect("get"), Some(b"v".to_vec()));
        assert_eq!(backend.list("").await.expect("list"), ["k"]);
    }

    #[test]
    fn the_data_folder_and_its_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        // As an older release left it: world-readable.
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(data.join("leftover"), b"x").expect("write");
        std::fs::set_permissions(data.join("leftover"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let backend = SledBackend::open(&data).expect("open");
        drop(backend);
        let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        let mut files = 0;
        for entry in std::fs::read_dir(&data).expect("read_dir") {
            let path = entry.expect("entry").path();
            let expected = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&path), expected, "{}", path.display());
            files += 1;
        }
        assert!(files >= 2, "sled's own files are there too");
        let fresh = dir.path().join("a/b/fresh");
        drop(SledBackend::open(&fresh).expect("open"));
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn intents_round_trip() {
        let ops = vec![
            Op::Put { key: "a/b".into(), value: vec![0, 1, 255] },
            Op::Delete { key: "ü".into() },
            Op::Put { key: "e".into(), value: Vec::new() },
        ];
        let decoded = decode_ops(&encode_ops(&ops)).expect("decode");
        assert_eq!(format!("{decoded:?}"), format!("{ops:?}"));
        assert!(decode_ops(&[7, 0, 0, 0, 0]).expect_err("unknown kind").contains("unknown operation"));
        assert!(decode_ops(&[INTENT_DELETE, 1, 0, 0, 0, 0xff]).expect_err("bad key").contains("UTF-8"));
    }

    /// Each batch writes `a` then `b` with the same counter; a reader that saw `a` at n must then see `b`
    /// at n or later. Applied key by key without the published finals, a reader between the two writes
    /// would see `a` ahead of `b`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_see_half_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
        let number = |value: Option<Vec<u8>>| -> u64 {
            value.map_or(0, |v| String::from_utf8(v).expect("utf8").parse().expect("number"))
        };
        let writer = {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                for n in 1..=300u64 {
                    let value = n.to_string().into_bytes();
                    backend
                        .batch(vec![
                            Op::Put { key: "a".into(), value: value.clone() },
                            Op::Put { key: "b".into(), value },
                        ])
                        .await
                        .expect("batch");
                }
            })
        };
        let mut reads = 0u64;
        while !writer.is_finished() {
            let a = number(backend.get("a").await.expect("get a"));
            let b = number(backend.get("b").await.expect("get b"));
            assert!(b >= a, "read a={a} then b={b}: half a batch was visible");
            reads += 1;
            tokio::task::yield_now().await;
        }
        writer.await.expect("writer");
        assert!(reads > 0);
        assert_eq!(number(backend.get("b").await.expect("get")), 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_and_single_writes_are_grouped_and_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let backend = Arc::clone(&backend);
                    tokio::spawn(async move {
                        for i in 0..20 {
                            let value = format!("{t}-{i}").into_bytes();
                            backend
                                .batch(vec![
                                    Op::Put { key: format!("pair/{t}/a"), value: value.clone() },
                                    Op::Put { key: format!("pair/{t}/b"), value: value.clone() },
                                ])
                                .await
                                .expect("batch");
                            backend.put(&format!("single/{t}"), value).await.expect("put");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
            assert!(backend.flush_rounds() < 64 * 40, "concurrent writes share flushes");
        }
        let backend = SledBackend::open(dir.path()).expect("reopen");
        assert_eq!(backend.writes.intents.len(), 0, "every group's intent was removed");
        for t in 0..64 {
            let last = Some(format!("{t}-19").into_bytes());
            for key in [format!("pair/{t}/a"), format!("pair/{t}/b"), format!("single/{t}")] {
                assert_eq!(backend.get(&key).await.expect("get"), last, "{key} holds its last write");
            }
        }
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
