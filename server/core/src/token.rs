//! The token store: creation, lookup, renewal and revocation of tokens, and token roles.
//!
//! Tokens are stored under `sys/token/id/<HMAC(salt, token)>`, never by value, so a copy of
//! the storage (even decrypted) does not hand out working tokens. The salt is a random key
//! behind the barrier. Accessors are indexed the same way (`sys/token/accessor/<HMAC>`),
//! and each child token is recorded under its parent (`sys/token/parent/<parent>/<child>`)
//! so that revoking a parent revokes the whole tree. Expiry is checked on every lookup, so
//! an expired token stops working at once; each token with a TTL also has a key in the
//! expiration manager's index, and the reaper revokes it (tree, leases, cubbyhole) when due.

use std::collections::BTreeMap;
use std::sync::Arc;

use arcanum_crypto::token;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::barrier::{Barrier, BarrierError, BarrierOp};
use super::expiration::{due_key, DueItem, Schedule};
use arcanum_contract::clock::{rfc3339, unix_now};
use arcanum_contract::logical::ApiError;
use arcanum_contract::token::TokenView;

const SALT_PATH: &str = "sys/token/salt";
pub(crate) const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
const ROLE_PREFIX: &str = "sys/token/roles/";

/// Service tokens look like Vault's (`hvs.` + base62), so existing secret scanners flag leaks.
pub const TOKEN_PREFIX: &str = "hvs.";
pub const TOKEN_RANDOM_LEN: usize = 24;
const ACCESSOR_LEN: usize = 24;

pub use arcanum_contract::backend::SYSTEM_MAX_TTL;

/// What the store knows about a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// HMAC of the token value: the storage key, and how a token is named internally.
    pub id_hash: String,
    pub accessor: String,
    /// `id_hash` of the parent; `None` for orphans.
    pub parent: Option<String>,
    /// Sorted and normalised.
    pub policies: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    /// Uses left; 0 = unlimited. A token whose last use is spent is revoked.
    pub num_uses: u64,
    pub creation_time: i64,
    pub creation_ttl: u64,
    /// `None`: never expires.
    pub expire_time: Option<i64>,
    /// The hard limit renewals cannot pass; `None` for none.
    pub max_expire_time: Option<i64>,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub renewable: bool,
    pub role: Option<String>,
    pub entity_id: String,
    pub last_renewal_time: Option<i64>,
    /// Addresses the token may be used from (empty: anywhere); entries from before this field
    /// existed read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<String>,
}

impl TokenEntry {
    /// What an engine and the audit log may see of this token.
    pub fn view(&self) -> TokenView<'_> {
        TokenView {
            id_hash: &self.id_hash,
            accessor: &self.accessor,
            display_name: &self.display_name,
            policies: &self.policies,
            meta: &self.meta,
            entity_id: &self.entity_id,
            creation_time: self.creation_time,
            creation_ttl: self.creation_ttl,
        }
    }

    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|policy| policy == "root")
    }

    pub fn is_orphan(&self) -> bool {
        self.parent.is_none()
    }

    fn is_expired(&self, now: i64) -> bool {
        self.expire_time.is_some_and(|expire| expire <= now)
    }

    /// Seconds left; 0 for tokens that never expire.
    pub fn ttl(&self, now: i64) -> u64 {
        self.expire_time.map_or(0, |expire| u64::try_from(expire - now).unwrap_or(0))
    }

    /// Vault's lookup data (§6.3). `token` is the value when the caller presented it.
    pub fn lookup_data(&self, token: Option<&str>) -> Map<String, Value> {
        let now = unix_now();
        let mut data = Map::new();
        data.insert("accessor".into(), json!(self.accessor));
        if !self.bound_cidrs.is_empty() {
            data.insert("bound_cidrs".into(), json!(self.bound_cidrs));
        }
        data.insert("creation_time".into(), json!(self.creation_time));
        data.insert("creation_ttl".into(), json!(self.creation_ttl));
        data.insert("display_name".into(), json!(self.display_name));
        data.insert("entity_id".into(), json!(self.entity_id));
        data.insert("expire_time".into(), self.expire_time.map_or(Value::Null, |t| json!(rfc3339(t))));
        data.insert("explicit_max_ttl".into(), json!(self.explicit_max_ttl));
        data.insert("id".into(), json!(token.unwrap_or_default()));
        data.insert("issue_time".into(), json!(rfc3339(self.creation_time)));
        if let Some(renewed) = self.last_renewal_time {
            data.insert("last_renewal".into(), json!(rfc3339(renewed)));
            data.insert("last_renewal_time".into(), json!(renewed));
        }
        data.insert("meta".into(), if self.meta.is_empty() { Value::Null } else { json!(self.meta) });
        data.insert("num_uses".into(), json!(self.num_uses));
        data.insert("orphan".into(), json!(self.is_orphan()));
        data.insert("path".into(), json!(self.path));
        if self.period > 0 {
            data.insert("period".into(), json!(self.period));
        }
        data.insert("policies".into(), json!(self.policies));
        data.insert("renewable".into(), json!(self.renewable));
        if let Some(role) = &self.role {
            data.insert("role".into(), json!(role));
        }
        data.insert("ttl".into(), json!(self.ttl(now)));
        data.insert("type".into(), json!("service"));
        data
    }

    /// Vault's `auth` block for create, login and renew responses. `lease_duration` is the TTL
    /// that creation or renewal granted, counted from that moment, not what is left a second later.
    pub fn auth_block(&self, client_token: &str) -> Value {
        let token_policies: Vec<&String> = self.policies.iter().collect();
        json!({
            "client_token": client_token,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": token_policies,
            "metadata": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "lease_duration": self.ttl(self.last_renewal_time.unwrap_or(self.creation_time)),
            "renewable": self.renewable && self.expire_time.is_some(),
            "entity_id": self.entity_id,
            "token_type": "service",
            "orphan": self.is_orphan(),
            "mfa_requirement": null,
            "num_uses": self.num_uses,
        })
    }
}

