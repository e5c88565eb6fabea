//! The JWT/OIDC credential backend (`jwt` and `oidc` types): a workload logs in with a JWT its
//! issuer signed (a Kubernetes service-account token, a CI job's OIDC token), verified against
//! the issuer's published keys without calling the issuer back.
//!
//! Paths (relative to the mount): `config`, `role/:name`, LIST `role`, and the unauthenticated
//! `login`. Keys come from exactly one of `jwt_validation_pubkeys`, `jwks_url` or
//! `oidc_discovery_url`; fetched keys are cached per mount and fetched again when a token names
//! a key (`kid`) the cache does not hold, at most once per [`KID_REFRESH_INTERVAL`], so tokens
//! with made-up `kid`s cannot turn the server into a load generator against the issuer.
//! The browser OIDC flow (`oidc/auth_url`, `oidc/callback`) is not served.

mod claims;
pub mod keys;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, Operation, Response};

use crate::token_settings::{cidrs_allow, TokenSettings};
use keys::KeySet;

/// The least time between two key-set fetches caused by tokens naming an unknown `kid`.
pub const KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The mount's configuration, stored at `config`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Config {
    oidc_discovery_url: String,
    oidc_discovery_ca_pem: String,
    oidc_client_id: String,
    oidc_client_secret: String,
    oidc_response_mode: String,
    oidc_response_types: Vec<String>,
    jwks_url: String,
    jwks_ca_pem: String,
    jwt_validation_pubkeys: Vec<String>,
    jwt_supported_algs: Vec<String>,
    bound_issuer: String,
    default_role: String,
    provider_config: Map<String, Value>,
    namespace_in_state: bool,
}

// By hand so the client secret never reaches a log line through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("oidc_discovery_url", &self.oidc_discovery_url)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_validation_pubkeys", &self.jwt_validation_pubkeys.len())
            .field("bound_issuer", &self.bound_issuer)
            .field("oidc_client_secret", &(!self.oidc_client_secret.is_empty()).then_some("<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Where the keys come from, as the cache remembers it (a changed config is a new source).
    fn source(&self) -> String {
        serde_json::to_string(&(
            &self.oidc_discovery_url,
            &self.oidc_discovery_ca_pem,
            &self.jwks_url,
            &self.jwks_ca_pem,
            &self.jwt_validation_pubkeys,
        ))
        .unwrap_or_default()
    }

    async fn fetch_keys(&self) -> Result<KeySet, String> {
        if !self.jwt_validation_pubkeys.is_empty() {
            KeySet::from_pems(&self.jwt_validation_pubkeys)
        } else if !self.jwks_url.is_empty() {
            keys::fetch_jwks(&self.jwks_url, &self.jwks_ca_pem).await
        } else if !self.oidc_discovery_url.is_empty() {
            keys::discover(&self.oidc_discovery_url, &self.oidc_discovery_ca_pem).await
        } else {
            Err("no key source is configured".into())
        }
    }

    fn fetched(&self) -> bool {
        self.jwt_validation_pubkeys.is_empty()
    }
}

fn config_json(config: &Config) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("oidc_discovery_url".into(), json!(config.oidc_discovery_url));
    data.insert("oidc_discovery_ca_pem".into(), json!(config.oidc_discovery_ca_pem));
    data.insert("oidc_client_id".into(), json!(config.oidc_client_id));
    data.insert("oidc_response_mode".into(), json!(config.oidc_response_mode));
    data.insert("oidc_response_types".into(), json!(config.oidc_response_types));
    data.insert("jwks_url".into(), json!(config.jwks_url));
    data.insert("jwks_ca_pem".into(), json!(config.jwks_ca_pem));
    data.insert("jwks_pairs".into(), json!([]));
    data.insert("jwt_validation_pubkeys".into(), json!(config.jwt_validation_pubkeys));
    data.insert("jwt_supported_algs".into(), json!(config.jwt_supported_algs));
    data.insert("bound_issuer".into(), json!(config.bound_issuer));
    data.insert("default_role".into(), json!(config.default_role));
    data.insert("provider_config".into(), json!(config.provider_config));
    data.insert("namespace_in_state".into(), json!(config.namespace_in_state));
    data
}

