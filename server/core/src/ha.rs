//! High availability: several nodes on one shared store (etcd), one of them active.
//!
//! A node unsealed with `ha_enabled` keeps only its root key and stands by; its election task
//! takes the store's lock when it is free. Holding it, the node *takes over*: it fences every
//! write on the lock, empties what the store cached, finishes a batch a crashed writer left,
//! reads the keyring (so a rotation by the previous active is seen) and opens every service
//! the way an unseal does — mounts, policies, tokens, audit devices, quotas, leases — then
//! starts the reaper and the periodic duties, and only then answers as active. It renews the
//! lock every third of its TTL and counts itself active only until the TTL (less a margin)
//! after the last renewal it sent, so a paused or cut-off node stops serving before etcd can
//! elect another. When the lock is lost, the storage fences a write, or an operator steps it
//! down, the node *steps down*: it drops the services (nothing is sealed: it keeps the root
//! key), fences itself off storage, and campaigns again.
//!
//! A standby that serves reads itself keeps its own read-only copy of the services, current
//! through a follow of storage ([`crate::standby`]); it drops the copy when it takes over.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arcanum_contract::clock::unix_now;
use arcanum_contract::logical::ApiError;
use arcanum_crypto::Key256;
use arcanum_storage::{HaBackend, HeldLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{barrier, expiration::Expiration, Core, Unsealed};

/// How long a node waits after stepping down before it campaigns again, so that another node
/// takes the lock (Vault waits 10 s). The wait ends as soon as another node has: standbys hear
/// of the free lock through their watch within milliseconds, so this only delays a node that
/// no other could relieve.
const AFTER_STEP_DOWN: Duration = Duration::from_secs(1);
/// How long a stepping-down node lets requests it already serves finish.
const IN_FLIGHT_DRAIN: Duration = Duration::from_secs(5);
/// How long a shutting-down active node waits for another to take over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);
/// How long a standby waits before it reads the lock again when it cannot watch it.
const POLL: Duration = Duration::from_millis(250);
/// How long a standby watching the lock goes without reading it again (a watch that silently
/// broke costs no more than this).
const RECHECK: Duration = Duration::from_secs(5);
/// How often a node says it is alive, and how long that lasts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(8);

/// What a node that stopped being active answers a request it was given as the active one: it
/// served nothing of it (the services are gone), so whoever forwarded it may send it on.
pub const NOT_ACTIVE: &str = "this node is not the active node (any more): nothing was done; retry";

/// The header a standby adds when it forwards a request: the client's address, when, and a MAC
/// over both and the request line, keyed by a key derived from the root key (which every
/// unsealed node of the cluster holds and no client does). The active node believes the address
/// only when the MAC verifies within [`FORWARDED_WINDOW`]; a client cannot put another address
/// in the active node's audit log, quotas or CIDR checks.
pub const FORWARDED_HEADER: &str = "x-arcanum-forwarded-for";
/// How old a forwarded request's signature may be (both clocks come from the same hosts' NTP).
pub const FORWARDED_WINDOW: i64 = 30;
const FORWARDING_KEY_LABEL: &[u8] = b"arcanum ha request forwarding v1";

/// This node's part in an HA cluster, from the server config.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Unique per process.
    pub node_id: String,
    pub hostname: String,
    /// Where clients reach this node (`api_addr`): standbys send them here when it is active.
    pub api_addr: String,
    /// Where other nodes reach it (`cluster_addr`).
    pub cluster_addr: String,
    /// The lock's lease TTL (`lock_timeout`).
    pub lock_ttl: Duration,
    /// Whether this node, as a standby, serves KV reads itself (see [`crate::standby`]).
    pub standby_reads: bool,
}

/// What the lock's holder advertises, and what each node's heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    pub node_id: String,
    pub hostname: String,
    pub api_addr: String,
    pub cluster_addr: String,
    pub version: String,
    /// Unix seconds when this node became active; `None` for a standby.
    pub active_since: Option<i64>,
    /// Unix seconds of the heartbeat.
    pub last_echo: i64,
}

/// A node's role, as `sys/leader`, `sys/health` and `sys/ha-status` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not unsealed: takes no part in the election.
    Sealed,
    /// Unsealed, not holding the lock; `leader` is who does, when known.
    Standby { leader: Option<Advertisement> },
    /// Holding the lock since the given unix second.
    Active { since: i64 },
}

