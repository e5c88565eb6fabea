//! `sys/leases/*` and Vault's legacy aliases (`sys/renew`, `sys/revoke`, `sys/revoke-prefix`,
//! `sys/revoke-force`). The leases themselves live in `core::expiration`.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Request, Response};
use arcanum_core::Unsealed;

pub(super) async fn handle(unsealed: &Arc<Unsealed>, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let path = req.path.as_str();
    let rest = path.strip_prefix("sys/leases/").or_else(|| {
        // The legacy names map onto the new ones.
        ["renew", "revoke", "revoke-prefix", "revoke-force"]
            .iter()
            .find(|name| path == format!("sys/{name}") || path.starts_with(&format!("sys/{name}/")))
            .map(|_| &path["sys/".len()..])
    });
    let Some(rest) = rest else {
        if path == "sys/leases" {
            return Some(match req.operation {
                Read => irrevocable(unsealed, req).await,
                _ => Err(ApiError::unsupported_operation()),
            });
        }
        return None;
    };
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    Some(route(unsealed, req, name, tail).await)
}

async fn route(unsealed: &Arc<Unsealed>, req: &Request, name: &str, tail: &str) -> Result<Response, ApiError> {
    use Operation::*;
    match (name, req.operation) {
        ("lookup", Update) if tail.is_empty() => lookup(unsealed, req).await,
        ("lookup", List) => Response::list(unsealed.expiration.list(tail).await?),
        ("renew", Update) => renew(unsealed, req, tail).await,
        ("revoke", Update) => revoke(unsealed, req, tail).await,
        ("revoke-prefix", Update) => revoke_prefix(unsealed, tail, false).await,
        ("revoke-force", Update) => revoke_prefix(unsealed, tail, true).await,
        ("tidy", Update) => {
            let cleaned = unsealed.expiration.tidy(unsealed).await?;
            tracing::info!(cleaned, "lease tidy finished");
            Ok(Response::NoContent)
        }
        ("count", Read) => count(unsealed, req).await,
        ("lookup" | "renew" | "revoke" | "revoke-prefix" | "revoke-force" | "tidy" | "count", _) => {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::no_handler(&req.path)),
    }
}

/// The lease id from the body, else from the path (the body wins, as in Vault).
fn lease_id(req: &Request, from_path: &str) -> Result<String, ApiError> {
    let from_body = fields::string(req.field("lease_id"), "lease_id")?;
    let id = if from_body.is_empty() { from_path.to_owned() } else { from_body };
    if id.is_empty() {
        return Err(ApiError::bad_request("lease_id must be specified"));
    }
    Ok(id)
}

async fn lookup(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    let id = lease_id(req, "")?;
    match unsealed.expiration.get(&id).await? {
        Some(entry) => Ok(Response::data(entry.lookup_data())),
        None => Err(ApiError::bad_request("invalid lease")),
    }
}

async fn renew(unsealed: &Unsealed, req: &Request, from_path: &str) -> Result<Response, ApiError> {
    let id = lease_id(req, from_path)?;
    let increment = fields::duration_secs(req.field("increment"), "increment")?.unwrap_or(0);
    let (entry, warning) = unsealed.expiration.renew(unsealed, &id, increment).await?;
    // The TTL granted, from the renewal's own clock reading: reading the clock again here could
    // land a second later (the backend's renewal, a database's ALTER USER, can take that long)
    // and answer 1799 for an increment of 1800.
    let granted = entry.last_renewal.map_or(0, |renewed_at| entry.expire_time - renewed_at);
    Ok(Response::Logical(Box::new(LogicalResponse {
        lease_id: entry.lease_id,
        lease_duration: u64::try_from(granted).unwrap_or(0),
        renewable: entry.renewable,
        warnings: warning.into_iter().collect(),
        ..LogicalResponse::default()
    })))
}

async fn revoke(unsealed: &Arc<Unsealed>, req: &Request, from_path: &str) -> Result<Response, ApiError> {
    let id = lease_id(req, from_path)?;
    let sync = fields::boolean(req.field("sync"), "sync")?.unwrap_or(true);
    if sync {
        unsealed.expiration.revoke(unsealed, &id).await?;
    } else {
        // Queued: a failure is recorded on the lease and retried, as for the reaper.
        let unsealed = Arc::clone(unsealed);
        tokio::spawn(async move {
            let _ = unsealed.expiration.revoke(&unsealed, &id).await;
        });
        return Ok(Response::Status(202));
    }
    Ok(Response::NoContent)
}

/// Revokes every lease under `prefix`, and for `auth/` prefixes the tokens issued there.
async fn revoke_prefix(unsealed: &Unsealed, prefix: &str, force: bool) -> Result<Response, ApiError> {
    if prefix.is_empty() {
        return Err(ApiError::bad_request("prefix must be specified"));
    }
    let lease_result = unsealed.expiration.revoke_prefix(unsealed, prefix, force).await;
    if prefix.starts_with("auth/") {
        let path_prefix = format!("{}/", prefix.trim_end_matches('/'));
        for hash in unsealed.tokens.hashes_with_path_prefix(&path_prefix).await? {
            unsealed.revoke_token_tree(&hash).await?;
        }
    }
    lease_result.map(|()| Response::NoContent)
}

/// `sys/leases/count`: all leases, or with `type=irrevocable` only those.
async fn count(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    let kind = fields::string(req.field("type"), "type")?;
    let (all, pending, irrevocable) = unsealed.expiration.count().await?;
    let lease_count = match kind.as_str() {
        "" | "all" => all,
        "irrevocable" => irrevocable,
        "pending" => pending,
        other => return Err(ApiError::bad_request(format!("invalid type {other:?}: expected irrevocable or all"))),
    };
    let mut data = Map::new();
    data.insert("lease_count".into(), json!(lease_count));
    data.insert("pending_revocations".into(), json!(pending));
    data.insert("irrevocable".into(), json!(irrevocable));
    Ok(Response::data(data))
}

/// `GET sys/leases?type=irrevocable`: the leases an operator has to deal with.
async fn irrevocable(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    let kind = fields::string(req.field("type"), "type")?;
    if kind != "irrevocable" {
        return Err(ApiError::bad_request("type must be irrevocable"));
    }
    let mut leases = Vec::new();
    for id in unsealed.expiration.lease_ids_under("").await? {
        if let Some(entry) = unsealed.expiration.get(&id).await? {
            if let Some(state) = entry.revocation.as_ref().filter(|state| state.irrevocable) {
                leases.push(json!({"lease_id": entry.lease_id, "error": state.last_error, "expire_time": arcanum_contract::clock::rfc3339(entry.expire_time)}));
            }
        }
    }
    let mut data = Map::new();
    data.insert("lease_count".into(), json!(leases.len()));
    data.insert("leases".into(), Value::Array(leases));
    Ok(Response::data(data))
}
