//! `arcanum server`: from a config file, or `-dev` (in memory, initialised and unsealed).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use arcanum_config::{Config, Listener, Storage};
use clap::Args;
use zeroize::Zeroizing;

use crate::serve;
use arcanum_contract::mount::{MountEntry, MountTableKind};
use arcanum_core::{Core, CoreConfig, SealConfig};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server config file (HCL, or JSON when it ends in .json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Development mode: in-memory storage, initialised with one share and unsealed.
    #[arg(long)]
    dev: bool,
    /// Dev mode: use this value as the root token.
    #[arg(long = "dev-root-token-id", env = "ARCANUM_DEV_ROOT_TOKEN_ID")]
    dev_root_token_id: Option<String>,
    /// Dev mode: the address to listen on.
    #[arg(long = "dev-listen-address", default_value = "127.0.0.1:8200")]
    dev_listen_address: String,
    /// Log level: trace, debug, info, warn, error (overrides the config's log_level).
    #[arg(long = "log-level")]
    log_level: Option<String>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<u8> {
    let config = match (&args.config, args.dev) {
        (Some(path), false) => {
            let mut config = arcanum_config::load(path)?;
            config.apply_env(&path.display().to_string(), |name| std::env::var(name).ok())?;
            config
        }
        (None, true) => dev_config(&args),
        (Some(_), true) => anyhow::bail!("-dev and -config cannot be used together"),
        (None, false) => {
            anyhow::bail!("a config file is required: arcanum server -config=FILE (or -dev)")
        }
    };
    init_logging(args.log_level.as_deref().or(config.log_level.map(|l| l.as_filter())))?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.listeners.is_empty() {
        anyhow::bail!("the config has no listener \"tcp\" block");
    }
    // Before any key exists in memory.
    let hardening = crate::hardening::apply(config.disable_mlock);

    let cache_entries = match (config.disable_cache, config.cache_size) {
        (true, _) => 0,
        (false, Some(entries)) => entries as usize,
        (false, None) => arcanum_storage::etcd::DEFAULT_CACHE_ENTRIES,
    };
    let listeners = serve::bind(&config.listeners)?;
    // Before storage: a seal that is missing a setting is a config error, found at once.
    let (transit_seal, old_seal) = transit_seals(&config).await?;
    let (backend, ha_backend) = serve::open_storage(&config.storage, cache_entries).await?;
    if let Some(lock) = backend.get(super::migrate::MIGRATION_LOCK).await.context("reading storage")? {
        anyhow::bail!(
            "a migration from this storage is running or was interrupted ({}): start the server once it is \
             done, or clear the lock with `arcanum operator migrate -reset`",
            String::from_utf8_lossy(&lock)
        );
    }
    let core_config = CoreConfig {
        raw_storage_endpoint: config.raw_storage_endpoint,
        unauthenticated_metrics_access: config.unauthenticated_metrics_access,
        leases: lease_settings(&config),
        user_lockout: lockout_config(&config),
        ..CoreConfig::default()
    };
    let mut core = Core::new(backend, core_config, crate::catalog::catalog()).await.context("opening the core")?;
    if let (Some(ha_backend), Storage::Etcd(etcd)) = (ha_backend, &config.storage) {
        core = core.with_ha(ha_backend, ha_config(&config, etcd, &listeners)?);
    }
    if let Some(seal) = &transit_seal {
        core = core.with_auto_seal(Arc::clone(seal) as Arc<dyn arcanum_core::seal::AutoSeal>);
    }
    if let Some(seal) = &old_seal {
        core = core.with_old_seal(Arc::clone(seal) as Arc<dyn arcanum_core::seal::AutoSeal>);
    }
    if let Err(mismatch) = core.prepare_seal().await {
        anyhow::bail!("{mismatch}");
    }
    let core = Arc::new(core);
    core.start_ha();
    if let Some(seal) = transit_seal {
        seal.keep_token_renewed();
        start_auto_unseal(Arc::clone(&core));
    }
    if let Some(registration) = &config.service_registration {
        crate::service_registration::start(Arc::clone(&core), registration)?;
    }

    println!("==> Arcanum server configuration:\n");
    println!("{:>20}: {}", "Storage", describe_storage(&config.storage));
    for (index, listener) in listeners.iter().enumerate() {
        println!("{:>20}: {}", format!("Listener {}", index + 1), listener.url());
    }
    println!("{:>20}: {}", "Mlock", if hardening.memory_locked { "locked" } else { "not locked" });
    println!("{:>20}: {}", "Core dumps", if hardening.core_dumps_disabled { "disabled" } else { "possible" });
    println!("{:>20}: {}", "Version", env!("CARGO_PKG_VERSION"));
    if args.dev {
        let (unseal_key, root_token) = dev_initialise(&core, args.dev_root_token_id.clone()).await?;
        let url = listeners.first().map(|l| l.url()).unwrap_or_default();
        println!(
            "\nWARNING! dev mode is enabled! In this mode, Arcanum runs entirely in-memory\n\
             and starts unsealed with a single unseal key. Never use it in production.\n\n\
             You may need to set the following environment variables:\n\n    \
             $ export VAULT_ADDR='{url}'\n\n\
             Unseal Key: {}\nRoot Token: {}\n",
            unseal_key.as_str(),
            root_token.as_str()
        );
    }
    // One machine-readable line per listener, for scripts and tests.
    for listener in &listeners {
        println!("arcanum: listening on {}", listener.url());
    }
    println!("\n==> Arcanum server started! Log data will stream in below:\n");
    serve::serve(core, listeners, Arc::new(forwarder(&config)?), serve::shutdown_signal()).await?;
    Ok(0)
}

/// The seals of the config's `seal "transit"` blocks: the enabled one, and the one marked
/// `disabled` (the seal a migration moves away from).
type Seals = (Option<Arc<crate::transit_seal::TransitSeal>>, Option<Arc<crate::transit_seal::TransitSeal>>);

async fn transit_seals(config: &Config) -> anyhow::Result<Seals> {
    use arcanum_config::SealKind;
    let mut seals: Seals = (None, None);
    for block in &config.seals {
        let SealKind::Transit(transit) = &block.kind else { continue };
        let settings = crate::transit_seal::Settings::resolve(transit, |name| std::env::var(name).ok())?;
        tracing::info!(
            address = %settings.address,
            mount_path = %settings.mount_path,
            key_name = %settings.key_name,
            disabled = block.disabled,
            "seal \"transit\" configured"
        );
        let seal = Some(Arc::new(crate::transit_seal::TransitSeal::new(settings).await?));
        if block.disabled {
            seals.1 = seal;
        } else {
            seals.0 = seal;
        }
    }
    Ok(seals)
}

/// How often a sealed node with an auto seal asks the seal again (Vault's 5 s).
const AUTO_UNSEAL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Unseals with the auto seal at start, and again whenever an attempt failed (the transit
/// server was down, the token was refused): every [`AUTO_UNSEAL_RETRY`] while sealed.
fn start_auto_unseal(core: Arc<Core>) {
    tokio::spawn(async move {
        loop {
            match core.auto_unseal().await {
                Ok(true) => tracing::info!("unsealed by the seal"),
                Ok(false) => {}
                Err(err) => tracing::warn!(
                    error = %err,
                    "auto-unseal failed; the server stays sealed and tries again in {}s",
                    AUTO_UNSEAL_RETRY.as_secs()
                ),
            }
            tokio::time::sleep(AUTO_UNSEAL_RETRY).await;
        }
    });
}

fn dev_config(args: &ServerArgs) -> Config {
    Config {
        storage: Storage::Inmem,
        listeners: vec![Listener {
            address: args.dev_listen_address.clone(),
            tls: None,
            max_request_size: Some(arcanum_config::DEFAULT_MAX_REQUEST_SIZE),
            connections: arcanum_config::ConnectionLimits::default(),
        }],
        ..Config::dev_defaults()
    }
}

async fn dev_initialise(
    core: &Core,
    root_token_id: Option<String>,
) -> anyhow::Result<(Zeroizing<String>, Zeroizing<String>)> {
    let config = SealConfig::new(1, 1).map_err(|err| anyhow::anyhow!("{err}"))?;
    let output = core
        .initialize_with_root_token(config, root_token_id.map(Zeroizing::new))
        .await
        .map_err(|err| anyhow::anyhow!("initialising the dev server: {err}"))?;
    let share = output.shares.first().context("dev init returned no share")?;
    let unseal_key =
        Zeroizing::new(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, share.as_slice()));
    core.submit_unseal_share(share.clone()).await.map_err(|err| anyhow::anyhow!("unsealing the dev server: {err}"))?;
    // Like `vault server -dev`: a KV version 2 engine at secret/.
    let mut secret = MountEntry::new(MountTableKind::Secret, "secret/", "kv", "key/value secret storage");
    secret.options.insert("version".into(), "2".into());
    let unsealed = core.unsealed().map_err(|err| anyhow::anyhow!("dev server did not unseal: {err}"))?;
    unsealed.mounts.enable(secret).await.map_err(|err| anyhow::anyhow!("mounting secret/: {err}"))?;
    Ok((unseal_key, output.root_token))
}

/// How a standby passes requests on: forwarded to the active node, trusting the listeners'
/// certificates as well as the public roots, or with `disable_clustering` Vault's 307.
fn forwarder(config: &Config) -> anyhow::Result<crate::forward::Forwarder> {
    if config.disable_clustering {
        return Ok(crate::forward::Forwarder::redirect_only());
    }
    let mut roots = Vec::new();
    for tls in config.listeners.iter().filter_map(|listener| listener.tls.as_ref()) {
        roots.push(
            std::fs::read(&tls.cert_file)
                .with_context(|| format!("reading tls_cert_file {}", tls.cert_file.display()))?,
        );
    }
    crate::forward::Forwarder::new(&roots).context("building the client that forwards standby requests")
}

/// This node's HA identity: `api_addr` (else the first listener's URL), `cluster_addr` (else
/// the API address's host, port + 1, https, as Vault derives it), the lock TTL.
fn ha_config(
    config: &Config,
    etcd: &arcanum_config::EtcdStorage,
    listeners: &[serve::BoundListener],
) -> anyhow::Result<arcanum_core::ha::HaConfig> {
    let api_addr = match (&config.api_addr, listeners.first()) {
        (Some(addr), _) => addr.clone(),
        (None, Some(listener)) => {
            tracing::warn!("api_addr is not set: other nodes will send clients to {}", listener.url());
            listener.url()
        }
        (None, None) => anyhow::bail!("HA needs api_addr (or a listener)"),
    };
    let cluster_addr = config.cluster_addr.clone().unwrap_or_else(|| {
        let host_port = api_addr.split_once("://").map_or(api_addr.as_str(), |(_, rest)| rest);
        match host_port
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.trim_end_matches('/').parse::<u16>().ok()?)))
        {
            Some((host, port)) => format!("https://{host}:{}", port.saturating_add(1)),
            None => format!("https://{host_port}"),
        }
    });
    Ok(arcanum_core::ha::HaConfig {
        node_id: uuid::Uuid::new_v4().to_string(),
        hostname: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        api_addr,
        cluster_addr,
        lock_ttl: etcd.lock_timeout,
        // A standby that cannot forward (Vault's disable_clustering) serves nothing itself.
        standby_reads: !config.disable_standby_reads && !config.disable_clustering,
    })
}

