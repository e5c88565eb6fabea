//! The Transit secrets engine: encryption as a service. Callers name a key; the key never
//! leaves the server (unless it was made exportable), and every ciphertext, HMAC and
//! signature is laid out as Vault's (`vault:v<N>:...`), so clients and data move between the two.
//!
//! Keys are stored at `policy/<name>` in the mount's view, behind the barrier like every
//! record, and cached per mount after the first read. Every change to a key goes through one
//! lock per mount and writes storage before the cache, so a failed write changes nothing.

mod asymmetric;
mod backup;
mod hashing;
mod key;
mod ops;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::clock::unix_now;
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Response};
use arcanum_contract::mount::MountEntry;
use arcanum_contract::storage::StorageView;

pub use hashing::HashAlgorithm;
pub use key::{KeyPolicy, KeySpec, KeyType, Material};

/// How often the active node looks for keys whose `auto_rotate_period` has passed.
const ROTATION_SCAN: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Transit {
    /// Keys read since the mount was loaded; replaced after every committed change.
    cache: RwLock<HashMap<String, Arc<KeyPolicy>>>,
    /// Serialises changes to keys (create, rotate, config, trim, delete, upsert).
    changes: tokio::sync::Mutex<()>,
    last_rotation_scan: std::sync::Mutex<Option<Instant>>,
}

/// Vault's name rule for keys: word characters, `-` and `.`, starting and ending with a word character.
fn check_name(name: &str) -> Result<(), ApiError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = name.starts_with(word)
        && name.ends_with(word)
        && name.chars().all(|c| word(c) || c == '-' || c == '.')
        && name.len() <= 512;
    if !valid {
        return Err(ApiError::bad_request(format!("invalid key name {name:?}")));
    }
    Ok(())
}

fn storage_key(name: &str) -> String {
    format!("policy/{name}")
}

fn key_not_found() -> ApiError {
    ApiError::bad_request("encryption key not found")
}

impl Transit {
    /// The key `name`, from the cache or storage. A miss fills the cache under the change
    /// lock, so a read that raced a change (or a delete) can never put back the older key.
    async fn load(&self, storage: &StorageView, name: &str) -> Result<Option<Arc<KeyPolicy>>, ApiError> {
        check_name(name)?;
        if let Some(policy) = self.cached(name) {
            return Ok(Some(policy));
        }
        let _guard = self.changes.lock().await;
        self.load_locked(storage, name).await
    }

    fn cached(&self, name: &str) -> Option<Arc<KeyPolicy>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// [`Transit::load`] for callers that hold the change lock.
    async fn load_locked(&self, storage: &StorageView, name: &str) -> Result<Option<Arc<KeyPolicy>>, ApiError> {
        check_name(name)?;
        if let Some(policy) = self.cached(name) {
            return Ok(Some(policy));
        }
        let Some(raw) = storage.get(&storage_key(name)).await?.map(Zeroizing::new) else { return Ok(None) };
        let policy: KeyPolicy = serde_json::from_slice(&raw).map_err(|err| {
            tracing::error!(key = %name, error = %err, "stored transit key does not parse");
            ApiError::internal()
        })?;
        let policy = Arc::new(policy);
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), Arc::clone(&policy));
        Ok(Some(policy))
    }

    async fn require(&self, storage: &StorageView, name: &str) -> Result<Arc<KeyPolicy>, ApiError> {
        self.load(storage, name).await?.ok_or_else(key_not_found)
    }

    /// Writes `policy` to storage, then to the cache. Call with `changes` held.
    async fn store(&self, storage: &StorageView, policy: KeyPolicy) -> Result<Arc<KeyPolicy>, ApiError> {
        let raw = Zeroizing::new(serde_json::to_vec(&policy).map_err(|_| ApiError::internal())?);
        storage.put(&storage_key(&policy.name), &raw).await?;
        let policy = Arc::new(policy);
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(policy.name.clone(), Arc::clone(&policy));
        Ok(policy)
    }

    /// Applies `change` to the stored key `name` under the change lock, and stores the result.
    async fn change(
        &self,
        storage: &StorageView,
        name: &str,
        missing: impl FnOnce() -> ApiError,
        change: impl FnOnce(&mut KeyPolicy) -> Result<(), ApiError>,
    ) -> Result<Arc<KeyPolicy>, ApiError> {
        let _guard = self.changes.lock().await;
        let current = self.load_locked(storage, name).await?.ok_or_else(missing)?;
        let mut next = KeyPolicy::clone(&current);
        change(&mut next)?;
        self.store(storage, next).await
    }

    /// Creates `name` from `spec` unless it exists; returns the key and whether it was made.
    async fn create(
        &self,
        storage: &StorageView,
        name: &str,
        spec: &KeySpec,
    ) -> Result<(Arc<KeyPolicy>, bool), ApiError> {
        let _guard = self.changes.lock().await;
        if let Some(existing) = self.load_locked(storage, name).await? {
            return Ok((existing, false));
        }
        let policy = KeyPolicy::create(name, spec, unix_now())?;
        Ok((self.store(storage, policy).await?, true))
    }

    async fn config(&self, storage: &StorageView) -> Result<Map<String, Value>, ApiError> {
        Ok(storage.get_json("config/keys").await?.unwrap_or_default())
    }
}

