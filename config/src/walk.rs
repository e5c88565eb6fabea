//! The validating walker: checks a generic config tree key by key and builds a [`Config`].

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::parse_duration_value;
use crate::{
    quote, Config, ConfigError, ConnectionLimits, EtcdStorage, KubernetesRegistration, Listener, LogLevel,
    MigrationConfig, SealBlock, SealKind, Storage, Tls, TlsVersion, TransitSeal, UserLockout, DEFAULT_ADDRESS,
    DEFAULT_MAX_REQUEST_SIZE, ETCD_DEFAULT_LOCK_TIMEOUT, ETCD_DEFAULT_MAX_REQUEST_BYTES, ETCD_DEFAULT_MAX_TXN_OPS,
    ETCD_DEFAULT_PATH, ETCD_DEFAULT_REQUEST_TIMEOUT,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "storage",
    "backend",
    "listener",
    "api_addr",
    "cluster_addr",
    "log_level",
    "default_lease_ttl",
    "max_lease_ttl",
    "disable_mlock",
    "ui",
    "raw_storage_endpoint",
    "telemetry",
    "lease_revocation_max_attempts",
    "lease_revocation_max_backoff",
    "lease_revocation_concurrency",
    "cache_size",
    "disable_cache",
    "disable_clustering",
    "disable_standby_reads",
    "user_lockout",
    "service_registration",
    "seal",
];

/// Valid Vault server settings that Arcanum has no use for.
const IGNORED_TOP_LEVEL: &[&str] = &[
    "administrative_namespace_path",
    "cluster_cipher_suites",
    "cloud",
    "cluster_name",
    "default_max_request_duration",
    "detect_deadlocks",
    "disable_indexing",
    "disable_printable_check",
    "disable_sealwrap",
    "disable_sentinel_trace",
    "enable_post_unseal_trace",
    "enable_response_header_hostname",
    "enable_response_header_raft_node_id",
    "entropy",
    "experiments",
    "ha_backend",
    "ha_storage",
    "hcp_link",
    "hsm",
    "imprecise_lease_role_tracking",
    "introspection_endpoint",
    "kms",
    "kms_library",
    "license_path",
    "log_file",
    "log_format",
    "log_requests_level",
    "log_rotate_bytes",
    "log_rotate_duration",
    "log_rotate_max_files",
    "observations",
    "pid_file",
    "plugin_directory",
    "plugin_file_permissions",
    "plugin_file_uid",
    "plugin_tmpdir",
    "post_unseal_trace_directory",
    "remove_irrevocable_lease_after",
];

/// What `seal "transit"` takes (Vault's names).
const TRANSIT_SEAL_KEYS: &[&str] = &[
    "address",
    "token",
    "key_name",
    "mount_path",
    "namespace",
    "disable_renewal",
    "tls_ca_cert",
    "tls_client_cert",
    "tls_client_key",
    "tls_server_name",
    "tls_skip_verify",
    "disabled",
];

const STORAGE_TYPES: &str = "sled, etcd, inmem";

/// What `storage "etcd"` takes (Vault's names, plus etcd's two limits).
const ETCD_KEYS: &[&str] = &[
    "address",
    "path",
    "ha_enabled",
    "username",
    "password",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_server_name",
    "request_timeout",
    "lock_timeout",
    "etcd_api",
    "max_request_bytes",
    "max_txn_ops",
];

/// Vault's etcd settings Arcanum has no use for.
const IGNORED_ETCD: &[&str] = &["sync", "max_receive_size", "max_send_size"];

/// Settings Vault reads from inside any storage block rather than from the backend itself.
const IGNORED_STORAGE: &[&str] = &["redirect_addr", "advertise_addr", "cluster_addr", "disable_clustering"];

const LISTENER_KEYS: &[&str] = &[
    "address",
    "tls_disable",
    "tls_cert_file",
    "tls_key_file",
    "tls_min_version",
    "max_request_size",
    "http_read_header_timeout",
    "http_idle_timeout",
    "max_connections",
    "telemetry",
];

/// Valid Vault TCP listener settings that Arcanum has no use for.
const IGNORED_LISTENER: &[&str] = &[
    "agent_api",
    "chroot_namespace",
    "cluster_address",
    "cors_allowed_headers",
    "cors_allowed_origins",
    "cors_enabled",
    "custom_response_headers",
    "disable_replication_status_endpoints",
    "disable_request_limiter",
    "disable_unauthed_rekey_endpoints",
    "http_read_timeout",
    "http_write_timeout",
    "inflight_requests_logging",
    "max_json_array_element_count",
    "max_json_depth",
    "max_json_object_entry_count",
    "max_json_string_value_length",
    "max_json_token",
    "max_request_duration",
    "max_token_header_size",
    "profiling",
    "proxy_protocol_authorized_addrs",
    "proxy_api",
    "proxy_protocol_behavior",
    "purpose",
    "redact_addresses",
    "redact_cluster_name",
    "redact_version",
    "require_request_header",
    "role",
    "socket_group",
    "socket_mode",
    "socket_user",
    "tls_cipher_suites",
    "tls_client_ca_file",
    "tls_disable_client_certs",
    "tls_max_version",
    "tls_prefer_server_cipher_suites",
    "tls_require_and_verify_client_cert",
    "x_forwarded_for_authorized_addrs",
    "x_forwarded_for_client_cert_header",
    "x_forwarded_for_client_cert_header_decoders",
    "x_forwarded_for_hop_skips",
    "x_forwarded_for_reject_not_authorized",
    "x_forwarded_for_reject_not_present",
];

