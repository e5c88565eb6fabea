//! KV version 2: versioned secrets with metadata, soft delete, undelete, destroy,
//! check-and-set and per-key limits.
//!
//! Storage layout under the mount's view:
//! - `config`: the engine's defaults (`max_versions`, `cas_required`, `delete_version_after`);
//! - `metadata/<path>`: the key's metadata, including every kept version's bookkeeping
//!   (kept under the key's own path so that LIST on `metadata/` needs no index);
//! - `versions/<sha256(path)>/<n>`: the data of version `n`.
//!
//! The metadata record is each key's commit point: a new version's data is written before
//! the metadata that references it, and data is deleted only after the metadata stops
//! referencing it, so a crash leaves at worst unreferenced data, never a dangling version.
//! Writes to the same key are serialised by a striped lock so that check-and-set holds
//! under concurrency, while writes to different keys proceed in parallel.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{check_key, object_field};
use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Response, StoredField};
use arcanum_contract::storage::{StorageView, ViewOp};

/// Versions kept when neither the key nor the engine says otherwise.
const DEFAULT_MAX_VERSIONS: u64 = 10;
const LOCK_STRIPES: usize = 64;
const CUSTOM_METADATA_MAX_KEYS: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct EngineConfig {
    max_versions: u64,
    cas_required: bool,
    /// Seconds; 0 = never.
    delete_version_after: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct VersionMeta {
    created_time: String,
    deletion_time: String,
    destroyed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct KeyMeta {
    cas_required: bool,
    created_time: String,
    current_version: u64,
    delete_version_after: u64,
    max_versions: u64,
    oldest_version: u64,
    updated_time: String,
    custom_metadata: Option<BTreeMap<String, String>>,
    versions: BTreeMap<u64, VersionMeta>,
}

pub struct KvV2 {
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Parsed metadata records by key (`None`: the key has none), each with the storage's
    /// change stamp taken before it was read (see
    /// [`ChangeStamps`](arcanum_contract::storage::ChangeStamps)): a lookup that finds the
    /// stamp unchanged skips the storage read, the decryption and the parse. Reads, existence
    /// checks and data writes use it (a data write under the key's lock, after the existence
    /// check of its own request filled it); the other writes read storage. Metadata only,
    /// never a secret's data.
    parsed: std::sync::RwLock<std::collections::HashMap<String, Stamped<Option<Arc<KeptMeta>>>>>,
    /// The engine's parsed `config` record (the defaults if there is none), with the change
    /// stamp taken before it was read: every write consults it, and a storage read of a record
    /// that is usually absent cost a sled lookup per write.
    config: std::sync::Mutex<Option<Stamped<EngineConfig>>>,
}

/// A record derived from storage, with the change stamp taken before it was read.
type Stamped<T> = (u64, T);

/// A key's parsed metadata, with the storage prefix of its versions (a SHA-256 of the key) and
/// the current version's metadata as the JSON a read answers with: both work that every data
/// read would otherwise do again.
struct KeptMeta {
    meta: KeyMeta,
    versions_prefix: String,
    /// Made by the first read of the current version (writes fill this cache too, and never read it).
    current_version_json: std::sync::OnceLock<Box<RawValue>>,
}

impl KeptMeta {
    fn new(key: &str, meta: KeyMeta) -> Arc<KeptMeta> {
        Arc::new(KeptMeta { meta, versions_prefix: versions_prefix(key), current_version_json: Default::default() })
    }

    /// The `metadata` of a read of `version`.
    fn version_metadata(&self, version: u64) -> StoredField {
        let render = || {
            serde_json::value::to_raw_value(&self.meta.version_json(version))
                .unwrap_or_else(|_| unreachable!("JSON values always serialise"))
        };
        let json = if version == self.meta.current_version {
            self.current_version_json.get_or_init(render).clone()
        } else {
            render()
        };
        StoredField::from_raw("metadata", json)
    }
}

/// Counts only: the kept metadata (key names, custom metadata) has no place in a log line.
impl std::fmt::Debug for KvV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.parsed.read().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        f.debug_struct("KvV2").field("lock_stripes", &self.stripes.len()).field("kept_metadata", &kept).finish()
    }
}