/// A login role, stored at `role/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Role {
    role_type: String,
    bound_audiences: Vec<String>,
    bound_subject: String,
    bound_claims: Map<String, Value>,
    bound_claims_type: String,
    claim_mappings: BTreeMap<String, String>,
    user_claim: String,
    user_claim_json_pointer: bool,
    groups_claim: String,
    clock_skew_leeway: i64,
    expiration_leeway: i64,
    not_before_leeway: i64,
    allowed_redirect_uris: Vec<String>,
    oidc_scopes: Vec<String>,
    max_age: u64,
    verbose_oidc_logging: bool,
    #[serde(flatten)]
    token: TokenSettings,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            role_type: "oidc".into(),
            bound_audiences: Vec::new(),
            bound_subject: String::new(),
            bound_claims: Map::new(),
            bound_claims_type: "string".into(),
            claim_mappings: BTreeMap::new(),
            user_claim: String::new(),
            user_claim_json_pointer: false,
            groups_claim: String::new(),
            clock_skew_leeway: 0,
            expiration_leeway: 0,
            not_before_leeway: 0,
            allowed_redirect_uris: Vec::new(),
            oidc_scopes: Vec::new(),
            max_age: 0,
            verbose_oidc_logging: false,
            token: TokenSettings::default(),
        }
    }
}

fn role_json(role: &Role) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("role_type".into(), json!(role.role_type));
    data.insert("bound_audiences".into(), json!(role.bound_audiences));
    data.insert("bound_subject".into(), json!(role.bound_subject));
    data.insert("bound_claims".into(), json!(role.bound_claims));
    data.insert("bound_claims_type".into(), json!(role.bound_claims_type));
    data.insert("claim_mappings".into(), json!(role.claim_mappings));
    data.insert("user_claim".into(), json!(role.user_claim));
    data.insert("user_claim_json_pointer".into(), json!(role.user_claim_json_pointer));
    data.insert("groups_claim".into(), json!(role.groups_claim));
    data.insert("clock_skew_leeway".into(), json!(role.clock_skew_leeway));
    data.insert("expiration_leeway".into(), json!(role.expiration_leeway));
    data.insert("not_before_leeway".into(), json!(role.not_before_leeway));
    data.insert("allowed_redirect_uris".into(), json!(role.allowed_redirect_uris));
    data.insert("oidc_scopes".into(), json!(role.oidc_scopes));
    data.insert("max_age".into(), json!(role.max_age));
    data.insert("verbose_oidc_logging".into(), json!(role.verbose_oidc_logging));
    role.token.write_json(&mut data);
    data
}

fn role_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::bad_request(format!("invalid role name {:?}", raw.chars().take(40).collect::<String>())));
    }
    Ok(name)
}

/// A leeway in seconds: a duration, or a negative number meaning "none" (stored as -1).
fn leeway(value: &Value, key: &str) -> Result<i64, ApiError> {
    if value.as_i64().is_some_and(|n| n < 0) || value.as_str().is_some_and(|s| s.trim().starts_with('-')) {
        return Ok(-1);
    }
    Ok(fields::duration_secs(Some(value), key)?.unwrap_or(0) as i64)
}

