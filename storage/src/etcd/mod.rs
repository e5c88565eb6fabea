//! The etcd backend: Vault's physical-backend semantics on etcd's v3 API, so that several
//! Arcanum nodes can share one store (the HA issue builds on it).
//!
//! # Layout in etcd
//! - `<prefix><key>` holds each record (`/arcanum/core/keyring`, ...); the value is whatever the
//!   caller stored, which above this crate is always the barrier's ciphertext.
//! - `<prefix without its last '/'>.batch-intents/` holds batches too large for one etcd
//!   transaction while they are applied (see below). It sorts outside the data prefix, so no
//!   listing and no migration ever sees it.
//!
//! # Writes
//! Every write is an etcd transaction, acknowledged once etcd has committed it to a quorum.
//! Writes are not serialised: concurrent callers share the client's HTTP/2 connections and
//! their transactions are in flight together.
//!
//! # Batches beyond etcd's limits
//! A batch is first reduced to the final state of each key (etcd refuses a transaction that
//! names a key twice, and ops apply in order, so the last op per key is the batch's effect).
//! When that fits one transaction (`max_txn_ops` ops and `max_request_bytes`) it is one
//! transaction. Otherwise it is written as an *intent*: its ops in chunks under
//! `.batch-intents/<id>/<n>`, then the marker `.batch-intents/<id>` (the commit point), then
//! applied in as many transactions as it takes, then the intent is deleted. While that runs
//! the backend holds its gate exclusively, so no read of this process sees half a batch. A
//! crash before the marker leaves only chunks, which the next open deletes; a crash after it
//! leaves an intent that the next open replays before anything else. A batch whose apply
//! fails part-way leaves the backend refusing every operation until a replay of its intent
//! succeeds (tried again at each operation), so the server recovers by itself once etcd is
//! back and no later write can be undone by that replay.
//!
//! # Reads
//! A read the cache cannot answer is *serializable*: the member answers from its own state
//! without a consensus round (a linearizable read waits for the leader's next round, which on a
//! busy cluster means its next fsync). It is accepted only if the member's state is at least at
//! the highest revision this process knows committed (its own writes, and what a linearizable
//! read at connect saw); a member behind that is asked again, linearizably. Being the only
//! writer, the process then sees every write there is.
//!
//! # Read cache
//! Reads are served from memory when this process has read or written the key before (an LRU
//! of Vault's `cache_size` entries). That is correct because this process is the only writer
//! under its prefix: one server per prefix, and with HA only the active node writes (fenced),
//! and it empties its cache whenever it stops being active. Each entry carries the etcd
//! revision it was true at, so a read that raced a write can never put an older value over a
//! newer one; a write whose outcome is unknown (an error or a timeout) drops its keys and keeps
//! every read that was in flight meanwhile from filling the cache, so the next read of those
//! keys goes to etcd. A replayed batch empties the cache. Listings always go to etcd. Editing
//! keys under the prefix behind a running server (etcdctl, a snapshot restore) is not seen
//! until it restarts: stop the server first.
//!
//! # Listing
//! Keys only, in pages of [`PAGE`] keys, all pages read at the revision of the first (one
//! consistent snapshot); when a page ends inside a folder the next page starts past that
//! folder. etcd 3.4 visits every key of a request's range to count it, whatever the limit, so
//! pages are large (a listing of a million keys is about twenty requests).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, DeleteOptions, GetOptions, Identity, KvClient, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use zeroize::Zeroizing;

use crate::keys::{validate_key, validate_ops, validate_prefix};
use crate::{Backend, Op, StorageError};

mod ha;

/// Keys per listing page. etcd 3.4 walks its whole index range for every ranged request, even
/// with a limit (to count it), so a listing costs about pages x keys-in-range: large pages keep a
/// million-key listing to a few dozen requests. 50,000 keys-only entries are ~5 MB.
const PAGE: i64 = 50_000;
/// The largest response the client accepts (tonic's default is 4 MiB): a listing page, or a
/// value up to etcd's request limit with room to spare.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Vault's default `cache_size`.
pub const DEFAULT_CACHE_ENTRIES: usize = 131_072;
/// Locks the read cache is split over, so that concurrent reads rarely wait on each other.
const CACHE_SHARDS: usize = 16;
/// What a request carries besides the ops' keys and values (header, framing, a fence compare).
const REQUEST_OVERHEAD: usize = 16 * 1024;
/// Framing per op inside a transaction.
const OP_OVERHEAD: usize = 16;
const INTENT_SUFFIX: &str = ".batch-intents/";
/// Marker format: `v1 <chunks> <ops>`.
const MARKER_VERSION: &str = "v1";

/// How to reach etcd and how this backend lays out its keys.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://etcd-0:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix for every record; ends with `/`.
    pub prefix: String,
    /// etcd's own authentication (user and password).
    pub credentials: Option<(String, Zeroizing<String>)>,
    pub tls: Option<EtcdTls>,
    /// The longest any one request may take before it counts as failed (etcd unreachable).
    pub request_timeout: Duration,
    /// The server's `--max-request-bytes`: writes are sized to fit it and a larger value is refused.
    pub max_request_bytes: usize,
    /// The server's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Entries of the read cache (Vault's `cache_size`); 0: no cache.
    pub cache_entries: usize,
    /// Keys per listing page ([`PAGE`]); smaller only in tests, to exercise paging.
    #[doc(hidden)]
    pub list_page: i64,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: prefix.into(),
            credentials: None,
            tls: None,
            request_timeout: Duration::from_secs(5),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            list_page: PAGE,
        }
    }
}

// By hand: the password never reaches a log line.
impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("cache_entries", &self.cache_entries)
            .finish()
    }
}

/// TLS to etcd, in PEM.
#[derive(Clone)]
pub struct EtcdTls {
    /// CA bundle that signs etcd's server certificates; none: the system's roots do not apply,
    /// so a CA is needed unless only a client identity is given.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// The name to verify etcd's certificate against, when it is not the endpoint's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// One etcd member as the backend reaches it: a client of its own (one HTTP/2 connection,
/// made on first use and kept).
struct Member {
    url: String,
    client: std::sync::RwLock<Option<Client>>,
    /// KV handles ready for a call (each call needs one to itself); made from `client` when
    /// none is free and given back after use, so that calls do not clone and drop a gRPC stack
    /// each time. They all share the member's one connection.
    idle: std::sync::Mutex<Vec<KvClient>>,
}

/// The etcd backend. Requests go to one member at a time; a member that cannot be reached
/// (refused, reset, no leader, no answer) is left for the next one, within the request timeout.
pub struct EtcdBackend {
    members: Vec<Member>,
    /// The member requests go to now.
    current: AtomicUsize,
    connect: ConnectOptions,
    prefix: String,
    intents: String,
    timeout: Duration,
    max_request_bytes: usize,
    max_txn_ops: usize,
    /// Shared by every operation; a batch spread over several transactions takes it alone.
    gate: tokio::sync::RwLock<()>,
    /// A multi-transaction batch failed part-way: nothing may run until its intent is replayed.
    needs_recovery: AtomicBool,
    /// The highest etcd revision this process knows is committed: its own writes' and what
    /// linearizable reads (the first at connect) saw. A serializable read below it is stale.
    floor: AtomicI64,
    /// With HA, the lock every write must still hold (see [`crate::ha::HaBackend::fence`]).
    fence: std::sync::RwLock<Option<ha::Fence>>,
    /// Whether this process is the only writer under the prefix, so that it may answer reads
    /// from its cache and accept serializable reads at its revision floor. True without HA;
    /// with HA only while this node holds the lock.
    exclusive: AtomicBool,
    /// A standby follows the store's changes (see [`crate::ha::HaBackend::follow`]), so its
    /// cache stays true although another node writes.
    following: AtomicBool,
    /// The newest revision of a followed change applied to the cache: a read older than it may
    /// have missed that change, so it does not fill the cache (see [`ReadCache::observe`]).
    followed: AtomicI64,
    /// The revision of this process's last committed write of data.
    last_write: AtomicI64,
    endpoints: String,
    /// Values this process read or wrote, by etcd key; `None` when disabled.
    cache: Option<ReadCache>,
    list_page: i64,
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("needs_recovery", &self.needs_recovery.load(Ordering::Relaxed))
            .finish()
    }
}

