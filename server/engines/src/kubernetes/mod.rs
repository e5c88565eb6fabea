//! The Kubernetes credential backend: pods log in with their service-account JWT, which the
//! cluster's API server vouches for through a TokenReview.
//!
//! Paths (relative to the mount): `config`, `role/:name`, LIST `role`, and the unauthenticated
//! `login`. The JWT is parsed here only to refuse what is plainly wrong before asking the
//! cluster (and, with `pem_keys`, to verify its signature locally); the API server's answer
//! is what grants access. See `review.rs` for the JWT checks and the TokenReview call.

pub mod review;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LoginAuth, Operation, Response};

/// Where a pod's service-account token and CA are mounted.
const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The mount's configuration, stored at `config`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    kubernetes_host: String,
    kubernetes_ca_cert: String,
    token_reviewer_jwt: String,
    pem_keys: Vec<String>,
    issuer: String,
    disable_iss_validation: bool,
    disable_local_ca_jwt: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubernetes_host: String::new(),
            kubernetes_ca_cert: String::new(),
            token_reviewer_jwt: String::new(),
            pem_keys: Vec::new(),
            issuer: String::new(),
            // Vault's default: issuers differ between clusters and TokenReview is authoritative.
            disable_iss_validation: true,
            disable_local_ca_jwt: false,
        }
    }
}

// By hand so the reviewer JWT never reaches a log line through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("kubernetes_host", &self.kubernetes_host)
            .field("kubernetes_ca_cert_set", &!self.kubernetes_ca_cert.is_empty())
            .field("token_reviewer_jwt", &(!self.token_reviewer_jwt.is_empty()).then_some("<redacted>"))
            .field("pem_keys", &self.pem_keys.len())
            .field("issuer", &self.issuer)
            .field("disable_iss_validation", &self.disable_iss_validation)
            .field("disable_local_ca_jwt", &self.disable_local_ca_jwt)
            .finish()
    }
}

/// A role: which service accounts may log in, and what token they get.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Role {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    alias_name_source: String,
    token_policies: Vec<String>,
    token_ttl: u64,
    token_max_ttl: u64,
    token_period: u64,
    token_num_uses: u64,
    token_bound_cidrs: Vec<String>,
    token_type: String,
    token_no_default_policy: bool,
}

/// The backend; one per mount. Holds the TokenReview HTTP client so connections to the API
/// server are reused across logins.
pub struct Kubernetes {
    sa_dir: PathBuf,
    reviewer: review::ClientCache,
}

impl fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubernetes").field("sa_dir", &self.sa_dir).finish()
    }
}

impl Kubernetes {
    /// The pod's service-account directory comes from `ARCANUM_K8S_SA_DIR` when set, so tests
    /// can stand in for a pod.
    pub fn from_env() -> Kubernetes {
        let sa_dir =
            std::env::var_os("ARCANUM_K8S_SA_DIR").map_or_else(|| PathBuf::from(DEFAULT_SA_DIR), PathBuf::from);
        Kubernetes { sa_dir, reviewer: review::ClientCache::default() }
    }
}

fn role_name(raw: &str) -> Result<String, ApiError> {
    // Vault's plugin lower-cases role names on write and on login.
    let name = raw.trim().to_lowercase();
    if name.is_empty() || name.contains('/') || name.len() > 256 {
        return Err(ApiError::bad_request("invalid role name"));
    }
    Ok(name)
}

