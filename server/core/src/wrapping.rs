//! Response wrapping: an answer is kept in the cubbyhole of a single-use token, and the client
//! gets that token instead of the answer.
//!
//! A wrapping token is a service token with exactly the `response-wrapping` policy, one use,
//! a TTL equal to its explicit maximum, no parent and no renewal. Its cubbyhole holds
//! `response` (`{"response": "<the whole HTTP answer as a JSON string>"}`, which is also what a
//! client reading `cubbyhole/response` with the token gets) and `wrapinfo` (creation TTL, time
//! and path, for `sys/wrapping/lookup`). Expiry and revocation clear the cubbyhole with the
//! token, so an unused answer does not outlive its TTL.

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
        let entry = self.tokens.lookup(token).await?.ok_or_else(invalid_wrapping_token)?;
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

fn rfc3339_nanos(when: time::OffsetDateTime) -> String {
    when.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