/// Parsed metadata records kept per mount; beyond it the cache starts over.
const PARSED_CAPACITY: usize = 16 * 1024;

impl Default for KvV2 {
    fn default() -> Self {
        Self::new()
    }
}

impl KvV2 {
    pub fn new() -> KvV2 {
        KvV2 {
            stripes: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            parsed: Default::default(),
            config: Default::default(),
        }
    }

    fn stripe(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let digest = Sha256::digest(key.as_bytes());
        &self.stripes[usize::from(digest[0]) % LOCK_STRIPES]
    }
}

fn now_string() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

fn format_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Go's duration formatting for whole seconds, as Vault returns `delete_version_after`.
fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn versions_prefix(key: &str) -> String {
    let mut digest = [0u8; 64];
    // A 32-byte digest always fits 64 hex digits.
    let _ = hex::encode_to_slice(Sha256::digest(key.as_bytes()), &mut digest);
    let mut prefix = String::with_capacity("versions/".len() + digest.len() + 1);
    prefix.push_str("versions/");
    prefix.extend(digest.iter().map(|&b| char::from(b)));
    prefix.push('/');
    prefix
}

impl VersionMeta {
    fn is_deleted(&self, now: time::OffsetDateTime) -> bool {
        !self.deletion_time.is_empty() && parse_time(&self.deletion_time).is_some_and(|t| t <= now)
    }
}

impl KeyMeta {
    fn version_json(&self, version: u64) -> Value {
        let meta = self.versions.get(&version).cloned().unwrap_or_default();
        json!({
            "created_time": meta.created_time,
            "custom_metadata": self.custom_metadata,
            "deletion_time": meta.deletion_time,
            "destroyed": meta.destroyed,
            "version": version,
        })
    }

    fn full_json(&self) -> Map<String, Value> {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({ "created_time": v.created_time, "deletion_time": v.deletion_time, "destroyed": v.destroyed }),
                )
            })
            .collect();
        let mut data = Map::new();
        data.insert("cas_required".into(), json!(self.cas_required));
        data.insert("created_time".into(), json!(self.created_time));
        data.insert("current_version".into(), json!(self.current_version));
        data.insert("custom_metadata".into(), json!(self.custom_metadata));
        data.insert("delete_version_after".into(), json!(go_duration(self.delete_version_after)));
        data.insert("max_versions".into(), json!(self.max_versions));
        data.insert("oldest_version".into(), json!(self.oldest_version));
        data.insert("updated_time".into(), json!(self.updated_time));
        data.insert("versions".into(), Value::Object(versions));
        data
    }
}

/// Writes `value` as the next version of `key` (used by the v1 -> v2 upgrade).
pub(super) async fn import_version(storage: &StorageView, key: &str, value: &Value) -> Result<(), ApiError> {
    let config = KvV2::config(storage).await?;
    let meta = KvV2::meta(storage, key).await?.unwrap_or_default();
    KvV2::add_version(storage, key, &config, meta, value).await.map(|_| ())
}

/// Splits `data/foo/bar` into (`data`, `foo/bar`).
fn split(path: &str) -> (&str, &str) {
    path.split_once('/').unwrap_or((path, ""))
}

fn u64_field(req: &BackendRequest<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    arcanum_contract::fields::non_negative(req.field(name), name)
}

fn bool_field(req: &BackendRequest<'_>, name: &str) -> Result<Option<bool>, ApiError> {
    arcanum_contract::fields::boolean(req.field(name), name)
}

fn duration_field(req: &BackendRequest<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    arcanum_contract::fields::duration_secs(req.field(name), name)
}