/// `keys/:name` read: Vault's description of a key, without any secret material.
fn key_info(policy: &KeyPolicy, context: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let kind = policy.kind;
    let mut data = Map::new();
    data.insert("name".into(), json!(policy.name));
    data.insert("type".into(), json!(kind.name()));
    data.insert("derived".into(), json!(policy.derived));
    data.insert("deletion_allowed".into(), json!(policy.deletion_allowed));
    data.insert("exportable".into(), json!(policy.exportable));
    data.insert("allow_plaintext_backup".into(), json!(policy.allow_plaintext_backup));
    data.insert("min_available_version".into(), json!(policy.min_available_version));
    data.insert("min_decryption_version".into(), json!(policy.min_decryption_version));
    data.insert("min_encryption_version".into(), json!(policy.min_encryption_version));
    data.insert("latest_version".into(), json!(policy.latest_version));
    data.insert("supports_encryption".into(), json!(kind.supports_encryption()));
    data.insert("supports_decryption".into(), json!(kind.supports_encryption()));
    data.insert("supports_signing".into(), json!(kind.supports_signing()));
    data.insert("supports_derivation".into(), json!(kind.supports_derivation()));
    data.insert("auto_rotate_period".into(), json!(policy.auto_rotate_period));
    data.insert("imported_key".into(), json!(false));
    if kind == KeyType::Hmac {
        data.insert("key_size".into(), json!(policy.key_size));
    }
    for (field, stamp) in [("backup_info", &policy.backup_info), ("restore_info", &policy.restore_info)] {
        if let Some(stamp) = stamp {
            data.insert(field.into(), json!({ "time": stamp.time, "version": stamp.version }));
        }
    }
    if policy.derived {
        data.insert("kdf".into(), json!("hkdf_sha256"));
        data.insert("convergent_encryption".into(), json!(policy.convergent_encryption));
        if policy.convergent_encryption {
            data.insert("convergent_encryption_version".into(), json!(-1));
        }
    }
    if kind.is_symmetric() {
        let versions: Map<String, Value> =
            policy.versions.iter().map(|(version, entry)| (version.to_string(), json!(entry.creation_time))).collect();
        data.insert("keys".into(), Value::Object(versions));
    } else if kind.supports_signing() {
        let mut versions = Map::new();
        for (version, entry) in &policy.versions {
            let (public_key, name) = policy.public_key(*version, context)?;
            versions.insert(
                version.to_string(),
                json!({
                    "name": name,
                    "public_key": public_key,
                    "certificate_chain": "",
                    "creation_time": arcanum_contract::clock::rfc3339(entry.creation_time),
                }),
            );
        }
        data.insert("keys".into(), Value::Object(versions));
    }
    Ok(data)
}

