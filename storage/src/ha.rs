//! High availability primitives a shared backend offers (etcd): one lock whose holder is the
//! active node and the only writer, writes fenced on still holding it, and heartbeats through
//! which nodes see each other. The core runs the election and the renewals; this crate only
//! does what each step needs in storage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::StorageError;

/// A backend that several nodes share and that can elect one of them.
#[async_trait::async_trait]
pub trait HaBackend: Send + Sync + std::fmt::Debug {
    /// Takes the lock if nobody holds it, with `advertisement` as its value (who the holder
    /// is and where to reach it) and a lease of `ttl`. `None`: someone else holds it.
    async fn try_acquire(&self, advertisement: Vec<u8>, ttl: Duration) -> Result<Option<HeldLock>, StorageError>;

    /// Renews `held`'s lease. On success the lock is valid for another TTL (less a margin) from
    /// when the renewal was sent; a failure leaves the previous deadline, after which the lock
    /// counts as lost.
    async fn renew(&self, held: &HeldLock) -> Result<(), StorageError>;

    /// Gives the lock up at once (step-down, seal, shutdown), so another node can take it.
    async fn release(&self, held: &HeldLock) -> Result<(), StorageError>;

    /// The current holder's advertisement, if anyone holds the lock, and the store's revision
    /// the answer is true at (for [`HaBackend::lock_changed`]).
    async fn holder(&self) -> Result<LockHolder, StorageError>;

    /// Returns when the lock changes (taken, released, expired) after `revision`, or when
    /// `within` has passed, whichever is first; a standby then reads the holder again at once
    /// rather than on its next poll. `true` when some node took the lock after `revision` (it
    /// may have let it go again since). An error (a member down, a revision compacted away)
    /// comes back at once: the caller falls back to polling.
    async fn lock_changed(&self, revision: i64, within: Duration) -> Result<bool, StorageError>;

    /// Several nodes use this store: until this one holds the lock it must read everything
    /// from the store itself (no cache, no shortcut that assumes it wrote the last value).
    /// Called once, before anything reads.
    fn share(&self);

    /// From now on every write succeeds only while `held` is still the lock's holder (in the
    /// same transaction); a write that finds it is not fails with [`StorageError::Fenced`] and
    /// marks `held` lost, and reads may use what this process wrote. `None`: no node holds the
    /// lock through this backend, so it must not write at all (a standby), and reads go to the
    /// store.
    fn fence(&self, held: Option<&HeldLock>);

    /// Forgets what this process cached from storage and re-reads what it needs to read
    /// correctly (at takeover, and at step-down), and finishes what a crashed writer left.
    async fn reset(&self) -> Result<(), StorageError>;

    /// Records this node's heartbeat (`value`), kept for `ttl` unless renewed.
    async fn heartbeat(&self, node_id: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StorageError>;

    /// The heartbeats of every node that renewed within its TTL.
    async fn heartbeats(&self) -> Result<Vec<Vec<u8>>, StorageError>;

    /// Follows every change under the data prefix, for a standby that serves reads itself.
    /// First sends a [`Changes`] with `restart` set, at the revision the store was at when the
    /// follow began (everything after it comes as further `Changes`, in order). While the follow
    /// runs this backend's reads may come from its cache, which the follow keeps true: a value
    /// another node replaced is never served after its `Changes` was sent. Runs until the
    /// receiver is dropped (`Ok`) or the store stops answering the follow (`Err`); either way
    /// the cache is emptied and reads go to the store again.
    async fn follow(&self, changes: tokio::sync::mpsc::Sender<Changes>) -> Result<(), StorageError>;

    /// The revision of the last write of data this process committed (0: none yet). A client
    /// that wrote through the active node can hand it to a following standby (`X-Vault-Index`),
    /// which then answers only once it has followed that far.
    fn last_write(&self) -> i64;
}

/// What changed in the store, as a standby follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The store's revision once these changes are applied.
    pub revision: i64,
    /// The keys that changed (put or deleted), as the backend's callers name them.
    pub keys: Vec<String>,
    /// The follow (re)started: anything known from before may be stale.
    pub restart: bool,
}

/// Who holds the lock, as of one revision of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's advertisement; `None` when the lock is free.
    pub advertisement: Option<Vec<u8>>,
    /// Tells one holding of the lock from the next, even by the same node within a second
    /// (on etcd, the lock key's creation revision; 0 when free).
    pub term: i64,
    pub revision: i64,
}

/// The lock as its holder sees it. Cheap to clone; every clone is the same lock.
#[derive(Debug, Clone)]
pub struct HeldLock {
    state: Arc<LockState>,
}

#[derive(Debug)]
struct LockState {
    lease: i64,
    /// The lock key's creation revision: the fence writes compare against.
    revision: i64,
    ttl: Duration,
    /// Until when the holder may act as active without a further renewal.
    deadline: Mutex<Instant>,
    lost: tokio::sync::watch::Sender<bool>,
}

impl HeldLock {
    /// A lock just taken with a lease sent at `sent`.
    pub fn new(lease: i64, revision: i64, ttl: Duration, sent: Instant) -> HeldLock {
        let (lost, _) = tokio::sync::watch::channel(false);
        let state = LockState { lease, revision, ttl, deadline: Mutex::new(sent + Self::validity(ttl)), lost };
        HeldLock { state: Arc::new(state) }
    }

    /// How long after a renewal was sent the holder still counts itself active: the TTL less a
    /// margin, so that it stops before etcd can expire the lease and elect another node.
    fn validity(ttl: Duration) -> Duration {
        ttl.saturating_sub((ttl / 5).max(Duration::from_secs(1)))
    }

    pub fn lease(&self) -> i64 {
        self.state.lease
    }

    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    pub fn ttl(&self) -> Duration {
        self.state.ttl
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let mut deadline = self.state.deadline.lock().unwrap_or_else(|p| p.into_inner());
        *deadline = (*deadline).max(sent + Self::validity(self.state.ttl));
    }

    /// Whether the holder may still act as active.
    pub fn is_valid(&self) -> bool {
        !*self.state.lost.borrow() && Instant::now() < *self.state.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock is gone (a fenced write found another holder, the lease ended, it was released).
    pub fn mark_lost(&self) {
        self.state.lost.send_replace(true);
    }

    /// Resolves once the lock is marked lost or its deadline passes without a renewal.
    pub async fn lost(&self) {
        let mut lost = self.state.lost.subscribe();
        loop {
            if *lost.borrow_and_update() {
                return;
            }
            let deadline = *self.state.deadline.lock().unwrap_or_else(|p| p.into_inner());
            if Instant::now() >= deadline {
                self.mark_lost();
                return;
            }
            tokio::select! {
                _ = lost.changed() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_counts_as_held_until_its_deadline_or_a_loss() {
        let held = HeldLock::new(1, 7, Duration::from_secs(5), Instant::now());
        assert!(held.is_valid());
        assert_eq!((held.lease(), held.revision()), (1, 7));
        let stale = HeldLock::new(2, 8, Duration::from_secs(5), Instant::now() - Duration::from_secs(5));
        assert!(!stale.is_valid(), "past TTL less the margin");
        stale.lost().await;
        stale.renewed(Instant::now());
        assert!(!stale.is_valid(), "a lost lock stays lost");
        let clone = held.clone();
        clone.mark_lost();
        assert!(!held.is_valid());
        held.lost().await;
    }
}
