//! The barrier: every record the server keeps passes through here on its way to storage.
//!
//! An entry is `version (1 byte) || term (4 bytes, big endian) || nonce || ciphertext || tag`,
//! sealed with AES-256-GCM under the data key of `term`. The associated data binds the
//! version, the term and the record's logical path, so a ciphertext moved to another path,
//! relabelled with another term or altered in any bit fails to open instead of returning
//! wrong data. The barrier never sees the unseal key: the keyring it holds is the unsealed
//! one, and sealing drops the barrier (and with it the keys).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use arcanum_contract::clock::unix_now;
use arcanum_contract::logical::ApiError;
use arcanum_contract::storage::{ChangeStamps, LogicalStorage, StorageOp};
use arcanum_crypto::{aead, keyring::Keyring};
use arcanum_storage::{Backend, Op, StorageError};
use serde::{Deserialize, Serialize};

/// The only entry format written so far.
const ENTRY_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;

/// Physical keys that live outside the barrier (they are what unlocks it).
pub(crate) const SEAL_CONFIG_PATH: &str = "core/seal-config";
/// The root key, sealed under the unseal key.
pub(crate) const ROOT_KEY_PATH: &str = "core/root-key";
/// The keyring, sealed under the root key, so that rotation needs no unseal key.
pub(crate) const KEYRING_PATH: &str = "core/keyring";
const PHYSICAL_ONLY: [&str; 5] =
    [SEAL_CONFIG_PATH, ROOT_KEY_PATH, KEYRING_PATH, crate::seal::RECOVERY_CONFIG_PATH, crate::seal::RECOVERY_KEY_PATH];

/// Encryption counts per term, kept through the barrier itself.
const STATS_PATH: &str = "core/barrier-stats";

/// Vault rotates at 3,865,470,566 encryptions (about 0.9 * 2^32), far below the point where
/// random 96-bit GCM nonces start to risk a collision.
pub const DEFAULT_ROTATE_AFTER: u64 = 3_865_470_566;

/// Counts are persisted every this many encryptions. After a crash the lost part is at most
/// this much, and unseal adds it back so the count can only err on the high side.
const STATS_PERSIST_INTERVAL: u64 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("barrier entry at {path:?} failed to decrypt: {reason}")]
    Decrypt { path: String, reason: &'static str },
    #[error("path {0:?} is reserved for the seal and cannot be written through the barrier")]
    Protected(String),
    #[error("corrupt barrier state: {0}")]
    Corrupt(String),
}

/// A write in a [`Barrier::batch`].
#[derive(Debug)]
pub enum BarrierOp {
    Put { path: String, value: Vec<u8> },
    Delete { path: String },
}

/// How a group of writes reaches the backend: atomically, or in order (see [`Backend::batch_in_order`]).
#[derive(Debug, Clone, Copy)]
enum Commit {
    Atomic,
    InOrder,
}

/// What `sys/key-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub term: u32,
    pub install_time_unix: i64,
    pub encryptions: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    encryptions: BTreeMap<u32, u64>,
}

/// The encrypting view over the physical backend, alive only while unsealed.
#[derive(Debug)]
pub struct Barrier {
    backend: Arc<dyn Backend>,
    /// Swapped whole on rotation so that readers never wait on a writer for long.
    keyring: RwLock<Arc<Keyring>>,
    /// Encryptions per term since the term was installed (including the crash allowance).
    encryptions: Mutex<BTreeMap<u32, u64>>,
    /// Encryptions under one term before the barrier installs a new one by itself.
    rotate_after: u64,
    /// Serialises rotations so two writers crossing the limit add one term, not two.
    rotation: tokio::sync::Mutex<()>,
    /// Moved by every write through the barrier and every followed change of another node,
    /// for the caches engines keep of what they parsed (see [`ChangeStamps`]).
    stamps: ChangeStamps,
}