/// A transaction etcd applied: the revision its answer names, and whether it changed anything
/// (only then is that revision its own).
#[derive(Debug, Clone, Copy)]
struct Committed {
    revision: i64,
    changed: bool,
}

/// One op reduced to its final effect, with its etcd key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }

    fn size(&self) -> usize {
        match self {
            Write::Put { key, value } => key.len() + value.len() + OP_OVERHEAD,
            Write::Delete { key } => key.len() + OP_OVERHEAD,
        }
    }

    fn txn_op(&self) -> TxnOp {
        match self {
            Write::Put { key, value } => TxnOp::put(key.as_bytes(), value.clone(), None),
            Write::Delete { key } => TxnOp::delete(key.as_bytes(), None),
        }
    }
}

/// Where an interrupted batch stops, for tests of crash recovery: storage is left as a process
/// killed there would leave it, and the backend behaves as one whose batch failed there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStop {
    /// After this many chunks of the intent, before its marker.
    BeforeMarker { chunks: usize },
    /// After the marker and this many of the transactions that apply the batch.
    AfterMarker { transactions: usize },
}

impl EtcdBackend {
    /// Connects, checks that etcd answers, and replays what an earlier process left half done.
    /// Fails (never hangs) when etcd cannot be reached within the request timeout.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdBackend, StorageError> {
        if options.endpoints.is_empty() {
            return Err(StorageError::Unavailable("no etcd endpoint given".into()));
        }
        if !options.prefix.ends_with('/') {
            return Err(StorageError::InvalidKey(format!(
                "the etcd key prefix {:?} must end with '/'",
                options.prefix
            )));
        }
        let endpoints = options.endpoints.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.request_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout)
            // Without a leader etcd cannot commit: fail fast instead of waiting for one.
            .with_require_leader(true);
        if let Some((user, password)) = &options.credentials {
            connect = connect.with_user(user.clone(), password.as_str());
        }
        if let Some(tls) = &options.tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key.as_slice()));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            connect = connect.with_tls(config);
        }
        let unreachable = |err: String| StorageError::Unavailable(format!("etcd at {endpoints}: {err}"));
        let intents = format!("{}{INTENT_SUFFIX}", options.prefix.trim_end_matches('/'));
        let members = options
            .endpoints
            .iter()
            .map(|url| Member {
                url: url.clone(),
                client: std::sync::RwLock::new(None),
                idle: std::sync::Mutex::new(Vec::new()),
            })
            .collect();
        let backend = EtcdBackend {
            members,
            current: AtomicUsize::new(0),
            connect,
            prefix: options.prefix,
            intents,
            timeout: options.request_timeout,
            max_request_bytes: options.max_request_bytes,
            max_txn_ops: options.max_txn_ops.max(2),
            gate: tokio::sync::RwLock::new(()),
            needs_recovery: AtomicBool::new(false),
            floor: AtomicI64::new(0),
            fence: std::sync::RwLock::new(None),
            exclusive: AtomicBool::new(true),
            following: AtomicBool::new(false),
            followed: AtomicI64::new(0),
            last_write: AtomicI64::new(0),
            endpoints: endpoints.clone(),
            cache: ReadCache::new(options.cache_entries),
            list_page: options.list_page.max(2),
        };
        // A first read proves etcd answers (and that the credentials work) before anything starts.
        backend.range_keys(backend.prefix.as_bytes(), &prefix_end(&backend.prefix), 1, 0).await.map_err(
            |err| match err {
                StorageError::Unavailable(why) => unreachable(why),
                other => other,
            },
        )?;
        {
            let _exclusive = backend.gate.write().await;
            backend.recover().await?;
        }
        Ok(backend)
    }

    fn data_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The client of member `index`, connecting it on first use.
    async fn member_client(&self, index: usize) -> Result<Client, etcd_client::Error> {
        let member = &self.members[index];
        if let Some(client) = member.client.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(client);
        }
        let client = Client::connect([member.url.as_str()], Some(self.connect.clone())).await?;
        *member.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        Ok(client)
    }

    /// A KV handle on member `index`, connecting the member on first use.
    async fn take_kv(&self, index: usize) -> Result<KvClient, etcd_client::Error> {
        if let Some(kv) = self.members[index].idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(kv);
        }
        Ok(self.member_client(index).await?.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// One etcd call, bounded by the request timeout. When a member cannot take it (refused,
    /// reset, no leader, no answer) the call moves on to the next member, round after round
    /// with a short pause between rounds, so that it outlasts an etcd election (a second or
    /// two after the leader dies); when the time is up, etcd is unavailable. `attempt` makes the
    /// call on the member it is given.
    async fn failover<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, StorageError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        const BETWEEN_ROUNDS: Duration = Duration::from_millis(100);
        const SLOW_MEMBER_PATIENCE: Duration = Duration::from_secs(2);
        let deadline = Instant::now() + self.timeout;
        let count = self.members.len();
        let mut last_error = None;
        'rounds: loop {
            for tried in 0..count {
                let index = self.current.load(Ordering::Relaxed) % count;
                // The time left, shared among the members not tried yet in this round, so that
                // one that hangs (partitioned) leaves time for the others; but never so little
                // that a healthy member slowed by load is given up on while it commits (dead
                // members and members without a leader answer at once).
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break 'rounds;
                }
                let share =
                    (remaining / u32::try_from(count - tried).unwrap_or(1)).max(remaining.min(SLOW_MEMBER_PATIENCE));
                let error = match tokio::time::timeout(share, attempt(index)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(err)) if !member_failure(&err) => return Err(self.error(what, err)),
                    Ok(Err(err)) => self.error(what, err),
                    Err(_) => StorageError::Unavailable(format!(
                        "etcd at {} did not answer a {what}",
                        self.members[index].url
                    )),
                };
                tracing::debug!(member = %self.members[index].url, error = %error, "moving on to the next etcd member");
                // Concurrent callers that saw the same member fail move on once, not once each.
                let _ = self.current.compare_exchange(index, (index + 1) % count, Ordering::Relaxed, Ordering::Relaxed);
                last_error = Some(error);
            }
            let pause = BETWEEN_ROUNDS.min(deadline.saturating_duration_since(Instant::now()));
            if pause.is_zero() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Err(last_error.unwrap_or_else(|| {
            StorageError::Unavailable(format!(
                "etcd did not answer a {what} within {:?} ({})",
                self.timeout, self.endpoints
            ))
        }))
    }

    /// A KV call with [`EtcdBackend::failover`]: `call` is handed a KV handle from the member's
    /// pool and gives it back with its result.
    async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StorageError>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = (KvClient, Result<T, etcd_client::Error>)>,
    {
        let call = &call;
        self.failover(what, |index| async move {
            let (kv, result) = call(self.take_kv(index).await?).await;
            self.members[index].idle.lock().unwrap_or_else(|p| p.into_inner()).push(kv);
            result
        })
        .await
    }

    /// A call on a member's whole client (leases and other rare operations), with the same
    /// failover as KV calls.
    async fn call_client<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StorageError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let call = &call;
        self.failover(what, |index| async move { call(self.member_client(index).await?).await }).await
    }

    fn error(&self, what: &str, err: etcd_client::Error) -> StorageError {
        use etcd_client::Error as E;
        use tonic::Code;
        match err {
            E::GRpcStatus(status) => {
                let message = status.message().to_owned();
                match status.code() {
                    _ if message.contains("request is too large") => {
                        StorageError::TooLarge { backend: "etcd", limit: self.max_request_bytes }
                    }
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::Unknown => StorageError::Unavailable(format!("etcd {what}: {message}")),
                    Code::Unauthenticated | Code::PermissionDenied => {
                        StorageError::Io(format!("etcd refused the {what}: {message}"))
                    }
                    _ => StorageError::Io(format!("etcd {what}: {message}")),
                }
            }
            E::TransportError(err) => StorageError::Unavailable(format!("etcd {what}: {err}")),
            E::IoError(err) => StorageError::Unavailable(format!("etcd {what}: {err}")),
            other => StorageError::Io(format!("etcd {what}: {other}")),
        }
    }

    /// Replays an intent that a failed batch left, if any, before an operation runs.
    async fn ready(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, StorageError> {
        loop {
            if self.needs_recovery.load(Ordering::Acquire) {
                let _exclusive = self.gate.write().await;
                if self.needs_recovery.load(Ordering::Acquire) {
                    self.recover().await?;
                    self.needs_recovery.store(false, Ordering::Release);
                }
            }
            let shared = self.gate.read().await;
            if !self.needs_recovery.load(Ordering::Acquire) {
                return Ok(shared);
            }
        }
    }

    /// Keys in `[start, end)`, at most `limit` (0: no limit), at `revision` (0: the latest).
    async fn range_keys(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<(Vec<String>, bool, i64), StorageError> {
        let mut options = GetOptions::new().with_range(end.to_vec()).with_keys_only().with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = self
            .call("listing", |mut kv| {
                let (start, options) = (start.to_vec(), options.clone());
                async move {
                    let result = kv.get(start, Some(options)).await;
                    (kv, result)
                }
            })
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        self.floor.fetch_max(revision, Ordering::AcqRel);
        let more = response.more();
        let keys = response
            .kvs()
            .iter()
            .map(|kv| {
                kv.key_str()
                    .map(str::to_owned)
                    .map_err(|_| StorageError::Io("etcd holds a key under the prefix that is not UTF-8".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, more, revision))
    }

    /// The value at etcd key `key` (a linearizable read).
    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_at_revision(key).await?.0)
    }

    /// The value at etcd key `key` and the store's revision the read saw.
    ///
    /// Read from the member's own state (a *serializable* read, which waits for no consensus
    /// round), and accepted only when that state is at least at [`EtcdBackend::floor`]: then it
    /// holds every write this process knows committed, which, with this process the only writer,
    /// is every write. A member that is behind (just switched to, catching up) is read again
    /// linearizably.
    async fn get_at_revision(&self, key: &str) -> Result<(Option<Vec<u8>>, i64), StorageError> {
        let floor = self.floor.load(Ordering::Acquire);
        let (value, revision) = self.get_with(key, GetOptions::new().with_serializable()).await?;
        if revision >= floor {
            return Ok((value, revision));
        }
        self.get_with(key, GetOptions::new()).await
    }

    async fn get_with(&self, key: &str, options: GetOptions) -> Result<(Option<Vec<u8>>, i64), StorageError> {
        let mut response = self
            .call("read", |mut kv| {
                let (key, options) = (key.as_bytes().to_vec(), options.clone());
                async move {
                    let result = kv.get(key, Some(options)).await;
                    (kv, result)
                }
            })
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        self.floor.fetch_max(revision, Ordering::AcqRel);
        Ok((response.take_kvs().into_iter().next().map(|kv| kv.into_key_value().1), revision))
    }

    /// Applies `writes` in one transaction.
    async fn commit(&self, writes: &[Write]) -> Result<(), StorageError> {
        if writes.is_empty() {
            return Ok(());
        }
        let cache = self.cache.as_ref().filter(|_| self.exclusive.load(Ordering::Acquire));
        let result = match cache {
            Some(cache) => {
                let in_flight = cache.begin(writes);
                let result = self.send(writes).await;
                in_flight.finish(result.as_ref().ok().map(|committed| committed.revision));
                result
            }
            None => self.send(writes).await,
        };
        let committed = result?;
        // A transaction that changed nothing (deletes of absent keys) made no revision of its
        // own: its header names the store's latest, perhaps a heartbeat's outside the data,
        // which a following standby never sees.
        if committed.changed {
            self.last_write.fetch_max(committed.revision, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Applies `writes` in one transaction, around the cache.
    async fn send(&self, writes: &[Write]) -> Result<Committed, StorageError> {
        if writes.is_empty() {
            return Ok(Committed { revision: 0, changed: false });
        }
        self.fenced(writes.iter().map(Write::txn_op).collect()).await
    }

    /// Sends `ops` in one transaction under the fence, if there is one.
    async fn fenced(&self, ops: Vec<TxnOp>) -> Result<Committed, StorageError> {
        let fence = self.fence.read().unwrap_or_else(|p| p.into_inner()).clone();
        let txn = match &fence {
            Some(fence) => Txn::new().when([fence.compare()]).and_then(ops),
            None => Txn::new().and_then(ops),
        };
        let response = self
            .call("write", |mut kv| {
                let txn = txn.clone();
                async move {
                    let result = kv.txn(txn).await;
                    (kv, result)
                }
            })
            .await?;
        if !response.succeeded() {
            // Another node holds the lock now (or none does): nothing was written.
            if let Some(held) = fence.and_then(|fence| fence.held) {
                held.mark_lost();
            }
            return Err(StorageError::Fenced);
        }
        let revision = response.header().map_or(0, |header| header.revision());
        self.floor.fetch_max(revision, Ordering::AcqRel);
        let changed = response.op_responses().iter().any(|op| match op {
            TxnOpResponse::Put(_) | TxnOpResponse::Txn(_) => true,
            TxnOpResponse::Delete(deleted) => deleted.deleted() > 0,
            TxnOpResponse::Get(_) => false,
        });
        Ok(Committed { revision, changed })
    }

    /// The most a transaction may carry in keys and values.
    fn budget(&self) -> usize {
        self.max_request_bytes.saturating_sub(REQUEST_OVERHEAD).max(1)
    }

    fn check_size(&self, write: &Write) -> Result<(), StorageError> {
        if write.size() > self.budget() {
            return Err(StorageError::TooLarge { backend: "etcd", limit: self.max_request_bytes });
        }
        Ok(())
    }

    /// Splits `writes` into groups that each fit one transaction.
    fn transactions(&self, writes: Vec<Write>) -> Vec<Vec<Write>> {
        let mut groups: Vec<Vec<Write>> = Vec::new();
        let mut bytes = 0;
        for write in writes {
            let size = write.size();
            let fits =
                groups.last().is_some_and(|group| group.len() < self.max_txn_ops - 1 && bytes + size <= self.budget());
            if !fits {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            groups.last_mut().expect("a group was just pushed").push(write);
        }
        groups
    }

    /// The batch as final writes per key, in first-seen order.
    fn reduce(&self, ops: Vec<Op>) -> Vec<Write> {
        let mut writes: Vec<Write> = Vec::with_capacity(ops.len());
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for op in ops {
            let write = match op {
                Op::Put { key, value } => Write::Put { key: self.data_key(&key), value },
                Op::Delete { key } => Write::Delete { key: self.data_key(&key) },
            };
            match index.get(write.key()) {
                Some(&at) => writes[at] = write,
                None => {
                    index.insert(write.key().to_owned(), writes.len());
                    writes.push(write);
                }
            }
        }
        writes
    }

    async fn apply_batch(&self, ops: Vec<Op>, stop: Option<BatchStop>) -> Result<(), StorageError> {
        validate_ops(&ops)?;
        let writes = self.reduce(ops);
        for write in &writes {
            self.check_size(write)?;
        }
        let total: usize = writes.iter().map(Write::size).sum();
        if stop.is_none() && writes.len() < self.max_txn_ops && total <= self.budget() {
            let _shared = self.ready().await?;
            return self.commit(&writes).await;
        }
        let _exclusive = self.gate.write().await;
        if self.needs_recovery.load(Ordering::Acquire) {
            self.recover().await?;
            self.needs_recovery.store(false, Ordering::Release);
        }
        let id = intent_id();
        match self.apply_through_intent(&id, writes, stop).await {
            Ok(()) => Ok(()),
            // A test's stand-in for a crash: leave storage as a dead process would (and if this
            // process goes on, it must replay before anything else, as after a real failure).
            Err(err) if stop.is_some() => {
                self.needs_recovery.store(true, Ordering::Release);
                Err(err)
            }
            Err(err) => {
                // Whether the marker made it is unknown: replay or discard the intent before
                // anything else runs. If it was replayed, the batch is applied after all.
                self.needs_recovery.store(true, Ordering::Release);
                match self.recover().await {
                    Ok(replayed) => {
                        self.needs_recovery.store(false, Ordering::Release);
                        if replayed.contains(&id) {
                            return Ok(());
                        }
                        Err(err)
                    }
                    Err(_) => Err(err),
                }
            }
        }
    }

    async fn apply_through_intent(
        &self,
        id: &str,
        writes: Vec<Write>,
        stop: Option<BatchStop>,
    ) -> Result<(), StorageError> {
        let chunks = encode_chunks(&writes, self.budget());
        for (n, chunk) in chunks.iter().enumerate() {
            if stop == Some(BatchStop::BeforeMarker { chunks: n }) {
                return Err(interrupted());
            }
            let key = format!("{}{id}/{n:06}", self.intents);
            self.send(&[Write::Put { key, value: chunk.clone() }]).await?;
        }
        let marker = format!("{MARKER_VERSION} {} {}", chunks.len(), writes.len());
        self.send(&[Write::Put { key: format!("{}{id}", self.intents), value: marker.into_bytes() }]).await?;
        for (n, group) in self.transactions(writes).into_iter().enumerate() {
            if stop == Some(BatchStop::AfterMarker { transactions: n }) {
                return Err(interrupted());
            }
            self.commit(&group).await?;
        }
        self.drop_intent(id).await
    }

    async fn drop_intent(&self, id: &str) -> Result<(), StorageError> {
        let marker = format!("{}{id}", self.intents);
        let chunks = format!("{marker}/");
        self.fenced(vec![
            TxnOp::delete(marker.as_bytes(), None),
            TxnOp::delete(chunks.as_bytes(), Some(DeleteOptions::new().with_prefix())),
        ])
        .await
        .map(|_| ())
    }

    /// Replays every committed intent and deletes the chunks of uncommitted ones; returns the
    /// ids of the intents it replayed. The caller holds the gate exclusively.
    async fn recover(&self) -> Result<Vec<String>, StorageError> {
        if let Some(cache) = &self.cache {
            cache.purge();
        }
        let (keys, _, _) = self.range_keys(self.intents.as_bytes(), &prefix_end(&self.intents), 0, 0).await?;
        let mut ids: Vec<&str> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(self.intents.as_str()))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        ids.dedup();
        let mut replayed = Vec::new();
        for id in ids {
            let marker_key = format!("{}{id}", self.intents);
            let marker = self.get_raw(&marker_key).await?;
            let Some(marker) = marker else {
                tracing::info!("deleting the chunks of a batch that never committed");
                self.drop_intent(id).await?;
                continue;
            };
            let writes = self.read_intent(id, &marker).await?;
            tracing::warn!(ops = writes.len(), "replaying a batch that an earlier run committed but did not finish");
            for group in self.transactions(writes) {
                self.commit(&group).await?;
            }
            self.drop_intent(id).await?;
            replayed.push(id.to_owned());
        }
        Ok(replayed)
    }

    async fn read_intent(&self, id: &str, marker: &[u8]) -> Result<Vec<Write>, StorageError> {
        let corrupt = |why: &str| {
            StorageError::Io(format!("batch intent {id} in etcd is malformed ({why}); refusing to replay half of it"))
        };
        let marker = std::str::from_utf8(marker).map_err(|_| corrupt("marker"))?;
        let parts: Vec<&str> = marker.split(' ').collect();
        let [MARKER_VERSION, chunks, ops] = parts.as_slice() else { return Err(corrupt("marker")) };
        let chunks: usize = chunks.parse().map_err(|_| corrupt("chunk count"))?;
        let ops: usize = ops.parse().map_err(|_| corrupt("op count"))?;
        let mut writes = Vec::with_capacity(ops);
        for n in 0..chunks {
            let key = format!("{}{id}/{n:06}", self.intents);
            let chunk = self.get_raw(&key).await?.ok_or_else(|| corrupt("missing chunk"))?;
            decode_chunk(&chunk, &mut writes).ok_or_else(|| corrupt("chunk"))?;
        }
        if writes.len() != ops {
            return Err(corrupt("op count"));
        }
        Ok(writes)
    }

    /// [`Backend::batch`], stopped at `stop` as a crash would stop it: for tests of recovery.
    #[doc(hidden)]
    pub async fn batch_interrupted(&self, ops: Vec<Op>, stop: BatchStop) -> Result<(), StorageError> {
        self.apply_batch(ops, Some(stop)).await
    }
}

/// How far ahead of its start a listing request should reach: a page's worth of key space, as
/// the last full page measured it. Keys are compared as numbers: the 8 bytes after the prefix
/// the page's first and last keys share.
#[derive(Debug, Default)]
struct Window {
    /// The shared prefix and the span of the last full page, when one was measured.
    span: Option<(Vec<u8>, u64)>,
}

impl Window {
    fn learn(&mut self, first: &str, last: &str) {
        let (first, last) = (first.as_bytes(), last.as_bytes());
        let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let span = number_at(last, common).saturating_sub(number_at(first, common));
        self.span = (span > 0).then(|| (first[..common].to_vec(), span));
    }

    fn widen(&mut self) {
        if let Some((_, span)) = &mut self.span {
            *span = span.saturating_mul(4);
        }
    }

    /// The window's upper bound from `start`; `None`: no estimate (read to the prefix's end).
    fn upper(&self, start: &[u8]) -> Option<Vec<u8>> {
        let (shared, span) = self.span.as_ref()?;
        if !start.starts_with(shared) {
            return None;
        }
        let reach = number_at(start, shared.len()).checked_add(*span)?;
        let mut upper = shared.clone();
        upper.extend_from_slice(&reach.to_be_bytes());
        (upper.as_slice() > start).then_some(upper)
    }
}

/// The 8 bytes of `key` from `at` (zero past its end) as a big-endian number.
fn number_at(key: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, byte) in key.iter().skip(at).take(8).enumerate() {
        bytes[i] = *byte;
    }
    u64::from_be_bytes(bytes)
}

/// Whether `err` says the member could not take the request (so another member may), rather
/// than that etcd refused it.
fn member_failure(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match err {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
            // A call on a connection that broke under it (its member just died) comes back as
            // Unknown "transport error". Statuses etcd sends never carry a source; tonic gives one
            // only to a status it made here from such a local failure.
            tonic::Code::Unknown => std::error::Error::source(status).is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// What this process knows of a key's value, and the etcd revision it was true at.
#[derive(Debug, Clone)]
struct Cached {
    value: Option<Arc<[u8]>>,
    revision: i64,
}

/// A key some write of this process is changing right now.
#[derive(Debug, Default)]
struct Pending {
    writers: u32,
    /// The newest committed value among the writes that have finished.
    newest: Option<Cached>,
    /// One of the writes failed: what etcd holds is unknown.
    uncertain: bool,
}

#[derive(Debug)]
struct Shard {
    known: lru::LruCache<String, Cached>,
    /// Kept apart from the LRU so that eviction can never forget a write in flight.
    pending: std::collections::HashMap<String, Pending>,
}

/// Writes in flight in the cache; see [`ReadCache::begin`].
struct InFlight<'a> {
    cache: &'a ReadCache,
    writes: &'a [Write],
    finished: bool,
}

impl InFlight<'_> {
    fn finish(mut self, committed_at: Option<i64>) {
        self.finished = true;
        self.cache.end(self.writes, committed_at);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.end(self.writes, None);
        }
    }
}

/// The read cache (see the module documentation for why it stays correct).
///
/// While a write is in flight its keys are *pending*: reads of them go to etcd, so a reader
/// can never combine a value etcd has already replaced with one it reads fresh (a half batch).
/// When the last write on a key finishes, the newest committed value becomes known, or, if a
/// write's outcome is unknown, the key is forgotten.
struct ReadCache {
    shards: Vec<std::sync::Mutex<Shard>>,
    /// Bumped by every write whose outcome is unknown: a read in flight across it does not fill.
    generation: AtomicU64,
}

impl ReadCache {
    fn new(entries: usize) -> Option<ReadCache> {
        let per_shard = std::num::NonZeroUsize::new(entries.div_ceil(CACHE_SHARDS))?;
        let shards = (0..CACHE_SHARDS)
            .map(|_| {
                std::sync::Mutex::new(Shard {
                    known: lru::LruCache::new(per_shard),
                    pending: std::collections::HashMap::new(),
                })
            })
            .collect();
        Some(ReadCache { shards, generation: AtomicU64::new(0) })
    }

    fn shard_index(key: &str) -> usize {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % CACHE_SHARDS as u64) as usize
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[Self::shard_index(key)].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every shard that `writes` touch, locked in index order (so two batches cannot deadlock),
    /// so that all of a batch's keys change together as readers see them.
    fn lock_all(&self, writes: &[Write]) -> Vec<(usize, std::sync::MutexGuard<'_, Shard>)> {
        let mut indexes: Vec<usize> = writes.iter().map(|write| Self::shard_index(write.key())).collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes.into_iter().map(|i| (i, self.shards[i].lock().unwrap_or_else(|p| p.into_inner()))).collect()
    }

    fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let mut shard = self.shard(key);
        if shard.pending.contains_key(key) {
            return None;
        }
        shard.known.get(key).map(|cached| cached.value.as_deref().map(<[u8]>::to_vec))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what a read started at `started` saw at `revision`, unless something newer is known,
    /// a write on the key is in flight, or a write's outcome became unknown meanwhile. While
    /// following, also unless the read is older than a followed change already applied
    /// (`followed`): that change may have been to this key, before it was cached.
    fn fill(&self, key: &str, value: Option<&[u8]>, revision: i64, started: u64, followed: Option<&AtomicI64>) {
        let mut shard = self.shard(key);
        if self.generation() != started
            || followed.is_some_and(|followed| revision < followed.load(Ordering::Acquire))
            || shard.pending.contains_key(key)
            || shard.known.peek(key).is_some_and(|known| known.revision >= revision)
        {
            return;
        }
        shard.known.put(key.to_owned(), Cached { value: value.map(Arc::from), revision });
    }

    /// `writes` are about to be sent. If the returned guard is dropped unfinished (the caller
    /// gave up), the writes count as having an unknown outcome.
    fn begin<'a>(&'a self, writes: &'a [Write]) -> InFlight<'a> {
        let mut shards = self.lock_all(writes);
        for write in writes {
            let index = Self::shard_index(write.key());
            let Some((_, shard)) = shards.iter_mut().find(|(i, _)| *i == index) else { continue };
            shard.known.pop(write.key());
            shard.pending.entry(write.key().to_owned()).or_default().writers += 1;
        }
        InFlight { cache: self, writes, finished: false }
    }

    /// `writes` finished: committed at a revision, or with an unknown outcome.
    fn end(&self, writes: &[Write], committed_at: Option<i64>) {
        if committed_at.is_none() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let mut shards = self.lock_all(writes);
        for write in writes {
            let index = Self::shard_index(write.key());
            let Some((_, shard)) = shards.iter_mut().find(|(i, _)| *i == index) else { continue };
            let Some(pending) = shard.pending.get_mut(write.key()) else { continue };
            match committed_at {
                Some(revision) if pending.newest.as_ref().is_none_or(|newest| newest.revision < revision) => {
                    let value = match write {
                        Write::Put { value, .. } => Some(Arc::from(value.as_slice())),
                        Write::Delete { .. } => None,
                    };
                    pending.newest = Some(Cached { value, revision });
                }
                Some(_) => {}
                None => pending.uncertain = true,
            }
            pending.writers -= 1;
            if pending.writers == 0 {
                if let Some(done) = shard.pending.remove(write.key()) {
                    if let (false, Some(newest)) = (done.uncertain, done.newest) {
                        shard.known.put(write.key().to_owned(), newest);
                    }
                }
            }
        }
    }

    /// A change another node made at `revision`, seen by the follow: a cached older value gives
    /// way to it. `followed` is raised to `revision` under the key's shard lock, so a read of
    /// the key from before the change either filled the cache first (and is replaced here) or
    /// finds `followed` beyond it and does not fill.
    fn observe(&self, key: &str, value: Option<&[u8]>, revision: i64, followed: &AtomicI64) {
        let mut shard = self.shard(key);
        followed.fetch_max(revision, Ordering::AcqRel);
        if shard.known.peek(key).is_some_and(|known| known.revision < revision) {
            shard.known.put(key.to_owned(), Cached { value: value.map(Arc::from), revision });
        }
    }

    fn purge(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).known.clear();
        }
    }
}

