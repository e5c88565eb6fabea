//! Logical backends: the engines mounted in the mount table (secret engines and credential
//! backends), and the contract between them and the core.
//!
//! A backend sees only paths relative to its mount and a [`StorageView`] under its own
//! prefix. It never checks policies (the router has done that before calling it), never
//! creates tokens (a login returns [`Response::Login`] and the core mints the token), and
//! never writes outside its view.

use std::fmt::Debug;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::mounts::{MountEntry, MountTableKind};
use crate::core::token::TokenEntry;
use crate::core::view::StorageView;
use crate::logical::{ApiError, Operation, Response};

pub mod cubbyhole;
pub mod database;
pub mod kubernetes;
pub mod kv;
pub mod userpass;

/// One request as a backend sees it.
#[derive(Debug, Clone, Copy)]
pub struct BackendRequest<'a> {
    pub operation: Operation,
    /// For `Operation::Update`: the existence check found nothing, so this is a create.
    pub create: bool,
    /// Relative to the mount, no leading `/`; for lists it is `""` or ends with `/`.
    pub path: &'a str,
    pub data: &'a Map<String, Value>,
    pub storage: &'a StorageView,
    pub mount: &'a MountEntry,
    /// The caller's token (absent on unauthenticated paths such as logins).
    pub token: Option<&'a TokenEntry>,
}

impl BackendRequest<'_> {
    /// A field the way Vault's framework reads it: JSON `null` counts as absent.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.data.get(name).filter(|value| !value.is_null())
    }
}

/// A lease being renewed or revoked, as its backend sees it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    pub lease_id: &'a str,
    /// What the backend put in [`LeaseSpec::internal`](crate::core::expiration::LeaseSpec) when it issued the secret.
    pub internal: &'a Map<String, Value>,
    pub storage: &'a StorageView,
    pub mount: &'a MountEntry,
    /// For a renewal, the new expiry; for a revocation, the lease's expiry.
    pub expire_time: i64,
}

#[async_trait::async_trait]
pub trait LogicalBackend: Send + Sync + Debug {
    /// Serves one request.
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError>;

    /// Existence check for a write: `Some(true)` exists (needs `update`), `Some(false)` is new
    /// (needs `create`), `None` the path has no existence check (needs `update`).
    async fn exists(&self, _req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        Ok(None)
    }

    /// Whether `path` is served without a token (logins).
    fn is_unauthenticated(&self, _path: &str) -> bool {
        false
    }

    /// Revokes a secret this backend issued under a lease. Must be idempotent: the reaper
    /// retries after failures, and may retry after a crash.
    async fn revoke_lease(&self, _req: LeaseRequest<'_>) -> Result<(), ApiError> {
        Ok(())
    }

    /// Background work, called every few seconds while unsealed (static credential rotation).
    async fn periodic(&self, _storage: &StorageView, _mount: &MountEntry) {}

    /// Extends a secret to `req.expire_time`; backends without renewal refuse.
    async fn renew_lease(&self, _req: LeaseRequest<'_>) -> Result<(), ApiError> {
        Err(ApiError::bad_request("lease is not renewable"))
    }
}

/// Builds the backend for a mount entry. Unknown types are refused with Vault's message.
pub fn build(entry: &MountEntry) -> Result<Arc<dyn LogicalBackend>, ApiError> {
    match (entry.table, entry.kind.as_str()) {
        // Served by the core itself (sys.rs, the token store); the mount exists for listing.
        (MountTableKind::Secret, "system") | (MountTableKind::Auth, "token") => Ok(Arc::new(CoreServed)),
        (MountTableKind::Secret, "cubbyhole") => Ok(Arc::new(cubbyhole::Cubbyhole)),
        (MountTableKind::Secret, "kv") => kv::build(entry),
        (MountTableKind::Secret, "database") => Ok(Arc::new(database::Database::default())),
        (MountTableKind::Auth, "userpass") => Ok(Arc::new(userpass::Userpass)),
        (MountTableKind::Auth, "kubernetes") => Ok(Arc::new(kubernetes::Kubernetes::from_env())),
        (MountTableKind::Secret | MountTableKind::Auth, kind) => {
            Err(ApiError::bad_request(format!("plugin not found in the catalog: {kind}")))
        }
    }
}

/// The placeholder for mounts the router serves without a backend (`sys/`, `auth/token/`).
#[derive(Debug)]
struct CoreServed;

#[async_trait::async_trait]
impl LogicalBackend for CoreServed {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        Err(ApiError::no_handler(&format!("{}{}", req.mount.route_prefix(), req.path)))
    }
}