/// What a new token should be; the token API fills this in from the request and the role.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub parent: Option<String>,
    pub policies: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    pub num_uses: u64,
    /// 0: the default (system default TTL), unless the token is root or periodic.
    pub ttl: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub renewable: bool,
    pub role: Option<String>,
    /// A chosen token value (root/sudo only, checked by the caller).
    pub id: Option<Zeroizing<String>>,
    /// The mount/system maximum TTL that caps everything.
    pub max_ttl: u64,
    /// The entity the token acts for (logins with an alias); empty for none.
    pub entity_id: String,
    pub bound_cidrs: Vec<String>,
}

/// A token role (`auth/token/roles/:name`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TokenRole {
    pub name: String,
    pub allowed_policies: Vec<String>,
    pub disallowed_policies: Vec<String>,
    pub allowed_policies_glob: Vec<String>,
    pub disallowed_policies_glob: Vec<String>,
    pub orphan: bool,
    pub renewable: bool,
    pub path_suffix: String,
    pub allowed_entity_aliases: Vec<String>,
    pub token_explicit_max_ttl: u64,
    pub token_no_default_policy: bool,
    pub token_num_uses: u64,
    pub token_period: u64,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_type: String,
    pub token_bound_cidrs: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessorRecord {
    accessor: String,
    id_hash: String,
}

/// Token lookups and lifecycle over the barrier.
pub struct TokenStore {
    barrier: Arc<Barrier>,
    /// The salt, prepared as an HMAC key (hashed with every request's token).
    salt: arcanum_crypto::HmacSha256Key,
    /// Serialises read-modify-write of token entries (uses, renewals) so none is lost.
    update: tokio::sync::Mutex<()>,
    /// The tokens whose creations are writing their records (in order, the entry last), by
    /// storage hash; see [`TokenStore::settled_entry_by_hash`].
    creating: Arc<Creating>,
    /// Decrypted entries by storage hash, so that a request does not pay a storage read
    /// and a decryption to find its token. Expiry is still checked on every lookup.
    /// Shared, so that a hit costs a reference count rather than a copy of the entry.
    cache: std::sync::RwLock<std::collections::HashMap<String, Arc<TokenEntry>>>,
    /// Bumped after every write to an entry. A lookup that missed the cache fills it only
    /// if no write happened while it read storage, so a revoked or changed token can never
    /// be put back into the cache by a reader that raced the write.
    writes: std::sync::atomic::AtomicU64,
    /// The reaper's schedule: every token with a TTL is due there at its expiry.
    schedule: Arc<Schedule>,
    /// Told of every token created and removed, for lease-count quotas.
    pub lease_counts: Arc<arcanum_quotas::LeaseCounts>,
}

/// Tokens being created, each with the receiving end of a channel whose sender its creation
/// holds: the channel closes when that creation has ended, however it ended.
type Creating = std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Receiver<()>>>;

/// A token's place in [`TokenStore::creating`] while its records are written. Dropping it (when
/// the writes end, or when the task writing them panics or is dropped) unmarks the token and
/// wakes every settled lookup waiting for it, and only those: other creations never wait.
struct CreationMark {
    creating: Arc<Creating>,
    id_hash: String,
    ended: tokio::sync::watch::Sender<()>,
}

impl CreationMark {
    fn new(creating: &Arc<Creating>, id_hash: &str) -> Self {
        let (ended, watch) = tokio::sync::watch::channel(());
        creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id_hash.to_owned(), watch);
        Self { creating: Arc::clone(creating), id_hash: id_hash.to_owned(), ended }
    }
}

impl Drop for CreationMark {
    fn drop(&mut self) {
        // Unmarked before the sender goes: a lookup that no longer finds the mark reads storage,
        // where the creation's records (or its leftovers) already are. Only our own mark: two
        // creations of one chosen ID may overlap, and the later one's must stay until it ends.
        let mut creating = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if creating.get(&self.id_hash).is_some_and(|watch| watch.same_channel(&self.ended.subscribe())) {
            creating.remove(&self.id_hash);
        }
    }
}

/// Entries kept in the token cache; beyond it the cache starts over.
const CACHE_CAPACITY: usize = 16_384;

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").field("barrier", &self.barrier).field("salt", &"<redacted>").finish()
    }
}

fn storage_error(err: BarrierError) -> ApiError {
    super::barrier::api_error("token storage", err)
}

impl TokenStore {
    /// Loads the salt, creating it on first use (at initialisation).
    pub async fn open(barrier: Arc<Barrier>, schedule: Arc<Schedule>) -> Result<TokenStore, BarrierError> {
        let salt = match barrier.get(SALT_PATH).await? {
            Some(salt) => salt,
            None => {
                let salt = token::random_bytes(32);
                barrier.put(SALT_PATH, &salt).await?;
                salt
            }
        };
        Ok(TokenStore {
            barrier,
            salt: arcanum_crypto::HmacSha256Key::new(&Zeroizing::new(salt)),
            update: tokio::sync::Mutex::new(()),
            creating: Arc::default(),
            cache: Default::default(),
            writes: Default::default(),
            schedule,
            lease_counts: Arc::default(),
        })
    }