fn boolean(req: &BackendRequest<'_>, name: &str) -> Result<Option<bool>, ApiError> {
    fields::boolean(req.field(name), name)
}

fn version_field(value: Option<&Value>, name: &str) -> Result<Option<u32>, ApiError> {
    match fields::non_negative(value, name)? {
        None => Ok(None),
        Some(v) => u32::try_from(v).map(Some).map_err(|_| ApiError::bad_request(format!("{name} is too large"))),
    }
}

/// A signed version field as Vault's framework reads it (`min_encryption_version` may be 0).
fn signed_version(req: &BackendRequest<'_>, name: &str) -> Result<Option<i64>, ApiError> {
    match req.field(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer"))),
    }
}

impl Transit {
    async fn create_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let kind = KeyType::parse(&fields::string(req.field("type"), "type")?).or_else(|err| {
            if req.field("type").is_none() {
                Ok(KeyType::Aes256Gcm96)
            } else {
                Err(err)
            }
        })?;
        let spec = KeySpec {
            kind,
            derived: boolean(req, "derived")?.unwrap_or(false),
            convergent_encryption: boolean(req, "convergent_encryption")?.unwrap_or(false),
            exportable: boolean(req, "exportable")?.unwrap_or(false),
            allow_plaintext_backup: boolean(req, "allow_plaintext_backup")?.unwrap_or(false),
            auto_rotate_period: fields::duration_secs(req.field("auto_rotate_period"), "auto_rotate_period")?
                .unwrap_or(0),
            key_size: fields::non_negative(req.field("key_size"), "key_size")?.unwrap_or(0) as usize,
        };
        let (policy, created) = self.create(req.storage, name, &spec).await?;
        let mut response = LogicalResponse { data: Some(key_info(&policy, &[])?), ..Default::default() };
        if !created {
            response.warnings.push(format!("key {name} already existed"));
        }
        Ok(Response::Logical(Box::new(response)))
    }

    async fn configure_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let min_decryption = signed_version(req, "min_decryption_version")?;
        let min_encryption = signed_version(req, "min_encryption_version")?;
        let deletion_allowed = boolean(req, "deletion_allowed")?;
        let exportable = boolean(req, "exportable")?;
        let allow_plaintext_backup = boolean(req, "allow_plaintext_backup")?;
        let auto_rotate_period = fields::duration_secs(req.field("auto_rotate_period"), "auto_rotate_period")?;
        let mut warnings = Vec::new();
        let missing = || ApiError::bad_request(format!("no existing key named {name} could be found"));
        let policy = self
            .change(req.storage, name, missing, |policy| {
                if let Some(min) = min_decryption {
                    if min < 0 {
                        return Err(ApiError::bad_request("min decryption version cannot be negative"));
                    }
                    let min = if min == 0 {
                        warnings
                            .push("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1".into());
                        1
                    } else {
                        min
                    };
                    if min > i64::from(policy.latest_version) {
                        return Err(ApiError::bad_request(format!(
                            "cannot set min decryption version of {min}, latest key version is {}",
                            policy.latest_version
                        )));
                    }
                    policy.min_decryption_version = min as u32;
                }
                if let Some(min) = min_encryption {
                    if min < 0 {
                        return Err(ApiError::bad_request("min encryption version cannot be negative"));
                    }
                    if min > i64::from(policy.latest_version) {
                        return Err(ApiError::bad_request(format!(
                            "cannot set min encryption version of {min}, latest key version is {}",
                            policy.latest_version
                        )));
                    }
                    policy.min_encryption_version = min as u32;
                }
                if policy.min_encryption_version > 0 && policy.min_encryption_version < policy.min_decryption_version {
                    return Err(ApiError::bad_request(format!(
                        "cannot set min encryption/decryption values; min encryption version of {} must be greater \
                         than or equal to min decryption version of {}",
                        policy.min_encryption_version, policy.min_decryption_version
                    )));
                }
                if policy.min_encryption_version > 0 && policy.min_encryption_version < policy.min_available_version {
                    return Err(ApiError::bad_request(
                        "min encryption version should not be less than min available version",
                    ));
                }
                if policy.min_decryption_version < policy.min_available_version {
                    return Err(ApiError::bad_request(
                        "min decryption version should not be less then min available version",
                    ));
                }
                if let Some(allowed) = deletion_allowed {
                    policy.deletion_allowed = allowed;
                }
                // As in Vault, export and plaintext backup can be turned on, never off again.
                if exportable == Some(true) {
                    policy.exportable = true;
                }
                if allow_plaintext_backup == Some(true) {
                    policy.allow_plaintext_backup = true;
                }
                if let Some(period) = auto_rotate_period {
                    key::check_auto_rotate_period(period)?;
                    policy.auto_rotate_period = period;
                }
                Ok(())
            })
            .await?;
        Ok(Response::Logical(Box::new(LogicalResponse {
            data: Some(key_info(&policy, &[])?),
            warnings,
            ..Default::default()
        })))
    }

    async fn trim_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let requested = signed_version(req, "min_available_version")?;
        let missing = || ApiError::bad_request("invalid key name");
        let policy = self
            .change(req.storage, name, missing, |policy| {
                let requested = requested.ok_or_else(|| ApiError::bad_request("missing min_available_version"))?;
                // Vault's checks, in Vault's order.
                let refusal = if requested < i64::from(policy.min_available_version) {
                    Some("minimum available version cannot be decremented")
                } else if policy.min_encryption_version == 0 {
                    Some("minimum available version cannot be set when minimum encryption version is not set")
                } else if policy.min_decryption_version == 0 {
                    Some("minimum available version cannot be set when minimum decryption version is not set")
                } else if requested > i64::from(policy.min_encryption_version) {
                    Some("minimum available version cannot be greater than minmum encryption version")
                } else if requested > i64::from(policy.min_decryption_version) {
                    Some("minimum available version cannot be greater than minimum decryption version")
                } else if requested < 0 {
                    Some("minimum available version cannot be negative")
                } else if requested == 0 {
                    Some("minimum available version should be positive")
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    return Err(ApiError::bad_request(refusal));
                }
                policy.trim(requested as u32);
                Ok(())
            })
            .await?;
        Ok(Response::data(key_info(&policy, &[])?))
    }

    async fn delete_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        check_name(name)?;
        let _guard = self.changes.lock().await;
        let refusal = match self.load_locked(req.storage, name).await? {
            None => "could not delete key; not found",
            Some(policy) if !policy.deletion_allowed => "deletion is not allowed for this key",
            Some(_) => {
                req.storage.delete(&storage_key(name)).await?;
                self.cache.write().unwrap_or_else(|p| p.into_inner()).remove(name);
                return Ok(Response::NoContent);
            }
        };
        Err(ApiError::bad_request(format!("error deleting policy {name}: {refusal}")))
    }

    async fn export(
        &self,
        req: &BackendRequest<'_>,
        kind: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Response, ApiError> {
        let policy = self.require(req.storage, name).await?;
        // Public keys are not secret; everything else needs `exportable`.
        if !policy.exportable && kind != "public-key" {
            return Err(ApiError::bad_request("private key material is not exportable"));
        }
        let supported = match kind {
            "encryption-key" => policy.kind.is_symmetric() || policy.kind.is_rsa(),
            "signing-key" | "public-key" => policy.kind.supports_signing(),
            "hmac-key" => true,
            _ => return Err(ApiError::bad_request(format!("invalid export type: {kind}"))),
        };
        if !supported {
            return Err(ApiError::bad_request(format!("{kind} not supported for key type {}", policy.kind.name())));
        }
        let versions: Vec<u32> = match version {
            None | Some("") => {
                policy.versions.keys().copied().filter(|v| *v >= policy.min_decryption_version).collect()
            }
            Some("latest") => vec![policy.latest_version],
            Some(text) => {
                let v: u32 = text.parse().map_err(|_| ApiError::bad_request("invalid key version"))?;
                if v < policy.min_decryption_version {
                    return Err(ApiError::bad_request(
                        "cannot export key version that is below the min decryption version",
                    ));
                }
                vec![v]
            }
        };
        let mut keys = Map::new();
        for v in versions {
            let material = match kind {
                "signing-key" => policy.export_signing_key(v)?.to_string(),
                // Vault exports an RSA key's private key (PKCS#1 PEM) as its encryption key.
                "encryption-key" if policy.kind.is_rsa() => policy.export_signing_key(v)?.to_string(),
                "public-key" => policy.public_key(v, &[])?.0,
                _ => policy.export_material(v, kind == "hmac-key")?,
            };
            keys.insert(v.to_string(), Value::String(material));
        }
        let mut data = Map::new();
        data.insert("name".into(), json!(policy.name));
        data.insert("type".into(), json!(policy.kind.name()));
        data.insert("keys".into(), Value::Object(keys));
        Ok(Response::data(data))
    }

    /// `backup/:name`: Vault's plaintext backup, only for keys that are exportable and allow it.
    async fn backup_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let now = unix_now();
        let policy = self
            .change(
                req.storage,
                name,
                || ApiError::bad_request(format!("key {name:?} not found")),
                |policy| {
                    if !policy.exportable {
                        return Err(ApiError::bad_request("exporting is disallowed on the policy"));
                    }
                    if !policy.allow_plaintext_backup {
                        return Err(ApiError::bad_request("plaintext backup is disallowed on the policy"));
                    }
                    policy.backup_info = Some(key::VersionStamp {
                        time: arcanum_contract::clock::rfc3339(now),
                        version: policy.latest_version,
                    });
                    Ok(())
                },
            )
            .await?;
        let encoded = backup::backup(&policy)?;
        Ok(Response::data(Map::from_iter([("backup".into(), json!(encoded.as_str()))])))
    }

    /// `restore(/:name)`: a backup from Vault or Arcanum becomes a key (the URL's name wins).
    async fn restore_key(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let encoded = Zeroizing::new(fields::string(req.field("backup"), "backup")?);
        if encoded.is_empty() {
            return Err(ApiError::bad_request("'backup' must be supplied"));
        }
        let force = boolean(req, "force")?.unwrap_or(false);
        let policy = backup::restore(&encoded, name, unix_now())?;
        check_name(&policy.name)?;
        let _guard = self.changes.lock().await;
        if !force && self.load_locked(req.storage, &policy.name).await?.is_some() {
            return Err(ApiError::bad_request(format!("key {:?} already exists", policy.name)));
        }
        self.store(req.storage, policy).await?;
        Ok(Response::NoContent)
    }

    /// Rotates every key whose `auto_rotate_period` has passed.
    async fn rotate_due_keys(&self, storage: &StorageView) -> Result<(), ApiError> {
        let now = unix_now();
        for name in storage.list("policy/").await? {
            let Some(policy) = self.load(storage, &name).await? else { continue };
            if !policy.rotation_due(now) {
                continue;
            }
            let rotated = self
                .change(storage, &name, key_not_found, |policy| {
                    // Checked again under the lock: a manual rotation may have just happened.
                    if policy.rotation_due(now) {
                        policy.rotate(now)?;
                    }
                    Ok(())
                })
                .await?;
            tracing::info!(key = %name, version = rotated.latest_version, "transit key rotated automatically");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Transit {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').collect();
        let op = req.operation;
        let read = matches!(op, Operation::Read | Operation::Header);
        let write = op == Operation::Update;
        match segments.as_slice() {
            ["keys"] | [""] if op == Operation::List && segments[0] == "keys" => {
                let mut names = req.storage.list("policy/").await?;
                names.sort();
                Response::list(names)
            }
            ["keys", name] if write => self.create_key(&req, name).await,
            ["keys", name] if read => {
                let policy = self.require_for_read(&req, name).await?;
                let context = ops::base64_field(req.data, "context")?;
                Ok(Response::data(key_info(&policy, &context)?))
            }
            ["keys", name] if op == Operation::Delete => self.delete_key(&req, name).await,
            ["keys", name, "config"] if write => self.configure_key(&req, name).await,
            ["keys", name, "rotate"] if write => {
                let missing = || ApiError::bad_request("key not found");
                let policy = self.change(req.storage, name, missing, |policy| policy.rotate(unix_now()));
                Ok(Response::data(key_info(&*policy.await?, &[])?))
            }
            ["keys", name, "trim"] if write => self.trim_key(&req, name).await,
            ["export", kind, name] if read => self.export(&req, kind, name, None).await,
            ["export", kind, name, version] if read => self.export(&req, kind, name, Some(version)).await,
            ["backup", name] if read => self.backup_key(&req, name).await,
            ["restore"] if write => self.restore_key(&req, "").await,
            ["restore", name] if write => self.restore_key(&req, name).await,
            ["config", "keys"] if read => {
                let config = self.config(req.storage).await?;
                Ok(Response::data(Map::from_iter([(
                    "disable_upsert".into(),
                    json!(config.get("disable_upsert").and_then(Value::as_bool).unwrap_or(false)),
                )])))
            }
            ["config", "keys"] if write => {
                let mut config = self.config(req.storage).await?;
                if let Some(disable) = boolean(&req, "disable_upsert")? {
                    config.insert("disable_upsert".into(), json!(disable));
                }
                req.storage.put_json("config/keys", &config).await?;
                Ok(Response::data(Map::from_iter([(
                    "disable_upsert".into(),
                    json!(config.get("disable_upsert").and_then(Value::as_bool).unwrap_or(false)),
                )])))
            }
            ["cache-config"] if read => {
                let size: u64 = req.storage.get_json("config/cache").await?.unwrap_or(0);
                Ok(Response::data(Map::from_iter([("size".into(), json!(size))])))
            }
            ["cache-config"] if write => {
                let size = fields::non_negative(req.field("size"), "size")?.unwrap_or(0);
                if size != 0 && size < 10 {
                    return Err(ApiError::bad_request("size must be 0 or a value greater or equal to 10"));
                }
                req.storage.put_json("config/cache", &size).await?;
                Ok(Response::NoContent)
            }
            ["encrypt", name] if write => ops::encrypt(self, &req, name).await,
            ["decrypt", name] if write => ops::decrypt(self, &req, name).await,
            ["rewrap", name] if write => ops::rewrap(self, &req, name).await,
            ["datakey", kind, name] if write => ops::datakey(self, &req, kind, name).await,
            ["random", rest @ ..] if write && rest.len() <= 2 => ops::random(&req, rest),
            ["hash"] if write => ops::hash(&req, None),
            ["hash", algorithm] if write => ops::hash(&req, Some(algorithm)),
            ["hmac", name] if write => ops::hmac(self, &req, name, None).await,
            ["hmac", name, algorithm] if write => ops::hmac(self, &req, name, Some(algorithm)).await,
            ["sign", name] if write => ops::sign(self, &req, name, None).await,
            ["sign", name, algorithm] if write => ops::sign(self, &req, name, Some(algorithm)).await,
            ["verify", name] if write => ops::verify(self, &req, name, None).await,
            ["verify", name, algorithm] if write => ops::verify(self, &req, name, Some(algorithm)).await,
            _ => Err(ApiError::unsupported_operation()),
        }
    }

    /// Encrypting with a key that does not exist creates it, which needs `create`.
    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        match req.path.split('/').collect::<Vec<_>>().as_slice() {
            ["encrypt", name] if check_name(name).is_ok() => Ok(Some(self.load(req.storage, name).await?.is_some())),
            _ => Ok(None),
        }
    }

    async fn periodic(&self, storage: &StorageView, _mount: &MountEntry) {
        {
            let mut last = self.last_rotation_scan.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < ROTATION_SCAN) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(err) = self.rotate_due_keys(storage).await {
            tracing::warn!(error = %err, "automatic transit key rotation failed; retrying at the next scan");
        }
    }
}

