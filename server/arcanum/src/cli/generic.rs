//! `arcanum read|write|list|delete`: raw API paths, with Vault's `k=v`, `k=@file` and `-` data.

use std::io::Read as _;

use anyhow::{bail, Context as _};
use clap::Args;
use reqwest::Method;
use serde_json::{Map, Value};

use super::output::{go_value, print_json, print_keys, print_secret, secret_rows};
use super::{Client, ClientArgs, Format};

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Print only this field of the answer.
    #[arg(long)]
    field: Option<String>,
    /// The API path, e.g. `secret/foo` or `sys/mounts`.
    path: String,
    /// Query parameters as `key=value`.
    data: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Write even when no data is given.
    #[arg(long, short = 'f')]
    force: bool,
    /// Print only this field of the answer.
    #[arg(long)]
    field: Option<String>,
    /// The API path.
    path: String,
    /// `key=value`, `key=@file` (file contents), `key=-` (stdin), `@file.json` or `-` (a JSON object).
    data: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The API path to list.
    path: String,
}

#[derive(Debug, Args)]
pub struct UnwrapArgs {
    /// Print only this field of the answer.
    #[arg(long)]
    field: Option<String>,
    /// The wrapping token; without it, the client's own token is the wrapping token.
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The API path.
    path: String,
    /// Query parameters as `key=value`.
    data: Vec<String>,
}

/// Vault's `sanitizePath`: no surrounding whitespace or slashes.
pub fn sanitize_path(path: &str) -> String {
    path.trim().trim_matches('/').to_owned()
}

/// Parses the data arguments like Vault's kvbuilder. Repeated keys become lists, which is how
/// `write auth/token/create policies=a policies=b` passes several values.
pub fn parse_data(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut result = Map::new();
    let mut stdin_used = false;
    let mut read_stdin = |what: &str| -> anyhow::Result<String> {
        if stdin_used {
            bail!("stdin already consumed (by an earlier `-`)");
        }
        stdin_used = true;
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).with_context(|| format!("reading {what} from stdin"))?;
        Ok(text)
    };
    for raw in args.iter().filter(|a| !a.is_empty()) {
        let Some((key, value)) = raw.split_once('=') else {
            let text = if raw == "-" {
                read_stdin("a JSON object")?
            } else if let Some(file) = raw.strip_prefix('@') {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            } else {
                bail!("invalid data argument {raw:?}: format must be key=value");
            };
            let object: Map<String, Value> =
                serde_json::from_str(&text).with_context(|| format!("{raw}: expected a JSON object"))?;
            result.extend(object);
            continue;
        };
        let value = if let Some(file) = value.strip_prefix('@') {
            std::fs::read_to_string(file).with_context(|| format!("reading {file} for {key}"))?
        } else if let Some(literal) = value.strip_prefix('\\').filter(|v| v.starts_with('@')) {
            literal.to_owned()
        } else if value == "-" {
            read_stdin(key)?
        } else {
            value.to_owned()
        };
        match result.get_mut(key) {
            Some(Value::Array(list)) => list.push(Value::String(value)),
            Some(existing) => *existing = Value::Array(vec![existing.take(), Value::String(value)]),
            None => {
                result.insert(key.to_owned(), Value::String(value));
            }
        }
    }
    Ok(result)
}

/// Data as URL query pairs (lists become repeated keys), for reads and deletes.
pub fn query_pairs(data: &Map<String, Value>) -> Vec<(String, String)> {
    data.iter()
        .flat_map(|(key, value)| match value {
            Value::Array(items) => items.iter().map(|v| (key.clone(), go_value(v))).collect(),
            other => vec![(key.clone(), go_value(other))],
        })
        .collect()
}

/// Vault's `-field`: one value, raw in table form, JSON-encoded in JSON form.
/// Auth fields (`token`, `token_accessor`, ...) are found as in Vault's `RawField`.
pub fn print_field(format: Format, secret: &Value, data: &Value, field: &str) -> u8 {
    let from_data = data.get(field).filter(|v| !v.is_null()).cloned();
    let from_rows = || {
        secret_rows(secret)
            .into_iter()
            .find(|(key, _)| key.trim_end_matches(':') == field)
            .map(|(_, value)| auth_field(secret, field).unwrap_or(Value::String(value)))
    };
    let Some(value) = from_data.or_else(from_rows) else {
        eprintln!("Field \"{field}\" not present in secret");
        return 1;
    };
    match format {
        Format::Table => println!("{}", go_value(&value)),
        Format::Json => print_json(&value),
    }
    0
}

