//! The engines Arcanum mounts: secret engines (`kv`, `cubbyhole`, `database`, `transit`) and
//! credential backends (`userpass`, `kubernetes`, `approle`, `jwt`).
//!
//! Each implements the contract's [`LogicalBackend`](arcanum_contract::LogicalBackend) and sees
//! only what the contract hands it: its relative path, its own storage view, its mount entry
//! and the caller's token view. Nothing here knows the core; which engine serves which mount
//! type is the program's catalog (`arcanum::catalog`).

pub mod approle;
pub mod cubbyhole;
pub mod database;
pub mod jwt;
pub mod kubernetes;
pub mod kv;
pub mod token_settings;
pub mod transit;
pub mod userpass;

/// Serves one request as the router would hand it to `backend` mounted as `mount_type` at
/// `mount_path`, with no token: the engines' unit tests.
#[cfg(test)]
async fn serve_for_test(
    backend: &dyn arcanum_contract::backend::LogicalBackend,
    storage: &arcanum_contract::storage::StorageView,
    (mount_path, mount_type): (&str, &str),
    operation: arcanum_contract::logical::Operation,
    path: &str,
    data: serde_json::Value,
) -> Result<arcanum_contract::logical::Response, arcanum_contract::logical::ApiError> {
    use arcanum_contract::mount::{MountEntry, MountTableKind};
    let mount = MountEntry::new(MountTableKind::Secret, mount_path, mount_type, "");
    let data = data.as_object().cloned().unwrap_or_default();
    backend
        .handle(arcanum_contract::backend::BackendRequest {
            operation,
            create: false,
            path,
            data: &data,
            storage,
            mount: &mount,
            token: None,
            remote_addr: None,
        })
        .await
}
