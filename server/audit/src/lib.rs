//! The audit broker: the enabled audit devices, and the rule that nothing is served
//! unaudited.
//!
//! Below the core (which opens a broker at unseal and holds it) and above the contract: it
//! stores its table through the logical storage it is handed, and sees requests, responses,
//! mount entries and tokens only in the contract's shapes.
//!
//! # Layout
//! - this module: [`AuditBroker`] — the device table (stored through the barrier at
//!   `core/audit`, each device's HMAC salt at `core/audit-salt/<uuid>` and its last chain head
//!   at `core/audit-head/<uuid>`), fan-out of each entry to every device with one deadline,
//!   per-device counters, enable/disable/hash/list, reopening files on SIGHUP;
//! - [`trail`]: [`Trail`], the per-request handle the router uses to record the request
//!   before anything is acted on and the response after;
//! - [`entry`]: Vault's JSON entry and HMAC redaction;
//! - [`file`]: the `file` device (options, path checks, its writer thread);
//! - [`chain`]: the hash-chained line format; [`verify`]: checking it offline;
//! - `trim`: keeps what a device has written out of the page cache.
//!
//! Failure rule: with at least one device enabled, an entry must reach at least one device
//! within the broker's timeout (5 s by default); otherwise the request is refused with 500.
//! A device that does not answer in time counts as failed for that entry — the server never
//! waits on audit for longer than the timeout.

pub mod chain;
pub mod entry;
pub mod file;
pub mod trail;
mod trim;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::logical::ApiError;
use arcanum_contract::storage::{LogicalStorage, StorageView, ViewOp};
use chain::ChainHead;
use entry::{Redactor, RequestRecord};
use file::{ChainStart, FileSettings, FileSink, Target};
pub use trail::{Authorized, Trail};

const TABLE_PATH: &str = "core/audit";
const SALT_PREFIX: &str = "core/audit-salt/";
const HEAD_PREFIX: &str = "core/audit-head/";
const SALT_LEN: usize = 32;

/// How long a request waits for its entry to reach the devices before they count as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One row of the audit table, as stored (no secrets: the salt is kept apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Ends in `/` (`file/`).
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    /// As given (Vault keeps option values as strings).
    pub options: BTreeMap<String, String>,
    pub local: bool,
    pub uuid: String,
}

/// An enabled device with its writer and counters.
#[derive(Debug)]
pub struct Device {
    pub entry: DeviceEntry,
    pub(crate) redactor: Redactor,
    sink: FileSink,
    /// Entries acknowledged by the device.
    writes: AtomicU64,
    /// Entries the device failed to record (error, full queue or timeout).
    failures: AtomicU64,
    /// The same two counts in `arcanum_audit_{writes,failures}_total`, looked up once.
    metric_writes: prometheus::IntCounter,
    metric_failures: prometheus::IntCounter,
}

impl Device {
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The chain head after the last line written.
    pub fn head(&self) -> ChainHead {
        self.sink.head()
    }

    /// Vault's listing object plus Arcanum's counters and chain head.
    fn info(&self) -> Value {
        let head = self.head();
        json!({
            "type": self.entry.kind,
            "description": self.entry.description,
            "options": self.entry.options,
            "local": self.entry.local,
            "path": self.entry.path,
            "writes": self.writes(),
            "failures": self.failures(),
            "chain": {
                "seq": head.last_seq(),
                "hash": head.last_hash,
                "genesis": chain::genesis_anchor(&self.entry.uuid),
            },
        })
    }
}

/// A request entry waiting for the device that its own request is enabling.
#[derive(Debug)]
enum Deferred {
    Pending(Box<RequestRecord>),
    Recorded(Arc<Device>),
}

/// The enabled audit devices of an unsealed core.
#[derive(Debug)]
pub struct AuditBroker {
    root: StorageView,
    /// Replaced whole on change, so that logging never waits on enable or disable.
    devices: RwLock<Arc<Vec<Arc<Device>>>>,
    /// Serialises enable and disable.
    change: tokio::sync::Mutex<()>,
    /// [`DEFAULT_TIMEOUT`] unless a test sets another.
    timeout_ms: AtomicU64,
    /// Request entries of `sys/audit/:path` enables that no existing device could record,
    /// by request id (see [`AuditBroker::enable`]).
    deferred: Mutex<HashMap<String, Deferred>>,
}

fn internal(what: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |err| {
        tracing::error!(error = %err, "{what} failed");
        ApiError::internal()
    }
}

