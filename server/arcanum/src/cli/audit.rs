//! `arcanum audit enable|disable|list` (Vault's CLI shape) and `arcanum audit verify`, which
//! checks the hash chain of audit files offline — no server, no token, no keys.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::generic::sanitize_path;
use super::output::{go_value, print_columns, print_json};
use super::{Client, ClientArgs, Format};
use arcanum_audit::verify::{self, Outcome, VerifyOptions};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Enable an audit device: `audit enable [-path=P] file file_path=/var/log/arcanum/audit.log`.
    Enable(EnableArgs),
    /// Disable the audit device at PATH (its salt is discarded).
    Disable(PathArg),
    /// List the enabled audit devices.
    List(ListArgs),
    /// Check the hash chain of audit files, oldest first (exit 0 only when intact).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Where to enable it (default: the device type).
    #[arg(long)]
    path: Option<String>,
    /// Human-friendly description.
    #[arg(long)]
    description: Option<String>,
    /// Mark the device local (kept for Vault compatibility; one node has nothing to replicate).
    #[arg(long)]
    local: bool,
    /// Device type (`file`).
    device_type: String,
    /// Device options as `key=value` (`file_path=...`, `mode=0600`, `log_raw=true`, ...).
    options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PathArg {
    path: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show options, counters and the chain head too.
    #[arg(long)]
    detailed: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The `prev_hash` the first line must carry: the device's `chain.genesis` from
    /// `audit list -detailed`, or the last hash of an older file no longer kept.
    #[arg(long)]
    anchor: Option<String>,
    /// `SEQ:HASH` recorded earlier from `audit list -detailed` (repeatable): that line must be
    /// present with that hash. This is what catches trailing lines or files removed.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<String>,
    /// Audit files in chain order (oldest first).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub async fn run(command: AuditCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Enable(enable) => {
            let client = Client::new(args)?;
            let path = format!("{}/", sanitize_path(enable.path.as_deref().unwrap_or(&enable.device_type)));
            let mut options = Map::new();
            for pair in &enable.options {
                let Some((key, value)) = pair.split_once('=') else {
                    eprintln!("Invalid option {pair:?}: format must be key=value");
                    return Ok(1);
                };
                options.insert(key.to_owned(), json!(value));
            }
            let body = json!({
                "type": enable.device_type,
                "description": enable.description.unwrap_or_default(),
                "local": enable.local,
                "options": options,
            });
            client
                .request(Method::PUT, &format!("sys/audit/{path}"), Some(body))
                .await
                .with_context(|| format!("enabling the {} audit device", enable.device_type))?;
            println!("Success! Enabled the {} audit device at: {path}", enable.device_type);
            Ok(0)
        }
        AuditCommand::Disable(disable) => {
            let client = Client::new(args)?;
            let path = format!("{}/", sanitize_path(&disable.path));
            client
                .request(Method::DELETE, &format!("sys/audit/{path}"), None)
                .await
                .with_context(|| format!("disabling the audit device at {path}"))?;
            println!("Success! Disabled audit device (if it was enabled) at: {path}");
            Ok(0)
        }
        AuditCommand::List(list) => {
            let client = Client::new(args)?;
            let answer = client.request(Method::GET, "sys/audit", None).await.context("listing audit devices")?;
            Ok(print_devices(args.format, &answer, list.detailed))
        }
        AuditCommand::Verify(verify) => run_verify(verify),
    }
}

/// Vault's `audit list`: exit code 2 (and a message) when nothing is enabled.
fn print_devices(format: Format, answer: &Value, detailed: bool) -> u8 {
    let source = if answer["data"].is_object() { &answer["data"] } else { answer };
    let devices: Vec<(&String, &Value)> = source
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(path, info)| path.ends_with('/') && info.is_object())
        .collect();
    if format == Format::Json {
        print_json(&Value::Object(devices.iter().map(|(k, v)| ((*k).clone(), (*v).clone())).collect()));
        return 0;
    }
    if devices.is_empty() {
        println!("No audit devices are enabled.");
        return 2;
    }
    let text = |info: &Value, key: &str| match &info[key] {
        Value::Null => String::new(),
        other => go_value(other),
    };
    if !detailed {
        let rows: Vec<Vec<String>> = devices
            .iter()
            .map(|(path, info)| vec![(*path).clone(), text(info, "type"), text(info, "description")])
            .collect();
        print_columns(&["Path", "Type", "Description"], &rows);
        return 0;
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|(path, info)| {
            let replication = if info["local"].as_bool().unwrap_or(false) { "local" } else { "replicated" };
            let chain = &info["chain"];
            let head = match chain["seq"].as_u64() {
                Some(seq) => format!("{seq}:{}", chain["hash"].as_str().unwrap_or_default()),
                None => String::new(),
            };
            vec![
                (*path).clone(),
                text(info, "type"),
                text(info, "description"),
                replication.to_owned(),
                text(info, "options"),
                text(info, "writes"),
                text(info, "failures"),
                head,
                chain["genesis"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    print_columns(
        &["Path", "Type", "Description", "Replication", "Options", "Writes", "Failures", "Checkpoint", "Genesis"],
        &rows,
    );
    0
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let mut options = VerifyOptions { anchor: args.anchor, checkpoints: Vec::new() };
    for checkpoint in &args.checkpoints {
        let parsed = checkpoint
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse::<u64>().ok()?, hash.to_owned())))
            .filter(|(_, hash)| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(parsed) = parsed else {
            eprintln!("Invalid -checkpoint {checkpoint:?}: expected SEQ:HASH (64 hex characters)");
            return Ok(2);
        };
        options.checkpoints.push(parsed);
    }
    match verify::verify_files(&args.files, &options).context("reading the audit files")? {
        Outcome::Intact(summary) => {
            let files = args.files.len();
            match (summary.first_seq, summary.last_seq) {
                (Some(first), Some(last)) => {
                    println!("Intact: {} lines in {files} file(s), seq {first} to {last}.", summary.lines);
                    println!("Anchor (prev_hash of the first line): {}", summary.anchor.unwrap_or_default());
                    println!("Checkpoint (seq:hash of the last line): {last}:{}", summary.head.unwrap_or_default());
                }
                _ => println!("Intact: no lines in {files} file(s)."),
            }
            Ok(0)
        }
        Outcome::Broken(broken) => {
            println!("Broken: {broken}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_arguments_are_checked() {
        let bad = VerifyArgs { anchor: None, checkpoints: vec!["12:abc".into()], files: vec!["/nonexistent".into()] };
        assert_eq!(run_verify(bad).unwrap(), 2);
        let missing = VerifyArgs { anchor: None, checkpoints: vec![], files: vec!["/nonexistent/audit.log".into()] };
        assert!(run_verify(missing).is_err());
    }
}
