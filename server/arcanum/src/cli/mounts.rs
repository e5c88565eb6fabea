//! `arcanum secrets enable|disable|list|tune` and `arcanum auth enable|disable|list`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{ArgAction, Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::generic::sanitize_path;
use super::output::{go_value, human_duration, print_columns, print_json};
use super::{Client, ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Mount a secrets engine (`kv`, `kv-v2`, ...) at -path (default: the type).
    Enable(EnableArgs),
    /// Unmount a secrets engine, revoking its leases and deleting its data.
    Disable(PathArg),
    /// List the mounted secrets engines.
    List(ListArgs),
    /// Change a mount's TTLs or description.
    Tune(TuneArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enable an auth method (`userpass`, ...) at -path (default: the type).
    Enable(AuthEnableArgs),
    /// Disable an auth method, revoking the tokens it issued.
    Disable(PathArg),
    /// List the enabled auth methods.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Where to mount it (default: the engine type).
    #[arg(long)]
    path: Option<String>,
    /// Human-friendly description of the mount.
    #[arg(long)]
    description: Option<String>,
    /// KV version (`-version=2` is the same as type `kv-v2`).
    #[arg(long)]
    version: Option<u32>,
    /// Default lease TTL, e.g. `1h`.
    #[arg(long)]
    default_lease_ttl: Option<String>,
    /// Maximum lease TTL, e.g. `24h`.
    #[arg(long)]
    max_lease_ttl: Option<String>,
    /// Engine options as `key=value`; repeatable.
    #[arg(long = "options", action = ArgAction::Append)]
    options: Vec<String>,
    /// Engine type.
    engine_type: String,
}

#[derive(Debug, Args)]
pub struct AuthEnableArgs {
    /// Where to mount it, under `auth/` (default: the method type).
    #[arg(long)]
    path: Option<String>,
    /// Human-friendly description of the mount.
    #[arg(long)]
    description: Option<String>,
    /// Default lease TTL of the tokens it issues.
    #[arg(long)]
    default_lease_ttl: Option<String>,
    /// Maximum lease TTL of the tokens it issues.
    #[arg(long)]
    max_lease_ttl: Option<String>,
    /// Auth method type.
    method_type: String,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    #[arg(long)]
    default_lease_ttl: Option<String>,
    #[arg(long)]
    max_lease_ttl: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The mount path.
    path: String,
}

#[derive(Debug, Args)]
pub struct PathArg {
    path: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show TTLs, options, UUIDs and more.
    #[arg(long)]
    detailed: bool,
}

/// `config` with only the TTLs that were given.
fn ttl_config(default_ttl: Option<String>, max_ttl: Option<String>) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(ttl) = default_ttl {
        config.insert("default_lease_ttl".into(), json!(ttl));
    }
    if let Some(ttl) = max_ttl {
        config.insert("max_lease_ttl".into(), json!(ttl));
    }
    config
}

pub async fn secrets(command: SecretsCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    match command {
        SecretsCommand::Enable(enable) => {
            let path = format!("{}/", sanitize_path(enable.path.as_deref().unwrap_or(&enable.engine_type)));
            let mut options = Map::new();
            for pair in &enable.options {
                let Some((key, value)) = pair.split_once('=') else {
                    eprintln!("Invalid -options {pair:?}: format must be key=value");
                    return Ok(1);
                };
                options.insert(key.to_owned(), json!(value));
            }
            if let Some(version) = enable.version {
                options.insert("version".into(), json!(version.to_string()));
            }
            let mut body = Map::new();
            body.insert("type".into(), json!(enable.engine_type));
            body.insert("description".into(), json!(enable.description.unwrap_or_default()));
            body.insert("config".into(), Value::Object(ttl_config(enable.default_lease_ttl, enable.max_lease_ttl)));
            if !options.is_empty() {
                body.insert("options".into(), Value::Object(options));
            }
            client
                .request(Method::POST, &format!("sys/mounts/{path}"), Some(Value::Object(body)))
                .await
                .with_context(|| format!("enabling the {} secrets engine", enable.engine_type))?;
            println!("Success! Enabled the {} secrets engine at: {path}", enable.engine_type);
            Ok(0)
        }
        SecretsCommand::Disable(disable) => {
            let path = format!("{}/", sanitize_path(&disable.path));
            client
                .request(Method::DELETE, &format!("sys/mounts/{path}"), None)
                .await
                .with_context(|| format!("disabling the secrets engine at {path}"))?;
            println!("Success! Disabled the secrets engine (if it existed) at: {path}");
            Ok(0)
        }
        SecretsCommand::Tune(tune) => {
            let path = format!("{}/", sanitize_path(&tune.path));
            let mut body = ttl_config(tune.default_lease_ttl, tune.max_lease_ttl);
            if let Some(description) = tune.description {
                body.insert("description".into(), json!(description));
            }
            client
                .request(Method::POST, &format!("sys/mounts/{path}tune"), Some(Value::Object(body)))
                .await
                .with_context(|| format!("tuning the secrets engine at {path}"))?;
            println!("Success! Tuned the secrets engine at: {path}");
            Ok(0)
        }
        SecretsCommand::List(list) => {
            let answer = client.request(Method::GET, "sys/mounts", None).await.context("listing secrets engines")?;
            print_mounts(args.format, &mount_map(&answer), list.detailed, false);
            Ok(0)
        }
    }
}

