//! The request path through the core, in Vault's order:
//!
//! 1. unauthenticated sys paths (init, seal status, unseal, health, leader, rekey) — not
//!    audited, as in Vault;
//! 2. the seal gate (503 while sealed); from here on every request is audited (`Trail`);
//! 3. login paths of credential backends (no token; a login becomes a token here) and
//!    `sys/internal/ui/mounts`: request entry, then the handler;
//! 4. token lookup (403 "permission denied", "invalid token");
//! 5. the existence check that tells create from update, then the ACL check — including
//!    `sudo` on root-protected paths (a denial is a value, not yet an answer);
//! 6. audit: the request entry, with the caller and the ACL decision. If devices are enabled
//!    and none records it: 500 and nothing below happens;
//! 7. use counting, then 403 for a denied request, else the handler that owns the path:
//!    `sys/`, the token store, or a mount's backend;
//! 8. audit: the response entry (none recorded: 500 instead of the answer).
//!
//! Requests refused at steps 3–5 (bad token, storage error) get both entries, with the error.

use std::sync::Arc;

use arcanum_policy::{Acl, AclRequest, Operation as AclOperation};

use crate::{sys, token_api};
use arcanum_audit::{Authorized, Trail};
use arcanum_contract::backend::BackendRequest;
use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_core::mounts::Mount;
use arcanum_core::token::TokenEntry;
use arcanum_core::Caller;
use arcanum_core::{Core, Unsealed};

/// Where a path goes.
enum Target {
    Sys,
    TokenStore(String),
    Mount(Arc<Mount>, String),
    Nowhere,
}

/// `mount`: what the mount table resolves `path` to.
fn target(path: &str, mount: Option<(Arc<Mount>, String)>) -> Target {
    if path == "sys" || path.starts_with("sys/") {
        return Target::Sys;
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return Target::TokenStore(rest.to_owned());
    }
    if path == "auth/token" {
        return Target::TokenStore(String::new());
    }
    match mount {
        Some((mount, rest)) => Target::Mount(mount, rest),
        None => Target::Nowhere,
    }
}

/// What the HTTP layer found out about a request before handing it over, so that it is not
/// asked again: the core's unsealed state, and the mount the path resolves to in it.
#[derive(Debug)]
pub struct Resolved {
    pub unsealed: Arc<Unsealed>,
    pub mount: Option<(Arc<Mount>, String)>,
}

pub async fn handle(core: &Core, req: Request, resolved: Option<Resolved>) -> Result<Response, ApiError> {
    if let Some(result) = sys::handle_unauthenticated(core, &req).await {
        return result;
    }
    let Resolved { unsealed, mount } = match resolved {
        Some(resolved) => resolved,
        None => {
            let unsealed = core.unsealed()?;
            let mount = unsealed.mounts.resolve(&req.path);
            Resolved { unsealed, mount }
        }
    };
    let mut trail = Trail::begin(&unsealed.audit, &req, || mount.as_ref().map(|(mount, _)| Arc::clone(&mount.entry)));
    let result = route(core, &unsealed, &req, &mut trail, mount).await;
    let result = wrap(core, &unsealed, &req, result).await;
    trail.finish(result).await
}

/// An HA standby's own answer to a read it can serve from its copy of the services (see
/// `arcanum_core::standby`), or the request back when only the active node can serve it: a
/// write, a wrapped answer, a path whose backend keeps state only the active node has, a token
/// this standby does not know (it may be brand new) or one with a use limit (counting a use is
/// a write). Decided before anything is audited, so a request sent on is audited once, there.
/// `admit` applies the standby's quotas once the request is known to be served here.
pub async fn standby_read(
    core: &Core,
    view: Arc<Unsealed>,
    req: Request,
    admit: impl FnOnce(&Request) -> Result<(), ApiError>,
) -> Result<Result<Response, ApiError>, Request> {
    if !matches!(req.operation, Operation::Read | Operation::List) || req.wrap_ttl.is_some() {
        return Err(req);
    }
    let Target::Mount(mount, rest) = target(&req.path, view.mounts.resolve(&req.path)) else { return Err(req) };
    if !mount.backend.standby_may_read() || mount.backend.is_unauthenticated(&rest) {
        return Err(req);
    }
    match view.tokens.lookup(req.client_token.as_deref().unwrap_or_default()).await {
        Ok(Some(token)) if token.num_uses == 0 => {}
        _ => return Err(req),
    }
    if let Err(rejection) = admit(&req) {
        return Ok(Err(rejection));
    }
    let mut trail = Trail::begin(&view.audit, &req, || Some(Arc::clone(&mount.entry)));
    let result = route(core, &view, &req, &mut trail, Some((mount, rest))).await;
    Ok(trail.finish(result).await)
}