fn apply_config(config: &mut Config, data: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in data {
        if value.is_null() {
            continue;
        }
        let text = || fields::string(Some(value), key);
        let list = || Ok::<_, ApiError>(fields::string_list(Some(value), key)?.unwrap_or_default());
        match key.as_str() {
            "oidc_discovery_url" => config.oidc_discovery_url = text()?,
            "oidc_discovery_ca_pem" => config.oidc_discovery_ca_pem = text()?,
            "oidc_client_id" => config.oidc_client_id = text()?,
            "oidc_client_secret" => config.oidc_client_secret = text()?,
            "oidc_response_mode" => config.oidc_response_mode = text()?,
            "oidc_response_types" => config.oidc_response_types = list()?,
            "jwks_url" => config.jwks_url = text()?,
            "jwks_ca_pem" => config.jwks_ca_pem = text()?,
            "jwt_validation_pubkeys" => config.jwt_validation_pubkeys = list()?,
            "jwt_supported_algs" => config.jwt_supported_algs = list()?,
            "bound_issuer" => config.bound_issuer = text()?,
            "default_role" => config.default_role = text()?,
            "namespace_in_state" => config.namespace_in_state = fields::boolean(Some(value), key)?.unwrap_or(false),
            "provider_config" => {
                config.provider_config = value
                    .as_object()
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request("provider_config must be an object"))?
            }
            "jwks_pairs" if value.as_array().is_some_and(|pairs| !pairs.is_empty()) => {
                return Err(ApiError::bad_request(
                    "jwks_pairs is not supported by Arcanum: mount one jwt method per key set",
                ))
            }
            _ => {}
        }
    }
    let sources =
        [!config.jwt_validation_pubkeys.is_empty(), !config.jwks_url.is_empty(), !config.oidc_discovery_url.is_empty()];
    if sources.iter().filter(|set| **set).count() != 1 {
        return Err(ApiError::bad_request(
            "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs' or 'oidc_discovery_url' must be set",
        ));
    }
    if !config.oidc_discovery_ca_pem.is_empty() && config.oidc_discovery_url.is_empty() {
        return Err(ApiError::bad_request("oidc_discovery_ca_pem is only used with oidc_discovery_url"));
    }
    if !config.jwks_ca_pem.is_empty() && config.jwks_url.is_empty() {
        return Err(ApiError::bad_request("jwks_ca_pem is only used with jwks_url"));
    }
    if let Some(bad) = config.jwt_supported_algs.iter().find(|alg| keys::asymmetric_alg(alg).is_none()) {
        return Err(ApiError::bad_request(format!(
            "invalid jwt_supported_algs: {bad:?} is not supported; supported: {}",
            keys::DEFAULT_ALGS.join(", ")
        )));
    }
    Ok(())
}

fn apply_role(role: &mut Role, data: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in data {
        if value.is_null() {
            continue;
        }
        if role.token.apply(key, value)? {
            continue;
        }
        let text = || fields::string(Some(value), key);
        let list = || Ok::<_, ApiError>(fields::string_list(Some(value), key)?.unwrap_or_default());
        match key.as_str() {
            "role_type" => role.role_type = text()?,
            "bound_audiences" => role.bound_audiences = list()?,
            "bound_subject" => role.bound_subject = text()?,
            "bound_claims" => {
                role.bound_claims =
                    value.as_object().cloned().ok_or_else(|| ApiError::bad_request("bound_claims must be an object"))?
            }
            "bound_claims_type" => role.bound_claims_type = text()?,
            "claim_mappings" => role.claim_mappings = fields::string_map(Some(value), key)?,
            "user_claim" => role.user_claim = text()?,
            "user_claim_json_pointer" => {
                role.user_claim_json_pointer = fields::boolean(Some(value), key)?.unwrap_or(false)
            }
            "groups_claim" => role.groups_claim = text()?,
            "clock_skew_leeway" => role.clock_skew_leeway = leeway(value, key)?,
            "expiration_leeway" => role.expiration_leeway = leeway(value, key)?,
            "not_before_leeway" => role.not_before_leeway = leeway(value, key)?,
            "allowed_redirect_uris" => role.allowed_redirect_uris = list()?,
            "oidc_scopes" => role.oidc_scopes = list()?,
            "max_age" => role.max_age = fields::duration_secs(Some(value), key)?.unwrap_or(0),
            "verbose_oidc_logging" => role.verbose_oidc_logging = fields::boolean(Some(value), key)?.unwrap_or(false),
            _ => {}
        }
    }
    if role.role_type.is_empty() {
        role.role_type = "oidc".into();
    }
    match role.role_type.as_str() {
        "jwt" => {
            if role.bound_audiences.is_empty()
                && role.bound_subject.is_empty()
                && role.bound_claims.is_empty()
                && role.token.token_bound_cidrs.is_empty()
            {
                return Err(ApiError::bad_request(
                    "must have at least one bound constraint when creating/updating a role",
                ));
            }
        }
        "oidc" if role.allowed_redirect_uris.is_empty() => {
            return Err(ApiError::bad_request(
                "'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.",
            ))
        }
        "oidc" => {}
        other => return Err(ApiError::bad_request(format!("invalid 'role_type': {other}"))),
    }
    if role.user_claim.is_empty() {
        return Err(ApiError::bad_request("a user claim must be defined on the role"));
    }
    claims::check_bound_claims_shape(&role.bound_claims, &role.bound_claims_type)?;
    let mut targets = std::collections::BTreeSet::new();
    for target in role.claim_mappings.values() {
        if target == "role" {
            return Err(ApiError::bad_request(
                "metadata key \"role\" is reserved and may not be set via 'claim_mappings'",
            ));
        }
        if !targets.insert(target) {
            return Err(ApiError::bad_request(format!("multiple keys are mapped to metadata key {target:?}")));
        }
    }
    role.token.validate()
}

