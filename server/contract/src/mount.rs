//! A mount table row: which engine type serves which path, with its settings. The core keeps
//! the tables; an engine is shown its own row, read-only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which table a mount lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountTableKind {
    Secret,
    Auth,
}

/// Per-mount settings (`config` in Vault's mount info).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountConfig {
    /// Seconds; 0 = the system default.
    pub default_lease_ttl: u64,
    pub max_lease_ttl: u64,
    pub force_no_cache: bool,
    pub audit_non_hmac_request_keys: Vec<String>,
    pub audit_non_hmac_response_keys: Vec<String>,
    pub listing_visibility: String,
    pub passthrough_request_headers: Vec<String>,
    pub allowed_response_headers: Vec<String>,
    /// Auth mounts only.
    pub token_type: Option<String>,
    /// Vault's `user_lockout_config` (userpass and AppRole mounts): what it sets overrides the
    /// server's `user_lockout` stanzas for this mount.
    pub user_lockout: UserLockoutTune,
}

/// A mount's `user_lockout_config`; `None`: the server's setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserLockoutTune {
    pub threshold: Option<u64>,
    /// Seconds.
    pub duration: Option<u64>,
    /// Seconds.
    pub counter_reset: Option<u64>,
    pub disable: Option<bool>,
}

/// One row of a mount table, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountEntry {
    pub table: MountTableKind,
    /// Relative to its table, ending in `/` (`secret/`, `userpass/`).
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub accessor: String,
    pub uuid: String,
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub seal_wrap: bool,
    #[serde(default)]
    pub external_entropy_access: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub config: MountConfig,
}

impl MountEntry {
    pub fn new(table: MountTableKind, path: &str, kind: &str, description: &str) -> MountEntry {
        let accessor = match table {
            MountTableKind::Secret => format!("{kind}_{}", arcanum_crypto::token::random_hex(4)),
            MountTableKind::Auth => format!("auth_{kind}_{}", arcanum_crypto::token::random_hex(4)),
        };
        MountEntry {
            table,
            path: path.to_owned(),
            kind: kind.to_owned(),
            description: description.to_owned(),
            accessor,
            uuid: uuid::Uuid::new_v4().to_string(),
            local: false,
            seal_wrap: false,
            external_entropy_access: false,
            options: BTreeMap::new(),
            config: MountConfig::default(),
        }
    }

    /// The request path prefix that reaches this mount (`secret/`, `auth/userpass/`).
    pub fn route_prefix(&self) -> String {
        match self.table {
            MountTableKind::Secret => self.path.clone(),
            MountTableKind::Auth => format!("auth/{}", self.path),
        }
    }

    /// Storage prefix of the mount's private view.
    pub fn storage_prefix(&self) -> String {
        match self.table {
            MountTableKind::Secret => format!("logical/{}/", self.uuid),
            MountTableKind::Auth => format!("auth/{}/", self.uuid),
        }
    }

    /// Vault's mount info object (`sys/mounts`, `sys/auth`, `sys/internal/ui/mounts/*`).
    pub fn info(&self) -> Value {
        let mut config = json!({
            "default_lease_ttl": self.config.default_lease_ttl,
            "max_lease_ttl": self.config.max_lease_ttl,
            "force_no_cache": self.config.force_no_cache,
        });
        if let Value::Object(map) = &mut config {
            if !self.config.audit_non_hmac_request_keys.is_empty() {
                map.insert("audit_non_hmac_request_keys".into(), json!(self.config.audit_non_hmac_request_keys));
            }
            if !self.config.audit_non_hmac_response_keys.is_empty() {
                map.insert("audit_non_hmac_response_keys".into(), json!(self.config.audit_non_hmac_response_keys));
            }
            if !self.config.listing_visibility.is_empty() {
                map.insert("listing_visibility".into(), json!(self.config.listing_visibility));
            }
            if !self.config.passthrough_request_headers.is_empty() {
                map.insert("passthrough_request_headers".into(), json!(self.config.passthrough_request_headers));
            }
            if !self.config.allowed_response_headers.is_empty() {
                map.insert("allowed_response_headers".into(), json!(self.config.allowed_response_headers));
            }
            if self.table == MountTableKind::Auth {
                map.insert("token_type".into(), json!(self.config.token_type.as_deref().unwrap_or("default-service")));
            }
            let lockout = &self.config.user_lockout;
            for (name, value) in [
                ("user_lockout_threshold", lockout.threshold.map(|v| json!(v))),
                ("user_lockout_duration", lockout.duration.map(|v| json!(v))),
                ("user_lockout_counter_reset_duration", lockout.counter_reset.map(|v| json!(v))),
                ("user_lockout_disable", lockout.disable.map(|v| json!(v))),
            ] {
                if let Some(value) = value {
                    map.insert(name.into(), value);
                }
            }
        }
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "local": self.local,
            "seal_wrap": self.seal_wrap,
            "external_entropy_access": self.external_entropy_access,
            "options": if self.options.is_empty() { Value::Null } else { json!(self.options) },
            "config": config,
            "plugin_version": "",
            "running_plugin_version": format!("v{}+builtin.arcanum", env!("CARGO_PKG_VERSION")),
            "running_sha256": "",
            "deprecation_status": "supported",
        })
    }
}