impl Transit {
    /// A key for `keys/:name` reads: Vault answers a missing key with a 404.
    async fn require_for_read(&self, req: &BackendRequest<'_>, name: &str) -> Result<Arc<KeyPolicy>, ApiError> {
        self.load(req.storage, name).await?.ok_or_else(ApiError::not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_contract::mount::MountTableKind;
    use arcanum_contract::storage::MemoryStorage;

    async fn request(
        transit: &Transit,
        storage: &StorageView,
        operation: Operation,
        path: &str,
        data: Value,
    ) -> Result<Response, ApiError> {
        crate::serve_for_test(transit, storage, ("transit/", "transit"), operation, path, data).await
    }

    fn data(response: Response) -> Map<String, Value> {
        match response {
            Response::Logical(logical) => logical.data.unwrap_or_default(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn keys_past_their_rotation_period_rotate_in_the_periodic_scan() {
        let transit = Transit::default();
        let storage = StorageView::new(MemoryStorage::new(), "logical/t/");
        let mount = MountEntry::new(MountTableKind::Secret, "transit/", "transit", "");
        let create = json!({ "auto_rotate_period": "1h" });
        request(&transit, &storage, Operation::Update, "keys/due", create.clone()).await.unwrap();
        request(&transit, &storage, Operation::Update, "keys/fresh", create).await.unwrap();
        request(&transit, &storage, Operation::Update, "keys/manual", json!({})).await.unwrap();
        // Age `due` past its period, as if it had been made two hours ago.
        transit
            .change(&storage, "due", key_not_found, |policy| {
                policy.versions.get_mut(&1).unwrap().creation_time -= 7200;
                Ok(())
            })
            .await
            .unwrap();

        transit.periodic(&storage, &mount).await;
        let latest = |info: Map<String, Value>| info["latest_version"].clone();
        let read = |path: &'static str| request(&transit, &storage, Operation::Read, path, json!({}));
        assert_eq!(latest(data(read("keys/due").await.unwrap())), 2);
        assert_eq!(latest(data(read("keys/fresh").await.unwrap())), 1);
        assert_eq!(latest(data(read("keys/manual").await.unwrap())), 1);
        // The rotation was stored, not only cached.
        let stored: KeyPolicy = serde_json::from_slice(&storage.get("policy/due").await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.latest_version, 2);
        // A scan soon after does nothing more.
        transit.periodic(&storage, &mount).await;
        assert_eq!(latest(data(read("keys/due").await.unwrap())), 2);
    }

    #[tokio::test]
    async fn a_failed_change_leaves_the_key_as_it_was() {
        let transit = Transit::default();
        let storage = StorageView::new(MemoryStorage::new(), "logical/t/");
        request(&transit, &storage, Operation::Update, "keys/k", json!({})).await.unwrap();
        let refused = request(
            &transit,
            &storage,
            Operation::Update,
            "keys/k/config",
            json!({ "deletion_allowed": true, "min_decryption_version": 5 }),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.errors, ["cannot set min decryption version of 5, latest key version is 1"]);
        let info = data(request(&transit, &storage, Operation::Read, "keys/k", json!({})).await.unwrap());
        assert_eq!(info["deletion_allowed"], false, "half of a refused change was applied");
        let names = ["../x", "a/b", "-lead", ""];
        for name in names {
            let err = request(&transit, &storage, Operation::Update, &format!("keys/{name}"), json!({})).await;
            assert!(err.is_err(), "{name:?} accepted");
        }
    }
}