    /// The storage name of a token or accessor value.
    pub fn hash(&self, value: &str) -> String {
        hex::encode(self.salt.mac(value.as_bytes()))
    }

    /// Creates the root token handed out by `sys/init`; a random one unless `chosen` is given.
    pub async fn create_root(&self, chosen: Option<Zeroizing<String>>) -> Result<Zeroizing<String>, BarrierError> {
        let request = TokenRequest {
            policies: vec!["root".into()],
            display_name: "root".into(),
            path: "auth/token/root".into(),
            id: chosen,
            ..TokenRequest::default()
        };
        self.create(request).await.map(|(token, _)| token).map_err(|err| BarrierError::Corrupt(err.to_string()))
    }

    /// Creates a token. Policy and permission checks belong to the caller; this applies the
    /// TTL rules and writes the entry with its indexes in one atomic batch.
    pub async fn create(&self, request: TokenRequest) -> Result<(Zeroizing<String>, TokenEntry), ApiError> {
        let token =
            request.id.clone().unwrap_or_else(|| Zeroizing::new(token::generate(TOKEN_PREFIX, TOKEN_RANDOM_LEN)));
        let now = unix_now();
        let mut policies: Vec<String> = request.policies.iter().map(|p| arcanum_policy::normalize_name(p)).collect();
        policies.sort();
        policies.dedup();
        let is_root = policies.iter().any(|p| p == "root");
        let max_ttl = if request.max_ttl == 0 { SYSTEM_MAX_TTL } else { request.max_ttl };
        // Root tokens without a TTL never expire, as in Vault; everything else does.
        let never_expires = is_root && request.ttl == 0 && request.period == 0 && request.explicit_max_ttl == 0;
        let (ttl, expire_time, max_expire_time) = if never_expires {
            (0, None, None)
        } else {
            let hard_cap = match (request.period, request.explicit_max_ttl) {
                (_, explicit) if explicit > 0 => Some(explicit.min(max_ttl)),
                (period, _) if period > 0 => None,
                _ => Some(max_ttl),
            };
            let wanted = if request.period > 0 {
                request.period
            } else if request.ttl > 0 {
                request.ttl
            } else {
                max_ttl
            };
            let ttl = hard_cap.map_or(wanted, |cap| wanted.min(cap));
            (ttl, Some(now + ttl as i64), hard_cap.map(|cap| now + cap as i64))
        };
        let entry = TokenEntry {
            id_hash: self.hash(&token),
            accessor: token::generate("", ACCESSOR_LEN),
            parent: request.parent.clone(),
            policies,
            meta: request.meta,
            display_name: request.display_name,
            path: request.path,
            num_uses: request.num_uses,
            creation_time: now,
            creation_ttl: ttl,
            expire_time,
            max_expire_time,
            explicit_max_ttl: request.explicit_max_ttl,
            period: request.period,
            renewable: request.renewable,
            role: request.role,
            entity_id: request.entity_id,
            last_renewal_time: None,
            bound_cidrs: request.bound_cidrs,
        };
        // Only an ID the caller chose can already exist: a generated one carries 142 random
        // bits, and looking it up cost a storage read (7% of token creation's profile) for nothing.
        let chosen = request.id.is_some();
        if chosen && self.barrier.get(&format!("{ID_PREFIX}{}", entry.id_hash)).await.map_err(storage_error)?.is_some()
        {
            return Err(ApiError::bad_request("cannot create a token with a duplicate ID"));
        }
        // In order, the entry last: the token exists only once its expiry key, its parent's index
        // of it and its accessor do, so a crash (or a failed write) part-way leaves only records
        // that point at nothing, which tidy and the reaper clear, never a token that would escape
        // expiry or its parent's revocation. In order rather than atomic, sled stores each record
        // once rather than twice. While the records are written the token is in `creating`, so
        // those cleaners wait for it before they call one of its records dangling.
        let mut ops = Vec::with_capacity(4);
        if let Some(expire) = entry.expire_time {
            ops.push(BarrierOp::Put { path: due_key(expire, DueItem::Token(&entry.id_hash)), value: Vec::new() });
        }
        if let Some(parent) = &entry.parent {
            ops.push(BarrierOp::Put { path: format!("{PARENT_PREFIX}{parent}/{}", entry.id_hash), value: Vec::new() });
        }
        ops.push(BarrierOp::Put {
            path: format!("{ACCESSOR_PREFIX}{}", self.hash(&entry.accessor)),
            value: encode(&AccessorRecord { accessor: entry.accessor.clone(), id_hash: entry.id_hash.clone() })?,
        });
        ops.push(BarrierOp::Put { path: format!("{ID_PREFIX}{}", entry.id_hash), value: encode(&entry)? });
        let mark = CreationMark::new(&self.creating, &entry.id_hash);
        let barrier = Arc::clone(&self.barrier);
        // Detached, with the mark, so that a caller who hangs up cannot drop it while the
        // records are still being written.
        let written = tokio::spawn(async move {
            let written = barrier.batch_in_order(ops).await;
            drop(mark);
            written
        })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "a token creation's write task failed");
            ApiError::internal()
        })?;
        written.map_err(storage_error)?;
        if let Some(expire) = entry.expire_time {
            self.schedule.add(expire);
        }
        self.lease_counts.created(&entry.path);
        Ok((token, entry))
    }

    /// The stored entry whatever its state (expired included); `None` once revoked.
    pub async fn entry_by_hash(&self, id_hash: &str) -> Result<Option<TokenEntry>, ApiError> {
        Ok(self.shared_entry_by_hash(id_hash).await?.map(Arc::unwrap_or_clone))
    }

    /// [`TokenStore::entry_by_hash`] for deciding that a record which names the token, seen
    /// before this call, points at nothing: a creation writes its expiry key, parent index and
    /// accessor before its entry, so when the token is being created this waits for that to end.
    /// Checked before the entry is read: a creation no longer in `creating` has written its entry
    /// (or failed, leaving leftovers). Neither other tokens' lookups nor any creation waits for it.
    pub async fn settled_entry_by_hash(&self, id_hash: &str) -> Result<Option<TokenEntry>, ApiError> {
        let creation = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id_hash).cloned();
        if let Some(mut creation) = creation {
            // Nothing is ever sent: this resolves when the creation's mark is dropped.
            while creation.changed().await.is_ok() {}
        }
        self.entry_by_hash(id_hash).await
    }

    /// [`TokenStore::entry_by_hash`] without copying the entry.
    pub async fn shared_entry_by_hash(&self, id_hash: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        use std::sync::atomic::Ordering;
        if let Some(entry) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(id_hash) {
            return Ok(Some(Arc::clone(entry)));
        }
        let writes_before = self.writes.load(Ordering::SeqCst);
        let entry: Option<Arc<TokenEntry>> =
            match self.barrier.get(&format!("{ID_PREFIX}{id_hash}")).await.map_err(storage_error)? {
                Some(raw) => Some(Arc::new(serde_json::from_slice(&raw).map_err(|err| {
                    tracing::error!(error = %err, "token entry does not parse");
                    ApiError::internal()
                })?)),
                None => None,
            };
        if let Some(entry) = &entry {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if self.writes.load(Ordering::SeqCst) == writes_before {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(id_hash.to_owned(), Arc::clone(entry));
            }
        }
        Ok(entry)
    }

    /// Forgets a cached entry that another node changed (a standby following storage).
    pub fn forget(&self, id_hash: &str) {
        self.invalidate(&[id_hash]);
    }

    /// Forgets cached entries after a write to them (call once the write is durable).
    fn invalidate(&self, id_hashes: &[&str]) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // Bumped under the cache lock, so no reader can slip a stale entry in between.
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for id_hash in id_hashes {
            cache.remove(*id_hash);
        }
    }

    /// A live token entry by value: `None` when unknown, revoked, expired or used up. An
    /// expired token is left to the reaper, which revokes it with its leases and children.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, ApiError> {
        Ok(self.shared_lookup(token).await?.map(Arc::unwrap_or_clone))
    }

    /// [`TokenStore::lookup`] without copying the entry: what every request does.
    pub async fn shared_lookup(&self, token: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.shared_lookup_hash(&self.hash(token)).await
    }

    /// Like [`TokenStore::lookup`], by storage hash.
    pub async fn lookup_hash(&self, id_hash: &str) -> Result<Option<TokenEntry>, ApiError> {
        Ok(self.shared_lookup_hash(id_hash).await?.map(Arc::unwrap_or_clone))
    }

    async fn shared_lookup_hash(&self, id_hash: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        let Some(entry) = self.shared_entry_by_hash(id_hash).await? else {
            return Ok(None);
        };
        Ok(Some(entry).filter(|entry| !entry.is_expired(unix_now())))
    }

    /// A live token entry by accessor.
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Option<TokenEntry>, ApiError> {
        let key = format!("{ACCESSOR_PREFIX}{}", self.hash(accessor));
        let Some(raw) = self.barrier.get(&key).await.map_err(storage_error)? else {
            return Ok(None);
        };
        let record: AccessorRecord = serde_json::from_slice(&raw).map_err(|_| ApiError::internal())?;
        self.lookup_hash(&record.id_hash).await
    }

    /// Counts one use of a limited-use token. Returns the entry as it was before this use,
    /// or `None` if no use was left. The caller revokes the token after serving a request
    /// that spent its last use.
    pub async fn use_token(&self, entry: &TokenEntry) -> Result<Option<TokenEntry>, ApiError> {
        if entry.num_uses == 0 {
            return Ok(Some(entry.clone()));
        }
        let _update = self.update.lock().await;
        let Some(mut current) = self.entry_by_hash(&entry.id_hash).await? else {
            return Ok(None);
        };
        if current.num_uses == 0 {
            // Already spent by a concurrent request (0 is stored as "exhausted" below).
            return Ok(None);
        }
        let before = current.clone();
        current.num_uses -= 1;
        if current.num_uses == 0 {
            // Spent: make it unusable at once; the caller revokes it after this request.
            current.expire_time = Some(0);
        }
        self.barrier
            .put(&format!("{ID_PREFIX}{}", current.id_hash), &encode(&current)?)
            .await
            .map_err(storage_error)?;
        self.invalidate(&[&current.id_hash]);
        Ok(Some(before))
    }

    /// Renews a token; returns the updated entry and a warning when the TTL was capped.
    pub async fn renew(&self, id_hash: &str, increment: u64) -> Result<(TokenEntry, Option<String>), ApiError> {
        let _update = self.update.lock().await;
        let Some(mut entry) = self.entry_by_hash(id_hash).await? else {
            return Err(ApiError::bad_request("token not found"));
        };
        let now = unix_now();
        if entry.is_expired(now) {
            return Err(ApiError::bad_request("token not found"));
        }
        if entry.expire_time.is_none() {
            // Never expires: nothing to extend (root tokens from init).
            return Ok((entry, None));
        }
        if !entry.renewable {
            return Err(ApiError::bad_request("lease is not renewable"));
        }
        let wanted = if entry.period > 0 {
            entry.period
        } else if increment > 0 {
            increment
        } else {
            entry.creation_ttl
        };
        let mut warning = None;
        let mut ttl = wanted;
        if let Some(max_expire) = entry.max_expire_time {
            let remaining = u64::try_from(max_expire - now).unwrap_or(0);
            if ttl > remaining {
                warning = Some(format!(
                    "TTL of \"{wanted}s\" exceeded the effective max_ttl of \"{remaining}s\"; TTL value is capped accordingly"
                ));
                ttl = remaining;
            }
        }
        let new_expire = now + ttl as i64;
        entry.expire_time = Some(new_expire);
        entry.last_renewal_time = Some(now);
        // The old index key stays behind; the reaper sees the later expiry and drops it.
        self.barrier
            .batch(vec![
                BarrierOp::Put { path: format!("{ID_PREFIX}{}", entry.id_hash), value: encode(&entry)? },
                BarrierOp::Put { path: due_key(new_expire, DueItem::Token(&entry.id_hash)), value: Vec::new() },
            ])
            .await
            .map_err(storage_error)?;
        self.invalidate(&[&entry.id_hash]);
        self.schedule.add(new_expire);
        Ok((entry, warning))
    }

    /// Revokes a token and every descendant. Returns the storage hashes revoked (for
    /// per-token data such as cubbyholes).
    pub async fn revoke_tree(&self, id_hash: &str) -> Result<Vec<String>, ApiError> {
        let mut revoked = Vec::new();
        for hash in self.tree(id_hash).await? {
            // Under the update lock, so a renewal or use that read the entry before cannot write it back.
            let _update = self.update.lock().await;
            self.revoke_one(&hash).await?;
            revoked.push(hash);
        }
        Ok(revoked)
    }

    /// A token and its descendants, children before parents.
    pub async fn tree(&self, id_hash: &str) -> Result<Vec<String>, ApiError> {
        let mut pending = vec![id_hash.to_owned()];
        // Depth-first, children before parents, so an interrupted revocation never leaves
        // a live child under a parent that is gone.
        let mut order = Vec::new();
        while let Some(current) = pending.pop() {
            for child in self.barrier.list(&format!("{PARENT_PREFIX}{current}/")).await.map_err(storage_error)? {
                pending.push(child.trim_end_matches('/').to_owned());
            }
            order.push(current);
        }
        order.reverse();
        Ok(order)
    }

    /// Revokes a token alone; its children become orphans.
    pub async fn revoke_orphan(&self, id_hash: &str) -> Result<Vec<String>, ApiError> {
        let _update = self.update.lock().await;
        for child in self.barrier.list(&format!("{PARENT_PREFIX}{id_hash}/")).await.map_err(storage_error)? {
            if let Some(mut entry) = self.entry_by_hash(&child).await? {
                entry.parent = None;
                self.barrier
                    .batch(vec![
                        BarrierOp::Put { path: format!("{ID_PREFIX}{child}"), value: encode(&entry)? },
                        BarrierOp::Delete { path: format!("{PARENT_PREFIX}{id_hash}/{child}") },
                    ])
                    .await
                    .map_err(storage_error)?;
                self.invalidate(&[&child]);
            }
        }
        self.revoke_one(id_hash).await?;
        Ok(vec![id_hash.to_owned()])
    }

    async fn revoke_one(&self, id_hash: &str) -> Result<(), ApiError> {
        let Some(entry) = self.entry_by_hash(id_hash).await? else {
            return Ok(());
        };
        let mut ops = vec![
            BarrierOp::Delete { path: format!("{ID_PREFIX}{id_hash}") },
            BarrierOp::Delete { path: format!("{ACCESSOR_PREFIX}{}", self.hash(&entry.accessor)) },
        ];
        if let Some(parent) = &entry.parent {
            ops.push(BarrierOp::Delete { path: format!("{PARENT_PREFIX}{parent}/{id_hash}") });
        }
        self.barrier.batch(ops).await.map_err(storage_error)?;
        self.invalidate(&[id_hash]);
        self.lease_counts.removed(&entry.path);
        Ok(())
    }

    /// Tokens whose creation path starts with `prefix` (`sys/leases/revoke-prefix/auth/...`).
    pub async fn hashes_with_path_prefix(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut hashes = Vec::new();
        for key in self.barrier.list(ID_PREFIX).await.map_err(storage_error)? {
            if let Some(entry) = self.entry_by_hash(&key).await? {
                if entry.path.starts_with(prefix) {
                    hashes.push(entry.id_hash);
                }
            }
        }
        Ok(hashes)
    }

    /// Every live accessor (`LIST auth/token/accessors`).
    /// How many tokens are stored (lists the id index; reads no token).
    pub async fn count(&self) -> Result<usize, ApiError> {
        Ok(self.barrier.list(ID_PREFIX).await.map_err(storage_error)?.len())
    }

    pub async fn accessors(&self) -> Result<Vec<String>, ApiError> {
        let mut accessors = Vec::new();
        for key in self.barrier.list(ACCESSOR_PREFIX).await.map_err(storage_error)? {
            if let Some(raw) = self.barrier.get(&format!("{ACCESSOR_PREFIX}{key}")).await.map_err(storage_error)? {
                if let Ok(record) = serde_json::from_slice::<AccessorRecord>(&raw) {
                    accessors.push(record.accessor);
                }
            }
        }
        accessors.sort();
        Ok(accessors)
    }

    /// Drops indexes that point at nothing and returns the expired tokens, which the caller
    /// revokes with everything they own.
    pub async fn tidy(&self) -> Result<Vec<String>, ApiError> {
        let now = unix_now();
        let mut expired = Vec::new();
        for key in self.barrier.list(ID_PREFIX).await.map_err(storage_error)? {
            if let Some(entry) = self.entry_by_hash(&key).await? {
                if entry.is_expired(now) {
                    expired.push(entry.id_hash);
                }
            }
        }
        for key in self.barrier.list(ACCESSOR_PREFIX).await.map_err(storage_error)? {
            let path = format!("{ACCESSOR_PREFIX}{key}");
            let dangling = match self.barrier.get(&path).await.map_err(storage_error)? {
                Some(raw) => match serde_json::from_slice::<AccessorRecord>(&raw) {
                    Ok(record) => self.settled_entry_by_hash(&record.id_hash).await?.is_none(),
                    Err(_) => true,
                },
                None => false,
            };
            if dangling {
                self.barrier.delete(&path).await.map_err(storage_error)?;
            }
        }
        for parent in self.barrier.list(PARENT_PREFIX).await.map_err(storage_error)? {
            let parent = parent.trim_end_matches('/');
            for child in self.barrier.list(&format!("{PARENT_PREFIX}{parent}/")).await.map_err(storage_error)? {
                if self.settled_entry_by_hash(&child).await?.is_none() {
                    self.barrier.delete(&format!("{PARENT_PREFIX}{parent}/{child}")).await.map_err(storage_error)?;
                }
            }
        }
        Ok(expired)
    }

    pub async fn role(&self, name: &str) -> Result<Option<TokenRole>, ApiError> {
        match self.barrier.get(&format!("{ROLE_PREFIX}{name}")).await.map_err(storage_error)? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|_| ApiError::internal()),
            None => Ok(None),
        }
    }

    pub async fn put_role(&self, role: &TokenRole) -> Result<(), ApiError> {
        self.barrier.put(&format!("{ROLE_PREFIX}{}", role.name), &encode(role)?).await.map_err(storage_error)
    }

    pub async fn delete_role(&self, name: &str) -> Result<(), ApiError> {
        self.barrier.delete(&format!("{ROLE_PREFIX}{name}")).await.map_err(storage_error)
    }

    pub async fn roles(&self) -> Result<Vec<String>, ApiError> {
        self.barrier.list(ROLE_PREFIX).await.map_err(storage_error)
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|_| ApiError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_crypto::keyring::Keyring;
    use arcanum_storage::{Backend, InmemBackend};

    async fn store() -> (Arc<Barrier>, TokenStore) {
        let backend: Arc<dyn Backend> = Arc::new(InmemBackend::new());
        let barrier = Barrier::open(backend, Keyring::generate(0), u64::MAX).await.unwrap();
        let store = TokenStore::open(Arc::clone(&barrier), Arc::default()).await.unwrap();
        (barrier, store)
    }

    fn child_of(parent: &TokenEntry, ttl: u64) -> TokenRequest {
        TokenRequest {
            parent: Some(parent.id_hash.clone()),
            policies: vec!["default".into()],
            display_name: "token".into(),
            path: "auth/token/create".into(),
            renewable: true,
            ttl,
            ..TokenRequest::default()
        }
    }

    #[tokio::test]
    async fn root_token_is_found_by_value_and_stored_only_hashed() {
        let (barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        assert!(root.starts_with("hvs.") && root.len() == 28);
        let entry = store.lookup(&root).await.unwrap().expect("root token found");
        assert!(entry.is_root());
        assert_eq!(entry.expire_time, None);
        assert_eq!(store.lookup("hvs.notatoken").await.unwrap(), None);
        assert_eq!(store.lookup("").await.unwrap(), None);
        let ids = barrier.list(ID_PREFIX).await.unwrap();
        assert_eq!(ids.len(), 1);
        assert!(!ids[0].contains(root.trim_start_matches("hvs.")));
        let again = TokenStore::open(barrier, Arc::default()).await.unwrap();
        assert!(again.lookup(&root).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn revoking_a_parent_revokes_the_tree_but_not_orphans() {
        let (_barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let (child, child_entry) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        let (grandchild, _) = store.create(child_of(&child_entry, 3600)).await.unwrap();
        let (orphan, _) = store.create(TokenRequest { parent: None, ..child_of(&child_entry, 3600) }).await.unwrap();
        let revoked = store.revoke_tree(&child_entry.id_hash).await.unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(store.lookup(&child).await.unwrap().is_none());
        assert!(store.lookup(&grandchild).await.unwrap().is_none());
        assert!(store.lookup(&orphan).await.unwrap().is_some());
        assert!(store.lookup_accessor(&child_entry.accessor).await.unwrap().is_none());
        assert!(store.lookup(&root).await.unwrap().is_some());
    }

    /// A creation writes its expiry key, its parent's index and its accessor before its entry; cut
    /// short (a crash, a failed write), it leaves only those, and tidy clears the two indexes (the
    /// reaper clears the expiry key as it would a revoked token's).
    #[tokio::test]
    async fn a_creation_cut_short_leaves_only_what_tidy_clears() {
        let (barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let (_, entry) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        let accessor_key = format!("{ACCESSOR_PREFIX}{}", store.hash(&entry.accessor));
        let parent_key = format!("{PARENT_PREFIX}{}/{}", root_entry.id_hash, entry.id_hash);
        let due = due_key(entry.expire_time.unwrap(), DueItem::Token(&entry.id_hash));
        for key in [&accessor_key, &parent_key, &due] {
            assert!(barrier.get(key).await.unwrap().is_some(), "{key} written before the entry");
        }
        // Everything but the entry, as a creation stopped before its last write leaves it.
        barrier.delete(&format!("{ID_PREFIX}{}", entry.id_hash)).await.unwrap();
        store.invalidate(&[&entry.id_hash]);
        assert_eq!(store.lookup_accessor(&entry.accessor).await.unwrap(), None);
        store.tidy().await.unwrap();
        assert_eq!(barrier.get(&accessor_key).await.unwrap(), None, "tidy drops the accessor");
        assert_eq!(barrier.get(&parent_key).await.unwrap(), None, "tidy drops the parent's index");
        assert!(store.lookup(&root).await.unwrap().is_some());
    }

    /// What reaches the physical store, in order: the in-order batches' keys, one list per batch.
    #[derive(Debug, Default)]
    struct Recording {
        inner: InmemBackend,
        in_order: std::sync::Mutex<Vec<Vec<String>>>,
        /// In-order batches panic once this is set (after recording their keys).
        panic_on_write: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Backend for Recording {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, arcanum_storage::StorageError> {
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), arcanum_storage::StorageError> {
            self.inner.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), arcanum_storage::StorageError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, arcanum_storage::StorageError> {
            self.inner.list(prefix).await
        }
        async fn batch(&self, ops: Vec<arcanum_storage::Op>) -> Result<(), arcanum_storage::StorageError> {
            self.inner.batch(ops).await
        }
        async fn batch_in_order(&self, ops: Vec<arcanum_storage::Op>) -> Result<(), arcanum_storage::StorageError> {
            self.in_order.lock().unwrap().push(ops.iter().map(|op| op.key().to_owned()).collect());
            assert!(!self.panic_on_write.load(std::sync::atomic::Ordering::SeqCst), "injected panic");
            self.inner.batch(ops).await
        }
        async fn flush(&self) -> Result<(), arcanum_storage::StorageError> {
            self.inner.flush().await
        }
        fn kind(&self) -> &'static str {
            "recording"
        }
    }

    /// A store over a [`Recording`] backend, with its root token's entry.
    async fn recorded_store() -> (Arc<Recording>, TokenStore, TokenEntry) {
        let recording = Arc::new(Recording::default());
        let backend: Arc<dyn Backend> = Arc::clone(&recording) as Arc<dyn Backend>;
        let barrier = Barrier::open(backend, Keyring::generate(0), u64::MAX).await.unwrap();
        let store = TokenStore::open(barrier, Arc::default()).await.unwrap();
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        (recording, store, root_entry)
    }

    /// Every prefix of a creation's writes must leave no token that escapes expiry, its parent's
    /// revocation or revocation by accessor: the entry is written last.
    #[tokio::test]
    async fn a_creation_writes_its_entry_last() {
        let (recording, store, root_entry) = recorded_store().await;
        recording.in_order.lock().unwrap().clear();
        let (_, entry) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        let batches = recording.in_order.lock().unwrap().clone();
        assert_eq!(batches.len(), 1, "one in-order batch per creation: {batches:?}");
        let expected = [
            due_key(entry.expire_time.unwrap(), DueItem::Token(&entry.id_hash)),
            format!("{PARENT_PREFIX}{}/{}", root_entry.id_hash, entry.id_hash),
            format!("{ACCESSOR_PREFIX}{}", store.hash(&entry.accessor)),
            format!("{ID_PREFIX}{}", entry.id_hash),
        ];
        assert_eq!(batches[0], expected);
    }

    /// The cleaners' look at a token whose entry is missing waits for creations in flight and
    /// looks again, so the first records of a creation are never taken for a crash's leftovers.
    #[tokio::test]
    async fn a_settled_lookup_waits_for_creations_in_flight() {
        let (barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let (_, entry) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        let id_key = format!("{ID_PREFIX}{}", entry.id_hash);
        let stored = barrier.get(&id_key).await.unwrap().unwrap();
        barrier.delete(&id_key).await.unwrap();
        store.invalidate(&[&entry.id_hash]);

        // As a creation part-way holds it.
        let creation = CreationMark::new(&store.creating, &entry.id_hash);

        // Another token's settled lookup does not wait.
        let other = std::pin::pin!(store.settled_entry_by_hash("not-being-created"));
        assert!(matches!(poll_once(other).await, std::task::Poll::Ready(Ok(None))));

        let mut settled = std::pin::pin!(store.settled_entry_by_hash(&entry.id_hash));
        assert!(poll_once(settled.as_mut()).await.is_pending(), "no answer while the creation is part-way");
        // The creation writes its entry and finishes: the settled lookup finds it.
        barrier.put(&id_key, &stored).await.unwrap();
        drop(creation);
        let found = settled.await.unwrap().expect("the entry written meanwhile");
        assert_eq!(found.accessor, entry.accessor);
    }

    /// A cleaner waiting for one token's creation holds up no other creation (it once took a
    /// lock that every creation shares, and creations queued behind it for a whole write).
    #[tokio::test]
    async fn a_settled_lookup_holds_up_no_other_creation() {
        let (_, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let creation = CreationMark::new(&store.creating, "being-created");
        let mut settled = std::pin::pin!(store.settled_entry_by_hash("being-created"));
        assert!(poll_once(settled.as_mut()).await.is_pending());

        let other =
            tokio::time::timeout(std::time::Duration::from_secs(10), store.create(child_of(&root_entry, 3600))).await;
        let (token, _) = other.expect("another creation finishes while the lookup waits").unwrap();
        assert!(store.lookup(&token).await.unwrap().is_some());
        assert!(poll_once(settled.as_mut()).await.is_pending(), "still waiting for its own token");
        drop(creation);
        assert_eq!(settled.await.unwrap(), None);
    }

    /// Two overlapping creations of one chosen ID: the first to end leaves the other's mark.
    #[tokio::test]
    async fn a_mark_is_removed_only_by_its_own_creation() {
        let (_, store) = store().await;
        let first = CreationMark::new(&store.creating, "chosen");
        let second = CreationMark::new(&store.creating, "chosen");
        drop(first);
        let mut settled = std::pin::pin!(store.settled_entry_by_hash("chosen"));
        assert!(poll_once(settled.as_mut()).await.is_pending(), "the second creation is still marked");
        drop(second);
        assert!(store.creating.lock().unwrap().is_empty());
        assert_eq!(settled.await.unwrap(), None);
    }

    /// A creation whose write task panics leaves no mark behind: the token is not taken for
    /// one being created for ever, and a cleaner's look at it does not wait.
    #[tokio::test]
    async fn a_creation_that_panics_leaves_no_mark() {
        let (recording, store, root_entry) = recorded_store().await;
        recording.panic_on_write.store(true, std::sync::atomic::Ordering::SeqCst);

        let failed = store.create(child_of(&root_entry, 3600)).await;
        assert!(failed.is_err(), "a panicking write is an error, not a token");
        assert!(recording.in_order.lock().unwrap().len() > 1, "the creation reached the store");
        assert!(store.creating.lock().unwrap().is_empty(), "no token left marked as being created");
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future>(mut future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn revoke_orphan_keeps_the_children() {
        let (_barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let (_, parent) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        let (child, _) = store.create(child_of(&parent, 3600)).await.unwrap();
        store.revoke_orphan(&parent.id_hash).await.unwrap();
        let child = store.lookup(&child).await.unwrap().expect("child survives");
        assert!(child.is_orphan());
    }

    #[tokio::test]
    async fn expired_tokens_stop_working_at_once_and_renewal_is_capped() {
        let (_barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let mut request = child_of(&root_entry, 100);
        request.explicit_max_ttl = 200;
        let (token, entry) = store.create(request).await.unwrap();
        assert_eq!(entry.creation_ttl, 100);
        let (renewed, warning) = store.renew(&entry.id_hash, 1000).await.unwrap();
        assert!(renewed.ttl(unix_now()) <= 200);
        assert!(warning.is_some(), "renewal past the max TTL warns");
        // Forge an expiry in the past: the next lookup must refuse and revoke it.
        let mut expired = renewed.clone();
        expired.expire_time = Some(unix_now() - 1);
        store.barrier.put(&format!("{ID_PREFIX}{}", expired.id_hash), &encode(&expired).unwrap()).await.unwrap();
        store.invalidate(&[&expired.id_hash]);
        assert!(store.lookup(&token).await.unwrap().is_none());
        assert!(store.lookup_accessor(&entry.accessor).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_revoked_token_never_comes_back_from_the_cache() {
        let (_barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let (token, entry) = store.create(child_of(&root_entry, 3600)).await.unwrap();
        // Warm the cache, then revoke while lookups race the revocation.
        assert!(store.lookup(&token).await.unwrap().is_some());
        let store = Arc::new(store);
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let token = token.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        store.lookup(&token).await.unwrap();
                    }
                })
            })
            .collect();
        store.revoke_tree(&entry.id_hash).await.unwrap();
        for reader in readers {
            reader.await.unwrap();
        }
        assert!(store.lookup(&token).await.unwrap().is_none());
        assert!(store.cache.read().unwrap().get(&entry.id_hash).is_none());
    }

    #[tokio::test]
    async fn limited_use_tokens_run_out() {
        let (_barrier, store) = store().await;
        let root = store.create_root(None).await.unwrap();
        let root_entry = store.lookup(&root).await.unwrap().unwrap();
        let mut request = child_of(&root_entry, 3600);
        request.num_uses = 2;
        let (token, entry) = store.create(request).await.unwrap();
        assert!(store.use_token(&entry).await.unwrap().is_some());
        assert!(store.use_token(&entry).await.unwrap().is_some());
        assert!(store.lookup(&token).await.unwrap().is_none(), "a spent token must not resolve");
        assert!(store.use_token(&entry).await.unwrap().is_none());
    }
}
