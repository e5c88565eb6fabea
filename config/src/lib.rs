//! arcanum-config: reads Vault's server configuration (HCL or JSON) into Arcanum's typed [`Config`].
//!
//! Both formats are first turned into one generic value tree and then checked by a single
//! walker, so a key behaves the same whichever format the operator writes. Vault keys that
//! Arcanum does not implement are accepted with a warning rather than rejected, so an existing
//! Vault config keeps working; any other key is an error naming the file, the key path and
//! what was expected.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod duration;
mod tree;
mod walk;

/// Default `max_request_size` of a listener, as in Vault.
pub const DEFAULT_MAX_REQUEST_SIZE: u64 = 32 * 1024 * 1024;

/// Default listener address, as in Vault.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8200";

/// A config file larger than this is certainly not a config file, and reading it whole could
/// exhaust memory (think of `-config=/dev/zero`).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub storage: Storage,
    /// As written in the file; may be empty, in which case the server picks a default listener.
    pub listeners: Vec<Listener>,
    pub api_addr: Option<String>,
    /// Where other HA nodes reach this one (`cluster_addr`); `VAULT_CLUSTER_ADDR` wins.
    pub cluster_addr: Option<String>,
    pub log_level: Option<LogLevel>,
    /// `None` when unset or zero (Vault treats a zero TTL as "use the default").
    pub default_lease_ttl: Option<Duration>,
    /// `None` when unset or zero (Vault treats a zero TTL as "use the default").
    pub max_lease_ttl: Option<Duration>,
    pub disable_mlock: bool,
    pub ui: bool,
    /// Enables `sys/raw`, as Vault's `raw_storage_endpoint`.
    pub raw_storage_endpoint: bool,
    /// Set by `unauthenticated_metrics_access = true` in a top-level `telemetry` block or in
    /// any listener's `telemetry` block (where Vault documents it).
    pub unauthenticated_metrics_access: bool,
    /// Arcanum's own: failed revocation attempts before a lease is marked irrevocable.
    pub lease_revocation_max_attempts: Option<u32>,
    /// Arcanum's own: the longest wait between two attempts to revoke a lease.
    pub lease_revocation_max_backoff: Option<Duration>,
    /// Arcanum extension: how many revocations the reaper runs at once (default 8).
    pub lease_revocation_concurrency: Option<u32>,
    /// Vault's `cache_size`: entries in the storage read cache (the etcd backend's; sled reads
    /// are local already). `None`: the default, 131,072 as in Vault.
    pub cache_size: Option<u32>,
    /// Vault's `disable_cache`: no storage read cache.
    pub disable_cache: bool,
    /// Vault's `disable_clustering`: HA standbys answer with a 307 to the active node instead
    /// of forwarding requests to it.
    pub disable_clustering: bool,
    /// OpenBao's `disable_standby_reads`: HA standbys forward every request to the active node
    /// instead of serving KV reads themselves.
    pub disable_standby_reads: bool,
    /// Vault's `user_lockout "<all|userpass|approle|ldap>"` stanzas, by label.
    pub user_lockout: BTreeMap<String, UserLockout>,
    /// `service_registration "kubernetes"`: the node keeps Vault's labels on its own pod.
    pub service_registration: Option<KubernetesRegistration>,
    /// The `seal` blocks as written: none (Shamir), one, or two while migrating (the old one
    /// marked `disabled`).
    pub seals: Vec<SealBlock>,
    /// One line per Vault setting that was accepted but has no effect in Arcanum.
    pub warnings: Vec<String>,
}

