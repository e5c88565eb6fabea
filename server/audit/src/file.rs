//! The `file` audit device: its options, the checks on where it may write, and how entries
//! reach the file.
//!
//! A device writes in one of two ways, chosen when it starts:
//!
//! - **direct** — a regular file on a local filesystem (ext4, xfs, btrfs, tmpfs, overlay, zfs,
//!   f2fs), and `discard`. The requests write themselves (group commit): a request that finds
//!   no other writing becomes the *leader*, chains its entry and everything queued meanwhile
//!   (`chain.rs`) and appends them with one `write` on a file opened with `O_APPEND` and
//!   `O_NONBLOCK`; requests that arrive while it writes queue their entries and wait, up to
//!   their deadline, for the answer — or for the leadership, which the leader hands to the
//!   first of them when it is done. Such a write only copies into the page cache, so it costs
//!   microseconds, less than handing each entry to another thread and waking it; and no
//!   request waits for a lock on a runtime thread (a lock handed to whichever task the
//!   runtime polls next forms a convoy: nearly every entry then waits). `O_NONBLOCK` only
//!   matters if a FIFO appears at the path later: without a reader it refuses to open, and
//!   when full it refuses the write. The cost: the leader's `write` runs on a runtime thread,
//!   so a local filesystem that stops accepting writes (frozen for a snapshot, a block device
//!   that hangs, heavy writeback throttling) holds that thread — at most one per direct
//!   device — until it returns. Other requests keep being served; the waiting entries fail at
//!   their deadline and, from then on, new ones fail at once, as below.
//! - **threaded** — stdout, FIFOs, character devices and files on any other (network or
//!   unknown) filesystem, whose writes can block for as long as a reader or a server pleases.
//!   One dedicated OS thread owns the file; requests hand it finished entries over a bounded
//!   channel and wait for an acknowledgement with a deadline; the thread appends whole
//!   batches with one `write` and acknowledges each entry once its bytes are in the file.
//!
//! Either way a device stuck in a `write` (a full pipe, a hung network filesystem) stalls
//! only itself (and, when direct, the one runtime thread its leader runs on): the waiting
//! requests give up at their deadline and count the device as
//! failed; once an entry has missed its deadline while the device is still in the same call
//! (or the call has lasted longer than a deadline), new entries fail at once instead of
//! queueing behind it, so a hung device next to a healthy one costs one deadline, not one per
//! request.
//!
//! At most once per [`PATH_CHECK_INTERVAL`] (two `stat` calls per entry would cost more than
//! the write) the device checks that its path still names the file it has open. When another
//! file has taken the path (rotated without SIGHUP), or the open file was deleted, it opens
//! the path again and the chain carries on there, so entries stop vanishing into an unlinked
//! inode within a second — and the lines that did are missing from the chain, which
//! `audit verify` reports. A file merely renamed away keeps receiving lines until SIGHUP or
//! until a new file appears, so logrotate's own `create` never races with the server.
//!
//! Every 4 MiB a direct device's file grows, a thread of its own drops what is written from the
//! page cache (`trim.rs`).
//!
//! Durability: no fsync per line. An acknowledged line is in the kernel's page cache, so it
//! survives a crash of the server process; an OS crash or power loss can lose the last
//! seconds of lines (the chain then ends early, which `audit verify` cannot tell from a
//! truncation unless a recorded checkpoint is given). docs/AUDIT.md says more.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::time::Instant as Deadline;

use super::chain::{self, ChainHead};
use super::trim::{Trimmer, TRIM_STRETCH};
use arcanum_contract::logical::ApiError;

/// Entries that may wait for one device before new ones fail at once.
const QUEUE_CAPACITY: usize = 4096;
/// How often the writer checks that its path still names its open file.
const PATH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Polls of the queue (each yielding the CPU) before the writer thread sleeps.
const SPIN_POLLS: usize = 512;
/// Entries appended with one `write`.
const MAX_BATCH: usize = 256;
/// The longest last line read back when a device opens an existing file.
const MAX_TAIL: u64 = 64 << 20;

/// Where a file device writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Vault's `discard`: accepts everything, keeps nothing.
    Discard,
    File(PathBuf),
}

/// A file device's options, parsed and checked.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub target: Target,
    /// Permission bits for the file; 0 means "leave them alone" (Vault's "0000").
    pub mode: u32,
    pub log_raw: bool,
    pub hmac_accessor: bool,
    pub prefix: String,
    pub elide_list_responses: bool,
}

const KNOWN_OPTIONS: [&str; 9] =
    ["file_path", "path", "mode", "log_raw", "hmac_accessor", "format", "prefix", "elide_list_responses", "skip_test"];

/// Go's `strconv.ParseBool`, which is what Vault accepts for boolean options.
fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!("option {name} must be a boolean, not {value:?}"))),
    }
}

