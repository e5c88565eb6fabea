//! The expiration manager: leases on dynamic secrets and the reaper that revokes them, and
//! token expiry driven by the same schedule.
//!
//! # Storage layout (all behind the barrier)
//! - `sys/expire/id/<lease id>`: the [`LeaseEntry`]; lease ids are `<request path>/<random>`,
//!   so a one-level list of `sys/expire/id/<prefix>` is exactly Vault's lease lookup list.
//! - `sys/expire/due/<unix second, 12 digits>/<item>`: the expiry index. `<item>` is
//!   `l.<escaped lease id>` or `t.<token storage hash>`. The value is empty: at unseal the
//!   schedule is rebuilt from the *folder names* alone (one seek per distinct second), without
//!   reading a single lease.
//! - `sys/expire/token/<token hash>/<escaped lease id>`: which leases a token created, so that
//!   revoking the token revokes them.
//!
//! The lease entry is the commit point. An index key may outlive what it points at (a crash,
//! a renewal that moved the due time): whoever reads it checks the entry and drops the key
//! when it is stale, so a stale key costs one lookup and never revokes anything early.
//!
//! # Revocation
//! A lease is revoked by its backend (a database drops the user), within [`BACKEND_TIMEOUT`].
//! When that fails, the lease stays, marked pending with the error and the attempt count, and
//! is rescheduled with exponential backoff. After `max_attempts` it is also flagged
//! irrevocable, which puts it in front of an operator (`sys/leases?type=irrevocable`,
//! `sys/leases/revoke-force`) — but the reaper keeps trying at the longest backoff, because a
//! database that comes back after a long outage must still see its users dropped. Nothing is
//! ever dropped silently.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::barrier::{Barrier, BarrierError, BarrierOp};
use super::Unsealed;
use arcanum_contract::backend::{bounded, LeaseRequest, LeaseSpec, SYSTEM_MAX_TTL};
use arcanum_contract::clock::rfc3339;
use arcanum_contract::clock::unix_now;
use arcanum_contract::logical::ApiError;
use arcanum_contract::mount::MountEntry;
use arcanum_contract::storage::StorageView;

const LEASE_PREFIX: &str = "sys/expire/id/";
const DUE_PREFIX: &str = "sys/expire/due/";
const BY_TOKEN_PREFIX: &str = "sys/expire/token/";
const LEASE_RANDOM_LEN: usize = 24;
/// Revocations the reaper runs at once unless `lease_revocation_concurrency` says otherwise (each may
/// hold a database connection). 8 revoked as fast as 32 against PostgreSQL in `scripts/bench-leases`
/// and took less CPU from the API meanwhile.
const REAPER_CONCURRENCY: usize = 8;
/// Striped locks that serialise renew and revoke of one lease.
const LOCK_STRIPES: usize = 64;
/// Settings from the server config.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// Failed revocation attempts before a lease is marked irrevocable.
    pub max_attempts: u32,
    /// The longest wait between two attempts (the backoff doubles from one second up to this).
    pub max_backoff: Duration,
    /// How many revocations the reaper runs at once.
    pub concurrency: usize,
    /// TTL for leases whose backend and mount name none.
    pub default_ttl: u64,
    /// The cap on every lease.
    pub max_ttl: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            max_attempts: 12,
            max_backoff: Duration::from_secs(300),
            concurrency: REAPER_CONCURRENCY,
            default_ttl: SYSTEM_MAX_TTL,
            max_ttl: SYSTEM_MAX_TTL,
        }
    }
}

/// A failed revocation, kept on the lease so that lookup shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationState {
    pub attempts: u32,
    pub last_error: String,
    /// When the reaper tries again.
    pub next_attempt: i64,
    /// Attempts passed the configured limit: flagged for an operator, still retried.
    pub irrevocable: bool,
}

/// One lease as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseEntry {
    pub lease_id: String,
    /// The request path that created it (`database/creds/readonly`).
    pub path: String,
    pub internal: Map<String, Value>,
    /// Storage hash of the token that created it.
    pub token_hash: Option<String>,
    pub issue_time: i64,
    pub expire_time: i64,
    /// Renewals never pass this.
    pub max_expire_time: i64,
    /// What a renewal with increment 0 grants.
    pub ttl: u64,
    pub last_renewal: Option<i64>,
    pub renewable: bool,
    #[serde(default)]
    pub revocation: Option<RevocationState>,
}

