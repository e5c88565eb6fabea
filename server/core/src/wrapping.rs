//! Response wrapping: an answer is kept in the cubbyhole of a single-use token, and the client
//! gets that token instead of the answer.
//!
//! A wrapping token is a service token with exactly the `response-wrapping` policy, one use,
//! a TTL equal to its explicit maximum, no parent and no renewal. Its cubbyhole holds
//! `response` (`{"response": "<the whole HTTP answer as a JSON string>"}`, which is also what a
//! client reading `cubbyhole/response` with the token gets) and `wrapinfo` (creation TTL, time
//! and path, for `sys/wrapping/lookup`). Expiry and revocation clear the cubbyhole with the
//! token, so an unused answer does not outlive its TTL.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::logical::ApiError;
use arcanum_contract::mount::MountTableKind;
use arcanum_contract::storage::StorageView;

use crate::token::{TokenEntry, TokenRequest};
use crate::Unsealed;

/// The built-in policy that marks a token as a wrapping token; it cannot be written, deleted
/// or given to any other token.
pub const RESPONSE_WRAPPING_POLICY: &str = "response-wrapping";

/// What that policy allows: reading the wrapped answer the old way, and unwrapping.
pub const RESPONSE_WRAPPING_POLICY_TEXT: &str = r#"
path "cubbyhole/response" {
  capabilities = ["create", "read"]
}

path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}
"#;

const RESPONSE_KEY: &str = "response";
/// Barrier record of the P-521 key that signs JWT wrapping tokens (`X-Vault-Wrap-Format: jwt`).
const JWT_KEY_PATH: &str = "sys/wrapping/jwt-key";
const WRAPINFO_KEY: &str = "wrapinfo";

/// Vault's answer for an unknown, used or expired wrapping token.
pub fn invalid_wrapping_token() -> ApiError {
    ApiError::bad_request("wrapping token is not valid or does not exist")
}

/// When and where a wrapping token was made (`sys/wrapping/lookup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrapMetadata {
    /// Seconds.
    pub creation_ttl: u64,
    /// RFC 3339 with nanoseconds, as Vault writes it.
    pub creation_time: String,
    /// The request path that was wrapped, without `v1/`.
    pub creation_path: String,
    /// The accessor of the token inside a wrapped login, kept for a rewrap.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wrapped_accessor: String,
}

/// A token that has been checked to be a live wrapping token.
#[derive(Debug)]
pub struct WrappingToken {
    pub entry: TokenEntry,
}

impl Unsealed {
    /// Wraps `answer` (the whole HTTP answer) in a new wrapping token that lives `ttl` seconds.
    /// Returns Vault's `wrap_info`; `wrapped_accessor` names the token inside a wrapped login
    /// or token creation.
    pub async fn wrap_response(
        &self,
        answer: &Value,
        ttl: u64,
        creation_path: &str,
        wrapped_accessor: Option<&str>,
    ) -> Result<Map<String, Value>, ApiError> {
        let metadata = WrapMetadata {
            creation_ttl: ttl,
            creation_time: rfc3339_nanos(time::OffsetDateTime::now_utc()),
            creation_path: creation_path.to_owned(),
            wrapped_accessor: wrapped_accessor.unwrap_or_default().to_owned(),
        };
        let text = Zeroizing::new(serde_json::to_string(answer).map_err(|_| ApiError::internal())?);
        let (token, entry) = self.store_wrapped(&text, &metadata).await?;
        let mut info = Map::new();
        info.insert("token".into(), Value::String(token.to_string()));
        info.insert("accessor".into(), Value::String(entry.accessor.clone()));
        info.insert("ttl".into(), Value::from(entry.creation_ttl));
        info.insert("creation_time".into(), Value::String(metadata.creation_time));
        info.insert("creation_path".into(), Value::String(metadata.creation_path));
        if !metadata.wrapped_accessor.is_empty() {
            info.insert("wrapped_accessor".into(), Value::String(metadata.wrapped_accessor));
        }
        Ok(info)
    }

