//! `sys/locked-users`: the users Vault's user lockout holds now, and lifting a lock
//! (`sys/locked-users/:mount_accessor/unlock/:alias_identifier`).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_contract::mount::MountTableKind;
use arcanum_core::lockout::LockoutConfig;
use arcanum_core::Unsealed;

pub(super) async fn handle(
    unsealed: &Arc<Unsealed>,
    lockout: &LockoutConfig,
    req: &Request,
) -> Option<Result<Response, ApiError>> {
    if req.path == "sys/locked-users" {
        return Some(match req.operation {
            Operation::Read => list(unsealed, lockout, req).await,
            _ => Err(ApiError::unsupported_operation()),
        });
    }
    let rest = req.path.strip_prefix("sys/locked-users/")?;
    let result = match (rest.split_once("/unlock/"), req.operation) {
        (Some((accessor, alias)), Operation::Update) if !accessor.is_empty() && !alias.is_empty() => {
            unsealed.lockout.unlock(accessor, alias).await.map(|()| Response::NoContent)
        }
        (Some(_), Operation::Update) => {
            Err(ApiError::bad_request("a mount accessor and an alias identifier are required"))
        }
        _ => Err(ApiError::no_handler(&req.path)),
    };
    Some(result)
}

/// Vault's shape: by namespace (only the root one here), then by mount accessor, most locked
/// users first.
async fn list(unsealed: &Unsealed, lockout: &LockoutConfig, req: &Request) -> Result<Response, ApiError> {
    let accessor = match req.data.get("mount_accessor") {
        None | Some(Value::Null) => None,
        Some(Value::String(accessor)) if !accessor.is_empty() => Some(accessor.as_str()),
        Some(Value::String(_)) => None,
        Some(_) => return Err(ApiError::bad_request("mount_accessor must be a string")),
    };
    let auth_mounts = unsealed.mounts.entries(MountTableKind::Auth);
    let settings = |accessor: &str| {
        auth_mounts.iter().find(|entry| entry.accessor == accessor).map(|entry| lockout.for_mount(entry))
    };
    let locked = unsealed.lockout.locked(accessor, settings).await?;
    let mut by_accessor: Vec<(String, Vec<String>)> = locked.into_iter().collect();
    by_accessor.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let total: usize = by_accessor.iter().map(|(_, aliases)| aliases.len()).sum();
    let mount_accessors: Vec<Value> = by_accessor
        .into_iter()
        .map(|(accessor, aliases)| json!({"mount_accessor": accessor, "counts": aliases.len(), "alias_identifiers": aliases}))
        .collect();
    let mut data = Map::new();
    let by_namespace = if mount_accessors.is_empty() {
        Vec::new()
    } else {
        vec![json!({"namespace_id": "root", "namespace_path": "", "counts": total, "mount_accessors": mount_accessors})]
    };
    data.insert("by_namespace".into(), Value::Array(by_namespace));
    data.insert("total".into(), json!(total));
    Ok(Response::data(data))
}