/// `X-Vault-Wrap-TTL`: a successful answer in Vault's envelope goes into a wrapping token's
/// cubbyhole, and the client gets the token (`wrap_info`). Errors, 204s and bare bodies (seal
/// status, init, an unwrapped answer) pass through unwrapped, as in Vault.
async fn wrap(
    core: &Core,
    unsealed: &Unsealed,
    req: &Request,
    result: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let Some(ttl) = req.wrap_ttl else { return result };
    let mut logical = match result {
        Ok(Response::Logical(logical)) if matches!(logical.status, 0 | 200) && logical.wrap_info.is_none() => logical,
        other => return other,
    };
    logical.materialise();
    // A wrapped token is named by its accessor, a wrapped AppRole secret ID by its own.
    let wrapped_accessor = match (&logical.auth, &logical.data) {
        (Some(auth), _) => auth.get("accessor"),
        (None, Some(data)) => data.get("secret_id_accessor"),
        (None, None) => None,
    };
    let wrapped_accessor = wrapped_accessor.and_then(|a| a.as_str()).map(str::to_owned);
    let answer = serde_json::Value::Object(logical.envelope(&req.id));
    let mut info = unsealed.wrap_response(&answer, ttl, &req.path, wrapped_accessor.as_deref()).await?;
    // `sys/wrapping/wrap` always hands out a plain token, as Vault's does.
    if req.wrap_jwt && req.path != "sys/wrapping/wrap" {
        let addr = core.ha().map(|ha| ha.config.api_addr.clone()).unwrap_or_default();
        let jwt = unsealed.wrapping_jwt(&info, &addr).await?;
        info.insert("token".into(), serde_json::Value::String(jwt));
    }
    Ok(Response::Logical(Box::new(arcanum_contract::logical::LogicalResponse {
        wrap_info: Some(info),
        ..Default::default()
    })))
}

