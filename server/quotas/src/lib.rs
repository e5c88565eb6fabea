//! Resource quotas (Vault's `sys/quotas/*`): per-client rate limits and lease-count limits.
//!
//! The HTTP layer asks [`Quotas::admit`] before a request reaches the router, so a client
//! over its limit costs a map lookup, not a token lookup or a backend call. Rate limits are
//! token buckets per client IP address (`governor`, keyed by IP), as in Vault; the most
//! specific quota wins (a login role, then an exact or glob path, then a mount, then the
//! global quota). A lease-count quota counts the leases and tokens created under its path:
//! a request under it reserves a slot first and gives it back when it ends, so concurrent
//! requests cannot overshoot `max_leases`; creation and revocation keep the counts through
//! [`LeaseCounts`], which the expiration manager and the token store share.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as GovernorQuota};
use serde::{Deserialize, Serialize};

use arcanum_contract::backend::LogicalBackend;
use arcanum_contract::logical::{ApiError, Request};
use arcanum_contract::mount::{MountEntry, MountTableKind};
use arcanum_contract::storage::{LogicalStorage, StorageView};

/// Vault's default exemptions: a client must always be able to check health and unseal.
pub const DEFAULT_EXEMPT_PATHS: &[&str] = &[
    "sys/generate-recovery-token/attempt",
    "sys/generate-recovery-token/update",
    "sys/generate-root/attempt",
    "sys/generate-root/update",
    "sys/health",
    "sys/seal-status",
    "sys/unseal",
];

const CONFIG_KEY: &str = "config";
const RATE_PREFIX: &str = "rate-limit/";
const LEASE_PREFIX: &str = "lease-count/";
/// Idle per-IP buckets are dropped after this many checks, so scanning clients cannot grow
/// the limiter's memory without bound.
const SWEEP_EVERY: u64 = 10_000;

/// `sys/quotas/config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuotaConfig {
    pub rate_limit_exempt_paths: Vec<String>,
    pub enable_rate_limit_audit_logging: bool,
    pub enable_rate_limit_response_headers: bool,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            rate_limit_exempt_paths: DEFAULT_EXEMPT_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            enable_rate_limit_audit_logging: false,
            enable_rate_limit_response_headers: false,
        }
    }
}

/// Where a quota applies, resolved against the mount table when it was written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaPath {
    /// As stored and returned: `""`, a mount route (`secret/`), or a route plus a suffix
    /// (`secret/data/app`, `secret/data/app/*`).
    pub path: String,
    /// The mount route the path lies in (empty for the global quota).
    pub mount: String,
    /// Auth mounts only: the login role this quota is for.
    #[serde(default)]
    pub role: String,
}

impl QuotaPath {
    /// How well this quota fits `path`: `None` if it does not apply, higher is more specific.
    fn specificity(&self, path: &str, role: Option<&str>) -> Option<usize> {
        if !self.role.is_empty() {
            let is_login = path.strip_prefix(self.mount.as_str()).is_some_and(|rest| rest.starts_with("login"));
            return (is_login && role == Some(self.role.as_str())).then_some(usize::MAX);
        }
        if self.path.is_empty() {
            return Some(0);
        }
        if self.path == self.mount {
            let inside = path.starts_with(&self.mount) || self.mount.strip_suffix('/') == Some(path);
            return inside.then_some(1);
        }
        let matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path || path.strip_suffix('/') == Some(self.path.as_str()),
        };
        matches.then_some(2 + self.path.len())
    }

    /// Whether something created at `path` (a lease's request path, a token's creation path)
    /// counts towards this quota.
    pub fn covers(&self, path: &str) -> bool {
        self.role.is_empty() && self.specificity(path, None).is_some()
    }
}

/// `sys/quotas/rate-limit/:name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateLimitQuota {
    pub name: String,
    #[serde(flatten)]
    pub scope: QuotaPath,
    /// Requests allowed per `interval` (a positive float, as in Vault).
    pub rate: f64,
    pub interval_ms: u64,
    pub block_interval_ms: u64,
}

/// `sys/quotas/lease-count/:name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseCountQuota {
    pub name: String,
    #[serde(flatten)]
    pub scope: QuotaPath,
    pub max_leases: u64,
}

/// A rate-limit quota with its per-IP buckets.
#[derive(Debug)]
struct Limiter {
    quota: RateLimitQuota,
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients over the limit of a quota with a `block_interval`, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Checks so far; idle buckets are swept every [`SWEEP_EVERY`].
    checks: AtomicU64,
}

