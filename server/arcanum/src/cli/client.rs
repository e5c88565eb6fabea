//! A small HTTP client for the CLI commands, speaking the same `/v1/` API as any Vault client.

use std::path::PathBuf;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

use super::ClientArgs;

/// Where `arcanum login` keeps the token; Vault's token helper uses `~/.vault-token` the same way.
pub const TOKEN_FILE: &str = ".arcanum-token";

/// Connection settings resolved from flags and the environment.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// `X-Vault-Wrap-TTL` for every request (`-wrap-ttl`).
    wrap_ttl: Option<String>,
    http: reqwest::Client,
}

// By hand, so that the token never reaches a log line through `{:?}`.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("wrap_ttl", &self.wrap_ttl)
            .finish()
    }
}

/// A non-2xx answer, printed the way Vault's CLI prints it.
#[derive(Debug, thiserror::Error)]
#[error("Error making API request.\n\nURL: {method} {url}\nCode: {status}. Errors:\n\n{}", format_errors(.errors))]
pub struct ApiFailure {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub errors: Vec<String>,
}

fn format_errors(errors: &[String]) -> String {
    errors.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n")
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// `$HOME/.arcanum-token`, or None when HOME is unset.
pub fn token_file_path() -> Option<PathBuf> {
    env(&["HOME"]).map(|home| PathBuf::from(home).join(TOKEN_FILE))
}

/// The token stored by `arcanum login`; a missing file just means "not logged in".
fn stored_token() -> anyhow::Result<Option<String>> {
    let Some(path) = token_file_path() else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading the token file {}", path.display())),
    }
}

/// The body of a request: JSON, or JSON sent under another content type (merge patches).
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    MergePatch(&'a Value),
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let base = args
            .address
            .clone()
            .or_else(|| env(&["ARCANUM_ADDR", "VAULT_ADDR"]))
            .unwrap_or_else(|| "https://127.0.0.1:8200".to_owned());
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        let ca_cert = args.ca_cert.clone().or_else(|| env(&["ARCANUM_CACERT", "VAULT_CACERT"]).map(PathBuf::from));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(&path).with_context(|| format!("reading CA certificate {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing CA certificate {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let skip_verify = args.tls_skip_verify
            || env(&["ARCANUM_SKIP_VERIFY", "VAULT_SKIP_VERIFY"]).is_some_and(|v| v != "0" && v != "false");
        if skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        // The environment wins over the stored token, as with Vault's VAULT_TOKEN and token helper.
        let token = match env(&["ARCANUM_TOKEN", "VAULT_TOKEN"]) {
            Some(token) => Some(token),
            None => stored_token()?,
        };
        let wrap_ttl = args.wrap_ttl.clone().or_else(|| env(&["ARCANUM_WRAP_TTL", "VAULT_WRAP_TTL"]));
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            wrap_ttl,
            http: builder.build().context("building the HTTP client")?,
        })
    }

    /// The same connection, with answers never wrapped (probes made on the user's behalf).
    pub fn without_wrapping(&self) -> Client {
        Client { wrap_ttl: None, ..self.clone() }
    }

    pub fn has_token(&self) -> bool {
        self.token.as_deref().is_some_and(|t| !t.is_empty())
    }

    /// The same connection with another token (`login` checks a token before storing it).
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    /// Sends one request; returns the JSON body (Null for 204) or an [`ApiFailure`].
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.as_ref().map_or(Body::None, Body::Json);
        let (status, json, url) = self.exchange(method.clone(), path, &[], body).await?;
        check(method, url, status, json)
    }

    /// Sends a JSON merge patch (`Content-Type: application/merge-patch+json`), as `kv patch` does.
    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, json, url) = self.exchange(Method::PATCH, path, &[], Body::MergePatch(body)).await?;
        check(Method::PATCH, url, status, json)
    }

    /// DELETE with query parameters (`arcanum delete PATH k=v`).
    pub async fn delete(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Value> {
        let (status, json, url) = self.exchange(Method::DELETE, path, query, Body::None).await?;
        check(Method::DELETE, url, status, json)
    }

    /// GET with query parameters, with the Go client's 404 rule: a 404 whose body carries
    /// `data` or `warnings` is still an answer (a deleted KV v2 version), any other 404 is None.
    pub async fn read(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Option<Value>> {
        let (status, json, url) = self.exchange(Method::GET, path, query, Body::None).await?;
        not_found_is_none(Method::GET, url, status, json)
    }

    /// LIST, with the same 404 rule as [`Client::read`] (an empty folder is a 404).
    pub async fn list(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let method = Method::from_bytes(b"LIST").context("building the LIST method")?;
        let (status, json, url) = self.exchange(method.clone(), path, &[], Body::None).await?;
        not_found_is_none(method, url, status, json)
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Body<'_>,
    ) -> anyhow::Result<(u16, Value, String)> {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let mut request = self.http.request(method.clone(), &url).header("X-Vault-Request", "true");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(wrap_ttl) = &self.wrap_ttl {
            request = request.header("X-Vault-Wrap-TTL", wrap_ttl);
        }
        match body {
            Body::None => {}
            Body::Json(body) => request = request.json(body),
            Body::MergePatch(body) => {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/merge-patch+json")
                    .body(serde_json::to_vec(body).context("encoding the patch")?);
            }
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let text = response.text().await.with_context(|| format!("reading the answer to {method} {url}"))?;
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json, url))
    }
}

fn not_found_is_none(method: Method, url: String, status: u16, json: Value) -> anyhow::Result<Option<Value>> {
    if status == 404 {
        let data = json.get("data").is_some_and(|d| !d.is_null() && d != &Value::Object(Default::default()));
        let warnings = json.get("warnings").and_then(Value::as_array).is_some_and(|w| !w.is_empty());
        return Ok((data || warnings).then_some(json));
    }
    check(method, url, status, json).map(Some)
}

fn check(method: Method, url: String, status: u16, json: Value) -> anyhow::Result<Value> {
    if status >= 400 {
        let errors = json
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| errors.iter().map(|e| e.as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_else(|| vec![json.to_string()]);
        return Err(ApiFailure { method: method.to_string(), url, status, errors }.into());
    }
    Ok(json)
}
