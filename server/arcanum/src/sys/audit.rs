//! `sys/audit`, `sys/audit/:path` and `sys/audit-hash/:path`. All of them need `sudo`
//! (`router::needs_sudo`); the broker itself lives in `crate::audit`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use arcanum_audit::EnableRequest;
use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_core::mounts::normalize_mount_path;
use arcanum_core::Unsealed;

pub(super) async fn handle(unsealed: &Arc<Unsealed>, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let path = req.path.as_str();
    if path == "sys/audit" || path == "sys/audit/" {
        return Some(match req.operation {
            Read => Ok(Response::injected(unsealed.audit.list())),
            _ => Err(ApiError::unsupported_operation()),
        });
    }
    if let Some(rest) = path.strip_prefix("sys/audit/") {
        let device = normalize_mount_path(rest);
        return Some(match req.operation {
            Update => enable(unsealed, device, req).await,
            Delete => unsealed.audit.disable(&device).await.map(|()| Response::NoContent),
            _ => Err(ApiError::unsupported_operation()),
        });
    }
    if let Some(rest) = path.strip_prefix("sys/audit-hash/") {
        let device = normalize_mount_path(rest);
        return Some(match req.operation {
            Update => hash(unsealed, &device, req),
            _ => Err(ApiError::unsupported_operation()),
        });
    }
    None
}

fn string_field(req: &Request, name: &str) -> Result<String, ApiError> {
    arcanum_contract::fields::string(req.field(name), name)
}

fn options_field(req: &Request) -> Result<BTreeMap<String, String>, ApiError> {
    arcanum_contract::fields::string_map(req.field("options"), "options")
}

async fn enable(unsealed: &Unsealed, path: String, req: &Request) -> Result<Response, ApiError> {
    let kind = string_field(req, "type")?;
    if kind.is_empty() {
        return Err(ApiError::bad_request("type is required"));
    }
    let request = EnableRequest {
        path,
        kind,
        description: string_field(req, "description")?,
        options: options_field(req)?,
        local: super::seal::bool_field(req, "local")?,
    };
    unsealed.audit.enable(request, &req.id).await?;
    Ok(Response::NoContent)
}

fn hash(unsealed: &Unsealed, device: &str, req: &Request) -> Result<Response, ApiError> {
    let input = match req.field("input") {
        Some(Value::String(input)) => input,
        Some(_) => return Err(ApiError::bad_request("input must be a string")),
        None => return Err(ApiError::bad_request("input is required")),
    };
    let mut data = Map::new();
    data.insert("hash".into(), json!(unsealed.audit.hash(device, input)?));
    Ok(Response::injected(data))
}