impl AuditBroker {
    /// Loads the audit table and opens every device (each given the broker's timeout).
    /// A device whose file cannot be opened stays enabled and fails its entries until it can
    /// (its writer retries on every entry): audit fails closed, unseal still succeeds.
    pub async fn open(storage: Arc<dyn LogicalStorage>) -> Result<AuditBroker, ApiError> {
        Self::open_with(storage, true).await
    }

    /// [`AuditBroker::open`] for an HA standby's read-only copy of the services: its devices
    /// append to their files without touching what is already there (another node may be
    /// writing the same file, on a shared volume or host).
    pub async fn open_alongside(storage: Arc<dyn LogicalStorage>) -> Result<AuditBroker, ApiError> {
        Self::open_with(storage, false).await
    }

    async fn open_with(storage: Arc<dyn LogicalStorage>, repair_tails: bool) -> Result<AuditBroker, ApiError> {
        let broker = AuditBroker {
            root: StorageView::new(storage, ""),
            devices: RwLock::new(Arc::new(Vec::new())),
            change: tokio::sync::Mutex::new(()),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            deferred: Mutex::new(HashMap::new()),
        };
        let table: Vec<DeviceEntry> = broker.root.get_json(TABLE_PATH).await?.unwrap_or_default();
        let mut devices = Vec::with_capacity(table.len());
        for entry in table {
            let salt = match broker.root.get(&format!("{SALT_PREFIX}{}", entry.uuid)).await? {
                Some(salt) => Zeroizing::new(salt),
                None => {
                    tracing::error!(device = %entry.path, "audit salt missing; generating a new one");
                    let salt = Zeroizing::new(arcanum_crypto::token::random_bytes(SALT_LEN));
                    broker.root.put(&format!("{SALT_PREFIX}{}", entry.uuid), &salt).await?;
                    salt
                }
            };
            let recorded: Option<ChainHead> = broker.root.get_json(&format!("{HEAD_PREFIX}{}", entry.uuid)).await?;
            let settings = match FileSettings::parse(&entry.options) {
                Ok(settings) => settings,
                Err(err) => {
                    tracing::error!(device = %entry.path, error = %err, "stored audit device options do not parse");
                    return Err(ApiError::internal());
                }
            };
            let start = ChainStart { genesis: ChainHead::genesis(&entry.uuid), recorded, repair_tail: repair_tails };
            match broker.start_device(entry, &settings, salt, start).await {
                Ok((device, _)) => devices.push(device),
                Err(err) => return Err(internal("starting an audit device")(err)),
            }
        }
        *broker.devices.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(devices);
        Ok(broker)
    }

