//! The userpass credential backend: users with argon2id password hashes, and login.
//!
//! Usernames are lower-cased before every use, so `Alice` and `alice` are one user. A
//! login for an unknown user verifies against a dummy hash, so both failures take the same
//! time and answer with the same message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LoginAuth, Operation, Response};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct User {
    password_hash: String,
    token_policies: Vec<String>,
    token_ttl: u64,
    token_max_ttl: u64,
    token_period: u64,
    token_num_uses: u64,
    token_no_default_policy: bool,
    token_bound_cidrs: Vec<String>,
    token_type: String,
}

#[derive(Debug)]
pub struct Userpass;

fn username(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() || name.contains('/') || name.len() > 256 {
        return Err(ApiError::bad_request("invalid username"));
    }
    Ok(name)
}

fn password(req: &BackendRequest<'_>) -> Result<Option<String>, ApiError> {
    match req.field("password") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request("password must be a non-empty string")),
    }
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || arcanum_crypto::password::hash(&password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|_| ApiError::internal())
}

fn list_field(value: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(fields::string_list(Some(value), name)?.unwrap_or_default())
}

fn apply_token_fields(user: &mut User, req: &BackendRequest<'_>) -> Result<(), ApiError> {
    for (key, value) in req.data {
        if value.is_null() {
            continue;
        }
        let secs = |value: &Value| Ok::<u64, ApiError>(fields::duration_secs(Some(value), key)?.unwrap_or(0));
        match key.as_str() {
            "password" | "username" => {}
            "policies" | "token_policies" => {
                user.token_policies =
                    list_field(value, key)?.iter().map(|p| arcanum_policy::normalize_name(p)).collect()
            }
            "ttl" | "token_ttl" => user.token_ttl = secs(value)?,
            "max_ttl" | "token_max_ttl" => user.token_max_ttl = secs(value)?,
            "period" | "token_period" => user.token_period = secs(value)?,
            "token_num_uses" => user.token_num_uses = fields::non_negative(Some(value), key)?.unwrap_or(0),
            "token_no_default_policy" => {
                user.token_no_default_policy =
                    value.as_bool().ok_or_else(|| ApiError::bad_request("token_no_default_policy must be a boolean"))?
            }
            "bound_cidrs" | "token_bound_cidrs" => user.token_bound_cidrs = list_field(value, key)?,
            "token_type" => {
                let kind = value.as_str().unwrap_or_default();
                if !matches!(kind, "" | "service" | "default" | "default-service") {
                    return Err(ApiError::bad_request(format!(
                        "token_type {kind:?} is not supported: service tokens only"
                    )));
                }
                user.token_type = kind.to_owned();
            }
            "token_explicit_max_ttl" => {
                return Err(ApiError::bad_request("token_explicit_max_ttl is not supported by Arcanum's userpass yet"))
            }
            other => return Err(ApiError::bad_request(format!("unknown field {other:?}"))),
        }
    }
    if user.token_max_ttl > 0 && user.token_ttl > user.token_max_ttl {
        return Err(ApiError::bad_request("token_ttl cannot be greater than token_max_ttl"));
    }
    Ok(())
}

fn user_json(user: &User) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("token_policies".into(), json!(user.token_policies));
    data.insert("policies".into(), json!(user.token_policies));
    data.insert("token_ttl".into(), json!(user.token_ttl));
    data.insert("ttl".into(), json!(user.token_ttl));
    data.insert("token_max_ttl".into(), json!(user.token_max_ttl));
    data.insert("max_ttl".into(), json!(user.token_max_ttl));
    data.insert("token_period".into(), json!(user.token_period));
    data.insert("token_num_uses".into(), json!(user.token_num_uses));
    data.insert("token_no_default_policy".into(), json!(user.token_no_default_policy));
    data.insert("token_bound_cidrs".into(), json!(user.token_bound_cidrs));
    data.insert("token_type".into(), json!(if user.token_type.is_empty() { "default" } else { &user.token_type }));
    data.insert("token_explicit_max_ttl".into(), json!(0));
    data
}