/// Vault's top-level telemetry settings (besides the `circonus_*` family), all ignored.
const IGNORED_TELEMETRY: &[&str] = &[
    "add_lease_metrics_namespace_labels",
    "add_mount_point_rollback_metrics",
    "disable_hostname",
    "dogstatsd_addr",
    "dogstatsd_tags",
    "enable_hostname_label",
    "filter_default",
    "lease_metrics_epsilon",
    "maximum_gauge_cardinality",
    "metrics_prefix",
    "num_lease_metrics_buckets",
    "prefix_filter",
    "prometheus_retention_time",
    "stackdriver_debug_logs",
    "stackdriver_location",
    "stackdriver_namespace",
    "stackdriver_project_id",
    "statsd_address",
    "statsite_address",
    "usage_gauge_period",
];

const METRICS_KEY: &str = "unauthenticated_metrics_access";

/// Vault's CamelCase aliases (lowercased) of top-level keys.
const TOP_LEVEL_ALIASES: &[(&str, &str)] = &[
    ("maxleasettl", "max_lease_ttl"),
    ("defaultleasettl", "default_lease_ttl"),
    ("enablerawendpoint", "raw_storage_endpoint"),
    ("removeirrevocableleaseafter", "remove_irrevocable_lease_after"),
    ("pluginfilepermissions", "plugin_file_permissions"),
    ("enableintrospectionendpoint", "introspection_endpoint"),
    ("disableclustering", "disable_clustering"),
    ("disableperformancestandby", "disable_performance_standby"),
    ("disablesealwrap", "disable_sealwrap"),
    ("disableindexing", "disable_indexing"),
    ("disablesentineltrace", "disable_sentinel_trace"),
];

const TELEMETRY_ALIASES: &[(&str, &str)] = &[("unauthenticatedmetricsaccess", METRICS_KEY)];

type Object = Map<String, Value>;

pub(crate) fn migration(tree: &Value, origin: &str) -> Result<MigrationConfig, ConfigError> {
    let mut walker = Walker { origin, warnings: Vec::new(), metrics: false };
    let Value::Object(top) = tree else {
        return Err(walker.invalid("(top level)", format!("expected an object of settings, got {}", describe(tree))));
    };
    let (mut source, mut destination) = (None, None);
    for (key, value) in top {
        match key.to_ascii_lowercase().as_str() {
            "storage_source" if source.is_some() => {
                return Err(walker.invalid(key, "only one storage_source block is allowed"))
            }
            "storage_source" => source = Some(walker.storage(key, value)?),
            "storage_destination" if destination.is_some() => {
                return Err(walker.invalid(key, "only one storage_destination block is allowed"))
            }
            "storage_destination" => destination = Some(walker.storage(key, value)?),
            // Only a raft destination needs it, and Arcanum has no raft.
            "cluster_addr" => walker.ignore(key),
            _ => return Err(walker.unknown(key, "", &["storage_source", "storage_destination", "cluster_addr"])),
        }
    }
    let missing = |key: &str| {
        walker.invalid(key, format!("missing; expected a {key} block such as {key} \"sled\" {{ path = \"...\" }}"))
    };
    let source = source.ok_or_else(|| missing("storage_source"))?;
    let destination = destination.ok_or_else(|| missing("storage_destination"))?;
    Ok(MigrationConfig { source, destination, warnings: walker.warnings })
}

pub(crate) fn config(tree: &Value, origin: &str) -> Result<Config, ConfigError> {
    let mut walker = Walker { origin, warnings: Vec::new(), metrics: false };
    walker.top_level(tree)
}

struct Walker<'a> {
    origin: &'a str,
    warnings: Vec<String>,
    metrics: bool,
}

