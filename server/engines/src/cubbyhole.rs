//! `cubbyhole/`: private storage for each token, gone when the token is revoked.
//!
//! Keys live under the mount's view in a folder named by the token's storage hash, so no
//! token can name another token's cubbyhole, not even root.

use serde_json::{Map, Value};

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::logical::{ApiError, Operation, Response};

#[derive(Debug)]
pub struct Cubbyhole;

impl Cubbyhole {
    fn view(req: &BackendRequest<'_>) -> Result<arcanum_contract::storage::StorageView, ApiError> {
        let token = req.token.ok_or_else(ApiError::permission_denied)?;
        Ok(req.storage.sub_view(&format!("{}/", token.id_hash)))
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Cubbyhole {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let view = Self::view(&req)?;
        let path = req.path;
        if path.is_empty() && req.operation != Operation::List {
            return Err(ApiError::unsupported_operation());
        }
        match req.operation {
            Operation::Read => {
                let data: Map<String, Value> = view.get_json(path).await?.ok_or_else(ApiError::not_found)?;
                Ok(Response::data(data))
            }
            Operation::List => Response::list(view.list(path).await?),
            Operation::Update => {
                if req.data.is_empty() {
                    return Err(ApiError::bad_request("missing data fields"));
                }
                view.put_json(path, req.data).await?;
                Ok(Response::NoContent)
            }
            Operation::Delete => {
                view.delete(path).await?;
                Ok(Response::NoContent)
            }
            Operation::Patch | Operation::Header => Err(ApiError::unsupported_operation()),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        Ok(Some(Self::view(&req)?.get(req.path).await?.is_some()))
    }
}
