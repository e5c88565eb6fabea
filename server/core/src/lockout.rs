//! Vault's user lockout: after `lockout_threshold` failed logins for one user of one auth mount
//! (a userpass username, an AppRole role ID) within `lockout_counter_reset` of each other, that
//! user's logins are refused for `lockout_duration`, right credentials or not, so passwords and
//! secret IDs cannot be guessed at the server's speed.
//!
//! Failures are counted in memory on the active node (a restart or failover forgets them, as
//! Vault's do); a lock is stored behind the barrier under `sys/locked-users/`, so it holds
//! across restarts and failovers and `sys/locked-users` can list it. A successful login clears
//! the count.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arcanum_contract::clock::unix_now;
use arcanum_contract::logical::ApiError;
use arcanum_contract::mount::MountEntry;
use arcanum_contract::storage::StorageView;
use serde::{Deserialize, Serialize};

use crate::barrier::Barrier;

const PREFIX: &str = "sys/locked-users/";

/// How lockout works for one auth method (Vault's `user_lockout` stanza).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSettings {
    pub threshold: u32,
    pub duration: Duration,
    pub counter_reset: Duration,
    pub disabled: bool,
}

impl Default for LockoutSettings {
    /// Vault's defaults: 5 failures, 15 minutes locked, the count forgotten after 15 quiet
    /// minutes.
    fn default() -> Self {
        LockoutSettings {
            threshold: 5,
            duration: Duration::from_secs(15 * 60),
            counter_reset: Duration::from_secs(15 * 60),
            disabled: false,
        }
    }
}

/// The settings of every method, from the server config (`user_lockout "all"` and per method);
/// the methods with lockout are Vault's: userpass, approle (and ldap, which Arcanum lacks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockoutConfig {
    /// By method type; `"all"` applies where a method has none of its own.
    pub by_method: BTreeMap<String, LockoutSettings>,
}

impl LockoutSettings {
    /// These settings with what `threshold`, `duration`, `counter_reset` and `disabled` set
    /// put over them (a config stanza over Vault's defaults, a mount's tune over its method's).
    pub fn overlaid(
        self,
        threshold: Option<u32>,
        duration: Option<Duration>,
        counter_reset: Option<Duration>,
        disabled: Option<bool>,
    ) -> LockoutSettings {
        LockoutSettings {
            threshold: threshold.unwrap_or(self.threshold),
            duration: duration.unwrap_or(self.duration),
            counter_reset: counter_reset.unwrap_or(self.counter_reset),
            disabled: disabled.unwrap_or(self.disabled),
        }
    }
}

impl LockoutConfig {
    pub fn for_method(&self, kind: &str) -> LockoutSettings {
        self.by_method.get(kind).or_else(|| self.by_method.get("all")).copied().unwrap_or_default()
    }

    /// The settings for one auth mount: its method's, with what its `user_lockout_config` tune
    /// sets on top.
    pub fn for_mount(&self, entry: &MountEntry) -> LockoutSettings {
        let tune = &entry.config.user_lockout;
        self.for_method(&entry.kind).overlaid(
            tune.threshold.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
            tune.duration.map(Duration::from_secs),
            tune.counter_reset.map(Duration::from_secs),
            tune.disable,
        )
    }
}

/// A stored lock.
#[derive(Debug, Serialize, Deserialize)]
struct Lock {
    mount_accessor: String,
    alias: String,
    /// Unix seconds.
    locked_at: i64,
}

/// Failed logins and locks (see the module documentation).
#[derive(Debug)]
pub struct UserLockout {
    view: StorageView,
    /// Failures by (mount accessor, alias): how many, and when the last was.
    failures: Mutex<HashMap<(String, String), (u32, Instant)>>,
}

/// Where a lock is stored: the alias hex-encoded, since it is whatever a client sent.
fn lock_key(accessor: &str, alias: &str) -> String {
    format!("{accessor}/{}", hex::encode(alias))
}

impl UserLockout {
    pub fn new(barrier: Arc<Barrier>) -> UserLockout {
        UserLockout { view: StorageView::new(barrier, PREFIX), failures: Mutex::default() }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `alias` of the mount `accessor` is locked now. A lock past its duration is
    /// removed.
    pub async fn is_locked(&self, accessor: &str, alias: &str, settings: &LockoutSettings) -> Result<bool, ApiError> {
        let key = lock_key(accessor, alias);
        let Some(lock) = self.view.get_json::<Lock>(&key).await? else { return Ok(false) };
        if unix_now() < lock.locked_at.saturating_add(settings.duration.as_secs() as i64) {
            return Ok(true);
        }
        self.view.delete(&key).await?;
        Ok(false)
    }

    /// Counts a login that failed on bad credentials; locks the user at the threshold.
    pub async fn failed(&self, accessor: &str, alias: &str, settings: &LockoutSettings) -> Result<(), ApiError> {
        let now = Instant::now();
        let reached = {
            let mut failures = self.failures();
            let entry = failures.entry((accessor.to_owned(), alias.to_owned())).or_insert((0, now));
            if now.duration_since(entry.1) > settings.counter_reset {
                entry.0 = 0;
            }
            entry.0 += 1;
            entry.1 = now;
            entry.0 >= settings.threshold
        };
        if reached {
            let lock = Lock { mount_accessor: accessor.to_owned(), alias: alias.to_owned(), locked_at: unix_now() };
            self.view.put_json(&lock_key(accessor, alias), &lock).await?;
            self.failures().remove(&(accessor.to_owned(), alias.to_owned()));
            tracing::warn!(mount_accessor = accessor, "a user was locked out after repeated failed logins");
        }
        Ok(())
    }

    /// A login succeeded: its failures are forgotten.
    pub fn succeeded(&self, accessor: &str, alias: &str) {
        self.failures().remove(&(accessor.to_owned(), alias.to_owned()));
    }

    /// The users locked now, by mount accessor (optionally only `accessor`'s).
    pub async fn locked(
        &self,
        accessor: Option<&str>,
        settings: impl Fn(&str) -> Option<LockoutSettings>,
    ) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
        let mut locked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let accessors = match accessor {
            Some(accessor) => vec![format!("{accessor}/")],
            None => self.view.list("").await?,
        };
        for folder in accessors {
            let Some(accessor) = folder.strip_suffix('/') else { continue };
            for key in self.view.list(&folder).await? {
                let Some(lock) = self.view.get_json::<Lock>(&format!("{folder}{key}")).await? else { continue };
                // A lock of a mount that is gone, or past its duration, is not listed.
                let Some(settings) = settings(accessor) else { continue };
                if unix_now() < lock.locked_at.saturating_add(settings.duration.as_secs() as i64) {
                    locked.entry(accessor.to_owned()).or_default().push(lock.alias);
                }
            }
        }
        Ok(locked)
    }

    /// Lifts a lock (and forgets the failures) now.
    pub async fn unlock(&self, accessor: &str, alias: &str) -> Result<(), ApiError> {
        self.failures().remove(&(accessor.to_owned(), alias.to_owned()));
        self.view.delete(&lock_key(accessor, alias)).await
    }
}
