//! The engine contract: the [`LogicalBackend`] trait every mounted engine (secret engine or
//! credential backend) implements, the requests it is handed, the [`LeaseSpec`] it returns
//! with a secret that must be revoked later, and the [`Catalog`] of engine types.
//!
//! A backend sees only paths relative to its mount and a [`StorageView`] under its own
//! prefix. It never checks policies (the router has done that before calling it), never
//! creates tokens (a login returns [`Response::Login`] and the core mints the token), and
//! never writes outside its view.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::logical::{ApiError, Operation, Response};
use crate::mount::{MountEntry, MountTableKind};
use crate::storage::StorageView;
use crate::token::TokenView;

/// Vault's system default and maximum TTL: 768h (32 days).
pub const SYSTEM_MAX_TTL: u64 = 768 * 3600;

/// The longest a backend may take to revoke or renew one lease before the attempt counts as
/// failed: a hung database must not hold the lease's lock and a reaper slot for ever.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A backend call with [`BACKEND_TIMEOUT`].
pub async fn bounded(call: impl std::future::Future<Output = Result<(), ApiError>>) -> Result<(), ApiError> {
    tokio::time::timeout(BACKEND_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(ApiError::bad_request(format!("the backend did not answer within {}s", BACKEND_TIMEOUT.as_secs())))
    })
}

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
    pub token: Option<TokenView<'a>>,
    /// The client's address (for CIDR-bound logins); `None` when not known.
    pub remote_addr: Option<std::net::IpAddr>,
}

impl BackendRequest<'_> {
    /// A field the way Vault's framework reads it: JSON `null` counts as absent.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.data.get(name).filter(|value| !value.is_null())
    }

    /// A string field, `None` when absent or empty; any other JSON type is refused naming it.
    pub fn non_empty_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(Some(crate::fields::string(self.field(name), name)?).filter(|s| !s.is_empty()))
    }
}

/// What a backend asks for when its response carries a secret that must be revoked later.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaseSpec {
    /// What the backend needs to revoke or renew it (never a password).
    pub internal: Map<String, Value>,
    /// 0: the mount's default, then the system default.
    pub ttl: u64,
    /// 0: the mount's maximum, then the system maximum.
    pub max_ttl: u64,
    pub renewable: bool,
    /// A key in the mount's storage that recorded the secret before it was made (so that a
    /// secret whose lease is never stored can still be found and revoked); deleted in the same
    /// write that stores the lease.
    pub intent: Option<String>,
}

/// A lease being renewed or revoked, as its backend sees it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    pub lease_id: &'a str,
    /// What the backend put in [`LeaseSpec::internal`] when it issued the secret.
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

    /// Whether a request on `path` can answer with a secret under a lease (database
    /// credentials): such requests take a slot of a lease-count quota.
    fn issues_leases(&self, _path: &str) -> bool {
        false
    }

    /// For an auth method with Vault's user lockout (userpass, AppRole): who a login on `path`
    /// with `data` claims to be (the user a failed login counts against), read before the login
    /// runs; `None` for a path that is not a login.
    fn login_alias(&self, _path: &str, _data: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        None
    }

    /// Whether `error`, from a login, says the credentials were wrong (it counts toward a lockout).
    fn is_invalid_credentials(&self, _error: &ApiError) -> bool {
        false
    }

    /// Whether reads and lists on this backend only read storage and keep nothing in memory
    /// that other nodes change, so that an HA standby following storage may serve them itself
    /// (the rest go to the active node).
    fn standby_may_read(&self) -> bool {
        false
    }

    /// Whether this credential backend's logins name a role (`role` in the login body), so
    /// that a quota can be set per role.
    fn has_login_roles(&self) -> bool {
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

/// Builds the backend for a mount entry of its type.
pub type BackendFactory = fn(&MountEntry) -> Result<Arc<dyn LogicalBackend>, ApiError>;

/// The engine types a program offers: type name -> constructor, per table (secret engines
/// and credential backends). Assembled at the top of the program and handed to the core,
/// which builds every mount's backend through it and so never names an engine.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<(MountTableKind, &'static str, BackendFactory)>,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Adds a secret engine type (mounted under `sys/mounts`).
    pub fn secret(self, kind: &'static str, factory: BackendFactory) -> Catalog {
        self.with(MountTableKind::Secret, kind, factory)
    }

    /// Adds a credential backend type (mounted under `sys/auth`).
    pub fn auth(self, kind: &'static str, factory: BackendFactory) -> Catalog {
        self.with(MountTableKind::Auth, kind, factory)
    }

    fn with(mut self, table: MountTableKind, kind: &'static str, factory: BackendFactory) -> Catalog {
        self.entries.retain(|(t, k, _)| !(*t == table && *k == kind));
        self.entries.push((table, kind, factory));
        self
    }

    /// Whether `kind` is offered in `table`.
    pub fn offers(&self, table: MountTableKind, kind: &str) -> bool {
        self.entries.iter().any(|(t, k, _)| *t == table && *k == kind)
    }

    /// Builds the backend for `entry`. Unknown types are refused with Vault's message.
    pub fn build(&self, entry: &MountEntry) -> Result<Arc<dyn LogicalBackend>, ApiError> {
        match self.entries.iter().find(|(table, kind, _)| *table == entry.table && *kind == entry.kind) {
            Some((_, _, factory)) => factory(entry),
            None => Err(ApiError::bad_request(format!("plugin not found in the catalog: {}", entry.kind))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Echo;

    #[async_trait::async_trait]
    impl LogicalBackend for Echo {
        async fn handle(&self, _req: BackendRequest<'_>) -> Result<Response, ApiError> {
            Ok(Response::NoContent)
        }
    }

    #[test]
    fn the_catalog_builds_what_it_offers_per_table_and_refuses_the_rest() {
        let catalog = Catalog::new().secret("echo", |_| Ok(Arc::new(Echo)));
        assert!(catalog.offers(MountTableKind::Secret, "echo"));
        assert!(!catalog.offers(MountTableKind::Auth, "echo"));
        assert!(catalog.build(&MountEntry::new(MountTableKind::Secret, "e/", "echo", "")).is_ok());
        let refused = catalog.build(&MountEntry::new(MountTableKind::Auth, "e/", "echo", "")).unwrap_err();
        assert_eq!(refused, ApiError::bad_request("plugin not found in the catalog: echo"));
    }
}