/// Auth fields keep their JSON type under `-format=json` (policies stay a list).
fn auth_field(secret: &Value, field: &str) -> Option<Value> {
    let auth = &secret["auth"];
    let value = match field {
        "token" => &auth["client_token"],
        "token_accessor" => &auth["accessor"],
        "token_policies" | "identity_policies" | "policies" => &auth[field],
        _ => return None,
    };
    Some(value.clone()).filter(|v| !v.is_null())
}

pub async fn read(args: &ClientArgs, read: ReadArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let path = sanitize_path(&read.path);
    let query = query_pairs(&parse_data(&read.data)?);
    let Some(secret) = client.read(&path, &query).await.with_context(|| format!("reading {path}"))? else {
        eprintln!("No value found at {path}");
        return Ok(2);
    };
    if let Some(field) = &read.field {
        return Ok(print_field(args.format, &secret, &secret["data"], field));
    }
    print_secret(args.format, &secret);
    Ok(0)
}

pub async fn write(args: &ClientArgs, write: WriteArgs) -> anyhow::Result<u8> {
    if write.data.is_empty() && !write.force {
        eprintln!("Must supply data or use -force");
        return Ok(1);
    }
    let client = Client::new(args)?;
    let path = sanitize_path(&write.path);
    let data = parse_data(&write.data)?;
    let secret = client
        .request(Method::PUT, &path, Some(Value::Object(data)))
        .await
        .with_context(|| format!("writing data to {path}"))?;
    if secret.is_null() {
        if args.format == Format::Table {
            println!("Success! Data written to: {path}");
        }
        return Ok(0);
    }
    if let Some(field) = &write.field {
        return Ok(print_field(args.format, &secret, &secret["data"], field));
    }
    print_secret(args.format, &secret);
    Ok(0)
}

/// `arcanum unwrap [TOKEN]`, as the Go client does it: with a token of its own the client sends
/// the wrapping token in the body, without one it sends it as the request's token.
pub async fn unwrap(args: &ClientArgs, unwrap: UnwrapArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let (client, body) = match (unwrap.token, client.has_token()) {
        (Some(token), true) => (client, Some(serde_json::json!({ "token": token }))),
        (Some(token), false) => (client.with_token(Some(token)), None),
        (None, true) => (client, None),
        (None, false) => bail!("no wrapping token given, and no token is set to use as one"),
    };
    let secret = client.request(Method::PUT, "sys/wrapping/unwrap", body).await.context("unwrapping")?;
    if secret.is_null() {
        eprintln!("The wrapped answer was empty");
        return Ok(0);
    }
    if let Some(field) = &unwrap.field {
        return Ok(print_field(args.format, &secret, &secret["data"], field));
    }
    print_secret(args.format, &secret);
    Ok(0)
}

pub async fn list(args: &ClientArgs, list: ListArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    // Vault lists folders, so the path always gets its trailing slash.
    let path = format!("{}/", sanitize_path(&list.path));
    let answer = client.list(&path).await.with_context(|| format!("listing {path}"))?;
    let Some(secret) = answer.filter(|s| s["data"]["keys"].as_array().is_some_and(|k| !k.is_empty())) else {
        eprintln!("No value found at {path}");
        return Ok(2);
    };
    print_keys(args.format, &secret);
    Ok(0)
}

pub async fn delete(args: &ClientArgs, delete: DeleteArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let path = sanitize_path(&delete.path);
    let query = query_pairs(&parse_data(&delete.data)?);
    let secret = client.delete(&path, &query).await.with_context(|| format!("deleting {path}"))?;
    if secret.is_null() {
        if args.format == Format::Table {
            println!("Success! Data deleted (if it existed) at: {path}");
        }
        return Ok(0);
    }
    print_secret(args.format, &secret);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn data_arguments_follow_vault_kvbuilder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.txt");
        std::fs::write(&file, "from-file\n").unwrap();
        let json_file = dir.path().join("o.json");
        std::fs::write(&json_file, r#"{"j": 1}"#).unwrap();
        let data = parse_data(&strings(&[
            "a=b",
            "eq=x=y",
            &format!("f=@{}", file.display()),
            "lit=\\@home",
            "p=1",
            "p=2",
            &format!("@{}", json_file.display()),
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(data),
            json!({"a": "b", "eq": "x=y", "f": "from-file\n", "lit": "@home", "p": ["1", "2"], "j": 1})
        );
        assert!(parse_data(&strings(&["novalue"])).is_err());
        assert_eq!(query_pairs(&parse_data(&strings(&["v=1", "v=2"])).unwrap()).len(), 2);
    }
}
