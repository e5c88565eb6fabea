//! `sys/mounts`, `sys/auth`, `sys/remount` and `sys/internal/ui/mounts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use arcanum_contract::backend::SYSTEM_MAX_TTL;
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Request, Response};
use arcanum_contract::mount::{MountEntry, MountTableKind};
use arcanum_core::mounts::{apply_config, normalize_mount_path};
use arcanum_core::Unsealed;

pub(super) async fn handle(unsealed: &Arc<Unsealed>, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let path = req.path.as_str();
    let (table, rest) = if let Some(rest) = path.strip_prefix("sys/mounts") {
        (MountTableKind::Secret, rest)
    } else if let Some(rest) = path.strip_prefix("sys/auth") {
        (MountTableKind::Auth, rest)
    } else if path == "sys/remount" {
        return Some(match req.operation {
            Update => remount(unsealed, req).await,
            _ => Err(ApiError::unsupported_operation()),
        });
    } else {
        return None;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    let result = if rest.is_empty() || rest == "/" {
        match req.operation {
            Read => Ok(list(unsealed, table)),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if let Some(mount_path) = rest.strip_suffix("/tune") {
        let mount_path = normalize_mount_path(mount_path);
        match req.operation {
            Read => read_tune(unsealed, table, &mount_path),
            Update => tune(unsealed, table, &mount_path, req).await,
            _ => Err(ApiError::unsupported_operation()),
        }
    } else {
        let mount_path = normalize_mount_path(rest);
        match req.operation {
            Read => read_one(unsealed, table, &mount_path),
            Update => enable(unsealed, table, &mount_path, req).await,
            Delete => unsealed.disable_mount(table, &mount_path).await.map(|()| Response::NoContent),
            _ => Err(ApiError::unsupported_operation()),
        }
    };
    Some(result)
}

fn list(unsealed: &Unsealed, table: MountTableKind) -> Response {
    let mut data = Map::new();
    for entry in unsealed.mounts.entries(table) {
        data.insert(entry.path.clone(), entry.info());
    }
    Response::injected(data)
}

fn read_one(unsealed: &Unsealed, table: MountTableKind, path: &str) -> Result<Response, ApiError> {
    let mount = unsealed
        .mounts
        .get(table, path)
        .ok_or_else(|| ApiError::bad_request(format!("No secret engine mount at {path}")))?;
    let Value::Object(info) = mount.entry.info() else { return Err(ApiError::internal()) };
    Ok(Response::injected(info))
}

fn string_field(req: &Request, name: &str) -> Result<String, ApiError> {
    arcanum_contract::fields::string(req.field(name), name)
}

fn bool_field(req: &Request, name: &str) -> Result<bool, ApiError> {
    super::seal::bool_field(req, name)
}

fn options_field(req: &Request) -> Result<BTreeMap<String, String>, ApiError> {
    arcanum_contract::fields::string_map(req.field("options"), "options")
}

async fn enable(unsealed: &Unsealed, table: MountTableKind, path: &str, req: &Request) -> Result<Response, ApiError> {
    let mut kind = string_field(req, "type")?;
    if kind.is_empty() {
        return Err(ApiError::bad_request("backend type must be specified as a string"));
    }
    let mut options = options_field(req)?;
    match kind.as_str() {
        "kv-v1" => {
            kind = "kv".into();
            options.insert("version".into(), "1".into());
        }
        "kv-v2" => {
            kind = "kv".into();
            options.insert("version".into(), "2".into());
        }
        "generic" => kind = "kv".into(),
        _ => {}
    }
    if let Some(version) = options.get("version") {
        if kind != "kv" {
            return Err(ApiError::bad_request(format!("the version option is only for kv mounts, not {kind}")));
        }
        if !matches!(version.as_str(), "1" | "2") {
            return Err(ApiError::bad_request(format!("invalid kv version {version:?}: expected 1 or 2")));
        }
    }
    let mut entry = MountEntry::new(table, path, &kind, &string_field(req, "description")?);
    entry.options = options;
    entry.local = bool_field(req, "local")?;
    entry.seal_wrap = bool_field(req, "seal_wrap")?;
    entry.external_entropy_access = bool_field(req, "external_entropy_access")?;
    match req.field("config") {
        None => {}
        Some(Value::Object(config)) => apply_config(table, &mut entry.config, config)?,
        Some(_) => return Err(ApiError::bad_request("config must be an object")),
    }
    if table == MountTableKind::Auth && kind == "token" {
        return Err(ApiError::bad_request("token credential backend cannot be instantiated"));
    }
    unsealed.mounts.enable(entry).await?;
    Ok(Response::NoContent)
}

fn effective(ttl: u64) -> u64 {
    if ttl == 0 {
        SYSTEM_MAX_TTL
    } else {
        ttl
    }
}

fn read_tune(unsealed: &Unsealed, table: MountTableKind, path: &str) -> Result<Response, ApiError> {
    let mount = unsealed
        .mounts
        .get(table, path)
        .ok_or_else(|| ApiError::bad_request(format!("cannot fetch sysview for path {path:?}")))?;
    let entry = &mount.entry;
    let mut data = Map::new();
    data.insert("default_lease_ttl".into(), json!(effective(entry.config.default_lease_ttl)));
    data.insert("max_lease_ttl".into(), json!(effective(entry.config.max_lease_ttl)));
    data.insert("force_no_cache".into(), json!(entry.config.force_no_cache));
    data.insert("description".into(), json!(entry.description));
    if !entry.options.is_empty() {
        data.insert("options".into(), json!(entry.options));
    }
    if let Value::Object(info) = entry.info() {
        if let Some(Value::Object(config)) = info.get("config") {
            for (key, value) in config {
                data.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    Ok(Response::injected(data))
}

async fn tune(unsealed: &Unsealed, table: MountTableKind, path: &str, req: &Request) -> Result<Response, ApiError> {
    let mount = unsealed
        .mounts
        .get(table, path)
        .ok_or_else(|| ApiError::bad_request(format!("cannot tune {path:?}: no such mount")))?;
    let mut entry = MountEntry::clone(&mount.entry);
    apply_config(table, &mut entry.config, &req.data)?;
    if req.data.get("user_lockout_config").is_some_and(|v| !v.is_null())
        && !matches!(entry.kind.as_str(), "userpass" | "approle" | "ldap")
    {
        return Err(ApiError::bad_request(format!(
            "user_lockout_config applies to userpass and approle mounts, not {}",
            entry.kind
        )));
    }
    if let Some(Value::String(description)) = req.field("description") {
        entry.description = description.clone();
    }
    let mut warnings = Vec::new();
    let options = options_field(req)?;
    if let Some(version) = options.get("version") {
        let current = entry.options.get("version").map(String::as_str).unwrap_or("1");
        match (entry.kind.as_str(), current, version.as_str()) {
            ("kv", "1", "2") => {
                let upgraded = arcanum_engines::kv::upgrade_v1_to_v2(&mount.view).await?;
                warnings.push(format!(
                    "Upgraded mount from KV version 1 to version 2 ({upgraded} secrets became version 1)"
                ));
            }
            ("kv", from, to) if from == to => {}
            ("kv", "2", "1") => {
                return Err(ApiError::bad_request("cannot downgrade mount from KV version 2 to version 1"))
            }
            ("kv", _, other) => return Err(ApiError::bad_request(format!("invalid kv version {other:?}"))),
            (other, _, _) => {
                return Err(ApiError::bad_request(format!("the version option is only for kv mounts, not {other}")))
            }
        }
    }
    entry.options.extend(options);
    unsealed.mounts.update(entry).await?;
    if warnings.is_empty() {
        Ok(Response::NoContent)
    } else {
        Ok(Response::Logical(Box::new(LogicalResponse { warnings, ..Default::default() })))
    }
}

async fn remount(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    let from = string_field(req, "from")?;
    let to = string_field(req, "to")?;
    if from.is_empty() || to.is_empty() {
        return Err(ApiError::bad_request("both 'from' and 'to' must be specified"));
    }
    let (table, from, to) = match (from.strip_prefix("auth/"), to.strip_prefix("auth/")) {
        (Some(f), Some(t)) => (MountTableKind::Auth, normalize_mount_path(f), normalize_mount_path(t)),
        (None, None) => (MountTableKind::Secret, normalize_mount_path(&from), normalize_mount_path(&to)),
        _ => return Err(ApiError::bad_request("cannot remount between secret engines and auth methods")),
    };
    // Leases name the path that issued them; moving the mount under them would strand them.
    if let Some(mount) = unsealed.mounts.get(table, &from) {
        let leases = unsealed.expiration.lease_ids_under(&mount.route).await?;
        if !leases.is_empty() {
            return Err(ApiError::bad_request(format!(
                "cannot remount {}: it has {} active leases; revoke them first (sys/leases/revoke-prefix/{})",
                mount.route,
                leases.len(),
                mount.route
            )));
        }
    }
    unsealed.mounts.remount(table, &from, &to).await?;
    let mut data = Map::new();
    data.insert("migration_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    Ok(Response::data(data))
}

/// `sys/internal/ui/mounts`: what the vault CLI and agent use to find a mount and its KV
/// version. Without a token only `listing_visibility = "unauth"` mounts are shown; with one,
/// the mounts the token has any capability under.
pub(super) async fn internal_ui_mounts(unsealed: &Arc<Unsealed>, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    let token = match req.client_token.as_deref() {
        Some(value) => unsealed.tokens.lookup(value).await?,
        None => None,
    };
    let acl = token.as_ref().map(|t| unsealed.policies.acl(&t.policies));
    let visible = |route: &str, entry: &MountEntry| match &acl {
        Some(acl) => acl.is_root() || has_any_under(acl, route),
        None => entry.config.listing_visibility == "unauth",
    };
    if let Some(path) = req.path.strip_prefix("sys/internal/ui/mounts/") {
        let path = path.trim_start_matches('/');
        let refused = || {
            ApiError::new(
                403,
                format!("preflight capability check returned 403, please ensure client's policies grant access to path {path:?}"),
            )
        };
        let Some(acl) = &acl else { return Err(refused()) };
        let (mount, _) = unsealed.mounts.resolve(path).ok_or_else(refused)?;
        if !acl.is_root() && !has_any_under(acl, &mount.entry.route_prefix()) {
            return Err(refused());
        }
        let Value::Object(mut info) = mount.entry.info() else { return Err(ApiError::internal()) };
        info.insert("path".into(), json!(mount.entry.route_prefix()));
        return Ok(Response::data(info));
    }
    let mut secret = Map::new();
    let mut auth = Map::new();
    for entry in unsealed.mounts.entries(MountTableKind::Secret) {
        if visible(&entry.route_prefix(), &entry) {
            secret.insert(entry.path.clone(), entry.info());
        }
    }
    for entry in unsealed.mounts.entries(MountTableKind::Auth) {
        if visible(&entry.route_prefix(), &entry) {
            auth.insert(entry.path.clone(), entry.info());
        }
    }
    let mut data = Map::new();
    data.insert("secret".into(), Value::Object(secret));
    data.insert("auth".into(), Value::Object(auth));
    Ok(Response::data(data))
}

/// Vault's mount visibility rule: any capability on the mount or on a rule below it.
fn has_any_under(acl: &arcanum_policy::Acl, prefix: &str) -> bool {
    acl.has_mount_access(prefix)
}