impl Walker<'_> {
    fn top_level(&mut self, tree: &Value) -> Result<Config, ConfigError> {
        let Value::Object(top) = tree else {
            return Err(self.invalid("(top level)", format!("expected an object of settings, got {}", describe(tree))));
        };
        let mut storage_blocks = Vec::new();
        let mut backend_blocks = Vec::new();
        let mut listeners = Vec::new();
        let mut api_addr = None;
        let mut log_level = None;
        let mut default_lease_ttl = None;
        let mut max_lease_ttl = None;
        let mut disable_mlock = false;
        let mut ui = false;
        let mut raw_storage_endpoint = false;
        let mut lease_revocation_max_attempts = None;
        let mut lease_revocation_max_backoff = None;
        let mut lease_revocation_concurrency = None;
        let mut cache_size = None;
        let mut cluster_addr = None;
        let mut disable_cache = false;
        let mut disable_clustering = false;
        let mut disable_standby_reads = false;
        let mut user_lockout = BTreeMap::new();
        let mut service_registration = None;
        let mut seals = Vec::new();
        for (key, value) in top {
            match canonical(key, TOP_LEVEL_ALIASES).as_str() {
                "storage" => storage_blocks.push((key, value)),
                "backend" => backend_blocks.push((key, value)),
                "listener" => self.listeners(value, &mut listeners)?,
                "api_addr" => api_addr = self.api_addr(value, key)?,
                "cluster_addr" => cluster_addr = self.api_addr(value, key)?,
                "log_level" => log_level = self.log_level(value, key)?,
                "default_lease_ttl" => default_lease_ttl = self.duration(value, key)?,
                "max_lease_ttl" => max_lease_ttl = self.duration(value, key)?,
                "disable_mlock" => disable_mlock = self.boolean(value, key)?,
                "ui" => ui = self.boolean(value, key)?,
                "raw_storage_endpoint" => raw_storage_endpoint = self.boolean(value, key)?,
                "telemetry" => self.telemetry(value, key)?,
                "lease_revocation_max_attempts" => lease_revocation_max_attempts = Some(self.positive(value, key)?),
                "lease_revocation_max_backoff" => lease_revocation_max_backoff = self.duration(value, key)?,
                "lease_revocation_concurrency" => lease_revocation_concurrency = Some(self.positive(value, key)?),
                "cache_size" => cache_size = Some(self.positive(value, key)?),
                "disable_cache" => disable_cache = self.boolean(value, key)?,
                "disable_clustering" => disable_clustering = self.boolean(value, key)?,
                // Vault Enterprise's name for the same switch.
                "disable_standby_reads" | "disable_performance_standby" => {
                    disable_standby_reads = self.boolean(value, key)?
                }
                "service_registration" => service_registration = self.service_registration(value, key)?,
                "user_lockout" => self.user_lockout(value, key, &mut user_lockout)?,
                "seal" => self.seals(value, key, &mut seals)?,
                k if IGNORED_TOP_LEVEL.contains(&k) => self.ignore(key),
                _ => return Err(self.unknown(key, "", TOP_LEVEL_KEYS)),
            }
        }
        // As in Vault, `backend` (the old name) only counts when there is no `storage`.
        let storage_blocks = if storage_blocks.is_empty() {
            backend_blocks
        } else {
            for (key, _) in backend_blocks {
                self.note(format!("key {} is ignored because storage is set", short(key)));
            }
            storage_blocks
        };
        let storage = match storage_blocks.as_slice() {
            [] => {
                return Err(self.invalid(
                    "storage",
                    "missing; expected a storage block such as storage \"sled\" { path = \"/var/lib/arcanum\" } or storage \"inmem\" {}",
                ))
            }
            [(key, value)] => self.storage(key, value)?,
            [_, (key, _), ..] => {
                return Err(self.invalid(key, "only one storage block is allowed"))
            }
        };
        if let (Some(default), Some(max)) = (default_lease_ttl, max_lease_ttl) {
            if default > max {
                return Err(self.invalid(
                    "default_lease_ttl",
                    format!("expected at most max_lease_ttl ({max:?}), got {default:?}"),
                ));
            }
        }
        Ok(Config {
            storage,
            listeners,
            api_addr,
            cluster_addr,
            log_level,
            default_lease_ttl,
            max_lease_ttl,
            disable_mlock,
            ui,
            raw_storage_endpoint,
            unauthenticated_metrics_access: self.metrics,
            lease_revocation_max_attempts,
            lease_revocation_max_backoff,
            lease_revocation_concurrency,
            cache_size,
            disable_cache,
            disable_clustering,
            disable_standby_reads,
            user_lockout,
            service_registration,
            seals,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn storage(&mut self, key: &str, value: &Value) -> Result<Storage, ConfigError> {
        let mut found: Vec<(String, String, &Object)> = Vec::new();
        for (path, types) in self.blocks(value, key)? {
            for (kind, body) in types {
                let kind_path = format!("{path}.{}", short(kind));
                let kind = kind.to_ascii_lowercase();
                if kind != "sled" && kind != "inmem" && kind != "etcd" {
                    return Err(self.invalid(
                        &kind_path,
                        format!("unsupported storage type {}; supported types are {STORAGE_TYPES}", quote(&kind)),
                    ));
                }
                for (body_path, body) in self.blocks(body, &kind_path)? {
                    found.push((kind.clone(), body_path, body));
                }
            }
        }
        let (kind, path, body) = match found.as_slice() {
            [] => {
                return Err(self.invalid(
                    key,
                    format!(
                    "expected a storage type ({STORAGE_TYPES}), as in {key} \"sled\" {{ path = \"/var/lib/arcanum\" }}"
                ),
                ))
            }
            [only] => only,
            [_, (_, second, _), ..] => return Err(self.invalid(second, "only one storage block is allowed")),
        };
        if kind == "etcd" {
            return self.etcd(path, body).map(|etcd| Storage::Etcd(Box::new(etcd)));
        }
        let mut sled_path = None;
        for (k, v) in *body {
            let key_path = format!("{path}.{}", short(k));
            match (kind.as_str(), k.to_ascii_lowercase().as_str()) {
                ("sled", "path") => sled_path = Some(self.string(v, &key_path)?),
                (_, k) if IGNORED_STORAGE.contains(&k) => self.ignore(&key_path),
                ("sled", _) => return Err(self.unknown(k, path, &["path"])),
                _ => return Err(self.invalid(&key_path, "unknown key; the inmem storage takes no settings")),
            }
        }
        if kind == "inmem" {
            return Ok(Storage::Inmem);
        }
        match sled_path {
            Some(p) if !p.is_empty() => Ok(Storage::Sled { path: PathBuf::from(p) }),
            _ => {
                Err(self.invalid(&format!("{path}.path"), "missing; expected the directory where sled keeps its data"))
            }
        }
    }

    /// `service_registration "kubernetes" { namespace, pod_name }`; Vault's `consul` is noted
    /// and ignored.
    fn service_registration(
        &mut self,
        value: &Value,
        key: &str,
    ) -> Result<Option<KubernetesRegistration>, ConfigError> {
        let mut found = None;
        for (path, types) in self.blocks(value, key)? {
            for (kind, body) in types {
                let kind_path = format!("{path}.{}", short(kind));
                match kind.to_ascii_lowercase().as_str() {
                    "kubernetes" => {}
                    "consul" => {
                        self.ignore(&kind_path);
                        continue;
                    }
                    other => {
                        return Err(self.invalid(
                            &kind_path,
                            format!("unsupported service registration type {}; supported: kubernetes", quote(other)),
                        ))
                    }
                }
                if found.is_some() {
                    return Err(self.invalid(&kind_path, "only one service_registration block is allowed"));
                }
                let mut registration = KubernetesRegistration::default();
                for (body_path, body) in self.blocks(body, &kind_path)? {
                    for (k, v) in body {
                        let key_path = format!("{body_path}.{}", short(k));
                        match k.to_ascii_lowercase().as_str() {
                            "namespace" => registration.namespace = Some(self.string(v, &key_path)?.to_owned()),
                            "pod_name" => registration.pod_name = Some(self.string(v, &key_path)?.to_owned()),
                            _ => return Err(self.unknown(k, &body_path, &["namespace", "pod_name"])),
                        }
                    }
                }
                found = Some(registration);
            }
        }
        Ok(found)
    }

    /// `seal "shamir"` and `seal "transit"`. Any other type is refused by name: a server that
    /// silently fell back to Shamir would leave the operator's auto-unseal unconfigured.
    /// `user_lockout "<label>" { ... }`, labels Vault's: `all`, `userpass`, `approle`, `ldap`.
    fn user_lockout(
        &mut self,
        value: &Value,
        key: &str,
        out: &mut BTreeMap<String, UserLockout>,
    ) -> Result<(), ConfigError> {
        const KEYS: &[&str] = &["lockout_threshold", "lockout_duration", "lockout_counter_reset", "disable_lockout"];
        for (path, labels) in self.blocks(value, key)? {
            for (label, body) in labels {
                let label_path = format!("{path}.{}", short(label));
                let label = label.to_ascii_lowercase();
                if !matches!(label.as_str(), "all" | "userpass" | "approle" | "ldap") {
                    return Err(self.invalid(
                        &label_path,
                        format!("unsupported auth method {}; expected all, userpass, approle or ldap", quote(&label)),
                    ));
                }
                let mut stanza = UserLockout::default();
                for (body_path, body) in self.blocks(body, &label_path)? {
                    for (k, v) in body {
                        let key_path = format!("{body_path}.{}", short(k));
                        match k.to_ascii_lowercase().as_str() {
                            "lockout_threshold" => stanza.lockout_threshold = Some(self.positive(v, &key_path)?),
                            "lockout_duration" => stanza.lockout_duration = Some(self.timeout(v, &key_path)?),
                            "lockout_counter_reset" => stanza.lockout_counter_reset = Some(self.timeout(v, &key_path)?),
                            "disable_lockout" => stanza.disable_lockout = Some(self.boolean(v, &key_path)?),
                            _ => return Err(self.unknown(k, &body_path, KEYS)),
                        }
                    }
                }
                out.insert(label, stanza);
            }
        }
        Ok(())
    }

    fn seals(&mut self, value: &Value, key: &str, out: &mut Vec<SealBlock>) -> Result<(), ConfigError> {
        for (path, types) in self.blocks(value, key)? {
            for (kind, body) in types {
                let kind_path = format!("{path}.{}", short(kind));
                let mut transit = TransitSeal::default();
                let mut disabled = false;
                let is_transit = match kind.to_ascii_lowercase().as_str() {
                    "transit" => true,
                    "shamir" => false,
                    other => {
                        return Err(self.invalid(
                            &kind_path,
                            format!("unsupported seal type {}; supported: shamir, transit", quote(other)),
                        ))
                    }
                };
                for (body_path, body) in self.blocks(body, &kind_path)? {
                    for (k, v) in body {
                        let key_path = format!("{body_path}.{}", short(k));
                        let text = |walker: &Self| walker.string(v, &key_path).map(|s| Some(s.to_owned()));
                        match (is_transit, k.to_ascii_lowercase().as_str()) {
                            (_, "disabled") => disabled = self.boolean(v, &key_path)?,
                            (true, "address") => transit.address = text(self)?,
                            (true, "token") => transit.token = text(self)?,
                            (true, "key_name") => transit.key_name = text(self)?,
                            (true, "mount_path") => transit.mount_path = text(self)?,
                            (true, "namespace") => transit.namespace = text(self)?,
                            (true, "disable_renewal") => transit.disable_renewal = Some(self.boolean(v, &key_path)?),
                            (true, "tls_ca_cert") => transit.tls_ca_cert = text(self)?,
                            (true, "tls_client_cert") => transit.tls_client_cert = text(self)?,
                            (true, "tls_client_key") => transit.tls_client_key = text(self)?,
                            (true, "tls_server_name") => transit.tls_server_name = text(self)?,
                            (true, "tls_skip_verify") => transit.tls_skip_verify = Some(self.boolean(v, &key_path)?),
                            (true, _) => return Err(self.unknown(k, &body_path, TRANSIT_SEAL_KEYS)),
                            (false, _) => return Err(self.unknown(k, &body_path, &["disabled"])),
                        }
                    }
                }
                let kind = if is_transit { SealKind::Transit(Box::new(transit)) } else { SealKind::Shamir };
                out.push(SealBlock { kind, disabled });
            }
        }
        match (out.len(), out.iter().filter(|seal| !seal.disabled).count()) {
            (0 | 1, _) => Ok(()),
            (2, 1) => Ok(()),
            (2, _) => Err(self.invalid(
                key,
                "two seal blocks are only allowed while migrating, with the old one marked disabled = \"true\"",
            )),
            _ => Err(self.invalid(key, "at most two seal blocks are allowed (the old one, disabled, and the new one)")),
        }
    }

    fn etcd(&mut self, path: &str, body: &Object) -> Result<EtcdStorage, ConfigError> {
        let mut etcd = EtcdStorage {
            address: Vec::new(),
            path: ETCD_DEFAULT_PATH.to_string(),
            ha_enabled: false,
            username: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            request_timeout: ETCD_DEFAULT_REQUEST_TIMEOUT,
            lock_timeout: ETCD_DEFAULT_LOCK_TIMEOUT,
            max_request_bytes: ETCD_DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: ETCD_DEFAULT_MAX_TXN_OPS,
        };
        let file = |s: &str| non_empty(s).map(PathBuf::from);
        for (k, v) in body {
            let key_path = format!("{path}.{}", short(k));
            match k.to_ascii_lowercase().as_str() {
                "address" => {
                    etcd.address =
                        etcd_addresses(self.string(v, &key_path)?).map_err(|why| self.invalid(&key_path, why))?
                }
                "path" => {
                    let prefix = self.string(v, &key_path)?.trim();
                    if prefix.contains('\0') {
                        return Err(self.invalid(&key_path, "must not contain a NUL byte"));
                    }
                    // Vault prepends the '/'; the trailing one keeps `/a` from sharing keys with `/ab`.
                    let prefix = prefix.trim_matches('/');
                    etcd.path = if prefix.is_empty() { "/".into() } else { format!("/{prefix}/") };
                }
                "ha_enabled" => etcd.ha_enabled = self.boolean(v, &key_path)?,
                "username" => etcd.username = non_empty(self.string(v, &key_path)?),
                "password" => etcd.password = non_empty(self.string(v, &key_path)?),
                "tls_ca_file" => etcd.tls_ca_file = file(self.string(v, &key_path)?),
                "tls_cert_file" => etcd.tls_cert_file = file(self.string(v, &key_path)?),
                "tls_key_file" => etcd.tls_key_file = file(self.string(v, &key_path)?),
                "tls_server_name" => etcd.tls_server_name = non_empty(self.string(v, &key_path)?),
                "request_timeout" => {
                    etcd.request_timeout = self.duration(v, &key_path)?.unwrap_or(ETCD_DEFAULT_REQUEST_TIMEOUT)
                }
                "lock_timeout" => etcd.lock_timeout = self.duration(v, &key_path)?.unwrap_or(ETCD_DEFAULT_LOCK_TIMEOUT),
                "max_request_bytes" => etcd.max_request_bytes = u64::from(self.positive(v, &key_path)?),
                "max_txn_ops" => etcd.max_txn_ops = self.positive(v, &key_path)?.max(2),
                "etcd_api" => match self.string(v, &key_path)?.trim().trim_start_matches('v') {
                    "" | "3" => {}
                    "2" => {
                        return Err(
                            self.invalid(&key_path, "the etcd v2 API is not supported (Vault dropped it too); use v3")
                        )
                    }
                    other => return Err(self.invalid(&key_path, format!("expected v3, got {}", quote(other)))),
                },
                "discovery_srv" | "discovery_srv_name" => {
                    return Err(
                        self.invalid(&key_path, "DNS SRV discovery is not supported; list the members in address")
                    )
                }
                k if IGNORED_ETCD.contains(&k) || IGNORED_STORAGE.contains(&k) => self.ignore(&key_path),
                _ => return Err(self.unknown(k, path, ETCD_KEYS)),
            }
        }
        Ok(etcd)
    }

    fn listeners(&mut self, value: &Value, out: &mut Vec<Listener>) -> Result<(), ConfigError> {
        for (path, entry) in self.blocks(value, "listener")? {
            // Vault also accepts an unlabelled `listener { type = "tcp" ... }`.
            if let Some(Value::String(kind)) = get_ignore_case(entry, "type") {
                let type_path = format!("{path}.type");
                self.check_listener_type(kind, &type_path)?;
                out.push(self.listener(&path, entry)?);
                continue;
            }
            if entry.is_empty() {
                return Err(self.invalid(
                    &path,
                    "expected a listener type, as in listener \"tcp\" { address = \"127.0.0.1:8200\" }",
                ));
            }
            for (kind, bodies) in entry {
                let kind_path = format!("{path}.{}", short(kind));
                self.check_listener_type(kind, &kind_path)?;
                for (body_path, body) in self.blocks(bodies, &kind_path)? {
                    if let Some(inner) = get_ignore_case(body, "type") {
                        let matches = matches!(inner, Value::String(t) if t.eq_ignore_ascii_case(kind));
                        if !matches {
                            return Err(self.invalid(
                                &format!("{body_path}.type"),
                                format!("expected {}, as in the block label, got {}", quote(kind), describe(inner)),
                            ));
                        }
                    }
                    out.push(self.listener(&body_path, body)?);
                }
            }
        }
        Ok(())
    }

    fn check_listener_type(&self, kind: &str, path: &str) -> Result<(), ConfigError> {
        if kind.eq_ignore_ascii_case("tcp") {
            Ok(())
        } else {
            Err(self.invalid(path, format!("unsupported listener type {}; supported types are tcp", quote(kind))))
        }
    }

    fn listener(&mut self, path: &str, body: &Object) -> Result<Listener, ConfigError> {
        let mut address = DEFAULT_ADDRESS.to_string();
        let mut tls_disable = false;
        let mut cert_file = None;
        let mut key_file = None;
        let mut min_version = TlsVersion::Tls12;
        let mut max_request_size = Some(DEFAULT_MAX_REQUEST_SIZE);
        let mut connections = ConnectionLimits::default();
        for (k, v) in body {
            let key_path = format!("{path}.{}", short(k));
            match k.to_ascii_lowercase().as_str() {
                // Checked by the caller against the label.
                "type" => {}
                "address" => address = self.address(v, &key_path)?,
                "tls_disable" => tls_disable = self.boolean(v, &key_path)?,
                "tls_cert_file" => cert_file = non_empty(self.string(v, &key_path)?),
                "tls_key_file" => key_file = non_empty(self.string(v, &key_path)?),
                "tls_min_version" => min_version = self.tls_version(v, &key_path)?,
                "max_request_size" => max_request_size = self.request_size(v, &key_path)?,
                // Vault's 0 means no timeout; a connection that may stay quiet forever is what
                // these exist to prevent, so 0 is refused.
                "http_read_header_timeout" => connections.read_header_timeout = self.timeout(v, &key_path)?,
                "http_idle_timeout" => connections.idle_timeout = self.timeout(v, &key_path)?,
                "max_connections" => connections.max_connections = Some(self.positive(v, &key_path)?),
                "telemetry" => self.listener_telemetry(v, &key_path)?,
                k if IGNORED_LISTENER.contains(&k) => self.ignore(&key_path),
                _ => return Err(self.unknown(k, path, LISTENER_KEYS)),
            }
        }
        let tls = if tls_disable {
            for (name, set) in [("tls_cert_file", cert_file.is_some()), ("tls_key_file", key_file.is_some())] {
                if set {
                    self.note(format!("key {path}.{name} is ignored because tls_disable is set"));
                }
            }
            None
        } else {
            let required = |name: &str| {
                self.invalid(
                    &format!("{path}.{name}"),
                    "missing; a certificate and key are required when TLS is enabled (set tls_disable = true to serve plain HTTP)",
                )
            };
            let cert_file = cert_file.ok_or_else(|| required("tls_cert_file"))?;
            let key_file = key_file.ok_or_else(|| required("tls_key_file"))?;
            Some(Tls { cert_file: PathBuf::from(cert_file), key_file: PathBuf::from(key_file), min_version })
        };
        Ok(Listener { address, tls, max_request_size, connections })
    }

    /// Vault documents `unauthenticated_metrics_access` in the listener's telemetry block.
    fn listener_telemetry(&mut self, value: &Value, path: &str) -> Result<(), ConfigError> {
        for (block_path, body) in self.blocks(value, path)? {
            for (k, v) in body {
                if canonical(k, TELEMETRY_ALIASES) != METRICS_KEY {
                    return Err(self.unknown(k, &block_path, &[METRICS_KEY]));
                }
                let allowed = self.boolean(v, &format!("{block_path}.{k}"))?;
                self.metrics |= allowed;
            }
        }
        Ok(())
    }

    fn telemetry(&mut self, value: &Value, path: &str) -> Result<(), ConfigError> {
        let blocks = self.blocks(value, path)?;
        if let Some((second, _)) = blocks.get(1) {
            return Err(self.invalid(second, "only one telemetry block is allowed"));
        }
        for (block_path, body) in blocks {
            for (k, v) in body {
                let key_path = format!("{block_path}.{}", short(k));
                let canon = canonical(k, TELEMETRY_ALIASES);
                if canon == METRICS_KEY {
                    let allowed = self.boolean(v, &key_path)?;
                    self.metrics |= allowed;
                } else if IGNORED_TELEMETRY.contains(&canon.as_str()) || canon.starts_with("circonus_") {
                    self.ignore(&key_path);
                } else {
                    return Err(self.invalid(
                        &key_path,
                        format!("unknown key; expected {METRICS_KEY} or another Vault telemetry setting"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn api_addr(&self, value: &Value, path: &str) -> Result<Option<String>, ConfigError> {
        let s = self.string(value, path)?;
        if s.is_empty() {
            return Ok(None);
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Some(s.to_string()))
        } else {
            Err(self
                .invalid(path, format!("expected a URL such as \"https://vault.example.com:8200\", got {}", quote(s))))
        }
    }

    fn log_level(&self, value: &Value, path: &str) -> Result<Option<LogLevel>, ConfigError> {
        let s = self.string(value, path)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        LogLevel::parse(s).map(Some).ok_or_else(|| {
            self.invalid(path, format!("expected one of trace, debug, info, warn, error, got {}", quote(s)))
        })
    }

    fn duration(&self, value: &Value, path: &str) -> Result<Option<Duration>, ConfigError> {
        let d = parse_duration_value(value).map_err(|why| {
            self.invalid(path, format!("expected a duration such as \"768h\" or a number of seconds: {why}"))
        })?;
        Ok(Some(d).filter(|d| !d.is_zero()))
    }

    fn timeout(&self, value: &Value, path: &str) -> Result<Duration, ConfigError> {
        self.duration(value, path)?
            .ok_or_else(|| self.invalid(path, "must be longer than 0 (a connection may not stay quiet forever)"))
    }

    fn tls_version(&self, value: &Value, path: &str) -> Result<TlsVersion, ConfigError> {
        let s = self.string(value, path)?;
        match s {
            "" | "tls12" => Ok(TlsVersion::Tls12),
            "tls13" => Ok(TlsVersion::Tls13),
            _ => {
                let why = if s == "tls10" || s == "tls11" { " (the minimum supported version is tls12)" } else { "" };
                Err(self.invalid(path, format!("expected one of tls12, tls13, got {}{why}", quote(s))))
            }
        }
    }

    /// Vault: zero means the default, a negative value disables the limit.
    fn request_size(&self, value: &Value, path: &str) -> Result<Option<u64>, ConfigError> {
        let n: Option<i128> = match value {
            Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) => s.trim().parse::<i64>().ok().map(i128::from),
            _ => None,
        };
        let n =
            n.ok_or_else(|| self.invalid(path, format!("expected a whole number of bytes, got {}", describe(value))))?;
        Ok(match n {
            0 => Some(DEFAULT_MAX_REQUEST_SIZE),
            n if n < 0 => None,
            n => Some(u64::try_from(n).unwrap_or(u64::MAX)),
        })
    }

    fn address(&self, value: &Value, path: &str) -> Result<String, ConfigError> {
        let s = self.string(value, path)?;
        if s.is_empty() {
            return Ok(DEFAULT_ADDRESS.to_string());
        }
        let bad = || {
            self.invalid(
                path,
                format!("expected host:port such as \"127.0.0.1:8200\" or \"[::]:8200\", got {}", quote(s)),
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        if host.is_empty() {
            // Go reads ":8200" as every interface.
            return Ok(format!("0.0.0.0:{port}"));
        }
        let host_ok = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.strip_suffix(']').is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
            None => host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'),
        };
        if host_ok {
            Ok(s.to_string())
        } else {
            Err(bad())
        }
    }

    fn string<'v>(&self, value: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.invalid(path, format!("expected a string, got {}", describe(other)))),
        }
    }

    /// A whole number of at least one, written as a number or a string of digits.
    fn positive(&self, value: &Value, path: &str) -> Result<u32, ConfigError> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        parsed.filter(|n| *n >= 1).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            self.invalid(path, format!("expected a whole number of at least 1, got {}", describe(value)))
        })
    }

    /// Vault's `parseutil.ParseBool`: booleans, Go's `strconv.ParseBool` strings, and integers.
    fn boolean(&self, value: &Value, path: &str) -> Result<bool, ConfigError> {
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => parse_bool(s),
            Value::Number(n) => n.as_i64().map(|i| i != 0).or_else(|| n.as_u64().map(|_| true)),
            _ => None,
        };
        parsed.ok_or_else(|| self.invalid(path, format!("expected true or false, got {}", describe(value))))
    }

    /// A block body, or several when a block is repeated (a list of bodies).
    fn blocks<'v>(&self, value: &'v Value, path: &str) -> Result<Vec<(String, &'v Object)>, ConfigError> {
        let not_block = |p: &str, v: &Value| self.invalid(p, format!("expected a block, got {}", describe(v)));
        match value {
            Value::Object(body) => Ok(vec![(path.to_string(), body)]),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let item_path = format!("{path}[{i}]");
                    match item {
                        Value::Object(body) => Ok((item_path, body)),
                        other => Err(not_block(&item_path, other)),
                    }
                })
                .collect(),
            other => Err(not_block(path, other)),
        }
    }

    fn ignore(&mut self, path: &str) {
        self.note(format!("key {path} is accepted for Vault compatibility and ignored"));
    }

    fn note(&mut self, message: String) {
        self.warnings.push(format!("{}: {message}", self.origin));
    }

    fn unknown(&self, key: &str, parent: &str, expected: &[&str]) -> ConfigError {
        let path = if parent.is_empty() { short(key) } else { format!("{parent}.{}", short(key)) };
        self.invalid(&path, format!("unknown key; expected one of {}", expected.join(", ")))
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { origin: self.origin.to_string(), key: key.to_string(), message: message.into() }
    }
}

