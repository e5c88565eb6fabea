//! The database secrets engine: connection configs, dynamic roles whose credentials live
//! under a lease, and static roles whose password is rotated on a schedule.
//!
//! Storage (the mount's view): `config/<name>` (with the root password, which no read ever
//! returns), `role/<name>`, `static-role/<name>` (with the current password). Connections are
//! pooled per config and opened lazily; writing, resetting or rotating a config replaces its
//! pool. A lease keeps only the username, role and config name: revocation reads the role's
//! current statements, or removes the user with the plugin's safe default when there are none.

pub mod mysql;
mod pg_tls;
pub mod plugin;
pub mod postgres;
pub mod template;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::backend::LeaseSpec;
use arcanum_contract::backend::{BackendRequest, LeaseRequest, LogicalBackend};
use arcanum_contract::clock::unix_now;
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, Operation, Response};
use arcanum_contract::mount::MountEntry;
use arcanum_contract::storage::StorageView;
use plugin::{ConnectionConfig, DatabasePlugin, DbError, PluginKind};

/// Vault's minimum for static role rotation.
const MIN_ROTATION_PERIOD: u64 = 5;

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct DbConfig {
    plugin_name: String,
    connection_url: String,
    username: String,
    password: String,
    allowed_roles: Vec<String>,
    max_open_connections: u64,
    max_idle_connections: u64,
    max_connection_lifetime: u64,
    username_template: String,
    password_policy: String,
    root_rotation_statements: Vec<String>,
    verify_connection: bool,
    disable_escaping: bool,
    /// Written before a root rotation changes the database, cleared after: a crash in between
    /// leaves both passwords here, and the next connection keeps whichever one works.
    pending_root_password: String,
}

// By hand: the root password must never reach a log line.
impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("plugin_name", &self.plugin_name)
            .field("connection_url", &plugin::redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl DbConfig {
    fn plugin(&self) -> Result<PluginKind, ApiError> {
        PluginKind::from_plugin_name(&self.plugin_name).ok_or_else(|| unknown_plugin(&self.plugin_name))
    }

    fn connection(&self) -> Result<ConnectionConfig, ApiError> {
        Ok(ConnectionConfig {
            plugin: self.plugin()?,
            connection_url: self.connection_url.clone(),
            username: self.username.clone(),
            password: Zeroizing::new(self.password.clone()),
            max_open_connections: usize::try_from(self.max_open_connections).unwrap_or(4).max(1),
            max_idle_connections: usize::try_from(self.max_idle_connections).unwrap_or(0),
            max_connection_lifetime_secs: self.max_connection_lifetime,
            disable_escaping: self.disable_escaping,
        })
    }

    fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|allowed| arcanum_contract::glob::matches(allowed, role))
    }

    /// `GET config/:name`: everything except the password.
    fn read_data(&self) -> Map<String, Value> {
        let mut details = Map::new();
        details.insert("connection_url".into(), json!(plugin::redact_url(&self.connection_url)));
        details.insert("username".into(), json!(self.username));
        details.insert("max_open_connections".into(), json!(self.max_open_connections));
        details.insert("max_idle_connections".into(), json!(self.max_idle_connections));
        details.insert("max_connection_lifetime".into(), json!(format!("{}s", self.max_connection_lifetime)));
        if !self.username_template.is_empty() {
            details.insert("username_template".into(), json!(self.username_template));
        }
        details.insert("disable_escaping".into(), json!(self.disable_escaping));
        let mut data = Map::new();
        data.insert("plugin_name".into(), json!(self.plugin_name));
        data.insert("plugin_version".into(), json!(""));
        data.insert("connection_details".into(), Value::Object(details));
        data.insert("allowed_roles".into(), json!(self.allowed_roles));
        data.insert("root_credentials_rotate_statements".into(), json!(self.root_rotation_statements));
        data.insert("password_policy".into(), json!(self.password_policy));
        data.insert("verify_connection".into(), json!(self.verify_connection));
        data
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Role {
    db_name: String,
    creation_statements: Vec<String>,
    revocation_statements: Vec<String>,
    rollback_statements: Vec<String>,
    renew_statements: Vec<String>,
    default_ttl: u64,
    max_ttl: u64,
    /// `credential_config.password_policy`: overrides the config's policy for this role's users.
    password_policy: String,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct StaticRole {
    db_name: String,
    username: String,
    rotation_period: u64,
    rotation_statements: Vec<String>,
    /// `credential_config.password_policy`: overrides the config's policy for this account.
    password_policy: String,
    password: String,
    last_vault_rotation: i64,
}

impl std::fmt::Debug for StaticRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticRole")
            .field("db_name", &self.db_name)
            .field("username", &self.username)
            .field("rotation_period", &self.rotation_period)
            .finish_non_exhaustive()
    }
}