/// Keys fetched from a URL, remembered per mount.
struct CachedKeys {
    source: String,
    keys: Arc<KeySet>,
    /// When a login last made the mount fetch (`None` right after a config write).
    last_refresh: Option<Instant>,
}

/// One per mount.
#[derive(Default)]
pub struct Jwt {
    cache: tokio::sync::Mutex<Option<CachedKeys>>,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt").finish_non_exhaustive()
    }
}

fn refused(message: String) -> ApiError {
    ApiError::bad_request(message)
}

impl Jwt {
    /// Fetches and checks the configured keys before a config is stored, so a bad URL or CA is
    /// refused now rather than at the first login.
    async fn write_config(&self, req: &BackendRequest<'_>) -> Result<Response, ApiError> {
        let mut config: Config = req.storage.get_json("config").await?.unwrap_or_default();
        // A write names its key source afresh: the old one does not linger beside it.
        if ["oidc_discovery_url", "jwks_url", "jwt_validation_pubkeys"].iter().any(|key| req.field(key).is_some()) {
            config.oidc_discovery_url.clear();
            config.oidc_discovery_ca_pem.clear();
            config.jwks_url.clear();
            config.jwks_ca_pem.clear();
            config.jwt_validation_pubkeys.clear();
        }
        apply_config(&mut config, req.data)?;
        let mut cache = self.cache.lock().await;
        let keys = config.fetch_keys().await.map_err(|reason| {
            let what = if !config.oidc_discovery_url.is_empty() {
                "error checking oidc discovery URL"
            } else if !config.jwks_url.is_empty() {
                "error checking jwks URL"
            } else {
                "error checking jwt_validation_pubkeys"
            };
            ApiError::bad_request(format!("{what}: {reason}"))
        })?;
        req.storage.put_json("config", &config).await?;
        *cache = Some(CachedKeys { source: config.source(), keys: Arc::new(keys), last_refresh: None });
        Ok(Response::NoContent)
    }