impl FileSettings {
    /// Parses the options of `sys/audit/:path` (all strings, as Vault stores them).
    pub fn parse(options: &BTreeMap<String, String>) -> Result<FileSettings, ApiError> {
        if let Some(unknown) = options.keys().find(|k| !KNOWN_OPTIONS.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!("unsupported option {unknown:?} for a file audit device")));
        }
        let bool_option = |name: &str, default: bool| {
            options.get(name).filter(|v| !v.is_empty()).map_or(Ok(default), |v| parse_bool(name, v))
        };
        // `path` is Vault's legacy name for `file_path` (hvac's examples still use it).
        let path = options
            .get("file_path")
            .or_else(|| options.get("path"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("file_path is required"))?;
        let target = match path.as_str() {
            "stdout" => Target::Stdout,
            "discard" => Target::Discard,
            other => Target::File(PathBuf::from(other)),
        };
        let mode = match options.get("mode").filter(|m| !m.is_empty()) {
            None => 0o600,
            Some(text) => {
                let mode = u32::from_str_radix(text, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| ApiError::bad_request(format!("invalid mode {text:?}: expected octal like 0600")))?;
                if mode & 0o111 != 0 {
                    return Err(ApiError::bad_request(format!(
                        "invalid mode {text:?}: an audit log may not be executable"
                    )));
                }
                mode
            }
        };
        if let Some(format) = options.get("format").filter(|f| !f.is_empty() && f.as_str() != "json") {
            return Err(ApiError::bad_request(format!("unsupported format {format:?}: only json is supported")));
        }
        let prefix = options.get("prefix").cloned().unwrap_or_default();
        if prefix.chars().any(char::is_control) || prefix.contains(chain::SEQ_MARKER) {
            return Err(ApiError::bad_request("prefix may not contain control characters or a chain marker"));
        }
        bool_option("skip_test", false)?;
        Ok(FileSettings {
            target,
            mode,
            log_raw: bool_option("log_raw", false)?,
            hmac_accessor: bool_option("hmac_accessor", true)?,
            prefix,
            elide_list_responses: bool_option("elide_list_responses", false)?,
        })
    }
}

/// Refuses places an audit log must not go: anything that is not a plain absolute path,
/// directories, symlinks, executables, and directories that hold executables or the server
/// binary (CVE-2025-6000: an audit writer that can pick its path and prefix can otherwise
/// plant an executable).
pub fn check_path(path: &Path) -> Result<(), ApiError> {
    let refuse = |why: &str| Err(ApiError::bad_request(format!("file_path {}: {why}", path.display())));
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        return refuse("must be an absolute path");
    }
    if text.split('/').any(|segment| segment == "." || segment == "..") {
        return refuse("'.' and '..' segments are not allowed");
    }
    if text.chars().any(char::is_control) || text.ends_with('/') {
        return refuse("not a file name");
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return refuse("is a symbolic link");
        }
        if meta.is_dir() {
            return refuse("is a directory");
        }
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return refuse("is executable");
        }
    }
    let Some(parent) = path.parent() else { return refuse("has no parent directory") };
    let parent = match parent.canonicalize() {
        Ok(parent) if parent.is_dir() => parent,
        _ => return refuse("its directory does not exist"),
    };
    let binary_dir = std::env::current_exe().ok().and_then(|exe| exe.canonicalize().ok()?.parent().map(PathBuf::from));
    if binary_dir.as_deref() == Some(parent.as_path()) {
        return refuse("is in the server binary's directory");
    }
    let on_search_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.canonicalize().is_ok_and(|dir| dir == parent))
    });
    if on_search_path {
        return refuse("is in a directory on the executable search path");
    }
    let holds_executables = std::fs::read_dir(&parent).is_ok_and(|entries| {
        entries
            .map_while(Result::ok)
            .any(|entry| entry.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0))
    });
    if holds_executables {
        return refuse("is in a directory that holds executables");
    }
    Ok(())
}

/// A job for the writer thread.
enum Job {
    /// Entries (compact JSON objects, one per line) to chain and append.
    Write { fields: String, ack: oneshot::Sender<bool> },
    /// Close and reopen the file (SIGHUP, for logrotate); the chain continues.
    Reopen { ack: oneshot::Sender<bool> },
}

/// The requests' end of a device (see the module documentation for the two ways it writes).
#[derive(Debug)]
pub struct FileSink {
    route: Route,
    /// The chain head after the last line written; shared with the writer.
    head: Arc<Mutex<ChainHead>>,
    /// Since when the writer has been inside a blocking call (see [`Busy`]).
    busy: Arc<Busy>,
}

enum Route {
    /// A writer thread and its queue.
    Threaded(SyncSender<Job>),
    /// Requests write themselves, one leader at a time.
    Direct(Arc<Direct>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Threaded(_) => "Threaded",
            Route::Direct(_) => "Direct",
        })
    }
}

/// What became of an entry (or a reopen) handed to a device; [`FileSink::settle`] turns it
/// into the final answer.
#[derive(Debug)]
pub enum Submitted {
    /// Written (`true`) or failed (`false`) already.
    Done(bool),
    /// Queued for the writer thread.
    Queued(oneshot::Receiver<bool>),
    /// Queued for a direct device's leader.
    Waiting(oneshot::Receiver<Outcome>),
}

/// Work queued for a direct device.
#[derive(Debug)]
enum Pending {
    Write(String),
    Reopen,
}

/// A direct device's answer to a queued request.
#[derive(Debug)]
pub enum Outcome {
    Done(bool),
    /// The leader is done: this request now writes its own entry and whatever is queued.
    Lead(Leadership),
}

/// The state of a direct device. `queue` is held only to push or take entries, never across
/// I/O; `writer` only by the leader, so it is never contended.
struct Direct {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
}

#[derive(Default)]
struct Queue {
    /// A request is writing (or has been handed the leadership and not yet taken it up).
    leading: bool,
    waiting: std::collections::VecDeque<(Pending, oneshot::Sender<Outcome>)>,
}