fn string_field(req: &BackendRequest<'_>, name: &str) -> Result<Option<String>, ApiError> {
    match req.field(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn list(value: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(fields::string_list(Some(value), name)?.unwrap_or_default())
}

async fn write_config(req: &BackendRequest<'_>) -> Result<Response, ApiError> {
    // A write replaces the whole configuration, as in Vault.
    let mut config = Config::default();
    for (key, value) in req.data {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "kubernetes_host" => config.kubernetes_host = string_field(req, key)?.unwrap_or_default(),
            "kubernetes_ca_cert" => config.kubernetes_ca_cert = string_field(req, key)?.unwrap_or_default(),
            "token_reviewer_jwt" => config.token_reviewer_jwt = string_field(req, key)?.unwrap_or_default(),
            "pem_keys" => config.pem_keys = list(value, key)?,
            "issuer" => config.issuer = string_field(req, key)?.unwrap_or_default(),
            "disable_iss_validation" => {
                config.disable_iss_validation = fields::boolean(Some(value), key)?.unwrap_or(true)
            }
            "disable_local_ca_jwt" => config.disable_local_ca_jwt = fields::boolean(Some(value), key)?.unwrap_or(false),
            "use_annotations_as_alias_metadata" if fields::boolean(Some(value), key)? != Some(true) => {}
            other => return Err(ApiError::bad_request(format!("unknown or unsupported field {other:?}"))),
        }
    }
    config.kubernetes_host = config.kubernetes_host.trim().trim_end_matches('/').to_owned();
    if config.kubernetes_host.is_empty() {
        return Err(ApiError::bad_request("no host provided"));
    }
    if !config.kubernetes_host.contains("://") {
        config.kubernetes_host = format!("https://{}", config.kubernetes_host);
    }
    if reqwest::Url::parse(&config.kubernetes_host).is_err() {
        return Err(ApiError::bad_request("kubernetes_host is not a valid URL or host:port"));
    }
    if !config.kubernetes_ca_cert.trim().is_empty() {
        review::parse_ca(&config.kubernetes_ca_cert)
            .map_err(|reason| ApiError::bad_request(format!("invalid kubernetes_ca_cert: {reason}")))?;
    }
    for (index, pem) in config.pem_keys.iter().enumerate() {
        review::parse_pem_key(pem)
            .map_err(|reason| ApiError::bad_request(format!("invalid pem_keys[{index}]: {reason}")))?;
    }
    req.storage.put_json("config", &config).await?;
    Ok(Response::NoContent)
}

fn config_json(config: &Config) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("kubernetes_host".into(), json!(config.kubernetes_host));
    data.insert("kubernetes_ca_cert".into(), json!(config.kubernetes_ca_cert));
    data.insert("pem_keys".into(), json!(config.pem_keys));
    data.insert("issuer".into(), json!(config.issuer));
    data.insert("disable_iss_validation".into(), json!(config.disable_iss_validation));
    data.insert("disable_local_ca_jwt".into(), json!(config.disable_local_ca_jwt));
    // The JWT itself is never returned; only whether one is set.
    data.insert("token_reviewer_jwt_set".into(), json!(!config.token_reviewer_jwt.is_empty()));
    data.insert("use_annotations_as_alias_metadata".into(), json!(false));
    data
}

fn apply_role_fields(role: &mut Role, req: &BackendRequest<'_>) -> Result<(), ApiError> {
    for (key, value) in req.data {
        if value.is_null() {
            continue;
        }
        let secs = |value: &Value| Ok::<u64, ApiError>(fields::duration_secs(Some(value), key)?.unwrap_or(0));
        match key.as_str() {
            "name" => {}
            "bound_service_account_names" => role.bound_service_account_names = list(value, key)?,
            "bound_service_account_namespaces" => role.bound_service_account_namespaces = list(value, key)?,
            "audience" => role.audience = string_field(req, key)?.unwrap_or_default(),
            "alias_name_source" => {
                let source = string_field(req, key)?.unwrap_or_default();
                if !matches!(source.as_str(), "" | "serviceaccount_uid" | "serviceaccount_name") {
                    return Err(ApiError::bad_request(format!(
                        "invalid alias_name_source {source:?}: must be serviceaccount_uid or serviceaccount_name"
                    )));
                }
                role.alias_name_source = source;
            }
            "policies" | "token_policies" => {
                role.token_policies = list(value, key)?.iter().map(|p| arcanum_policy::normalize_name(p)).collect()
            }
            "ttl" | "token_ttl" => role.token_ttl = secs(value)?,
            "max_ttl" | "token_max_ttl" => role.token_max_ttl = secs(value)?,
            "period" | "token_period" => role.token_period = secs(value)?,
            "num_uses" | "token_num_uses" => role.token_num_uses = fields::non_negative(Some(value), key)?.unwrap_or(0),
            "token_no_default_policy" => {
                role.token_no_default_policy = fields::boolean(Some(value), key)?.unwrap_or(false)
            }
            "bound_cidrs" | "token_bound_cidrs" => role.token_bound_cidrs = list(value, key)?,
            "token_type" => {
                let kind = string_field(req, key)?.unwrap_or_default();
                if !matches!(kind.as_str(), "" | "service" | "default" | "default-service") {
                    return Err(ApiError::bad_request(format!(
                        "token_type {kind:?} is not supported by Arcanum: service tokens only"
                    )));
                }
                role.token_type = kind;
            }
            // hvac and Terraform send these with their zero values; anything else we cannot honour.
            "token_explicit_max_ttl" if secs(value)? == 0 => {}
            "bound_service_account_namespace_selector" if value.as_str() == Some("") => {}
            other => return Err(ApiError::bad_request(format!("unknown or unsupported field {other:?}"))),
        }
    }
    if role.bound_service_account_names.is_empty() {
        return Err(ApiError::bad_request("\"bound_service_account_names\" can not be empty"));
    }
    if role.bound_service_account_namespaces.is_empty() {
        return Err(ApiError::bad_request("\"bound_service_account_namespaces\" can not be empty"));
    }
    if role.bound_service_account_names.len() > 1 && role.bound_service_account_names.iter().any(|n| n == "*") {
        return Err(ApiError::bad_request("can not mix \"*\" with values in bound_service_account_names"));
    }
    if role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
        return Err(ApiError::bad_request("token_ttl cannot be greater than token_max_ttl"));
    }
    Ok(())
}