fn interrupted() -> StorageError {
    StorageError::Io("batch interrupted for a test".into())
}

fn intent_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Time orders replays as the batches were made; the counter tells apart two in one tick.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{nanos:032x}-{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The smallest key greater than every key that starts with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd reads a range end of "\0" as "to the end".
    vec![0]
}

/// Writes as chunks of at most `budget` bytes: per write, a tag byte (`P` or `D`), the key's
/// length (u32, big endian) and the key, and for a put the value's length and the value.
fn encode_chunks(writes: &[Write], budget: usize) -> Vec<Vec<u8>> {
    let mut chunks = vec![Vec::new()];
    for write in writes {
        let mut encoded = Vec::with_capacity(write.size());
        match write {
            Write::Put { key, value } => {
                encoded.push(b'P');
                push_field(&mut encoded, key.as_bytes());
                push_field(&mut encoded, value);
            }
            Write::Delete { key } => {
                encoded.push(b'D');
                push_field(&mut encoded, key.as_bytes());
            }
        }
        let current = chunks.last_mut().expect("there is always a chunk");
        if !current.is_empty() && current.len() + encoded.len() > budget {
            chunks.push(encoded);
        } else {
            current.extend_from_slice(&encoded);
        }
    }
    chunks
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

fn decode_chunk(mut chunk: &[u8], out: &mut Vec<Write>) -> Option<()> {
    fn field<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(input.get(..4)?.try_into().ok()?) as usize;
        let value = input.get(4..4 + len)?;
        *input = &input[4 + len..];
        Some(value)
    }
    while let Some((&tag, rest)) = chunk.split_first() {
        chunk = rest;
        let key = String::from_utf8(field(&mut chunk)?.to_vec()).ok()?;
        match tag {
            b'P' => out.push(Write::Put { key, value: field(&mut chunk)?.to_vec() }),
            b'D' => out.push(Write::Delete { key }),
            _ => return None,
        }
    }
    Some(())
}