/// The `user_lockout` stanzas over Vault's defaults (`all`, then each method's own);
/// `VAULT_DISABLE_USER_LOCKOUT=true` turns lockout off everywhere, as in Vault.
fn lockout_config(config: &Config) -> arcanum_core::lockout::LockoutConfig {
    use arcanum_core::lockout::LockoutSettings;
    let overlay = |base: LockoutSettings, stanza: &arcanum_config::UserLockout| {
        base.overlaid(
            stanza.lockout_threshold,
            stanza.lockout_duration,
            stanza.lockout_counter_reset,
            stanza.disable_lockout,
        )
    };
    let disabled_by_env = std::env::var("VAULT_DISABLE_USER_LOCKOUT")
        .is_ok_and(|value| matches!(value.trim(), "1" | "t" | "T" | "true" | "True" | "TRUE"));
    let all = config
        .user_lockout
        .get("all")
        .map_or_else(LockoutSettings::default, |all| overlay(LockoutSettings::default(), all));
    let mut by_method = std::collections::BTreeMap::new();
    for method in ["all", "userpass", "approle", "ldap"] {
        let mut settings = config.user_lockout.get(method).map_or(all, |stanza| overlay(all, stanza));
        settings.disabled |= disabled_by_env;
        by_method.insert(method.to_owned(), settings);
    }
    arcanum_core::lockout::LockoutConfig { by_method }
}