/// The duty to write what is queued, handed from one request to the next. Dropped unused —
/// its request was cancelled while waiting — it passes itself on, so that queued entries
/// never wait for a leader that is gone.
pub struct Leadership {
    direct: Arc<Direct>,
    /// The entry of the request it was handed to.
    pending: Option<Pending>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leadership")
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.pending.take().is_some() {
            self.direct.pass_on();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Direct {
    /// Queues `pending`, or writes it (with everything queued) when no one else is writing.
    fn submit(self: &Arc<Direct>, pending: Pending) -> Submitted {
        let mut queue = lock(&self.queue);
        if queue.leading {
            if queue.waiting.len() >= QUEUE_CAPACITY {
                return Submitted::Done(false);
            }
            let (answer, waiting) = oneshot::channel();
            queue.waiting.push_back((pending, answer));
            return Submitted::Waiting(waiting);
        }
        queue.leading = true;
        drop(queue);
        Submitted::Done(self.lead(pending))
    }

    /// Writes `own` and everything queued, answers the queued requests, passes the
    /// leadership on, and returns how `own` went.
    fn lead(self: &Arc<Direct>, own: Pending) -> bool {
        // Passes the leadership on however this ends, a panic included: a leadership that is
        // never passed on would leave every later entry waiting for nobody.
        struct PassOn<'d>(&'d Arc<Direct>);
        impl Drop for PassOn<'_> {
            fn drop(&mut self) {
                self.0.pass_on();
            }
        }
        let pass_on = PassOn(self);
        let waiting: Vec<_> = {
            let mut queue = lock(&self.queue);
            let take = queue.waiting.len().min(MAX_BATCH - 1);
            queue.waiting.drain(..take).collect()
        };
        let batch = std::iter::once((own, None)).chain(waiting.into_iter().map(|(p, answer)| (p, Some(answer))));
        let own_ok = lock(&self.writer).perform(batch.collect());
        // After the writer's lock is released, so the next leader does not wait for it.
        drop(pass_on);
        own_ok
    }

    /// Hands the leadership to the first queued request still waiting, or gives it up.
    fn pass_on(self: &Arc<Direct>) {
        loop {
            let (pending, answer) = {
                let mut queue = lock(&self.queue);
                match queue.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        queue.leading = false;
                        return;
                    }
                }
            };
            // Sent without the queue's lock held: if the receiver goes away just as it is
            // sent, the channel itself may drop the leadership here, which passes it on and
            // takes that lock.
            let leadership = Leadership { direct: Arc::clone(self), pending: Some(pending) };
            match answer.send(Outcome::Lead(leadership)) {
                Ok(()) => return,
                // That request gave up: its entry is dropped unwritten, the next one leads.
                Err(Outcome::Lead(mut refused)) => refused.pending = None,
                Err(Outcome::Done(_)) => {}
            }
        }
    }
}

/// Whether the writer is inside a blocking call, and whether it has already made an entry
/// miss its deadline there.
#[derive(Debug, Default)]
struct Busy {
    /// When the writer entered its current `open` or `write`, in milliseconds on a
    /// process-local monotonic clock; 0 while it is idle.
    since: AtomicU64,
    /// An entry timed out while the writer was in this call.
    stalled: std::sync::atomic::AtomicBool,
}

fn monotonic_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    // +1 so that 0 can mean "idle".
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

impl Busy {
    fn enter(&self) {
        self.since.store(monotonic_ms(), Ordering::Relaxed);
    }

    fn leave(&self) {
        self.since.store(0, Ordering::Relaxed);
        self.stalled.store(false, Ordering::Relaxed);
    }

    /// Still in the call that made an entry time out, or in one call for longer than `limit`.
    fn stuck(&self, limit: Duration) -> bool {
        let since = self.since.load(Ordering::Relaxed);
        since != 0
            && (self.stalled.load(Ordering::Relaxed)
                || u128::from(monotonic_ms().saturating_sub(since)) > limit.as_millis())
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Write { .. } => "Write",
            Job::Reopen { .. } => "Reopen",
        })
    }
}

/// How the chain starts when a device opens its file.
#[derive(Debug, Clone)]
pub struct ChainStart {
    /// The device's own anchor (a new device on an empty file starts here).
    pub genesis: ChainHead,
    /// The head recorded behind the barrier at the last orderly stop, if any.
    pub recorded: Option<ChainHead>,
    /// Whether an incomplete last line is cut off at open (a crash's leftover). Not on an HA
    /// standby's copy: if the file is shared, the incomplete line is another node's write in
    /// progress.
    pub repair_tail: bool,
}

impl FileSink {
    /// Starts the device, writing directly or through a thread as its target allows; the
    /// returned receiver reports whether the file opened.
    pub fn start(
        name: String,
        settings: &FileSettings,
        start: ChainStart,
    ) -> Result<(FileSink, oneshot::Receiver<Result<(), String>>), ApiError> {
        FileSink::start_as(name, settings, start, writes_without_blocking(&settings.target))
    }

    fn start_as(
        name: String,
        settings: &FileSettings,
        start: ChainStart,
        direct: bool,
    ) -> Result<(FileSink, oneshot::Receiver<Result<(), String>>), ApiError> {
        let (opened_tx, opened_rx) = oneshot::channel();
        let head = Arc::new(Mutex::new(start.genesis.clone()));
        let busy = Arc::new(Busy::default());
        let mut writer = Writer {
            busy: Arc::clone(&busy),
            path_checked: Instant::now(),
            target: settings.target.clone(),
            mode: settings.mode,
            nonblocking: direct,
            prefix: settings.prefix.clone(),
            file: None,
            head: start.genesis.clone(),
            shared_head: Arc::clone(&head),
            repair_tail: start.repair_tail,
            trim: match &settings.target {
                Target::File(_) if direct => Trimmer::start(&name, TRIM_STRETCH),
                _ => None,
            },
            length: 0,
        };
        let route = if direct {
            writer.resume(&start);
            let opened = writer.open();
            if let Err(err) = &opened {
                tracing::error!(error = %err, "audit device could not open its file; it will retry on the next entry");
            }
            let _ = opened_tx.send(opened);
            Route::Direct(Arc::new(Direct { queue: Mutex::new(Queue::default()), writer: Mutex::new(writer) }))
        } else {
            let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
            std::thread::Builder::new()
                .name(format!("audit-{}", name.trim_end_matches('/')))
                .spawn(move || writer.run(queue, start, opened_tx))
                .map_err(|err| {
                    tracing::error!(error = %err, "cannot start an audit writer thread");
                    ApiError::internal()
                })?;
            Route::Threaded(jobs)
        };
        Ok((FileSink { route, head, busy }, opened_rx))
    }

