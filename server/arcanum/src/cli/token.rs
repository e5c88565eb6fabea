//! `arcanum token create|lookup|renew|revoke|capabilities` and `arcanum login`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

use anyhow::{bail, Context as _};
use clap::{ArgAction, Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::token_file_path;
use super::generic::print_field;
use super::output::{print_json, print_secret};
use super::{Client, ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (a child of the caller's, unless -orphan or a role says otherwise).
    Create(CreateArgs),
    /// Show a token's properties (the caller's own when TOKEN is omitted).
    Lookup(LookupArgs),
    /// Extend a token's TTL (the caller's own when TOKEN is omitted).
    Renew(RenewArgs),
    /// Revoke a token and, unless -mode=orphan, all its children.
    Revoke(RevokeArgs),
    /// Print a token's capabilities on a path (the caller's own when TOKEN is omitted).
    Capabilities(CapabilitiesArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A policy to attach; repeat for several.
    #[arg(long = "policy", action = ArgAction::Append)]
    policies: Vec<String>,
    /// Initial TTL, e.g. `1h` or `30m`.
    #[arg(long)]
    ttl: Option<String>,
    /// Hard upper bound on the token's lifetime, renewals included.
    #[arg(long)]
    explicit_max_ttl: Option<String>,
    /// Make a periodic token: each renewal resets its TTL to this period.
    #[arg(long)]
    period: Option<String>,
    /// Number of uses before the token is revoked (0: unlimited).
    #[arg(long)]
    num_uses: Option<i64>,
    /// Create the token without a parent (auth/token/create-orphan).
    #[arg(long)]
    orphan: bool,
    /// Whether the token may be renewed.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    renewable: bool,
    /// Name shown in the token's metadata and audit logs.
    #[arg(long)]
    display_name: Option<String>,
    /// Create the token against this token role (auth/token/create/ROLE).
    #[arg(long)]
    role: Option<String>,
    /// `key=value` metadata; repeat for several.
    #[arg(long, action = ArgAction::Append)]
    metadata: Vec<String>,
    /// Do not attach the `default` policy.
    #[arg(long)]
    no_default_policy: bool,
    /// Token type: `service` or `batch`.
    #[arg(long = "type")]
    token_type: Option<String>,
    /// Print only this field (e.g. `token`).
    #[arg(long)]
    field: Option<String>,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Treat the argument as an accessor rather than a token.
    #[arg(long)]
    accessor: bool,
    /// Print only this field of the token data.
    #[arg(long)]
    field: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Requested extension, e.g. `1h` (the server caps it).
    #[arg(long)]
    increment: Option<String>,
    /// Treat the argument as an accessor rather than a token.
    #[arg(long)]
    accessor: bool,
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Treat the argument as an accessor rather than a token.
    #[arg(long)]
    accessor: bool,
    /// Revoke the token used for this request.
    #[arg(long = "self")]
    revoke_self: bool,
    /// `orphan` revokes only the token and leaves its children as orphans.
    #[arg(long)]
    mode: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct CapabilitiesArgs {
    /// Treat TOKEN as an accessor.
    #[arg(long)]
    accessor: bool,
    /// `[TOKEN] PATH`.
    #[arg(num_args = 1..=2, required = true)]
    args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// `token`, `userpass` or `kubernetes`.
    #[arg(long, default_value = "token")]
    method: String,
    /// Where the auth method is mounted (defaults to the method name).
    #[arg(long)]
    path: Option<String>,
    /// Do not store the token in ~/.arcanum-token.
    #[arg(long)]
    no_store: bool,
    /// Print only the token.
    #[arg(long)]
    token_only: bool,
    /// `TOKEN` for the token method; `username=U [password=P]` for userpass; `role=R [jwt=@FILE]`
    /// for kubernetes.
    args: Vec<String>,
}

/// `k=v` pairs into a JSON map, for `-metadata`.
fn pairs(flag: &str, items: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            bail!("invalid -{flag} {item:?}: format must be key=value");
        };
        map.insert(key.to_owned(), json!(value));
    }
    Ok(map)
}

pub async fn run(command: TokenCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let format = args.format;
    match command {
        TokenCommand::Create(create) => {
            let mut body = Map::new();
            if !create.policies.is_empty() {
                body.insert("policies".into(), json!(create.policies));
            }
            let durations =
                [("ttl", create.ttl), ("explicit_max_ttl", create.explicit_max_ttl), ("period", create.period)];
            for (key, value) in durations {
                if let Some(value) = value {
                    body.insert(key.into(), json!(value));
                }
            }
            if let Some(uses) = create.num_uses {
                body.insert("num_uses".into(), json!(uses));
            }
            if let Some(name) = create.display_name {
                body.insert("display_name".into(), json!(name));
            }
            if let Some(token_type) = create.token_type {
                body.insert("type".into(), json!(token_type));
            }
            if !create.metadata.is_empty() {
                body.insert("meta".into(), Value::Object(pairs("metadata", &create.metadata)?));
            }
            body.insert("renewable".into(), json!(create.renewable));
            body.insert("no_default_policy".into(), json!(create.no_default_policy));
            let path = match (&create.role, create.orphan) {
                (Some(role), _) => format!("auth/token/create/{role}"),
                (None, true) => "auth/token/create-orphan".to_owned(),
                (None, false) => "auth/token/create".to_owned(),
            };
            let secret =
                client.request(Method::PUT, &path, Some(Value::Object(body))).await.context("creating token")?;
            if let Some(field) = &create.field {
                return Ok(print_field(format, &secret, &secret["data"], field));
            }
            print_secret(format, &secret);
            Ok(0)
        }
        TokenCommand::Lookup(lookup) => {
            let secret = match (lookup.token, lookup.accessor) {
                (None, true) => {
                    eprintln!("Not enough arguments: -accessor needs an accessor");
                    return Ok(1);
                }
                (None, false) => client.request(Method::GET, "auth/token/lookup-self", None).await,
                (Some(accessor), true) => {
                    let body = json!({ "accessor": accessor });
                    client.request(Method::PUT, "auth/token/lookup-accessor", Some(body)).await
                }
                (Some(token), false) => {
                    client.request(Method::PUT, "auth/token/lookup", Some(json!({ "token": token }))).await
                }
            }
            .context("looking up token")?;
            if let Some(field) = &lookup.field {
                return Ok(print_field(format, &secret, &secret["data"], field));
            }
            print_secret(format, &secret);
            Ok(0)
        }
        TokenCommand::Renew(renew) => {
            let mut body = Map::new();
            if let Some(increment) = renew.increment {
                body.insert("increment".into(), json!(increment));
            }
            let path = match (renew.token, renew.accessor) {
                (None, true) => {
                    eprintln!("Not enough arguments: -accessor needs an accessor");
                    return Ok(1);
                }
                (None, false) => "auth/token/renew-self",
                (Some(accessor), true) => {
                    body.insert("accessor".into(), json!(accessor));
                    "auth/token/renew-accessor"
                }
                (Some(token), false) => {
                    body.insert("token".into(), json!(token));
                    "auth/token/renew"
                }
            };
            let secret =
                client.request(Method::PUT, path, Some(Value::Object(body))).await.context("renewing token")?;
            print_secret(format, &secret);
            Ok(0)
        }
        TokenCommand::Revoke(revoke) => revoke_token(&client, revoke).await,
        TokenCommand::Capabilities(caps) => {
            let (token, path) = match caps.args.as_slice() {
                [path] => (None, path.clone()),
                [token, path] => (Some(token.clone()), path.clone()),
                _ => {
                    eprintln!("Expected [TOKEN] PATH");
                    return Ok(1);
                }
            };
            let path = path.trim_start_matches('/').to_owned();
            let (endpoint, body) = match (token, caps.accessor) {
                (None, _) => ("sys/capabilities-self", json!({ "paths": [path] })),
                (Some(accessor), true) => {
                    ("sys/capabilities-accessor", json!({ "accessor": accessor, "paths": [path] }))
                }
                (Some(token), false) => ("sys/capabilities", json!({ "token": token, "paths": [path] })),
            };
            let answer = client.request(Method::PUT, endpoint, Some(body)).await.context("listing capabilities")?;
            let data = if answer["data"].is_object() { &answer["data"] } else { &answer };
            let list = if data[&path].is_array() { &data[&path] } else { &data["capabilities"] };
            let mut capabilities: Vec<String> =
                list.as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect();
            capabilities.sort();
            match format {
                Format::Json => print_json(&json!(capabilities)),
                Format::Table => println!("{}", capabilities.join(", ")),
            }
            Ok(0)
        }
    }
}

async fn revoke_token(client: &Client, revoke: RevokeArgs) -> anyhow::Result<u8> {
    let mode = revoke.mode.as_deref().unwrap_or("");
    let (path, body) = match (revoke.revoke_self, revoke.token, revoke.accessor, mode) {
        (true, Some(_), _, _) => {
            eprintln!("Cannot give a token together with -self");
            return Ok(1);
        }
        (true, None, _, "") => ("auth/token/revoke-self", None),
        (false, None, _, _) => {
            eprintln!("Not enough arguments: give a token, an accessor with -accessor, or -self");
            return Ok(1);
        }
        (_, _, _, other) if !matches!(other, "" | "orphan") => {
            eprintln!("Unsupported -mode {other:?} (use \"orphan\" or leave it out)");
            return Ok(1);
        }
        (false, Some(accessor), true, "") => ("auth/token/revoke-accessor", Some(json!({ "accessor": accessor }))),
        (false, Some(token), false, "") => ("auth/token/revoke", Some(json!({ "token": token }))),
        (false, Some(token), false, _) => ("auth/token/revoke-orphan", Some(json!({ "token": token }))),
        _ => {
            eprintln!("-mode=orphan cannot be combined with -self or -accessor");
            return Ok(1);
        }
    };
    client.request(Method::PUT, path, body).await.context("revoking token")?;
    println!("Success! Revoked token (if it existed)");
    Ok(0)
}

pub async fn login(args: &ClientArgs, login: LoginArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let secret = match login.method.as_str() {
        "token" => {
            let token = match login.args.as_slice() {
                [] => rpassword::prompt_password("Token (will be hidden): ").context("reading the token")?,
                [one] => one.strip_prefix("token=").unwrap_or(one).to_owned(),
                _ => {
                    eprintln!("Too many arguments: the token method takes one TOKEN");
                    return Ok(1);
                }
            };
            let token = token.trim().to_owned();
            if token.is_empty() {
                eprintln!("A token must be passed to auth, please view the help for more information.");
                return Ok(1);
            }
            let lookup = client
                .with_token(Some(token.clone()))
                .request(Method::GET, "auth/token/lookup-self", None)
                .await
                .context("looking up the token")?;
            token_secret(&token, &lookup)
        }
        "userpass" => {
            let mut fields = Map::new();
            for arg in &login.args {
                let Some((key, value)) = arg.split_once('=') else {
                    eprintln!("Invalid argument {arg:?}: expected key=value (username=U password=P)");
                    return Ok(1);
                };
                fields.insert(key.to_owned(), json!(value));
            }
            let username = match fields.remove("username").and_then(|v| v.as_str().map(str::to_owned)) {
                Some(username) => username,
                None => match std::env::var("USER") {
                    Ok(user) if !user.is_empty() => user,
                    _ => {
                        eprintln!("Missing username=...");
                        return Ok(1);
                    }
                },
            };
            if !fields.contains_key("password") {
                let password =
                    rpassword::prompt_password("Password (will be hidden): ").context("reading the password")?;
                fields.insert("password".into(), json!(password));
            }
            let mount = login.path.as_deref().unwrap_or("userpass").trim_matches('/');
            client
                .with_token(None)
                .request(Method::PUT, &format!("auth/{mount}/login/{username}"), Some(Value::Object(fields)))
                .await
                .context("logging in")?
        }
        "kubernetes" => {
            let mut fields = Map::new();
            for arg in &login.args {
                let Some((key, value)) = arg.split_once('=') else {
                    eprintln!("Invalid argument {arg:?}: expected key=value (role=R [jwt=@FILE])");
                    return Ok(1);
                };
                fields.insert(key.to_owned(), json!(value));
            }
            if !fields.contains_key("role") {
                eprintln!("Missing role=...");
                return Ok(1);
            }
            // Like vault's CLI: the pod's own service-account token unless jwt= says otherwise.
            let default_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
            let default_file =
                std::env::var("ARCANUM_K8S_SA_DIR").unwrap_or_else(|_| default_dir.to_owned()) + "/token";
            let jwt = match fields.remove("jwt").and_then(|v| v.as_str().map(str::to_owned)) {
                Some(jwt) => match jwt.strip_prefix('@') {
                    Some(file) => {
                        std::fs::read_to_string(file).with_context(|| format!("reading the JWT from {file}"))?
                    }
                    None => jwt,
                },
                None => std::fs::read_to_string(&default_file)
                    .with_context(|| format!("reading the service-account token {default_file} (or pass jwt=@FILE)"))?,
            };
            fields.insert("jwt".into(), json!(jwt.trim()));
            let mount = login.path.as_deref().unwrap_or("kubernetes").trim_matches('/');
            client
                .with_token(None)
                .request(Method::PUT, &format!("auth/{mount}/login"), Some(Value::Object(fields)))
                .await
                .context("logging in")?
        }
        other => {
            eprintln!("Unknown auth method: {other}. Supported methods: token, userpass, kubernetes.");
            return Ok(1);
        }
    };
    let Some(token) = secret["auth"]["client_token"].as_str().filter(|t| !t.is_empty()) else {
        bail!("the server's answer carried no auth.client_token");
    };
    if !login.no_store {
        store_token(token)?;
    }
    if ["ARCANUM_TOKEN", "VAULT_TOKEN"].iter().any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty())) {
        eprintln!(
            "WARNING! The ARCANUM_TOKEN or VAULT_TOKEN environment variable is set! It takes precedence\n\
             over the stored token; unset it or update its value if this is unwanted.\n"
        );
    }
    if login.token_only {
        println!("{token}");
        return Ok(0);
    }
    if args.format == Format::Table {
        if login.no_store {
            println!(
                "Success! You are now authenticated. The token information below is displayed for\n\
                 your reference only; it is not stored. Set ARCANUM_TOKEN to use it.\n"
            );
        } else {
            println!(
                "Success! You are now authenticated. The token information displayed below\n\
                 is already stored in ~/.arcanum-token. You do NOT need to run \"arcanum login\"\n\
                 again. Future requests will automatically use this token.\n"
            );
        }
    }
    print_secret(args.format, &secret);
    Ok(0)
}

/// lookup-self has no `auth` block, so build one, as Vault's token login does.
fn token_secret(token: &str, lookup: &Value) -> Value {
    let data = &lookup["data"];
    json!({
        "request_id": lookup["request_id"],
        "lease_id": "",
        "lease_duration": 0,
        "renewable": false,
        "data": null,
        "warnings": lookup["warnings"],
        "auth": {
            "client_token": token,
            "accessor": data["accessor"],
            "policies": data["policies"],
            "token_policies": data["policies"],
            "identity_policies": data["identity_policies"],
            "metadata": data["meta"],
            "lease_duration": data["ttl"],
            "renewable": data["renewable"],
        },
    })
}

/// Writes `~/.arcanum-token` readable by the owner only. The mode is set on an existing file too,
/// before the token is written, since `mode()` only applies when the file is created.
fn store_token(token: &str) -> anyhow::Result<()> {
    let Some(path) = token_file_path() else {
        bail!("HOME is not set, so the token cannot be stored; use -no-store and ARCANUM_TOKEN");
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    file.write_all(token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
