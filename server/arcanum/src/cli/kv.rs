//! `arcanum kv ...`: the KV v1/v2 helper commands, with the vault CLI's version detection.
//!
//! Like `vault kv`, every command first asks `sys/internal/ui/mounts/<path>` which mount owns the
//! path and whether it is v2 (`options.version == "2"`; a 404 means an old server, so v1), then
//! rewrites `secret/foo` to `secret/data/foo`, `secret/metadata/foo`, ... for v2.

use anyhow::{bail, Context as _};
use clap::{ArgAction, Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::ApiFailure;
use super::generic::{parse_data, print_field, sanitize_path};
use super::output::{
    data_rows, header_for_map, pad_equal_signs, print_keys, print_secret, print_table, print_warnings,
};
use super::{Client, ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read a secret (the latest version, or `-version=N` on v2).
    Get(GetArgs),
    /// Write a secret (a new version on v2).
    Put(PutArgs),
    /// Merge new keys into the latest version of a v2 secret (HTTP PATCH).
    Patch(PutArgs),
    /// Delete a secret: the latest version on v2, or `-versions=..`.
    Delete(VersionsArgs),
    /// Restore soft-deleted versions (v2 only).
    Undelete(VersionsArgs),
    /// Permanently remove versions (v2 only).
    Destroy(VersionsArgs),
    /// List the keys under a path.
    List(Target),
    /// Read or write a v2 secret's metadata.
    Metadata {
        #[command(subcommand)]
        command: MetadataCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Print a secret's metadata and its versions.
    Get(Target),
    /// Set max versions, check-and-set, automatic deletion or custom metadata.
    Put(MetadataPutArgs),
    /// Delete a secret's metadata and all its versions.
    Delete(Target),
}

/// The secret addressed as `secret/foo`, or `-mount=secret foo`.
#[derive(Debug, Args)]
pub struct Target {
    /// The mount path; the positional path is then relative to it.
    #[arg(long)]
    mount: Option<String>,
    /// The secret path.
    path: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// The version to read (v2; 0 is the latest).
    #[arg(long)]
    version: Option<u64>,
    /// Print only this field of the secret data.
    #[arg(long)]
    field: Option<String>,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    /// Check-and-set: the write only succeeds if the current version is N (0: must not exist).
    #[arg(long)]
    cas: Option<i64>,
    /// `key=value`, `key=@file`, `key=-`, `@file.json` or `-` (a JSON object on stdin).
    data: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    target: Target,
    /// Comma-separated version numbers (v2).
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    versions: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct MetadataPutArgs {
    #[command(flatten)]
    target: Target,
    /// Versions to keep (0: the mount's setting).
    #[arg(long)]
    max_versions: Option<u64>,
    /// Require `-cas` on every write of this secret.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    cas_required: Option<bool>,
    /// Soft-delete each version this long after it is written (`0s`: never).
    #[arg(long)]
    delete_version_after: Option<String>,
    /// `key=value`, repeatable.
    #[arg(long, action = ArgAction::Append)]
    custom_metadata: Vec<String>,
}

/// Where a KV path lives and how to address it.
#[derive(Debug)]
struct KvPath {
    /// The mount with its trailing slash (`secret/`), empty when the server did not say.
    mount: String,
    /// The path inside the mount.
    rest: String,
    v2: bool,
}

impl KvPath {
    /// The v2 API path under `prefix` (`data`, `metadata`, `delete`, ...).
    fn v2(&self, prefix: &str) -> String {
        if self.rest.is_empty() {
            format!("{}{prefix}", self.mount)
        } else {
            format!("{}{prefix}/{}", self.mount, self.rest)
        }
    }

    /// The v1 path: the mount and the key, no API prefix.
    fn v1(&self) -> String {
        format!("{}{}", self.mount, self.rest).trim_end_matches('/').to_owned()
    }
}

/// The vault CLI's `isKVv2` preflight plus its path rewriting.
async fn resolve(client: &Client, target: &Target) -> anyhow::Result<KvPath> {
    let path = sanitize_path(&target.path);
    let (probe, full) = match &target.mount {
        Some(mount) => {
            let mount = sanitize_path(mount);
            (mount.clone(), if path.is_empty() { mount } else { format!("{mount}/{path}") })
        }
        None => (path.clone(), path),
    };
    // The probe is never wrapped (as the vault CLI does it): only the answer the user asked for.
    let info = client
        .without_wrapping()
        .read(&format!("sys/internal/ui/mounts/{probe}"), &[])
        .await
        .with_context(|| format!("finding the mount of {full}"))?;
    let Some(info) = info else {
        // An old server without the endpoint: Vault assumes v1 at the given path.
        return Ok(match &target.mount {
            Some(mount) => {
                KvPath { mount: format!("{}/", sanitize_path(mount)), rest: sanitize_path(&target.path), v2: false }
            }
            None => KvPath { mount: String::new(), rest: full, v2: false },
        });
    };
    let mount = info["data"]["path"].as_str().unwrap_or_default().to_owned();
    let v2 = info["data"]["options"]["version"].as_str() == Some("2");
    let rest = if format!("{full}/") == mount {
        String::new()
    } else if let Some(rest) = full.strip_prefix(mount.as_str()).filter(|_| !mount.is_empty()) {
        rest.to_owned()
    } else {
        bail!("the server placed {full} under the mount {mount:?}, which is not a prefix of it");
    };
    Ok(KvPath { mount, rest, v2 })
}

pub async fn run(command: KvCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let format = args.format;
    match command {
        KvCommand::Get(get) => kv_get(&client, format, get).await,
        KvCommand::Put(put) => kv_put(&client, format, put, false).await,
        KvCommand::Patch(put) => kv_put(&client, format, put, true).await,
        KvCommand::Delete(delete) => kv_delete(&client, delete).await,
        KvCommand::Undelete(versions) => kv_versions(&client, format, versions, "undelete").await,
        KvCommand::Destroy(versions) => kv_versions(&client, format, versions, "destroy").await,
        KvCommand::List(target) => {
            let kv = resolve(&client, &target).await?;
            let path = format!("{}/", if kv.v2 { kv.v2("metadata") } else { kv.v1() }.trim_end_matches('/'));
            let answer = client.list(&path).await.with_context(|| format!("listing {path}"))?;
            let Some(secret) = answer.filter(|s| s["data"]["keys"].as_array().is_some_and(|k| !k.is_empty())) else {
                eprintln!("No value found at {path}");
                return Ok(2);
            };
            print_keys(format, &secret);
            Ok(0)
        }
        KvCommand::Metadata { command } => metadata(&client, format, command).await,
    }
}

async fn kv_get(client: &Client, format: Format, get: GetArgs) -> anyhow::Result<u8> {
    let kv = resolve(client, &get.target).await?;
    let (path, query) = if kv.v2 {
        let query = get.version.map(|v| vec![("version".to_owned(), v.to_string())]).unwrap_or_default();
        (kv.v2("data"), query)
    } else {
        (kv.v1(), Vec::new())
    };
    let Some(secret) = client.read(&path, &query).await.with_context(|| format!("reading {path}"))? else {
        eprintln!("No value found at {path}");
        return Ok(2);
    };
    let data = if kv.v2 { secret["data"]["data"].clone() } else { secret["data"].clone() };
    if let Some(field) = &get.field {
        return Ok(print_field(format, &secret, &data, field));
    }
    if format == Format::Json || !kv.v2 || secret["wrap_info"].is_object() {
        print_secret(format, &secret);
        return Ok(0);
    }
    print_warnings(&secret);
    print_path(&path, "Secret Path");
    let metadata = &secret["data"]["metadata"];
    if !metadata.is_null() {
        println!("{}", header_for_map("Metadata", metadata));
        print_table(&data_rows(metadata));
    }
    if data.is_object() {
        println!("\n{}", header_for_map("Data", &data));
        print_table(&data_rows(&data));
    }
    Ok(0)
}

async fn kv_put(client: &Client, format: Format, put: PutArgs, patch: bool) -> anyhow::Result<u8> {
    if put.data.is_empty() {
        eprintln!("Must supply data");
        return Ok(1);
    }
    let data = parse_data(&put.data)?;
    let kv = resolve(client, &put.target).await?;
    if patch && !kv.v2 {
        // Vault exits 2 here too: patching needs versions.
        eprintln!("K/V engine mount must be version 2 for patch support");
        return Ok(2);
    }
    let (path, secret) = if kv.v2 {
        let path = kv.v2("data");
        let mut options = Map::new();
        if let Some(cas) = put.cas {
            options.insert("cas".into(), json!(cas));
        }
        let body = json!({ "data": data, "options": options });
        let answer =
            if patch { client.patch(&path, &body).await } else { client.request(Method::PUT, &path, Some(body)).await };
        match answer {
            Ok(secret) => (path, secret),
            Err(err) if patch && err.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 404) => {
                eprintln!("No value found at {path}");
                return Ok(2);
            }
            Err(err) => return Err(err.context(format!("writing data to {path}"))),
        }
    } else {
        if put.cas.is_some() {
            eprintln!("-cas is only supported on KV version 2 mounts");
            return Ok(1);
        }
        let path = kv.v1();
        let secret = client
            .request(Method::PUT, &path, Some(Value::Object(data)))
            .await
            .with_context(|| format!("writing data to {path}"))?;
        (path, secret)
    };
    if secret.is_null() {
        if format == Format::Table {
            println!("Success! Data written to: {path}");
        }
        return Ok(0);
    }
    if format == Format::Json || !kv.v2 {
        print_secret(format, &secret);
        return Ok(0);
    }
    print_warnings(&secret);
    print_path(&path, "Secret Path");
    println!("{}", header_for_map("Metadata", &secret["data"]));
    print_table(&data_rows(&secret["data"]));
    Ok(0)
}

async fn kv_delete(client: &Client, delete: VersionsArgs) -> anyhow::Result<u8> {
    let kv = resolve(client, &delete.target).await?;
    let path = if !kv.v2 {
        if !delete.versions.is_empty() {
            eprintln!("-versions is only supported on KV version 2 mounts");
            return Ok(1);
        }
        let path = kv.v1();
        client.request(Method::DELETE, &path, None).await.with_context(|| format!("deleting {path}"))?;
        path
    } else if delete.versions.is_empty() {
        let path = kv.v2("data");
        client.request(Method::DELETE, &path, None).await.with_context(|| format!("deleting {path}"))?;
        path
    } else {
        let path = kv.v2("delete");
        let body = json!({ "versions": delete.versions });
        client.request(Method::PUT, &path, Some(body)).await.with_context(|| format!("deleting {path}"))?;
        path
    };
    println!("Success! Data deleted (if it existed) at: {path}");
    Ok(0)
}

/// `kv undelete` and `kv destroy`: a versions list posted under `undelete/` or `destroy/`.
async fn kv_versions(client: &Client, format: Format, versions: VersionsArgs, action: &str) -> anyhow::Result<u8> {
    if versions.versions.is_empty() {
        eprintln!("No versions provided, use the \"-versions\" flag to specify the version to {action}.");
        return Ok(1);
    }
    let kv = resolve(client, &versions.target).await?;
    if !kv.v2 {
        let verb = if action == "undelete" { "Undelete" } else { "Destroy" };
        eprintln!("{verb} not supported on KV Version 1");
        return Ok(1);
    }
    let path = kv.v2(action);
    let secret = client
        .request(Method::PUT, &path, Some(json!({ "versions": versions.versions })))
        .await
        .with_context(|| format!("writing data to {path}"))?;
    if secret.is_null() {
        if format == Format::Table {
            println!("Success! Data written to: {path}");
        }
    } else {
        print_secret(format, &secret);
    }
    Ok(0)
}

async fn metadata(client: &Client, format: Format, command: MetadataCommand) -> anyhow::Result<u8> {
    let target = match &command {
        MetadataCommand::Get(target) | MetadataCommand::Delete(target) => target,
        MetadataCommand::Put(put) => &put.target,
    };
    let kv = resolve(client, target).await?;
    if !kv.v2 {
        eprintln!("Metadata not supported on KV Version 1");
        return Ok(1);
    }
    let path = kv.v2("metadata");
    match command {
        MetadataCommand::Get(_) => {
            let Some(secret) = client.read(&path, &[]).await.with_context(|| format!("reading {path}"))? else {
                eprintln!("No value found at {path}");
                return Ok(2);
            };
            if format == Format::Json {
                print_secret(format, &secret);
                return Ok(0);
            }
            print_warnings(&secret);
            let mut data = secret["data"].clone();
            let versions = data.as_object_mut().and_then(|d| d.remove("versions")).unwrap_or(Value::Null);
            print_path(&path, "Metadata Path");
            println!("{}", header_for_map("Metadata", &data));
            print_table(&data_rows(&data));
            let mut numbers: Vec<(u64, &Value)> = versions
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
                .collect();
            numbers.sort_by_key(|(n, _)| *n);
            for (number, version) in numbers {
                println!("\n{}", header_for_map(&format!("Version {number}"), version));
                print_table(&data_rows(version));
            }
            Ok(0)
        }
        MetadataCommand::Put(put) => {
            let mut body = Map::new();
            if let Some(max) = put.max_versions {
                body.insert("max_versions".into(), json!(max));
            }
            if let Some(required) = put.cas_required {
                body.insert("cas_required".into(), json!(required));
            }
            if let Some(after) = put.delete_version_after {
                body.insert("delete_version_after".into(), json!(after));
            }
            if !put.custom_metadata.is_empty() {
                let mut custom = Map::new();
                for pair in &put.custom_metadata {
                    let Some((key, value)) = pair.split_once('=') else {
                        eprintln!("Invalid custom metadata {pair:?}: format must be key=value");
                        return Ok(1);
                    };
                    custom.insert(key.to_owned(), json!(value));
                }
                body.insert("custom_metadata".into(), Value::Object(custom));
            }
            client
                .request(Method::PUT, &path, Some(Value::Object(body)))
                .await
                .with_context(|| format!("writing data to {path}"))?;
            println!("Success! Data written to: {path}");
            Ok(0)
        }
        MetadataCommand::Delete(_) => {
            client.request(Method::DELETE, &path, None).await.with_context(|| format!("deleting {path}"))?;
            println!("Success! Data deleted (if it existed) at: {path}");
            Ok(0)
        }
    }
}

/// Vault's `outputPath`: the API path actually used, under an `== Title ==` header.
fn print_path(path: &str, title: &str) {
    println!("{}\n{path}\n", pad_equal_signs(title, path.chars().count()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_paths_are_rewritten_under_the_mount() {
        let kv = KvPath { mount: "secret/".into(), rest: "team/app".into(), v2: true };
        assert_eq!(kv.v2("data"), "secret/data/team/app");
        assert_eq!(kv.v2("metadata"), "secret/metadata/team/app");
        assert_eq!(kv.v1(), "secret/team/app");
        let root = KvPath { mount: "secret/".into(), rest: String::new(), v2: true };
        assert_eq!(root.v2("metadata"), "secret/metadata");
    }
}