    /// Hands one submission (entries, one per line, that are chained in order and appended
    /// together) to the device: written at once when the device is direct and free,
    /// else queued or left waiting for the lock. A failure now when the queue is full, the
    /// thread is gone, or the device is stuck (see [`Busy::stuck`]).
    pub fn submit(&self, fields: String, stuck_after: Duration) -> Submitted {
        if self.busy.stuck(stuck_after) {
            return Submitted::Done(false);
        }
        match &self.route {
            Route::Direct(direct) => direct.submit(Pending::Write(fields)),
            Route::Threaded(jobs) => {
                let (ack, done) = oneshot::channel();
                match jobs.try_send(Job::Write { fields, ack }) {
                    Ok(()) => Submitted::Queued(done),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Submitted::Done(false),
                }
            }
        }
    }

    /// Starts closing and reopening the file (SIGHUP, for logrotate); the chain continues.
    pub fn reopen(&self) -> Submitted {
        match &self.route {
            Route::Direct(direct) => direct.submit(Pending::Reopen),
            Route::Threaded(jobs) => {
                let (ack, done) = oneshot::channel();
                match jobs.try_send(Job::Reopen { ack }) {
                    Ok(()) => Submitted::Queued(done),
                    Err(_) => Submitted::Done(false),
                }
            }
        }
    }

    /// Waits, until `deadline` at most, for what [`FileSink::submit`] or
    /// [`FileSink::reopen`] started. Missing the deadline marks the device stalled.
    pub async fn settle(&self, submitted: Submitted, deadline: Deadline) -> bool {
        let finished = match submitted {
            Submitted::Done(ok) => return ok,
            Submitted::Queued(done) => tokio::time::timeout_at(deadline, done).await.map(|ack| ack.unwrap_or(false)),
            Submitted::Waiting(answer) => {
                tokio::time::timeout_at(deadline, answer).await.map(|outcome| match outcome {
                    Ok(Outcome::Done(ok)) => ok,
                    Ok(Outcome::Lead(mut leadership)) => match leadership.pending.take() {
                        Some(own) => leadership.direct.lead(own),
                        None => false,
                    },
                    Err(_) => false,
                })
            }
        };
        finished.unwrap_or_else(|_| {
            self.mark_stalled();
            false
        })
    }

    /// Writes one entry and waits for it (tests drive a single sink this way).
    #[cfg(test)]
    pub async fn record(&self, fields: String, timeout: Duration) -> bool {
        let deadline = Deadline::now() + timeout;
        let submitted = self.submit(fields, timeout);
        self.settle(submitted, deadline).await
    }