impl Limiter {
    fn new(quota: RateLimitQuota) -> Result<Limiter, ApiError> {
        // A bucket of `rate` requests that refills one request every interval/rate.
        let burst =
            NonZeroU32::new(quota.rate.floor().clamp(1.0, f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
        // One request per year at the slowest: beyond that the period overflows.
        const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);
        let period = Duration::try_from_secs_f64(quota.interval_ms as f64 / 1000.0 / quota.rate)
            .ok()
            .filter(|period| *period <= MAX_PERIOD)
            .ok_or_else(|| ApiError::bad_request("rate is too low for the interval: at least one request a year"))?;
        let governed = GovernorQuota::with_period(period)
            .ok_or_else(|| ApiError::bad_request("rate is too high for the interval"))?
            .allow_burst(burst);
        Ok(Limiter {
            quota,
            buckets: DefaultKeyedRateLimiter::keyed(governed),
            blocked: Mutex::default(),
            checks: AtomicU64::new(0),
        })
    }
}

/// A lease-count quota and its counts.
#[derive(Debug)]
pub struct LeaseCounter {
    quota: LeaseCountQuota,
    /// Leases and tokens that exist under the quota's path.
    live: AtomicI64,
    /// Requests under the path in flight, each holding a slot until it ends.
    reserved: AtomicI64,
}

impl LeaseCounter {
    fn used(&self) -> i64 {
        self.live.load(Ordering::Relaxed).max(0) + self.reserved.load(Ordering::Relaxed)
    }
}

/// The lease-count quotas' counters, shared with the expiration manager and the token store,
/// which report every lease and token they create or remove.
#[derive(Debug, Default)]
pub struct LeaseCounts {
    counters: RwLock<Arc<Vec<Arc<LeaseCounter>>>>,
}

impl LeaseCounts {
    fn snapshot(&self) -> Arc<Vec<Arc<LeaseCounter>>> {
        Arc::clone(&self.counters.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A lease or token was created at `path`.
    pub fn created(&self, path: &str) {
        self.adjust(path, 1);
    }

    /// A lease or token created at `path` is gone.
    pub fn removed(&self, path: &str) {
        self.adjust(path, -1);
    }

    fn adjust(&self, path: &str, delta: i64) {
        for counter in self.snapshot().iter().filter(|counter| counter.quota.scope.covers(path)) {
            counter.live.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// The enabled quotas of an unsealed core.
#[derive(Debug)]
pub struct Quotas {
    view: StorageView,
    config: RwLock<Arc<QuotaConfig>>,
    limiters: RwLock<Arc<Vec<Arc<Limiter>>>>,
    pub counts: Arc<LeaseCounts>,
    /// Serialises writes, so a write and its reload are one step.
    writes: tokio::sync::Mutex<()>,
}

/// A slot held under a lease-count quota while a request runs.
#[derive(Debug)]
struct Reservation(Arc<LeaseCounter>);

impl Reservation {
    fn take(counter: &Arc<LeaseCounter>) -> Reservation {
        counter.reserved.fetch_add(1, Ordering::Relaxed);
        Reservation(Arc::clone(counter))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request let through; dropping it gives back its lease-count slot.
#[derive(Debug, Default)]
pub struct Admission {
    _reservation: Option<Reservation>,
    /// Vault's `X-Ratelimit-*` headers, when `enable_rate_limit_response_headers` is set.
    pub headers: Vec<(&'static str, String)>,
}

/// A request refused by a quota: 429 with Vault's message.
#[derive(Debug)]
pub struct Rejection {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    Arc::clone(&lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn replace<T>(lock: &RwLock<Arc<T>>, value: T) {
    *lock.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
}

impl Quotas {
    /// Loads the stored quotas. Lease counts start at zero until [`Quotas::set_count`].
    pub async fn open(storage: Arc<dyn LogicalStorage>) -> Result<Quotas, ApiError> {
        let quotas = Quotas {
            view: StorageView::new(storage, "sys/quotas/"),
            config: RwLock::default(),
            limiters: RwLock::default(),
            counts: Arc::default(),
            writes: tokio::sync::Mutex::new(()),
        };
        quotas.reload().await?;
        Ok(quotas)
    }

    async fn reload(&self) -> Result<(), ApiError> {
        let config: QuotaConfig = self.view.get_json(CONFIG_KEY).await?.unwrap_or_default();
        replace(&self.config, config);
        // Unchanged quotas keep their buckets: writing one quota must not reset the others.
        let old_limiters: HashMap<String, Arc<Limiter>> =
            read(&self.limiters).iter().map(|l| (l.quota.name.clone(), Arc::clone(l))).collect();
        let mut limiters = Vec::new();
        for name in self.view.list(RATE_PREFIX).await? {
            if let Some(quota) = self.view.get_json::<RateLimitQuota>(&format!("{RATE_PREFIX}{name}")).await? {
                match old_limiters.get(&quota.name) {
                    Some(existing) if existing.quota == quota => limiters.push(Arc::clone(existing)),
                    _ => limiters.push(Arc::new(Limiter::new(quota)?)),
                }
            }
        }
        replace(&self.limiters, limiters);
        let old: HashMap<String, Arc<LeaseCounter>> =
            self.counts.snapshot().iter().map(|c| (c.quota.name.clone(), Arc::clone(c))).collect();
        let mut counters = Vec::new();
        for name in self.view.list(LEASE_PREFIX).await? {
            if let Some(quota) = self.view.get_json::<LeaseCountQuota>(&format!("{LEASE_PREFIX}{name}")).await? {
                // An unchanged quota keeps its counts; a new or changed one is counted afresh.
                let counter = match old.get(&quota.name) {
                    Some(existing) if existing.quota == quota => Arc::clone(existing),
                    _ => Arc::new(LeaseCounter { quota, live: AtomicI64::new(0), reserved: AtomicI64::new(0) }),
                };
                counters.push(counter);
            }
        }
        *self.counts.counters.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(counters);
        Ok(())
    }

    /// Lease-count quotas whose count is not known yet (new, changed, or since unseal).
    pub fn uncounted(&self) -> Vec<LeaseCountQuota> {
        self.counts.snapshot().iter().filter(|c| c.live.load(Ordering::Relaxed) == 0).map(|c| c.quota.clone()).collect()
    }

    /// Sets a lease-count quota's count from a full count of what exists under its path.
    pub fn set_count(&self, name: &str, live: i64) {
        if let Some(counter) = self.counts.snapshot().iter().find(|c| c.quota.name == name) {
            counter.live.store(live, Ordering::Relaxed);
        }
    }

    pub fn config(&self) -> Arc<QuotaConfig> {
        read(&self.config)
    }

    pub async fn set_config(&self, config: QuotaConfig) -> Result<(), ApiError> {
        let _write = self.writes.lock().await;
        self.view.put_json(CONFIG_KEY, &config).await?;
        self.reload().await
    }

    pub async fn rate_limit(&self, name: &str) -> Result<Option<RateLimitQuota>, ApiError> {
        self.view.get_json(&format!("{RATE_PREFIX}{name}")).await
    }

    pub async fn lease_count(&self, name: &str) -> Result<Option<(LeaseCountQuota, i64)>, ApiError> {
        let Some(quota) = self.view.get_json::<LeaseCountQuota>(&format!("{LEASE_PREFIX}{name}")).await? else {
            return Ok(None);
        };
        let live = self
            .counts
            .snapshot()
            .iter()
            .find(|c| c.quota.name == name)
            .map_or(0, |c| c.live.load(Ordering::Relaxed).max(0));
        Ok(Some((quota, live)))
    }

    pub async fn list(&self, kind: QuotaKind) -> Result<Vec<String>, ApiError> {
        let mut names = self.view.list(kind.prefix()).await?;
        names.sort();
        Ok(names)
    }

    pub async fn put_rate_limit(&self, quota: RateLimitQuota) -> Result<(), ApiError> {
        Limiter::new(quota.clone())?;
        let _write = self.writes.lock().await;
        self.view.put_json(&format!("{RATE_PREFIX}{}", quota.name), &quota).await?;
        self.reload().await
    }

    pub async fn put_lease_count(&self, quota: LeaseCountQuota) -> Result<(), ApiError> {
        let _write = self.writes.lock().await;
        self.view.put_json(&format!("{LEASE_PREFIX}{}", quota.name), &quota).await?;
        self.reload().await
    }

    pub async fn delete(&self, kind: QuotaKind, name: &str) -> Result<(), ApiError> {
        let _write = self.writes.lock().await;
        self.view.delete(&format!("{}{name}", kind.prefix())).await?;
        self.reload().await
    }

    /// Decides whether a request may go on. `remote` is the client's address (requests
    /// without one share one bucket); `creates_lease` says whether the request can create a
    /// lease or a token (see [`creates_lease`]) — only those take a lease-count slot.
    pub fn admit(&self, req: &Request, remote: Option<IpAddr>, creates_lease: bool) -> Result<Admission, Rejection> {
        let config = self.config();
        let mut admission = Admission::default();
        let role = req.data.get("role").and_then(|role| role.as_str());
        let exempt = config.rate_limit_exempt_paths.iter().any(|exempt| match exempt.strip_suffix('*') {
            Some(prefix) => req.path.starts_with(prefix),
            None => req.path == *exempt,
        });
        if !exempt {
            let limiters = read(&self.limiters);
            let best = limiters
                .iter()
                .filter_map(|limiter| limiter.quota.scope.specificity(&req.path, role).map(|s| (s, limiter)))
                .max_by_key(|(specificity, _)| *specificity);
            if let Some((_, limiter)) = best {
                let ip = client_key(remote);
                admission.headers = self.check_rate(limiter, ip, &req.path, &config)?;
            }
        }
        if !creates_lease {
            return Ok(admission);
        }
        let counters = self.counts.snapshot();
        let best = counters
            .iter()
            .filter_map(|counter| counter.quota.scope.specificity(&req.path, None).map(|s| (s, counter)))
            .max_by_key(|(specificity, _)| *specificity);
        if let Some((_, counter)) = best {
            // Reserve first, then look: two requests racing for the last slot cannot both win.
            let reservation = Reservation::take(counter);
            if counter.used() > counter.quota.max_leases as i64 {
                arcanum_metrics::global()
                    .quota_rejections
                    .with_label_values(&["lease-count", &counter.quota.name])
                    .inc();
                return Err(Rejection {
                    error: ApiError::new(429, format!("request path {:?}: lease count quota exceeded", req.path)),
                    headers: Vec::new(),
                });
            }
            admission._reservation = Some(reservation);
        }
        Ok(admission)
    }

    fn check_rate(
        &self,
        limiter: &Limiter,
        ip: IpAddr,
        path: &str,
        config: &QuotaConfig,
    ) -> Result<Vec<(&'static str, String)>, Rejection> {
        if limiter.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.buckets.retain_recent();
            let now = Instant::now();
            limiter.blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > now);
        }
        let limit = limiter.quota.rate.to_string();
        let headers = |retry_after: Option<Duration>| {
            let mut headers = Vec::new();
            if config.enable_rate_limit_response_headers {
                headers.push(("X-Ratelimit-Limit", limit.clone()));
                let reset = retry_after.map_or(limiter.quota.interval_ms.div_ceil(1000), |d| d.as_secs().max(1));
                headers.push(("X-Ratelimit-Reset", reset.to_string()));
                if let Some(wait) = retry_after {
                    headers.push(("X-Ratelimit-Remaining", "0".into()));
                    headers.push(("Retry-After", wait.as_secs().max(1).to_string()));
                }
            }
            headers
        };
        let reject = |wait: Duration| {
            arcanum_metrics::global().quota_rejections.with_label_values(&["rate-limit", &limiter.quota.name]).inc();
            Rejection {
                error: ApiError::new(429, format!("request path {path:?}: rate limit quota exceeded")),
                headers: headers(Some(wait)),
            }
        };
        let now = Instant::now();
        if let Some(until) = limiter.blocked.lock().unwrap_or_else(|p| p.into_inner()).get(&ip) {
            if *until > now {
                return Err(reject(*until - now));
            }
        }
        match limiter.buckets.check_key(&ip) {
            Ok(()) => Ok(headers(None)),
            Err(not_until) => {
                let mut wait = not_until.wait_time_from(DefaultClock::default().now());
                if limiter.quota.block_interval_ms > 0 {
                    wait = Duration::from_millis(limiter.quota.block_interval_ms);
                    limiter.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(ip, now + wait);
                }
                Err(reject(wait))
            }
        }
    }
}

/// Whether a request can create a lease or a token, and so needs a lease-count slot: logins,
/// `auth/token/create*`, and requests whose backend says they issue leases (database
/// credentials). Everything else (reads, writes, `sys/`, token lookups and revocations)
/// passes a full quota, as in Vault, where only requests that generate a lease are held back.
/// `mount` is the mount the path falls under, its backend and the path relative to it.
pub fn creates_lease(path: &str, mount: Option<(&MountEntry, &dyn LogicalBackend, &str)>) -> bool {
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return rest.starts_with("create");
    }
    match mount {
        Some((entry, _, rest)) if entry.table == MountTableKind::Auth => rest.starts_with("login"),
        Some((_, backend, rest)) => backend.issues_leases(rest),
        None => false,
    }
}

/// The bucket a client's address falls in: the address itself for IPv4, its /64 for IPv6
/// (one host usually holds a whole /64, and could otherwise mint buckets without end).
fn client_key(remote: Option<IpAddr>) -> IpAddr {
    match remote {
        Some(IpAddr::V6(v6)) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The two kinds of quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    RateLimit,
    LeaseCount,
}

impl QuotaKind {
    fn prefix(self) -> &'static str {
        match self {
            QuotaKind::RateLimit => RATE_PREFIX,
            QuotaKind::LeaseCount => LEASE_PREFIX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(path: &str, mount: &str, role: &str) -> QuotaPath {
        QuotaPath { path: path.into(), mount: mount.into(), role: role.into() }
    }

    #[test]
    fn the_most_specific_quota_fits_best() {
        let global = scope("", "", "");
        let mount = scope("secret/", "secret/", "");
        let exact = scope("secret/data/app", "secret/", "");
        let glob = scope("secret/data/app/*", "secret/", "");
        let role = scope("auth/kubernetes/", "auth/kubernetes/", "web");
        let path = "secret/data/app";
        assert!(exact.specificity(path, None) > mount.specificity(path, None));
        assert!(mount.specificity(path, None) > global.specificity(path, None));
        assert_eq!(glob.specificity(path, None), None, "the glob needs the trailing slash");
        assert!(glob.specificity("secret/data/app/x", None) > mount.specificity("secret/data/app/x", None));
        assert_eq!(exact.specificity("secret/data/apple", None), None);
        assert_eq!(mount.specificity("secretx/data", None), None);
        assert_eq!(role.specificity("auth/kubernetes/login", Some("web")), Some(usize::MAX));
        assert_eq!(role.specificity("auth/kubernetes/login", Some("api")), None);
        assert_eq!(role.specificity("auth/kubernetes/role/web", Some("web")), None);
        assert!(!role.covers("auth/kubernetes/login"), "role quotas count nothing");
    }

    #[test]
    fn only_logins_token_creation_and_what_a_backend_leases_take_a_lease_slot() {
        #[derive(Debug)]
        struct Leasing;

        #[async_trait::async_trait]
        impl LogicalBackend for Leasing {
            async fn handle(
                &self,
                _req: arcanum_contract::BackendRequest<'_>,
            ) -> Result<arcanum_contract::Response, ApiError> {
                Err(ApiError::not_found())
            }

            fn issues_leases(&self, path: &str) -> bool {
                path.starts_with("creds/")
            }
        }
        let secret = MountEntry::new(MountTableKind::Secret, "db/", "database", "");
        let auth = MountEntry::new(MountTableKind::Auth, "userpass/", "userpass", "");
        assert!(creates_lease("auth/token/create-orphan", None));
        assert!(!creates_lease("auth/token/lookup-self", None));
        assert!(creates_lease("db/creds/ro", Some((&secret, &Leasing, "creds/ro"))));
        assert!(!creates_lease("db/roles/ro", Some((&secret, &Leasing, "roles/ro"))));
        assert!(creates_lease("auth/userpass/login/alice", Some((&auth, &Leasing, "login/alice"))));
        assert!(!creates_lease("auth/userpass/users/alice", Some((&auth, &Leasing, "users/alice"))));
        assert!(!creates_lease("nowhere/x", None));
    }

    #[test]
    fn a_lease_count_reservation_is_given_back_when_the_request_ends() {
        let counter = Arc::new(LeaseCounter {
            quota: LeaseCountQuota { name: "q".into(), scope: scope("", "", ""), max_leases: 1 },
            live: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
        });
        let admission = Admission { _reservation: Some(Reservation::take(&counter)), headers: Vec::new() };
        assert_eq!(counter.used(), 1);
        drop(admission);
        assert_eq!(counter.used(), 0);
    }
}