/// Vault's HCL decoder matches keys case-insensitively and knows a few CamelCase aliases
/// (`MaxLeaseTTL`); this maps a key to the one spelling the walker matches on.
fn canonical(key: &str, aliases: &[(&str, &str)]) -> String {
    let lower = key.to_ascii_lowercase();
    aliases.iter().find(|(alias, _)| *alias == lower).map_or(lower, |(_, name)| (*name).to_string())
}

/// Go's `strconv.ParseBool`, with the empty string as false (as Vault reads config strings).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// etcd's `address`: comma-separated client URLs, each `http://` or `https://`.
pub(crate) fn etcd_addresses(list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        return Err("expected the etcd client URLs, comma-separated (http://127.0.0.1:2379)".into());
    }
    for url in &urls {
        let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(format!("expected http:// or https:// URLs, got {}", quote(url)));
        }
    }
    Ok(urls)
}

fn get_ignore_case<'v>(body: &'v Object, key: &str) -> Option<&'v Value> {
    body.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.to_string()).filter(|s| !s.is_empty())
}

/// A key as it may appear inside an error's key path: JSON keys can be any text, so a long one
/// is cut like a value would be.
fn short(key: &str) -> String {
    match key.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", key.get(..cut).unwrap_or_default()),
        None => key.to_string(),
    }
}

/// A value as it may appear in an error message: scalars shown (strings quoted and cut short),
/// compound values only named.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a block".to_string(),
    }
}