    pub fn head(&self) -> ChainHead {
        self.head.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// An entry missed its deadline: until the writer gets out of the call it is in, new
    /// entries fail at once.
    fn mark_stalled(&self) {
        if self.busy.since.load(Ordering::Relaxed) != 0 {
            self.busy.stalled.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether a device may write from the request's task: its target cannot make a `write`
/// block for long (see the module documentation).
fn writes_without_blocking(target: &Target) -> bool {
    let path = match target {
        Target::Discard => return true,
        Target::Stdout => return false,
        Target::File(path) => path,
    };
    // Filesystem magic numbers from statfs(2): where an appending write only fills the page
    // cache. Anything else (NFS, CIFS, FUSE, ...) may hang on a server.
    const LOCAL: [u64; 7] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x2FC1_2FC1, // zfs
        0xF2F5_2010, // f2fs
    ];
    let on_disk = match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return false,
        Ok(_) => path.as_path(),
        Err(_) => match path.parent() {
            Some(parent) => parent,
            None => return false,
        },
    };
    // Magic numbers are 32-bit; `f_type`'s width and signedness vary by target.
    rustix::fs::statfs(on_disk).is_ok_and(|fs| LOCAL.contains(&(fs.f_type as u64 & 0xFFFF_FFFF)))
}

enum Output {
    File(File),
    Stdout,
    Discard,
}

/// A device's writer: the open file and the chain head of what is in it. Owned by the writer
/// thread, or behind the lock of a direct device.
struct Writer {
    busy: Arc<Busy>,
    /// When the path was last compared with the open file.
    path_checked: Instant,
    target: Target,
    mode: u32,
    /// Opens the file with `O_NONBLOCK` (direct devices).
    nonblocking: bool,
    prefix: String,
    file: Option<Output>,
    head: ChainHead,
    shared_head: Arc<Mutex<ChainHead>>,
    /// See [`ChainStart::repair_tail`].
    repair_tail: bool,
    /// Drops what a direct device has written from the page cache (see `trim.rs`).
    trim: Option<Trimmer>,
    /// The open file's length as this writer knows it (its own appends since it opened).
    length: u64,
}

impl Writer {
    fn run(mut self, queue: Receiver<Job>, start: ChainStart, opened: oneshot::Sender<Result<(), String>>) {
        self.resume(&start);
        let result = self.open();
        if let Err(err) = &result {
            tracing::error!(error = %err, "audit device could not open its file; it will retry on the next entry");
        }
        let _ = opened.send(result);
        // Ends when every sender is gone (device disabled, or the server sealed or stopped).
        while let Some(first) = next_job(&queue) {
            let mut writes = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Write { fields, ack } => writes.push((fields, ack)),
                    Job::Reopen { ack } => {
                        self.flush(std::mem::take(&mut writes));
                        let _ = ack.send(self.reopen());
                    }
                }
                if writes.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            self.flush(writes);
        }
    }

    /// Where the chain continues: after the file's last line, unless the head recorded at
    /// the last orderly stop is further on (lines were removed while the server was down:
    /// continuing from the recorded head keeps that gap visible to `audit verify`).
    fn resume(&mut self, start: &ChainStart) {
        let tail = match &self.target {
            Target::File(path) => read_tail(path),
            Target::Stdout | Target::Discard => None,
        };
        let head = match (tail, &start.recorded) {
            (Some(tail), Some(recorded))
                if recorded.next_seq > tail.next_seq
                    || (recorded.next_seq == tail.next_seq && recorded.last_hash != tail.last_hash) =>
            {
                tracing::warn!(
                    file_seq = ?tail.last_seq(),
                    recorded_seq = ?recorded.last_seq(),
                    "audit file does not end where the recorded chain head says; continuing from the recorded head"
                );
                recorded.clone()
            }
            (Some(tail), _) => tail,
            (None, Some(recorded)) => recorded.clone(),
            (None, None) => start.genesis.clone(),
        };
        self.set_head(head);
    }

    fn set_head(&mut self, head: ChainHead) {
        *self.shared_head.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = head.clone();
        self.head = head;
    }

    fn open(&mut self) -> Result<(), String> {
        self.busy.enter();
        let result = self.open_inner();
        self.busy.leave();
        result
    }

    fn open_inner(&mut self) -> Result<(), String> {
        self.file = None;
        let output = match &self.target {
            Target::Stdout => Output::Stdout,
            Target::Discard => Output::Discard,
            Target::File(path) => {
                if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
                    return Err(format!("{} is a symbolic link; refusing to follow it", path.display()));
                }
                let create_mode = if self.mode == 0 { 0o600 } else { self.mode };
                let flags = if self.nonblocking { rustix::fs::OFlags::NONBLOCK.bits() as i32 } else { 0 };
                let mut file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(create_mode)
                    .custom_flags(flags)
                    .open(path)
                    .map_err(|err| format!("opening {}: {err}", path.display()))?;
                // A chain line cut short by a crash (SIGKILL can stop a write between pages) was
                // never acknowledged: for a request line the request never ran, for a response
                // line the answer was never sent. It is cut off, so the chain goes on from the
                // last whole line and verifies; the cut is logged with its size.
                match if self.repair_tail { cut_partial_line(path) } else { Ok(0) } {
                    Ok(0) => {}
                    Ok(cut) => tracing::warn!(
                        path = %path.display(), bytes = cut,
                        "removed an incomplete last audit line left by a crash"
                    ),
                    // Not a chain line (a file that was not only ours), or too long to find its
                    // start: left in place and closed off; `audit verify` reports it.
                    Err(_) => file.write_all(b"\n").map_err(|err| format!("writing to {}: {err}", path.display()))?,
                }
                let meta = file.metadata().map_err(|err| format!("reading {}: {err}", path.display()))?;
                // Only regular files are chmod'ed (never a device node such as /dev/full).
                if self.mode != 0 && meta.is_file() && meta.permissions().mode() & 0o777 != self.mode {
                    file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                        .map_err(|err| format!("setting the mode of {}: {err}", path.display()))?;
                }
                self.length = meta.len();
                if let Some(trim) = &mut self.trim {
                    trim.reopened(&file, self.length, meta.is_file());
                }
                Output::File(file)
            }
        };
        self.file = Some(output);
        Ok(())
    }

    /// Carries out a direct device's batch in order: each run of writes goes out with one
    /// `write`; entries whose request gave up are left out. Answers every queued request and
    /// returns the result of the leader's own item (the one without an answer channel).
    fn perform(&mut self, batch: Vec<(Pending, Option<oneshot::Sender<Outcome>>)>) -> bool {
        let mut own = false;
        let mut answer = |to: Option<oneshot::Sender<Outcome>>, ok: bool| match to {
            Some(to) => drop(to.send(Outcome::Done(ok))),
            None => own = ok,
        };
        let mut writes: Vec<(String, Option<oneshot::Sender<Outcome>>)> = Vec::new();
        for (pending, to) in batch {
            if to.as_ref().is_some_and(oneshot::Sender::is_closed) {
                continue;
            }
            match pending {
                Pending::Write(fields) => writes.push((fields, to)),
                Pending::Reopen => {
                    let ok = self.write_batch(writes.iter().map(|(fields, _)| fields.as_str()));
                    writes.drain(..).for_each(|(_, to)| answer(to, ok));
                    let reopened = self.reopen();
                    answer(to, reopened);
                }
            }
        }
        let ok = self.write_batch(writes.iter().map(|(fields, _)| fields.as_str()));
        writes.into_iter().for_each(|(_, to)| answer(to, ok));
        own
    }

