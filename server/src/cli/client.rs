//! A small HTTP client for the CLI commands, speaking the same `/v1/` API as any Vault client.

use std::path::PathBuf;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

use super::ClientArgs;

/// Connection settings resolved from flags and the environment.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
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
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token: env(&["ARCANUM_TOKEN", "VAULT_TOKEN"]),
            http: builder.build().context("building the HTTP client")?,
        })
    }

    /// Sends one request; returns the JSON body (Null for 204) or an [`ApiFailure`].
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let mut request = self.http.request(method.clone(), &url).header("X-Vault-Request", "true");
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("reading the answer to {method} {url}"))?;
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
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
}