/// The engine for one mount, with its open connection pools.
#[derive(Debug, Default)]
pub struct Database {
    pools: tokio::sync::RwLock<HashMap<String, Arc<dyn DatabasePlugin>>>,
    /// Serialises rotations (root and static) so two never race on one password.
    rotation: tokio::sync::Mutex<()>,
    /// Intents of `creds/` requests running now (their keys): never treated as abandoned,
    /// whatever the clock says.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Names this server process in the intents it records: an intent of another process belongs
/// to a request that cannot still be running (one server owns its storage).
fn process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// Marks an intent as in flight until dropped.
struct InFlight<'d> {
    database: &'d Database,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.database.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Where `creds/` records a user before creating it (see [`Intent`]).
const INTENT_PREFIX: &str = "intent/";
/// How old an intent of this process must be before it counts as abandoned: longer than a
/// creation can take (it is bounded by `BACKEND_TIMEOUT`) plus storing its lease.
const INTENT_ABANDONED_AFTER: i64 = 2 * arcanum_contract::backend::BACKEND_TIMEOUT.as_secs() as i64;
/// Abandoned intents handled per tick, so that a database that is down (each revocation may
/// take `BACKEND_TIMEOUT`) delays the other periodic work by a bounded time.
const INTENTS_PER_TICK: usize = 8;

/// A database user about to be created for `creds/`, recorded first so that a user whose
/// lease is never stored (the server killed in between, the lease write failing, the request
/// dropped) is still revoked: the lease write deletes the intent, and [`Database::periodic`]
/// revokes the users of intents left behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    username: String,
    role: String,
    db_name: String,
    created: i64,
    /// The server process whose request recorded it ([`process_id`]).
    process: String,
}

impl Intent {
    /// What the lease keeps to revoke the user, and what revoking an abandoned intent uses.
    fn internal(&self) -> Map<String, Value> {
        let mut internal = Map::new();
        internal.insert("username".into(), json!(self.username));
        internal.insert("role".into(), json!(self.role));
        internal.insert("db_name".into(), json!(self.db_name));
        internal
    }
}

fn unknown_plugin(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "error creating database object: plugin {name:?} not found; supported plugins are \
         postgresql-database-plugin, mysql-database-plugin, mysql-aurora-database-plugin, \
         mysql-rds-database-plugin, mysql-legacy-database-plugin"
    ))
}

/// A role's own password policy wins over its connection's.
fn role_or_config<'a>(role: &'a str, config: &'a str) -> &'a str {
    if role.is_empty() {
        config
    } else {
        role
    }
}

/// `credential_config` of a role: for the `password` credential type Vault knows one key,
/// `password_policy`; anything else is refused rather than silently dropped.
fn credential_password_policy(value: &Value) -> Result<String, ApiError> {
    let config = match value {
        Value::Object(config) => config,
        Value::Null => return Ok(String::new()),
        _ => return Err(ApiError::bad_request("credential_config must be an object")),
    };
    let mut policy = String::new();
    for (key, value) in config {
        match key.as_str() {
            "password_policy" => policy = fields::string(Some(value), "credential_config.password_policy")?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "credential_config key {other:?} is not supported for the password credential type"
                )))
            }
        }
    }
    Ok(policy)
}

fn insert_credential_config(data: &mut Map<String, Value>, password_policy: &str) {
    if !password_policy.is_empty() {
        data.insert("credential_config".into(), json!({ "password_policy": password_policy }));
    }
}

/// A new password from the connection's `password_policy`, or from the default generator when none is set.
async fn new_password(storage: &StorageView, policy: &str) -> Result<Zeroizing<String>, ApiError> {
    if policy.is_empty() {
        return Ok(template::generate_password());
    }
    storage
        .password_policies()
        .generate(policy)
        .await?
        .ok_or_else(|| ApiError::new(500, "failed to generate password: no password policy found"))
}

/// A database error as the client sees it: the database's own message, which names what
/// went wrong (never a password: `DbError` leaves them out).
fn db_error(context: &str, err: DbError) -> ApiError {
    ApiError::bad_request(format!("{context}: {err}"))
}

/// Finishes a root rotation that was interrupted between the database and storage: the pending
/// password wins if it works, the stored one is kept (and the pending one dropped) if only it
/// works; with the database unreachable nothing is decided.
async fn settle_rotation(storage: &StorageView, name: &str, mut config: DbConfig) -> Result<DbConfig, ApiError> {
    if config.pending_root_password.is_empty() {
        return Ok(config);
    }
    let mut candidate = config.clone();
    candidate.password = std::mem::take(&mut candidate.pending_root_password);
    if works(&candidate).await? {
        tracing::warn!(config = name, "finishing an interrupted root rotation: the new password is in use");
        config = candidate;
    } else if works(&config).await? {
        config.pending_root_password.clear();
    } else {
        return Ok(config);
    }
    storage.put_json(&format!("config/{name}"), &config).await?;
    Ok(config)
}

