//! `arcanum operator migrate -config=FILE`, like Vault's: copies every stored entry, still
//! encrypted, from `storage_source` to `storage_destination` while no server runs on them, then
//! reads both back and checks that the destination holds exactly what the source does.
//!
//! The source carries a lock for the length of the copy (`core/migration`, Vault's key): a
//! second migration refuses to start, and so does a server on that storage, until the copy
//! ends or `-reset` clears the lock an interrupted run left. A sled source is refused while a
//! server holds it (sled locks its directory), and an etcd source while an HA node holds its
//! lock (an active node writes on while the copy runs).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use arcanum_config::Storage;
use arcanum_storage::Backend;
use clap::Args;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::serve;

/// Vault's key for the migration lock on the source.
pub const MIGRATION_LOCK: &str = "core/migration";
/// Keys that describe one server's run on one storage, not its data (Vault skips them too).
const NOT_COPIED: &[&str] = &[MIGRATION_LOCK, "core/lock"];

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The migration config: a storage_source and a storage_destination block.
    #[arg(long)]
    config: PathBuf,
    /// Copy only the keys at or after this one (to resume an interrupted migration).
    #[arg(long)]
    start: Option<String>,
    /// Remove the migration lock an interrupted run left on the source, then stop.
    #[arg(long)]
    reset: bool,
    /// Copy into a destination that already holds entries (those with the same keys are overwritten).
    #[arg(long)]
    force: bool,
    /// Entries copied at once.
    #[arg(long = "max-parallel", default_value_t = 10)]
    max_parallel: usize,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<u8> {
    let config = arcanum_config::load_migration(&args.config)?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if let Storage::Sled { path } = &config.source {
        // Opening sled creates its directory: a mistyped source path must not look like an empty store.
        if !path.exists() {
            bail!("storage_source.sled.path: {} does not exist", path.display());
        }
    }
    let source = open("storage_source", &config.source).await?;
    if args.reset {
        source.delete(MIGRATION_LOCK).await.context("removing the migration lock from the source")?;
        println!("Success! The migration lock on the source ({}) is gone.", describe(&config.source));
        return Ok(0);
    }
    refuse_while_a_node_is_active(&config.source).await?;
    if let Some(lock) = source.get(MIGRATION_LOCK).await.context("reading the source")? {
        bail!(
            "a migration from this source is already running, or was interrupted ({}); \
             if no other migration runs, clear the lock with -reset",
            String::from_utf8_lossy(&lock)
        );
    }
    if source.list("").await.context("listing the source")?.is_empty() {
        bail!(
            "the source ({}) holds no entries: nothing to migrate (check its path or address)",
            describe(&config.source)
        );
    }
    let destination = open("storage_destination", &config.destination).await?;
    let existing = destination.list("").await.context("listing the destination")?;
    if !existing.is_empty() && !args.force {
        bail!(
            "the destination ({}) already holds entries ({} at the top level); \
             migrate into an empty store, or pass -force to overwrite entries with the same keys",
            describe(&config.destination),
            existing.len()
        );
    }

    let started =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let lock = format!("{{\"start\":\"{started}\"}}");
    source.put(MIGRATION_LOCK, lock.into_bytes()).await.context("locking the source")?;
    let outcome = copy_and_verify(&source, &destination, &args).await;
    let unlocked = source.delete(MIGRATION_LOCK).await;
    destination.flush().await.context("flushing the destination")?;
    source.flush().await.context("flushing the source")?;
    let (copied, bytes) = outcome?;
    unlocked.context("removing the migration lock from the source")?;
    println!(
        "Success! All of the keys have been migrated: {copied} entries ({bytes} bytes) copied from {} to {} \
         and verified.",
        describe(&config.source),
        describe(&config.destination)
    );
    Ok(0)
}

async fn open(block: &str, storage: &Storage) -> anyhow::Result<Arc<dyn Backend>> {
    if matches!(storage, Storage::Inmem) {
        bail!("{block}: the inmem storage lives only inside one server process; there is nothing to migrate");
    }
    // No read cache: the verification must read what the store holds.
    serve::open_backend(storage, 0).await.with_context(|| match storage {
        Storage::Sled { .. } => format!("{block}: is a server running on it? stop it first"),
        _ => format!("{block}: opening {}", describe(storage)),
    })
}