/// The leader a standby last read from the lock, and which holding of the lock it was (see
/// [`arcanum_storage::LockHolder::term`]; 0: none known).
#[derive(Debug, Default)]
struct KnownLeader {
    advertisement: Option<Advertisement>,
    term: i64,
}

/// The HA state of a core.
#[derive(Debug)]
pub struct Ha {
    pub backend: Arc<dyn HaBackend>,
    pub config: HaConfig,
    /// The root key while unsealed: what a takeover opens the keyring with.
    pub(crate) root_key: Mutex<Option<Key256>>,
    /// Derived from the root key: signs and checks forwarded client addresses.
    forwarding_key: Mutex<Option<Key256>>,
    /// The lock while active.
    held: Mutex<Option<HeldLock>>,
    /// Unix second this node became active.
    active_since: Mutex<Option<i64>>,
    /// The last leader a standby saw.
    leader: Mutex<KnownLeader>,
    /// Wakes the election task: unsealed, sealed, or asked to step down.
    wake: Notify,
    /// Set before a graceful shutdown: the node steps down and never campaigns again.
    retiring: std::sync::atomic::AtomicBool,
    /// Bumped by each step-down request; the active node watches it from its takeover on, so
    /// a request made while it was a standby never counts.
    step_down: tokio::sync::watch::Sender<u64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Asks for a heartbeat now (the node's role changed).
    beat: Notify,
    /// Bumped whenever this node's role or the leader it knows changes: what a forwarded request
    /// held during a failover waits on.
    leadership: tokio::sync::watch::Sender<u64>,
    /// A standby's copy of the services it serves reads from.
    pub reads: crate::standby::StandbyReads,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ha {
    pub fn new(backend: Arc<dyn HaBackend>, config: HaConfig) -> Ha {
        Ha {
            backend,
            config,
            root_key: Mutex::new(None),
            forwarding_key: Mutex::new(None),
            held: Mutex::new(None),
            active_since: Mutex::new(None),
            leader: Mutex::new(KnownLeader::default()),
            wake: Notify::new(),
            retiring: std::sync::atomic::AtomicBool::new(false),
            step_down: tokio::sync::watch::Sender::new(0),
            task: Mutex::new(None),
            beat: Notify::new(),
            leadership: tokio::sync::watch::Sender::new(0),
            reads: crate::standby::StandbyReads::default(),
        }
    }

    /// Whether this node holds keys (standby or active).
    pub fn is_unsealed(&self) -> bool {
        lock(&self.root_key).is_some()
    }

    /// Whether this node holds a valid lock right now.
    pub fn is_active(&self) -> bool {
        lock(&self.held).as_ref().is_some_and(HeldLock::is_valid)
    }

    pub fn role(&self) -> Role {
        if !self.is_unsealed() {
            return Role::Sealed;
        }
        match *lock(&self.active_since) {
            Some(since) if self.is_active() => Role::Active { since },
            _ => Role::Standby { leader: lock(&self.leader).advertisement.clone() },
        }
    }

    /// The unsealed node's root key arrives: it becomes a standby and campaigns.
    pub(crate) fn unsealed(&self, root_key: Key256) {
        let derived = arcanum_crypto::hmac_sha256(root_key.as_bytes(), FORWARDING_KEY_LABEL);
        *lock(&self.forwarding_key) = Key256::from_slice(&derived).ok();
        *lock(&self.root_key) = Some(root_key);
        self.backend.fence(None);
        self.wake.notify_one();
        self.beat.notify_one();
        self.leadership_changed();
    }

    /// Sealing: forget the key and stop campaigning (the caller steps down first).
    pub(crate) fn sealed(&self) {
        *lock(&self.root_key) = None;
        *lock(&self.forwarding_key) = None;
        *lock(&self.leader) = KnownLeader::default();
        self.wake.notify_one();
        self.leadership_changed();
    }

    /// Changes whenever this node's role or the leader it knows changes.
    pub fn watch_leadership(&self) -> tokio::sync::watch::Receiver<u64> {
        self.leadership.subscribe()
    }

    fn leadership_changed(&self) {
        self.leadership.send_modify(|epoch| *epoch += 1);
    }

    /// Notes who holds the lock, as a standby read it. A new `term` is a change even when the
    /// same node leads again (within the same second).
    fn saw_leader(&self, leader: Option<Advertisement>, term: i64) {
        // Each holding of the lock has its own term, so the term alone tells a change.
        let previous = std::mem::replace(&mut *lock(&self.leader), KnownLeader { advertisement: leader, term });
        let changed = previous.term != term;
        if changed {
            self.leadership_changed();
        }
    }

    /// Asks the active node to hand over at once.
    pub fn request_step_down(&self) {
        self.step_down.send_modify(|requests| *requests += 1);
    }

    /// Whether this node still acts as active with a lock whose deadline has passed (it was
    /// paused or cut off): it must stop at once.
    pub(crate) fn lock_lapsed(&self) -> bool {
        lock(&self.held).as_ref().is_some_and(|held| !held.is_valid())
    }

    /// The [`FORWARDED_HEADER`] value for a request from `client` that this standby forwards;
    /// `None` while sealed.
    pub fn sign_forwarded(&self, client: &str, method: &str, target: &str) -> Option<String> {
        let key = lock(&self.forwarding_key).clone()?;
        let at = unix_now();
        let mac = forwarding_mac(&key, client, at, method, target);
        Some(format!("{client} {at} {}", hex::encode(mac)))
    }

    /// Checks a [`FORWARDED_HEADER`] value against the request it came with; the client's
    /// address when it verifies, else why not (the reason names no secret).
    pub fn verify_forwarded(&self, header: &str, method: &str, target: &str) -> Result<String, &'static str> {
        let key = lock(&self.forwarding_key).clone().ok_or("this node is sealed")?;
        let mut parts = header.split(' ');
        let (Some(client), Some(at), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("malformed");
        };
        let at: i64 = at.parse().map_err(|_| "malformed")?;
        let mac = hex::decode(mac).map_err(|_| "malformed")?;
        let expected = forwarding_mac(&key, client, at, method, target);
        if !arcanum_crypto::constant_time_eq(&mac, &expected) {
            return Err("the signature does not verify");
        }
        if (unix_now() - at).abs() > FORWARDED_WINDOW {
            return Err("the signature is too old");
        }
        Ok(client.to_owned())
    }

    fn advertisement(&self, active_since: Option<i64>) -> Advertisement {
        Advertisement {
            node_id: self.config.node_id.clone(),
            hostname: self.config.hostname.clone(),
            api_addr: self.config.api_addr.clone(),
            cluster_addr: self.config.cluster_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_since,
            last_echo: unix_now(),
        }
    }

    /// Every node whose heartbeat is current, this one included.
    pub async fn nodes(&self) -> Result<Vec<Advertisement>, ApiError> {
        let raw = self.backend.heartbeats().await.map_err(|err| barrier::api_error("listing HA nodes", err.into()))?;
        let mut nodes: Vec<Advertisement> = raw.iter().filter_map(|value| serde_json::from_slice(value).ok()).collect();
        nodes.sort_by(|a, b| a.api_addr.cmp(&b.api_addr));
        Ok(nodes)
    }
}

impl Core {
    /// Starts the election task of an HA core (once, at start-up). It holds the core weakly and
    /// ends with it.
    pub fn start_ha(self: &Arc<Core>) {
        let Some(ha) = self.ha.clone() else { return };
        let task = tokio::spawn(campaign(Arc::downgrade(self), Arc::clone(&ha)));
        *lock(&ha.task) = Some(task);
        let heartbeat = tokio::spawn(heartbeats(Arc::downgrade(&ha)));
        // The heartbeat task ends when `ha` goes; the election task's handle aborts both at drop.
        drop(heartbeat);
        if ha.config.standby_reads {
            // Like the election task, it holds the core weakly and ends once it finds it gone.
            drop(tokio::spawn(crate::standby::follow_for_reads(Arc::downgrade(self), Arc::clone(&ha))));
        }
    }

