//! Where a JWT mount's verification keys come from (PEM keys in the config, a JWKS URL, or an
//! OIDC discovery document naming one), fetching them over HTTP(S) with the configured CA, and
//! checking a token's signature against them. Only asymmetric keys and algorithms exist here:
//! a symmetric JWK is dropped when the set is read, so a public key can never be used as an
//! HMAC secret, and `none` is not an algorithm jsonwebtoken can even parse.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The algorithms a mount accepts when `jwt_supported_algs` is empty (Vault's default set,
/// less ES512, which jsonwebtoken does not implement).
pub const DEFAULT_ALGS: [&str; 9] = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA"];
/// The most a discovery document or key set may weigh.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses an algorithm name that may sign a JWT here; symmetric and unknown names are `None`.
pub fn asymmetric_alg(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// One verification key and the name the issuer gave it.
pub struct Key {
    pub kid: Option<String>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The keys a mount verifies with.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// From `jwt_validation_pubkeys`: RSA, EC or Ed25519 public keys in PEM.
    pub fn from_pems(pems: &[String]) -> Result<KeySet, String> {
        let keys = pems
            .iter()
            .enumerate()
            .map(|(index, pem)| {
                let bytes = pem.as_bytes();
                DecodingKey::from_rsa_pem(bytes)
                    .or_else(|_| DecodingKey::from_ec_pem(bytes))
                    .or_else(|_| DecodingKey::from_ed_pem(bytes))
                    .map(|key| Key { kid: None, key })
                    .map_err(|_| format!("error parsing public key {index}: not a PEM RSA, EC or Ed25519 public key"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeySet { keys })
    }

    /// From a JWKS document; keys this server cannot use (symmetric, unknown types or curves)
    /// are skipped, as a JWKS may also list keys for other purposes.
    pub fn from_jwks(document: &Value) -> Result<KeySet, String> {
        let listed =
            document.get("keys").and_then(Value::as_array).ok_or_else(|| "the JWKS has no \"keys\" list".to_owned())?;
        let keys = listed
            .iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|jwk| DecodingKey::from_jwk(&jwk).ok().map(|key| Key { kid: jwk.common.key_id.clone(), key }))
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Err("the JWKS holds no usable public signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// The claims of `jwt` if one of the keys verifies its signature under `alg`. A token that
    /// names a `kid` is tried only against the key of that name (and keys with no name, such
    /// as PEM keys), as OIDC verifiers do.
    pub fn verify(&self, jwt: &str, alg: Algorithm, kid: Option<&str>) -> Option<Value> {
        self.keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid)
            .find_map(|key| jsonwebtoken::decode::<Value>(jwt, &key.key, &crate::kubernetes::review::lenient(alg)).ok())
            .map(|data| data.claims)
    }
}

/// An HTTP(S) client trusting only `ca_pem` when one is given (else the system's roots).
fn client(ca_pem: &str) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3));
    if !ca_pem.trim().is_empty() {
        builder = builder.tls_built_in_root_certs(false);
        for cert in crate::kubernetes::review::parse_ca(ca_pem).map_err(|reason| format!("invalid CA PEM: {reason}"))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|err| format!("could not build the HTTPS client: {err}"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut response = client.get(url).send().await.map_err(|err| format!("GET {url}: {}", describe(&err)))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| format!("GET {url}: {}", describe(&err)))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
    }
    serde_json::from_slice(&body).map_err(|err| format!("GET {url}: not JSON: {err}"))
}

/// reqwest's top-level message hides the cause (a certificate the CA does not sign, a refused
/// connection); the operator needs it.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Fetches the key set at `jwks_url`.
pub async fn fetch_jwks(jwks_url: &str, ca_pem: &str) -> Result<KeySet, String> {
    let client = client(ca_pem)?;
    KeySet::from_jwks(&get_json(&client, jwks_url).await?)
}

/// Reads `<issuer>/.well-known/openid-configuration`, checks it names `issuer` exactly (as
/// OIDC requires), and fetches the key set at its `jwks_uri`.
pub async fn discover(issuer: &str, ca_pem: &str) -> Result<KeySet, String> {
    let client = client(ca_pem)?;
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let document = get_json(&client, &url).await?;
    let named = document.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if named != issuer {
        return Err(format!("the discovery document names issuer {named:?}, not {issuer:?}"));
    }
    let jwks_uri = document
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| "the discovery document has no jwks_uri".to_owned())?;
    KeySet::from_jwks(&get_json(&client, jwks_uri).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_and_unusable_jwks_entries_are_dropped() {
        let document = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP-512", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let set = KeySet::from_jwks(&document).unwrap();
        assert!(set.has_kid("ed"));
        assert!(!set.has_kid("hmac"), "a symmetric key must never verify anything");
        assert!(KeySet::from_jwks(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).is_err());
        assert!(KeySet::from_jwks(&json!({"nokeys": []})).is_err());
    }

    #[test]
    fn only_asymmetric_algorithms_are_named() {
        for name in DEFAULT_ALGS {
            assert!(asymmetric_alg(name).is_some(), "{name}");
        }
        for name in ["HS256", "HS384", "HS512", "none", "ES512", ""] {
            assert!(asymmetric_alg(name).is_none(), "{name}");
        }
    }
}
