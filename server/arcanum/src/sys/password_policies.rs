//! `sys/policies/password`: write, read, delete and list password policies, and generate a password
//! from one (`sys/policies/password/:name/generate`).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_contract::password::PasswordPolicies;
use arcanum_core::Unsealed;

pub(super) async fn handle(unsealed: &Arc<Unsealed>, req: &Request) -> Option<Result<Response, ApiError>> {
    let rest = match req.path.as_str() {
        "sys/policies/password" => "",
        path => path.strip_prefix("sys/policies/password/")?,
    };
    let policies = PasswordPolicies::new(unsealed.barrier.clone());
    let result = if rest.is_empty() {
        match req.operation {
            // Vault lists every name in one answer, names with `/` whole.
            Operation::List => policies.names().await.and_then(Response::list),
            _ => Err(ApiError::unsupported_operation()),
        }
    } else if req.operation == Operation::List {
        Err(ApiError::unsupported_operation())
    } else if let Some(name) = rest.strip_suffix("/generate") {
        match req.operation {
            Operation::Read => generate(&policies, name).await,
            _ => Err(ApiError::unsupported_operation()),
        }
    } else {
        match req.operation {
            Operation::Update => write(&policies, rest, req).await,
            Operation::Read => read(&policies, rest).await,
            Operation::Delete => policies.delete(rest).await.map(|()| Response::NoContent),
            _ => Err(ApiError::unsupported_operation()),
        }
    };
    Some(result)
}

async fn write(policies: &PasswordPolicies, name: &str, req: &Request) -> Result<Response, ApiError> {
    let text = match req.field("policy") {
        Some(Value::String(text)) => super::policies::decode_if_base64(text),
        Some(_) => return Err(ApiError::bad_request("'policy' must be a string")),
        None => String::new(),
    };
    policies.put(name, &text).await?;
    Ok(Response::NoContent)
}

async fn read(policies: &PasswordPolicies, name: &str) -> Result<Response, ApiError> {
    let text = policies.text(name).await?.ok_or_else(missing)?;
    let mut data = Map::new();
    data.insert("policy".into(), json!(text));
    Ok(Response::data(data))
}

async fn generate(policies: &PasswordPolicies, name: &str) -> Result<Response, ApiError> {
    let password = policies.generate(name).await?.ok_or_else(missing)?;
    let mut data = Map::new();
    data.insert("password".into(), json!(password.as_str()));
    Ok(Response::data(data))
}

fn missing() -> ApiError {
    ApiError::new(404, "policy does not exist")
}
