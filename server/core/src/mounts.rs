//! The mount tables: which engine serves which path prefix, each with its own storage view.
//!
//! Two tables, as in Vault: secret engines (`sys/mounts`, paths like `secret/`) and
//! credential backends (`sys/auth`, served under `auth/<path>`). Both are stored through
//! the barrier (`core/mounts`, `core/auth`). The in-memory table is an immutable snapshot
//! swapped whole on change, so request routing never waits on a mount operation.

use std::sync::{Arc, RwLock};

use arcanum_contract::backend::{BackendRequest, Catalog, LogicalBackend};
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, Response};
use arcanum_contract::mount::{MountConfig, MountEntry, MountTableKind};
use arcanum_contract::storage::{StorageView, ViewOp};
use serde_json::{Map, Value};

use super::barrier::Barrier;

const SECRET_TABLE_PATH: &str = "core/mounts";
const AUTH_TABLE_PATH: &str = "core/auth";

/// A mount with its live backend and storage view.
#[derive(Debug)]
pub struct Mount {
    /// `entry.route_prefix()`, computed once: routing reads it on every request.
    pub route: String,
    pub entry: Arc<MountEntry>,
    pub backend: Arc<dyn LogicalBackend>,
    pub view: StorageView,
    /// Its requests' series, labelled with `route`.
    pub metrics: Arc<arcanum_metrics::RouteMetrics>,
}

impl Mount {
    fn new(entry: MountEntry, backend: Arc<dyn LogicalBackend>, view: StorageView) -> Mount {
        let route = entry.route_prefix();
        let metrics = Arc::new(arcanum_metrics::RouteMetrics::new(route.clone()));
        Mount { route, entry: Arc::new(entry), backend, view, metrics }
    }
}

/// Both mount tables of an unsealed core.
#[derive(Debug)]
pub struct MountTable {
    barrier: Arc<Barrier>,
    /// The engine types mounts may have; every backend is built through it.
    catalog: Arc<Catalog>,
    /// Sorted by route prefix; replaced whole on every change.
    mounts: RwLock<Arc<Vec<Arc<Mount>>>>,
    /// Serialises enable/disable/tune/remount so two changes never race on the stored table.
    change: tokio::sync::Mutex<()>,
}

/// Paths no mount may take, as in Vault.
const RESERVED: [&str; 4] = ["sys/", "auth/", "cubbyhole/", "identity/"];