/// Steps 3–7. Every way into a handler passes `trail.request(..).await?` first, or, for a
/// request that changes nothing, `trail.request_with_answer(..)`.
async fn route(
    core: &Core,
    unsealed: &Arc<Unsealed>,
    req: &Request,
    trail: &mut Trail<'_>,
    mount: Option<(Arc<Mount>, String)>,
) -> Result<Response, ApiError> {
    let target = target(&req.path, mount);

    if let Target::Mount(mount, rest) = &target {
        if mount.backend.is_unauthenticated(rest) {
            trail.request(None).await?;
            // Vault's user lockout: a locked user is refused before its credentials are looked at.
            let lockout = mount
                .backend
                .login_alias(rest, &req.data)
                .map(|alias| (alias, core.config.user_lockout.for_mount(&mount.entry)))
                .filter(|(_, settings)| !settings.disabled);
            if let Some((alias, settings)) = &lockout {
                if unsealed.lockout.is_locked(&mount.entry.accessor, alias, settings).await? {
                    tracing::info!(mount = %mount.entry.path, "login refused: the user is locked out");
                    return Err(ApiError::permission_denied());
                }
            }
            let response = mount.backend.handle(backend_request(req, mount, rest, false, None)).await;
            if let Some((alias, settings)) = &lockout {
                match &response {
                    Ok(_) => unsealed.lockout.succeeded(&mount.entry.accessor, alias),
                    Err(err) if mount.backend.is_invalid_credentials(err) => {
                        unsealed.lockout.failed(&mount.entry.accessor, alias, settings).await?;
                    }
                    Err(_) => {}
                }
            }
            let result = match response {
                Ok(response) => finish_login(unsealed, mount, response).await,
                Err(err) => Err(err),
            };
            count_login(mount, &result);
            return result;
        }
    }
    if sys::takes_optional_token(&req.path) {
        trail.request(None).await?;
        if let Some(result) = sys::handle_optional_token(core, unsealed, req).await {
            return result;
        }
    }

    // A JWT wrapping token presented as the request's token stands for the token it names.
    let (token_value, presented) = match req.client_token.as_deref() {
        Some(jwt) if req.path == "sys/wrapping/unwrap" && arcanum_core::wrapping::looks_like_jwt(jwt) => {
            (unsealed.token_from_wrapping_jwt(jwt).await?.to_string(), false)
        }
        presented => (presented.unwrap_or_default().to_owned(), true),
    };
    let token = unsealed.tokens.shared_lookup(&token_value).await?.ok_or_else(ApiError::invalid_token)?;
    // A token bound to addresses is worthless from anywhere else (Vault answers the same way).
    if !arcanum_contract::cidr::allows(&token.bound_cidrs, req.remote_addr.map(|addr| addr.ip())) {
        tracing::info!(path = %req.path, "token used from outside its bound CIDRs");
        return Err(ApiError::permission_denied());
    }
    let (create, acl, decision) = authorize(unsealed, req, &target, &token).await?;
    let authorized = Authorized { token: token.view(), allowed: decision.allowed, create, presented };
    if changes_nothing(req, &target, &token) {
        trail.request_with_answer(authorized);
    } else {
        trail.request(Some(authorized)).await?;
    }

    // A denied request uses up a use too (as in Vault), but only once it is on record. (A token
    // without a use limit has nothing to count: it is passed on as it is, not copied.)
    let token = match token.num_uses {
        0 => token,
        _ => Arc::new(unsealed.tokens.use_token(&token).await?.ok_or_else(ApiError::invalid_token)?),
    };
    let used_up = (token.num_uses == 1).then(|| token.id_hash.clone());
    let result = if decision.allowed {
        let caller = Caller { token, token_value, acl, sudo: decision.sudo };
        serve(core, unsealed, req, target, &caller, create).await
    } else {
        if let Some(reason) = &decision.reason {
            tracing::debug!(path = %req.path, reason = %reason, "request refused by policy");
        }
        Err(ApiError::permission_denied())
    };
    if let Some(id_hash) = used_up {
        if let Err(err) = unsealed.revoke_token_tree(&id_hash).await {
            tracing::error!(status = err.status, "revoking a used-up token failed");
        }
    }
    result
}

/// A request whose handling changes nothing, allowed or not: a plain backend read (no lease
/// to issue), with a token that has no uses to count, not wrapped. Its audit entry may go out
/// with the response's ([`Trail::request_with_answer`]). The same reads run inline in `serve`.
fn changes_nothing(req: &Request, target: &Target, token: &TokenEntry) -> bool {
    token.num_uses == 0
        && req.wrap_ttl.is_none()
        && matches!(target, Target::Mount(mount, rest) if plain_read(req, mount, rest))
}

/// A read of a mount that issues no lease: it makes no secret and changes nothing.
fn plain_read(req: &Request, mount: &Mount, rest: &str) -> bool {
    matches!(req.operation, Operation::Read | Operation::List | Operation::Header) && !mount.backend.issues_leases(rest)
}

/// Step 5: the existence check and the ACL decision. Reads only; nothing is acted on.
async fn authorize(
    unsealed: &Unsealed,
    req: &Request,
    target: &Target,
    token: &TokenEntry,
) -> Result<(bool, Arc<Acl>, arcanum_policy::Decision), ApiError> {
    let create = match (target, req.operation) {
        (Target::Mount(mount, rest), Operation::Update) => {
            let probe = backend_request(req, mount, rest, false, Some(token));
            mount.backend.exists(probe).await?.map(|exists| !exists).unwrap_or(false)
        }
        _ => false,
    };
    let operation = match req.operation {
        Operation::Read | Operation::Header => AclOperation::Read,
        Operation::List => AclOperation::List,
        Operation::Update if create => AclOperation::Create,
        Operation::Update => AclOperation::Update,
        Operation::Patch => AclOperation::Patch,
        Operation::Delete => AclOperation::Delete,
    };
    let acl = unsealed.policies.acl(&token.policies);
    let parameters = matches!(req.operation, Operation::Update | Operation::Patch).then_some(&req.data);
    let request =
        AclRequest { path: &req.path, operation, parameters, needs_sudo: needs_sudo(&req.path, req.operation) };
    let decision = acl.check_wrapped(&request, req.wrap_ttl.map(std::time::Duration::from_secs));
    Ok((create, acl, decision))
}

