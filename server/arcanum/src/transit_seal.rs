//! `seal "transit"`: the client that wraps and unwraps the root key with a Transit key on
//! another server (Arcanum or Vault), and keeps that server's token renewed.
//!
//! Settings come from the `seal` block and, as in Vault, from the environment: the
//! `VAULT_TRANSIT_SEAL_*` variables and `VAULT_NAMESPACE` override the block (mount path, key
//! name, renewal, namespace); the block's address, token and TLS settings override `VAULT_ADDR`,
//! `VAULT_TOKEN`, `VAULT_CACERT`, `VAULT_CLIENT_CERT`/`_KEY`, `VAULT_TLS_SERVER_NAME` and
//! `VAULT_SKIP_VERIFY`. Only `encrypt` and `decrypt` without a context are used, so the key
//! must be neither derived nor convergent.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use arcanum_config::TransitSeal as SealBlock;
use arcanum_core::seal::{AutoSeal, SealError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed renewal waits before the next attempt.
const RENEWAL_RETRY: Duration = Duration::from_secs(10);

/// The seal's settings once the environment is applied.
pub struct Settings {
    pub address: String,
    pub token: Zeroizing<String>,
    pub key_name: String,
    pub mount_path: String,
    pub namespace: Option<String>,
    pub disable_renewal: bool,
    pub tls_ca_cert: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_skip_verify: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("key_name", &self.key_name)
            .field("mount_path", &self.mount_path)
            .field("namespace", &self.namespace)
            .field("disable_renewal", &self.disable_renewal)
            .finish_non_exhaustive()
    }
}

fn parse_bool(name: &str, value: &str) -> anyhow::Result<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => anyhow::bail!("seal \"transit\": {name} must be true or false, got {other:?}"),
    }
}

impl Settings {
    /// Applies `env` to `block` with Vault's precedence; names what is missing.
    pub fn resolve(block: &SealBlock, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        let required = |value: Option<String>, what: &str| {
            value.filter(|v| !v.is_empty()).with_context(|| format!("seal \"transit\": {what} is required"))
        };
        let address = required(block.address.clone().or_else(|| env("VAULT_ADDR")), "address (or VAULT_ADDR)")?;
        let token =
            Zeroizing::new(required(block.token.clone().or_else(|| env("VAULT_TOKEN")), "token (or VAULT_TOKEN)")?);
        let key_name = required(
            env("VAULT_TRANSIT_SEAL_KEY_NAME").or_else(|| block.key_name.clone()),
            "key_name (or VAULT_TRANSIT_SEAL_KEY_NAME)",
        )?;
        let mount_path = required(
            env("VAULT_TRANSIT_SEAL_MOUNT_PATH").or_else(|| block.mount_path.clone()),
            "mount_path (or VAULT_TRANSIT_SEAL_MOUNT_PATH)",
        )?;
        let disable_renewal = match env("VAULT_TRANSIT_SEAL_DISABLE_RENEWAL") {
            Some(value) => parse_bool("VAULT_TRANSIT_SEAL_DISABLE_RENEWAL", &value)?,
            None => block.disable_renewal.unwrap_or(false),
        };
        let tls_skip_verify = match (block.tls_skip_verify, env("VAULT_SKIP_VERIFY")) {
            (Some(skip), _) => skip,
            (None, Some(value)) => parse_bool("VAULT_SKIP_VERIFY", &value)?,
            (None, None) => false,
        };
        Ok(Settings {
            address: address.trim_end_matches('/').to_owned(),
            token,
            key_name,
            mount_path: mount_path.trim_matches('/').to_owned(),
            namespace: env("VAULT_NAMESPACE").or_else(|| block.namespace.clone()),
            disable_renewal,
            tls_ca_cert: block.tls_ca_cert.clone().or_else(|| env("VAULT_CACERT")),
            tls_client_cert: block.tls_client_cert.clone().or_else(|| env("VAULT_CLIENT_CERT")),
            tls_client_key: block.tls_client_key.clone().or_else(|| env("VAULT_CLIENT_KEY")),
            tls_server_name: block.tls_server_name.clone().or_else(|| env("VAULT_TLS_SERVER_NAME")),
            tls_skip_verify,
        })
    }
}

/// The Transit seal: a client for one key on one server.
pub struct TransitSeal {
    client: reqwest::Client,
    /// `<address>/v1/` (with the host replaced by `tls_server_name` when that is set).
    api: String,
    mount_path: String,
    key_name: String,
    token: Zeroizing<String>,
    namespace: Option<String>,
    disable_renewal: bool,
}