#[async_trait::async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        let _shared = self.ready().await?;
        let key = self.data_key(key);
        let exclusive = self.exclusive.load(Ordering::Acquire);
        let following = !exclusive && self.following.load(Ordering::Acquire);
        if !exclusive && !following {
            // Other nodes write too: only etcd knows the current value.
            return Ok(self.get_with(&key, GetOptions::new()).await?.0);
        }
        let Some(cache) = &self.cache else { return self.get_raw(&key).await };
        if let Some(known) = cache.get(&key) {
            return Ok(known);
        }
        let started = cache.generation();
        let (value, revision) = self.get_at_revision(&key).await?;
        let newer_than = if following { Some(&self.followed) } else { None };
        cache.fill(&key, value.as_deref(), revision, started, newer_than);
        Ok(value)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        validate_key(key)?;
        let write = Write::Put { key: self.data_key(key), value };
        self.check_size(&write)?;
        let _shared = self.ready().await?;
        self.commit(std::slice::from_ref(&write)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        let _shared = self.ready().await?;
        self.commit(&[Write::Delete { key: self.data_key(key) }]).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let _shared = self.ready().await?;
        let full = self.data_key(prefix);
        let end = prefix_end(&full);
        // A compaction between two pages makes the first page's revision unreadable: start over.
        let mut attempts = 0;
        'listing: loop {
            attempts += 1;
            let mut children: Vec<String> = Vec::new();
            let mut start = full.as_bytes().to_vec();
            let mut revision = 0;
            // etcd 3.4 walks every key of a request's range, whatever its limit: each request asks
            // for a window about one page wide, estimated from the last page, not for the whole
            // rest of the prefix. Windows only bound the work; the pages cover the range without
            // a gap either way.
            let mut window = Window::default();
            loop {
                let upper = window.upper(&start).filter(|upper| *upper < end).unwrap_or_else(|| end.clone());
                let (keys, more, at) = match self.range_keys(&start, &upper, self.list_page, revision).await {
                    Ok(page) => page,
                    Err(StorageError::Io(why)) if revision > 0 && why.contains("compacted") && attempts < 3 => {
                        continue 'listing;
                    }
                    Err(err) => return Err(err),
                };
                if revision == 0 {
                    revision = at;
                }
                for key in &keys {
                    let Some(rest) = key.strip_prefix(full.as_str()) else { continue };
                    let child = match rest.find('/') {
                        Some(slash) => &rest[..=slash],
                        // The prefix itself is not one of its own children.
                        None if rest.is_empty() => continue,
                        None => rest,
                    };
                    if children.last().map(String::as_str) != Some(child) {
                        children.push(child.to_owned());
                    }
                }
                match keys.last() {
                    Some(last) if more => {
                        window.learn(keys.first().map_or("", String::as_str), last);
                        let rest = &last[full.len()..];
                        start = match rest.find('/') {
                            // Past everything in that folder: '0' is the byte after '/'.
                            Some(slash) => format!("{full}{}0", &rest[..slash]).into_bytes(),
                            None => format!("{last}\0").into_bytes(),
                        };
                    }
                    // The whole range is read.
                    _ if upper == end => break,
                    // The window held less than a page: go on from its end, with a wider one.
                    _ => {
                        start = upper;
                        window.widen();
                    }
                }
            }
            return Ok(children);
        }
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.apply_batch(ops, None).await
    }

    /// A write is durable (committed by a quorum) when etcd acknowledges it: nothing to flush.
    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_ends() {
        assert_eq!(prefix_end("/arcanum/"), b"/arcanum0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    /// A member that dies under an open connection fails the call with a status tonic made
    /// locally ("transport error"); the call must move on to another member, not give up.
    #[test]
    fn a_broken_connection_is_a_member_failure_and_etcds_own_refusals_are_not() {
        use etcd_client::Error as E;
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let local = tonic::Status::from_error(Box::new(broken));
        assert_eq!(local.code(), tonic::Code::Unknown);
        assert!(member_failure(&E::GRpcStatus(local)));
        assert!(member_failure(&E::GRpcStatus(tonic::Status::unavailable("etcdserver: no leader"))));
        assert!(!member_failure(&E::GRpcStatus(tonic::Status::unknown("etcdserver: sent by etcd"))));
        assert!(!member_failure(&E::GRpcStatus(tonic::Status::invalid_argument("etcdserver: too many operations"))));
    }

    fn put(key: &str, value: &[u8]) -> Write {
        Write::Put { key: key.to_owned(), value: value.to_vec() }
    }

    #[test]
    fn the_cache_keeps_the_newest_value_and_nothing_uncertain() {
        let cache = ReadCache::new(64).expect("a cache");
        assert!(ReadCache::new(0).is_none(), "0 entries: no cache");
        cache.fill("k", Some(b"old"), 5, cache.generation(), None);
        assert_eq!(cache.get("k"), Some(Some(b"old".to_vec())));
        cache.fill("k", Some(b"older"), 4, cache.generation(), None);
        assert_eq!(cache.get("k"), Some(Some(b"old".to_vec())), "an older read never replaces a newer value");

        // While a write is in flight its key is a miss, and a read cannot fill it.
        let writes = [put("k", b"new"), Write::Delete { key: "gone".into() }];
        let in_flight = cache.begin(&writes);
        assert_eq!(cache.get("k"), None);
        cache.fill("k", Some(b"racing read"), 9, cache.generation(), None);
        in_flight.finish(Some(7));
        assert_eq!(cache.get("k"), Some(Some(b"new".to_vec())));
        assert_eq!(cache.get("gone"), Some(None), "a delete is known as absent");

        // Two writers on one key: the newest revision wins whichever finishes last.
        let (first, second) = ([put("k", b"at 10")], [put("k", b"at 11")]);
        let (a, b) = (cache.begin(&first), cache.begin(&second));
        b.finish(Some(11));
        assert_eq!(cache.get("k"), None, "still pending while the first write is out");
        a.finish(Some(10));
        assert_eq!(cache.get("k"), Some(Some(b"at 11".to_vec())));

        // An unknown outcome (an error, or a caller that gave up) forgets the key, and a read that
        // was in flight across it does not fill the cache.
        let started = cache.generation();
        let failed = [put("k", b"maybe")];
        drop(cache.begin(&failed));
        assert_eq!(cache.get("k"), None);
        cache.fill("k", Some(b"stale"), 20, started, None);
        assert_eq!(cache.get("k"), None);
        cache.fill("k", Some(b"fresh"), 21, cache.generation(), None);
        assert_eq!(cache.get("k"), Some(Some(b"fresh".to_vec())));
        cache.purge();
        assert_eq!(cache.get("k"), None);
    }

    #[test]
    fn a_followed_change_replaces_older_values_and_keeps_older_reads_out() {
        let cache = ReadCache::new(64).expect("a cache");
        let followed = AtomicI64::new(0);
        cache.fill("k", Some(b"v1"), 10, cache.generation(), Some(&followed));
        cache.observe("k", Some(b"v2"), 12, &followed);
        assert_eq!(cache.get("k"), Some(Some(b"v2".to_vec())), "a cached value gives way to a newer change");
        cache.observe("k", Some(b"v1 again"), 11, &followed);
        assert_eq!(cache.get("k"), Some(Some(b"v2".to_vec())), "an older change never replaces a newer one");
        cache.observe("gone", None, 13, &followed);
        assert_eq!(cache.get("gone"), None, "an uncached key stays unknown");
        // A read of `gone` from before its change (revision 12) must not fill: it missed it.
        cache.fill("gone", Some(b"stale"), 12, cache.generation(), Some(&followed));
        assert_eq!(cache.get("gone"), None);
        cache.fill("gone", None, 13, cache.generation(), Some(&followed));
        assert_eq!(cache.get("gone"), Some(None), "a read at or after every followed change fills");
        cache.observe("k", None, 14, &followed);
        assert_eq!(cache.get("k"), Some(None), "a delete is known as absent");
    }

    #[test]
    fn intents_round_trip_across_chunks() {
        let writes: Vec<Write> = (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    Write::Delete { key: format!("/p/k{i}") }
                } else {
                    Write::Put { key: format!("/p/k{i}"), value: vec![i as u8; i] }
                }
            })
            .collect();
        let chunks = encode_chunks(&writes, 4096);
        assert!(chunks.len() > 5 && chunks.iter().all(|chunk| chunk.len() <= 4096));
        let mut decoded = Vec::new();
        for chunk in &chunks {
            decode_chunk(chunk, &mut decoded).expect("decodes");
        }
        assert_eq!(decoded, writes);
        assert!(decode_chunk(b"X\0\0\0\x01k", &mut Vec::new()).is_none(), "unknown tag");
        assert!(decode_chunk(b"P\0\0\0\x09k", &mut Vec::new()).is_none(), "truncated");
    }
}

