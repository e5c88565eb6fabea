//! KV version 1: each key holds one JSON object, overwritten in place.

use serde_json::{Map, Value};

use super::check_key;
use arcanum_contract::backend::SYSTEM_MAX_TTL;
use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Response};

#[derive(Debug)]
pub struct KvV1;

#[async_trait::async_trait]
impl LogicalBackend for KvV1 {
    fn standby_may_read(&self) -> bool {
        true
    }

    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let path = req.path;
        check_key(path)?;
        match req.operation {
            Operation::List => Response::list(req.storage.list(path).await?),
            _ if path.is_empty() || path.ends_with('/') => Err(ApiError::unsupported_operation()),
            Operation::Read | Operation::Header => {
                let data: Map<String, Value> = req.storage.get_json(path).await?.ok_or_else(ApiError::not_found)?;
                // An advisory TTL: a `ttl` key in the secret, else the mount's default.
                let lease_duration = data
                    .get("ttl")
                    .and_then(|ttl| arcanum_config::duration::parse_duration_value(ttl).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(match req.mount.config.default_lease_ttl {
                        0 => SYSTEM_MAX_TTL,
                        ttl => ttl,
                    });
                Ok(Response::Logical(Box::new(LogicalResponse {
                    data: Some(data),
                    lease_duration,
                    ..Default::default()
                })))
            }
            Operation::Update => {
                if req.data.is_empty() {
                    return Err(ApiError::bad_request("missing data fields"));
                }
                req.storage.put_json(path, req.data).await?;
                Ok(Response::NoContent)
            }
            Operation::Delete => {
                req.storage.delete(path).await?;
                Ok(Response::NoContent)
            }
            Operation::Patch => Err(ApiError::unsupported_operation()),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        if req.path.is_empty() || req.path.ends_with('/') {
            return Ok(None);
        }
        Ok(Some(req.storage.get(req.path).await?.is_some()))
    }
}