impl LeaseEntry {
    /// The second the reaper should look at this lease: its expiry, or its next retry.
    fn due_time(&self) -> Option<i64> {
        match &self.revocation {
            Some(state) => Some(state.next_attempt),
            None => Some(self.expire_time),
        }
    }

    fn is_expired(&self, now: i64) -> bool {
        self.expire_time <= now || self.revocation.is_some()
    }

    /// `sys/leases/lookup`'s data.
    pub fn lookup_data(&self) -> Map<String, Value> {
        let now = unix_now();
        let mut data = Map::new();
        data.insert("id".into(), json!(self.lease_id));
        data.insert("issue_time".into(), json!(rfc3339(self.issue_time)));
        data.insert("expire_time".into(), json!(rfc3339(self.expire_time)));
        data.insert("last_renewal".into(), self.last_renewal.map_or(Value::Null, |t| json!(rfc3339(t))));
        data.insert("renewable".into(), json!(self.renewable && self.revocation.is_none()));
        data.insert("ttl".into(), json!((self.expire_time - now).max(0)));
        data.insert("path".into(), json!(self.path));
        if let Some(state) = &self.revocation {
            data.insert("revocation_pending".into(), json!(true));
            data.insert("irrevocable".into(), json!(state.irrevocable));
            data.insert("revocation_attempts".into(), json!(state.attempts));
            data.insert("revocation_error".into(), json!(state.last_error));
            data.insert("next_revocation_attempt".into(), json!(rfc3339(state.next_attempt)));
        }
        data
    }
}

