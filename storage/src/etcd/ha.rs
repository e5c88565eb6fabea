//! The HA lock on etcd: a key created only if absent (in one transaction) and attached to an
//! etcd lease that the holder renews; its creation revision fences every write the holder makes.
//! Heartbeats are keys on their own short leases. All of it lives under
//! `<prefix without its last '/'>.ha/`, outside the data prefix, so migrations and listings
//! never see it and standbys may write heartbeats without being writers of the data.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

use super::{prefix_end, EtcdBackend};
use crate::ha::{Changes, HaBackend, HeldLock, LockHolder};
use crate::StorageError;

/// The fence writes carry: the lock key and the creation revision it must still have.
#[derive(Debug, Clone)]
pub(super) struct Fence {
    pub(super) key: String,
    pub(super) revision: i64,
    /// Marked lost when a fenced write finds another holder.
    pub(super) held: Option<HeldLock>,
}

impl Fence {
    pub(super) fn compare(&self) -> Compare {
        Compare::create_revision(self.key.as_bytes(), CompareOp::Equal, self.revision)
    }
}

impl EtcdBackend {
    fn ha_root(&self) -> String {
        format!("{}.ha/", self.prefix.trim_end_matches('/'))
    }

    pub(super) fn lock_key(&self) -> String {
        format!("{}lock", self.ha_root())
    }

    fn node_key(&self, node_id: &str) -> String {
        format!("{}nodes/{node_id}", self.ha_root())
    }