    /// Chains and appends entries with one `write`; all succeed or fail together. A
    /// submission may hold several entries, one per line (a request's and its response's).
    fn write_batch<'e>(&mut self, submissions: impl Iterator<Item = &'e str> + Clone) -> bool {
        // Each line adds the prefix, its chain fields (two hashes, a sequence number) and a
        // newline; a submission is mostly one or two lines (`seal_line_into` makes room for more).
        let (count, bytes) =
            submissions.clone().fold((0, 0), |(count, bytes), fields| (count + 1, bytes + fields.len()));
        let mut buffer = Vec::with_capacity(bytes + 2 * count * (self.prefix.len() + chain::LINE_OVERHEAD));
        let mut head = self.head.clone();
        for fields in submissions.flat_map(|submission| submission.split('\n')) {
            let hash = chain::seal_line_into(&mut buffer, &self.prefix, &head, fields);
            head = ChainHead { next_seq: head.next_seq + 1, last_hash: hash };
        }
        if buffer.is_empty() {
            return true;
        }
        let ok = self.append(&buffer);
        if ok {
            self.set_head(head);
        }
        ok
    }

    fn reopen(&mut self) -> bool {
        let reopened = self.open();
        if let Err(err) = &reopened {
            tracing::error!(error = %err, "audit device could not reopen its file");
        }
        reopened.is_ok()
    }

    /// Chains and appends a batch of the writer thread; every entry of the batch succeeds or
    /// fails together.
    fn flush(&mut self, writes: Vec<(String, oneshot::Sender<bool>)>) {
        // A request that gave up waiting (and counted a failure) is not written: that would
        // record an entry the server did not stand behind.
        let writes: Vec<_> = writes.into_iter().filter(|(_, ack)| !ack.is_closed()).collect();
        let ok = self.write_batch(writes.iter().map(|(fields, _)| fields.as_str()));
        for (_, ack) in writes {
            let _ = ack.send(ok);
        }
    }

    fn append(&mut self, buffer: &[u8]) -> bool {
        if self.path_checked.elapsed() >= PATH_CHECK_INTERVAL && self.file_was_moved() {
            if let Err(err) = self.open() {
                tracing::error!(error = %err, "audit device cannot reopen its file");
                return false;
            }
        }
        if self.file.is_none() {
            if let Err(err) = self.open() {
                tracing::error!(error = %err, "audit device still cannot open its file");
                return false;
            }
        }
        let result = match &mut self.file {
            Some(Output::Discard) => Ok(()),
            Some(Output::Stdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(buffer).and_then(|()| out.flush())
            }
            Some(Output::File(file)) => {
                self.busy.enter();
                let result = append_whole(file, buffer);
                self.busy.leave();
                if result.is_ok() {
                    self.length += buffer.len() as u64;
                    if let Some(trim) = &mut self.trim {
                        trim.grew(file, self.length);
                    }
                }
                result
            }
            None => return false,
        };
        match result {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, "audit device write failed");
                false
            }
        }
    }
}

impl Writer {
    /// Whether the path should be opened again: another file is there now, or the open file
    /// was deleted.
    fn file_was_moved(&mut self) -> bool {
        self.path_checked = Instant::now();
        let (Target::File(path), Some(Output::File(file))) = (&self.target, &self.file) else { return false };
        let Ok(open) = file.metadata() else { return false };
        if !open.is_file() {
            return false;
        }
        match std::fs::symlink_metadata(path) {
            Ok(on_disk) if on_disk.dev() == open.dev() && on_disk.ino() == open.ino() => false,
            Ok(_) => {
                tracing::warn!(file = %path.display(), "audit file was replaced; continuing the chain in the new file");
                true
            }
            // Renamed away (logrotate, before its SIGHUP): keep writing where it went.
            Err(_) if open.nlink() > 0 => false,
            Err(_) => {
                tracing::warn!(file = %path.display(), "audit file was deleted; continuing the chain in a new file");
                true
            }
        }
    }
}

/// The next job: polled for a short while before the thread sleeps, because under load the
/// next entry usually arrives within microseconds, and a sleeping thread costs every sender a
/// wake-up system call. `None` once every sender is gone.
fn next_job(queue: &Receiver<Job>) -> Option<Job> {
    for _ in 0..SPIN_POLLS {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    queue.recv().ok()
}

/// Appends `buffer` whole or not at all: after a partial write (disk full mid-batch) the
/// partial bytes are cut off again, so a failed batch leaves no half line behind.
fn append_whole(file: &mut File, buffer: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < buffer.len() {
        match file.write(&buffer[written..]) {
            Ok(0) => {
                let err = std::io::Error::new(std::io::ErrorKind::WriteZero, "the file accepted no bytes");
                return Err(undo(file, written, err));
            }
            Ok(n) => written += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(undo(file, written, err)),
        }
    }
    Ok(())
}

fn undo(file: &File, written: usize, err: std::io::Error) -> std::io::Error {
    if written > 0 {
        let cut = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len().saturating_sub(written as u64));
        if let Some(length) = cut {
            if let Err(truncate) = file.set_len(length) {
                tracing::error!(error = %truncate, "could not remove a partly written audit batch");
            }
        }
    }
    err
}

/// Cuts a regular file back to its last newline when what follows it is the start of a chain
/// line; returns how many bytes went. An error, and the file left alone, when the incomplete
/// line is not a chain line or is longer than [`MAX_TAIL`].
fn cut_partial_line(path: &Path) -> std::io::Result<u64> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(0) };
    if !meta.is_file() || meta.len() == 0 {
        return Ok(0);
    }
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let length = file.metadata()?.len();
    let mut chunk = 64 * 1024u64;
    loop {
        let from = length.saturating_sub(chunk);
        file.seek(SeekFrom::Start(from))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        match tail.iter().rposition(|b| *b == b'\n') {
            Some(end) if from + end as u64 + 1 == length => return Ok(0),
            Some(end) => {
                ours(&tail[end + 1..])?;
                let keep = from + end as u64 + 1;
                file.set_len(keep)?;
                return Ok(length - keep);
            }
            None if from == 0 => {
                ours(&tail)?;
                file.set_len(0)?;
                return Ok(length);
            }
            None if chunk >= MAX_TAIL => {
                return Err(std::io::Error::other("the incomplete last line is too long to cut"));
            }
            None => chunk *= 4,
        }
    }
}

/// Whether an incomplete line is the start of one of our chain lines (after any `prefix`).
fn ours(partial: &[u8]) -> std::io::Result<()> {
    let marker = chain::SEQ_MARKER.as_bytes();
    let cut_in_marker = (1..=marker.len()).any(|n| partial.ends_with(&marker[..n]));
    if partial.windows(marker.len()).any(|window| window == marker) || cut_in_marker {
        Ok(())
    } else {
        Err(std::io::Error::other("the incomplete last line is not an audit chain line"))
    }
}