/// An entry in the expiry index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueItem<'a> {
    Token(&'a str),
    Lease(&'a str),
}

/// The index key for `item` due at `second`.
pub fn due_key(second: i64, item: DueItem<'_>) -> String {
    match item {
        DueItem::Token(hash) => format!("{DUE_PREFIX}{second:012}/t.{hash}"),
        DueItem::Lease(id) => format!("{DUE_PREFIX}{second:012}/l.{}", escape(id)),
    }
}

/// Lease ids hold `/`; index keys keep them one level deep.
fn escape(lease_id: &str) -> String {
    lease_id.replace('%', "%25").replace('/', "%2F")
}

fn unescape(escaped: &str) -> String {
    escaped.replace("%2F", "/").replace("%25", "%")
}

/// The due seconds the reaper has to visit, in memory. Cheap to share: the token store adds
/// to it when it creates or renews a token.
#[derive(Debug, Default)]
pub struct Schedule {
    due: Mutex<BTreeSet<i64>>,
    wake: Notify,
}

impl Schedule {
    pub fn add(&self, second: i64) {
        let earliest = {
            let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
            due.insert(second);
            due.first() == Some(&second)
        };
        // Only a new head changes how long the reaper sleeps.
        if earliest {
            self.wake.notify_one();
        }
    }

    fn first(&self) -> Option<i64> {
        self.due.lock().unwrap_or_else(|p| p.into_inner()).first().copied()
    }

    fn remove(&self, second: i64) {
        self.due.lock().unwrap_or_else(|p| p.into_inner()).remove(&second);
    }

    pub fn len(&self) -> usize {
        self.due.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a revocation treats a failing backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keep the lease and retry later on failure.
    Normal,
    /// Drop the lease whatever the backend says (`revoke-force`).
    Force,
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct LeaseCounters {
    /// Every failed revocation attempt since unseal.
    pub revocation_failures: AtomicU64,
    /// Leases revoked since unseal.
    pub revoked: AtomicU64,
    /// Leases that became irrevocable since unseal.
    pub irrevocable: AtomicU64,
}

/// The lease store and its reaper.
pub struct Expiration {
    /// The API's runtime, where backends' revocation calls and expired tokens' revocation run (see
    /// [`background_runtime`]).
    foreground: tokio::runtime::Handle,
    barrier: Arc<Barrier>,
    pub schedule: Arc<Schedule>,
    settings: LeaseSettings,
    locks: Vec<tokio::sync::Mutex<()>>,
    pub counters: LeaseCounters,
    /// Leases whose last revocation attempt failed, and whether they are irrevocable. Kept in
    /// memory for metrics: after a restart a lease shows up here again at its next retry.
    failing: Mutex<HashMap<String, bool>>,
    /// Told of every lease created and removed, for lease-count quotas.
    pub lease_counts: Arc<arcanum_quotas::LeaseCounts>,
    /// The reaper and the periodic-work ticker; aborted at seal.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Expiration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiration")
            .field("settings", &self.settings)
            .field("due_seconds", &self.schedule.len())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn storage_error(err: BarrierError) -> ApiError {
    super::barrier::api_error("lease storage", err)
}

fn encode(entry: &LeaseEntry) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(entry).map_err(|_| ApiError::internal())
}

/// One second, doubled per attempt, capped.
fn backoff(attempts: u32, max: Duration) -> i64 {
    let secs = 1u64.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u64::MAX);
    secs.min(max.as_secs().max(1)) as i64
}

impl Expiration {
    /// Opens the lease store and rebuilds the schedule from the index folder names.
    pub async fn open(barrier: Arc<Barrier>, settings: LeaseSettings) -> Result<Expiration, BarrierError> {
        let schedule = Arc::new(Schedule::default());
        {
            let seconds = barrier.list(DUE_PREFIX).await?;
            let mut due = schedule.due.lock().unwrap_or_else(|p| p.into_inner());
            due.extend(seconds.iter().filter_map(|folder| folder.trim_end_matches('/').parse::<i64>().ok()));
        }
        Ok(Expiration {
            foreground: tokio::runtime::Handle::current(),
            barrier,
            schedule,
            settings,
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            counters: LeaseCounters::default(),
            failing: Mutex::new(HashMap::new()),
            lease_counts: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn lock_for(&self, lease_id: &str) -> &tokio::sync::Mutex<()> {
        let hash =
            lease_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.locks[(hash % LOCK_STRIPES as u64) as usize]
    }

    /// Starts the reaper and the ticker for backends' periodic work (static credential
    /// rotation). Both hold only a weak reference, and sealing stops them.
    pub fn start_reaper(unsealed: &Arc<Unsealed>) {
        let weak = Arc::downgrade(unsealed);
        let schedule = Arc::clone(&unsealed.expiration.schedule);
        let concurrency = unsealed.expiration.settings.concurrency.max(1);
        let reaper = background_runtime().spawn(reap(weak.clone(), schedule, concurrency));
        let ticker = tokio::spawn(tick(weak));
        unsealed.expiration.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend([reaper, ticker]);
    }

    /// Stops the reaper, every revocation it has in flight, and the ticker (at seal).
    pub fn stop_reaper(&self) {
        for handle in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            handle.abort();
        }
    }

    pub async fn get(&self, lease_id: &str) -> Result<Option<LeaseEntry>, ApiError> {
        if lease_id.is_empty() {
            return Ok(None);
        }
        match self.barrier.get(&format!("{LEASE_PREFIX}{lease_id}")).await.map_err(storage_error)? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|err| {
                tracing::error!(error = %err, "lease entry does not parse");
                ApiError::internal()
            }),
            None => Ok(None),
        }
    }

    /// Records a lease for a response from `mount` to a request on `path`; returns the entry.
    pub async fn register(
        &self,
        path: &str,
        mount: &MountEntry,
        token_hash: Option<&str>,
        spec: LeaseSpec,
    ) -> Result<LeaseEntry, ApiError> {
        let now = unix_now();
        let max_ttl = [spec.max_ttl, mount.config.max_lease_ttl, self.settings.max_ttl]
            .into_iter()
            .find(|ttl| *ttl > 0)
            .unwrap_or(self.settings.max_ttl)
            .min(self.settings.max_ttl);
        let ttl = [spec.ttl, mount.config.default_lease_ttl, self.settings.default_ttl]
            .into_iter()
            .find(|ttl| *ttl > 0)
            .unwrap_or(self.settings.default_ttl)
            .min(max_ttl);
        let entry = LeaseEntry {
            lease_id: format!(
                "{}/{}",
                path.trim_end_matches('/'),
                arcanum_crypto::token::generate("", LEASE_RANDOM_LEN)
            ),
            path: path.trim_end_matches('/').to_owned(),
            internal: spec.internal,
            token_hash: token_hash.map(str::to_owned),
            issue_time: now,
            expire_time: now + ttl as i64,
            max_expire_time: now + max_ttl as i64,
            ttl,
            last_renewal: None,
            renewable: spec.renewable,
            revocation: None,
        };
        let mut ops = vec![
            BarrierOp::Put { path: format!("{LEASE_PREFIX}{}", entry.lease_id), value: encode(&entry)? },
            BarrierOp::Put { path: due_key(entry.expire_time, DueItem::Lease(&entry.lease_id)), value: Vec::new() },
        ];
        if let Some(hash) = &entry.token_hash {
            ops.push(BarrierOp::Put {
                path: format!("{BY_TOKEN_PREFIX}{hash}/{}", escape(&entry.lease_id)),
                value: Vec::new(),
            });
        }
        if let Some(intent) = spec.intent {
            ops.push(BarrierOp::Delete { path: format!("{}{intent}", mount.storage_prefix()) });
        }
        self.barrier.batch(ops).await.map_err(storage_error)?;
        self.schedule.add(entry.expire_time);
        self.lease_counts.created(&entry.path);
        Ok(entry)
    }

    /// `sys/leases/renew`: extends a lease by `increment` (0: its original TTL), capped by its
    /// maximum. Returns the entry and a warning when capped.
    pub async fn renew(
        &self,
        unsealed: &Unsealed,
        lease_id: &str,
        increment: u64,
    ) -> Result<(LeaseEntry, Option<String>), ApiError> {
        if lease_id.starts_with("auth/") {
            return Err(ApiError::bad_request("tokens must be renewed with auth/token/renew"));
        }
        let _guard = self.lock_for(lease_id).lock().await;
        let Some(mut entry) = self.get(lease_id).await? else {
            return Err(ApiError::bad_request("lease not found"));
        };
        let now = unix_now();
        if entry.is_expired(now) {
            return Err(ApiError::bad_request("lease expired"));
        }
        if !entry.renewable {
            return Err(ApiError::bad_request("lease is not renewable"));
        }
        let wanted = if increment == 0 { entry.ttl } else { increment };
        let remaining = u64::try_from(entry.max_expire_time - now).unwrap_or(0);
        let mut warning = None;
        let ttl = if wanted > remaining {
            warning = Some(format!(
                "TTL of \"{wanted}s\" exceeded the effective max_ttl of \"{remaining}s\"; TTL value is capped accordingly"
            ));
            remaining
        } else {
            wanted
        };
        let new_expire = now + ttl as i64;
        let (mount, _) = unsealed
            .mounts
            .resolve(&entry.path)
            .ok_or_else(|| ApiError::bad_request("the mount that issued this lease no longer exists"))?;
        bounded(mount.backend.renew_lease(LeaseRequest {
            lease_id: &entry.lease_id,
            internal: &entry.internal,
            storage: &mount.view,
            mount: &mount.entry,
            expire_time: new_expire,
        }))
        .await?;
        let old_due = entry.expire_time;
        entry.expire_time = new_expire;
        entry.last_renewal = Some(now);
        let mut ops = vec![
            BarrierOp::Put { path: format!("{LEASE_PREFIX}{}", entry.lease_id), value: encode(&entry)? },
            BarrierOp::Put { path: due_key(new_expire, DueItem::Lease(&entry.lease_id)), value: Vec::new() },
        ];
        if old_due != new_expire {
            ops.push(BarrierOp::Delete { path: due_key(old_due, DueItem::Lease(&entry.lease_id)) });
        }
        self.barrier.batch(ops).await.map_err(storage_error)?;
        self.schedule.add(new_expire);
        Ok((entry, warning))
    }

    /// `sys/leases/revoke`: revokes now. A backend failure is returned *and* the lease stays
    /// scheduled for retries. Revoking an unknown lease succeeds, as in Vault.
    pub async fn revoke(&self, unsealed: &Unsealed, lease_id: &str) -> Result<(), ApiError> {
        self.revoke_with(unsealed, lease_id, Mode::Normal).await
    }

    /// Drops a lease after asking its backend, whatever the backend answers.
    pub async fn revoke_force(&self, unsealed: &Unsealed, lease_id: &str) -> Result<(), ApiError> {
        self.revoke_with(unsealed, lease_id, Mode::Force).await
    }

    async fn revoke_with(&self, unsealed: &Unsealed, lease_id: &str, mode: Mode) -> Result<(), ApiError> {
        let _guard = self.lock_for(lease_id).lock().await;
        let Some(entry) = self.get(lease_id).await? else {
            return Ok(());
        };
        self.revoke_entry(unsealed, entry, mode).await
    }

    /// Asks the backend to revoke, then deletes the lease; or records the failure and
    /// reschedules. The caller holds the lease's lock.
    async fn revoke_entry(&self, unsealed: &Unsealed, mut entry: LeaseEntry, mode: Mode) -> Result<(), ApiError> {
        let result = match unsealed.mounts.resolve(&entry.path) {
            Some((mount, _)) => {
                // On the API's runtime, whoever asks: the reaper's thread runs at a low priority, and a
                // connection a backend opened from it would be driven from it, for API requests too.
                let (lease_id, internal, expire_time) =
                    (entry.lease_id.clone(), entry.internal.clone(), entry.expire_time);
                self.on_foreground("a backend's revocation", async move {
                    let request = LeaseRequest {
                        lease_id: &lease_id,
                        internal: &internal,
                        storage: &mount.view,
                        mount: &mount.entry,
                        expire_time,
                    };
                    bounded(mount.backend.revoke_lease(request)).await
                })
                .await
            }
            // Disabling a mount revokes its leases first and a remount is refused while it has
            // any, so this is a leftover that no backend can revoke: it stays visible until an
            // operator forces it out.
            None => Err(ApiError::bad_request("the mount that issued this lease no longer exists")),
        };
        let old_due = entry.due_time();
        match result {
            Ok(()) => {}
            Err(err) if mode == Mode::Force => {
                tracing::warn!(lease_id = %entry.lease_id, error = %err, "revoke-force: dropping the lease despite the error");
            }
            Err(err) => {
                self.counters.revocation_failures.fetch_add(1, Ordering::Relaxed);
                arcanum_metrics::global().revocation_failures.inc();
                let now = unix_now();
                let attempts = entry.revocation.as_ref().map_or(0, |state| state.attempts).saturating_add(1);
                let was_irrevocable = entry.revocation.as_ref().is_some_and(|state| state.irrevocable);
                let irrevocable = attempts >= self.settings.max_attempts;
                // Jitter, so leases that failed together (a database outage) do not retry in lockstep.
                let wait = backoff(attempts, self.settings.max_backoff);
                let next_attempt = now + wait + rand::Rng::gen_range(&mut rand::thread_rng(), 0..=wait / 4);
                let message = err.errors.join("; ");
                tracing::warn!(
                    lease_id = %entry.lease_id, attempts, irrevocable, error = %message,
                    "lease revocation failed"
                );
                entry.revocation =
                    Some(RevocationState { attempts, last_error: message.clone(), next_attempt, irrevocable });
                let mut ops =
                    vec![BarrierOp::Put { path: format!("{LEASE_PREFIX}{}", entry.lease_id), value: encode(&entry)? }];
                if let Some(due) = old_due.filter(|due| *due != next_attempt) {
                    ops.push(BarrierOp::Delete { path: due_key(due, DueItem::Lease(&entry.lease_id)) });
                }
                ops.push(BarrierOp::Put {
                    path: due_key(next_attempt, DueItem::Lease(&entry.lease_id)),
                    value: Vec::new(),
                });
                if irrevocable && !was_irrevocable {
                    self.counters.irrevocable.fetch_add(1, Ordering::Relaxed);
                }
                self.barrier.batch(ops).await.map_err(storage_error)?;
                self.schedule.add(next_attempt);
                lock(&self.failing).insert(entry.lease_id.clone(), irrevocable);
                return Err(ApiError::bad_request(format!(
                    "failed to revoke lease {}: {message} (attempt {attempts}{})",
                    entry.lease_id,
                    if irrevocable {
                        "; the lease is flagged irrevocable and retried at the longest backoff"
                    } else {
                        "; it will be retried"
                    }
                )));
            }
        }
        let mut ops = vec![BarrierOp::Delete { path: format!("{LEASE_PREFIX}{}", entry.lease_id) }];
        if let Some(due) = old_due {
            ops.push(BarrierOp::Delete { path: due_key(due, DueItem::Lease(&entry.lease_id)) });
        }
        if let Some(hash) = &entry.token_hash {
            ops.push(BarrierOp::Delete { path: format!("{BY_TOKEN_PREFIX}{hash}/{}", escape(&entry.lease_id)) });
        }
        self.barrier.batch(ops).await.map_err(storage_error)?;
        self.counters.revoked.fetch_add(1, Ordering::Relaxed);
        arcanum_metrics::global().revocations.inc();
        lock(&self.failing).remove(&entry.lease_id);
        self.lease_counts.removed(&entry.path);
        Ok(())
    }

    /// (pending, irrevocable) among the leases whose revocation has failed since unseal.
    pub fn failing_revocations(&self) -> (usize, usize) {
        let failing = lock(&self.failing);
        let irrevocable = failing.values().filter(|irrevocable| **irrevocable).count();
        (failing.len() - irrevocable, irrevocable)
    }

    /// Every lease id under `prefix` (recursive).
    pub async fn lease_ids_under(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut ids = StorageView::new(self.barrier.clone(), LEASE_PREFIX).list_recursive(prefix).await?;
        ids.sort();
        Ok(ids)
    }

    /// LIST `sys/leases/lookup/<prefix>`: one level, as stored.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        // hvac sends the prefix without its trailing slash.
        let folder = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        self.barrier.list(&format!("{LEASE_PREFIX}{folder}")).await.map_err(storage_error)
    }

    /// Revokes every lease under the path `prefix`. With `force`, backend errors are ignored.
    /// Returns the first error after trying them all.
    pub async fn revoke_prefix(&self, unsealed: &Unsealed, prefix: &str, force: bool) -> Result<(), ApiError> {
        let mode = if force { Mode::Force } else { Mode::Normal };
        // A prefix is a path: `creds/ro` must not reach `creds/rox/...` (Vault adds the slash too).
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let mut first_error = None;
        for id in self.lease_ids_under(&prefix).await? {
            if let Err(err) = self.revoke_with(unsealed, &id, mode).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Revokes the leases a token created (it is being revoked). Failures stay scheduled for
    /// retry, so they do not stop the token's revocation.
    pub async fn revoke_token_leases(&self, unsealed: &Unsealed, token_hash: &str) -> Result<(), ApiError> {
        let folder = format!("{BY_TOKEN_PREFIX}{token_hash}/");
        for key in self.barrier.list(&folder).await.map_err(storage_error)? {
            let lease_id = unescape(&key);
            let _guard = self.lock_for(&lease_id).lock().await;
            match self.get(&lease_id).await? {
                Some(entry) => {
                    if let Err(err) = self.revoke_entry(unsealed, entry, Mode::Normal).await {
                        tracing::warn!(status = err.status, "a lease of a revoked token will be retried");
                    }
                }
                None => self.barrier.delete(&format!("{folder}{key}")).await.map_err(storage_error)?,
            }
        }
        Ok(())
    }

    /// `sys/leases/tidy`: revokes leases whose token is gone and drops index keys that point
    /// at nothing. Returns how many keys or leases it cleaned.
    pub async fn tidy(&self, unsealed: &Unsealed) -> Result<usize, ApiError> {
        let mut cleaned = 0;
        for id in self.lease_ids_under("").await? {
            let Some(entry) = self.get(&id).await? else { continue };
            if let Some(hash) = &entry.token_hash {
                if unsealed.tokens.entry_by_hash(hash).await?.is_none() && entry.revocation.is_none() {
                    let _guard = self.lock_for(&id).lock().await;
                    if let Some(entry) = self.get(&id).await? {
                        let _ = self.revoke_entry(unsealed, entry, Mode::Normal).await;
                        cleaned += 1;
                    }
                }
            }
        }
        for second in self.barrier.list(DUE_PREFIX).await.map_err(storage_error)? {
            let folder = format!("{DUE_PREFIX}{second}");
            let Ok(due) = second.trim_end_matches('/').parse::<i64>() else { continue };
            for item in self.barrier.list(&folder).await.map_err(storage_error)? {
                let live = match item.split_once('.') {
                    Some(("l", escaped)) => {
                        self.get(&unescape(escaped)).await?.is_some_and(|e| e.due_time() == Some(due))
                    }
                    // Settled: a token being created has its expiry key before its entry.
                    Some(("t", hash)) => unsealed.tokens.settled_entry_by_hash(hash).await?.is_some(),
                    _ => false,
                };
                if !live {
                    self.barrier.delete(&format!("{folder}{item}")).await.map_err(storage_error)?;
                    cleaned += 1;
                }
            }
        }
        for token in self.barrier.list(BY_TOKEN_PREFIX).await.map_err(storage_error)? {
            let folder = format!("{BY_TOKEN_PREFIX}{token}");
            for key in self.barrier.list(&folder).await.map_err(storage_error)? {
                if self.get(&unescape(&key)).await?.is_none() {
                    self.barrier.delete(&format!("{folder}{key}")).await.map_err(storage_error)?;
                    cleaned += 1;
                }
            }
        }
        Ok(cleaned)
    }

    /// Counts stored leases: (all, pending revocation, irrevocable). Reads every lease.
    pub async fn count(&self) -> Result<(usize, usize, usize), ApiError> {
        let (mut all, mut pending, mut irrevocable) = (0, 0, 0);
        for id in self.lease_ids_under("").await? {
            if let Some(entry) = self.get(&id).await? {
                all += 1;
                match &entry.revocation {
                    Some(state) if state.irrevocable => irrevocable += 1,
                    Some(_) => pending += 1,
                    None => {}
                }
            }
        }
        Ok((all, pending, irrevocable))
    }

    /// Runs `task` on the API's runtime (see [`background_runtime`]) and waits for it; the task is
    /// aborted if the caller goes away (a sealed core's reaper, a client that hung up), as it would be
    /// if it ran inside the caller's own future.
    async fn on_foreground(
        &self,
        what: &str,
        task: impl std::future::Future<Output = Result<(), ApiError>> + Send + 'static,
    ) -> Result<(), ApiError> {
        AbortOnDrop(self.foreground.spawn(task)).join().await.unwrap_or_else(|err| {
            tracing::error!(error = %err, "{what} task failed");
            Err(ApiError::internal())
        })
    }

    /// The reaper's work on one index key that came due.
    async fn reap_item(&self, unsealed: &Arc<Unsealed>, second: i64, item: &str) -> Result<(), ApiError> {
        let key = format!("{DUE_PREFIX}{second:012}/{item}");
        let now = unix_now();
        match item.split_once('.') {
            Some(("t", hash)) => {
                // Settled: a creation writes this key before the entry, so a missing entry is
                // looked for again once no creation is part-way.
                let expired = match unsealed.tokens.settled_entry_by_hash(hash).await? {
                    Some(entry) => entry.expire_time.is_some_and(|expire| expire <= now),
                    // Gone already (revoked, its last use spent, or a creation that never
                    // finished): still clear what it left.
                    None => true,
                };
                if expired {
                    // On the API's runtime: it holds the token store's lock, which token uses and
                    // renewals wait on, and must not hold it from the low-priority thread.
                    let (unsealed, hash) = (Arc::clone(unsealed), hash.to_owned());
                    self.on_foreground("a token revocation", async move { unsealed.revoke_token_tree(&hash).await })
                        .await?;
                }
                self.barrier.delete(&key).await.map_err(storage_error)
            }
            Some(("l", escaped)) => {
                let lease_id = unescape(escaped);
                let _guard = self.lock_for(&lease_id).lock().await;
                match self.get(&lease_id).await? {
                    Some(entry) if entry.due_time() == Some(second) => {
                        if self.revoke_entry(unsealed, entry, Mode::Normal).await.is_ok() {
                            return Ok(());
                        }
                        // A backend failure was recorded on the lease with a new due time; if the
                        // lease still points here, recording it failed and this second must be
                        // visited again.
                        match self.get(&lease_id).await? {
                            Some(entry) if entry.due_time() == Some(second) => Err(ApiError::internal()),
                            _ => Ok(()),
                        }
                    }
                    // Renewed, already retried elsewhere, or gone: the key is stale.
                    _ => self.barrier.delete(&key).await.map_err(storage_error),
                }
            }
            _ => {
                tracing::warn!("dropping an unrecognised expiry index key");
                self.barrier.delete(&key).await.map_err(storage_error)
            }
        }
    }
}

/// How often backends get their periodic call.
const TICK: Duration = Duration::from_secs(5);

/// Calls every mount's periodic work (Vault's rollback manager does the same each minute).
async fn tick(unsealed: Weak<Unsealed>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(core) = unsealed.upgrade() else { return };
        for mount in core.mounts.all() {
            mount.backend.periodic(&mount.view, &mount.entry).await;
        }
    }
}

/// Wall-clock time until `second` starts.
fn until(second: i64) -> Duration {
    let target = UNIX_EPOCH + Duration::from_secs(u64::try_from(second).unwrap_or(0));
    target.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

/// A task on another runtime, aborted when whoever awaits it goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The niceness of the reaper's thread: revocations yield the CPU to API requests (nice 0), but at a
/// weight of about a tenth of theirs they still progress under a sustained load.
const REAPER_NICENESS: i32 = 10;

/// The reaper's own runtime: one thread at [`REAPER_NICENESS`], shared by every core in the process. The
/// revocations' CPU work (decrypting and deleting leases) runs there; backends' calls and token revocations
/// go back to the API's runtime and storage calls to its blocking pool, so that what API requests wait on
/// runs at normal priority (except a lease's stripe lock, held here while that lease is revoked).
fn background_runtime() -> tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    let started = HANDLE.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("arcanum-reaper".into()).spawn(move || {
            // Linux keeps a niceness per thread; elsewhere this may apply to the process or fail.
            if let Err(err) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), REAPER_NICENESS) {
                tracing::warn!(error = %err, "could not lower the reaper thread's priority");
            }
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    let _ = sender.send(Some(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not start the reaper's runtime");
                    let _ = sender.send(None);
                }
            }
        });
        spawned.ok().and_then(|_| receiver.recv().ok().flatten())
    });
    // Without its own thread the reaper runs on the caller's runtime: leases are still revoked, at
    // normal priority.
    match started {
        Some(handle) => handle.clone(),
        None => {
            tracing::warn!("the reaper runs on the API's runtime");
            tokio::runtime::Handle::current()
        }
    }
}