/// Against real etcd members (Debian's `etcd`, started per test on loopback).
#[cfg(test)]
mod against_etcd {
    use super::*;
    use std::time::Instant;

    use crate::etcd_harness::EtcdCluster;
    use crate::testing::exercise_backend;

    async fn backend(cluster: &EtcdCluster, prefix: &str) -> EtcdBackend {
        EtcdBackend::connect(EtcdOptions::new(cluster.endpoints(), prefix))
            .await
            .unwrap_or_else(|err| panic!("connecting to etcd: {err}\n{}", cluster.logs()))
    }

    /// Every key etcd holds under `prefix`, read around the backend.
    async fn raw_keys(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
        let mut client = Client::connect(cluster.endpoints(), None).await.expect("raw client");
        let response = client.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("range");
        response.kvs().iter().map(|kv| kv.key_str().expect("UTF-8 key").to_owned()).collect()
    }

    fn op_put(key: &str, value: &[u8]) -> Op {
        Op::Put { key: key.to_owned(), value: value.to_vec() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite_on_one_member() {
        let cluster = EtcdCluster::start(1).await;
        let etcd = backend(&cluster, "/arcanum/").await;
        exercise_backend(&etcd).await;
        exercise_backend(&etcd).await;
        assert_eq!(etcd.kind(), "etcd");
        let mut uncached = EtcdOptions::new(cluster.endpoints(), "/uncached/");
        uncached.cache_entries = 0;
        exercise_backend(&EtcdBackend::connect(uncached).await.expect("connect")).await;
        // The suite's 201-op batch went through an intent, which is gone again.
        assert!(raw_keys(&cluster, "/arcanum.batch-intents/").await.is_empty());
        // Another prefix is another store.
        let other = backend(&cluster, "/other/").await;
        other.put("k", b"v".to_vec()).await.unwrap();
        assert_eq!(etcd.get("k").await.unwrap(), None);
        assert_eq!(raw_keys(&cluster, "/other/").await, ["/other/k"]);
    }

    /// 1,000 puts of 2 KiB and a delete: more ops than one transaction may carry and more bytes
    /// than one request, stopped as a crash would stop it before and after its commit point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_op_batch_is_all_or_nothing_across_a_crash() {
        let cluster = EtcdCluster::start(1).await;
        let value = |i: usize| vec![(i % 251) as u8; 2048];
        let mut ops: Vec<Op> = (0..1000).map(|i| op_put(&format!("big/k{i:04}"), &value(i))).collect();
        ops.push(Op::Delete { key: "big/existing".into() });

        let first = backend(&cluster, "/arcanum/").await;
        first.put("big/existing", b"old".to_vec()).await.unwrap();
        first.batch_interrupted(ops.clone(), BatchStop::BeforeMarker { chunks: 1 }).await.unwrap_err();
        assert!(!raw_keys(&cluster, "/arcanum.batch-intents/").await.is_empty(), "the crash left a chunk");
        drop(first);
        let second = backend(&cluster, "/arcanum/").await;
        assert_eq!(second.list("big/").await.unwrap(), ["existing"], "an uncommitted batch must not appear");
        assert!(raw_keys(&cluster, "/arcanum.batch-intents/").await.is_empty(), "its chunks are cleaned up");

        second.batch_interrupted(ops.clone(), BatchStop::AfterMarker { transactions: 3 }).await.unwrap_err();
        let half = raw_keys(&cluster, "/arcanum/big/").await.len();
        assert!(half > 1 && half < 1001, "the crash came mid-apply ({half} keys written)");
        drop(second);
        let third = backend(&cluster, "/arcanum/").await;
        let listed = third.list("big/").await.unwrap();
        assert_eq!(listed.len(), 1000, "a committed batch is replayed whole");
        assert!(!listed.iter().any(|k| k == "existing"));
        for i in [0, 1, 499, 999] {
            assert_eq!(third.get(&format!("big/k{i:04}")).await.unwrap(), Some(value(i)));
        }
        assert!(raw_keys(&cluster, "/arcanum.batch-intents/").await.is_empty());

        // Uninterrupted, the same batch applies in one call.
        let mut again: Vec<Op> = (0..1000).map(|i| op_put(&format!("again/k{i:04}"), &value(i))).collect();
        again.push(op_put("again/k0000", b"last wins"));
        third.batch(again).await.unwrap();
        assert_eq!(third.list("again/").await.unwrap().len(), 1000);
        assert_eq!(third.get("again/k0000").await.unwrap().as_deref(), Some(&b"last wins"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_beyond_the_request_limit_is_refused_by_name() {
        let cluster = EtcdCluster::start(1).await;
        let etcd = backend(&cluster, "/arcanum/").await;
        let big = vec![7u8; 2 * 1024 * 1024];
        let err = etcd.put("too/big", big.clone()).await.unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { backend: "etcd", limit: DEFAULT_MAX_REQUEST_BYTES }), "{err}");
        assert!(err.to_string().contains("1572864"), "{err}");
        let err = etcd.batch(vec![op_put("too/small", b"x"), op_put("too/big", &big)]).await.unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { .. }), "{err}");
        assert_eq!(etcd.list("too/").await.unwrap(), Vec::<String>::new(), "nothing of the batch applied");
        // Just under the limit goes through.
        etcd.put("too/fits", vec![1u8; 1024 * 1024]).await.unwrap();
    }