impl Barrier {
    /// Opens the barrier over `backend` with an unsealed keyring and restores the counters.
    pub async fn open(
        backend: Arc<dyn Backend>,
        keyring: Keyring,
        rotate_after: u64,
    ) -> Result<Arc<Barrier>, BarrierError> {
        let barrier = Arc::new(Barrier {
            backend,
            keyring: RwLock::new(Arc::new(keyring)),
            encryptions: Mutex::new(BTreeMap::new()),
            rotate_after,
            rotation: tokio::sync::Mutex::new(()),
            stamps: ChangeStamps::default(),
        });
        let mut counts = match barrier.get(STATS_PATH).await? {
            Some(raw) => {
                serde_json::from_slice::<Stats>(&raw)
                    .map_err(|err| BarrierError::Corrupt(format!("barrier stats: {err}")))?
                    .encryptions
            }
            None => BTreeMap::new(),
        };
        let active = barrier.keyring().active_term();
        *counts.entry(active).or_default() += STATS_PERSIST_INTERVAL;
        *lock(&barrier.encryptions) = counts;
        Ok(barrier)
    }

    fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn associated_data(header: &[u8; HEADER_LEN], path: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + path.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(path.as_bytes());
        aad
    }

    /// Seals `plaintext` for `path` under the active term. Returns the entry and whether the
    /// term has reached its encryption limit.
    pub fn encrypt(&self, path: &str, plaintext: &[u8]) -> (Vec<u8>, bool) {
        let keyring = self.keyring();
        let term = keyring.active_term();
        let mut header = [0u8; HEADER_LEN];
        header[0] = ENTRY_VERSION;
        header[1..].copy_from_slice(&term.to_be_bytes());
        let sealed = keyring.active_cipher().seal(plaintext, &Self::associated_data(&header, path));
        let mut entry = Vec::with_capacity(HEADER_LEN + sealed.len());
        entry.extend_from_slice(&header);
        entry.extend_from_slice(&sealed);
        let count = {
            let mut counts = lock(&self.encryptions);
            let count = counts.entry(term).or_default();
            *count += 1;
            *count
        };
        arcanum_metrics::global().barrier_encryptions.with_label_values(&[&term.to_string()]).inc();
        (entry, count >= self.rotate_after)
    }

    /// Opens an entry read from `path`; every kind of tampering is an error.
    pub fn decrypt(&self, path: &str, entry: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let fail = |reason| BarrierError::Decrypt { path: path.to_owned(), reason };
        if entry.len() < HEADER_LEN + aead::NONCE_LEN + aead::TAG_LEN {
            return Err(fail("entry too short"));
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&entry[..HEADER_LEN]);
        if header[0] != ENTRY_VERSION {
            return Err(fail("unknown entry version"));
        }
        let term = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let keyring = self.keyring();
        let cipher = keyring.cipher_for_term(term).ok_or_else(|| fail("unknown key term"))?;
        cipher
            .open(&entry[HEADER_LEN..], &Self::associated_data(&header, path))
            .map_err(|_| fail("message authentication failed"))
    }

    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, BarrierError> {
        match self.backend.get(path).await? {
            Some(entry) => self.decrypt(path, &entry).map(Some),
            None => Ok(None),
        }
    }

    pub async fn put(&self, path: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.batch(vec![BarrierOp::Put { path: path.to_owned(), value: value.to_vec() }]).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), BarrierError> {
        self.batch(vec![BarrierOp::Delete { path: path.to_owned() }]).await
    }