impl fmt::Debug for TransitSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitSeal")
            .field("api", &self.api)
            .field("mount_path", &self.mount_path)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl TransitSeal {
    pub async fn new(settings: Settings) -> anyhow::Result<TransitSeal> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.tls_ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("seal \"transit\": reading tls_ca_cert {path}"))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("seal \"transit\": tls_ca_cert {path} is not PEM"))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        match (&settings.tls_client_cert, &settings.tls_client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).with_context(|| format!("seal \"transit\": reading {cert}"))?;
                pem.extend(
                    Zeroizing::new(std::fs::read(key).with_context(|| format!("seal \"transit\": reading {key}"))?)
                        .iter(),
                );
                let pem = Zeroizing::new(pem);
                builder = builder.identity(
                    reqwest::Identity::from_pem(&pem)
                        .context("seal \"transit\": the client certificate or key is not PEM")?,
                );
            }
            (None, None) => {}
            _ => anyhow::bail!("seal \"transit\": tls_client_cert and tls_client_key go together"),
        }
        if settings.tls_skip_verify {
            tracing::warn!("seal \"transit\": tls_skip_verify is set; the transit server's certificate is not checked");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let mut address: reqwest::Url = settings
            .address
            .parse()
            .with_context(|| format!("seal \"transit\": address {:?} is not a URL", settings.address))?;
        if let Some(server_name) = &settings.tls_server_name {
            // Connect where the address points, but name (and verify) the server as told.
            let host = address.host_str().context("seal \"transit\": the address has no host")?.to_owned();
            let port = address.port_or_known_default().unwrap_or(8200);
            let target = tokio::net::lookup_host((host.as_str(), port))
                .await
                .with_context(|| format!("seal \"transit\": resolving {host}"))?
                .next()
                .with_context(|| format!("seal \"transit\": {host} has no address"))?;
            builder = builder.resolve(server_name, target);
            address.set_host(Some(server_name)).context("seal \"transit\": tls_server_name is not a host name")?;
        }
        Ok(TransitSeal {
            client: builder.build().context("seal \"transit\": building the HTTP client")?,
            api: format!("{}/v1/", address.as_str().trim_end_matches('/')),
            mount_path: settings.mount_path,
            key_name: settings.key_name,
            token: settings.token,
            namespace: settings.namespace,
            disable_renewal: settings.disable_renewal,
        })
    }

    /// Sends `body` to `path` (below `/v1/`); the answer, or why there is none. The answer's
    /// bytes are zeroised once parsed (they may hold the root key).
    async fn call<A: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl serde::Serialize + ?Sized)>,
    ) -> Result<A, SealError> {
        let url = format!("{}{path}", self.api);
        let mut request = self.client.request(method.clone(), &url).header("X-Vault-Token", self.token.as_str());
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |err: reqwest::Error| {
            let kind = if err.is_timeout() {
                "timed out"
            } else if err.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            SealError {
                detail: format!("transit seal: {method} {url}: {}", describe(err)),
                summary: format!("transit seal: the unsealer could not be reached ({kind})"),
            }
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = Zeroizing::new(response.bytes().await.map_err(unreachable)?.to_vec());
        if !status.is_success() {
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let errors = answer["errors"]
                .as_array()
                .map(|errors| errors.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
            return Err(SealError {
                detail: format!(
                    "transit seal: {method} {url} answered {}: {}",
                    status.as_u16(),
                    errors.filter(|e| !e.is_empty()).unwrap_or_else(|| "no error message".into())
                ),
                summary: format!("transit seal: the unsealer answered {}", status.as_u16()),
            });
        }
        serde_json::from_slice(&bytes).map_err(|_| SealError {
            detail: format!("transit seal: {method} {url}: the answer is not what Transit answers"),
            summary: "transit seal: the unsealer's answer was not understood".into(),
        })
    }

    fn key_path(&self, operation: &str) -> String {
        format!("{}/{operation}/{}", self.mount_path, self.key_name)
    }

    /// Keeps the token alive: renews it at half its TTL for as long as the server runs
    /// (unless `disable_renewal`, or the token is not renewable).
    pub fn keep_token_renewed(self: std::sync::Arc<Self>) {
        if self.disable_renewal {
            return;
        }
        tokio::spawn(async move {
            loop {
                let ttl = match self.token_ttl().await {
                    Ok(Some(ttl)) => ttl,
                    Ok(None) => {
                        tracing::info!(
                            "seal \"transit\": the token does not expire or is not renewable; not renewing it"
                        );
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "seal \"transit\": could not look up the token; retrying");
                        tokio::time::sleep(RENEWAL_RETRY).await;
                        continue;
                    }
                };
                tokio::time::sleep(Duration::from_secs((ttl / 2).max(1))).await;
                let renewed: Result<serde::de::IgnoredAny, _> =
                    self.call(reqwest::Method::POST, "auth/token/renew-self", Some(&json!({}))).await;
                match renewed {
                    Ok(_) => tracing::debug!("seal \"transit\": token renewed"),
                    Err(err) => {
                        tracing::warn!(error = %err, "seal \"transit\": token renewal failed; retrying");
                        tokio::time::sleep(RENEWAL_RETRY).await;
                    }
                }
            }
        });
    }

    /// The token's remaining TTL in seconds, `None` when it has none or cannot be renewed.
    async fn token_ttl(&self) -> Result<Option<u64>, SealError> {
        let answer: Answer<TokenData> =
            self.call(reqwest::Method::GET, "auth/token/lookup-self", None::<&Value>).await?;
        let ttl = answer.data.ttl;
        Ok((ttl > 0 && answer.data.renewable).then_some(ttl))
    }
}