    /// A lease granted for `ttl`, in whole seconds (etcd raises anything under 2 s to 2 s).
    async fn grant(&self, ttl: Duration) -> Result<i64, StorageError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .call_client("lease grant", |client| async move { client.lease_client().grant(seconds, None).await })
            .await?;
        Ok(response.id())
    }

    async fn revoke(&self, lease: i64) -> Result<(), StorageError> {
        self.call_client("lease revocation", |client| async move { client.lease_client().revoke(lease).await })
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl HaBackend for EtcdBackend {
    async fn try_acquire(&self, advertisement: Vec<u8>, ttl: Duration) -> Result<Option<HeldLock>, StorageError> {
        let sent = Instant::now();
        let lease = self.grant(ttl).await?;
        let key = self.lock_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_bytes(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_bytes(), advertisement, Some(PutOptions::new().with_lease(lease)))]);
        let response = self
            .call("lock", |mut kv| {
                let txn = txn.clone();
                async move {
                    let result = kv.txn(txn).await;
                    (kv, result)
                }
            })
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                let _ = self.revoke(lease).await;
                return Err(err);
            }
        };
        if !response.succeeded() {
            let _ = self.revoke(lease).await;
            return Ok(None);
        }
        // The transaction created the key: its revision is the key's creation revision.
        let revision = response.header().map_or(0, |header| header.revision());
        self.floor.fetch_max(revision, std::sync::atomic::Ordering::AcqRel);
        Ok(Some(HeldLock::new(lease, revision, ttl, sent)))
    }

    async fn renew(&self, held: &HeldLock) -> Result<(), StorageError> {
        let sent = Instant::now();
        let lease = held.lease();
        let renewed = self
            .call_client("lease renewal", |client| async move {
                let (mut keeper, mut responses) = client.lease_client().keep_alive(lease).await?;
                // The request opening the stream is not answered (etcd-client 0.21 with etcd
                // 3.4); an explicit one is.
                keeper.keep_alive().await?;
                Ok(responses.message().await?.map_or(0, |response| response.ttl()))
            })
            .await;
        let ttl = match renewed {
            Ok(ttl) => ttl,
            // etcd 3.4 answers a renewal of an expired lease with "requested lease not found".
            Err(StorageError::Io(why)) if why.contains("lease not found") => 0,
            Err(err) => return Err(err),
        };
        if ttl <= 0 {
            // etcd no longer knows the lease: it expired, and another node may hold the lock.
            held.mark_lost();
            return Err(StorageError::Fenced);
        }
        held.renewed(sent);
        Ok(())
    }

    async fn release(&self, held: &HeldLock) -> Result<(), StorageError> {
        held.mark_lost();
        // Revoking the lease deletes the lock key with it.
        self.revoke(held.lease()).await
    }

    async fn holder(&self) -> Result<LockHolder, StorageError> {
        // Linearizable: a standby must not name a leader etcd has already replaced.
        let key = self.lock_key();
        let mut response = self
            .call("lock lookup", |mut kv| {
                let key = key.as_bytes().to_vec();
                async move {
                    let result = kv.get(key, None).await;
                    (kv, result)
                }
            })
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        let lock = response.take_kvs().into_iter().next();
        let term = lock.as_ref().map_or(0, |kv| kv.create_revision());
        let advertisement = lock.map(|kv| kv.into_key_value().1);
        Ok(LockHolder { advertisement, term, revision })
    }

    async fn lock_changed(&self, revision: i64, within: Duration) -> Result<bool, StorageError> {
        let key = self.lock_key();
        let index = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.members.len();
        let watch = async {
            let mut client = self.member_client(index).await.map_err(|err| self.error("lock watch", err))?;
            let options = WatchOptions::new().with_start_revision(revision + 1);
            // Dropping the stream ends the watch.
            let mut stream =
                client.watch(key.as_bytes(), Some(options)).await.map_err(|err| self.error("lock watch", err))?;
            loop {
                match stream.message().await.map_err(|err| self.error("lock watch", err))? {
                    Some(response) if response.canceled() => {
                        return Err(StorageError::Unavailable(format!(
                            "etcd lock watch: cancelled ({})",
                            response.cancel_reason()
                        )))
                    }
                    Some(response) if !response.events().is_empty() => {
                        let taken = response.events().iter().any(|event| event.event_type() == EventType::Put);
                        return Ok(taken);
                    }
                    // The confirmation that the watch is in place, or progress.
                    Some(_) => {}
                    None => return Err(StorageError::Unavailable("etcd lock watch: the stream ended".into())),
                }
            }
        };
        tokio::time::timeout(within, watch).await.unwrap_or(Ok(false))
    }

    fn share(&self) {
        self.exclusive.store(false, std::sync::atomic::Ordering::Release);
    }

    fn fence(&self, held: Option<&HeldLock>) {
        self.exclusive.store(held.is_some(), std::sync::atomic::Ordering::Release);
        let fence = match held {
            Some(held) => Fence { key: self.lock_key(), revision: held.revision(), held: Some(held.clone()) },
            // Revision 0 never matches an existing lock key: every write fails.
            None => Fence { key: self.lock_key(), revision: -1, held: None },
        };
        *self.fence.write().unwrap_or_else(|p| p.into_inner()) = Some(fence);
    }

    async fn reset(&self) -> Result<(), StorageError> {
        let _exclusive = self.gate.write().await;
        // The linearizable listing in `recover` raises the revision floor to what etcd holds now.
        self.recover().await?;
        self.needs_recovery.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    async fn heartbeat(&self, node_id: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StorageError> {
        let lease = self.grant(ttl).await?;
        let key = self.node_key(node_id);
        let put = self
            .call_client("heartbeat", |client| {
                let (key, value) = (key.clone(), value.clone());
                async move { client.kv_client().put(key, value, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await;
        if let Err(err) = put {
            let _ = self.revoke(lease).await;
            return Err(err);
        }
        Ok(())
    }

    async fn heartbeats(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        let prefix = format!("{}nodes/", self.ha_root());
        let response = self
            .call_client("heartbeat listing", |client| {
                let prefix = prefix.clone();
                async move { client.kv_client().get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(response.kvs().iter().map(|kv| kv.value().to_vec()).collect())
    }

    async fn follow(&self, changes: tokio::sync::mpsc::Sender<Changes>) -> Result<(), StorageError> {
        use std::sync::atomic::Ordering;
        let end = prefix_end(&self.prefix);
        // A linearizable read: everything committed before it is in the store's state at
        // `start`, and the watch brings everything after.
        let (_, _, start) = self.range_keys(self.prefix.as_bytes(), &end, 1, 0).await?;
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        let mut client = self.member_client(index).await.map_err(|err| self.error("follow watch", err))?;
        let options = WatchOptions::new().with_range(end).with_start_revision(start + 1);
        // Dropping the stream ends the watch.
        let mut stream =
            client.watch(self.prefix.as_bytes(), Some(options)).await.map_err(|err| self.error("follow watch", err))?;
        let _following = Following::begin(self);
        if changes.send(Changes { revision: start, keys: Vec::new(), restart: true }).await.is_err() {
            return Ok(());
        }
        loop {
            let response = stream
                .message()
                .await
                .map_err(|err| self.error("follow watch", err))?
                .ok_or_else(|| StorageError::Unavailable("etcd follow watch: the stream ended".into()))?;
            if response.canceled() {
                return Err(StorageError::Unavailable(format!(
                    "etcd follow watch: cancelled ({})",
                    response.cancel_reason()
                )));
            }
            let mut followed = Changes { revision: 0, keys: Vec::new(), restart: false };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(full) = kv.key_str() else { continue };
                let Some(key) = full.strip_prefix(self.prefix.as_str()) else { continue };
                let value = (event.event_type() == EventType::Put).then(|| kv.value());
                if let Some(cache) = &self.cache {
                    cache.observe(full, value, kv.mod_revision(), &self.followed);
                }
                followed.revision = followed.revision.max(kv.mod_revision());
                followed.keys.push(key.to_owned());
            }
            if followed.keys.is_empty() {
                continue;
            }
            // Reads from members behind this revision would miss what was just followed.
            self.floor.fetch_max(followed.revision, Ordering::AcqRel);
            if changes.send(followed).await.is_err() {
                return Ok(());
            }
        }
    }

    fn last_write(&self) -> i64 {
        self.last_write.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// While alive, this backend follows the store: reads may use the cache. Emptied at both ends,
/// so nothing cached before the follow, or after it stopped keeping the cache true, is served.
struct Following<'a> {
    backend: &'a EtcdBackend,
}

impl<'a> Following<'a> {
    fn begin(backend: &'a EtcdBackend) -> Following<'a> {
        if let Some(cache) = &backend.cache {
            cache.purge();
        }
        backend.following.store(true, std::sync::atomic::Ordering::Release);
        Following { backend }
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.backend.following.store(false, std::sync::atomic::Ordering::Release);
        if let Some(cache) = &self.backend.cache {
            cache.purge();
        }
    }
}

/// Against a real etcd member: two backends on one prefix stand for two nodes.
#[cfg(test)]
mod against_etcd {
    use super::*;
    use crate::etcd::EtcdOptions;
    use crate::etcd_harness::EtcdCluster;
    use crate::{Backend, StorageError};

    async fn node(cluster: &EtcdCluster) -> EtcdBackend {
        EtcdBackend::connect(EtcdOptions::new(cluster.endpoints(), "/arcanum/")).await.expect("connect")
    }

    /// Tries to take the lock until it is free (etcd expires a lease it no longer hears about).
    async fn acquire_when_free(backend: &EtcdBackend, advert: &[u8], ttl: Duration) -> HeldLock {
        let started = Instant::now();
        loop {
            if let Some(held) = backend.try_acquire(advert.to_vec(), ttl).await.expect("try_acquire") {
                return held;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the lock never came free");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_reads_from_its_cache_and_sees_every_change_another_node_makes() {
        let cluster = EtcdCluster::start(1).await;
        let (writer, follower) = (node(&cluster).await, std::sync::Arc::new(node(&cluster).await));
        follower.share();
        follower.fence(None);
        writer.put("kv/a", b"1".to_vec()).await.expect("put");
        writer.put("kv/gone", b"x".to_vec()).await.expect("put");
        let (sender, mut changes) = tokio::sync::mpsc::channel(16);
        let following = tokio::spawn({
            let follower = std::sync::Arc::clone(&follower);
            async move { follower.follow(sender).await }
        });
        let first = changes.recv().await.expect("the follow starts");
        assert!(first.restart && first.revision > 0, "{first:?}");
        // Cached now: these reads need no etcd round trip, and must still see the next writes.
        assert_eq!(follower.get("kv/a").await.expect("get"), Some(b"1".to_vec()));
        assert_eq!(follower.get("kv/gone").await.expect("get"), Some(b"x".to_vec()));
        assert_eq!(follower.get("kv/new").await.expect("get"), None);
        writer
            .batch(vec![
                crate::Op::Put { key: "kv/a".into(), value: b"2".to_vec() },
                crate::Op::Delete { key: "kv/gone".into() },
                crate::Op::Put { key: "kv/new".into(), value: b"n".to_vec() },
            ])
            .await
            .expect("batch");
        let written = writer.last_write();
        assert!(written > first.revision);
        // A delete of an absent key makes no revision a follower could wait for.
        writer.heartbeat("n", b"beat".to_vec(), Duration::from_secs(5)).await.expect("heartbeat");
        writer.delete("kv/never-written").await.expect("delete");
        assert_eq!(writer.last_write(), written);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let next = changes.recv().await.expect("changes");
            assert!(!next.restart);
            assert!(next.revision <= written, "{next:?}");
            seen.extend(next.keys);
        }
        seen.sort();
        assert_eq!(seen, ["kv/a", "kv/gone", "kv/new"]);
        assert_eq!(follower.get("kv/a").await.expect("get"), Some(b"2".to_vec()));
        assert_eq!(follower.get("kv/gone").await.expect("get"), None);
        assert_eq!(follower.get("kv/new").await.expect("get"), Some(b"n".to_vec()));
        assert!(follower.put("kv/a", b"3".to_vec()).await.is_err(), "a follower writes nothing");
        // The receiver gone, the follow ends and reads go to etcd again.
        drop(changes);
        writer.put("kv/a", b"4".to_vec()).await.expect("put");
        following.await.expect("join").expect("the follow ends cleanly");
        assert!(!follower.following.load(std::sync::atomic::Ordering::Acquire));
        assert_eq!(follower.get("kv/a").await.expect("get"), Some(b"4".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time_and_a_deposed_holder_writes_nothing() {
        let cluster = EtcdCluster::start(1).await;
        let (a, b) = (node(&cluster).await, node(&cluster).await);
        let ttl = Duration::from_secs(2);

        let held_a = a.try_acquire(b"node a".to_vec(), ttl).await.unwrap().expect("a takes the free lock");
        assert!(b.try_acquire(b"node b".to_vec(), ttl).await.unwrap().is_none(), "b must not take a held lock");
        assert_eq!(b.holder().await.unwrap().advertisement.as_deref(), Some(&b"node a"[..]));
        a.fence(Some(&held_a));
        b.fence(None);
        a.put("ha/by-a", b"1".to_vec()).await.expect("the holder writes");
        assert!(matches!(b.put("ha/by-b", b"1".to_vec()).await, Err(StorageError::Fenced)), "a standby never writes");
        a.renew(&held_a).await.expect("renew");
        assert!(held_a.is_valid());

        // a stops renewing (paused); etcd expires its lease and b takes over.
        let held_b = acquire_when_free(&b, b"node b", ttl).await;
        b.fence(Some(&held_b));
        b.put("ha/by-b", b"2".to_vec()).await.expect("the new holder writes");
        assert!(!held_a.is_valid(), "a's own deadline passed before etcd let b in");
        // a wakes up: every write it still tries fails, and it learns it lost the lock.
        let deposed = a.batch(vec![crate::Op::Put { key: "ha/by-a".into(), value: b"late".to_vec() }]).await;
        assert!(matches!(deposed, Err(StorageError::Fenced)), "{deposed:?}");
        assert!(matches!(a.renew(&held_a).await, Err(StorageError::Fenced)));
        held_a.lost().await;
        assert_eq!(b.get("ha/by-a").await.unwrap().as_deref(), Some(&b"1"[..]), "the deposed write left nothing");
        assert_eq!(b.holder().await.unwrap().advertisement.as_deref(), Some(&b"node b"[..]));

        // A release hands over at once.
        b.release(&held_b).await.unwrap();
        assert!(!held_b.is_valid());
        let again = a.try_acquire(b"node a".to_vec(), ttl).await.unwrap().expect("free right after the release");
        a.fence(Some(&again));
        a.reset().await.unwrap();
        a.put("ha/by-a", b"3".to_vec()).await.expect("the holder again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_watch_hears_every_change_after_the_revision_it_read() {
        let cluster = EtcdCluster::start(1).await;
        let (a, b) = (node(&cluster).await, node(&cluster).await);
        let free = b.holder().await.unwrap();
        assert_eq!(free.advertisement, None);
        // Nothing changes: the wait lasts its bound and is no error.
        let started = Instant::now();
        assert!(!b.lock_changed(free.revision, Duration::from_millis(300)).await.unwrap(), "nobody took it");
        assert!(started.elapsed() >= Duration::from_millis(300), "returned after {:?}", started.elapsed());

        // Changes made after the read and before the watch began are heard too.
        let held = a.try_acquire(b"node a".to_vec(), Duration::from_secs(30)).await.unwrap().expect("free lock");
        let heard =
            tokio::time::timeout(Duration::from_secs(5), b.lock_changed(free.revision, Duration::from_secs(60)));
        assert!(heard.await.expect("the take was heard").unwrap(), "a take is reported as one");
        let taken = b.holder().await.unwrap();
        assert_eq!(taken.advertisement.as_deref(), Some(&b"node a"[..]));
        // And so is a change made while the watch is in place (the release comes a moment
        // after the watch began; were it earlier, the watch would hear it from history).
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.release(&held).await.unwrap();
        };
        let heard =
            tokio::time::timeout(Duration::from_secs(5), b.lock_changed(taken.revision, Duration::from_secs(60)));
        let (heard, ()) = tokio::join!(heard, release);
        assert!(!heard.expect("the release was heard").unwrap(), "a release is no take");
        assert_eq!(b.holder().await.unwrap().advertisement, None);
        // Taken and let go again since a read that saw it free: still reported as taken (so a
        // node that stepped down knows another led meanwhile).
        assert!(b.lock_changed(free.revision, Duration::from_secs(5)).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_last_their_ttl() {
        let cluster = EtcdCluster::start(1).await;
        let (a, b) = (node(&cluster).await, node(&cluster).await);
        a.heartbeat("a", b"{\"node\":\"a\"}".to_vec(), Duration::from_secs(60)).await.unwrap();
        b.heartbeat("b", b"{\"node\":\"b\"}".to_vec(), Duration::from_secs(2)).await.unwrap();
        let mut seen = a.heartbeats().await.unwrap();
        seen.sort();
        assert_eq!(seen, [b"{\"node\":\"a\"}".to_vec(), b"{\"node\":\"b\"}".to_vec()]);
        // b stops: its heartbeat goes with its lease.
        let started = Instant::now();
        while a.heartbeats().await.unwrap().len() > 1 {
            assert!(started.elapsed() < Duration::from_secs(20), "b's heartbeat never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Heartbeats are outside the data: listings do not see them.
        assert!(a.list("").await.unwrap().is_empty());
    }
}