/// On etcd the HA lock tells whether an HA node is active on the store; its advertisement says
/// which. (A server without `ha_enabled` takes no lock, so nothing here can see it.)
async fn refuse_while_a_node_is_active(source: &Storage) -> anyhow::Result<()> {
    let Storage::Etcd(etcd) = source else { return Ok(()) };
    let lock_view = Storage::Etcd(Box::new(arcanum_config::EtcdStorage { ha_enabled: true, ..(**etcd).clone() }));
    let (_, ha) = serve::open_storage(&lock_view, 0).await.context("storage_source: opening etcd")?;
    let Some(ha) = ha else { return Ok(()) };
    let holder = ha.holder().await.context("storage_source: reading the HA lock")?;
    if let Some(holder) = holder.advertisement {
        let node = serde_json::from_slice::<arcanum_core::ha::Advertisement>(&holder)
            .map_or_else(|_| "a node whose advertisement is unreadable".to_owned(), |holder| holder.api_addr);
        bail!(
            "an Arcanum node is active on the source ({}): {node} holds its HA lock; \
             stop every node on this storage before migrating it",
            describe(source)
        );
    }
    Ok(())
}

fn describe(storage: &Storage) -> String {
    match storage {
        Storage::Inmem => "inmem".into(),
        Storage::Sled { path } => format!("sled at {}", path.display()),
        Storage::Etcd(etcd) => format!("etcd at {} under {}", etcd.address.join(","), etcd.path),
    }
}

/// Every key below `prefix`, depth first and in order, through the backend's listing.
async fn walk(backend: &dyn Backend, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut folders = vec![prefix.to_owned()];
    while let Some(folder) = folders.pop() {
        let children = backend.list(&folder).await.with_context(|| format!("listing {folder:?}"))?;
        // Reversed onto the stack, so that folders are visited in order.
        for child in children.iter().rev() {
            let full = format!("{folder}{child}");
            if child.ends_with('/') {
                folders.push(full.clone());
            }
        }
        for child in children {
            // A key may end in '/': it is listed as a folder and is a key in its own right.
            keys.push(format!("{folder}{child}"));
        }
    }
    keys.sort();
    Ok(keys)
}

/// Copies every entry at or after `-start`, then reads both sides back and compares.
async fn copy_and_verify(
    source: &Arc<dyn Backend>,
    destination: &Arc<dyn Backend>,
    args: &MigrateArgs,
) -> anyhow::Result<(u64, u64)> {
    let start = args.start.clone().unwrap_or_default();
    let keys: Vec<String> = walk(source.as_ref(), "")
        .await?
        .into_iter()
        .filter(|key| key.as_str() >= start.as_str() && !NOT_COPIED.contains(&key.as_str()))
        .collect();
    let permits = Arc::new(Semaphore::new(args.max_parallel.max(1)));
    let mut copies = JoinSet::new();
    for key in keys.clone() {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (source, destination) = (Arc::clone(source), Arc::clone(destination));
        copies.spawn(async move {
            let _permit = permit;
            // A folder name listed for a key that does not exist itself is no entry.
            let Some(value) = source.get(&key).await.with_context(|| format!("reading {key:?} from the source"))?
            else {
                return anyhow::Ok(None);
            };
            let len = value.len() as u64;
            destination.put(&key, value).await.with_context(|| format!("writing {key:?} to the destination"))?;
            Ok(Some(len))
        });
    }
    let (mut copied, mut bytes) = (0u64, 0u64);
    while let Some(result) = copies.join_next().await {
        if let Some(len) = result.context("a copy task failed")?? {
            copied += 1;
            bytes += len;
        }
    }

    let mut verified = 0u64;
    for key in &keys {
        let expected = source.get(key).await.with_context(|| format!("reading {key:?} from the source again"))?;
        let Some(expected) = expected else { continue };
        let actual = destination.get(key).await.with_context(|| format!("reading {key:?} from the destination"))?;
        if actual.as_deref() != Some(expected.as_slice()) {
            bail!("verification failed: {key:?} differs between source and destination; the migration is incomplete");
        }
        verified += 1;
    }
    if verified != copied {
        bail!("verification failed: {copied} entries copied but {verified} found on both sides");
    }
    // Into an empty store, the destination must now hold exactly what was copied.
    if !args.force && args.start.is_none() {
        let mut entries = 0u64;
        for key in walk(destination.as_ref(), "").await? {
            if !NOT_COPIED.contains(&key.as_str()) && destination.get(&key).await?.is_some() {
                entries += 1;
            }
        }
        if entries != copied {
            bail!("verification failed: the destination holds {entries} entries, {copied} were copied");
        }
    }
    Ok((copied, bytes))
}