/// A transport error in words, with its cause (connection refused, timed out, certificate).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl AutoSeal for TransitSeal {
    fn kind(&self) -> &'static str {
        "transit"
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let encoded = Zeroizing::new(B64.encode(plaintext));
        let body = EncryptRequest { plaintext: &encoded };
        let answer: Answer<Ciphertext> =
            self.call(reqwest::Method::POST, &self.key_path("encrypt"), Some(&body)).await?;
        Ok(answer.data.ciphertext)
    }

    async fn decrypt(&self, wrapped: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let body = DecryptRequest { ciphertext: wrapped };
        let answer: Answer<Plaintext> =
            self.call(reqwest::Method::POST, &self.key_path("decrypt"), Some(&body)).await?;
        let encoded = Zeroizing::new(answer.data.plaintext);
        B64.decode(encoded.as_bytes()).map(Zeroizing::new).map_err(|_| SealError {
            detail: "transit seal: the decrypt answer is not base64".into(),
            summary: "transit seal: the unsealer's answer was not understood".into(),
        })
    }
}

/// The `data` of a Vault answer.
#[derive(serde::Deserialize)]
struct Answer<D> {
    data: D,
}

#[derive(serde::Serialize)]
struct EncryptRequest<'a> {
    plaintext: &'a str,
}

#[derive(serde::Serialize)]
struct DecryptRequest<'a> {
    ciphertext: &'a str,
}

#[derive(serde::Deserialize)]
struct Ciphertext {
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct Plaintext {
    plaintext: String,
}

#[derive(serde::Deserialize)]
struct TokenData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }

    #[test]
    fn settings_take_the_environment_with_vaults_precedence() {
        let block = SealBlock {
            address: Some("https://block:8200/".into()),
            token: Some("block-token".into()),
            key_name: Some("block-key".into()),
            mount_path: Some("/transit/".into()),
            ..SealBlock::default()
        };
        let settings = Settings::resolve(
            &block,
            env(&[
                ("VAULT_ADDR", "https://env:8200"),
                ("VAULT_TOKEN", "env-token"),
                ("VAULT_TRANSIT_SEAL_KEY_NAME", "env-key"),
                ("VAULT_TRANSIT_SEAL_DISABLE_RENEWAL", "true"),
            ]),
        )
        .unwrap();
        // The block wins for address and token; the seal's own variables win for key and renewal.
        assert_eq!(settings.address, "https://block:8200");
        assert_eq!(settings.token.as_str(), "block-token");
        assert_eq!(settings.key_name, "env-key");
        assert_eq!(settings.mount_path, "transit");
        assert!(settings.disable_renewal);
        assert!(!format!("{settings:?}").contains("block-token"));

        let from_env = Settings::resolve(
            &SealBlock::default(),
            env(&[
                ("VAULT_ADDR", "http://127.0.0.1:8200"),
                ("VAULT_TOKEN", "t"),
                ("VAULT_TRANSIT_SEAL_KEY_NAME", "k"),
                ("VAULT_TRANSIT_SEAL_MOUNT_PATH", "transit"),
            ]),
        )
        .unwrap();
        assert_eq!(from_env.address, "http://127.0.0.1:8200");

        let missing =
            Settings::resolve(&SealBlock { address: Some("http://x".into()), ..SealBlock::default() }, env(&[]))
                .unwrap_err();
        assert!(missing.to_string().contains("token"), "{missing}");
    }
}