/// The reaper: visits due seconds in order and revokes what they hold, at most `concurrency`
/// at a time.
async fn reap(unsealed: Weak<Unsealed>, schedule: Arc<Schedule>, concurrency: usize) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let Some(second) = schedule.first() else {
            schedule.wake.notified().await;
            continue;
        };
        if second > unix_now() {
            tokio::select! {
                () = tokio::time::sleep(until(second)) => {}
                () = schedule.wake.notified() => {}
            }
            continue;
        }
        // Removed before listing: anything added to this second from now on re-adds it.
        schedule.remove(second);
        let Some(core) = unsealed.upgrade() else { return };
        let items = match core.barrier.list(&format!("{DUE_PREFIX}{second:012}/")).await {
            Ok(items) => items,
            Err(err) => {
                tracing::error!(error = %err, "the reaper could not read the expiry index; retrying");
                drop(core);
                tokio::time::sleep(Duration::from_secs(1)).await;
                schedule.add(second);
                continue;
            }
        };
        for item in items {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
            let core = Arc::clone(&core);
            in_flight.spawn(async move {
                if let Err(err) = core.expiration.reap_item(&core, second, &item).await {
                    tracing::warn!(status = err.status, "expiring an item failed; it stays in the index");
                    // Look again shortly rather than spin on a failing storage.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    core.expiration.schedule.add(second);
                }
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_survive_escaping() {
        for id in ["database/creds/ro/abc", "a%2Fb/c", "%", "x/%25/y"] {
            assert_eq!(unescape(&escape(id)), id);
            assert!(!escape(id).contains('/'));
        }
    }

    #[test]
    fn due_keys_sort_by_time() {
        let early = due_key(999, DueItem::Lease("a/b"));
        let late = due_key(1000, DueItem::Token("ff"));
        assert!(early < late);
        assert_eq!(late, "sys/expire/due/000000001000/t.ff");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(60);
        let waits: Vec<i64> = (1..=9).map(|attempt| backoff(attempt, max)).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(1000, max), 60);
    }
}
