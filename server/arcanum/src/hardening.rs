//! Process hardening at start-up: no core dumps (a dump of an unsealed server holds its keys),
//! files created private to the server's user (umask 077: storage, audit logs), and, unless the config says `disable_mlock = true`, memory locked so that keys are never
//! written to swap.
//!
//! Locking uses `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: pages are locked as they
//! are touched, so the allocator's large address-space reservations are not forced into RAM.
//! It is attempted only when the kernel will let every future page be locked — an unlimited
//! `RLIMIT_MEMLOCK` (raised here when the process may), or `CAP_IPC_LOCK` — because with a
//! finite limit `MCL_FUTURE` turns growth past the limit into failed allocations. Where the OS
//! does not allow it, the server starts anyway and says so (Vault refuses to start instead).

use rustix::mm::{mlockall, MlockAllFlags};
use rustix::process::{getrlimit, set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};

/// `CAP_IPC_LOCK`'s bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// What start-up hardening achieved, for the banner and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub core_dumps_disabled: bool,
    pub memory_locked: bool,
    /// Why memory is not locked, when it is not.
    pub mlock_note: Option<String>,
}

/// Disables core dumps and, unless `disable_mlock`, locks memory. Never fails: what could
/// not be done is reported.
pub fn apply(disable_mlock: bool) -> Hardening {
    let no_core = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
    // Not dumpable also keeps other processes of the same user from attaching (ptrace) and
    // reading the keys out of memory.
    let not_dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable);
    let core_dumps_disabled = no_core.is_ok() && not_dumpable.is_ok();
    // Storage file names and audit lines are for the server's user alone (storage opens its
    // existing files to the same modes).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if !core_dumps_disabled {
        tracing::warn!("could not disable core dumps: a crash dump could contain key material");
    }
    if disable_mlock {
        return Hardening {
            core_dumps_disabled,
            memory_locked: false,
            mlock_note: Some("disable_mlock = true".into()),
        };
    }
    let (memory_locked, mlock_note) = match lock_memory() {
        Ok(()) => (true, None),
        Err(why) => {
            tracing::warn!(
                "memory is not locked ({why}): key material could be swapped to disk. Run with CAP_IPC_LOCK or \
                 an unlimited memlock limit (ulimit -l unlimited), or set disable_mlock = true to silence this"
            );
            (false, Some(why))
        }
    };
    Hardening { core_dumps_disabled, memory_locked, mlock_note }
}

fn lock_memory() -> Result<(), String> {
    let unlimited = getrlimit(Resource::Memlock).current.is_none()
        || setrlimit(Resource::Memlock, Rlimit { current: None, maximum: None }).is_ok();
    if !unlimited && !has_effective_capability(CAP_IPC_LOCK) {
        let limit = getrlimit(Resource::Memlock).current.unwrap_or(0);
        return Err(format!("the memlock limit is {limit} bytes and the process lacks CAP_IPC_LOCK"));
    }
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|err| format!("mlockall failed: {err}"))
}

/// Reads the effective capability set from `/proc/self/status`.
fn has_effective_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?.trim().to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}