    /// Lists the children of `prefix` (Vault's physical list semantics).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        Ok(self.backend.list(prefix).await?)
    }

    /// Applies several writes atomically and durably.
    pub async fn batch(&self, ops: Vec<BarrierOp>) -> Result<(), BarrierError> {
        self.write(ops, Commit::Atomic).await
    }

    /// Applies several writes in order and durably, where the caller made every prefix of them
    /// consistent (see [`Backend::batch_in_order`]).
    pub async fn batch_in_order(&self, ops: Vec<BarrierOp>) -> Result<(), BarrierError> {
        self.write(ops, Commit::InOrder).await
    }

    async fn write(&self, ops: Vec<BarrierOp>, commit: Commit) -> Result<(), BarrierError> {
        let mut physical = Vec::with_capacity(ops.len());
        let mut limit_reached = false;
        for op in ops {
            match op {
                BarrierOp::Put { path, value } => {
                    check_writable(&path)?;
                    let (entry, at_limit) = self.encrypt(&path, &value);
                    limit_reached |= at_limit;
                    physical.push(Op::Put { key: path, value: entry });
                }
                BarrierOp::Delete { path } => {
                    check_writable(&path)?;
                    physical.push(Op::Delete { key: path });
                }
            }
        }
        let write = self.stamps.begin(physical.iter().map(Op::key));
        match commit {
            Commit::Atomic => self.backend.batch(physical).await?,
            Commit::InOrder => self.backend.batch_in_order(physical).await?,
        }
        write.complete();
        if limit_reached {
            self.rotate_if_due().await?;
        } else {
            self.persist_stats_if_due().await?;
        }
        Ok(())
    }

    /// Records that another node changed `path` (a standby following storage), once the
    /// change is visible to reads here.
    pub fn changed_elsewhere(&self, path: &str) {
        self.stamps.changed(path);
    }

    /// Installs a new term; entries under older terms stay readable.
    pub async fn rotate(&self) -> Result<KeyStatus, BarrierError> {
        let _rotation = self.rotation.lock().await;
        self.rotate_locked().await
    }

    async fn rotate_if_due(&self) -> Result<(), BarrierError> {
        let _rotation = self.rotation.lock().await;
        let keyring = self.keyring();
        let count = lock(&self.encryptions).get(&keyring.active_term()).copied().unwrap_or(0);
        if count >= self.rotate_after {
            let status = self.rotate_locked().await?;
            tracing::info!(term = status.term, "barrier key rotated after reaching its encryption limit");
        }
        Ok(())
    }

    async fn rotate_locked(&self) -> Result<KeyStatus, BarrierError> {
        let current = self.keyring();
        let mut next = Keyring::clone(&current);
        next.rotate(unix_now());
        let sealed = next.seal_with_root();
        // The new keyring must be durable before any entry is written under the new term.
        self.backend.put(KEYRING_PATH, sealed).await?;
        let term = next.active_term();
        *self.keyring.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        lock(&self.encryptions).insert(term, 0);
        self.persist_stats().await?;
        Ok(self.key_status())
    }

    async fn persist_stats_if_due(&self) -> Result<(), BarrierError> {
        let active = self.keyring().active_term();
        let count = lock(&self.encryptions).get(&active).copied().unwrap_or(0);
        if count % STATS_PERSIST_INTERVAL == 0 {
            self.persist_stats().await?;
        }
        Ok(())
    }

    /// Writes the counters; called on rotation, at intervals and when sealing.
    pub async fn persist_stats(&self) -> Result<(), BarrierError> {
        let (entry, _) = {
            // Count this write too, then snapshot.
            let snapshot = Stats { encryptions: lock(&self.encryptions).clone() };
            let raw =
                serde_json::to_vec(&snapshot).map_err(|err| BarrierError::Corrupt(format!("barrier stats: {err}")))?;
            self.encrypt(STATS_PATH, &raw)
        };
        self.backend.put(STATS_PATH, entry).await?;
        Ok(())
    }

    pub fn key_status(&self) -> KeyStatus {
        let keyring = self.keyring();
        let term = keyring.active_term();
        KeyStatus {
            term,
            install_time_unix: keyring.install_time(term).unwrap_or(0),
            encryptions: lock(&self.encryptions).get(&term).copied().unwrap_or(0),
        }
    }
}

fn check_writable(path: &str) -> Result<(), BarrierError> {
    if PHYSICAL_ONLY.contains(&path) {
        return Err(BarrierError::Protected(path.to_owned()));
    }
    Ok(())
}

/// The barrier as the contract's logical storage: what storage views (and so the engines)
/// are handed. A failure is logged here and becomes a bare 500.
#[async_trait::async_trait]
impl LogicalStorage for Barrier {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Barrier::get(self, path).await.map_err(storage_error)
    }

    async fn put(&self, path: &str, value: &[u8]) -> Result<(), ApiError> {
        Barrier::put(self, path, value).await.map_err(storage_error)
    }

    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        Barrier::delete(self, path).await.map_err(storage_error)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        Barrier::list(self, prefix).await.map_err(storage_error)
    }

    fn change_stamp(&self, pieces: &[&str]) -> Option<u64> {
        self.stamps.stamp(pieces)
    }

    async fn batch(&self, ops: Vec<StorageOp>) -> Result<(), ApiError> {
        Barrier::batch(self, barrier_ops(ops)).await.map_err(storage_error)
    }

    async fn batch_in_order(&self, ops: Vec<StorageOp>) -> Result<(), ApiError> {
        Barrier::batch_in_order(self, barrier_ops(ops)).await.map_err(storage_error)
    }
}