    /// The key set to verify a token naming `kid` with: the cached one, fetched afresh when the
    /// config changed (another node wrote it, or this node restarted), when the token names a
    /// key the cache lacks, or when the last fetch failed. Fetches that logins cause happen at
    /// most once per [`KID_REFRESH_INTERVAL`] per mount, whatever the tokens say. With keys in
    /// the cache, the refetch runs outside the lock, so a slow issuer (or a made-up `kid`) never
    /// holds up logins that the cached keys can serve.
    async fn keys_for(&self, config: &Config, kid: Option<&str>) -> Result<Arc<KeySet>, String> {
        let source = config.source();
        let stale = {
            let mut cache = self.cache.lock().await;
            let cached = match cache.as_mut() {
                Some(cached) if cached.source == source => cached,
                _ => cache.insert(CachedKeys { source: source.clone(), keys: Arc::default(), last_refresh: None }),
            };
            let empty = cached.keys.keys.is_empty();
            let lacking = empty || kid.is_some_and(|kid| config.fetched() && !cached.keys.has_kid(kid));
            if !lacking || cached.last_refresh.is_some_and(|at| at.elapsed() < KID_REFRESH_INTERVAL) {
                return Ok(Arc::clone(&cached.keys));
            }
            cached.last_refresh = Some(Instant::now());
            if empty {
                // Nothing to serve meanwhile: fetch under the lock so concurrent logins wait
                // for this one fetch instead of failing or fetching too.
                let fresh = Arc::new(config.fetch_keys().await?);
                cached.keys = Arc::clone(&fresh);
                return Ok(fresh);
            }
            Arc::clone(&cached.keys)
        };
        match config.fetch_keys().await {
            Ok(fresh) => {
                tracing::info!(kid = ?kid, "jwt key set fetched again");
                let fresh = Arc::new(fresh);
                let mut cache = self.cache.lock().await;
                if let Some(cached) = cache.as_mut().filter(|cached| cached.source == source) {
                    cached.keys = Arc::clone(&fresh);
                }
                Ok(fresh)
            }
            Err(reason) => {
                tracing::warn!(kid = ?kid, reason = %reason, "jwt key set refresh failed; keeping the cached keys");
                Ok(stale)
            }
        }
    }

    async fn login(&self, req: &BackendRequest<'_>) -> Result<Response, ApiError> {
        let config: Config = req
            .storage
            .get_json("config")
            .await?
            .ok_or_else(|| ApiError::bad_request("could not load configuration"))?;
        let raw_role = match req.non_empty_string("role")? {
            Some(role) => role,
            None if !config.default_role.is_empty() => config.default_role.clone(),
            None => return Err(ApiError::bad_request("missing role")),
        };
        let role_key = role_name(&raw_role)?;
        let role: Role = req
            .storage
            .get_json(&format!("role/{role_key}"))
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("role {raw_role:?} could not be found")))?;
        if role.role_type == "oidc" {
            return Err(ApiError::bad_request("role with oidc role_type is not allowed"));
        }
        let jwt = zeroize::Zeroizing::new(
            req.non_empty_string("jwt")?.ok_or_else(|| ApiError::bad_request("missing token"))?,
        );
        if !cidrs_allow(&role.token.token_bound_cidrs, req.remote_addr) {
            return Err(ApiError::new(403, "request originated from invalid CIDR"));
        }
        let mount = req.mount.path.as_str();
        let refuse = |message: String| {
            tracing::info!(mount = %mount, role = %role_key, reason = %message, "jwt login refused");
            refused(message)
        };

        let header = jsonwebtoken::decode_header(&jwt).map_err(|_| {
            refuse(
                "error validating token: not a compact JWS (header.payload.signature) with a supported algorithm"
                    .into(),
            )
        })?;
        let alg_name = format!("{:?}", header.alg);
        let allowed: Vec<&str> = if config.jwt_supported_algs.is_empty() {
            keys::DEFAULT_ALGS.to_vec()
        } else {
            config.jwt_supported_algs.iter().map(String::as_str).collect()
        };
        let alg =
            keys::asymmetric_alg(&alg_name).filter(|_| allowed.contains(&alg_name.as_str())).ok_or_else(|| {
                refuse(format!(
                    "error validating token: signing algorithm {alg_name:?} is not allowed (accepted: {})",
                    allowed.join(", ")
                ))
            })?;
        let keys = self.keys_for(&config, header.kid.as_deref()).await.map_err(|reason| {
            refuse(format!("error validating token: the issuer's keys could not be fetched: {reason}"))
        })?;
        let claims = keys.verify(&jwt, alg, header.kid.as_deref()).ok_or_else(|| {
            refuse(match header.kid.as_deref() {
                Some(kid) if config.fetched() && !keys.has_kid(kid) => format!(
                    "error validating token: failed to verify id token signature: no key with kid {kid:?} in the issuer's key set"
                ),
                _ => "error validating token: failed to verify id token signature with any configured key".into(),
            })
        })?;
        let metadata = claims::validate(&claims, &role, &config.bound_issuer, arcanum_contract::clock::unix_now())
            .map_err(refuse)?;
        let user = claims::user_claim(&claims, &role).map_err(refuse)?;
        tracing::info!(mount = %mount, role = %role_key, user = %user, "jwt login accepted");
        let mut metadata = metadata;
        metadata.insert("role".into(), role_key.clone());
        Ok(Response::Login(Box::new(role.token.login(metadata, user.clone(), &req.mount.path, "login", user))))
    }

    async fn write_role(&self, req: &BackendRequest<'_>, key: &str) -> Result<Response, ApiError> {
        let mut role: Role = req.storage.get_json(key).await?.unwrap_or_default();
        apply_role(&mut role, req.data)?;
        req.storage.put_json(key, &role).await?;
        Ok(Response::NoContent)
    }
}