    /// Takes over as active: fence, reset the storage's view, open every service.
    async fn take_over(&self, ha: &Ha, held: &HeldLock) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        ha.backend.fence(Some(held));
        ha.backend.reset().await.map_err(|err| barrier::api_error("resetting storage at takeover", err.into()))?;
        let root_key = lock(&ha.root_key).clone().ok_or_else(ApiError::sealed)?;
        let keyring = self.open_keyring_with_root(&root_key).await?;
        let barrier = barrier::Barrier::open(Arc::clone(&self.backend), keyring, self.config.rotate_after)
            .await
            .map_err(|err| barrier::api_error("opening the barrier at takeover", err))?;
        let unsealed = Arc::new(Unsealed::open(barrier, self.config.leases, Arc::clone(&self.catalog)).await?);
        Expiration::start_reaper(&unsealed);
        let since = unix_now();
        *self.unsealed.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(unsealed);
        *lock(&ha.active_since) = Some(since);
        *lock(&ha.held) = Some(held.clone());
        *lock(&ha.leader) = KnownLeader::default();
        ha.beat.notify_one();
        ha.leadership_changed();
        let metrics = arcanum_metrics::global();
        metrics.ha_active.set(1);
        metrics.ha_leadership_changes.inc();
        metrics.ha_takeover_duration.observe(started.elapsed().as_secs_f64());
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "took over as the active node");
        Ok(())
    }

    /// Stops being active: drops the services (they exist only on the active), fences this
    /// node off storage and forgets what storage told it. Keeps the root key.
    pub(crate) async fn step_down_now(&self, ha: &Ha) {
        let taken = self.unsealed.write().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let held = lock(&ha.held).take();
        *lock(&ha.active_since) = None;
        if let Some(unsealed) = taken {
            unsealed.expiration.stop_reaper();
            // New requests find no services now (and a forwarding standby sends them on); the
            // ones already running finish while the lock still holds, within a bound.
            let drained = tokio::time::Instant::now() + IN_FLIGHT_DRAIN;
            while Arc::strong_count(&unsealed) > 1 && tokio::time::Instant::now() < drained {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // While the lock still holds (a requested step-down), these last writes go through.
            unsealed.audit.persist_heads().await;
            if let Err(err) = unsealed.barrier.persist_stats().await {
                tracing::debug!(error = %err, "barrier stats not persisted at step-down");
            }
        }
        ha.backend.fence(None);
        if let Some(held) = held {
            if held.is_valid() {
                if let Err(err) = ha.backend.release(&held).await {
                    tracing::warn!(error = %err, "could not release the HA lock; it expires with its lease");
                }
            }
            held.mark_lost();
            ha.beat.notify_one();
            ha.leadership_changed();
            arcanum_metrics::global().ha_active.set(0);
            tracing::warn!("stepped down: this node is a standby now");
        }
        if let Err(err) = ha.backend.reset().await {
            tracing::debug!(error = %err, "storage reset at step-down failed; the next takeover resets again");
        }
    }

    /// Before a graceful shutdown: an active node steps down and waits until another node leads
    /// (bounded), and a little longer, so that standbys send requests there and not to a node
    /// about to close its connections.
    pub async fn hand_over(&self) {
        let Some(ha) = &self.ha else { return };
        ha.retiring.store(true, std::sync::atomic::Ordering::SeqCst);
        if !ha.is_active() {
            return;
        }
        ha.request_step_down();
        let mut leadership = ha.watch_leadership();
        let deadline = tokio::time::Instant::now() + HAND_OVER_WAIT;
        loop {
            if matches!(ha.role(), Role::Standby { leader: Some(ref leader) } if leader.node_id != ha.config.node_id) {
                break;
            }
            if tokio::time::timeout_at(deadline, leadership.changed()).await.is_err() {
                tracing::warn!("no other node took over before shutdown");
                return;
            }
        }
        // The other standbys learn the new leader through their watch (or, without one, within
        // a poll) before this node closes its connections.
        tokio::time::sleep(POLL * 2).await;
    }

    /// Reads the keyring from storage with the root key (a takeover sees the last rotation).
    pub(crate) async fn open_keyring_with_root(
        &self,
        root_key: &Key256,
    ) -> Result<arcanum_crypto::keyring::Keyring, ApiError> {
        let sealed_keyring = self
            .backend
            .get(barrier::KEYRING_PATH)
            .await
            .map_err(|err| barrier::api_error("reading the keyring", err.into()))?
            .ok_or_else(ApiError::internal)?;
        arcanum_crypto::keyring::Keyring::unseal_with_root(root_key, &sealed_keyring).map_err(|_| {
            tracing::error!("the root key opened but the keyring did not: storage is corrupt");
            ApiError::internal()
        })
    }
}