pub async fn auth(command: AuthCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    match command {
        AuthCommand::Enable(enable) => {
            let path = format!("{}/", sanitize_path(enable.path.as_deref().unwrap_or(&enable.method_type)));
            let body = json!({
                "type": enable.method_type,
                "description": enable.description.unwrap_or_default(),
                "config": ttl_config(enable.default_lease_ttl, enable.max_lease_ttl),
            });
            client
                .request(Method::POST, &format!("sys/auth/{path}"), Some(body))
                .await
                .with_context(|| format!("enabling the {} auth method", enable.method_type))?;
            println!("Success! Enabled {} auth method at: {path}", enable.method_type);
            Ok(0)
        }
        AuthCommand::Disable(disable) => {
            let path = format!("{}/", sanitize_path(&disable.path));
            client
                .request(Method::DELETE, &format!("sys/auth/{path}"), None)
                .await
                .with_context(|| format!("disabling the auth method at {path}"))?;
            println!("Success! Disabled the auth method (if it existed) at: {path}");
            Ok(0)
        }
        AuthCommand::List(list) => {
            let answer = client.request(Method::GET, "sys/auth", None).await.context("listing auth methods")?;
            print_mounts(args.format, &mount_map(&answer), list.detailed, true);
            Ok(0)
        }
    }
}

/// The `path/ -> info` map of a `sys/mounts` or `sys/auth` answer. Vault duplicates it at the
/// top level for old clients, so fall back to that when `data` is missing.
fn mount_map(answer: &Value) -> BTreeMap<String, Value> {
    let source = if answer["data"].is_object() { &answer["data"] } else { answer };
    source
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(path, info)| path.ends_with('/') && info.is_object())
        .map(|(path, info)| (path.clone(), info.clone()))
        .collect()
}

fn print_mounts(format: Format, mounts: &BTreeMap<String, Value>, detailed: bool, auth: bool) {
    if format == Format::Json {
        let map: Map<String, Value> = mounts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        return print_json(&Value::Object(map));
    }
    let text = |info: &Value, key: &str| match &info[key] {
        Value::Null => String::new(),
        other => go_value(other),
    };
    let ttl = |info: &Value, key: &str| match info["config"][key].as_i64() {
        Some(0) | None => "system".to_owned(),
        Some(seconds) => human_duration(seconds),
    };
    if !detailed {
        let headers: &[&str] = if auth {
            &["Path", "Type", "Accessor", "Description", "Version"]
        } else {
            &["Path", "Type", "Accessor", "Description"]
        };
        let rows: Vec<Vec<String>> = mounts
            .iter()
            .map(|(path, info)| {
                let mut row = vec![path.clone(), text(info, "type"), text(info, "accessor"), text(info, "description")];
                if auth {
                    row.push(text(info, "plugin_version"));
                }
                row
            })
            .collect();
        return print_columns(headers, &rows);
    }
    let headers = [
        "Path",
        "Plugin",
        "Accessor",
        "Default TTL",
        "Max TTL",
        "Force No Cache",
        "Replication",
        "Seal Wrap",
        "External Entropy Access",
        "Options",
        "Description",
        "UUID",
    ];
    let rows: Vec<Vec<String>> = mounts
        .iter()
        .map(|(path, info)| {
            let replication = if info["local"].as_bool().unwrap_or(false) { "local" } else { "replicated" };
            vec![
                path.clone(),
                text(info, "type"),
                text(info, "accessor"),
                ttl(info, "default_lease_ttl"),
                ttl(info, "max_lease_ttl"),
                info["config"]["force_no_cache"].as_bool().unwrap_or(false).to_string(),
                replication.to_owned(),
                info["seal_wrap"].as_bool().unwrap_or(false).to_string(),
                info["external_entropy_access"].as_bool().unwrap_or(false).to_string(),
                text(info, "options"),
                text(info, "description"),
                text(info, "uuid"),
            ]
        })
        .collect();
    let headers: Vec<&str> = if auth {
        headers.iter().copied().filter(|h| *h != "External Entropy Access").collect()
    } else {
        headers.to_vec()
    };
    let rows: Vec<Vec<String>> = if auth {
        rows.into_iter()
            .map(|mut row| {
                row.remove(8);
                row
            })
            .collect()
    } else {
        rows
    };
    print_columns(&headers, &rows);
}
