//! Standby reads: an HA standby serves KV reads itself from a read-only copy of the services,
//! kept current by following every change the active node makes in storage.
//!
//! A standby that follows the store (see [`arcanum_storage::HaBackend::follow`]) opens the same
//! services an active node does — mounts, policies, tokens, audit devices, quotas — over a
//! barrier whose writes storage refuses (a standby is fenced off), and starts no reaper and no
//! periodic duty. Each followed change either drops a token from the token cache or, when it
//! touches what the services were built from (the keyring, the mount, auth and audit tables,
//! policies, quotas), reopens them all (changed tokens leave the old copy first, and the old
//! copy is not served from meanwhile). Each copy carries the storage revision it reflects
//! ([`StandbyReads::snapshot`]); a client that wrote through the active node and hands over that node's
//! revision (`X-Vault-Index`) is answered only once the standby has followed that far, and a
//! write this standby forwarded is answered only then too, so its client reads its own write.
//!
//! A standby's answers are *eventually* consistent, as Vault's performance standbys' are: a
//! change made through another node is seen once the follow brings it (milliseconds on a
//! healthy cluster). A standby that cannot follow (etcd unreachable, the watch cancelled)
//! drops its copy and forwards everything until it follows again.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use arcanum_contract::logical::ApiError;
use arcanum_storage::Changes;

use crate::ha::{lock, Ha, Role};
use crate::{barrier, Core, Unsealed};

/// How long a standby that could not follow the store waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);
/// Followed changes waiting to be applied to the copy.
const QUEUE: usize = 256;

/// A standby's read-only copy of the services and how current it is.
#[derive(Debug)]
pub struct StandbyReads {
    /// The copy and the storage revision it reflects, taken together.
    current: RwLock<Option<(Arc<Unsealed>, i64)>>,
    /// The revision of the last copy installed; 0 once there is none.
    applied: tokio::sync::watch::Sender<i64>,
}

impl Default for StandbyReads {
    fn default() -> Self {
        StandbyReads { current: RwLock::new(None), applied: tokio::sync::watch::Sender::new(0) }
    }
}

impl StandbyReads {
    /// The copy to serve a read from and the storage revision it reflects; `None` when this
    /// node has none (active, sealed, not following, or reopening it).
    pub fn snapshot(&self) -> Option<(Arc<Unsealed>, i64)> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// [`StandbyReads::snapshot`] without the revision.
    pub fn view(&self) -> Option<Arc<Unsealed>> {
        self.snapshot().map(|(view, _)| view)
    }

    /// Waits until the copy reflects `revision`, at most `within`; whether it does.
    pub async fn wait_for(&self, revision: i64, within: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(within, applied.wait_for(|&applied| applied >= revision))
            .await
            .is_ok_and(|reached| reached.is_ok())
    }

    fn install(&self, view: Arc<Unsealed>, revision: i64) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((view, revision));
        self.applied.send_replace(revision);
    }

    /// No copy to serve from until the next [`StandbyReads::install`]: everything is forwarded.
    fn suspend(&self) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    fn clear(&self) {
        self.suspend();
        self.applied.send_replace(0);
    }
}

/// Whether a change to this storage key changes what the services were built from (and not only
/// data they read per request): the copy is reopened.
fn reshapes_services(key: &str) -> bool {
    match key.strip_prefix("core/") {
        // The audit chain's head and the barrier's counters change with every stop and
        // rotation check; nothing a standby built depends on them.
        Some(rest) => !rest.starts_with("audit-head/") && rest != "barrier-stats",
        None => key.starts_with("sys/policy/") || key.starts_with("sys/quotas/") || key == "sys/token/salt",
    }
}

/// Whether this node is an unsealed standby now.
fn is_standby(ha: &Ha) -> bool {
    matches!(ha.role(), Role::Standby { .. })
}