impl Config {
    /// What `vault server -dev` runs with: in-memory storage, one plain-HTTP listener on
    /// [`DEFAULT_ADDRESS`], mlock off, the UI and `sys/raw` on.
    pub fn dev_defaults() -> Config {
        Config {
            storage: Storage::Inmem,
            listeners: vec![Listener {
                address: DEFAULT_ADDRESS.to_string(),
                tls: None,
                max_request_size: Some(DEFAULT_MAX_REQUEST_SIZE),
                connections: ConnectionLimits::default(),
            }],
            api_addr: None,
            cluster_addr: None,
            log_level: None,
            default_lease_ttl: None,
            max_lease_ttl: None,
            disable_mlock: true,
            ui: true,
            raw_storage_endpoint: true,
            unauthenticated_metrics_access: false,
            lease_revocation_max_attempts: None,
            lease_revocation_max_backoff: None,
            lease_revocation_concurrency: None,
            cache_size: None,
            disable_cache: false,
            disable_clustering: false,
            disable_standby_reads: false,
            user_lockout: BTreeMap::new(),
            service_registration: None,
            seals: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The storage backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    Sled { path: PathBuf },
    Inmem,
    Etcd(Box<EtcdStorage>),
}

/// `storage "etcd"`, with Vault's parameter names (and two of Arcanum's own that mirror etcd's
/// server limits).
#[derive(Clone, PartialEq)]
pub struct EtcdStorage {
    /// Client URLs (`http://` or `https://`). Empty after parsing when the file names none:
    /// [`Config::apply_env`] then takes `ETCD_ADDR`, and refuses the config without either.
    pub address: Vec<String>,
    /// Key prefix, always starting and ending with `/`; `/arcanum/` unless set.
    pub path: String,
    /// Whether nodes sharing this etcd elect an active one (the HA issue); `ETCD_HA_ENABLED`.
    pub ha_enabled: bool,
    /// etcd's own authentication, both or neither; `ETCD_USERNAME`, `ETCD_PASSWORD`.
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The name etcd's certificate is checked against, when it is not the address's host.
    pub tls_server_name: Option<String>,
    /// Per request; 5 s unless set.
    pub request_timeout: Duration,
    /// The HA lock's lease TTL; 15 s unless set.
    pub lock_timeout: Duration,
    /// Arcanum's own: etcd's `--max-request-bytes` (1.5 MiB unless set).
    pub max_request_bytes: u64,
    /// Arcanum's own: etcd's `--max-txn-ops` (128 unless set).
    pub max_txn_ops: u32,
}

/// etcd's defaults for the limits [`EtcdStorage`] mirrors, and Vault's for its timeouts.
pub const ETCD_DEFAULT_PATH: &str = "/arcanum/";
pub const ETCD_DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const ETCD_DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(15);
pub const ETCD_DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
pub const ETCD_DEFAULT_MAX_TXN_OPS: u32 = 128;

impl EtcdStorage {
    /// What only makes sense once the environment is applied: an address exists, credentials
    /// and client certificates come in pairs, and the TLS files go with `https://` addresses.
    /// `block` names the block in errors (`storage.etcd`, `storage_destination.etcd`).
    pub fn check(&self, origin: &str, block: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key: format!("{block}.{key}"),
            message: message.to_string(),
        };
        if self.address.is_empty() {
            return Err(invalid(
                "address",
                "missing; expected the etcd client URLs, comma-separated (http://127.0.0.1:2379), here or in ETCD_ADDR",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            let missing = if self.username.is_some() { "password" } else { "username" };
            return Err(invalid(missing, "missing; etcd authentication needs both username and password"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let missing = if self.tls_cert_file.is_some() { "tls_key_file" } else { "tls_cert_file" };
            return Err(invalid(missing, "missing; a client certificate needs both tls_cert_file and tls_key_file"));
        }
        let https = self.address.iter().filter(|a| a.starts_with("https://")).count();
        let tls_given = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_server_name.is_some();
        if https > 0 && https < self.address.len() {
            return Err(invalid("address", "mixes http:// and https:// URLs; use one scheme for every member"));
        }
        if https > 0 && self.tls_ca_file.is_none() {
            return Err(invalid(
                "tls_ca_file",
                "missing; https:// etcd addresses need the CA that signs etcd's certificates",
            ));
        }
        if https == 0 && tls_given {
            return Err(invalid("address", "TLS settings are given but the addresses are http://; use https:// URLs"));
        }
        Ok(())
    }
}

// By hand: the password never reaches a log line.
impl std::fmt::Debug for EtcdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStorage")
            .field("address", &self.address)
            .field("path", &self.path)
            .field("ha_enabled", &self.ha_enabled)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("request_timeout", &self.request_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_txn_ops", &self.max_txn_ops)
            .finish()
    }
}

impl Config {
    /// Vault's environment overrides (the environment wins over the file): `VAULT_API_ADDR`,
    /// `VAULT_CLUSTER_ADDR`, and for the storage block `ETCD_ADDR`, `ETCD_HA_ENABLED`,
    /// `ETCD_USERNAME`, `ETCD_PASSWORD`. Then checks
    /// what only makes sense once they are applied: an etcd address exists, and the TLS files
    /// go with `https://` addresses. `origin` names the file in errors; `lookup` reads a variable
    /// (the server passes the process environment; tests pass a map).
    pub fn apply_env(&mut self, origin: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let url = |name: &str, key: &str| -> Result<Option<String>, ConfigError> {
            match lookup(name).filter(|v| !v.is_empty()) {
                Some(v) if v.starts_with("http://") || v.starts_with("https://") => Ok(Some(v)),
                Some(v) => Err(ConfigError::Invalid {
                    origin: origin.to_string(),
                    key: key.to_string(),
                    message: format!(
                        "{name} must be a URL such as \"https://vault.example.com:8200\", got {}",
                        quote(&v)
                    ),
                }),
                None => Ok(None),
            }
        };
        if let Some(api_addr) = url("VAULT_API_ADDR", "api_addr")? {
            self.api_addr = Some(api_addr);
        }
        if let Some(cluster_addr) = url("VAULT_CLUSTER_ADDR", "cluster_addr")? {
            self.cluster_addr = Some(cluster_addr);
        }
        if let Some(registration) = &mut self.service_registration {
            for (variable, key, field) in [
                ("VAULT_K8S_NAMESPACE", "namespace", &mut registration.namespace),
                ("VAULT_K8S_POD_NAME", "pod_name", &mut registration.pod_name),
            ] {
                if let Some(value) = lookup(variable).filter(|v| !v.is_empty()) {
                    *field = Some(value);
                }
                if field.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::Invalid {
                        origin: origin.to_string(),
                        key: format!("service_registration.kubernetes.{key}"),
                        message: format!("missing; set it here or in {variable}"),
                    });
                }
            }
        }
        let Storage::Etcd(etcd) = &mut self.storage else { return Ok(()) };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: format!("storage.etcd.{key}"),
            message,
        };
        if let Some(address) = lookup("ETCD_ADDR").filter(|a| !a.trim().is_empty()) {
            etcd.address =
                walk::etcd_addresses(&address).map_err(|why| invalid("address", format!("{why} (from ETCD_ADDR)")))?;
        }
        if let Some(enabled) = lookup("ETCD_HA_ENABLED").filter(|v| !v.is_empty()) {
            etcd.ha_enabled = walk::parse_bool(&enabled).ok_or_else(|| {
                invalid("ha_enabled", format!("ETCD_HA_ENABLED must be true or false, got {}", quote(&enabled)))
            })?;
        }
        if let Some(user) = lookup("ETCD_USERNAME").filter(|v| !v.is_empty()) {
            etcd.username = Some(user);
        }
        if let Some(password) = lookup("ETCD_PASSWORD").filter(|v| !v.is_empty()) {
            etcd.password = Some(password);
        }
        etcd.check(origin, "storage.etcd")
    }
}

/// What `arcanum operator migrate -config=FILE` reads: Vault's `storage_source` and
/// `storage_destination` blocks (each like a `storage` block).
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    pub source: Storage,
    pub destination: Storage,
    /// One line per Vault setting that was accepted but has no effect here.
    pub warnings: Vec<String>,
}

/// Reads and parses a migration config (HCL or JSON by its extension, as [`load`]). The
/// environment is not consulted: with two etcd blocks, `ETCD_ADDR` could only be wrong for one.
pub fn load_migration(path: &Path) -> Result<MigrationConfig, ConfigError> {
    let origin = path.display().to_string();
    let text = read_limited(path, &origin)?;
    parse_migration(&text, Format::from_path(path), &origin)
}

/// Parses migration config text; `origin` prefixes every error and warning.
pub fn parse_migration(source: &str, format: Format, origin: &str) -> Result<MigrationConfig, ConfigError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let config = match format {
        Format::Hcl => tree::with_hcl(source, origin, |tree| walk::migration(tree, origin))?,
        Format::Json => walk::migration(&tree::from_json(source, origin)?, origin)?,
    };
    for (storage, block) in [(&config.source, "storage_source.etcd"), (&config.destination, "storage_destination.etcd")]
    {
        if let Storage::Etcd(etcd) = storage {
            etcd.check(origin, block)?;
        }
    }
    Ok(config)
}

/// One `seal` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealBlock {
    pub kind: SealKind,
    /// `disabled = "true"`: the seal being migrated away from.
    pub disabled: bool,
}

/// The seal types Arcanum implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealKind {
    Shamir,
    Transit(Box<TransitSeal>),
}

/// `seal "transit"`: the root key is protected by a Transit key on another server. Every
/// field is as written; the `VAULT_*` environment is applied where the server starts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TransitSeal {
    pub address: Option<String>,
    pub token: Option<String>,
    pub key_name: Option<String>,
    pub mount_path: Option<String>,
    pub namespace: Option<String>,
    pub disable_renewal: Option<bool>,
    pub tls_ca_cert: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_skip_verify: Option<bool>,
}

// Written by hand so that the seal's token never reaches a log line.
impl std::fmt::Debug for TransitSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSeal")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("key_name", &self.key_name)
            .field("mount_path", &self.mount_path)
            .field("namespace", &self.namespace)
            .field("disable_renewal", &self.disable_renewal)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("tls_server_name", &self.tls_server_name)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .finish()
    }
}

/// `service_registration "kubernetes"`: which pod this node labels. Both are required once the
/// environment (`VAULT_K8S_NAMESPACE`, `VAULT_K8S_POD_NAME`, which win) is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesRegistration {
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
}

/// A TCP listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// `host:port`; a bare `:port` (Go's "all interfaces") is normalised to `0.0.0.0:port`.
    pub address: String,
    /// `None` when `tls_disable` is set.
    pub tls: Option<Tls>,
    /// Maximum request body in bytes; `None` means unlimited (a negative value in the file).
    pub max_request_size: Option<u64>,
    /// Timeouts and the connection cap.
    pub connections: ConnectionLimits,
}