fn barrier_ops(ops: Vec<StorageOp>) -> Vec<BarrierOp> {
    ops.into_iter()
        .map(|op| match op {
            StorageOp::Put { path, value } => BarrierOp::Put { path, value },
            StorageOp::Delete { path } => BarrierOp::Delete { path },
        })
        .collect()
}

fn storage_error(err: BarrierError) -> ApiError {
    api_error("storage operation", err)
}

/// How a storage failure reaches the client. A store that cannot be reached or cannot commit
/// (etcd down, no quorum) is a 503 that says storage is unavailable, so clients retry; a value
/// too large for the store is a 413 naming its limit; anything else is an opaque 500. The
/// details go to the log, never to the client.
pub fn api_error(what: &str, err: BarrierError) -> ApiError {
    match &err {
        BarrierError::Storage(StorageError::Unavailable(_)) => {
            tracing::error!(error = %err, "{what} failed: storage unavailable");
            ApiError::new(503, "storage unavailable: the storage backend cannot be reached or cannot commit; nothing was written, try again")
        }
        BarrierError::Storage(StorageError::Fenced) => {
            tracing::warn!("{what} refused: this node is no longer the active node");
            ApiError::new(503, "this node is no longer the active node: nothing was written; retry")
        }
        BarrierError::Storage(StorageError::TooLarge { backend, limit }) => ApiError::new(
            413,
            format!("the value is too large for the {backend} storage backend: a record may be at most {limit} bytes once encrypted"),
        ),
        _ => {
            tracing::error!(error = %err, "{what} failed");
            ApiError::internal()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_storage::InmemBackend;

    async fn barrier_with(backend: Arc<dyn Backend>, keyring: Keyring, rotate_after: u64) -> Arc<Barrier> {
        Barrier::open(backend, keyring, rotate_after).await.unwrap()
    }

    async fn fresh(rotate_after: u64) -> (Arc<dyn Backend>, Arc<Barrier>) {
        let backend: Arc<dyn Backend> = Arc::new(InmemBackend::new());
        let barrier = barrier_with(Arc::clone(&backend), Keyring::generate(unix_now()), rotate_after).await;
        (backend, barrier)
    }

    #[tokio::test]
    async fn round_trip_and_no_plaintext_in_storage() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        barrier.put("app/secret", b"hunter2-plaintext").await.unwrap();
        assert_eq!(barrier.get("app/secret").await.unwrap().unwrap(), b"hunter2-plaintext");
        let raw = backend.get("app/secret").await.unwrap().unwrap();
        assert!(!raw.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(raw[0], ENTRY_VERSION);
        assert_eq!(barrier.get("app/missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn every_bit_flip_fails_to_decrypt() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        barrier.put("a", b"value").await.unwrap();
        let raw = backend.get("a").await.unwrap().unwrap();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut tampered = raw.clone();
                tampered[byte] ^= 1 << bit;
                assert!(barrier.decrypt("a", &tampered).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
        assert!(barrier.decrypt("a", &raw[..raw.len() - 1]).is_err());
        assert!(barrier.decrypt("a", &raw[..3]).is_err());
    }

    #[tokio::test]
    async fn entry_moved_to_another_path_fails() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        barrier.put("from", b"value").await.unwrap();
        let raw = backend.get("from").await.unwrap().unwrap();
        backend.put("to", raw).await.unwrap();
        assert!(matches!(barrier.get("to").await, Err(BarrierError::Decrypt { .. })));
    }

    #[tokio::test]
    async fn another_keyring_cannot_read() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        barrier.put("a", b"value").await.unwrap();
        let other = barrier_with(Arc::clone(&backend), Keyring::generate(unix_now()), DEFAULT_ROTATE_AFTER).await;
        assert!(matches!(other.get("a").await, Err(BarrierError::Decrypt { .. })));
    }

    #[tokio::test]
    async fn rotation_keeps_old_terms_readable_and_writes_new_term() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        barrier.put("old", b"one").await.unwrap();
        let status = barrier.rotate().await.unwrap();
        assert_eq!(status.term, 2);
        barrier.put("new", b"two").await.unwrap();
        assert_eq!(barrier.get("old").await.unwrap().unwrap(), b"one");
        assert_eq!(barrier.get("new").await.unwrap().unwrap(), b"two");
        let new_raw = backend.get("new").await.unwrap().unwrap();
        assert_eq!(u32::from_be_bytes(new_raw[1..5].try_into().unwrap()), 2);
        // Relabel an old-term entry as the new term: it must not open.
        let mut relabelled = backend.get("old").await.unwrap().unwrap();
        relabelled[1..5].copy_from_slice(&2u32.to_be_bytes());
        assert!(barrier.decrypt("old", &relabelled).is_err());
        // The rotated keyring is durable and sealed under the root key.
        let sealed = backend.get(KEYRING_PATH).await.unwrap().unwrap();
        let keyring = barrier.keyring();
        let reopened = Keyring::unseal_with_root(keyring.root_key(), &sealed).unwrap();
        assert_eq!(reopened.active_term(), 2);
    }

    #[tokio::test]
    async fn rotates_by_itself_at_the_encryption_limit() {
        let (_backend, barrier) = fresh(5).await;
        for n in 0..12 {
            barrier.put(&format!("k{n}"), b"v").await.unwrap();
        }
        assert!(barrier.key_status().term >= 2, "no automatic rotation: {:?}", barrier.key_status());
        for n in 0..12 {
            assert_eq!(barrier.get(&format!("k{n}")).await.unwrap().unwrap(), b"v");
        }
    }

    #[tokio::test]
    async fn counts_survive_reopen_pessimistically() {
        let (backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        for n in 0..3 {
            barrier.put(&format!("k{n}"), b"v").await.unwrap();
        }
        barrier.persist_stats().await.unwrap();
        let before = barrier.key_status().encryptions;
        let keyring = Keyring::clone(&barrier.keyring());
        let reopened = barrier_with(backend, keyring, DEFAULT_ROTATE_AFTER).await;
        assert!(reopened.key_status().encryptions >= before + STATS_PERSIST_INTERVAL - 1);
    }

    #[tokio::test]
    async fn seal_paths_are_not_writable_through_the_barrier() {
        let (_backend, barrier) = fresh(DEFAULT_ROTATE_AFTER).await;
        for path in PHYSICAL_ONLY {
            assert!(matches!(barrier.put(path, b"x").await, Err(BarrierError::Protected(_))));
        }
    }

    mod properties {
        //! Property tests: every entry round-trips under its own path and term, across
        //! rotations, and no other path, no byte flip and no truncation ever opens.
        use super::*;
        use proptest::prelude::*;

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn entries_round_trip_and_tampering_never_opens(
                plaintext in prop::collection::vec(any::<u8>(), 0..2048),
                path in "[a-z/]{1,40}",
                other_path in "[a-z/]{1,40}",
                rotations in 0usize..3,
                flip in any::<prop::sample::Index>(),
                bit in 0u8..8,
                cut in any::<prop::sample::Index>(),
            ) {
                let rt = runtime();
                let (_, barrier) = rt.block_on(fresh(u64::MAX));
                let (sealed_before, _) = barrier.encrypt(&path, &plaintext);
                for _ in 0..rotations {
                    rt.block_on(barrier.rotate()).unwrap();
                }
                let (sealed_after, _) = barrier.encrypt(&path, &plaintext);
                // Old terms still open after rotation; the new entry uses the new term.
                prop_assert_eq!(barrier.decrypt(&path, &sealed_before).unwrap(), plaintext.clone());
                prop_assert_eq!(barrier.decrypt(&path, &sealed_after).unwrap(), plaintext.clone());
                if other_path != path {
                    prop_assert!(barrier.decrypt(&other_path, &sealed_after).is_err());
                }
                let mut flipped = sealed_after.clone();
                let at = flip.index(flipped.len());
                flipped[at] ^= 1 << bit;
                prop_assert!(barrier.decrypt(&path, &flipped).is_err());
                let truncated = &sealed_after[..cut.index(sealed_after.len())];
                prop_assert!(barrier.decrypt(&path, truncated).is_err());
            }
        }
    }
}