/// Keeps a standby's copy of the services current while it is an unsealed standby; drops it
/// when the node takes over or is sealed. Ends once it finds the core gone.
pub(crate) async fn follow_for_reads(core: Weak<Core>, ha: Arc<Ha>) {
    let mut leadership = ha.watch_leadership();
    loop {
        while !is_standby(&ha) {
            if leadership.changed().await.is_err() || core.strong_count() == 0 {
                return;
            }
        }
        let outcome = follow_while_standby(&core, &ha, &mut leadership).await;
        ha.reads.clear();
        match outcome {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(error = %err, "a standby cannot follow storage; forwarding every request until it can");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    changed = leadership.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

/// Follows storage until this node is no longer a standby (`Ok(true)`), the core is gone
/// (`Ok(false)`), or following fails.
async fn follow_while_standby(
    core: &Weak<Core>,
    ha: &Arc<Ha>,
    leadership: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<bool, ApiError> {
    let (sender, mut changes) = tokio::sync::mpsc::channel::<Changes>(QUEUE);
    let backend = Arc::clone(&ha.backend);
    // A task of its own, so that the storage cache keeps following while the copy reopens.
    let mut follow = AbortOnDrop(tokio::spawn(async move { backend.follow(sender).await }));
    loop {
        tokio::select! {
            followed = &mut follow.0 => {
                match followed {
                    Ok(followed) => followed.map_err(|err| barrier::api_error("following storage", err.into()))?,
                    Err(_) => return Err(ApiError::internal()),
                }
                return Ok(true);
            }
            changed = leadership.changed() => {
                if changed.is_err() {
                    return Ok(false);
                }
                if !is_standby(ha) {
                    return Ok(true);
                }
            }
            Some(mut batch) = changes.recv() => {
                // What else is waiting comes in with it: a burst of policy writes reopens the
                // services once, not once per write.
                while let Ok(more) = changes.try_recv() {
                    batch.restart |= more.restart;
                    batch.revision = batch.revision.max(more.revision);
                    batch.keys.extend(more.keys);
                }
                let Some(core) = core.upgrade() else { return Ok(false) };
                apply(&core, ha, batch).await?;
            }
        }
    }
}

/// Ends the follow task with the loop that reads its changes.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), arcanum_storage::StorageError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Brings the copy up to `batch`: forgets the changed tokens, and when the copy's shape
/// changed, stops serving from it and opens a new one; then records the revision.
async fn apply(core: &Core, ha: &Ha, batch: Changes) -> Result<(), ApiError> {
    let current = ha.reads.view();
    if let Some(view) = &current {
        for key in &batch.keys {
            // What the engines keep of what they parsed (KV v2 metadata) goes stale with it.
            view.barrier.changed_elsewhere(key);
            if let Some(id_hash) = key.strip_prefix(crate::token::ID_PREFIX) {
                view.tokens.forget(id_hash);
            }
        }
    }
    let reopen = batch.restart || current.is_none() || batch.keys.iter().any(|key| reshapes_services(key));
    let view = match current {
        Some(view) if !reopen => view,
        _ => {
            // A changed policy or mount table must never be served from the old copy: until
            // the new one is open, everything goes to the active node.
            ha.reads.suspend();
            Arc::new(open_view(core, ha).await?)
        }
    };
    ha.reads.install(view, batch.revision);
    Ok(())
}

/// Opens the read-only services with the root key this standby holds.
async fn open_view(core: &Core, ha: &Ha) -> Result<Unsealed, ApiError> {
    let root_key = lock(&ha.root_key).clone().ok_or_else(ApiError::sealed)?;
    let keyring = core.open_keyring_with_root(&root_key).await?;
    let barrier = barrier::Barrier::open(Arc::clone(&core.backend), keyring, core.config.rotate_after)
        .await
        .map_err(|err| barrier::api_error("opening the barrier for standby reads", err))?;
    Unsealed::open_standby_copy(barrier, core.config.leases, Arc::clone(&core.catalog)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_services_are_built_from_reopens_them() {
        for key in
            ["core/keyring", "core/mounts", "core/auth", "core/audit", "sys/policy/app", "sys/quotas/rate-limit/a"]
        {
            assert!(reshapes_services(key), "{key}");
        }
        for key in
            ["core/audit-head/x", "core/barrier-stats", "sys/token/id/abc", "logical/uuid/data/x", "sys/expire/id/a"]
        {
            assert!(!reshapes_services(key), "{key}");
        }
    }
}
