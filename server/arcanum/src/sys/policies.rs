//! `sys/policy`, `sys/policies/acl` and `sys/capabilities*` (password policies: `password_policies.rs`).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Request, Response};
use arcanum_core::Caller;
use arcanum_core::Unsealed;

pub(super) async fn handle(
    unsealed: &Arc<Unsealed>,
    caller: &Caller,
    req: &Request,
) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let path = req.path.as_str();
    let result = if let Some(name) = path.strip_prefix("sys/policies/acl/").filter(|n| !n.is_empty()) {
        let name = name.trim_end_matches('/');
        match req.operation {
            List => list(unsealed),
            Read => read(unsealed, name, "policy", false),
            Update => write(unsealed, name, req).await,
            Delete => unsealed.policies.delete(name).await.map(|()| Response::NoContent),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if matches!(path, "sys/policies/acl" | "sys/policies/acl/") {
        match req.operation {
            List | Read => list(unsealed),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if let Some(name) = path.strip_prefix("sys/policy/").filter(|n| !n.is_empty()) {
        match req.operation {
            Read => read(unsealed, name, "rules", true),
            Update => write(unsealed, name, req).await,
            Delete => unsealed.policies.delete(name).await.map(|()| Response::NoContent),
            List => list_legacy(unsealed),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if matches!(path, "sys/policy" | "sys/policy/") {
        match req.operation {
            Read | List => list_legacy(unsealed),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if matches!(path, "sys/capabilities" | "sys/capabilities-self" | "sys/capabilities-accessor") {
        match req.operation {
            Update => capabilities(unsealed, caller, req).await,
            _ => Err(ApiError::unsupported_operation()),
        }
    } else {
        return None;
    };
    Some(result)
}

fn list(unsealed: &Unsealed) -> Result<Response, ApiError> {
    Response::list(unsealed.policies.names())
}

fn list_legacy(unsealed: &Unsealed) -> Result<Response, ApiError> {
    let names = unsealed.policies.names();
    let mut data = Map::new();
    data.insert("keys".into(), json!(names));
    data.insert("policies".into(), json!(names));
    Ok(Response::injected(data))
}

fn read(unsealed: &Unsealed, name: &str, text_field: &str, legacy: bool) -> Result<Response, ApiError> {
    let name = arcanum_policy::normalize_name(name);
    let text = if name == arcanum_policy::ROOT_POLICY {
        String::new()
    } else {
        unsealed.policies.get(&name).ok_or_else(ApiError::not_found)?.text().to_owned()
    };
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert(text_field.into(), json!(text));
    Ok(if legacy { Response::injected(data) } else { Response::data(data) })
}

async fn write(unsealed: &Unsealed, name: &str, req: &Request) -> Result<Response, ApiError> {
    let text = match req.field("policy").or_else(|| req.field("rules")) {
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(ApiError::bad_request("'policy' must be a string")),
        None => String::new(),
    };
    unsealed.policies.put(name, &decode_if_base64(&text)).await?;
    Ok(Response::NoContent)
}

/// Vault accepts a policy sent as base64 and decodes it first.
pub(super) fn decode_if_base64(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.contains(|c: char| c.is_whitespace() || c == '"' || c == '{') {
        return text.to_owned();
    }
    base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| text.to_owned())
}

fn paths_field(req: &Request) -> Result<Vec<String>, ApiError> {
    let value =
        req.field("paths").or_else(|| req.field("path")).ok_or_else(|| ApiError::bad_request("missing paths"))?;
    let paths: Vec<String> = match value {
        Value::String(s) => s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
        Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => return Err(ApiError::bad_request("paths must be a list of strings")),
    };
    if paths.is_empty() {
        return Err(ApiError::bad_request("missing paths"));
    }
    Ok(paths)
}

async fn capabilities(unsealed: &Arc<Unsealed>, caller: &Caller, req: &Request) -> Result<Response, ApiError> {
    let paths = paths_field(req)?;
    let policies = match req.path.as_str() {
        "sys/capabilities-self" => caller.token.policies.clone(),
        "sys/capabilities" => {
            let Some(Value::String(token)) = req.field("token") else {
                return Err(ApiError::bad_request("missing token"));
            };
            unsealed.tokens.lookup(token).await?.ok_or_else(|| ApiError::bad_request("invalid token"))?.policies
        }
        _ => {
            let Some(Value::String(accessor)) = req.field("accessor") else {
                return Err(ApiError::bad_request("missing accessor"));
            };
            unsealed
                .tokens
                .lookup_accessor(accessor)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?
                .policies
        }
    };
    let acl = unsealed.policies.acl(&policies);
    let mut data = Map::new();
    for path in &paths {
        let normalized = arcanum_contract::path::normalize_path(path)?;
        data.insert(path.clone(), json!(acl.capabilities(&normalized)));
    }
    if paths.len() == 1 {
        let only = data.get(&paths[0]).cloned().unwrap_or(Value::Null);
        data.insert("capabilities".into(), only);
    }
    Ok(Response::Logical(Box::new(LogicalResponse { data: Some(data), inject_data: true, ..Default::default() })))
}