/// Step 7: the handler that owns the path.
async fn serve(
    core: &Core,
    unsealed: &Arc<Unsealed>,
    req: &Request,
    target: Target,
    caller: &Caller,
    create: bool,
) -> Result<Response, ApiError> {
    match target {
        Target::Sys => sys::handle_authenticated(core, unsealed, caller, req)
            .await
            .unwrap_or_else(|| Err(ApiError::no_handler(&req.path))),
        Target::TokenStore(rest) => token_api::handle(unsealed, caller, req, &rest).await,
        Target::Mount(mount, rest) if plain_read(req, &mount, &rest) => {
            // A read that makes no secret changes nothing a hang-up could leave half done, so it
            // runs on the connection's task: a task of its own cost more than the read itself.
            let response =
                mount.backend.handle(backend_request(req, &mount, &rest, create, Some(&caller.token))).await?;
            attach_lease(unsealed, &mount, req, &caller.token, response).await
        }
        Target::Mount(mount, rest) => {
            // Detached from the connection: a client that hangs up must not cancel a backend
            // between creating a secret (a database user) and recording its lease, or halfway
            // through a write.
            let (unsealed, req, token) = (Arc::clone(unsealed), req.clone(), caller.token.clone());
            tokio::spawn(async move {
                let response = mount.backend.handle(backend_request(&req, &mount, &rest, create, Some(&token))).await?;
                attach_lease(&unsealed, &mount, &req, &token, response).await
            })
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "a backend task failed");
                ApiError::internal()
            })?
        }
        Target::Nowhere => Err(ApiError::no_handler(&req.path)),
    }
}

fn backend_request<'a>(
    req: &'a Request,
    mount: &'a Mount,
    rest: &'a str,
    create: bool,
    token: Option<&'a TokenEntry>,
) -> BackendRequest<'a> {
    BackendRequest {
        operation: req.operation,
        create,
        path: rest,
        data: &req.data,
        storage: &mount.view,
        mount: &mount.entry,
        token: token.map(TokenEntry::view),
        remote_addr: req.remote_addr.map(|addr| addr.ip()),
    }
}

/// A response that carries a secret gets its lease here. If the lease cannot be recorded, the
/// secret is revoked at once: nothing leaves the server that the reaper would not know about.
async fn attach_lease(
    unsealed: &Unsealed,
    mount: &Mount,
    req: &Request,
    token: &TokenEntry,
    response: Response,
) -> Result<Response, ApiError> {
    let Response::Logical(mut logical) = response else {
        return Ok(response);
    };
    let Some(spec) = logical.secret.take() else {
        return Ok(Response::Logical(logical));
    };
    let internal = spec.internal.clone();
    match unsealed.expiration.register(&req.path, &mount.entry, Some(&token.id_hash), spec).await {
        // Revoked while the secret was being made: the lease goes with it.
        Ok(lease) if !token_still_live(unsealed, token).await => {
            let _ = unsealed.expiration.revoke(unsealed, &lease.lease_id).await;
            Err(ApiError::invalid_token())
        }
        // The mount was disabled meanwhile (after its leases were revoked): revoke this one now,
        // while the backend can still reach its database.
        Ok(lease) if !mount_still_enabled(unsealed, mount, &req.path) => {
            let _ = unsealed.expiration.revoke(unsealed, &lease.lease_id).await;
            Err(ApiError::bad_request("the mount was disabled while the secret was being created"))
        }
        Ok(lease) => {
            logical.lease_id = lease.lease_id;
            logical.lease_duration = lease.ttl;
            logical.renewable = lease.renewable;
            Ok(Response::Logical(logical))
        }
        Err(err) => {
            let undo = mount
                .backend
                .revoke_lease(arcanum_contract::backend::LeaseRequest {
                    lease_id: "",
                    internal: &internal,
                    storage: &mount.view,
                    mount: &mount.entry,
                    expire_time: 0,
                })
                .await;
            if let Err(undo) = undo {
                tracing::error!(error = %undo, path = %req.path, "a secret whose lease could not be stored was not revoked");
            }
            Err(err)
        }
    }
}

