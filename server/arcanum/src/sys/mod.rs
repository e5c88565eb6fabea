//! The `sys/` backend: seal lifecycle, mounts, policies, capabilities, audit devices and leases.
//!
//! The router calls in three places: [`handle_unauthenticated`] before the seal gate,
//! [`handle_optional_token`] for paths that work without a token but read one if given,
//! and [`handle_authenticated`] after the token and ACL checks.

mod audit;
mod leases;
mod locked_users;
mod metrics;
mod mounts;
mod password_policies;
mod policies;
mod quotas;
pub mod seal;
mod wrapping;

use std::sync::Arc;

pub use seal::{decode_share, seal_status_json};

use arcanum_contract::logical::{ApiError, Request, Response};
use arcanum_core::Caller;
use arcanum_core::{Core, Unsealed};

pub async fn handle_unauthenticated(core: &Core, req: &Request) -> Option<Result<Response, ApiError>> {
    // Vault serves metrics without a token (and unaudited, even while sealed) only when the
    // operator said so; otherwise they take the authenticated path below.
    if req.path == "sys/metrics" && core.config.unauthenticated_metrics_access {
        return Some(metrics::handle(core, req).await);
    }
    seal::handle_unauthenticated(core, req).await
}

/// `sys/internal/ui/mounts[/*]` (served without a token, but a token widens what is shown) and
/// `sys/wrapping/lookup` (the token, if any, is the one looked up).
pub async fn handle_optional_token(
    _core: &Core,
    unsealed: &Arc<Unsealed>,
    req: &Request,
) -> Option<Result<Response, ApiError>> {
    if wrapping::is_lookup(&req.path) {
        return Some(wrapping::lookup(unsealed, req).await);
    }
    if takes_optional_token(&req.path) {
        return Some(mounts::internal_ui_mounts(unsealed, req).await);
    }
    None
}

/// The paths [`handle_optional_token`] serves (the router audits them before serving).
pub fn takes_optional_token(path: &str) -> bool {
    path == "sys/internal/ui/mounts" || path.starts_with("sys/internal/ui/mounts/") || wrapping::is_lookup(path)
}

pub async fn handle_authenticated(
    core: &Core,
    unsealed: &Arc<Unsealed>,
    caller: &Caller,
    req: &Request,
) -> Option<Result<Response, ApiError>> {
    if let Some(result) = seal::handle_authenticated(core, req).await {
        return Some(result);
    }
    if req.path == "sys/metrics" {
        return Some(metrics::handle(core, req).await);
    }
    if let Some(result) = mounts::handle(unsealed, req).await {
        return Some(result);
    }
    if let Some(result) = audit::handle(unsealed, req).await {
        return Some(result);
    }
    if let Some(result) = leases::handle(unsealed, req).await {
        return Some(result);
    }
    if let Some(result) = quotas::handle(unsealed, req).await {
        return Some(result);
    }
    if let Some(result) = locked_users::handle(unsealed, &core.config.user_lockout, req).await {
        return Some(result);
    }
    if let Some(result) = password_policies::handle(unsealed, req).await {
        return Some(result);
    }
    if let Some(result) = wrapping::handle(unsealed, caller, req).await {
        return Some(result);
    }
    policies::handle(unsealed, caller, req).await
}
