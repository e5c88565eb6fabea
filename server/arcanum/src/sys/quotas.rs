//! `sys/quotas/config`, `sys/quotas/rate-limit/:name` and `sys/quotas/lease-count/:name`
//! (Vault's resource quota API); enforcement lives in `crate::quotas`.

use std::sync::Arc;

use serde_json::{json, Map};

use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_contract::mount::MountTableKind;
use arcanum_core::Unsealed;
use arcanum_quotas::{LeaseCountQuota, QuotaConfig, QuotaKind, QuotaPath, RateLimitQuota};

pub(super) async fn handle(unsealed: &Arc<Unsealed>, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let rest = req.path.strip_prefix("sys/quotas/")?;
    let (kind, name) = match rest.split_once('/') {
        Some(("rate-limit", name)) => (QuotaKind::RateLimit, name),
        Some(("lease-count", name)) => (QuotaKind::LeaseCount, name),
        None if rest == "config" => {
            return Some(match req.operation {
                Read => Ok(config_response(&unsealed.quotas.config())),
                Update => write_config(unsealed, req).await,
                _ => Err(ApiError::unsupported_operation()),
            });
        }
        _ => return Some(Err(ApiError::no_handler(&req.path))),
    };
    let name = name.trim_end_matches('/');
    if name.contains('/') && req.operation != List {
        return Some(Err(ApiError::bad_request(format!("invalid quota name {name:?}: a name cannot contain '/'"))));
    }
    Some(match (req.operation, name.is_empty()) {
        (List, _) | (Read, true) => unsealed.quotas.list(kind).await.and_then(Response::list),
        (_, true) => Err(ApiError::bad_request("missing quota name")),
        (Read, false) => read(unsealed, kind, name).await,
        (Update, false) => match kind {
            QuotaKind::RateLimit => write_rate_limit(unsealed, req, name).await,
            QuotaKind::LeaseCount => write_lease_count(unsealed, req, name).await,
        },
        (Delete, false) => unsealed.quotas.delete(kind, name).await.map(|()| Response::NoContent),
        _ => Err(ApiError::unsupported_operation()),
    })
}

fn config_response(config: &QuotaConfig) -> Response {
    let mut data = Map::new();
    data.insert("rate_limit_exempt_paths".into(), json!(config.rate_limit_exempt_paths));
    data.insert("enable_rate_limit_audit_logging".into(), json!(config.enable_rate_limit_audit_logging));
    data.insert("enable_rate_limit_response_headers".into(), json!(config.enable_rate_limit_response_headers));
    Response::data(data)
}

async fn write_config(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    let mut config = (*unsealed.quotas.config()).clone();
    if let Some(paths) = fields::string_list(req.field("rate_limit_exempt_paths"), "rate_limit_exempt_paths")? {
        config.rate_limit_exempt_paths = paths;
    }
    if let Some(audit) =
        fields::boolean(req.field("enable_rate_limit_audit_logging"), "enable_rate_limit_audit_logging")?
    {
        if audit {
            // Refused rather than silently ignored: rejected requests are counted in
            // `arcanum_quota_rejections_total`, not written to the audit log.
            return Err(ApiError::bad_request(
                "enable_rate_limit_audit_logging is not supported: rate-limited requests are counted in the \
                 arcanum_quota_rejections_total metric, not audited",
            ));
        }
        config.enable_rate_limit_audit_logging = false;
    }
    if let Some(headers) =
        fields::boolean(req.field("enable_rate_limit_response_headers"), "enable_rate_limit_response_headers")?
    {
        config.enable_rate_limit_response_headers = headers;
    }
    unsealed.quotas.set_config(config).await?;
    Ok(Response::NoContent)
}

async fn read(unsealed: &Unsealed, kind: QuotaKind, name: &str) -> Result<Response, ApiError> {
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    match kind {
        QuotaKind::RateLimit => {
            let quota = unsealed.quotas.rate_limit(name).await?.ok_or_else(ApiError::not_found)?;
            data.insert("type".into(), json!("rate-limit"));
            data.insert("path".into(), json!(quota.scope.path));
            data.insert("role".into(), json!(quota.scope.role));
            data.insert("rate".into(), json!(quota.rate));
            // Vault answers in whole seconds.
            data.insert("interval".into(), json!(quota.interval_ms / 1000));
            data.insert("block_interval".into(), json!(quota.block_interval_ms / 1000));
        }
        QuotaKind::LeaseCount => {
            let (quota, live) = unsealed.quotas.lease_count(name).await?.ok_or_else(ApiError::not_found)?;
            data.insert("type".into(), json!("lease-count"));
            data.insert("path".into(), json!(quota.scope.path));
            data.insert("role".into(), json!(quota.scope.role));
            data.insert("max_leases".into(), json!(quota.max_leases));
            data.insert("counter".into(), json!(live));
        }
    }
    data.insert("inheritable".into(), json!(false));
    Ok(Response::data(data))
}