fn mount_still_enabled(unsealed: &Unsealed, mount: &Mount, path: &str) -> bool {
    unsealed.mounts.resolve(path).is_some_and(|(current, _)| current.entry.uuid == mount.entry.uuid)
}

async fn token_still_live(unsealed: &Unsealed, token: &TokenEntry) -> bool {
    !matches!(unsealed.tokens.entry_by_hash(&token.id_hash).await, Ok(None))
}

/// `arcanum_auth_logins_total` / `arcanum_auth_login_failures_total`: a login path's answer
/// counts as a login when it carries a token, as a failure when it is an error.
fn count_login(mount: &Mount, result: &Result<Response, ApiError>) {
    let metrics = arcanum_metrics::global();
    let labels = [mount.entry.kind.as_str(), mount.route.as_str()];
    match result {
        Ok(Response::Logical(logical)) if logical.auth.is_some() => metrics.logins.with_label_values(&labels).inc(),
        Ok(_) => {}
        Err(_) => metrics.login_failures.with_label_values(&labels).inc(),
    }
}

/// A credential backend's login becomes an orphan token; anything else passes through.
async fn finish_login(unsealed: &Unsealed, mount: &Mount, response: Response) -> Result<Response, ApiError> {
    let Response::Login(login) = response else {
        return Ok(response);
    };
    let (token, entry) = unsealed.create_login_token(&mount.entry, &login).await?;
    Ok(Response::Logical(Box::new(arcanum_contract::logical::LogicalResponse {
        auth: Some(entry.auth_block(&token)),
        ..Default::default()
    })))
}

/// Vault's root-protected paths: `sudo` is needed on top of the operation's capability.
pub fn needs_sudo(path: &str, operation: Operation) -> bool {
    let prefix_of = |prefix: &str| path == prefix.trim_end_matches('/') || path.starts_with(prefix);
    // Allocation-free: this runs on every request.
    let exact = |p: &str| path.strip_suffix('/').unwrap_or(path) == p;
    (path.starts_with("sys/auth/"))
        || prefix_of("sys/audit/")
        || prefix_of("sys/audit-hash/")
        || prefix_of("sys/raw/")
        || prefix_of("sys/rotate/")
        || exact("sys/remount")
        || exact("sys/seal")
        || exact("sys/step-down")
        || exact("sys/rekey/backup")
        || exact("sys/rekey/recovery-key-backup")
        || exact("sys/config/cors")
        || path.starts_with("sys/config/auditing/")
        || path.starts_with("sys/plugins/catalog/")
        || path.starts_with("sys/revoke-prefix/")
        || path.starts_with("sys/revoke-force/")
        || path.starts_with("sys/leases/revoke-prefix/")
        || path.starts_with("sys/leases/revoke-force/")
        || (operation == Operation::List && path.starts_with("sys/leases/lookup/"))
        || prefix_of("auth/token/revoke-orphan/")
        || prefix_of("auth/token/accessors/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_paths_table() {
        let sudo = [
            ("sys/auth/userpass", Operation::Update),
            ("sys/audit", Operation::Read),
            ("sys/audit/file", Operation::Update),
            ("sys/audit-hash/file", Operation::Update),
            ("sys/raw/foo", Operation::Read),
            ("sys/rotate", Operation::Update),
            ("sys/remount", Operation::Update),
            ("sys/seal", Operation::Update),
            ("sys/seal/", Operation::Update),
            ("auth/token/revoke-orphan", Operation::Update),
            ("auth/token/accessors/", Operation::List),
            ("sys/leases/lookup/database/", Operation::List),
        ];
        for (path, operation) in sudo {
            assert!(needs_sudo(path, operation), "{path} should need sudo");
        }
        let plain = [
            ("sys/auth", Operation::Read),
            ("sys/mounts/secret", Operation::Update),
            ("sys/policies/acl/x", Operation::Update),
            ("sys/audit-hashx", Operation::Update),
            ("sys/rotatex", Operation::Update),
            ("sys/sealx", Operation::Update),
            ("sys/seal//", Operation::Update),
            ("auth/token/create", Operation::Update),
            ("sys/leases/lookup", Operation::Update),
            ("secret/data/sys/raw", Operation::Read),
        ];
        for (path, operation) in plain {
            assert!(!needs_sudo(path, operation), "{path} should not need sudo");
        }
    }
}
