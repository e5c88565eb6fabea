//! The request path through the core: unauthenticated sys paths, the seal gate, token
//! check, then the handler that owns the path.
//!
//! Order matters and is the same as Vault's: a sealed server answers 503 before looking at
//! the token, and a request without a valid token is refused before any handler runs.

use crate::core::Core;
use crate::logical::{ApiError, Request, Response};
use crate::sys;

pub async fn handle(core: &Core, req: Request) -> Result<Response, ApiError> {
    if let Some(result) = sys::handle_unauthenticated(core, &req).await {
        return result;
    }
    let unsealed = core.unsealed()?;
    let token = match req.client_token.as_deref() {
        Some(token) => unsealed.tokens.lookup(token).await.map_err(|err| {
            tracing::error!(error = %err, "token lookup failed");
            ApiError::internal()
        })?,
        None => None,
    };
    let Some(token) = token else {
        return Err(ApiError::invalid_token());
    };
    if let Some(result) = sys::handle_authenticated(core, &token, &req).await {
        return result;
    }
    Err(ApiError::no_handler(&req.path))
}