fn describe_storage(storage: &Storage) -> String {
    match storage {
        Storage::Inmem => "inmem".into(),
        Storage::Sled { path } => format!("sled ({})", path.display()),
        Storage::Etcd(etcd) => format!(
            "etcd ({}, prefix {}{})",
            etcd.address.join(","),
            etcd.path,
            if etcd.ha_enabled { ", HA enabled" } else { "" }
        ),
    }
}

/// Every crate of ours (as `tracing` names targets): they log at the chosen level.
const OUR_CRATES: &[&str] = &[
    "arcanum",
    "arcanum_audit",
    "arcanum_config",
    "arcanum_contract",
    "arcanum_core",
    "arcanum_crypto",
    "arcanum_engines",
    "arcanum_metrics",
    "arcanum_policy",
    "arcanum_quotas",
    "arcanum_storage",
];

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let level = level.unwrap_or("info");
    let level = arcanum_config::LogLevel::parse(level)
        .with_context(|| format!("invalid log level {level:?}: expected trace, debug, info, warn or error"))?;
    // Only our own crates log at the chosen level; dependencies stay at warn so that a
    // debug session does not dump request internals from hyper or rustls.
    let directives: Vec<String> = OUR_CRATES.iter().map(|krate| format!("{krate}={}", level.as_filter())).collect();
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,{}", directives.join(",")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|err| anyhow::anyhow!("initialising logging: {err}"))
}

/// The expiration manager's settings: Vault's TTL keys plus Arcanum's revocation retry policy.
fn lease_settings(config: &arcanum_config::Config) -> arcanum_core::expiration::LeaseSettings {
    let defaults = arcanum_core::expiration::LeaseSettings::default();
    let max_ttl = config.max_lease_ttl.map_or(defaults.max_ttl, |ttl| ttl.as_secs());
    arcanum_core::expiration::LeaseSettings {
        max_attempts: config.lease_revocation_max_attempts.unwrap_or(defaults.max_attempts),
        max_backoff: config.lease_revocation_max_backoff.unwrap_or(defaults.max_backoff),
        concurrency: config.lease_revocation_concurrency.map_or(defaults.concurrency, |n| n as usize),
        default_ttl: config.default_lease_ttl.map_or(max_ttl, |ttl| ttl.as_secs()),
        max_ttl,
    }
}