/// Whether `config`'s credentials log in.
async fn works(config: &DbConfig) -> Result<bool, ApiError> {
    let pool = plugin::open(&config.connection()?).map_err(|err| db_error("error creating database object", err))?;
    let ok = pool.verify().await.is_ok();
    pool.close().await;
    Ok(ok)
}

/// Statement lists: a JSON array, or one string. Each entry may be base64 (as Vault allows).
fn statements(value: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    let raw: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a list of strings")))?,
        Some(_) => return Err(ApiError::bad_request(format!("{name} must be a list of strings"))),
    };
    let mut out = Vec::new();
    for s in raw {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or(s);
        // Vault also takes a JSON array written as one string (possibly base64 encoded).
        match serde_json::from_str::<Vec<String>>(decoded.trim()) {
            Ok(items) if decoded.trim_start().starts_with('[') => out.extend(items),
            _ => out.push(decoded),
        }
    }
    out.retain(|s| !s.trim().is_empty());
    Ok(Some(out))
}

fn name_of<'a>(path: &'a str, prefix: &str) -> Result<&'a str, ApiError> {
    let name = &path[prefix.len()..];
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::bad_request(format!("invalid name {name:?}")));
    }
    Ok(name)
}

impl Database {
    /// Revokes the users of intents that no lease took over; an intent whose revocation
    /// fails stays for the next tick.
    async fn revoke_abandoned(&self, storage: &StorageView, mount: &MountEntry) {
        let Ok(keys) = storage.list(INTENT_PREFIX).await else { return };
        let now = unix_now();
        let mut handled = 0;
        for key in keys {
            let path = format!("{INTENT_PREFIX}{key}");
            if self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&path) {
                continue;
            }
            let intent = match storage.get_json::<Intent>(&path).await {
                Ok(Some(intent)) => intent,
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "dropping a credential intent that does not parse");
                    let _ = storage.delete(&path).await;
                    continue;
                }
            };
            if intent.process == process_id() && now - intent.created < INTENT_ABANDONED_AFTER {
                continue;
            }
            if handled == INTENTS_PER_TICK {
                break;
            }
            handled += 1;
            if matches!(Self::config(storage, &intent.db_name).await, Ok(None)) {
                tracing::error!(
                    role = %intent.role, db = %intent.db_name,
                    "a database user created without a stored lease cannot be revoked: its database config was deleted"
                );
                let _ = storage.delete(&path).await;
                continue;
            }
            let internal = intent.internal();
            let request = LeaseRequest { lease_id: "", internal: &internal, storage, mount, expire_time: 0 };
            match arcanum_contract::backend::bounded(self.revoke_lease(request)).await {
                Ok(()) => {
                    tracing::warn!(
                        role = %intent.role, db = %intent.db_name,
                        "revoked a database user that was created without a stored lease"
                    );
                    if let Err(err) = storage.delete(&path).await {
                        tracing::warn!(error = %err, "could not delete a handled credential intent");
                    }
                }
                Err(err) => tracing::warn!(
                    role = %intent.role, error = %err,
                    "revoking a database user left without a lease failed; retrying on the next tick"
                ),
            }
        }
    }

    async fn config(storage: &StorageView, name: &str) -> Result<Option<DbConfig>, ApiError> {
        storage.get_json(&format!("config/{name}")).await
    }

    async fn role(storage: &StorageView, name: &str) -> Result<Option<Role>, ApiError> {
        storage.get_json(&format!("role/{name}")).await
    }

    async fn static_role(storage: &StorageView, name: &str) -> Result<Option<StaticRole>, ApiError> {
        storage.get_json(&format!("static-role/{name}")).await
    }

    /// The open pool for a config, opening it on first use.
    async fn connection(
        &self,
        storage: &StorageView,
        name: &str,
        config: &DbConfig,
    ) -> Result<Arc<dyn DatabasePlugin>, ApiError> {
        if let Some(pool) = self.pools.read().await.get(name) {
            return Ok(Arc::clone(pool));
        }
        let mut pools = self.pools.write().await;
        if let Some(pool) = pools.get(name) {
            return Ok(Arc::clone(pool));
        }
        let config = settle_rotation(storage, name, config.clone()).await?;
        let pool =
            plugin::open(&config.connection()?).map_err(|err| db_error("error creating database object", err))?;
        pools.insert(name.to_owned(), Arc::clone(&pool));
        Ok(pool)
    }

    async fn close(&self, name: &str) {
        let pool = self.pools.write().await.remove(name);
        if let Some(pool) = pool {
            pool.close().await;
        }
    }

    async fn write_config(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let mut config = Self::config(req.storage, name).await?.unwrap_or_else(|| DbConfig {
            max_open_connections: 4,
            verify_connection: true,
            ..DbConfig::default()
        });
        let mut verify = true;
        let mut ignored = Vec::new();
        let mut warnings = Vec::new();
        for (key, value) in req.data {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "plugin_name" => config.plugin_name = fields::string(Some(value), key)?,
                "plugin_version" => {}
                "connection_url" => config.connection_url = fields::string(Some(value), key)?,
                "username" => config.username = fields::string(Some(value), key)?,
                "password" => {
                    config.password = fields::string(Some(value), key)?;
                    config.pending_root_password.clear();
                }
                "allowed_roles" => config.allowed_roles = fields::string_list(Some(value), key)?.unwrap_or_default(),
                "max_open_connections" => {
                    config.max_open_connections = fields::non_negative(Some(value), key)?.unwrap_or(4)
                }
                "max_idle_connections" => {
                    config.max_idle_connections = fields::non_negative(Some(value), key)?.unwrap_or(0)
                }
                "max_connection_lifetime" => {
                    config.max_connection_lifetime = fields::duration_secs(Some(value), key)?.unwrap_or(0)
                }
                "username_template" => config.username_template = fields::string(Some(value), key)?,
                "password_policy" => config.password_policy = fields::string(Some(value), key)?,
                "root_rotation_statements" => {
                    config.root_rotation_statements = statements(Some(value), key)?.unwrap_or_default()
                }
                "verify_connection" => verify = fields::boolean(Some(value), key)?.unwrap_or(true),
                "disable_escaping" => config.disable_escaping = fields::boolean(Some(value), key)?.unwrap_or(false),
                // Sent empty by clients that fill every field; a value would ask for something Arcanum
                // does not do, and silently ignoring it would weaken what the operator asked for.
                "tls_ca" | "tls_certificate" | "private_key" => {
                    if !fields::string(Some(value), key)?.is_empty() {
                        return Err(ApiError::bad_request(format!(
                            "{key} is not supported: name the CA's PEM file with sslrootcert in connection_url \
                             (sslmode=verify-full); client certificates are not supported"
                        )));
                    }
                }
                "password_authentication" | "auth_type" => {
                    let wanted = fields::string(Some(value), key)?;
                    let supported = wanted.is_empty() || (key == "password_authentication" && wanted == "password");
                    if !supported {
                        return Err(ApiError::bad_request(format!("{key} {wanted:?} is not supported")));
                    }
                }
                // Vault hands unknown fields to the plugin as connection details, so clients send
                // plugin-specific ones (TLS files, timeouts); they are accepted and named back.
                other => ignored.push(other.to_owned()),
            }
        }
        config.verify_connection = verify;
        if config.plugin_name.is_empty() {
            return Err(ApiError::bad_request("plugin_name is required"));
        }
        config.plugin()?;
        if config.connection_url.is_empty() {
            return Err(ApiError::bad_request("connection_url is required"));
        }
        // As in Vault, the policy need not exist yet; it is looked up whenever a password is made.
        if !config.password_policy.is_empty()
            && req.storage.password_policies().text(&config.password_policy).await?.is_none()
        {
            warnings.push(format!(
                "password policy {:?} does not exist: no credentials can be issued until it is written",
                config.password_policy
            ));
        }
        if !config.username_template.is_empty() {
            // Catch a broken template now rather than on the first creds request.
            template::generate_username(Some(&config.username_template), config.plugin()?, "token", "role")
                .map_err(|err| ApiError::bad_request(format!("invalid username_template: {err}")))?;
        }
        let pool =
            plugin::open(&config.connection()?).map_err(|err| db_error("error creating database object", err))?;
        if verify {
            if let Err(err) = pool.verify().await {
                pool.close().await;
                return Err(db_error("error creating database object: error verifying connection", err));
            }
        }
        req.storage.put_json(&format!("config/{name}"), &config).await?;
        let previous = self.pools.write().await.insert(name.to_owned(), pool);
        if let Some(previous) = previous {
            previous.close().await;
        }
        if !ignored.is_empty() {
            warnings.push(format!("these fields are not used by Arcanum and were ignored: {}", ignored.join(", ")));
        }
        if warnings.is_empty() {
            return Ok(Response::NoContent);
        }
        Ok(Response::Logical(Box::new(arcanum_contract::logical::LogicalResponse { warnings, ..Default::default() })))
    }

    async fn rotate_root(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let _rotation = self.rotation.lock().await;
        let Some(config) = Self::config(req.storage, name).await? else {
            return Err(ApiError::bad_request(format!("no configuration found for {name:?}")));
        };
        if config.username.is_empty() || config.password.is_empty() {
            return Err(ApiError::bad_request(
                "unable to rotate root credentials: no username or password in the config",
            ));
        }
        let pool = self.connection(req.storage, name, &config).await?;
        // The connection may have settled an earlier interrupted rotation.
        let mut config = Self::config(req.storage, name).await?.unwrap_or(config);
        let new_password = new_password(req.storage, &config.password_policy).await?;
        // Write-ahead: if we crash after the database changed, the new password is not lost.
        config.pending_root_password = new_password.to_string();
        req.storage.put_json(&format!("config/{name}"), &config).await?;
        if let Err(err) = pool.rotate_root(&config.root_rotation_statements, &new_password).await {
            config.pending_root_password.clear();
            if let Err(save) = req.storage.put_json(&format!("config/{name}"), &config).await {
                tracing::warn!(config = name, status = save.status, "could not clear the pending root password");
            }
            return Err(db_error("failed to update user", err));
        }
        config.password = new_password.to_string();
        config.pending_root_password.clear();
        // The database already has the new password: keeping the old one would lock us out.
        if let Err(err) = req.storage.put_json(&format!("config/{name}"), &config).await {
            tracing::error!(config = name, "the root password was rotated but could not be saved");
            return Err(err);
        }
        self.close(name).await;
        Ok(Response::NoContent)
    }

    async fn write_role(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let mut role = Self::role(req.storage, name).await?.unwrap_or_default();
        for (key, value) in req.data {
            if value.is_null() {
                continue;
            }
            let list = |value: &Value| Ok::<_, ApiError>(statements(Some(value), key)?.unwrap_or_default());
            match key.as_str() {
                "db_name" => role.db_name = fields::string(Some(value), key)?,
                "creation_statements" => role.creation_statements = list(value)?,
                "revocation_statements" => role.revocation_statements = list(value)?,
                "rollback_statements" => role.rollback_statements = list(value)?,
                "renew_statements" => role.renew_statements = list(value)?,
                "default_ttl" => role.default_ttl = fields::duration_secs(Some(value), key)?.unwrap_or(0),
                "max_ttl" => role.max_ttl = fields::duration_secs(Some(value), key)?.unwrap_or(0),
                "credential_type" => {
                    let kind = fields::string(Some(value), key)?;
                    if !kind.is_empty() && kind != "password" {
                        return Err(ApiError::bad_request(format!(
                            "credential_type {kind:?} is not supported; only \"password\" is"
                        )));
                    }
                }
                "credential_config" => role.password_policy = credential_password_policy(value)?,
                other => return Err(ApiError::bad_request(format!("unknown field {other:?} for a database role"))),
            }
        }
        if role.db_name.is_empty() {
            return Err(ApiError::bad_request("empty database name attribute"));
        }
        if role.creation_statements.is_empty() {
            return Err(ApiError::bad_request("empty creation statements"));
        }
        if Self::config(req.storage, &role.db_name).await?.is_none() {
            return Err(ApiError::bad_request(format!("database config {:?} does not exist", role.db_name)));
        }
        if role.max_ttl > 0 && role.default_ttl > role.max_ttl {
            return Err(ApiError::bad_request("ttl cannot be greater than max_ttl"));
        }
        let mount_max = req.mount.config.max_lease_ttl;
        let mut warnings = Vec::new();
        if mount_max > 0 && role.max_ttl > mount_max {
            warnings.push(format!(
                "max_ttl of {}s is greater than the mount's max_lease_ttl of {mount_max}s; leases will be capped",
                role.max_ttl
            ));
        }
        req.storage.put_json(&format!("role/{name}"), &role).await?;
        if warnings.is_empty() {
            return Ok(Response::NoContent);
        }
        Ok(Response::Logical(Box::new(arcanum_contract::logical::LogicalResponse { warnings, ..Default::default() })))
    }

    async fn creds(&self, req: &BackendRequest<'_>, role_name: &str) -> Result<Response, ApiError> {
        let Some(role) = Self::role(req.storage, role_name).await? else {
            return Err(ApiError::bad_request(format!("unknown role: {role_name}")));
        };
        let Some(config) = Self::config(req.storage, &role.db_name).await? else {
            return Err(ApiError::bad_request(format!("database config {:?} does not exist", role.db_name)));
        };
        if !config.allows(role_name) {
            return Err(ApiError::bad_request(format!("{role_name:?} is not an allowed role")));
        }
        let pool = self.connection(req.storage, &role.db_name, &config).await?;
        let display_name = req.token.map_or("token", |token| token.display_name);
        let username = template::generate_username(
            Some(config.username_template.as_str()).filter(|t| !t.is_empty()),
            config.plugin()?,
            display_name,
            role_name,
        )
        .map_err(|err| ApiError::bad_request(format!("unable to generate username: {err}")))?;
        let password =
            new_password(req.storage, role_or_config(&role.password_policy, &config.password_policy)).await?;
        let ttl = [role.default_ttl, req.mount.config.default_lease_ttl].into_iter().find(|t| *t > 0).unwrap_or(0);
        let max_ttl = [role.max_ttl, req.mount.config.max_lease_ttl].into_iter().find(|t| *t > 0).unwrap_or(0);
        let effective = match (ttl, max_ttl) {
            (0, 0) => arcanum_contract::backend::SYSTEM_MAX_TTL,
            (0, max) => max,
            (ttl, 0) => ttl,
            (ttl, max) => ttl.min(max),
        };
        let now = unix_now();
        let expiration = now + effective as i64;
        let intent = Intent {
            username,
            role: role_name.to_owned(),
            db_name: role.db_name.clone(),
            created: now,
            process: process_id().to_owned(),
        };
        let intent_key = format!("{INTENT_PREFIX}{}", uuid::Uuid::new_v4());
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(intent_key.clone());
        let _in_flight = InFlight { database: self, key: intent_key.clone() };
        req.storage.put_json(&intent_key, &intent).await?;
        let creation = pool.create_user(
            &role.creation_statements,
            &role.rollback_statements,
            &intent.username,
            &password,
            expiration,
        );
        match tokio::time::timeout(arcanum_contract::backend::BACKEND_TIMEOUT, creation).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                // Rolled back in its transaction: nothing to revoke. Should the delete fail, the
                // intent is revoked later, which finds no user.
                let _ = req.storage.delete(&intent_key).await;
                return Err(db_error("unable to create database user", err));
            }
            // The statements may still complete in the database: the intent stays, so the user
            // is revoked once the intent counts as abandoned.
            Err(_) => {
                return Err(ApiError::bad_request(
                    "unable to create database user: the database did not answer in time",
                ))
            }
        }
        let mut data = Map::new();
        data.insert("username".into(), json!(intent.username));
        data.insert("password".into(), json!(password.as_str()));
        Ok(Response::Logical(Box::new(arcanum_contract::logical::LogicalResponse {
            data: Some(data),
            secret: Some(LeaseSpec {
                internal: intent.internal(),
                ttl: effective,
                max_ttl,
                renewable: true,
                intent: Some(intent_key),
            }),
            ..Default::default()
        })))
    }

    async fn write_static_role(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let existing = Self::static_role(req.storage, name).await?;
        let is_new = existing.is_none();
        let mut role = existing.unwrap_or_default();
        for (key, value) in req.data {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "db_name" => role.db_name = fields::string(Some(value), key)?,
                "username" => {
                    let username = fields::string(Some(value), key)?;
                    if !is_new && username != role.username {
                        return Err(ApiError::bad_request("cannot update static account username"));
                    }
                    role.username = username;
                }
                "rotation_period" => role.rotation_period = fields::duration_secs(Some(value), key)?.unwrap_or(0),
                "rotation_statements" => role.rotation_statements = statements(Some(value), key)?.unwrap_or_default(),
                "credential_config" => role.password_policy = credential_password_policy(value)?,
                "credential_type" | "rotation_schedule" | "rotation_window" => {}
                other => return Err(ApiError::bad_request(format!("unknown field {other:?} for a static role"))),
            }
        }
        if role.db_name.is_empty() {
            return Err(ApiError::bad_request("empty database name attribute"));
        }
        if role.username.is_empty() {
            return Err(ApiError::bad_request("username is a required field to create a static account"));
        }
        if role.rotation_period < MIN_ROTATION_PERIOD {
            return Err(ApiError::bad_request(format!(
                "rotation_period must be {MIN_ROTATION_PERIOD} seconds or more"
            )));
        }
        let Some(config) = Self::config(req.storage, &role.db_name).await? else {
            return Err(ApiError::bad_request(format!("database config {:?} does not exist", role.db_name)));
        };
        if !config.allows(name) {
            return Err(ApiError::bad_request(format!("{name:?} is not an allowed role")));
        }
        if is_new {
            // As in Vault: the password is rotated at once, so only Arcanum knows it.
            self.rotate_static(req.storage, name, Some(role)).await?;
        } else {
            // Under the rotation lock, keeping the password a concurrent rotation may just have set.
            let _rotation = self.rotation.lock().await;
            if let Some(stored) = Self::static_role(req.storage, name).await? {
                role.password = stored.password;
                role.last_vault_rotation = stored.last_vault_rotation;
            }
            req.storage.put_json(&format!("static-role/{name}"), &role).await?;
        }
        Ok(Response::NoContent)
    }

    /// Sets a new password for a static role's user and stores it. The role is read again under
    /// the lock (a concurrent update or delete wins); `new_role` is used only when creating it.
    async fn rotate_static(
        &self,
        storage: &StorageView,
        name: &str,
        new_role: Option<StaticRole>,
    ) -> Result<(), ApiError> {
        let _rotation = self.rotation.lock().await;
        let Some(mut role) = new_role.or(Self::static_role(storage, name).await?) else {
            return Ok(());
        };
        let Some(config) = Self::config(storage, &role.db_name).await? else {
            return Err(ApiError::bad_request(format!("database config {:?} does not exist", role.db_name)));
        };
        let pool = self.connection(storage, &role.db_name, &config).await?;
        let password = new_password(storage, role_or_config(&role.password_policy, &config.password_policy)).await?;
        pool.set_password(&role.rotation_statements, &role.username, &password)
            .await
            .map_err(|err| db_error("error setting credentials", err))?;
        role.password = password.to_string();
        role.last_vault_rotation = unix_now();
        storage.put_json(&format!("static-role/{name}"), &role).await
    }

    fn static_creds(role: &StaticRole) -> Response {
        let now = unix_now();
        let next = role.last_vault_rotation + role.rotation_period as i64;
        let mut data = Map::new();
        data.insert("username".into(), json!(role.username));
        data.insert("password".into(), json!(role.password));
        data.insert("last_vault_rotation".into(), json!(arcanum_contract::clock::rfc3339(role.last_vault_rotation)));
        data.insert("rotation_period".into(), json!(role.rotation_period));
        data.insert("ttl".into(), json!((next - now).max(0)));
        Response::data(data)
    }

    /// Looks up what a lease needs: the pool and the role's statements (if it still exists).
    async fn lease_target(
        &self,
        req: &LeaseRequest<'_>,
    ) -> Result<(Arc<dyn DatabasePlugin>, String, Option<Role>), ApiError> {
        let text = |key: &str| req.internal.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (username, role_name, db_name) = (text("username"), text("role"), text("db_name"));
        if username.is_empty() || db_name.is_empty() {
            return Err(ApiError::bad_request("the lease does not name a database user"));
        }
        let Some(config) = Self::config(req.storage, &db_name).await? else {
            return Err(ApiError::bad_request(format!("database config {db_name:?} no longer exists")));
        };
        let pool = self.connection(req.storage, &db_name, &config).await?;
        let role = Self::role(req.storage, &role_name).await?;
        Ok((pool, username, role))
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Database {
    fn issues_leases(&self, path: &str) -> bool {
        path.starts_with("creds/")
    }

    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        use Operation::*;
        let path = req.path;
        match (path, req.operation) {
            ("config" | "config/", List) => Response::list(req.storage.list("config/").await?),
            ("roles" | "roles/", List) => Response::list(req.storage.list("role/").await?),
            ("static-roles" | "static-roles/", List) => Response::list(req.storage.list("static-role/").await?),
            (p, Update) if p.starts_with("config/") => self.write_config(&req, name_of(p, "config/")?).await,
            (p, Read) if p.starts_with("config/") => match Self::config(req.storage, name_of(p, "config/")?).await? {
                Some(config) => Ok(Response::data(config.read_data())),
                None => Err(ApiError::not_found()),
            },
            (p, Delete) if p.starts_with("config/") => {
                let name = name_of(p, "config/")?;
                req.storage.delete(&format!("config/{name}")).await?;
                self.close(name).await;
                Ok(Response::NoContent)
            }
            (p, Update) if p.starts_with("reset/") => {
                let name = name_of(p, "reset/")?;
                let Some(config) = Self::config(req.storage, name).await? else {
                    return Err(ApiError::bad_request(format!("no configuration found for {name:?}")));
                };
                self.close(name).await;
                self.connection(req.storage, name, &config).await?;
                Ok(Response::NoContent)
            }
            (p, Update) if p.starts_with("rotate-root/") => self.rotate_root(&req, name_of(p, "rotate-root/")?).await,
            (p, Update) if p.starts_with("roles/") => self.write_role(&req, name_of(p, "roles/")?).await,
            (p, Read) if p.starts_with("roles/") => match Self::role(req.storage, name_of(p, "roles/")?).await? {
                Some(role) => {
                    let mut data = Map::new();
                    data.insert("db_name".into(), json!(role.db_name));
                    data.insert("creation_statements".into(), json!(role.creation_statements));
                    data.insert("revocation_statements".into(), json!(role.revocation_statements));
                    data.insert("rollback_statements".into(), json!(role.rollback_statements));
                    data.insert("renew_statements".into(), json!(role.renew_statements));
                    data.insert("default_ttl".into(), json!(role.default_ttl));
                    data.insert("max_ttl".into(), json!(role.max_ttl));
                    data.insert("credential_type".into(), json!("password"));
                    insert_credential_config(&mut data, &role.password_policy);
                    Ok(Response::data(data))
                }
                None => Err(ApiError::not_found()),
            },
            (p, Delete) if p.starts_with("roles/") => {
                req.storage.delete(&format!("role/{}", name_of(p, "roles/")?)).await?;
                Ok(Response::NoContent)
            }
            (p, Read) if p.starts_with("creds/") => self.creds(&req, name_of(p, "creds/")?).await,
            (p, Update) if p.starts_with("static-roles/") => {
                self.write_static_role(&req, name_of(p, "static-roles/")?).await
            }
            (p, Read) if p.starts_with("static-roles/") => {
                match Self::static_role(req.storage, name_of(p, "static-roles/")?).await? {
                    Some(role) => {
                        let mut data = Map::new();
                        data.insert("db_name".into(), json!(role.db_name));
                        data.insert("username".into(), json!(role.username));
                        data.insert("rotation_period".into(), json!(role.rotation_period));
                        data.insert("rotation_statements".into(), json!(role.rotation_statements));
                        data.insert(
                            "last_vault_rotation".into(),
                            json!(arcanum_contract::clock::rfc3339(role.last_vault_rotation)),
                        );
                        data.insert("credential_type".into(), json!("password"));
                        insert_credential_config(&mut data, &role.password_policy);
                        Ok(Response::data(data))
                    }
                    None => Err(ApiError::not_found()),
                }
            }
            (p, Delete) if p.starts_with("static-roles/") => {
                req.storage.delete(&format!("static-role/{}", name_of(p, "static-roles/")?)).await?;
                Ok(Response::NoContent)
            }
            (p, Read) if p.starts_with("static-creds/") => {
                let name = name_of(p, "static-creds/")?;
                let Some(role) = Self::static_role(req.storage, name).await? else {
                    return Err(ApiError::bad_request(format!("unknown role: {name}")));
                };
                Ok(Self::static_creds(&role))
            }
            (p, Update) if p.starts_with("rotate-role/") => {
                let name = name_of(p, "rotate-role/")?;
                if Self::static_role(req.storage, name).await?.is_none() {
                    return Err(ApiError::bad_request(format!("no static role found for role name {name:?}")));
                }
                self.rotate_static(req.storage, name, None).await?;
                Ok(Response::NoContent)
            }
            _ => Err(ApiError::no_handler(&format!("{}{}", req.mount.route_prefix(), path))),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        let key = match req.path {
            p if p.starts_with("config/") => format!("config/{}", &p["config/".len()..]),
            p if p.starts_with("roles/") => format!("role/{}", &p["roles/".len()..]),
            p if p.starts_with("static-roles/") => format!("static-role/{}", &p["static-roles/".len()..]),
            _ => return Ok(None),
        };
        Ok(Some(req.storage.get(&key).await?.is_some()))
    }

    async fn revoke_lease(&self, req: LeaseRequest<'_>) -> Result<(), ApiError> {
        let (pool, username, role) = self.lease_target(&req).await?;
        let statements = role.map(|role| role.revocation_statements).unwrap_or_default();
        pool.revoke_user(&statements, &username)
            .await
            .map_err(|err| db_error("failed to revoke the database user", err))
    }

    async fn renew_lease(&self, req: LeaseRequest<'_>) -> Result<(), ApiError> {
        let (pool, username, role) = self.lease_target(&req).await?;
        let statements = role.map(|role| role.renew_statements).unwrap_or_default();
        pool.renew_user(&statements, &username, req.expire_time)
            .await
            .map_err(|err| db_error("failed to renew the database user", err))
    }

    async fn periodic(&self, storage: &StorageView, mount: &MountEntry) {
        self.revoke_abandoned(storage, mount).await;
        let Ok(names) = storage.list("static-role/").await else { return };
        let now = unix_now();
        for name in names {
            let Ok(Some(role)) = Self::static_role(storage, &name).await else { continue };
            if role.last_vault_rotation + role.rotation_period as i64 > now {
                continue;
            }
            let bound = arcanum_contract::backend::BACKEND_TIMEOUT;
            match tokio::time::timeout(bound, self.rotate_static(storage, &name, None)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(role = %name, error = %err, "static role rotation failed; retrying on the next tick")
                }
                Err(_) => tracing::warn!(role = %name, "static role rotation timed out; retrying on the next tick"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_roles_globs() {
        let config = DbConfig { allowed_roles: vec!["app-*".into(), "ro".into()], ..DbConfig::default() };
        assert!(config.allows("app-web") && config.allows("ro"));
        assert!(!config.allows("rw") && !config.allows("ap"));
        assert!(DbConfig { allowed_roles: vec!["*".into()], ..DbConfig::default() }.allows("anything"));
        assert!(!DbConfig::default().allows("anything"), "an empty list allows nothing");
    }

    #[test]
    fn statements_accept_lists_strings_and_base64() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("CREATE ROLE x;");
        let parsed = statements(Some(&json!([encoded, "GRANT a, b TO x"])), "s").unwrap().unwrap();
        assert_eq!(parsed, ["CREATE ROLE x;", "GRANT a, b TO x"]);
        assert_eq!(statements(Some(&json!("DROP ROLE x")), "s").unwrap().unwrap(), ["DROP ROLE x"]);
        assert!(statements(Some(&json!(5)), "s").is_err());
        let array_text = r#"["CREATE ROLE x", "GRANT y TO x"]"#;
        assert_eq!(statements(Some(&json!(array_text)), "s").unwrap().unwrap(), ["CREATE ROLE x", "GRANT y TO x"]);
        let encoded_array = base64::engine::general_purpose::STANDARD.encode(array_text);
        assert_eq!(statements(Some(&json!(encoded_array)), "s").unwrap().unwrap().len(), 2);
    }

    #[test]
    fn debug_never_shows_passwords() {
        let config = DbConfig {
            connection_url: "postgresql://admin:hunter2secret@db/x".into(),
            password: "rootpw-value".into(),
            ..DbConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2secret") && !shown.contains("rootpw-value"), "{shown}");
        let role = StaticRole { password: "static-secret".into(), ..StaticRole::default() };
        assert!(!format!("{role:?}").contains("static-secret"));
    }
}