fn role_json(role: &Role) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("bound_service_account_names".into(), json!(role.bound_service_account_names));
    data.insert("bound_service_account_namespaces".into(), json!(role.bound_service_account_namespaces));
    data.insert("bound_service_account_namespace_selector".into(), json!(""));
    data.insert("audience".into(), json!(role.audience));
    let source = if role.alias_name_source.is_empty() { "serviceaccount_uid" } else { &role.alias_name_source };
    data.insert("alias_name_source".into(), json!(source));
    data.insert("token_policies".into(), json!(role.token_policies));
    data.insert("policies".into(), json!(role.token_policies));
    data.insert("token_ttl".into(), json!(role.token_ttl));
    data.insert("ttl".into(), json!(role.token_ttl));
    data.insert("token_max_ttl".into(), json!(role.token_max_ttl));
    data.insert("max_ttl".into(), json!(role.token_max_ttl));
    data.insert("token_period".into(), json!(role.token_period));
    data.insert("period".into(), json!(role.token_period));
    data.insert("token_num_uses".into(), json!(role.token_num_uses));
    data.insert("num_uses".into(), json!(role.token_num_uses));
    data.insert("token_no_default_policy".into(), json!(role.token_no_default_policy));
    data.insert("token_bound_cidrs".into(), json!(role.token_bound_cidrs));
    data.insert("bound_cidrs".into(), json!(role.token_bound_cidrs));
    data.insert("token_type".into(), json!(if role.token_type.is_empty() { "default" } else { &role.token_type }));
    data.insert("token_explicit_max_ttl".into(), json!(0));
    data
}

/// A 403 that tells the operator what to fix; logged (without the JWT) where it is made.
fn refused(mount: &str, role: &str, reason: String) -> ApiError {
    tracing::info!(mount = %mount, role = %role, reason = %reason, "kubernetes login refused");
    ApiError { status: 403, errors: vec!["permission denied".into(), reason] }
}

fn bound(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| arcanum_contract::glob::matches(p, value))
}