/// Resolves `path` against the mount table: `""` (global), a mount, or a path inside one
/// (optionally ending in a `*` glob). A role needs a Kubernetes auth mount, whose logins
/// name their role.
fn scope(unsealed: &Unsealed, req: &Request) -> Result<QuotaPath, ApiError> {
    let path = fields::string(req.field("path"), "path")?.trim_start_matches('/').to_owned();
    let role = fields::string(req.field("role"), "role")?;
    if path.is_empty() {
        if !role.is_empty() {
            return Err(ApiError::bad_request("role requires path to be an auth mount"));
        }
        return Ok(QuotaPath { path, mount: String::new(), role });
    }
    if path.contains('*') && !path.ends_with('*') {
        return Err(ApiError::bad_request("invalid path: a glob (*) is only allowed at the end"));
    }
    let bare = path.trim_end_matches('*');
    let (mount, rest) =
        unsealed.mounts.resolve(bare).ok_or_else(|| ApiError::bad_request(format!("invalid mount path {path:?}")))?;
    if path.ends_with('*') && rest.is_empty() {
        return Err(ApiError::bad_request("invalid path: a glob needs a path inside the mount"));
    }
    let role_mount = mount.entry.table == MountTableKind::Auth && mount.backend.has_login_roles() && rest.is_empty();
    if !role.is_empty() && !role_mount {
        return Err(ApiError::bad_request(format!(
            "role is only supported when path is an auth mount whose logins name a role ({} logins do not)",
            mount.entry.kind
        )));
    }
    let path = if rest.is_empty() { mount.route.clone() } else { path };
    Ok(QuotaPath { path, mount: mount.route.clone(), role })
}

fn check_type(req: &Request, expected: &str) -> Result<(), ApiError> {
    let kind = fields::string(req.field("type"), "type")?;
    if !kind.is_empty() && kind != expected {
        return Err(ApiError::bad_request(format!("type must be {expected:?} on this path, not {kind:?}")));
    }
    Ok(())
}

async fn write_rate_limit(unsealed: &Unsealed, req: &Request, name: &str) -> Result<Response, ApiError> {
    check_type(req, "rate-limit")?;
    let existing = unsealed.quotas.rate_limit(name).await?;
    let rate = match req.field("rate") {
        Some(value) => value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| ApiError::bad_request("rate must be a number"))?,
        None => existing.as_ref().map_or(0.0, |quota| quota.rate),
    };
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(ApiError::bad_request("rate must be positive"));
    }
    let millis = |field: &str, default: u64| -> Result<u64, ApiError> {
        match req.field(field) {
            None => Ok(default),
            Some(value) => arcanum_config::duration::parse_duration_value(value)
                .map(|d| d.as_millis() as u64)
                .map_err(|err| ApiError::bad_request(format!("invalid {field}: {err}"))),
        }
    };
    let interval_ms = millis("interval", existing.as_ref().map_or(1000, |quota| quota.interval_ms))?;
    let interval_ms = if interval_ms == 0 { 1000 } else { interval_ms };
    let block_interval_ms = millis("block_interval", existing.as_ref().map_or(0, |quota| quota.block_interval_ms))?;
    let scope = if req.field("path").is_some() || req.field("role").is_some() || existing.is_none() {
        scope(unsealed, req)?
    } else {
        existing.map(|quota| quota.scope).unwrap_or_else(|| QuotaPath {
            path: String::new(),
            mount: String::new(),
            role: String::new(),
        })
    };
    let quota = RateLimitQuota { name: name.to_owned(), scope, rate, interval_ms, block_interval_ms };
    unsealed.quotas.put_rate_limit(quota).await?;
    Ok(Response::NoContent)
}

async fn write_lease_count(unsealed: &Unsealed, req: &Request, name: &str) -> Result<Response, ApiError> {
    check_type(req, "lease-count")?;
    let existing = unsealed.quotas.lease_count(name).await?.map(|(quota, _)| quota);
    let max_leases = match fields::non_negative(req.field("max_leases"), "max_leases")? {
        Some(max) => max,
        None => existing.as_ref().map_or(0, |quota| quota.max_leases),
    };
    if max_leases == 0 {
        return Err(ApiError::bad_request("max_leases must be a positive integer"));
    }
    if !fields::string(req.field("role"), "role")?.is_empty() {
        return Err(ApiError::bad_request("role is not supported on lease-count quotas"));
    }
    let scope = match existing {
        Some(quota) if req.field("path").is_none() => quota.scope,
        _ => scope(unsealed, req)?,
    };
    unsealed.quotas.put_lease_count(LeaseCountQuota { name: name.to_owned(), scope, max_leases }).await?;
    unsealed.count_for_quotas().await?;
    Ok(Response::NoContent)
}