    /// 6,000 keys with 4 KiB values (24 MB, far past what a range response may carry) list in
    /// pages of keys, here of 1,000 to exercise paging, and a page that ends inside a folder with
    /// 5,000 descendants skips the rest of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_read_keys_in_pages_never_values() {
        let cluster = EtcdCluster::start(1).await;
        let mut options = EtcdOptions::new(cluster.endpoints(), "/arcanum/");
        options.list_page = 1000;
        let etcd = EtcdBackend::connect(options).await.unwrap();
        let value = vec![9u8; 4096];
        for chunk in (0..6000).collect::<Vec<_>>().chunks(100) {
            let ops = chunk
                .iter()
                .map(|i| {
                    let key = if *i < 5000 { format!("leases/deep/{i:05}") } else { format!("leases/k{i:05}") };
                    op_put(&key, &value)
                })
                .collect();
            etcd.batch(ops).await.unwrap();
        }
        let listed = etcd.list("leases/").await.unwrap();
        assert_eq!(listed.len(), 1001);
        assert_eq!(listed[0], "deep/");
        assert_eq!(listed[1], "k05000");
        assert_eq!(etcd.list("leases/deep/").await.unwrap().len(), 5000);
    }

    /// A batch that failed after its commit point leaves the backend refusing everything until
    /// it can replay it, and it replays by itself once etcd is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_batch_nothing_runs_until_it_is_replayed() {
        let mut cluster = EtcdCluster::start(1).await;
        let mut options = EtcdOptions::new(cluster.endpoints(), "/arcanum/");
        options.request_timeout = Duration::from_secs(1);
        let etcd = EtcdBackend::connect(options).await.unwrap();
        let ops: Vec<Op> = (0..300).map(|i| op_put(&format!("r/k{i:03}"), b"v")).collect();
        etcd.batch_interrupted(ops, BatchStop::AfterMarker { transactions: 1 }).await.unwrap_err();

        cluster.kill_member(0);
        let err = etcd.get("r/k000").await.unwrap_err();
        assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
        assert!(matches!(etcd.put("r/other", b"x".to_vec()).await.unwrap_err(), StorageError::Unavailable(_)));

        cluster.start_member(0);
        cluster.wait_ready().await;
        assert_eq!(etcd.list("r/").await.unwrap().len(), 300, "the batch was replayed before the listing");
        etcd.put("r/other", b"x".to_vec()).await.unwrap();
    }

    /// Three members: one down, writes go on; two down, writes fail as unavailable within the
    /// timeout; back, writes resume, and everything acknowledged is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_three_member_cluster_loses_nothing_when_members_die() {
        let mut cluster = EtcdCluster::start(3).await;
        let mut options = EtcdOptions::new(cluster.endpoints(), "/arcanum/");
        options.request_timeout = Duration::from_secs(2);
        let etcd = EtcdBackend::connect(options).await.unwrap();
        let mut acknowledged = Vec::new();
        for i in 0..50 {
            let key = format!("f/before/{i:03}");
            etcd.put(&key, key.clone().into_bytes()).await.unwrap();
            acknowledged.push(key);
        }

        let leader = cluster.leader_index().await;
        let follower = (leader + 1) % 3;
        cluster.kill_member(follower);
        for i in 0..50 {
            let key = format!("f/one-down/{i:03}");
            etcd.put(&key, key.clone().into_bytes())
                .await
                .unwrap_or_else(|err| panic!("write {i} with one member down: {err}"));
            acknowledged.push(key);
        }

        cluster.kill_member(leader);
        let started = Instant::now();
        let err = etcd.put("f/no-quorum", b"x".to_vec()).await.unwrap_err();
        assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "failing took {:?}", started.elapsed());

        cluster.start_member(follower);
        cluster.start_member(leader);
        cluster.wait_ready().await;
        let resumed = Instant::now();
        loop {
            match etcd.put("f/after", b"x".to_vec()).await {
                Ok(()) => break,
                Err(StorageError::Unavailable(_)) if resumed.elapsed() < Duration::from_secs(20) => {}
                Err(err) => panic!("writes did not resume: {err}\n{}", cluster.logs()),
            }
        }
        acknowledged.push("f/after".into());
        for key in &acknowledged {
            assert!(etcd.get(key).await.unwrap().is_some(), "acknowledged {key} is missing");
        }
    }
}