fn versions_field(req: &BackendRequest<'_>) -> Result<Vec<u64>, ApiError> {
    let versions: Vec<u64> = match req.field("versions") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| ApiError::bad_request("versions must be a list of integers"))?,
        Some(Value::String(s)) => s
            .split(',')
            .map(|v| v.trim().parse().ok())
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| ApiError::bad_request("versions must be a list of integers"))?,
        Some(Value::Number(n)) => vec![n.as_u64().ok_or_else(|| ApiError::bad_request("versions must be integers"))?],
        _ => Vec::new(),
    };
    if versions.is_empty() {
        return Err(ApiError::bad_request("no version number provided"));
    }
    Ok(versions)
}

fn custom_metadata_field(req: &BackendRequest<'_>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(map) = object_field(req.field("custom_metadata"), "custom_metadata")? else { return Ok(None) };
    if map.len() > CUSTOM_METADATA_MAX_KEYS {
        return Err(ApiError::bad_request(format!(
            "custom_metadata may have at most {CUSTOM_METADATA_MAX_KEYS} keys, got {}",
            map.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let Value::String(value) = value else {
            return Err(ApiError::bad_request(format!("custom_metadata value for {key:?} must be a string")));
        };
        if key.is_empty() || key.len() > 128 {
            return Err(ApiError::bad_request("custom_metadata keys must be 1 to 128 bytes long"));
        }
        if value.is_empty() || value.len() > 512 {
            return Err(ApiError::bad_request(format!(
                "custom_metadata value for {key:?} must be 1 to 512 bytes long"
            )));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(Some(out))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn subkeys(value: &Value, depth: u64, level: u64) -> Value {
    match value {
        Value::Object(map) if depth == 0 || level < depth => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), subkeys(v, depth, level + 1))).collect())
        }
        _ => Value::Null,
    }
}

impl KvV2 {
    async fn config(storage: &StorageView) -> Result<EngineConfig, ApiError> {
        Ok(storage.get_json("config").await?.unwrap_or_default())
    }

    /// [`KvV2::config`] for data writes: the kept record while its change stamp holds.
    async fn kept_config(&self, storage: &StorageView) -> Result<EngineConfig, ApiError> {
        let kept = || self.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stamp) = storage.change_stamp("", "config") else { return Self::config(storage).await };
        if let Some((at, config)) = kept().as_ref() {
            if *at == stamp {
                return Ok(config.clone());
            }
        }
        let config = Self::config(storage).await?;
        *kept() = Some((stamp, config.clone()));
        Ok(config)
    }

    async fn meta(storage: &StorageView, key: &str) -> Result<Option<KeyMeta>, ApiError> {
        storage.get_json(&format!("metadata/{key}")).await
    }

    /// [`KvV2::meta`], from `parsed` while the record's change stamp holds. An absent record
    /// is kept too: a write of a new key is preceded by its existence check, and its own
    /// lookup then costs no second storage read.
    async fn read_meta(&self, storage: &StorageView, key: &str) -> Result<Option<Arc<KeptMeta>>, ApiError> {
        let Some(stamp) = storage.change_stamp("metadata/", key) else {
            return Ok(Self::meta(storage, key).await?.map(|meta| KeptMeta::new(key, meta)));
        };
        if let Some((at, meta)) = self.parsed.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key) {
            if *at == stamp {
                return Ok(meta.clone());
            }
        }
        let meta = Self::meta(storage, key).await?.map(|meta| KeptMeta::new(key, meta));
        let mut cache = self.parsed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= PARSED_CAPACITY {
            cache.clear();
        }
        cache.insert(key.to_owned(), (stamp, meta.clone()));
        Ok(meta)
    }

    /// The metadata a data write builds on, owned: [`KvV2::read_meta`]'s. Called under the
    /// key's lock, so no write of this engine to the key is in flight, and the stamp tells of
    /// any other (another engine instance, `sys/raw`, a mount's removal).
    async fn write_meta(&self, storage: &StorageView, key: &str) -> Result<Option<KeyMeta>, ApiError> {
        Ok(self.read_meta(storage, key).await?.map(|kept| kept.meta.clone()))
    }

    async fn read_data(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let kept = self.read_meta(req.storage, key).await?.ok_or_else(ApiError::not_found)?;
        let meta = &kept.meta;
        let version = match u64_field(req, "version")? {
            None | Some(0) => meta.current_version,
            Some(n) => n,
        };
        let Some(version_meta) = meta.versions.get(&version) else { return Err(ApiError::not_found()) };
        if version_meta.destroyed || version_meta.is_deleted(time::OffsetDateTime::now_utc()) {
            // Vault answers 404 *with* the version metadata, which clients print.
            let mut data = Map::new();
            data.insert("data".into(), Value::Null);
            data.insert("metadata".into(), meta.version_json(version));
            return Ok(Response::Logical(Box::new(LogicalResponse {
                status: 404,
                data: Some(data),
                ..Default::default()
            })));
        }
        let key = format!("{}{version}", kept.versions_prefix);
        let stored = req.storage.get(&key).await?.ok_or_else(ApiError::not_found)?;
        // Rendered as it was stored (it is what serde_json wrote); the audit parses it if it needs to.
        let stored = StoredField::new("data", stored).map_err(|err| {
            tracing::error!(mount_storage = %req.storage.prefix(), error = %err, "a stored KV v2 version does not parse");
            ApiError::internal()
        })?;
        Ok(Response::Logical(Box::new(LogicalResponse {
            data: Some(Map::new()),
            stored_data: vec![stored, kept.version_metadata(version)],
            ..Default::default()
        })))
    }

    fn check_cas(req: &BackendRequest<'_>, config: &EngineConfig, meta: &KeyMeta) -> Result<(), ApiError> {
        let options = object_field(req.field("options"), "options")?;
        // Vault decodes `cas` weakly into an int: numbers and numeric strings; a negative one
        // can never match a version.
        let cas = match options.and_then(|o| o.get("cas")).filter(|v| !v.is_null()) {
            None => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| ApiError::bad_request("error parsing check-and-set parameter"))?,
            ),
        };
        match cas {
            None if config.cas_required || meta.cas_required => {
                Err(ApiError::bad_request("check-and-set parameter required for this call"))
            }
            Some(cas) if u64::try_from(cas).ok() != Some(meta.current_version) => {
                Err(ApiError::bad_request("check-and-set parameter did not match the current version"))
            }
            _ => Ok(()),
        }
    }

    /// Adds a version with `value`; returns the new version's metadata.
    async fn add_version(
        storage: &StorageView,
        key: &str,
        config: &EngineConfig,
        mut meta: KeyMeta,
        value: &Value,
    ) -> Result<Value, ApiError> {
        let now = time::OffsetDateTime::now_utc();
        let now_text = format_time(now);
        if meta.created_time.is_empty() {
            meta.created_time = now_text.clone();
        }
        meta.updated_time = now_text.clone();
        meta.current_version += 1;
        let version = meta.current_version;
        let delete_after = match (meta.delete_version_after, config.delete_version_after) {
            (0, engine) => engine,
            (key_value, 0) => key_value,
            (key_value, engine) => key_value.min(engine),
        };
        let deletion_time = if delete_after > 0 {
            format_time(now + time::Duration::seconds(delete_after as i64))
        } else {
            String::new()
        };
        meta.versions.insert(version, VersionMeta { created_time: now_text, deletion_time, destroyed: false });
        let max_versions = match (meta.max_versions, config.max_versions) {
            (0, 0) => DEFAULT_MAX_VERSIONS,
            (0, engine) => engine,
            (key_value, _) => key_value,
        };
        let prefix = versions_prefix(key);
        let mut purged = Vec::new();
        while meta.versions.len() as u64 > max_versions {
            let Some((&oldest, _)) = meta.versions.iter().next() else { break };
            meta.versions.remove(&oldest);
            purged.push(format!("{prefix}{oldest}"));
        }
        meta.oldest_version = meta.versions.keys().next().copied().unwrap_or(0);
        let response = meta.version_json(version);
        // The version's data, the metadata that makes it visible and the purge of old versions
        // go in one commit (one etcd transaction, one fsync on sled), in this order: every prefix
        // of it is a consistent state (at worst data nothing points at yet, or any more), so it
        // need not be atomic, which on sled would store every record twice.
        let mut ops = vec![
            ViewOp::Put {
                key: format!("{prefix}{version}"),
                value: serde_json::to_vec(value).map_err(|_| ApiError::internal())?,
            },
            ViewOp::Put {
                key: format!("metadata/{key}"),
                value: serde_json::to_vec(&meta).map_err(|_| ApiError::internal())?,
            },
        ];
        ops.extend(purged.into_iter().map(|stale| ViewOp::Delete { key: stale }));
        storage.batch_in_order(ops).await?;
        Ok(response)
    }

    async fn write_data(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let data = match req.field("data") {
            None => return Err(ApiError::bad_request("no data provided")),
            Some(Value::Object(map)) => Value::Object(map.clone()),
            Some(_) => return Err(ApiError::bad_request("data must be a JSON object")),
        };
        let _guard = self.stripe(key).lock().await;
        let config = self.kept_config(req.storage).await?;
        let meta = self.write_meta(req.storage, key).await?.unwrap_or_default();
        Self::check_cas(req, &config, &meta)?;
        let version = Self::add_version(req.storage, key, &config, meta, &data).await?;
        let Value::Object(version) = version else { return Err(ApiError::internal()) };
        Ok(Response::data(version))
    }

    async fn patch_data(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let patch = match req.field("data") {
            None => return Err(ApiError::bad_request("no data provided")),
            Some(Value::Object(map)) => Value::Object(map.clone()),
            Some(_) => return Err(ApiError::bad_request("data must be a JSON object")),
        };
        let _guard = self.stripe(key).lock().await;
        let config = self.kept_config(req.storage).await?;
        let meta = self.write_meta(req.storage, key).await?.ok_or_else(ApiError::not_found)?;
        let current = meta.versions.get(&meta.current_version).cloned().unwrap_or_default();
        if meta.current_version == 0 || current.destroyed || current.is_deleted(time::OffsetDateTime::now_utc()) {
            return Err(ApiError::not_found());
        }
        Self::check_cas(req, &config, &meta)?;
        let mut value: Value = req
            .storage
            .get_json(&format!("{}{}", versions_prefix(key), meta.current_version))
            .await?
            .ok_or_else(ApiError::not_found)?;
        merge_patch(&mut value, &patch);
        let version = Self::add_version(req.storage, key, &config, meta, &value).await?;
        let Value::Object(version) = version else { return Err(ApiError::internal()) };
        Ok(Response::data(version))
    }

    /// Soft delete, undelete or destroy of some versions.
    async fn change_versions(
        &self,
        req: &BackendRequest<'_>,
        key: &str,
        action: &str,
        versions: Vec<u64>,
    ) -> Result<Response, ApiError> {
        let _guard = self.stripe(key).lock().await;
        let Some(mut meta) = Self::meta(req.storage, key).await? else { return Ok(Response::NoContent) };
        let now = now_string();
        let prefix = versions_prefix(key);
        let mut destroyed = Vec::new();
        for version in versions {
            let Some(entry) = meta.versions.get_mut(&version) else { continue };
            match action {
                "delete" if !entry.destroyed && entry.deletion_time.is_empty() => entry.deletion_time = now.clone(),
                "delete" => {}
                "undelete" if !entry.destroyed => entry.deletion_time = String::new(),
                "undelete" => {}
                _ => {
                    entry.destroyed = true;
                    destroyed.push(format!("{prefix}{version}"));
                }
            }
        }
        meta.updated_time = now;
        // Metadata first: once it says "destroyed" the data is unreachable even if the
        // deletion below is interrupted.
        req.storage.put_json(&format!("metadata/{key}"), &meta).await?;
        for stale in destroyed {
            req.storage.delete(&stale).await?;
        }
        Ok(Response::NoContent)
    }

    async fn write_metadata(&self, req: &BackendRequest<'_>, key: &str, patch: bool) -> Result<Response, ApiError> {
        let _guard = self.stripe(key).lock().await;
        let existing = Self::meta(req.storage, key).await?;
        if patch && existing.is_none() {
            return Err(ApiError::not_found());
        }
        let mut meta = existing.unwrap_or_default();
        let now = now_string();
        if meta.created_time.is_empty() {
            meta.created_time = now.clone();
        }
        meta.updated_time = now;
        if let Some(max_versions) = u64_field(req, "max_versions")? {
            meta.max_versions = max_versions;
        }
        if let Some(cas_required) = bool_field(req, "cas_required")? {
            meta.cas_required = cas_required;
        }
        if let Some(after) = duration_field(req, "delete_version_after")? {
            meta.delete_version_after = after;
        }
        if let Some(custom) = custom_metadata_field(req)? {
            if patch {
                let merged = meta.custom_metadata.get_or_insert_with(BTreeMap::new);
                merged.extend(custom);
            } else {
                meta.custom_metadata = Some(custom);
            }
        }
        req.storage.put_json(&format!("metadata/{key}"), &meta).await?;
        Ok(Response::NoContent)
    }

    async fn delete_metadata(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let _guard = self.stripe(key).lock().await;
        let Some(meta) = Self::meta(req.storage, key).await? else { return Ok(Response::NoContent) };
        let prefix = versions_prefix(key);
        // Metadata first, as everywhere: without it no version is reachable.
        req.storage.delete(&format!("metadata/{key}")).await?;
        for version in meta.versions.keys() {
            req.storage.delete(&format!("{prefix}{version}")).await?;
        }
        Ok(Response::NoContent)
    }

    async fn read_subkeys(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let response = self.read_data(req, key).await?;
        let Response::Logical(mut logical) = response else { return Ok(response) };
        logical.materialise();
        if logical.status == 404 {
            return Ok(Response::Logical(logical));
        }
        let depth = u64_field(req, "depth")?.unwrap_or(0);
        let data = logical.data.unwrap_or_default();
        let mut out = Map::new();
        out.insert("subkeys".into(), subkeys(data.get("data").unwrap_or(&Value::Null), depth, 0));
        out.insert("metadata".into(), data.get("metadata").cloned().unwrap_or(Value::Null));
        Ok(Response::data(out))
    }

    async fn engine_config(&self, req: &BackendRequest<'_>) -> Result<Response, ApiError> {
        match req.operation {
            Operation::Read => {
                let config = Self::config(req.storage).await?;
                let mut data = Map::new();
                data.insert("max_versions".into(), json!(config.max_versions));
                data.insert("cas_required".into(), json!(config.cas_required));
                data.insert("delete_version_after".into(), json!(go_duration(config.delete_version_after)));
                Ok(Response::data(data))
            }
            Operation::Update => {
                let mut config = Self::config(req.storage).await?;
                if let Some(max_versions) = u64_field(req, "max_versions")? {
                    config.max_versions = max_versions;
                }
                if let Some(cas_required) = bool_field(req, "cas_required")? {
                    config.cas_required = cas_required;
                }
                if let Some(after) = duration_field(req, "delete_version_after")? {
                    config.delete_version_after = after;
                }
                req.storage.put_json("config", &config).await?;
                Ok(Response::NoContent)
            }
            _ => Err(ApiError::unsupported_operation()),
        }
    }
}