/// The chain head after the last complete line of an existing file, if it is a chain line.
fn read_tail(path: &Path) -> Option<ChainHead> {
    // Checked before opening: opening a FIFO for reading would block.
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    let mut chunk = 64 * 1024u64;
    loop {
        let from = length.saturating_sub(chunk);
        file.seek(SeekFrom::Start(from)).ok()?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).ok()?;
        // Without a final newline the last line is incomplete (a crash mid-write); the chain
        // continues after the last complete line, and opening the file cuts the partial one.
        let end = tail.iter().rposition(|b| *b == b'\n')?;
        let body = &tail[..end];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(start) => return parsed_head(&body[start + 1..]),
            None if from == 0 => return parsed_head(body),
            None if chunk >= MAX_TAIL => return None,
            None => chunk *= 4,
        }
    }
}

fn parsed_head(line: &[u8]) -> Option<ChainHead> {
    let parsed = chain::parse_line(line).ok().filter(|l| l.content_matches)?;
    Some(ChainHead { next_seq: parsed.seq.checked_add(1)?, last_hash: parsed.hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// A new device on `a.log` in `dir` (written directly or through its thread), opened.
    async fn opened_sink(dir: &tempfile::TempDir, direct: bool) -> (FileSink, PathBuf) {
        let path = dir.path().join("a.log");
        let settings = FileSettings::parse(&options(&[("file_path", path.to_str().unwrap())])).unwrap();
        let start = ChainStart { genesis: ChainHead::genesis("u"), recorded: None, repair_tail: true };
        let (sink, opened) = FileSink::start_as("file/".into(), &settings, start, direct).unwrap();
        opened.await.unwrap().unwrap();
        (sink, path)
    }

    #[test]
    fn options_are_parsed_with_vault_defaults() {
        let settings = FileSettings::parse(&options(&[("file_path", "/var/log/a.log")])).unwrap();
        assert_eq!(settings.target, Target::File("/var/log/a.log".into()));
        assert_eq!(settings.mode, 0o600);
        assert!(!settings.log_raw && settings.hmac_accessor && !settings.elide_list_responses);
        let legacy = FileSettings::parse(&options(&[("path", "stdout"), ("log_raw", "true"), ("mode", "0640")]));
        let legacy = legacy.unwrap();
        assert_eq!(legacy.target, Target::Stdout);
        assert!(legacy.log_raw);
        assert_eq!(legacy.mode, 0o640);
        for bad in [
            &[("mode", "0700"), ("file_path", "/x/a")][..],
            &[("mode", "0755"), ("file_path", "/x/a")],
            &[("mode", "rw"), ("file_path", "/x/a")],
            &[("format", "jsonx"), ("file_path", "/x/a")],
            &[("log_raw", "maybe"), ("file_path", "/x/a")],
            &[("prefix", "a\nb"), ("file_path", "/x/a")],
            &[("fallback", "true"), ("file_path", "/x/a")],
            &[],
        ] {
            assert_eq!(FileSettings::parse(&options(bad)).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("audit.log");
        check_path(&ok).unwrap();
        let exe_dir = tempfile::tempdir().unwrap();
        let tool = exe_dir.path().join("tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&ok, dir.path().join("link")).unwrap();
        let binary = std::env::current_exe().unwrap().canonicalize().unwrap();
        let refused = [
            PathBuf::from("relative.log"),
            dir.path().join("../x/audit.log"),
            dir.path().join("./audit.log"),
            dir.path().to_path_buf(),
            tool.clone(),
            exe_dir.path().join("audit.log"),
            dir.path().join("link"),
            dir.path().join("missing/audit.log"),
            binary.parent().unwrap().join("audit.log"),
            PathBuf::from("/usr/bin/audit.log"),
        ];
        for path in refused {
            assert!(check_path(&path).is_err(), "{} was accepted", path.display());
        }
    }

    #[test]
    fn tail_of_an_existing_file_resumes_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let genesis = ChainHead::genesis("u");
        let (first, hash) = chain::seal_line("", &genesis, "{\"type\":\"request\"}");
        let next = ChainHead { next_seq: 1, last_hash: hash };
        let (second, hash2) = chain::seal_line("", &next, "{\"type\":\"response\"}");
        std::fs::write(&path, [first, second.clone()].concat()).unwrap();
        assert_eq!(read_tail(&path), Some(ChainHead { next_seq: 2, last_hash: hash2.clone() }));
        // An incomplete last line is skipped: the chain continues after the last whole line.
        std::fs::write(&path, [second.clone(), b"{\"seq\":2,\"prev".to_vec()].concat()).unwrap();
        assert_eq!(read_tail(&path), Some(ChainHead { next_seq: 2, last_hash: hash2 }));
        std::fs::write(&path, b"not ours\n").unwrap();
        assert_eq!(read_tail(&path), None);
    }

    #[tokio::test]
    async fn a_line_cut_by_a_crash_is_cut_off_and_the_chain_resumes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (first, hash) = chain::seal_line("", &ChainHead::genesis("u"), "{\"type\":\"request\"}");
        std::fs::write(&path, [first.clone(), first[..20].to_vec()].concat()).unwrap();
        let settings = FileSettings::parse(&options(&[("file_path", path.to_str().unwrap())])).unwrap();
        let start = ChainStart { genesis: ChainHead::genesis("u"), recorded: None, repair_tail: true };
        let (sink, opened) = FileSink::start("file/".into(), &settings, start).unwrap();
        assert!(matches!(sink.route, Route::Direct(_)), "a file in a temporary directory is written directly");
        opened.await.unwrap().unwrap();
        assert!(sink.record("{\"type\":\"response\"}".into(), Duration::from_secs(5)).await);
        let text = std::fs::read(&path).unwrap();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2, "the partial line is gone");
        assert_eq!(lines[0], &first[..first.len() - 1]);
        let resumed = chain::parse_line(lines[1]).unwrap();
        assert_eq!((resumed.seq, resumed.prev_hash), (1, hash));
        assert!(matches!(super::super::verify::verify_file(&path).unwrap(), super::super::verify::Outcome::Intact(_)));
    }

    #[test]
    fn cutting_a_partial_line_keeps_whole_lines_and_files_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntwo\n{\"seq\":7,\"prev").unwrap();
        assert_eq!(cut_partial_line(&path).unwrap(), 14);
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        assert_eq!(cut_partial_line(&path).unwrap(), 0);
        std::fs::write(&path, b"{\"se").unwrap();
        assert_eq!(cut_partial_line(&path).unwrap(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // Not ours: left alone (the device closes it off with a newline instead).
        std::fs::write(&path, b"someone else's text").unwrap();
        assert!(cut_partial_line(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's text");
        assert_eq!(cut_partial_line(&dir.path().join("missing")).unwrap(), 0);
    }

    #[tokio::test]
    async fn both_writers_append_chained_lines_and_reopen() {
        for direct in [true, false] {
            writer_appends_chained_lines_and_reopens(direct).await;
        }
    }

    async fn writer_appends_chained_lines_and_reopens(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = opened_sink(&dir, direct).await;
        let bound = Duration::from_secs(5);
        assert!(sink.record("{\"type\":\"request\"}".into(), bound).await);
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        assert!(sink.settle(sink.reopen(), Deadline::now() + bound).await);
        assert!(sink.record("{\"type\":\"response\"}".into(), bound).await);
        let old = std::fs::read(dir.path().join("a.log.1")).unwrap();
        let new = std::fs::read(&path).unwrap();
        let first = chain::parse_line(&old[..old.len() - 1]).unwrap();
        let second = chain::parse_line(&new[..new.len() - 1]).unwrap();
        assert_eq!((first.seq, second.seq), (0, 1));
        assert_eq!(second.prev_hash, first.hash);
        // Deleted: once the writer next checks its path, lines go to a new file there, still
        // chained.
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(PATH_CHECK_INTERVAL + Duration::from_millis(100)).await;
        assert!(sink.record("{\"type\":\"request\"}".into(), bound).await);
        let recreated = std::fs::read(&path).unwrap();
        let third = chain::parse_line(&recreated[..recreated.len() - 1]).unwrap();
        assert_eq!((third.seq, third.prev_hash), (2, second.hash));
        assert_eq!(sink.head().next_seq, 3);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// Many requests at once on a multi-threaded runtime: every entry is acknowledged, written
    /// once, in one unbroken chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_entries_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = opened_sink(&dir, true).await;
        let sink = Arc::new(sink);
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    for n in 0..50 {
                        let entry = format!("{{\"task\":{task},\"n\":{n}}}");
                        assert!(sink.record(entry, Duration::from_secs(5)).await);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(sink.head().next_seq, 64 * 50);
        match super::super::verify::verify_file(&path).unwrap() {
            super::super::verify::Outcome::Intact(summary) => assert_eq!(summary.lines, 64 * 50),
            broken => panic!("{broken:?}"),
        }
    }

    /// The leadership handed to a request that is gone passes on to the next one waiting, and
    /// is given up when nobody waits, so queued entries never wait for nobody.
    #[tokio::test]
    async fn leadership_of_a_cancelled_request_passes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _path) = opened_sink(&dir, true).await;
        let Route::Direct(direct) = &sink.route else { panic!("not direct") };
        lock(&direct.queue).leading = true;
        let Submitted::Waiting(mut first) = direct.submit(Pending::Write("{\"n\":1}".into())) else { panic!() };
        let Submitted::Waiting(mut second) = direct.submit(Pending::Write("{\"n\":2}".into())) else { panic!() };
        // The leader finishes: the first waiter is handed the leadership...
        direct.pass_on();
        assert!(matches!(first.try_recv(), Ok(Outcome::Lead(_))), "the first waiter leads");
        // ...which it drops unused (its request was cancelled): the second one leads next.
        assert!(matches!(second.try_recv(), Ok(Outcome::Lead(_))), "dropped leadership passed on");
        assert!(!lock(&direct.queue).leading, "and, with nobody left waiting, was given up");
        assert!(matches!(direct.submit(Pending::Write("{\"n\":3}".into())), Submitted::Done(true)));
    }

    #[test]
    fn only_local_regular_files_and_discard_are_written_directly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writes_without_blocking(&Target::Discard));
        assert!(!writes_without_blocking(&Target::Stdout));
        assert!(writes_without_blocking(&Target::File(dir.path().join("new.log"))));
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(!writes_without_blocking(&Target::File(fifo)));
        assert!(!writes_without_blocking(&Target::File("/dev/full".into())));
        assert!(!writes_without_blocking(&Target::File("/proc/self/nowhere/a.log".into())));
    }

    /// A direct device whose path became a FIFO (nobody reading) fails its entries instead of
    /// blocking the request's thread.
    #[tokio::test]
    async fn a_direct_device_never_blocks_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = opened_sink(&dir, true).await;
        std::fs::remove_file(&path).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        assert!(!sink.settle(sink.reopen(), Deadline::now() + Duration::from_secs(5)).await, "no reader: ENXIO");
        // With a reader that never reads, writes fill the pipe and then fail with EAGAIN.
        let reader = OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&path);
        let _reader = reader.unwrap();
        assert!(sink.settle(sink.reopen(), Deadline::now() + Duration::from_secs(5)).await);
        let entry = format!("{{\"type\":\"request\",\"pad\":\"{}\"}}", "x".repeat(8192));
        let mut written = 0;
        while sink.record(entry.clone(), Duration::from_secs(5)).await {
            written += 1;
            assert!(written < 1000, "a full pipe kept accepting lines");
        }
        assert!(written > 0);
    }
}