    async fn store_wrapped(
        &self,
        text: &str,
        metadata: &WrapMetadata,
    ) -> Result<(Zeroizing<String>, TokenEntry), ApiError> {
        let (token, entry) = self
            .tokens
            .create(TokenRequest {
                policies: vec![RESPONSE_WRAPPING_POLICY.into()],
                display_name: RESPONSE_WRAPPING_POLICY.into(),
                path: metadata.creation_path.clone(),
                num_uses: 1,
                ttl: metadata.creation_ttl,
                explicit_max_ttl: metadata.creation_ttl,
                renewable: false,
                ..TokenRequest::default()
            })
            .await?;
        let stored = async {
            let view = self.cubbyhole_of(&entry.id_hash)?;
            let mut response = Map::new();
            response.insert(RESPONSE_KEY.into(), Value::String(text.to_owned()));
            view.put_json(RESPONSE_KEY, &response).await?;
            view.put_json(WRAPINFO_KEY, metadata).await
        }
        .await;
        if let Err(err) = stored {
            // Half a wrapping token is none: take the token back with whatever was written.
            if let Err(undo) = self.revoke_token_tree(&entry.id_hash).await {
                tracing::error!(status = undo.status, "a wrapping token whose answer was not stored was not revoked");
            }
            return Err(err);
        }
        Ok((token, entry))
    }

    fn cubbyhole_of(&self, id_hash: &str) -> Result<StorageView, ApiError> {
        let cubbyhole = self.mounts.get(MountTableKind::Secret, "cubbyhole/").ok_or_else(|| {
            tracing::error!("response wrapping needs the cubbyhole/ mount, and it is missing");
            ApiError::internal()
        })?;
        Ok(cubbyhole.view.sub_view(&format!("{id_hash}/")))
    }

    /// Looks `token` up without using it, and checks that it is a live wrapping token.
    pub async fn wrapping_token(&self, token: &str) -> Result<WrappingToken, ApiError> {
        if token.is_empty() {
            return Err(ApiError::new(403, "error validating wrapping token: the token is empty"));
        }
        let token = self.resolve_wrapping_token(token).await?;
        let entry = self.tokens.lookup(&token).await?.ok_or_else(invalid_wrapping_token)?;
        Self::checked(entry)
    }

    /// Checks that the entry of a token already in hand (a request's own token) is a wrapping
    /// token.
    pub fn checked(entry: TokenEntry) -> Result<WrappingToken, ApiError> {
        if entry.policies.len() != 1 || entry.policies[0] != RESPONSE_WRAPPING_POLICY {
            return Err(invalid_wrapping_token());
        }
        Ok(WrappingToken { entry })
    }

    /// `sys/wrapping/lookup`: when and where the token was made. Does not use the token.
    pub async fn wrapping_metadata(&self, wrapping: &WrappingToken) -> Result<WrapMetadata, ApiError> {
        self.cubbyhole_of(&wrapping.entry.id_hash)?.get_json(WRAPINFO_KEY).await?.ok_or_else(invalid_wrapping_token)
    }

    /// Spends the token's one use; only one caller ever gets past this for a given token.
    pub async fn spend_wrapping_token(&self, wrapping: &WrappingToken) -> Result<(), ApiError> {
        match self.tokens.use_token(&wrapping.entry).await? {
            Some(_) => Ok(()),
            None => Err(invalid_wrapping_token()),
        }
    }

    /// The wrapped answer as stored (a JSON text; empty when nothing was wrapped). The caller
    /// has spent the token's use and revokes it afterwards.
    pub async fn wrapped_response(&self, wrapping: &WrappingToken) -> Result<Zeroizing<String>, ApiError> {
        let stored: Map<String, Value> = self
            .cubbyhole_of(&wrapping.entry.id_hash)?
            .get_json(RESPONSE_KEY)
            .await?
            .ok_or_else(invalid_wrapping_token)?;
        match stored.get(RESPONSE_KEY) {
            Some(Value::String(text)) => Ok(Zeroizing::new(text.clone())),
            _ => Err(invalid_wrapping_token()),
        }
    }

    /// `sys/wrapping/rewrap`: the same answer, TTL and creation path under a new token; the old
    /// one is spent and revoked first, so the answer is never reachable through both.
    pub async fn rewrap(&self, wrapping: &WrappingToken) -> Result<Map<String, Value>, ApiError> {
        self.spend_wrapping_token(wrapping).await?;
        let result = async {
            let metadata = self.wrapping_metadata(wrapping).await?;
            let text = self.wrapped_response(wrapping).await?;
            let answer: Value = serde_json::from_str(&text).map_err(|_| ApiError::internal())?;
            let accessor = Some(metadata.wrapped_accessor.as_str());
            self.wrap_response(&answer, metadata.creation_ttl, &metadata.creation_path, accessor).await
        }
        .await;
        self.revoke_token_tree(&wrapping.entry.id_hash).await?;
        result
    }
}