impl Kubernetes {
    async fn login(&self, req: &BackendRequest<'_>) -> Result<Response, ApiError> {
        let mount = req.mount.path.as_str();
        let raw_role = string_field(req, "role")?.filter(|s| !s.is_empty());
        let raw_role = raw_role.ok_or_else(|| ApiError::bad_request("missing role"))?;
        let jwt = string_field(req, "jwt")?.filter(|s| !s.is_empty());
        let jwt = zeroize::Zeroizing::new(jwt.ok_or_else(|| ApiError::bad_request("missing jwt"))?);
        let role_key =
            role_name(&raw_role).map_err(|_| ApiError::bad_request(format!("invalid role name {raw_role:?}")))?;
        let role: Role = req
            .storage
            .get_json(&format!("role/{role_key}"))
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("invalid role name {raw_role:?}")))?;
        let config: Config = req.storage.get_json("config").await?.ok_or_else(|| {
            ApiError::bad_request("could not load backend configuration: write auth/<mount>/config first")
        })?;
        let refuse = |reason: String| refused(mount, &role_key, reason);

        // Step 1: what the JWT claims, checked before anyone is asked.
        let claims = review::parse_jwt(&jwt, &config.pem_keys).map_err(|err| match err {
            review::JwtError::Malformed(reason) => {
                tracing::info!(mount = %mount, role = %role_key, reason = %reason, "kubernetes login refused");
                ApiError::bad_request(reason)
            }
            review::JwtError::Refused(reason) => refuse(reason),
        })?;
        claims.check_time().map_err(refuse)?;
        if !config.disable_iss_validation && !config.issuer.is_empty() && claims.issuer != config.issuer {
            return Err(refuse(format!(
                "JWT issuer {:?} does not match the configured issuer {:?}",
                claims.issuer, config.issuer
            )));
        }
        if !role.audience.is_empty() && !claims.audiences.contains(&role.audience) {
            return Err(refuse(format!(
                "audience mismatch: the JWT's aud {:?} does not include the role's audience {:?}",
                claims.audiences, role.audience
            )));
        }
        let (Some(name), Some(namespace)) = (claims.sa_name.clone(), claims.sa_namespace.clone()) else {
            return Err(refuse("the JWT carries no Kubernetes service-account name and namespace claims".into()));
        };
        if !bound(&role.bound_service_account_names, &name) {
            return Err(refuse(format!("service account name {name:?} not authorized by role {role_key:?}")));
        }
        if !bound(&role.bound_service_account_namespaces, &namespace) {
            return Err(refuse(format!("namespace {namespace:?} not authorized by role {role_key:?}")));
        }

        // Step 2: the cluster's verdict.
        let audiences: Vec<String> = if role.audience.is_empty() { Vec::new() } else { vec![role.audience.clone()] };
        let reviewer = self.reviewer_token(&config).await;
        let ca = self.ca_pem(&config).await;
        let client = self.reviewer.client(ca.as_deref()).map_err(refuse)?;
        let user = review::token_review(
            &client,
            &config.kubernetes_host,
            reviewer.as_deref().map_or(jwt.as_str(), |r| r.as_str()),
            &jwt,
            &audiences,
        )
        .await
        .map_err(refuse)?;
        let expected = format!("system:serviceaccount:{namespace}:{name}");
        let parts: Vec<&str> = user.username.split(':').collect();
        let [system, kind, review_ns, review_name] = parts.as_slice() else {
            return Err(refuse(format!(
                "TokenReview returned username {:?}, not of the form system:serviceaccount:<namespace>:<name>",
                user.username
            )));
        };
        if *system != "system" || *kind != "serviceaccount" || user.username != expected {
            return Err(refuse(format!(
                "TokenReview returned username {:?} but the JWT names {expected:?}",
                user.username
            )));
        }
        if !bound(&role.bound_service_account_names, review_name)
            || !bound(&role.bound_service_account_namespaces, review_ns)
        {
            return Err(refuse(format!("TokenReview user {:?} is not bound by role {role_key:?}", user.username)));
        }
        let uid = match &claims.sa_uid {
            Some(uid) if *uid != user.uid => {
                return Err(refuse("TokenReview user uid does not match the JWT's service-account uid".into()))
            }
            Some(uid) => uid.clone(),
            None if user.uid.is_empty() => return Err(refuse("TokenReview returned no user uid".into())),
            None => user.uid.clone(),
        };

        let mut metadata = BTreeMap::new();
        metadata.insert("role".to_owned(), role_key.clone());
        metadata.insert("service_account_name".to_owned(), name.clone());
        metadata.insert("service_account_namespace".to_owned(), namespace.clone());
        let alias_name = match role.alias_name_source.as_str() {
            "serviceaccount_name" => format!("{namespace}/{name}"),
            _ => uid.clone(),
        };
        metadata.insert("service_account_uid".to_owned(), uid);
        metadata.insert("service_account_secret_name".to_owned(), claims.secret_name.clone().unwrap_or_default());
        tracing::info!(mount = %mount, role = %role_key, service_account = %expected, "kubernetes login accepted");
        Ok(Response::Login(Box::new(LoginAuth {
            policies: role.token_policies.clone(),
            metadata,
            display_name: format!("{namespace}-{name}"),
            ttl: role.token_ttl,
            max_ttl: role.token_max_ttl,
            period: role.token_period,
            num_uses: role.token_num_uses,
            no_default_policy: role.token_no_default_policy,
            bound_cidrs: role.token_bound_cidrs.clone(),
            renewable: true,
            mount_path: req.mount.path.clone(),
            login_path: "login".into(),
            alias_name,
        })))
    }

    /// The configured reviewer JWT, else the pod's own token file (read at every login so a
    /// rotated projected token is picked up), else `None`: the client's JWT reviews itself.
    async fn reviewer_token(&self, config: &Config) -> Option<zeroize::Zeroizing<String>> {
        if !config.token_reviewer_jwt.is_empty() {
            return Some(zeroize::Zeroizing::new(config.token_reviewer_jwt.clone()));
        }
        if config.disable_local_ca_jwt {
            return None;
        }
        let text = tokio::fs::read_to_string(self.sa_dir.join("token")).await.ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| zeroize::Zeroizing::new(token.to_owned()))
    }

    /// The configured CA, else the pod's CA file, else `None` (system roots).
    async fn ca_pem(&self, config: &Config) -> Option<String> {
        if !config.kubernetes_ca_cert.trim().is_empty() {
            return Some(config.kubernetes_ca_cert.clone());
        }
        if config.disable_local_ca_jwt {
            return None;
        }
        let text = tokio::fs::read_to_string(self.sa_dir.join("ca.crt")).await.ok()?;
        (!text.trim().is_empty()).then_some(text)
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Kubernetes {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let path = req.path.trim_end_matches('/');
        match (path, req.operation) {
            ("login", Operation::Update) => return self.login(&req).await,
            ("login", _) => return Err(ApiError::unsupported_operation()),
            ("config", Operation::Update) => return write_config(&req).await,
            ("config", Operation::Read) => {
                let config: Option<Config> = req.storage.get_json("config").await?;
                // Vault answers an unconfigured mount with an empty 200, not a 404.
                return Ok(Response::data(config.as_ref().map(config_json).unwrap_or_default()));
            }
            ("config", _) => return Err(ApiError::unsupported_operation()),
            ("role", Operation::List) => return Response::list(req.storage.list("role/").await?),
            ("role", _) => return Err(ApiError::unsupported_operation()),
            _ => {}
        }
        let Some(raw_name) = path.strip_prefix("role/") else { return Err(ApiError::no_handler(req.path)) };
        let key = format!("role/{}", role_name(raw_name)?);
        match req.operation {
            Operation::Read => {
                let role: Role = req.storage.get_json(&key).await?.ok_or_else(ApiError::not_found)?;
                Ok(Response::data(role_json(&role)))
            }
            Operation::Update => {
                let mut role: Role = req.storage.get_json(&key).await?.unwrap_or_default();
                apply_role_fields(&mut role, &req)?;
                req.storage.put_json(&key, &role).await?;
                Ok(Response::NoContent)
            }
            Operation::Delete => {
                req.storage.delete(&key).await?;
                Ok(Response::NoContent)
            }
            _ => Err(ApiError::unsupported_operation()),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        match req.path.trim_end_matches('/').strip_prefix("role/") {
            Some(name) if !name.contains('/') => {
                Ok(Some(req.storage.get(&format!("role/{}", role_name(name)?)).await?.is_some()))
            }
            _ => Ok(None),
        }
    }

    fn is_unauthenticated(&self, path: &str) -> bool {
        path.trim_end_matches('/') == "login"
    }

    fn has_login_roles(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_redacts_the_reviewer_jwt() {
        let config = Config { token_reviewer_jwt: "eyJ-secret".into(), ..Config::default() };
        assert!(!format!("{config:?}").contains("eyJ-secret"));
    }
}