impl MountTable {
    /// Loads both tables, writing the defaults on first unseal.
    pub async fn load(barrier: Arc<Barrier>, catalog: Arc<Catalog>) -> Result<MountTable, ApiError> {
        let root = StorageView::new(barrier.clone(), "");
        let mut entries: Vec<MountEntry> = Vec::new();
        for (path, table) in [(SECRET_TABLE_PATH, MountTableKind::Secret), (AUTH_TABLE_PATH, MountTableKind::Auth)] {
            match root.get_json::<Vec<MountEntry>>(path).await? {
                Some(stored) => entries.extend(stored),
                None => {
                    let defaults = default_entries(table);
                    root.put_json(path, &defaults).await?;
                    entries.extend(defaults);
                }
            }
        }
        let mut mounts = Vec::with_capacity(entries.len());
        for entry in entries {
            mounts.push(Arc::new(instantiate(&barrier, &catalog, entry)?));
        }
        mounts.sort_by_key(|m| m.entry.route_prefix());
        Ok(MountTable { barrier, catalog, mounts: RwLock::new(Arc::new(mounts)), change: tokio::sync::Mutex::new(()) })
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Mount>>> {
        Arc::clone(&self.mounts.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The mount serving `path` (longest prefix) and the path relative to it.
    pub fn resolve(&self, path: &str) -> Option<(Arc<Mount>, String)> {
        let mounts = self.snapshot();
        mounts
            .iter()
            .filter_map(|mount| {
                let prefix = mount.route.as_str();
                if let Some(rest) = path.strip_prefix(prefix) {
                    Some((prefix.len(), mount, rest.to_owned()))
                } else if prefix.strip_suffix('/') == Some(path) {
                    Some((prefix.len(), mount, String::new()))
                } else {
                    None
                }
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, mount, rest)| (Arc::clone(mount), rest))
    }

    /// Every mount, both tables.
    pub fn all(&self) -> Vec<Arc<Mount>> {
        self.snapshot().iter().cloned().collect()
    }

    /// Every mount of one table.
    pub fn entries(&self, table: MountTableKind) -> Vec<MountEntry> {
        self.snapshot().iter().filter(|m| m.entry.table == table).map(|m| MountEntry::clone(&m.entry)).collect()
    }

    pub fn get(&self, table: MountTableKind, path: &str) -> Option<Arc<Mount>> {
        self.snapshot().iter().find(|m| m.entry.table == table && m.entry.path == path).cloned()
    }

    /// Enables a new mount. The path must not overlap an existing one in either direction.
    pub async fn enable(&self, entry: MountEntry) -> Result<(), ApiError> {
        let _change = self.change.lock().await;
        validate_path(&entry)?;
        let prefix = entry.route_prefix();
        for existing in self.snapshot().iter() {
            let other = existing.entry.route_prefix();
            if prefix.starts_with(&other) || other.starts_with(&prefix) {
                return Err(ApiError::bad_request(format!("path is already in use at {other}")));
            }
        }
        let mount = Arc::new(instantiate(&self.barrier, &self.catalog, entry)?);
        let mut next: Vec<Arc<Mount>> = self.snapshot().iter().cloned().collect();
        next.push(mount);
        self.commit(next).await
    }

    /// Disables a mount and deletes all of its data.
    pub async fn disable(&self, table: MountTableKind, path: &str) -> Result<Option<MountEntry>, ApiError> {
        let _change = self.change.lock().await;
        let Some(mount) = self.get(table, path) else {
            return Ok(None);
        };
        if !removable(&mount.entry) {
            return Err(ApiError::bad_request(format!("cannot unmount {:?}", mount.entry.route_prefix())));
        }
        let next: Vec<Arc<Mount>> = self.snapshot().iter().filter(|m| !Arc::ptr_eq(m, &mount)).cloned().collect();
        // Table first: once it is gone from the table nothing can reach the data, so a crash
        // part-way through the deletion leaves only unreachable records, never a half mount.
        self.commit(next).await?;
        mount.view.clear().await?;
        Ok(Some(MountEntry::clone(&mount.entry)))
    }

    /// Replaces an entry (tune); the backend is rebuilt when its options change.
    pub async fn update(&self, entry: MountEntry) -> Result<(), ApiError> {
        let _change = self.change.lock().await;
        let mut next: Vec<Arc<Mount>> = self.snapshot().iter().cloned().collect();
        let Some(slot) = next.iter_mut().find(|m| m.entry.table == entry.table && m.entry.path == entry.path) else {
            return Err(ApiError::bad_request(format!("no mount at {}", entry.route_prefix())));
        };
        *slot = Arc::new(instantiate(&self.barrier, &self.catalog, entry)?);
        self.commit(next).await
    }

    /// Moves a mount to a new path; its data (keyed by UUID) stays where it is.
    pub async fn remount(&self, table: MountTableKind, from: &str, to: &str) -> Result<(), ApiError> {
        let _change = self.change.lock().await;
        let Some(mount) = self.get(table, from) else {
            return Err(ApiError::bad_request(format!("no mount at {from}")));
        };
        if !removable(&mount.entry) {
            return Err(ApiError::bad_request(format!("cannot remount {from:?}")));
        }
        let mut entry = MountEntry::clone(&mount.entry);
        entry.path = to.to_owned();
        validate_path(&entry)?;
        let prefix = entry.route_prefix();
        for existing in self.snapshot().iter().filter(|m| !Arc::ptr_eq(m, &mount)) {
            let other = existing.entry.route_prefix();
            if prefix.starts_with(&other) || other.starts_with(&prefix) {
                return Err(ApiError::bad_request(format!("path is already in use at {other}")));
            }
        }
        let mut next: Vec<Arc<Mount>> = self.snapshot().iter().filter(|m| !Arc::ptr_eq(m, &mount)).cloned().collect();
        next.push(Arc::new(Mount::new(entry, Arc::clone(&mount.backend), mount.view.clone())));
        self.commit(next).await
    }

    /// Persists both tables atomically, then publishes the new snapshot.
    async fn commit(&self, mut next: Vec<Arc<Mount>>) -> Result<(), ApiError> {
        next.sort_by_key(|m| m.entry.route_prefix());
        let table = |kind| next.iter().filter(|m| m.entry.table == kind).map(|m| &*m.entry).collect::<Vec<_>>();
        let encode = |entries: Vec<&MountEntry>| serde_json::to_vec(&entries).map_err(|_| ApiError::internal());
        let root = StorageView::new(self.barrier.clone(), "");
        root.batch(vec![
            ViewOp::Put { key: SECRET_TABLE_PATH.into(), value: encode(table(MountTableKind::Secret))? },
            ViewOp::Put { key: AUTH_TABLE_PATH.into(), value: encode(table(MountTableKind::Auth))? },
        ])
        .await?;
        *self.mounts.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(())
    }
}

fn instantiate(barrier: &Arc<Barrier>, catalog: &Catalog, entry: MountEntry) -> Result<Mount, ApiError> {
    let backend = match (entry.table, entry.kind.as_str()) {
        // Served by the core itself (sys/, the token store); the mount exists for listing.
        (MountTableKind::Secret, "system") | (MountTableKind::Auth, "token") => Arc::new(CoreServed),
        _ => catalog.build(&entry)?,
    };
    let view = StorageView::new(barrier.clone(), entry.storage_prefix());
    Ok(Mount::new(entry, backend, view))
}

/// The placeholder for mounts the router serves without a backend (`sys/`, `auth/token/`).
#[derive(Debug)]
struct CoreServed;

#[async_trait::async_trait]
impl LogicalBackend for CoreServed {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        Err(ApiError::no_handler(&format!("{}{}", req.mount.route_prefix(), req.path)))
    }
}

/// The built-in mounts that cannot be disabled or moved.
fn removable(entry: &MountEntry) -> bool {
    !matches!(
        (entry.table, entry.kind.as_str()),
        (MountTableKind::Secret, "system" | "cubbyhole" | "identity") | (MountTableKind::Auth, "token")
    )
}

fn validate_path(entry: &MountEntry) -> Result<(), ApiError> {
    let path = entry.path.as_str();
    if path.is_empty() || path == "/" {
        return Err(ApiError::bad_request("a mount path is required"));
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") || path.contains(['*', '+', '\0']) {
        return Err(ApiError::bad_request(format!("invalid mount path {path:?}")));
    }
    if entry.table == MountTableKind::Secret {
        if let Some(reserved) = RESERVED.iter().find(|r| path.starts_with(**r)) {
            return Err(ApiError::bad_request(format!("cannot mount under reserved path {reserved:?}")));
        }
    }
    Ok(())
}

fn default_entries(table: MountTableKind) -> Vec<MountEntry> {
    match table {
        MountTableKind::Secret => {
            let mut cubbyhole = MountEntry::new(table, "cubbyhole/", "cubbyhole", "per-token private secret storage");
            cubbyhole.local = true;
            vec![
                cubbyhole,
                MountEntry::new(table, "sys/", "system", "system endpoints used for control, policy and debugging"),
            ]
        }
        MountTableKind::Auth => vec![MountEntry::new(table, "token/", "token", "token based credentials")],
    }
}

/// Normalises a user-given mount path: no leading `/`, one trailing `/`.
pub fn normalize_mount_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    format!("{trimmed}/")
}

/// Parses a mount `config` object from a request (enable or tune).
pub fn apply_config(
    table: MountTableKind,
    config: &mut MountConfig,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    for (key, value) in input {
        // Null and "" mean "leave as it is": the Go client sends `"default_lease_ttl": ""` and
        // `"options": null` on every tune. An empty `listing_visibility` is Vault's default,
        // so there it resets.
        if value.is_null() || (value.as_str() == Some("") && key != "listing_visibility") {
            continue;
        }
        let list = |value: &Value| Ok::<_, ApiError>(fields::string_list(Some(value), key)?.unwrap_or_default());
        let ttl = |value: &Value| -> Result<u64, ApiError> {
            if value.as_str() == Some("system") {
                return Ok(0);
            }
            Ok(fields::duration_secs(Some(value), key)?.unwrap_or(0))
        };
        match key.as_str() {
            "default_lease_ttl" => config.default_lease_ttl = ttl(value)?,
            "max_lease_ttl" => config.max_lease_ttl = ttl(value)?,
            "force_no_cache" => config.force_no_cache = fields::boolean(Some(value), key)?.unwrap_or(false),
            "audit_non_hmac_request_keys" => config.audit_non_hmac_request_keys = list(value)?,
            "audit_non_hmac_response_keys" => config.audit_non_hmac_response_keys = list(value)?,
            "passthrough_request_headers" => config.passthrough_request_headers = list(value)?,
            "allowed_response_headers" => config.allowed_response_headers = list(value)?,
            "listing_visibility" => {
                let visibility = value.as_str().unwrap_or_default();
                if !matches!(visibility, "" | "unauth" | "hidden") {
                    return Err(ApiError::bad_request(format!(
                        "invalid listing_visibility {visibility:?}: expected \"unauth\" or \"hidden\""
                    )));
                }
                config.listing_visibility = visibility.to_owned();
            }
            "token_type" => {
                if table != MountTableKind::Auth {
                    return Err(ApiError::bad_request("'token_type' can only be modified on auth mounts"));
                }
                match value.as_str() {
                    Some(kind @ ("default-service" | "service")) => config.token_type = Some(kind.to_owned()),
                    Some("default-batch" | "batch") => {
                        return Err(ApiError::bad_request(
                            "token_type \"batch\" is not supported: Arcanum issues service tokens only",
                        ))
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid value for 'token_type': expected \"default-service\" or \"service\"",
                        ))
                    }
                }
            }
            "user_lockout_config" => {
                if table != MountTableKind::Auth {
                    return Err(ApiError::bad_request("user_lockout_config can only be set on auth mounts"));
                }
                let Some(settings) = value.as_object() else {
                    return Err(ApiError::bad_request("user_lockout_config must be an object"));
                };
                for (name, value) in settings {
                    if value.is_null() || value.as_str() == Some("") {
                        continue;
                    }
                    let lockout = &mut config.user_lockout;
                    match name.as_str() {
                        "lockout_threshold" => match fields::non_negative(Some(value), name)? {
                            Some(0) | None => {
                                return Err(ApiError::bad_request("lockout_threshold must be at least 1"))
                            }
                            threshold => lockout.threshold = threshold,
                        },
                        "lockout_duration" => lockout.duration = fields::duration_secs(Some(value), name)?,
                        "lockout_counter_reset" => lockout.counter_reset = fields::duration_secs(Some(value), name)?,
                        "lockout_disable" => lockout.disable = fields::boolean(Some(value), name)?,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "unknown user_lockout_config key {other:?}: expected lockout_threshold, \
                                 lockout_duration, lockout_counter_reset or lockout_disable"
                            )))
                        }
                    }
                }
            }
            "plugin_version" | "description" | "options" | "plugin_name" => {}
            other => return Err(ApiError::bad_request(format!("unknown mount config key {other:?}"))),
        }
    }
    if config.max_lease_ttl != 0 && config.default_lease_ttl > config.max_lease_ttl {
        return Err(ApiError::bad_request("default_lease_ttl cannot be greater than max_lease_ttl"));
    }
    Ok(())
}