#[async_trait::async_trait]
impl LogicalBackend for Jwt {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        let path = req.path.trim_end_matches('/');
        match (path, req.operation) {
            ("login", Operation::Update) => return self.login(&req).await,
            ("login", _) => return Err(ApiError::unsupported_operation()),
            ("oidc/auth_url" | "oidc/callback", _) => {
                return Err(ApiError::bad_request(
                    "the OIDC browser login flow is not supported by Arcanum: log in with a JWT at login (role_type \"jwt\")",
                ))
            }
            ("config", Operation::Update) => return self.write_config(&req).await,
            ("config", Operation::Read) => {
                let config: Config = req.storage.get_json("config").await?.ok_or_else(ApiError::not_found)?;
                return Ok(Response::data(config_json(&config)));
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
            Operation::Update => self.write_role(&req, &key).await,
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
        matches!(path.trim_end_matches('/'), "login" | "oidc/auth_url" | "oidc/callback")
    }

    fn has_login_roles(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_redacts_the_client_secret() {
        let config = Config { oidc_client_secret: "very-secret".into(), ..Config::default() };
        assert!(!format!("{config:?}").contains("very-secret"));
    }

    #[test]
    fn exactly_one_key_source() {
        let mut config = Config::default();
        let none = apply_config(&mut config, &Map::new()).unwrap_err();
        assert!(none.errors[0].starts_with("exactly one of"));
        let two = json!({"jwks_url": "https://a", "oidc_discovery_url": "https://b"});
        assert!(apply_config(&mut Config::default(), two.as_object().unwrap()).is_err());
        let hmac = json!({"jwks_url": "https://a", "jwt_supported_algs": ["HS256"]});
        assert!(
            apply_config(&mut Config::default(), hmac.as_object().unwrap()).unwrap_err().errors[0].contains("HS256")
        );
    }

    #[test]
    fn roles_need_a_type_a_user_claim_and_a_bound() {
        let check =
            |body: Value| apply_role(&mut Role::default(), body.as_object().unwrap()).map_err(|e| e.errors[0].clone());
        assert!(check(json!({"user_claim": "sub"})).unwrap_err().contains("allowed_redirect_uris"));
        assert!(check(json!({"role_type": "jwt", "user_claim": "sub"})).unwrap_err().contains("bound constraint"));
        assert!(check(json!({"role_type": "jwt", "bound_subject": "x"})).unwrap_err().contains("user claim"));
        assert!(check(json!({"role_type": "saml", "user_claim": "sub"})).unwrap_err().contains("role_type"));
        let reserved =
            json!({"role_type": "jwt", "user_claim": "sub", "bound_subject": "x", "claim_mappings": {"a": "role"}});
        assert!(check(reserved).unwrap_err().contains("reserved"));
        assert!(check(
            json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": "vault", "clock_skew_leeway": -1})
        )
        .is_ok());
    }
}