/// One `user_lockout` stanza; what it leaves out comes from `"all"`, then Vault's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLockout {
    pub lockout_threshold: Option<u32>,
    pub lockout_duration: Option<Duration>,
    pub lockout_counter_reset: Option<Duration>,
    pub disable_lockout: Option<bool>,
}

/// How long a listener's connections may stay quiet, and how many it keeps at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Vault's `http_read_header_timeout` (default 10 s): a request's head, and a new
    /// connection's first byte, must arrive within it. An HTTP/1.1 connection waiting for its
    /// next request counts as reading a head, so an idle one closes after it too.
    pub read_header_timeout: Duration,
    /// Vault's `http_idle_timeout` (default 5 min): a connection with no byte read or written
    /// for this long is closed, whatever it is waiting for.
    pub idle_timeout: Duration,
    /// Arcanum's `max_connections`: connections open at once; beyond it new ones are closed at
    /// once (the ones open keep being served). `None`: three quarters of the open-file limit.
    pub max_connections: Option<u32>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: None,
        }
    }
}

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub min_version: TlsVersion,
}

/// Lowest TLS protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Server log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Parses a level as Vault does: case-insensitive, surrounding spaces ignored, with Vault's
    /// aliases `notice` (info), `warning` (warn) and `err` (error). Empty input is `None`.
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" | "notice" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "err" | "error" => Some(LogLevel::Error),
            _ => None,
        }
    }

    /// The level's name as a `tracing` filter directive.
    pub fn as_filter(&self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Why a configuration could not be loaded. The `Display` form always starts with the origin.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: {source}")]
    Io {
        origin: String,
        #[source]
        source: io::Error,
    },
    /// The text is not valid HCL or JSON; `message` carries the parser's line and column.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A key is unknown, missing, or has a value of the wrong kind; `key` is a dotted path
    /// such as `listener.tcp.tls_min_version`.
    #[error("{origin}: {key}: {message}")]
    Invalid { origin: String, key: String, message: String },
}

/// The syntax a config is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Hcl,
    Json,
}

impl Format {
    /// `.json` (any case) is JSON; everything else is HCL, as with Vault's `.hcl` files.
    pub fn from_path(path: &Path) -> Format {
        let is_json = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Format::Json
        } else {
            Format::Hcl
        }
    }
}

/// Reads and parses a config file; the format is chosen by [`Format::from_path`] and the path
/// is the origin named in errors and warnings.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = read_limited(path, &origin)?;
    parse(&text, Format::from_path(path), &origin)
}

fn read_limited(path: &Path, origin: &str) -> Result<String, ConfigError> {
    let io_error = |source| ConfigError::Io { origin: origin.to_string(), source };
    let file = File::open(path).map_err(io_error)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(io_error)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(io_error(io::Error::new(io::ErrorKind::InvalidData, "file is larger than 16 MiB")));
    }
    Ok(text)
}

/// Parses config text; `origin` (usually the file name) prefixes every error and warning.
pub fn parse(source: &str, format: Format, origin: &str) -> Result<Config, ConfigError> {
    // Editors on Windows like to add a byte-order mark, which neither parser accepts.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    match format {
        Format::Hcl => tree::with_hcl(source, origin, |tree| walk::config(tree, origin)),
        Format::Json => walk::config(&tree::from_json(source, origin)?, origin),
    }
}

