//! `sys/wrapping/*`: wrap, unwrap, lookup and rewrap, with Vault's shapes and errors. The
//! wrapping itself (any request with `X-Vault-Wrap-TTL`) happens in the router.

use std::sync::Arc;

use serde_json::{Map, Value};

use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Request, Response};
use arcanum_core::wrapping::WrappingToken;
use arcanum_core::{Caller, Unsealed};

/// `sys/wrapping/lookup` works without a token (the router audits it first).
pub fn is_lookup(path: &str) -> bool {
    path.trim_end_matches('/') == "sys/wrapping/lookup"
}

/// `sys/wrapping/lookup`: the token from the body (or query), else the request's own token.
/// The token is not used up.
pub async fn lookup(unsealed: &Unsealed, req: &Request) -> Result<Response, ApiError> {
    if !matches!(req.operation, Operation::Read | Operation::Update) {
        return Err(ApiError::unsupported_operation());
    }
    let token = named_token(req)?.or(req.client_token.as_deref()).unwrap_or_default();
    let wrapping = unsealed.wrapping_token(token).await?;
    let metadata = unsealed.wrapping_metadata(&wrapping).await?;
    let mut data = Map::new();
    data.insert("creation_ttl".into(), Value::from(metadata.creation_ttl));
    data.insert("creation_time".into(), Value::from(metadata.creation_time));
    data.insert("creation_path".into(), Value::from(metadata.creation_path));
    Ok(Response::data(data))
}

pub async fn handle(unsealed: &Arc<Unsealed>, caller: &Caller, req: &Request) -> Option<Result<Response, ApiError>> {
    let result = match req.path.trim_end_matches('/') {
        "sys/wrapping/wrap" => wrap(req),
        "sys/wrapping/unwrap" => unwrap(unsealed, caller, req).await,
        "sys/wrapping/rewrap" => rewrap(unsealed, caller, req).await,
        _ => return None,
    };
    Some(result)
}

/// The body becomes the wrapped answer's `data`; the router wraps it.
fn wrap(req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    if req.wrap_ttl.is_none() {
        return Err(ApiError::bad_request("endpoint requires response wrapping to be used"));
    }
    if req.data.is_empty() {
        return Err(ApiError::bad_request("no data provided to wrap"));
    }
    Ok(Response::data(req.data.clone()))
}

/// The wrapped answer, exactly as it was (status 200 with its own `request_id`), once.
async fn unwrap(unsealed: &Unsealed, caller: &Caller, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let (wrapping, own) = wrapping_token_of(unsealed, caller, req).await?;
    if !own {
        unsealed.spend_wrapping_token(&wrapping).await?;
    }
    // The request's own token was spent by the router, which revokes it after this answer.
    let text = unsealed.wrapped_response(&wrapping).await;
    if !own {
        unsealed.revoke_token_tree(&wrapping.entry.id_hash).await?;
    }
    let text = text?;
    if text.trim().is_empty() {
        return Ok(Response::NoContent);
    }
    let body: Value = serde_json::from_str(&text).map_err(|err| {
        tracing::error!(error = %err, "a wrapped answer does not parse");
        ApiError::internal()
    })?;
    Ok(Response::Raw { status: 200, body })
}

/// The same answer under a new wrapping token; the old one stops working.
async fn rewrap(unsealed: &Unsealed, caller: &Caller, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let (wrapping, own) = wrapping_token_of(unsealed, caller, req).await?;
    if own {
        // Only reachable for a caller whose policies grant rewrap to a wrapping token's value.
        return Err(ApiError::bad_request("rewrap needs the wrapping token in the body"));
    }
    let info = unsealed.rewrap(&wrapping).await?;
    Ok(Response::Logical(Box::new(LogicalResponse { wrap_info: Some(info), ..Default::default() })))
}

/// The wrapping token a request names: `token` in the body, else the request's own token
/// (already counted by the router: `own` is true).
async fn wrapping_token_of(
    unsealed: &Unsealed,
    caller: &Caller,
    req: &Request,
) -> Result<(WrappingToken, bool), ApiError> {
    match named_token(req)? {
        Some(token) if token != caller.token_value.as_str() => Ok((unsealed.wrapping_token(token).await?, false)),
        _ => Ok((Unsealed::checked(arcanum_core::token::TokenEntry::clone(&caller.token))?, true)),
    }
}

fn named_token(req: &Request) -> Result<Option<&str>, ApiError> {
    match req.field("token") {
        None => Ok(None),
        Some(Value::String(token)) if token.trim().is_empty() => Ok(None),
        Some(Value::String(token)) => Ok(Some(token.trim())),
        Some(_) => Err(ApiError::new(403, "error validating wrapping token: the token must be a string")),
    }
}
