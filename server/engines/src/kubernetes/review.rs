//! The two checks of a Kubernetes login: the JWT's own claims (and, with `pem_keys`, its
//! signature), and the API server's TokenReview.
//!
//! Every error string here is shown to the client and written to the log, so none of them
//! may contain the JWT, the reviewer token or a key.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

/// Clock skew tolerated on `exp` and `nbf`, as go-jose's default leeway.
const LEEWAY_SECS: i64 = 60;
/// A TokenReview answer is a few hundred bytes; anything near this is not an API server.
const MAX_REVIEW_BODY: usize = 64 * 1024;
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a JWT was refused before the API server was asked.
#[derive(Debug)]
pub enum JwtError {
    /// Not a JWT at all: a 400.
    Malformed(String),
    /// A JWT, but not one that may log in: a 403.
    Refused(String),
}

/// The claims a login looks at, from either token layout.
#[derive(Debug, Default)]
pub struct Claims {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub sa_name: Option<String>,
    pub sa_namespace: Option<String>,
    pub sa_uid: Option<String>,
    pub secret_name: Option<String>,
}

impl Claims {
    fn from_value(value: &Value) -> Claims {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        // Projected tokens nest under `kubernetes.io`; legacy secret tokens use flat keys.
        let projected = &value["kubernetes.io"];
        let legacy = |key: &str| value.get(format!("kubernetes.io/serviceaccount/{key}")).and_then(text);
        Claims {
            issuer: value["iss"].as_str().unwrap_or_default().to_owned(),
            audiences: match &value["aud"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
                _ => Vec::new(),
            },
            exp: value["exp"].as_f64().map(|n| n as i64),
            nbf: value["nbf"].as_f64().map(|n| n as i64),
            sa_name: text(&projected["serviceaccount"]["name"]).or_else(|| legacy("service-account.name")),
            sa_namespace: text(&projected["namespace"]).or_else(|| legacy("namespace")),
            sa_uid: text(&projected["serviceaccount"]["uid"]).or_else(|| legacy("service-account.uid")),
            secret_name: legacy("secret.name"),
        }
    }

    /// `exp` and `nbf`, with a minute's leeway either way.
    pub fn check_time(&self) -> Result<(), String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Some(exp) = self.exp {
            if exp.saturating_add(LEEWAY_SECS) < now {
                return Err(format!("JWT expired {} seconds ago", now - exp));
            }
        }
        if let Some(nbf) = self.nbf {
            if nbf.saturating_sub(LEEWAY_SECS) > now {
                return Err("JWT is not valid yet (nbf is in the future)".into());
            }
        }
        Ok(())
    }
}

/// A parsed `pem_keys` entry.
pub enum PemKey {
    Rsa(DecodingKey),
    Ec(DecodingKey),
}

impl std::fmt::Debug for PemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PemKey::Rsa(_) => "PemKey::Rsa",
            PemKey::Ec(_) => "PemKey::Ec",
        })
    }
}

/// PEM pasted through a JSON or shell layer often arrives with its line breaks as the two
/// characters `\n`; such text is read as if the breaks were real (the stored value is kept as
/// written).
fn unescape_newlines(pem: &str) -> std::borrow::Cow<'_, str> {
    if pem.contains("\\n") {
        std::borrow::Cow::Owned(pem.replace("\\r\\n", "\n").replace("\\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(pem)
    }
}

pub fn parse_pem_key(pem: &str) -> Result<PemKey, String> {
    let pem = unescape_newlines(pem);
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok(PemKey::Rsa(key));
    }
    DecodingKey::from_ec_pem(pem.as_bytes()).map(PemKey::Ec).map_err(|_| "not a PEM RSA or EC public key".to_owned())
}

pub fn parse_ca(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = unescape_newlines(pem);
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("no PEM certificate found".into());
    }
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|_| "unreadable PEM".to_owned())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Signature and algorithm only; shared with the JWT method, whose claim checks are its own.
pub fn lenient(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    // Time, audience and issuer are checked by the caller, with messages of its own.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

/// Decodes the claims; with `pem_keys`, also requires a signature by one of them.
pub fn parse_jwt(jwt: &str, pem_keys: &[String]) -> Result<Claims, JwtError> {
    let malformed = || JwtError::Malformed("jwt is not a valid JWT".into());
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| malformed())?;
    let mut unverified = lenient(header.alg);
    unverified.insecure_disable_signature_validation();
    let claims = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_secret(&[]), &unverified)
        .map_err(|_| malformed())?
        .claims;
    if !claims.is_object() {
        return Err(malformed());
    }
    if !pem_keys.is_empty() {
        let rsa = matches!(header.alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512);
        let ec = matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
        if !rsa && !ec {
            return Err(JwtError::Refused(format!(
                "JWT algorithm {:?} is not accepted: pem_keys verify RS256/384/512 and ES256/384 only",
                header.alg
            )));
        }
        let verified = pem_keys.iter().filter_map(|pem| parse_pem_key(pem).ok()).any(|key| match key {
            PemKey::Rsa(key) if rsa => jsonwebtoken::decode::<Value>(jwt, &key, &lenient(header.alg)).is_ok(),
            PemKey::Ec(key) if ec => jsonwebtoken::decode::<Value>(jwt, &key, &lenient(header.alg)).is_ok(),
            _ => false,
        });
        if !verified {
            return Err(JwtError::Refused(
                "JWT signature did not verify against any of the configured pem_keys".into(),
            ));
        }
    }
    Ok(Claims::from_value(&claims))
}