/// Quotes a string for an error message, cut short so that a long (possibly sensitive) value
/// is never echoed whole.
pub(crate) fn quote(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => {
            let head = serde_json::Value::from(s.get(..cut).unwrap_or_default()).to_string();
            format!("{}…\"", head.strip_suffix('"').unwrap_or(&head))
        }
        None => serde_json::Value::from(s).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H768: Duration = Duration::from_secs(768 * 3600);

    fn hcl(source: &str) -> Config {
        parse(source, Format::Hcl, "config.hcl").unwrap_or_else(|e| panic!("{e}"))
    }

    fn json(source: &str) -> Config {
        parse(source, Format::Json, "config.json").unwrap_or_else(|e| panic!("{e}"))
    }

    fn plain(address: &str) -> Listener {
        Listener {
            address: address.to_string(),
            tls: None,
            max_request_size: Some(DEFAULT_MAX_REQUEST_SIZE),
            connections: ConnectionLimits::default(),
        }
    }

    #[test]
    fn arcanum_lease_revocation_keys() {
        let source = "storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \"127.0.0.1:1\"\n  tls_disable = true\n}\n";
        let config = hcl(&format!(
            "{source}lease_revocation_max_attempts = 3\nlease_revocation_max_backoff = \"1m\"\nlease_revocation_concurrency = \"2\"\n"
        ));
        assert_eq!(config.lease_revocation_max_attempts, Some(3));
        assert_eq!(config.lease_revocation_max_backoff, Some(Duration::from_secs(60)));
        assert_eq!(config.lease_revocation_concurrency, Some(2));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let refused = parse(&format!("{source}lease_revocation_concurrency = 0\n"), Format::Hcl, "config.hcl")
            .expect_err("0 revocations at a time would never revoke");
        assert!(refused.to_string().contains("lease_revocation_concurrency"), "{refused}");
    }

    #[test]
    fn seal_blocks() {
        let base = "storage \"inmem\" {}\n";
        let config = hcl(&format!(
            "{base}seal \"transit\" {{\n  address = \"https://unsealer:8200\"\n  token = \"s.secret\"\n  key_name = \"autounseal\"\n  mount_path = \"transit/\"\n  tls_skip_verify = \"true\"\n  disable_renewal = \"false\"\n}}\n"
        ));
        let [SealBlock { kind: SealKind::Transit(transit), disabled: false }] = config.seals.as_slice() else {
            panic!("{:?}", config.seals)
        };
        assert_eq!(transit.key_name.as_deref(), Some("autounseal"));
        assert_eq!((transit.tls_skip_verify, transit.disable_renewal), (Some(true), Some(false)));
        let shown = format!("{transit:?}");
        assert!(!shown.contains("s.secret") && shown.contains("redacted"), "{shown}");

        // Migrating: the old seal disabled, the new one enabled.
        let config = hcl(&format!("{base}seal \"transit\" {{\n  disabled = \"true\"\n}}\nseal \"shamir\" {{}}\n"));
        assert_eq!(config.seals.len(), 2);
        let old = config.seals.iter().find(|seal| seal.disabled).expect("the disabled seal");
        assert!(matches!(old.kind, SealKind::Transit(_)), "{:?}", config.seals);
        assert!(config.seals.iter().any(|seal| !seal.disabled && seal.kind == SealKind::Shamir));

        for (extra, expected) in [
            (
                "seal \"awskms\" {\n  region = \"us-east-1\"\n}\n",
                "unsupported seal type \"awskms\"; supported: shamir, transit",
            ),
            ("seal \"transit\" {}\nseal \"shamir\" {}\n", "only allowed while migrating"),
            ("seal \"transit\" {\n  key = \"x\"\n}\n", "key"),
        ] {
            let refused = parse(&format!("{base}{extra}"), Format::Hcl, "config.hcl").expect_err(extra);
            assert!(refused.to_string().contains(expected), "{extra}: {refused}");
        }
    }

    #[test]
    fn vault_json_config() {
        let config = json(
            r#"{"backend":{"inmem":{}},"listener":{"tcp":{"address":"127.0.0.1:8201","tls_disable":true}},"disable_mlock":true,"default_lease_ttl":"768h","max_lease_ttl":"768h"}"#,
        );
        let expected = Config {
            storage: Storage::Inmem,
            listeners: vec![plain("127.0.0.1:8201")],
            api_addr: None,
            cluster_addr: None,
            log_level: None,
            default_lease_ttl: Some(H768),
            max_lease_ttl: Some(H768),
            disable_mlock: true,
            ui: false,
            raw_storage_endpoint: false,
            unauthenticated_metrics_access: false,
            lease_revocation_max_attempts: None,
            lease_revocation_max_backoff: None,
            lease_revocation_concurrency: None,
            cache_size: None,
            disable_cache: false,
            disable_clustering: false,
            disable_standby_reads: false,
            user_lockout: BTreeMap::new(),
            service_registration: None,
            seals: Vec::new(),
            warnings: vec![],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn listener_connection_limits() {
        let config = parse(
            "storage \"inmem\" {}\nlistener \"tcp\" {\n  tls_disable = true\n  http_read_header_timeout = \"2s\"\n  http_idle_timeout = 60\n  max_connections = 100\n}\n",
            Format::Hcl,
            "c",
        )
        .expect("parses");
        let limits = config.listeners[0].connections;
        assert_eq!(limits.read_header_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.max_connections, Some(100));
        for bad in ["http_read_header_timeout = 0", "http_idle_timeout = \"0s\"", "max_connections = 0"] {
            let text = format!("storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  tls_disable = true\n  {bad}\n}}\n");
            let err = parse(&text, Format::Hcl, "c").expect_err(bad).to_string();
            assert!(err.contains(bad.split(' ').next().unwrap_or_default()), "{err}");
        }
    }

    #[test]
    fn hvac_generated_config() {
        let config = json(
            r#"{"backend":{"inmem":{}},"listener":{"tcp":{"tls_cert_file":"tests/config_files/server-cert.pem","tls_key_file":"tests/config_files/server-key.pem","address":"127.0.0.1:8201"}},"disable_mlock":true,"default_lease_ttl":"768h","max_lease_ttl":"768h"}"#,
        );
        assert_eq!(config.storage, Storage::Inmem);
        assert_eq!(
            config.listeners,
            vec![Listener {
                address: "127.0.0.1:8201".to_string(),
                tls: Some(Tls {
                    cert_file: "tests/config_files/server-cert.pem".into(),
                    key_file: "tests/config_files/server-key.pem".into(),
                    min_version: TlsVersion::Tls12,
                }),
                max_request_size: Some(DEFAULT_MAX_REQUEST_SIZE),
                connections: ConnectionLimits::default(),
            }]
        );
        assert_eq!(config.default_lease_ttl, Some(H768));
        assert_eq!(config.max_lease_ttl, Some(H768));
        assert!(config.disable_mlock);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn typical_vault_hcl_config() {
        let config = hcl(r#"
# Production-style config, as a Vault operator would write it.
storage "sled" {
  path = "/var/lib/arcanum"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  tls_cert_file   = "/etc/arcanum/tls/cert.pem"
  tls_key_file    = "/etc/arcanum/tls/key.pem"
  tls_min_version = "tls13"
  max_request_size = -1
  cluster_address = "0.0.0.0:8201"
}

listener "tcp" {
  address     = "127.0.0.1:8300"
  tls_disable = "1"
  max_request_size = 1048576
}

telemetry {
  prometheus_retention_time = "30s"
  disable_hostname = true
  unauthenticated_metrics_access = true
}

api_addr          = "https://vault.example.com:8200"
cluster_addr      = "https://vault.example.com:8201"
log_level         = "ERR"
default_lease_ttl = 3600
max_lease_ttl     = "7d"
disable_mlock     = true
ui                = true
raw_storage_endpoint = "true"
"#);
        let expected = Config {
            storage: Storage::Sled { path: "/var/lib/arcanum".into() },
            listeners: vec![
                Listener {
                    address: "0.0.0.0:8200".to_string(),
                    tls: Some(Tls {
                        cert_file: "/etc/arcanum/tls/cert.pem".into(),
                        key_file: "/etc/arcanum/tls/key.pem".into(),
                        min_version: TlsVersion::Tls13,
                    }),
                    max_request_size: None,
                    connections: ConnectionLimits::default(),
                },
                Listener {
                    address: "127.0.0.1:8300".to_string(),
                    tls: None,
                    max_request_size: Some(1_048_576),
                    connections: ConnectionLimits::default(),
                },
            ],
            api_addr: Some("https://vault.example.com:8200".to_string()),
            cluster_addr: Some("https://vault.example.com:8201".to_string()),
            log_level: Some(LogLevel::Error),
            default_lease_ttl: Some(Duration::from_secs(3600)),
            max_lease_ttl: Some(Duration::from_secs(7 * 86_400)),
            disable_mlock: true,
            ui: true,
            raw_storage_endpoint: true,
            unauthenticated_metrics_access: true,
            lease_revocation_max_attempts: None,
            lease_revocation_max_backoff: None,
            lease_revocation_concurrency: None,
            cache_size: None,
            disable_cache: false,
            disable_clustering: false,
            disable_standby_reads: false,
            user_lockout: BTreeMap::new(),
            service_registration: None,
            seals: Vec::new(),
            warnings: [
                "listener.tcp[0].cluster_address",
                "telemetry.disable_hostname",
                "telemetry.prometheus_retention_time",
            ]
            .iter()
            .map(|k| format!("config.hcl: key {k} is accepted for Vault compatibility and ignored"))
            .collect(),
        };
        let mut got = config;
        got.warnings.sort();
        let mut expected = expected;
        expected.warnings.sort();
        assert_eq!(got, expected);
    }

    /// Every way Vault lets a config say "two plain TCP listeners" must give the same result.
    #[test]
    fn listener_layouts() {
        let two = vec![plain("127.0.0.1:1"), plain("127.0.0.1:2")];
        let one = vec![plain("127.0.0.1:1")];
        let cases: Vec<(Format, &str, Vec<Listener>)> = vec![
            (
                Format::Hcl,
                "listener \"tcp\" {\n address = \"127.0.0.1:1\"\n tls_disable = true\n}\n",
                one.clone(),
            ),
            (
                Format::Hcl,
                "listener \"tcp\" {\n address = \"127.0.0.1:1\"\n tls_disable = true\n}\nlistener \"tcp\" {\n address = \"127.0.0.1:2\"\n tls_disable = true\n}\n",
                two.clone(),
            ),
            (
                Format::Hcl,
                "listener {\n type = \"tcp\"\n address = \"127.0.0.1:1\"\n tls_disable = true\n}\nlistener {\n type = \"TCP\"\n address = \"127.0.0.1:2\"\n tls_disable = true\n}\n",
                two.clone(),
            ),
            (
                Format::Hcl,
                "listener \"TCP\" {\n type = \"tcp\"\n address = \"127.0.0.1:1\"\n tls_disable = true\n}\n",
                one.clone(),
            ),
            (
                Format::Json,
                r#"{"listener":{"tcp":{"address":"127.0.0.1:1","tls_disable":"true"}}}"#,
                one.clone(),
            ),
            (
                Format::Json,
                r#"{"listener":[{"tcp":{"address":"127.0.0.1:1","tls_disable":1}},{"tcp":{"address":"127.0.0.1:2","tls_disable":"t"}}]}"#,
                two.clone(),
            ),
            (
                Format::Json,
                r#"{"listener":{"tcp":[{"address":"127.0.0.1:1","tls_disable":true},{"address":"127.0.0.1:2","tls_disable":true}]}}"#,
                two.clone(),
            ),
            (
                Format::Json,
                r#"{"listener":[{"type":"tcp","address":"127.0.0.1:1","tls_disable":true}]}"#,
                one.clone(),
            ),
            (Format::Json, r#"{"listener":[]}"#, vec![]),
            (Format::Json, r#"{}"#, vec![]),
        ];
        for (format, listeners, expected) in cases {
            let source = match format {
                Format::Hcl => format!("storage \"inmem\" {{}}\n{listeners}"),
                Format::Json => {
                    let body = listeners.strip_prefix('{').and_then(|b| b.strip_suffix('}')).unwrap_or(listeners);
                    let sep = if body.is_empty() { "" } else { "," };
                    format!("{{\"storage\":{{\"inmem\":{{}}}}{sep}{body}}}")
                }
            };
            let config = parse(&source, format, "t").unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(config.listeners, expected, "{source}");
        }
    }

    /// Vault's HCL decoder ignores key case, knows CamelCase aliases, and prefers `storage`
    /// over the older `backend`.
    #[test]
    fn vault_key_spellings() {
        let config = hcl(r#"
Storage "SLED" {
  Path = "/d"
}
backend "consul" {}
LISTENER "Tcp" {
  Address = "127.0.0.1:9"
  TLS_Disable = true
  telemetry {
    UnauthenticatedMetricsAccess = true
  }
}
MaxLeaseTTL = "2h"
DefaultLeaseTTL = "1h"
EnableRawEndpoint = true
UI = true
"#);
        assert_eq!(config.storage, Storage::Sled { path: "/d".into() });
        assert_eq!(config.listeners, vec![plain("127.0.0.1:9")]);
        assert_eq!(config.max_lease_ttl, Some(Duration::from_secs(7200)));
        assert_eq!(config.default_lease_ttl, Some(Duration::from_secs(3600)));
        assert!(config.raw_storage_endpoint && config.ui && config.unauthenticated_metrics_access);
        assert_eq!(config.warnings, vec!["config.hcl: key backend is ignored because storage is set".to_string()]);
    }

    #[test]
    fn dev_defaults_match_vault_dev_mode() {
        let dev = Config::dev_defaults();
        assert_eq!(dev.storage, Storage::Inmem);
        assert_eq!(dev.listeners, vec![plain(DEFAULT_ADDRESS)]);
        assert!(dev.disable_mlock && dev.ui && dev.raw_storage_endpoint);
        assert!(!dev.unauthenticated_metrics_access && dev.warnings.is_empty());
    }

    #[test]
    fn storage_layouts() {
        let sled = Storage::Sled { path: "/data".into() };
        let cases = [
            (Format::Hcl, "storage \"sled\" {\n path = \"/data\"\n}\n", sled.clone()),
            (Format::Hcl, "backend \"sled\" {\n path = \"/data\"\n}\n", sled.clone()),
            (Format::Hcl, "storage \"inmem\" {}\n", Storage::Inmem),
            (Format::Json, r#"{"storage":{"sled":{"path":"/data"}}}"#, sled.clone()),
            (Format::Json, r#"{"storage":[{"sled":{"path":"/data"}}]}"#, sled.clone()),
            (Format::Json, r#"{"backend":{"inmem":{}}}"#, Storage::Inmem),
        ];
        for (format, source, expected) in cases {
            let config = parse(source, format, "t").unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(config.storage, expected, "{source}");
        }
    }

    #[test]
    fn scalar_values() {
        let listener = |body: &str| {
            let source = format!("storage \"inmem\" {{}}\nlistener \"tcp\" {{\n{body}\n}}\n");
            parse(&source, Format::Hcl, "t")
                .map(|c| c.listeners.into_iter().next())
                .unwrap_or_else(|e| panic!("{body}: {e}"))
                .unwrap_or_else(|| panic!("{body}: no listener"))
        };
        let size = |s: &str| listener(&format!("tls_disable = true\nmax_request_size = {s}")).max_request_size;
        assert_eq!(size("0"), Some(DEFAULT_MAX_REQUEST_SIZE));
        assert_eq!(size("-1"), None);
        assert_eq!(size("\"1024\""), Some(1024));
        assert_eq!(size("18446744073709551615"), Some(u64::MAX));

        let address = |s: &str| listener(&format!("tls_disable = true\naddress = \"{s}\"")).address;
        assert_eq!(address(""), DEFAULT_ADDRESS);
        assert_eq!(address(":8200"), "0.0.0.0:8200");
        assert_eq!(address("[::]:8200"), "[::]:8200");
        assert_eq!(address("localhost:0"), "localhost:0");
        assert_eq!(listener("tls_disable = true").address, DEFAULT_ADDRESS);

        for (value, disabled) in [
            ("true", true),
            ("false", false),
            ("\"true\"", true),
            ("\"false\"", false),
            ("\"1\"", true),
            ("\"0\"", false),
            ("1", true),
            ("0", false),
        ] {
            let l = listener(&format!("tls_disable = {value}\ntls_cert_file = \"c\"\ntls_key_file = \"k\""));
            assert_eq!(l.tls.is_none(), disabled, "tls_disable = {value}");
        }

        for (s, level) in [
            ("trace", LogLevel::Trace),
            ("DEBUG", LogLevel::Debug),
            (" Info ", LogLevel::Info),
            ("notice", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("Warning", LogLevel::Warn),
            ("err", LogLevel::Error),
            ("error", LogLevel::Error),
        ] {
            assert_eq!(LogLevel::parse(s), Some(level), "{s}");
        }
        assert_eq!(LogLevel::parse("verbose"), None);
        assert_eq!(LogLevel::parse(""), None);
        assert_eq!(LogLevel::Warn.as_filter(), "warn");
        assert_eq!(LogLevel::Error.as_filter(), "error");

        // Vault reads zero and empty as "not set".
        let config = hcl("storage \"inmem\" {}\ndefault_lease_ttl = \"0\"\nmax_lease_ttl = \"\"\napi_addr = \"\"\nlog_level = \"\"\n");
        assert_eq!(config.default_lease_ttl, None);
        assert_eq!(config.max_lease_ttl, None);
        assert_eq!(config.api_addr, None);
        assert_eq!(config.log_level, None);
    }

    #[test]
    fn ignored_vault_settings_only_warn() {
        let config = hcl(r#"
storage "sled" {
  path = "/d"
  redirect_addr = "http://x"
}
listener "tcp" {
  tls_disable = true
  tls_cert_file = "ignored.pem"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file = "/ca.pem"
  x_forwarded_for_authorized_addrs = "10.0.0.0/8"
  proxy_protocol_behavior = "use_always"
  http_read_timeout = "30s"
  telemetry {
    unauthenticated_metrics_access = true
  }
}
ha_storage "consul" {}
pid_file = "/run/vault.pid"
cluster_name = "c"
disable_cache = true
disable_clustering = true
plugin_directory = "/p"
introspection_endpoint = true
enable_response_header_hostname = true
enable_response_header_raft_node_id = true
disable_sealwrap = true
disable_performance_standby = true
license_path = "/l"
log_format = "json"
log_file = "/var/log/vault.log"
cluster_cipher_suites = "x"
"#);
        assert!(config.unauthenticated_metrics_access);
        assert!(!config.raw_storage_endpoint);
        assert!(config.disable_cache, "disable_cache now takes effect (the etcd read cache)");
        assert!(config.disable_standby_reads, "Vault's disable_performance_standby stops standby reads");
        assert!(config.disable_clustering, "disable_clustering now takes effect (HA standbys redirect)");
        let expect = [
            "storage.sled.redirect_addr",
            "listener.tcp.tls_require_and_verify_client_cert",
            "listener.tcp.tls_client_ca_file",
            "listener.tcp.x_forwarded_for_authorized_addrs",
            "listener.tcp.proxy_protocol_behavior",
            "listener.tcp.http_read_timeout",
            "ha_storage",
            "pid_file",
            "cluster_name",
            "plugin_directory",
            "introspection_endpoint",
            "enable_response_header_hostname",
            "enable_response_header_raft_node_id",
            "disable_sealwrap",
            "license_path",
            "log_format",
            "log_file",
            "cluster_cipher_suites",
        ];
        for key in expect {
            let line = format!("config.hcl: key {key} is accepted for Vault compatibility and ignored");
            assert!(config.warnings.contains(&line), "missing {line:?} in {:#?}", config.warnings);
        }
        let tls_note = "config.hcl: key listener.tcp.tls_cert_file is ignored because tls_disable is set";
        assert!(config.warnings.iter().any(|w| w == tls_note), "{:#?}", config.warnings);
        assert_eq!(config.warnings.len(), expect.len() + 1, "{:#?}", config.warnings);
        assert!(!config.warnings.iter().any(|w| w.contains("secret-ish")), "ignored values must not be echoed");
    }

    /// Each case: format, source, the key the error must name, and the expectation it must state.
    fn check_error(format: Format, source: &str, key: &str, expectation: &str) {
        let origin = match format {
            Format::Hcl => "config.hcl",
            Format::Json => "config.json",
        };
        let err = match parse(source, format, origin) {
            Ok(config) => panic!("{source:?} parsed: {config:?}"),
            Err(e) => e.to_string(),
        };
        let prefix = format!("{origin}: {key}");
        assert!(
            err.starts_with(&prefix) && err.contains(expectation),
            "source {source:?}\n  error: {err}\n  wanted prefix {prefix:?} and {expectation:?}"
        );
    }

    #[test]
    fn errors_name_origin_key_and_expectation() {
        const S: &str = "storage \"inmem\" {}\n";
        let tcp = |body: &str| format!("{S}listener \"tcp\" {{\n{body}\n}}\n");
        let cases: Vec<(Format, String, &str, &str)> = vec![
            (Format::Hcl, format!("{S}colour = \"blue\"\n"), "colour", "unknown key; expected one of storage, backend, listener"),
            (Format::Hcl, tcp("tls_disable = true\nbogus = 1"), "listener.tcp.bogus", "unknown key; expected one of address, tls_disable"),
            (Format::Hcl, tcp("tls_disable = \"maybe\""), "listener.tcp.tls_disable", "expected true or false, got \"maybe\""),
            (Format::Hcl, tcp("tls_disable = [true]"), "listener.tcp.tls_disable", "expected true or false, got a list"),
            (Format::Hcl, tcp("tls_cert_file = \"c\"\ntls_key_file = \"k\"\ntls_min_version = \"tls11\""), "listener.tcp.tls_min_version", "expected one of tls12, tls13, got \"tls11\" (the minimum supported version is tls12)"),
            (Format::Hcl, tcp("tls_cert_file = \"c\"\ntls_key_file = \"k\"\ntls_min_version = \"ssl3\""), "listener.tcp.tls_min_version", "expected one of tls12, tls13, got \"ssl3\""),
            (Format::Hcl, tcp("address = \"127.0.0.1:8200\""), "listener.tcp.tls_cert_file", "missing; a certificate and key are required when TLS is enabled"),
            (Format::Hcl, tcp("tls_cert_file = \"c\""), "listener.tcp.tls_key_file", "missing; a certificate and key are required when TLS is enabled"),
            (Format::Hcl, tcp("tls_disable = 1\naddress = \"8200\""), "listener.tcp.address", "expected host:port such as \"127.0.0.1:8200\""),
            (Format::Hcl, tcp("tls_disable = 1\naddress = \"{{ GetPrivateIP }}:8200\""), "listener.tcp.address", "expected host:port"),
            (Format::Hcl, tcp("tls_disable = 1\naddress = \"::1:8200\""), "listener.tcp.address", "expected host:port"),
            (Format::Hcl, tcp("tls_disable = 1\naddress = \"127.0.0.1:65536\""), "listener.tcp.address", "expected host:port"),
            (Format::Hcl, tcp("tls_disable = 1\nmax_request_size = 1.5"), "listener.tcp.max_request_size", "expected a whole number of bytes, got 1.5"),
            (Format::Hcl, tcp("tls_disable = 1\ntelemetry {\n other = 1\n}"), "listener.tcp.telemetry.other", "unknown key; expected one of unauthenticated_metrics_access"),
            (Format::Hcl, tcp("tls_disable = 1\ntype = \"unix\""), "listener.tcp.type", "expected \"tcp\", as in the block label, got \"unix\""),
            (Format::Hcl, format!("{S}listener \"unix\" {{}}\n"), "listener.unix", "unsupported listener type \"unix\"; supported types are tcp"),
            (Format::Hcl, format!("{S}listener {{}}\n"), "listener", "expected a listener type"),
            (Format::Json, r#"{"storage":{"inmem":{}},"listener":[{"tcp":{"tls_disable":true}},{"tcp":{"tls_disable":true,"nope":1}}]}"#.to_string(), "listener[1].tcp.nope", "unknown key"),
            (Format::Json, r#"{"storage":{"inmem":{}},"listener":"tcp"}"#.to_string(), "listener", "expected a block, got \"tcp\""),
            (Format::Hcl, "storage \"raft\" {\n path = \"/x\"\n}\n".to_string(), "storage.raft", "unsupported storage type \"raft\"; supported types are sled, etcd, inmem"),
            (Format::Json, r#"{"backend":{"consul":{}}}"#.to_string(), "backend.consul", "unsupported storage type \"consul\"; supported types are sled, etcd, inmem"),
            (Format::Hcl, "storage \"sled\" {}\n".to_string(), "storage.sled.path", "missing; expected the directory"),
            (Format::Hcl, "storage \"sled\" {\n path = 5\n}\n".to_string(), "storage.sled.path", "expected a string, got 5"),
            (Format::Hcl, "storage \"sled\" {\n path = \"/x\"\n size = 5\n}\n".to_string(), "storage.sled.size", "unknown key; expected one of path"),
            (Format::Hcl, "storage \"inmem\" {\n path = \"/x\"\n}\n".to_string(), "storage.inmem.path", "the inmem storage takes no settings"),
            (Format::Hcl, "storage \"inmem\" {}\nstorage \"inmem\" {}\n".to_string(), "storage.inmem[1]", "only one storage block is allowed"),
            (Format::Json, r#"{"storage":{"inmem":{}},"Storage":{"inmem":{}}}"#.to_string(), "storage", "only one storage block is allowed"),
            (Format::Hcl, "storage {}\n".to_string(), "storage", "expected a storage type (sled, etcd, inmem)"),
            (Format::Hcl, "ui = true\nlistener \"tcp\" {\n tls_disable = true\n}\n".to_string(), "storage", "missing; expected a storage block such as storage \"sled\""),
            (Format::Json, "{}".to_string(), "storage", "missing"),
            (Format::Json, "[]".to_string(), "(top level)", "expected an object of settings, got a list"),
            (Format::Hcl, format!("{S}default_lease_ttl = \"800h\"\nmax_lease_ttl = \"768h\"\n"), "default_lease_ttl", "expected at most max_lease_ttl (2764800s), got 2880000s"),
            (Format::Hcl, format!("{S}default_lease_ttl = \"1d2h\"\n"), "default_lease_ttl", "expected a duration such as \"768h\" or a number of seconds: unknown unit \"d\" in duration \"1d2h\""),
            (Format::Json, r#"{"storage":{"inmem":{}},"max_lease_ttl":-1}"#.to_string(), "max_lease_ttl", "negative durations are not allowed"),
            (Format::Hcl, format!("{S}log_level = \"loud\"\n"), "log_level", "expected one of trace, debug, info, warn, error, got \"loud\""),
            (Format::Hcl, format!("{S}api_addr = \"vault:8200\"\n"), "api_addr", "expected a URL such as"),
            (Format::Hcl, format!("{S}ui = \"yes please\"\n"), "ui", "expected true or false, got \"yes please\""),
            (Format::Hcl, format!("{S}disable_mlock = {{}}\n"), "disable_mlock", "expected true or false, got a block"),
            (Format::Hcl, format!("{S}telemetry {{\n statsd = \"x\"\n}}\n"), "telemetry.statsd", "unknown key; expected unauthenticated_metrics_access or another Vault telemetry setting"),
            (Format::Hcl, format!("{S}telemetry {{}}\ntelemetry {{}}\n"), "telemetry[1]", "only one telemetry block is allowed"),
            (Format::Hcl, format!("{S}api_addr = \"{}\"\n", "x".repeat(500)), "api_addr", "got \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\"\n"),
        ];
        for (format, source, key, expectation) in cases {
            check_error(format, &source, key, expectation.trim_end_matches('\n'));
        }
    }

    #[test]
    fn long_values_and_keys_are_cut_short() {
        let long = "y".repeat(10_000);
        let err = parse(&format!("storage \"inmem\" {{}}\napi_addr = \"{long}\"\n"), Format::Hcl, "c")
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
        let err =
            parse(&format!(r#"{{"storage":{{"inmem":{{}}}},"{long}":1}}"#), Format::Json, "c").unwrap_err().to_string();
        // The message names the valid keys too; what matters is that the 10,000-character key is cut.
        assert!(err.len() < 500 && !err.contains(&long[..200]), "{err}");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = parse("storage \"inmem\" {}\n\nlistener \"tcp\" {\n  address = \n}\n", Format::Hcl, "config.hcl")
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        assert!(text.starts_with("config.hcl: invalid HCL:"), "{text}");
        assert!(text.contains("line 4, column"), "{text}");

        let err = parse("{\"storage\": {\n\"inmem\": {},}}", Format::Json, "config.json").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("config.json: invalid JSON: "), "{text}");
        assert!(text.contains("line 2 column"), "{text}");
    }

    #[test]
    fn load_picks_format_by_extension_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("arcanum-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json_path = dir.join("vault.JSON");
        std::fs::write(&json_path, r#"{"storage":{"inmem":{}}}"#).unwrap();
        let hcl_path = dir.join("vault.conf");
        std::fs::write(&hcl_path, "storage \"inmem\" {}\nbogus = 1\n").unwrap();
        let missing = dir.join("missing.hcl");

        let loaded = load(&json_path);
        let bad = load(&hcl_path).map(|_| ()).unwrap_err().to_string();
        let absent = load(&missing).map(|_| ()).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(loaded.unwrap().storage, Storage::Inmem);
        assert!(bad.starts_with(&format!("{}: bogus: unknown key", hcl_path.display())), "{bad}");
        assert!(matches!(absent, ConfigError::Io { .. }));
        assert!(absent.to_string().starts_with(&missing.display().to_string()));
        assert_eq!(Format::from_path(Path::new("a.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a.hcl")), Format::Hcl);
        assert_eq!(Format::from_path(Path::new("json")), Format::Hcl);
    }

    fn etcd(source: &str) -> Result<EtcdStorage, ConfigError> {
        etcd_with_env(source, &[])
    }

    fn etcd_with_env(source: &str, env: &[(&str, &str)]) -> Result<EtcdStorage, ConfigError> {
        let mut config = parse(source, Format::Hcl, "c.hcl")?;
        config.apply_env("c.hcl", |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))?;
        match config.storage {
            Storage::Etcd(etcd) => Ok(*etcd),
            other => panic!("not etcd: {other:?}"),
        }
    }

    #[test]
    fn etcd_storage_with_vaults_names_and_defaults() {
        let full = etcd(
            r#"storage "etcd" {
  address = "https://10.0.0.1:2379, https://10.0.0.2:2379"
  path = "vault"
  ha_enabled = "true"
  username = "arcanum"
  password = "s3cret"
  tls_ca_file = "/etc/etcd/ca.pem"
  tls_cert_file = "/etc/etcd/client.pem"
  tls_key_file = "/etc/etcd/client-key.pem"
  tls_server_name = "etcd.internal"
  request_timeout = "2s"
  lock_timeout = 20
  etcd_api = "v3"
  sync = "false"
  max_request_bytes = 10485760
  max_txn_ops = 1024
}"#,
        )
        .unwrap();
        assert_eq!(full.address, ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert_eq!(full.path, "/vault/");
        assert!(full.ha_enabled);
        assert_eq!((full.username.as_deref(), full.password.as_deref()), (Some("arcanum"), Some("s3cret")));
        assert_eq!(full.tls_server_name.as_deref(), Some("etcd.internal"));
        assert_eq!(full.tls_key_file, Some(PathBuf::from("/etc/etcd/client-key.pem")));
        assert_eq!((full.request_timeout, full.lock_timeout), (Duration::from_secs(2), Duration::from_secs(20)));
        assert_eq!((full.max_request_bytes, full.max_txn_ops), (10_485_760, 1024));
        assert!(!format!("{full:?}").contains("s3cret"), "Debug shows the password");

        let minimal = etcd("storage \"etcd\" {\n address = \"http://127.0.0.1:2379\"\n}\n").unwrap();
        assert_eq!(minimal.path, "/arcanum/");
        assert!(!minimal.ha_enabled);
        assert_eq!(minimal.request_timeout, ETCD_DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(minimal.max_request_bytes, ETCD_DEFAULT_MAX_REQUEST_BYTES);
        for (written, normalised) in [("/a/b", "/a/b/"), ("a/", "/a/"), ("/", "/")] {
            let source = format!("storage \"etcd\" {{\n address = \"http://e:2379\"\n path = \"{written}\"\n}}\n");
            assert_eq!(etcd(&source).unwrap().path, normalised);
        }
    }

    #[test]
    fn kubernetes_service_registration_from_the_file_and_the_environment() {
        let with_env = |source: &str, env: &[(&str, &str)]| {
            let mut config = parse(source, Format::Hcl, "c.hcl")?;
            config.apply_env("c.hcl", |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))?;
            Ok::<_, ConfigError>(config.service_registration)
        };
        let base = "storage \"inmem\" {}\n";
        let file = format!(
            "{base}service_registration \"kubernetes\" {{\n  namespace = \"vault\"\n  pod_name = \"arcanum-0\"\n}}\n"
        );
        let registration = with_env(&file, &[]).unwrap().expect("registration");
        assert_eq!(
            (registration.namespace.as_deref(), registration.pod_name.as_deref()),
            (Some("vault"), Some("arcanum-0"))
        );
        let overridden = with_env(&file, &[("VAULT_K8S_POD_NAME", "arcanum-2")]).unwrap().expect("registration");
        assert_eq!(overridden.pod_name.as_deref(), Some("arcanum-2"));
        let bare = format!("{base}service_registration \"kubernetes\" {{}}\n");
        let err = with_env(&bare, &[("VAULT_K8S_NAMESPACE", "vault")]).unwrap_err().to_string();
        assert!(
            err.contains("service_registration.kubernetes.pod_name") && err.contains("VAULT_K8S_POD_NAME"),
            "{err}"
        );
        let from_env = with_env(&bare, &[("VAULT_K8S_NAMESPACE", "vault"), ("VAULT_K8S_POD_NAME", "p")])
            .unwrap()
            .expect("registration");
        assert_eq!(from_env.namespace.as_deref(), Some("vault"));
        let err = with_env(&format!("{base}service_registration \"zookeeper\" {{}}\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("unsupported service registration type"), "{err}");
        let err = with_env(&format!("{base}service_registration \"kubernetes\" {{ pod = \"x\" }}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("service_registration.kubernetes.pod") && err.contains("pod_name"), "{err}");
        assert_eq!(
            with_env(base, &[("VAULT_K8S_POD_NAME", "p")]).unwrap(),
            None,
            "the variables alone register nothing"
        );
    }

    #[test]
    fn etcd_environment_wins_over_the_file() {
        let source = "storage \"etcd\" {\n address = \"http://file:2379\"\n}\n";
        let etcd = etcd_with_env(
            source,
            &[
                ("ETCD_ADDR", "http://a:2379,http://b:2379"),
                ("ETCD_HA_ENABLED", "1"),
                ("ETCD_USERNAME", "u"),
                ("ETCD_PASSWORD", "p"),
            ],
        )
        .unwrap();
        assert_eq!(etcd.address, ["http://a:2379", "http://b:2379"]);
        assert!(etcd.ha_enabled);
        assert_eq!((etcd.username.as_deref(), etcd.password.as_deref()), (Some("u"), Some("p")));
        // No address in the file: ETCD_ADDR alone is enough.
        let from_env = etcd_with_env("storage \"etcd\" {}\n", &[("ETCD_ADDR", "http://env:2379")]).unwrap();
        assert_eq!(from_env.address, ["http://env:2379"]);
        let err = etcd_with_env(source, &[("ETCD_HA_ENABLED", "maybe")]).unwrap_err().to_string();
        assert!(err.contains("storage.etcd.ha_enabled") && err.contains("ETCD_HA_ENABLED"), "{err}");
    }

    #[test]
    fn etcd_errors_name_the_parameter() {
        let cases = [
            ("storage \"etcd\" {}\n", "storage.etcd.address: missing"),
            ("storage \"etcd\" {\n address = \"127.0.0.1:2379\"\n}\n", "storage.etcd.address: expected http:// or https:// URLs"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n colour = 1\n}\n", "storage.etcd.colour: unknown key; expected one of address, path"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n etcd_api = \"v2\"\n}\n", "storage.etcd.etcd_api: the etcd v2 API is not supported"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n discovery_srv = \"x\"\n}\n", "storage.etcd.discovery_srv: DNS SRV discovery is not supported"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n username = \"u\"\n}\n", "storage.etcd.password: missing"),
            ("storage \"etcd\" {\n address = \"https://e:2379\"\n}\n", "storage.etcd.tls_ca_file: missing"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n tls_ca_file = \"/ca\"\n}\n", "storage.etcd.address: TLS settings are given but the addresses are http://"),
            ("storage \"etcd\" {\n address = \"https://e:2379\"\n tls_ca_file = \"/ca\"\n tls_cert_file = \"/c\"\n}\n", "storage.etcd.tls_key_file: missing"),
            ("storage \"etcd\" {\n address = \"http://a:2379,https://b:2379\"\n}\n", "storage.etcd.address: mixes http:// and https://"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n request_timeout = \"soon\"\n}\n", "storage.etcd.request_timeout: expected a duration"),
            ("storage \"etcd\" {\n address = \"http://e:2379\"\n max_txn_ops = 0\n}\n", "storage.etcd.max_txn_ops: expected a whole number"),
        ];
        for (source, expected) in cases {
            let err = etcd(source).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with(&format!("c.hcl: {expected}")), "{source:?} gave {err:?}");
        }
    }

    #[test]
    fn migration_configs_name_source_and_destination() {
        let config = parse_migration(
            "storage_source \"sled\" {\n path = \"/var/lib/arcanum\"\n}\nstorage_destination \"etcd\" {\n address = \"http://e:2379\"\n path = \"/prod/\"\n}\ncluster_addr = \"https://x:8201\"\n",
            Format::Hcl,
            "m.hcl",
        )
        .unwrap();
        assert_eq!(config.source, Storage::Sled { path: "/var/lib/arcanum".into() });
        let Storage::Etcd(etcd) = &config.destination else { panic!("{:?}", config.destination) };
        assert_eq!((etcd.address.clone(), etcd.path.as_str()), (vec!["http://e:2379".to_string()], "/prod/"));
        assert_eq!(config.warnings.len(), 1, "cluster_addr is accepted and ignored");
        let json = parse_migration(
            r#"{"storage_source":{"etcd":{"address":"http://a:2379"}},"storage_destination":{"sled":{"path":"/d"}}}"#,
            Format::Json,
            "m.json",
        )
        .unwrap();
        assert_eq!(json.destination, Storage::Sled { path: "/d".into() });

        for (source, expected) in [
            ("storage_destination \"sled\" {\n path = \"/d\"\n}\n", "m.hcl: storage_source: missing"),
            ("storage_source \"sled\" {\n path = \"/d\"\n}\n", "m.hcl: storage_destination: missing"),
            (
                "storage_source \"sled\" {\n path = \"/s\"\n}\nstorage_destination \"etcd\" {}\n",
                "m.hcl: storage_destination.etcd.address: missing",
            ),
            (
                "storage_source \"raft\" {}\nstorage_destination \"sled\" {\n path = \"/d\"\n}\n",
                "m.hcl: storage_source.raft: unsupported storage type",
            ),
            ("storage \"sled\" {\n path = \"/d\"\n}\n", "m.hcl: storage: unknown key; expected one of storage_source"),
        ] {
            let err = parse_migration(source, Format::Hcl, "m.hcl").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{source:?} gave {err:?}");
        }
    }
}