    /// The devices now enabled.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Device>>> {
        Arc::clone(&self.devices.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Changes how long entries may take (tests use a short bound).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Starts a device's writer and waits (bounded) for its file to open. The result's
    /// second part is the open error, if any.
    async fn start_device(
        &self,
        entry: DeviceEntry,
        settings: &FileSettings,
        salt: Zeroizing<Vec<u8>>,
        start: ChainStart,
    ) -> Result<(Arc<Device>, Option<String>), ApiError> {
        let (sink, opened) = FileSink::start(entry.path.clone(), settings, start)?;
        let open_error = match tokio::time::timeout(self.timeout(), opened).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(err))) => Some(err),
            Ok(Err(_)) => Some("the writer thread stopped".to_owned()),
            Err(_) => Some(format!("opening the file took longer than {:?}", self.timeout())),
        };
        if let Some(err) = &open_error {
            tracing::error!(device = %entry.path, error = %err, "audit device is not writable");
        }
        let redactor = Redactor::new(salt, settings.log_raw, settings.hmac_accessor, settings.elide_list_responses);
        let metrics = arcanum_metrics::global();
        let device = Device {
            metric_writes: metrics.audit_writes.with_label_values(&[&entry.path]),
            metric_failures: metrics.audit_failures.with_label_values(&[&entry.path]),
            entry,
            redactor,
            sink,
            writes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        Ok((Arc::new(device), open_error))
    }

    /// Sends `entries` entries, one per line, to each device (built per device: salts differ)
    /// and waits for all of them with one deadline. Returns how many recorded them.
    pub(crate) async fn log(&self, devices: &[Arc<Device>], entries: u64, build: impl Fn(&Device) -> String) -> usize {
        let timeout = self.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        // Everything is handed over first, so that queued devices write in parallel.
        let submitted = devices.iter().map(|device| (device, device.sink.submit(build(device), timeout))).collect();
        let settled = settle_all(submitted, deadline).await;
        let mut recorded = 0;
        for (device, ok) in settled {
            if ok {
                device.writes.fetch_add(entries, Ordering::Relaxed);
                device.metric_writes.inc_by(entries);
                recorded += 1;
            } else {
                device.metric_failures.inc();
                let failures = device.failures.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged at 1, 2, 4, 8, ... failures so that a dead device cannot flood the log.
                if failures.is_power_of_two() {
                    tracing::error!(device = %device.entry.path, failures, "audit device failed to record an entry");
                }
            }
        }
        recorded
    }

    /// Keeps a request entry that no device could record, for the device its request enables.
    pub(crate) fn defer(&self, record: RequestRecord) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        deferred.insert(record.id.clone(), Deferred::Pending(Box::new(record)));
    }

    /// Takes back a deferred entry: `Some(device)` when the enable recorded it there.
    pub(crate) fn take_deferred(&self, request_id: &str) -> Option<Arc<Device>> {
        let mut deferred = self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match deferred.remove(request_id) {
            Some(Deferred::Recorded(device)) => Some(device),
            Some(Deferred::Pending(_)) | None => None,
        }
    }

    /// Enables a device at `path` (normalised, ending in `/`).
    ///
    /// If no enabled device could record this very request (all of them failing), its
    /// request entry was deferred by the router; it becomes the new device's first line, and
    /// the device is enabled only if that line is written. This is how a healthy device is
    /// added while every existing one is down, without serving anything unaudited.
    pub async fn enable(&self, request: EnableRequest, request_id: &str) -> Result<(), ApiError> {
        let _change = self.change.lock().await;
        let path = request.path;
        if path == "/" || path.split('/').any(|s| s == "." || s == "..") || path.contains(['*', '+', '\0']) {
            return Err(ApiError::bad_request(format!("invalid audit path {path:?}")));
        }
        if request.kind != "file" {
            return Err(ApiError::bad_request(format!(
                "unknown audit device type {:?}: only \"file\" is supported",
                request.kind
            )));
        }
        let current = self.snapshot();
        if current.iter().any(|d| d.entry.path == path) {
            return Err(ApiError::bad_request(format!("path already in use at {path}")));
        }
        let settings = FileSettings::parse(&request.options)?;
        if let Target::File(file) = &settings.target {
            file::check_path(file)?;
        }
        // Two chains interleaved in one file could never verify.
        for other in current.iter() {
            if let Ok(theirs) = FileSettings::parse(&other.entry.options) {
                if theirs.target == settings.target && settings.target != Target::Discard {
                    return Err(ApiError::bad_request(format!(
                        "file_path is already written by audit device {}",
                        other.entry.path
                    )));
                }
            }
        }
        let entry = DeviceEntry {
            path: path.clone(),
            kind: request.kind,
            description: request.description,
            options: request.options,
            local: request.local,
            uuid: uuid::Uuid::new_v4().to_string(),
        };
        let salt = Zeroizing::new(arcanum_crypto::token::random_bytes(SALT_LEN));
        let start = ChainStart { genesis: ChainHead::genesis(&entry.uuid), recorded: None, repair_tail: true };
        let (device, open_error) = self.start_device(entry.clone(), &settings, salt.clone(), start).await?;
        if let Some(err) = open_error {
            return Err(ApiError::bad_request(format!("sys/audit: the audit device at {path} is not writable: {err}")));
        }
        let pending = {
            let mut deferred = self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match deferred.remove(request_id) {
                Some(Deferred::Pending(record)) => Some(record),
                Some(other) => {
                    deferred.insert(request_id.to_owned(), other);
                    None
                }
                None => None,
            }
        };
        if let Some(record) = pending {
            let devices = [Arc::clone(&device)];
            if self
                .log(&devices, 1, |d| entry::request_entry(&record, &entry::Prepared::of(&d.redactor, &record)))
                .await
                == 0
            {
                tracing::error!(device = %path, "the new audit device could not record the request that enables it");
                return Err(ApiError::internal());
            }
            let mut deferred = self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            deferred.insert(request_id.to_owned(), Deferred::Recorded(Arc::clone(&device)));
        }
        let mut table: Vec<DeviceEntry> = current.iter().map(|d| d.entry.clone()).collect();
        table.push(entry.clone());
        let encoded = serde_json::to_vec(&table).map_err(|_| ApiError::internal())?;
        self.root
            .batch(vec![
                ViewOp::Put { key: format!("{SALT_PREFIX}{}", entry.uuid), value: salt.to_vec() },
                ViewOp::Put { key: TABLE_PATH.into(), value: encoded },
            ])
            .await
            .map_err(internal("storing the audit table"))?;
        let mut next: Vec<Arc<Device>> = current.iter().cloned().collect();
        next.push(device);
        next.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        *self.devices.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        tracing::info!(device = %path, "audit device enabled");
        Ok(())
    }

    /// Disables a device and discards its salt (its hashes can no longer be reproduced).
    /// Idempotent, as in Vault.
    pub async fn disable(&self, path: &str) -> Result<(), ApiError> {
        let _change = self.change.lock().await;
        let current = self.snapshot();
        let Some(gone) = current.iter().find(|d| d.entry.path == path).cloned() else {
            return Ok(());
        };
        let next: Vec<Arc<Device>> = current.iter().filter(|d| !Arc::ptr_eq(d, &gone)).cloned().collect();
        let table: Vec<DeviceEntry> = next.iter().map(|d| d.entry.clone()).collect();
        let encoded = serde_json::to_vec(&table).map_err(|_| ApiError::internal())?;
        self.root
            .batch(vec![
                ViewOp::Put { key: TABLE_PATH.into(), value: encoded },
                ViewOp::Delete { key: format!("{SALT_PREFIX}{}", gone.entry.uuid) },
                ViewOp::Delete { key: format!("{HEAD_PREFIX}{}", gone.entry.uuid) },
            ])
            .await
            .map_err(internal("storing the audit table"))?;
        *self.devices.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        tracing::info!(device = %path, "audit device disabled");
        Ok(())
    }

    /// `sys/audit-hash/:path`: the HMAC a device writes for `input`.
    pub fn hash(&self, path: &str, input: &str) -> Result<String, ApiError> {
        let devices = self.snapshot();
        let device = devices
            .iter()
            .find(|d| d.entry.path == path)
            .ok_or_else(|| ApiError::bad_request(format!("unknown audit backend {path:?}")))?;
        Ok(device.redactor.hash(input))
    }

    /// `sys/audit`: path -> device info.
    pub fn list(&self) -> Map<String, Value> {
        self.snapshot().iter().map(|d| (d.entry.path.clone(), d.info())).collect()
    }

    /// SIGHUP: every device closes and reopens its file (after logrotate moved it); the chain
    /// continues in the new file. Bounded by the timeout per device.
    pub async fn reopen(&self) {
        let devices = self.snapshot();
        let deadline = tokio::time::Instant::now() + self.timeout();
        let reopening = devices.iter().map(|d| (d, d.sink.reopen())).collect();
        let settled = settle_all(reopening, deadline).await;
        for (device, ok) in settled {
            if ok {
                tracing::info!(device = %device.entry.path, "audit device reopened its file");
            } else {
                tracing::error!(device = %device.entry.path, "audit device could not reopen its file");
            }
        }
        self.persist_heads().await;
    }

    /// Records each device's chain head behind the barrier (seal, shutdown, SIGHUP), so that
    /// a file emptied or shortened while the server was down shows a gap at the next start.
    pub async fn persist_heads(&self) {
        for device in self.snapshot().iter() {
            let head = device.head();
            if let Err(err) = self.root.put_json(&format!("{HEAD_PREFIX}{}", device.entry.uuid), &head).await {
                tracing::warn!(device = %device.entry.path, error = %err, "could not record the audit chain head");
            }
        }
    }
}

/// Waits for what was handed to each device, all together: a request waiting on one device
/// may be handed the leadership of another, which it must take up without waiting for the
/// first. One device, the usual case, needs no joining.
async fn settle_all(
    mut handed: Vec<(&Arc<Device>, file::Submitted)>,
    deadline: tokio::time::Instant,
) -> Vec<(&Arc<Device>, bool)> {
    if handed.len() == 1 {
        let (device, only) = handed.remove(0);
        return vec![(device, device.sink.settle(only, deadline).await)];
    }
    futures_util::future::join_all(
        handed
            .into_iter()
            .map(|(device, submitted)| async move { (device, device.sink.settle(submitted, deadline).await) }),
    )
    .await
}

/// What `sys/audit/:path` asks for.
#[derive(Debug, Clone)]
pub struct EnableRequest {
    pub path: String,
    pub kind: String,
    pub description: String,
    pub options: BTreeMap<String, String>,
    pub local: bool,
}

#[cfg(test)]
mod tests;