impl Userpass {
    async fn login(&self, req: &BackendRequest<'_>, raw_name: &str) -> Result<Response, ApiError> {
        let name = username(raw_name)?;
        let given = password(req)?.ok_or_else(|| ApiError::bad_request("missing password"))?;
        let user: Option<User> = req.storage.get_json(&format!("users/{name}")).await?;
        let hash = user
            .as_ref()
            .map_or_else(|| arcanum_crypto::password::dummy_hash().to_owned(), |u| u.password_hash.clone());
        let matches = tokio::task::spawn_blocking(move || arcanum_crypto::password::verify(&given, &hash))
            .await
            .map_err(|_| ApiError::internal())?;
        let (Some(user), true) = (user, matches) else {
            return Err(ApiError::bad_request("invalid username or password"));
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("username".to_owned(), name.clone());
        Ok(Response::Login(Box::new(LoginAuth {
            policies: user.token_policies.clone(),
            metadata,
            display_name: name.clone(),
            ttl: user.token_ttl,
            max_ttl: user.token_max_ttl,
            period: user.token_period,
            num_uses: user.token_num_uses,
            no_default_policy: user.token_no_default_policy,
            bound_cidrs: user.token_bound_cidrs.clone(),
            renewable: true,
            mount_path: req.mount.path.clone(),
            login_path: format!("login/{name}"),
            alias_name: name.clone(),
        })))
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Userpass {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let path = req.path.trim_end_matches('/');
        if let Some(name) = path.strip_prefix("login/") {
            return match req.operation {
                Operation::Update => self.login(&req, name).await,
                _ => Err(ApiError::unsupported_operation()),
            };
        }
        if path == "users" {
            return match req.operation {
                Operation::List => Response::list(req.storage.list("users/").await?),
                _ => Err(ApiError::unsupported_operation()),
            };
        }
        let Some(rest) = path.strip_prefix("users/") else { return Err(ApiError::no_handler(req.path)) };
        let (raw_name, action) = match rest.split_once('/') {
            Some((name, action)) => (name, Some(action)),
            None => (rest, None),
        };
        let name = username(raw_name)?;
        let key = format!("users/{name}");
        match (action, req.operation) {
            (None, Operation::Read) => {
                let user: User = req.storage.get_json(&key).await?.ok_or_else(ApiError::not_found)?;
                Ok(Response::data(user_json(&user)))
            }
            (None, Operation::Update) => {
                let existing: Option<User> = req.storage.get_json(&key).await?;
                let mut user = existing.clone().unwrap_or_default();
                apply_token_fields(&mut user, &req)?;
                match password(&req)? {
                    Some(password) => user.password_hash = hash_password(password).await?,
                    None if existing.is_none() => return Err(ApiError::bad_request("missing password")),
                    None => {}
                }
                req.storage.put_json(&key, &user).await?;
                Ok(Response::NoContent)
            }
            (None, Operation::Delete) => {
                req.storage.delete(&key).await?;
                Ok(Response::NoContent)
            }
            (Some("password"), Operation::Update) => {
                let mut user: User = req
                    .storage
                    .get_json(&key)
                    .await?
                    .ok_or_else(|| ApiError::bad_request("username does not exist"))?;
                let password = password(&req)?.ok_or_else(|| ApiError::bad_request("missing password"))?;
                user.password_hash = hash_password(password).await?;
                req.storage.put_json(&key, &user).await?;
                Ok(Response::NoContent)
            }
            (Some("policies"), Operation::Update) => {
                let mut user: User = req
                    .storage
                    .get_json(&key)
                    .await?
                    .ok_or_else(|| ApiError::bad_request("username does not exist"))?;
                let policies = req
                    .field("policies")
                    .or_else(|| req.field("token_policies"))
                    .ok_or_else(|| ApiError::bad_request("missing policies"))?;
                user.token_policies =
                    list_field(policies, "policies")?.iter().map(|p| arcanum_policy::normalize_name(p)).collect();
                req.storage.put_json(&key, &user).await?;
                Ok(Response::NoContent)
            }
            _ => Err(ApiError::unsupported_operation()),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        let path = req.path.trim_end_matches('/');
        match path.strip_prefix("users/") {
            Some(name) if !name.contains('/') => {
                Ok(Some(req.storage.get(&format!("users/{}", username(name)?)).await?.is_some()))
            }
            _ => Ok(None),
        }
    }

    fn is_unauthenticated(&self, path: &str) -> bool {
        path.starts_with("login/")
    }

    /// The username as logins compare it (trimmed, lowercased): `Alice ` and `alice` are one
    /// user to the lockout too.
    fn login_alias(&self, path: &str, _data: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        username(path.strip_prefix("login/")?).ok()
    }

    fn is_invalid_credentials(&self, error: &ApiError) -> bool {
        error.errors.first().is_some_and(|message| message == "invalid username or password")
    }
}
