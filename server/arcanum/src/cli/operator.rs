//! `arcanum operator init|unseal|seal|rekey|rotate` and `arcanum status`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::output::{print_json, print_table};
use super::{Client, ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Initialise the server: create the unseal key shares and the root token.
    Init(InitArgs),
    /// Give one unseal key share (prompted for, without echo, when KEY is omitted).
    Unseal(UnsealArgs),
    /// Seal the server (needs a root token in $ARCANUM_TOKEN or $VAULT_TOKEN).
    Seal,
    /// Re-split the unseal key into new shares.
    Rekey(RekeyArgs),
    /// Add a new barrier key term (needs a root token).
    Rotate,
    /// Generate a new root token from unseal key shares (recovery shares with an auto seal).
    #[command(name = "generate-root")]
    GenerateRoot(GenerateRootArgs),
    /// Copy all stored data, still encrypted, from one storage backend to another (offline).
    Migrate(super::migrate::MigrateArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of key shares to create.
    #[arg(long = "key-shares", default_value_t = 5)]
    key_shares: i64,
    /// Number of shares needed to unseal.
    #[arg(long = "key-threshold", default_value_t = 3)]
    key_threshold: i64,
    /// With an auto seal (`seal "transit"`): number of recovery key shares to create.
    #[arg(long = "recovery-shares", default_value_t = 5)]
    recovery_shares: i64,
    /// With an auto seal: number of recovery shares needed to reopen a sealed node.
    #[arg(long = "recovery-threshold", default_value_t = 3)]
    recovery_threshold: i64,
    /// Comma-separated files with the operators' OpenPGP public keys (binary, as `gpg --export`
    /// writes them, or base64 of that), one per share: each share comes back encrypted.
    #[arg(long = "pgp-keys", value_delimiter = ',')]
    pgp_keys: Vec<std::path::PathBuf>,
    /// With an auto seal: the same for the recovery shares.
    #[arg(long = "recovery-pgp-keys", value_delimiter = ',')]
    recovery_pgp_keys: Vec<std::path::PathBuf>,
    /// A file with the OpenPGP public key the initial root token is encrypted to.
    #[arg(long = "root-token-pgp-key")]
    root_token_pgp_key: Option<std::path::PathBuf>,
    /// Only report whether the server is initialised (exit 0 yes, 2 no).
    #[arg(long)]
    status: bool,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// Forget the shares given so far.
    #[arg(long)]
    reset: bool,
    /// Migrate the seal the config changed (a new `seal "transit"`, or the old one marked
    /// `disabled`): give the current shares with this flag.
    #[arg(long)]
    migrate: bool,
    /// The key share, hex or base64.
    key: Option<String>,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Start a rekey.
    #[arg(long)]
    init: bool,
    /// Cancel the rekey in progress.
    #[arg(long)]
    cancel: bool,
    /// Print the rekey progress.
    #[arg(long)]
    status: bool,
    #[arg(long = "key-shares", default_value_t = 5)]
    key_shares: i64,
    #[arg(long = "key-threshold", default_value_t = 3)]
    key_threshold: i64,
    /// With -init: comma-separated files with OpenPGP public keys, one per new share.
    #[arg(long = "pgp-keys", value_delimiter = ',')]
    pgp_keys: Vec<std::path::PathBuf>,
    /// With -init and -pgp-keys: keep the encrypted new shares at sys/rekey/backup.
    #[arg(long)]
    backup: bool,
    /// The nonce of the rekey in progress (read from the server when omitted).
    #[arg(long)]
    nonce: Option<String>,
    /// A current key share, hex or base64 (prompted for when omitted).
    key: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateRootArgs {
    /// Start a root token generation (prints the nonce and, unless -otp is given, the OTP).
    #[arg(long)]
    init: bool,
    /// With -init: a file with the OpenPGP public key the new token is encrypted to (instead
    /// of an OTP).
    #[arg(long = "pgp-key")]
    pgp_key: Option<std::path::PathBuf>,
    /// The one-time pad to encode the new token with (as long as a token), for -init and -decode.
    #[arg(long)]
    otp: Option<String>,
    /// Cancel the generation in progress.
    #[arg(long)]
    cancel: bool,
    /// Print the generation's progress.
    #[arg(long)]
    status: bool,
    /// Decode an encoded root token with -otp (offline: nothing is sent to the server).
    #[arg(long)]
    decode: Option<String>,
    /// The nonce of the generation in progress (read from the server when omitted).
    #[arg(long)]
    nonce: Option<String>,
    /// A key share, hex or base64 (prompted for when omitted).
    key: Option<String>,
}

async fn generate_root_command(client: &Client, format: Format, generate: GenerateRootArgs) -> anyhow::Result<u8> {
    if let Some(encoded) = &generate.decode {
        let otp = generate.otp.as_deref().context("-decode needs -otp")?;
        let token = arcanum_core::decode_root_token(encoded, otp).map_err(anyhow::Error::msg)?;
        match format {
            Format::Json => print_json(&json!({ "token": token.as_str() })),
            Format::Table => println!("{}", token.as_str()),
        }
        return Ok(0);
    }
    let path = "sys/generate-root/attempt";
    let status = if generate.cancel {
        client.request(Method::DELETE, path, None).await.context("cancelling root generation")?;
        println!("Success! Root token generation canceled (if it was started)");
        return Ok(0);
    } else if generate.init {
        let body = match &generate.pgp_key {
            Some(path) => json!({ "pgp_key": pgp_key_file(path)? }),
            None => json!({ "otp": generate.otp.clone().unwrap_or_default() }),
        };
        client.request(Method::PUT, path, Some(body)).await.context("starting root generation")?
    } else if generate.status {
        client.request(Method::GET, path, None).await.context("reading root generation status")?
    } else {
        let nonce = match generate.nonce {
            Some(nonce) => nonce,
            None => client.request(Method::GET, path, None).await?["nonce"].as_str().unwrap_or_default().to_owned(),
        };
        let key = key_or_prompt(generate.key, "Unseal Key (will be hidden): ")?;
        let body = json!({ "key": key, "nonce": nonce });
        client.request(Method::PUT, "sys/generate-root/update", Some(body)).await.context("giving a key share")?
    };
    match format {
        Format::Json => print_json(&status),
        Format::Table => {
            let text = |key: &str| match &status[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut rows = vec![
                ("Nonce", text("nonce")),
                ("Started", text("started")),
                ("Progress", format!("{}/{}", text("progress"), text("required"))),
                ("Complete", text("complete")),
            ];
            if !text("otp").is_empty() {
                rows.push(("OTP", text("otp")));
            }
            rows.push(("OTP Length", text("otp_length")));
            if !text("encoded_token").is_empty() {
                rows.push(("Encoded Token", text("encoded_token")));
            }
            print_table(&rows);
        }
    }
    Ok(0)
}

pub async fn run(command: OperatorCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = match command {
        // Offline: it talks to storage, not to a server.
        OperatorCommand::Migrate(migrate) => return super::migrate::run(migrate).await,
        _ => Client::new(args)?,
    };
    match command {
        OperatorCommand::Migrate(_) => Ok(0), // returned above
        OperatorCommand::Init(init) => init_command(&client, args.format, init).await,
        OperatorCommand::Unseal(unseal) => {
            let body = if unseal.reset {
                json!({ "reset": true })
            } else {
                json!({ "key": key_or_prompt(unseal.key, "Unseal Key (will be hidden): ")?, "migrate": unseal.migrate })
            };
            let status = client.request(Method::PUT, "sys/unseal", Some(body)).await.context("unsealing")?;
            print_seal_status(args.format, &status);
            Ok(0)
        }
        OperatorCommand::Seal => {
            client.request(Method::PUT, "sys/seal", None).await.context("sealing")?;
            println!("Success! Arcanum is sealed.");
            Ok(0)
        }
        OperatorCommand::Rotate => {
            client.request(Method::PUT, "sys/rotate", None).await.context("rotating the barrier key")?;
            let status = client.request(Method::GET, "sys/key-status", None).await.context("reading key status")?;
            match args.format {
                Format::Json => print_json(&status["data"]),
                Format::Table => {
                    println!("Success! Rotated key\n");
                    print_table(&[
                        ("Key Term", status["data"]["term"].to_string()),
                        ("Install Time", status["data"]["install_time"].as_str().unwrap_or_default().to_owned()),
                        ("Encryption Count", status["data"]["encryptions"].to_string()),
                    ]);
                }
            }
            Ok(0)
        }
        OperatorCommand::Rekey(rekey) => rekey_command(&client, args.format, rekey).await,
        OperatorCommand::GenerateRoot(generate) => generate_root_command(&client, args.format, generate).await,
    }
}

/// `arcanum status`: exit 0 unsealed, 2 sealed, 1 error.
pub async fn status(args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    let mut status = client.request(Method::GET, "sys/seal-status", None).await.context("checking seal status")?;
    let sealed = status["sealed"].as_bool().unwrap_or(true);
    if !sealed {
        // The HA lines, from sys/leader (unauthenticated, answered by standbys themselves).
        let leader = client.request(Method::GET, "sys/leader", None).await.context("reading sys/leader")?;
        if let (Some(status), Some(leader)) = (status.as_object_mut(), leader.as_object()) {
            for key in ["ha_enabled", "is_self", "active_time", "leader_address", "leader_cluster_address"] {
                if let Some(value) = leader.get(key) {
                    status.insert(key.to_owned(), value.clone());
                }
            }
        }
    }
    print_seal_status(args.format, &status);
    Ok(if sealed { 2 } else { 0 })
}

/// An OpenPGP public key file as the server takes it: base64 of the binary key. The file may
/// hold the binary key (`gpg --export KEY > key.gpg`) or base64 of it, as Vault's CLI allows.
fn pgp_key_file(path: &std::path::Path) -> anyhow::Result<String> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading the PGP key {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN PGP") {
        anyhow::bail!(
            "{} is ASCII-armored; give the binary key (gpg --export KEY > key.gpg) or base64 of it",
            path.display()
        );
    }
    let text = String::from_utf8_lossy(&bytes);
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if !compact.is_empty() && base64::engine::general_purpose::STANDARD.decode(&compact).is_ok() {
        return Ok(compact);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn pgp_key_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    paths.iter().map(|path| pgp_key_file(path)).collect()
}

async fn init_command(client: &Client, format: Format, init: InitArgs) -> anyhow::Result<u8> {
    if init.status {
        let status = client.request(Method::GET, "sys/init", None).await.context("checking init status")?;
        let initialized = status["initialized"].as_bool().unwrap_or(false);
        println!("{}", if initialized { "Arcanum is initialized" } else { "Arcanum is not initialized" });
        return Ok(if initialized { 0 } else { 2 });
    }
    // As Vault's CLI: an auto-sealed server gets recovery shares instead of unseal shares.
    let seal = client.request(Method::GET, "sys/seal-status", None).await.context("checking the seal type")?;
    let recovery = seal["recovery_seal"].as_bool().unwrap_or(false);
    let root_token_pgp_key = init.root_token_pgp_key.as_deref().map(pgp_key_file).transpose()?;
    let body = if recovery {
        json!({
            "recovery_shares": init.recovery_shares,
            "recovery_threshold": init.recovery_threshold,
            "recovery_pgp_keys": pgp_key_files(&init.recovery_pgp_keys)?,
            "root_token_pgp_key": root_token_pgp_key,
        })
    } else {
        json!({
            "secret_shares": init.key_shares,
            "secret_threshold": init.key_threshold,
            "pgp_keys": pgp_key_files(&init.pgp_keys)?,
            "root_token_pgp_key": root_token_pgp_key,
        })
    };
    let out = client.request(Method::PUT, "sys/init", Some(body)).await.context("initializing")?;
    let (unseal_counts, recovery_counts) = if recovery {
        ((0, 0), (init.recovery_shares, init.recovery_threshold))
    } else {
        ((init.key_shares, init.key_threshold), (0, 0))
    };
    match format {
        Format::Json => print_json(&json!({
            "unseal_keys_b64": out["keys_base64"],
            "unseal_keys_hex": out["keys"],
            "unseal_shares": unseal_counts.0,
            "unseal_threshold": unseal_counts.1,
            "recovery_keys_b64": out.get("recovery_keys_base64").cloned().unwrap_or(json!([])),
            "recovery_keys_hex": out.get("recovery_keys").cloned().unwrap_or(json!([])),
            "recovery_keys_shares": recovery_counts.0,
            "recovery_keys_threshold": recovery_counts.1,
            "root_token": out["root_token"],
        })),
        Format::Table if recovery => {
            for (index, key) in out["recovery_keys_base64"].as_array().into_iter().flatten().enumerate() {
                println!("Recovery Key {}: {}", index + 1, key.as_str().unwrap_or_default());
            }
            println!("\nInitial Root Token: {}\n", out["root_token"].as_str().unwrap_or_default());
            println!(
                "Success! Arcanum is initialized and unsealed by its seal.\n\n\
                 Recovery key initialized with {} key shares and a key threshold of {}. Please\n\
                 securely distribute the key shares printed above. They reopen a node sealed by hand\n\
                 and authorise rekeying the recovery key; they cannot decrypt data by themselves.",
                init.recovery_shares, init.recovery_threshold
            );
        }
        Format::Table => {
            for (index, key) in out["keys_base64"].as_array().into_iter().flatten().enumerate() {
                println!("Unseal Key {}: {}", index + 1, key.as_str().unwrap_or_default());
            }
            println!("\nInitial Root Token: {}\n", out["root_token"].as_str().unwrap_or_default());
            println!(
                "Arcanum initialized with {} key shares and a key threshold of {}. Please securely\n\
                 distribute the key shares printed above. When the server is re-sealed or restarted,\n\
                 at least {} of these keys are needed to unseal it (arcanum operator unseal).",
                init.key_shares, init.key_threshold, init.key_threshold
            );
        }
    }
    Ok(0)
}

async fn rekey_command(client: &Client, format: Format, rekey: RekeyArgs) -> anyhow::Result<u8> {
    if rekey.cancel {
        client.request(Method::DELETE, "sys/rekey/init", None).await.context("cancelling the rekey")?;
        println!("Success! Canceled rekeying (if it was started)");
        return Ok(0);
    }
    if rekey.init {
        let body = json!({
            "secret_shares": rekey.key_shares,
            "secret_threshold": rekey.key_threshold,
            "pgp_keys": pgp_key_files(&rekey.pgp_keys)?,
            "backup": rekey.backup,
        });
        let status = client.request(Method::PUT, "sys/rekey/init", Some(body)).await.context("starting the rekey")?;
        print_rekey_status(format, &status);
        return Ok(0);
    }
    if rekey.status {
        let status = client.request(Method::GET, "sys/rekey/init", None).await.context("reading rekey status")?;
        print_rekey_status(format, &status);
        return Ok(0);
    }
    let nonce = match rekey.nonce {
        Some(nonce) => nonce,
        None => {
            let status = client.request(Method::GET, "sys/rekey/init", None).await.context("reading rekey status")?;
            if !status["started"].as_bool().unwrap_or(false) {
                anyhow::bail!("no rekey is in progress; start one with `arcanum operator rekey -init`");
            }
            status["nonce"].as_str().unwrap_or_default().to_owned()
        }
    };
    let key = key_or_prompt(rekey.key, "Rekey operation nonce accepted. Unseal Key (will be hidden): ")?;
    let out = client
        .request(Method::PUT, "sys/rekey/update", Some(json!({ "key": key, "nonce": nonce })))
        .await
        .context("submitting the rekey share")?;
    if out["complete"].as_bool().unwrap_or(false) {
        match format {
            Format::Json => print_json(&out),
            Format::Table => {
                for (index, key) in out["keys_base64"].as_array().into_iter().flatten().enumerate() {
                    println!("Key {}: {}", index + 1, key.as_str().unwrap_or_default());
                }
                println!("\nOperation nonce: {nonce}\n\nArcanum unseal key rekeyed; the old shares no longer work.");
            }
        }
    } else {
        print_rekey_status(format, &out);
    }
    Ok(0)
}

fn key_or_prompt(key: Option<String>, prompt: &str) -> anyhow::Result<String> {
    match key {
        Some(key) if key != "-" => Ok(key),
        _ => rpassword::prompt_password(prompt).context("reading the key from the terminal"),
    }
}

fn print_seal_status(format: Format, status: &Value) {
    if format == Format::Json {
        return print_json(status);
    }
    let text = |key: &str| match &status[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let recovery = status["recovery_seal"].as_bool().unwrap_or(false);
    let mut rows = vec![("Seal Type", text("type"))];
    if recovery {
        rows.push(("Recovery Seal Type", text("recovery_seal_type")));
    }
    rows.extend([
        ("Initialized", text("initialized")),
        ("Sealed", text("sealed")),
        (if recovery { "Total Recovery Shares" } else { "Total Shares" }, text("n")),
        ("Threshold", text("t")),
    ]);
    if status["migration"].as_bool().unwrap_or(false) {
        rows.push(("Seal Migration in Progress", "true".into()));
    }
    if status["sealed"].as_bool().unwrap_or(true) {
        rows.push(("Unseal Progress", format!("{}/{}", text("progress"), text("t"))));
        let nonce = text("nonce");
        rows.push(("Unseal Nonce", if nonce.is_empty() { "n/a".into() } else { nonce }));
        if status["seal_error"].is_string() {
            rows.push(("Seal Error", text("seal_error")));
        }
    }
    rows.push(("Version", text("version")));
    rows.push(("Storage Type", text("storage_type")));
    if !status["sealed"].as_bool().unwrap_or(true) {
        rows.push(("Cluster Name", text("cluster_name")));
        rows.push(("Cluster ID", text("cluster_id")));
    }
    let ha_enabled = status["ha_enabled"].as_bool().unwrap_or(false);
    rows.push(("HA Enabled", ha_enabled.to_string()));
    if ha_enabled {
        rows.push(("HA Cluster", text("leader_cluster_address")));
        if status["is_self"].as_bool().unwrap_or(false) {
            rows.push(("HA Mode", "active".into()));
            rows.push(("Active Since", text("active_time")));
        } else {
            rows.push(("HA Mode", "standby".into()));
            rows.push(("Active Node Address", text("leader_address")));
        }
    }
    print_table(&rows);
}

fn print_rekey_status(format: Format, status: &Value) {
    if format == Format::Json {
        return print_json(status);
    }
    let text = |key: &str| match &status[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    print_table(&[
        ("Nonce", text("nonce")),
        ("Started", text("started")),
        ("Rekey Progress", format!("{}/{}", text("progress"), text("required"))),
        ("New Shares", text("n")),
        ("New Threshold", text("t")),
    ]);
}
