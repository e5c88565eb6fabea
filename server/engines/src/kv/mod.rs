//! The KV secrets engine, version 1 (plain key/value) and version 2 (versioned, with
//! metadata, soft delete, undelete, destroy and check-and-set), chosen by the mount's
//! `options.version`.

mod v1;
mod v2;

use std::sync::Arc;

use serde_json::Value;

pub use v1::KvV1;
pub use v2::KvV2;

use arcanum_contract::backend::LogicalBackend;
use arcanum_contract::logical::ApiError;
use arcanum_contract::mount::MountEntry;

/// Longest key accepted; beyond it a write is refused rather than stored unreadably long.
pub const MAX_KEY_BYTES: usize = 4096;

/// The engine for a `kv` mount.
pub fn build(entry: &MountEntry) -> Result<Arc<dyn LogicalBackend>, ApiError> {
    match entry.options.get("version").map(String::as_str) {
        None | Some("1") => Ok(Arc::new(KvV1)),
        Some("2") => Ok(Arc::new(KvV2::new())),
        Some(other) => Err(ApiError::bad_request(format!("invalid kv version {other:?}: expected 1 or 2"))),
    }
}

/// Converts a KV v1 mount's data in place to KV v2: every key becomes version 1 of a
/// versioned secret. Everything is read before anything is written, so a v1 key that
/// happens to be named like a v2 record (`metadata/x`) cannot be overwritten half-way.
pub async fn upgrade_v1_to_v2(view: &arcanum_contract::storage::StorageView) -> Result<usize, ApiError> {
    let keys = view.list_recursive("").await?;
    let mut secrets = Vec::with_capacity(keys.len());
    for key in &keys {
        if let Some(value) = view.get_json::<Value>(key).await? {
            secrets.push((key.clone(), value));
        }
    }
    for key in &keys {
        view.delete(key).await?;
    }
    for (key, value) in &secrets {
        v2::import_version(view, key, value).await?;
    }
    Ok(secrets.len())
}

fn check_key(path: &str) -> Result<(), ApiError> {
    if path.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "key name is too long: {} bytes, the limit is {MAX_KEY_BYTES}",
            path.len()
        )));
    }
    Ok(())
}

/// A JSON object field, or a 400 naming the field.
fn object_field<'a>(
    value: Option<&'a Value>,
    name: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a JSON object"))),
    }
}