/// The ES512 key of JWT wrapping tokens. Its secret scalar zeroises on drop (p521's own).
pub struct JwtKey(p521::ecdsa::SigningKey);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(<redacted>)")
    }
}

/// Whether a token value is a JWT (three base64url parts whose header names an algorithm)
/// rather than a token (`hvs.` and base62, which a custom id may extend with dots).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|raw| serde_json::from_slice::<Map<String, Value>>(&raw).ok())
        .is_some_and(|header| header.contains_key("alg"))
}

impl Unsealed {
    async fn jwt_key(&self) -> Result<Arc<JwtKey>, ApiError> {
        let key = self
            .wrapping_jwt_key
            .get_or_try_init(|| async {
                let storage_error = |err| crate::barrier::api_error("the JWT wrapping key", err);
                let bytes = match self.barrier.get(JWT_KEY_PATH).await.map_err(storage_error)? {
                    Some(bytes) => Zeroizing::new(bytes),
                    None => {
                        let fresh = p521::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
                        let bytes = Zeroizing::new(fresh.to_bytes().to_vec());
                        self.barrier.put(JWT_KEY_PATH, &bytes).await.map_err(storage_error)?;
                        bytes
                    }
                };
                let key = p521::ecdsa::SigningKey::from_slice(&bytes).map_err(|_| {
                    tracing::error!("the stored JWT wrapping key does not parse");
                    ApiError::internal()
                })?;
                Ok::<_, ApiError>(Arc::new(JwtKey(key)))
            })
            .await?;
        Ok(Arc::clone(key))
    }

    /// The wrapping token of `info` as Vault's ES512 JWT: `jti` is the token, with `accessor`,
    /// `type: "wrapping"`, `addr` (this cluster's API address) and the token's lifetime.
    pub async fn wrapping_jwt(&self, info: &Map<String, Value>, addr: &str) -> Result<String, ApiError> {
        let key = self.jwt_key().await?;
        let now = arcanum_contract::clock::unix_now();
        let ttl = info.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        let claims = serde_json::json!({
            "jti": info.get("token"),
            "accessor": info.get("accessor"),
            "type": "wrapping",
            "addr": addr,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES512","typ":"JWT"}"#);
        let payload = Zeroizing::new(URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signing_input = format!("{header}.{}", payload.as_str());
        let signature: p521::ecdsa::Signature = key.0.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }

    /// The wrapping token inside a JWT this cluster signed (403 for anything else, as Vault).
    pub async fn token_from_wrapping_jwt(&self, jwt: &str) -> Result<Zeroizing<String>, ApiError> {
        let refused = |why: &str| ApiError::new(403, format!("error validating wrapping token: {why}"));
        let (signing_input, signature) = jwt.rsplit_once('.').ok_or_else(|| refused("malformed JWT"))?;
        let (header, payload) = signing_input.split_once('.').ok_or_else(|| refused("malformed JWT"))?;
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| refused("malformed JWT header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES512") {
            return Err(refused("the JWT is not signed with ES512"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|raw| p521::ecdsa::Signature::from_slice(&raw).ok())
            .ok_or_else(|| refused("malformed JWT signature"))?;
        let key = self.jwt_key().await?;
        p521::ecdsa::VerifyingKey::from(&key.0)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| refused("the JWT signature does not verify"))?;
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| refused("malformed JWT claims"))?;
        if claims.get("type").and_then(Value::as_str) != Some("wrapping") {
            return Err(refused("the JWT is not a wrapping token"));
        }
        match claims.get("jti").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => Ok(Zeroizing::new(token.to_owned())),
            _ => Err(refused("the JWT names no token")),
        }
    }

    /// A wrapping token as a client may present it: a token, or a JWT that names one.
    pub async fn resolve_wrapping_token(&self, presented: &str) -> Result<Zeroizing<String>, ApiError> {
        if looks_like_jwt(presented) {
            self.token_from_wrapping_jwt(presented).await
        } else {
            Ok(Zeroizing::new(presented.to_owned()))
        }
    }
}

fn rfc3339_nanos(when: time::OffsetDateTime) -> String {
    when.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