/// The HTTP client for TokenReviews, kept between logins so connections to the API server
/// are reused; rebuilt only when the CA changes.
#[derive(Default)]
pub struct ClientCache {
    cached: Mutex<Option<(Option<String>, reqwest::Client)>>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache").finish_non_exhaustive()
    }
}

impl ClientCache {
    pub fn client(&self, ca: Option<&str>) -> Result<reqwest::Client, String> {
        let mut cached =
            self.cached.lock().map_err(|_| "internal error: TokenReview client lock poisoned".to_owned())?;
        if let Some((cached_ca, client)) = cached.as_ref() {
            if cached_ca.as_deref() == ca {
                return Ok(client.clone());
            }
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REVIEW_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca {
            // Only the cluster's CA: a public CA must not be able to impersonate the API server.
            builder = builder.tls_built_in_root_certs(false);
            for cert in parse_ca(pem).map_err(|reason| format!("kubernetes CA certificate is invalid: {reason}"))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|err| format!("could not build the TokenReview HTTPS client: {err}"))?;
        *cached = Some((ca.map(str::to_owned), client.clone()));
        Ok(client)
    }
}

/// The user the API server says the JWT belongs to.
#[derive(Debug)]
pub struct ReviewedUser {
    pub username: String,
    pub uid: String,
}

/// An operator-readable reason for a failed request to the API server.
fn describe(err: &reqwest::Error, host: &str) -> String {
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(current) = source {
        chain.push(current.to_string());
        source = current.source();
    }
    let detail = chain.last().cloned().unwrap_or_default();
    let lower = chain.join(" ").to_lowercase();
    if err.is_timeout() {
        format!("Kubernetes API server at {host} did not answer within {} seconds", REVIEW_TIMEOUT.as_secs())
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        format!("TLS failure talking to the Kubernetes API server at {host} ({detail}); check kubernetes_ca_cert")
    } else if err.is_connect() {
        format!("Kubernetes API server unreachable at {host} ({detail})")
    } else {
        format!("TokenReview request to {host} failed ({detail})")
    }
}

/// Sends the TokenReview and checks its verdict; the caller compares the user with the JWT.
pub async fn token_review(
    client: &reqwest::Client,
    host: &str,
    reviewer: &str,
    jwt: &str,
    audiences: &[String],
) -> Result<ReviewedUser, String> {
    let mut spec = json!({ "token": jwt });
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": { "user": {} },
    });
    let mut response = client
        .post(format!("{host}/apis/authentication.k8s.io/v1/tokenreviews"))
        .bearer_auth(reviewer)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|err| describe(&err, host))?;
    let status = response.status().as_u16();
    match status {
        200..=206 => {}
        401 => {
            return Err(format!(
                "the Kubernetes API server at {host} rejected the reviewer token (401): token_reviewer_jwt or the \
                 pod's service-account token is invalid or expired"
            ))
        }
        403 => {
            return Err(format!(
                "the Kubernetes API server at {host} refused the TokenReview (403): the reviewer's service account \
                 needs the system:auth-delegator ClusterRole"
            ))
        }
        other => return Err(format!("the Kubernetes API server at {host} answered the TokenReview with HTTP {other}")),
    }
    let mut raw = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| describe(&err, host))? {
        if raw.len() + chunk.len() > MAX_REVIEW_BODY {
            return Err(format!("the TokenReview response from {host} is larger than {MAX_REVIEW_BODY} bytes"));
        }
        raw.extend_from_slice(&chunk);
    }
    let review: Value =
        serde_json::from_slice(&raw).map_err(|_| format!("the TokenReview response from {host} is not JSON"))?;
    if review["kind"] == "Status" && review["status"] != "Success" {
        return Err(format!("the Kubernetes API server at {host} answered the TokenReview with a failure Status"));
    }
    let verdict = &review["status"];
    if let Some(error) = verdict["error"].as_str().filter(|e| !e.is_empty()) {
        // The API server's text is logged for the operator but never decides anything.
        let error: String = error.chars().take(200).collect();
        tracing::info!(host = %host, error = %error, "TokenReview reported an error");
    }
    if verdict["authenticated"] != Value::Bool(true) {
        return Err("TokenReview: the API server did not authenticate the service account JWT (expired, revoked, \
                    deleted service account, wrong audience, or issued by another cluster)"
            .into());
    }
    if !audiences.is_empty() {
        let confirmed = verdict["audiences"]
            .as_array()
            .is_some_and(|list| list.iter().any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|b| b == a))));
        if !confirmed {
            return Err(format!("TokenReview: the API server did not confirm the role's audience {:?}", audiences));
        }
    }
    let user = &verdict["user"];
    Ok(ReviewedUser {
        username: user["username"].as_str().unwrap_or_default().to_owned(),
        uid: user["uid"].as_str().unwrap_or_default().to_owned(),
    })
}