fn forwarding_mac(key: &Key256, client: &str, at: i64, method: &str, target: &str) -> [u8; 32] {
    let message = format!("{client}\n{at}\n{method}\n{target}");
    arcanum_crypto::hmac_sha256(key.as_bytes(), message.as_bytes())
}

/// The election: while unsealed, take the lock when it is free and serve as active while it
/// holds; otherwise note who leads and wait, watching the lock, until it changes.
async fn campaign(core: Weak<Core>, ha: Arc<Ha>) {
    // After stepping down a node lets the others take the lock first; it still watches who
    // leads, and campaigns again once another node has led (or no other did, in time).
    let mut campaign_from = tokio::time::Instant::now();
    loop {
        if !ha.is_unsealed() {
            ha.wake.notified().await;
            continue;
        }
        let retiring = ha.retiring.load(std::sync::atomic::Ordering::SeqCst);
        if !retiring && tokio::time::Instant::now() >= campaign_from {
            let advertisement = ha.advertisement(Some(unix_now()));
            let value = serde_json::to_vec(&advertisement).unwrap_or_default();
            match ha.backend.try_acquire(value, ha.config.lock_ttl).await {
                Ok(Some(held)) => {
                    let Some(node) = core.upgrade() else { return };
                    match node.take_over(&ha, &held).await {
                        Ok(()) => serve_as_active(&node, &ha, &held).await,
                        Err(err) => {
                            tracing::error!(status = err.status, error = %err, "takeover failed; handing the lock back")
                        }
                    }
                    node.step_down_now(&ha).await;
                    campaign_from = tokio::time::Instant::now() + AFTER_STEP_DOWN;
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "could not reach the HA lock; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = ha.wake.notified() => {}
                    }
                    continue;
                }
            }
        }
        let seen = match ha.backend.holder().await {
            Ok(holder) => {
                let leader: Option<Advertisement> =
                    holder.advertisement.as_deref().and_then(|raw| serde_json::from_slice(raw).ok());
                if leader.as_ref().is_some_and(|leader| leader.node_id != ha.config.node_id) {
                    // Another node took over: the back-off has done its work.
                    campaign_from = tokio::time::Instant::now();
                }
                let free = holder.advertisement.is_none();
                ha.saw_leader(leader, holder.term);
                Some((holder.revision, free))
            }
            Err(_) => None,
        };
        let now = tokio::time::Instant::now();
        let wait_until = match seen {
            // Free and this node may take it: try again at once (another node won the race
            // just now, or let it go since).
            Some((_, true)) if !retiring && now >= campaign_from => continue,
            Some(_) if now < campaign_from => campaign_from.min(now + RECHECK),
            Some(_) => now + RECHECK,
            None => now + POLL,
        };
        let changed = async {
            match seen {
                Some((revision, _)) => {
                    let within = wait_until.saturating_duration_since(tokio::time::Instant::now());
                    match ha.backend.lock_changed(revision, within).await {
                        // Another node led since this one stepped down, however briefly.
                        Ok(true) => campaign_from = campaign_from.min(tokio::time::Instant::now()),
                        Ok(false) => {}
                        Err(err) => {
                            tracing::debug!(error = %err, "cannot watch the HA lock; polling it");
                            tokio::time::sleep_until(wait_until.min(tokio::time::Instant::now() + POLL)).await;
                        }
                    }
                }
                None => tokio::time::sleep_until(wait_until).await,
            }
        };
        tokio::select! {
            () = changed => {}
            () = ha.wake.notified() => {}
        }
    }
}