#[async_trait::async_trait]
impl LogicalBackend for KvV2 {
    fn standby_may_read(&self) -> bool {
        true
    }

    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        check_key(req.path)?;
        let (section, key) = split(req.path);
        let needs_key = |key: &str| -> Result<(), ApiError> {
            if key.is_empty() || key.ends_with('/') {
                Err(ApiError::bad_request("a secret path is required"))
            } else {
                Ok(())
            }
        };
        use Operation::*;
        match (section, req.operation) {
            ("config", _) if key.is_empty() => self.engine_config(&req).await,
            ("data", Read | Header) => {
                needs_key(key)?;
                self.read_data(&req, key).await
            }
            ("data", Update) => {
                needs_key(key)?;
                self.write_data(&req, key).await
            }
            ("data", Patch) => {
                needs_key(key)?;
                self.patch_data(&req, key).await
            }
            ("data", Delete) => {
                needs_key(key)?;
                let Some(meta) = Self::meta(req.storage, key).await? else { return Ok(Response::NoContent) };
                self.change_versions(&req, key, "delete", vec![meta.current_version]).await
            }
            ("delete" | "undelete" | "destroy", Update) => {
                needs_key(key)?;
                let versions = versions_field(&req)?;
                self.change_versions(&req, key, section, versions).await
            }
            ("metadata", List) => Response::list(req.storage.list(&format!("metadata/{key}")).await?),
            ("metadata", Read) => {
                needs_key(key)?;
                let kept = self.read_meta(req.storage, key).await?.ok_or_else(ApiError::not_found)?;
                Ok(Response::data(kept.meta.full_json()))
            }
            ("metadata", Update) => {
                needs_key(key)?;
                self.write_metadata(&req, key, false).await
            }
            ("metadata", Patch) => {
                needs_key(key)?;
                self.write_metadata(&req, key, true).await
            }
            ("metadata", Delete) => {
                needs_key(key)?;
                self.delete_metadata(&req, key).await
            }
            ("subkeys", Read) => {
                needs_key(key)?;
                self.read_subkeys(&req, key).await
            }
            ("config" | "data" | "delete" | "undelete" | "destroy" | "metadata" | "subkeys", _) => {
                Err(ApiError::unsupported_operation())
            }
            _ => Err(ApiError::new(
                404,
                format!(
                    "Invalid path for a versioned K/V secrets engine: use {0}data/<path> for secrets and {0}metadata/<path> for metadata",
                    req.mount.route_prefix()
                ),
            )),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        let (section, key) = split(req.path);
        match section {
            "data" | "metadata" if !key.is_empty() => Ok(Some(self.read_meta(req.storage, key).await?.is_some())),
            "config" => Ok(Some(true)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_contract::storage::MemoryStorage;

    async fn request(kv: &KvV2, storage: &StorageView, operation: Operation, path: &str, data: Value) -> Response {
        crate::serve_for_test(kv, storage, ("secret/", "kv"), operation, path, data)
            .await
            .expect("the request succeeds")
    }

    #[tokio::test]
    async fn debug_counts_the_kept_metadata_and_shows_none_of_it() {
        let (kv, storage) = (KvV2::new(), StorageView::new(MemoryStorage::new(), "logical/kv/"));
        request(&kv, &storage, Operation::Update, "data/payroll-db", json!({ "data": { "v": "x" } })).await;
        request(&kv, &storage, Operation::Read, "data/payroll-db", json!({})).await;
        let shown = format!("{kv:?}");
        assert!(shown.contains("kept_metadata: 1"), "{shown}");
        assert!(!shown.contains("payroll"), "{shown}");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null }, "n": 1 }));
        assert_eq!(target, json!({ "a": "z", "c": { "d": "e" }, "n": 1 }));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(3600 * 3 + 25 * 60 + 19), "3h25m19s");
        assert_eq!(go_duration(61), "1m1s");
    }

    #[test]
    fn subkeys_replace_leaves_with_null() {
        let value = json!({ "a": 1, "b": { "c": 2, "d": { "e": 3 } } });
        assert_eq!(subkeys(&value, 0, 0), json!({ "a": null, "b": { "c": null, "d": { "e": null } } }));
        assert_eq!(subkeys(&value, 1, 0), json!({ "a": null, "b": null }));
    }
}