/// Renews the lock until it is lost, this node is asked to step down, or it is sealed.
async fn serve_as_active(core: &Core, ha: &Ha, held: &HeldLock) {
    let every = held.ttl() / 3;
    let mut step_down = ha.step_down.subscribe();
    step_down.borrow_and_update();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                if let Err(err) = ha.backend.renew(held).await {
                    tracing::warn!(error = %err, "renewing the HA lock failed");
                }
                if !held.is_valid() {
                    tracing::warn!("the HA lock was lost");
                    return;
                }
            }
            () = held.lost() => {
                tracing::warn!("the HA lock was lost");
                return;
            }
            _ = step_down.changed() => {
                tracing::info!("stepping down on request");
                return;
            }
            () = ha.wake.notified() => {
                if !ha.is_unsealed() {
                    return;
                }
            }
        }
        if core.is_sealed() {
            return;
        }
    }
}

/// Writes this node's heartbeat while it is unsealed, for `sys/ha-status`.
async fn heartbeats(ha: Weak<Ha>) {
    loop {
        let Some(ha) = ha.upgrade() else { return };
        if ha.is_unsealed() {
            let since = match ha.role() {
                Role::Active { since } => Some(since),
                _ => None,
            };
            let value = serde_json::to_vec(&ha.advertisement(since)).unwrap_or_default();
            if let Err(err) = ha.backend.heartbeat(&ha.config.node_id, value, HEARTBEAT_TTL).await {
                tracing::debug!(error = %err, "heartbeat not written");
            }
        }
        // Holds the node for at most one interval after its core is gone.
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            () = ha.beat.notified() => {}
        }
    }
}
