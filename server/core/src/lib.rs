//! The core: the seal state machine and the unsealed services behind it.
//!
//! # Layout
//! - [`barrier`]: AES-256-GCM over the physical backend, keyring terms, rotation.
//! - [`token`]: the token store, salted-hash keyed.
//! - [`expiration`]: leases, the expiry index and the reaper (tokens expire through it too).
//! - this module: initialisation, Shamir unseal, seal, rekey, and [`Core::unsealed`], the
//!   gate every sealed-sensitive request passes.
//!
//! Key hierarchy: the unseal key (split into shares, never stored) seals the root key at
//! `core/root-key`; the root key seals the keyring at `core/keyring`; the keyring's data keys
//! seal every barrier entry. Rotation therefore needs only the root key, and a rekey
//! re-seals only the root key.

pub mod barrier;
pub mod caller;
pub mod expiration;
pub mod ha;
pub mod lockout;
pub mod mounts;
pub mod policies;
pub mod seal;
pub mod shares;
pub mod standby;
pub mod token;
pub mod wrapping;

use std::sync::{Arc, RwLock};

use arcanum_crypto::{aead, keyring::Keyring, shamir, Key256};
use arcanum_storage::{Backend, Op};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use arcanum_audit::AuditBroker;
use arcanum_contract::clock::unix_now;
use arcanum_contract::logical::{ApiError, LoginAuth};
use arcanum_contract::mount::{MountEntry, MountTableKind};
use arcanum_contract::storage::StorageView;
use arcanum_contract::Catalog;
use arcanum_quotas::Quotas;
use barrier::{Barrier, BarrierError, KEYRING_PATH, ROOT_KEY_PATH, SEAL_CONFIG_PATH};
use expiration::{Expiration, LeaseSettings};
use ha::lock;
use mounts::MountTable;
use policies::PolicyStore;
use token::TokenStore;

pub use caller::Caller;

const ROOT_KEY_AAD: &[u8] = b"arcanum/root-key";
const CLUSTER_PATH: &str = "core/cluster";
/// A share is the 32-byte unseal key's y values followed by one x byte (Vault's layout).
pub const SHARE_LEN: usize = 33;

/// Settings the core takes from the server config.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Encryptions under one barrier term before it rotates by itself.
    pub rotate_after: u64,
    /// `sys/raw` is served only when the operator asked for it (Vault's `raw_storage_endpoint`).
    pub raw_storage_endpoint: bool,
    /// `sys/metrics` without a token (Vault's listener `telemetry.unauthenticated_metrics_access`).
    pub unauthenticated_metrics_access: bool,
    /// Lease TTL defaults and the revocation retry policy.
    pub leases: expiration::LeaseSettings,
    /// User lockout per auth method type (Vault's `user_lockout` stanzas).
    pub user_lockout: lockout::LockoutConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            rotate_after: barrier::DEFAULT_ROTATE_AFTER,
            raw_storage_endpoint: false,
            unauthenticated_metrics_access: false,
            leases: expiration::LeaseSettings::default(),
            user_lockout: lockout::LockoutConfig::default(),
        }
    }
}

/// The Shamir parameters, stored in plaintext because they are needed before unseal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealConfig {
    #[serde(rename = "type")]
    pub kind: SealType,
    pub secret_shares: usize,
    pub secret_threshold: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SealType {
    Shamir,
    /// The root key is wrapped by another server's Transit key (always 1 share of 1).
    Transit,
}

impl SealConfig {
    /// Vault's validation, with Vault's messages.
    pub fn new(secret_shares: i64, secret_threshold: i64) -> Result<SealConfig, ApiError> {
        let invalid = |why: &str| ApiError::bad_request(format!("invalid seal configuration: {why}"));
        if secret_shares < 1 {
            return Err(invalid("shares must be at least one"));
        }
        if secret_threshold < 1 {
            return Err(invalid("threshold must be at least one"));
        }
        if secret_shares > 255 {
            return Err(invalid("shares must be less than 256"));
        }
        if secret_threshold > secret_shares {
            return Err(invalid("threshold cannot be larger than shares"));
        }
        if secret_shares > 1 && secret_threshold == 1 {
            return Err(invalid("threshold must be greater than one for multiple shares"));
        }
        Ok(SealConfig {
            kind: SealType::Shamir,
            secret_shares: secret_shares as usize,
            secret_threshold: secret_threshold as usize,
        })
    }
}

/// Identity of this server's data, created at init.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: String,
    pub name: String,
}

/// What `sys/init` hands out, once.
pub struct InitOutput {
    /// Unseal key shares (none with an auto seal).
    pub shares: Vec<Zeroizing<Vec<u8>>>,
    /// Recovery key shares (auto seal only).
    pub recovery_shares: Vec<Zeroizing<Vec<u8>>>,
    pub root_token: Zeroizing<String>,
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutput")
            .field("shares", &format_args!("<{} redacted>", self.shares.len()))
            .field("root_token", &"<redacted>")
            .finish()
    }
}

/// Shares collected towards a threshold (unseal or rekey).
struct ShareCollection {
    nonce: String,
    shares: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ShareCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareCollection")
            .field("nonce", &self.nonce)
            .field("shares", &format_args!("<{} redacted>", self.shares.len()))
            .finish()
    }
}

impl ShareCollection {
    fn new() -> ShareCollection {
        ShareCollection { nonce: uuid::Uuid::new_v4().to_string(), shares: Vec::new() }
    }

    /// Adds a share unless the same share was already given (Vault ignores repeats).
    fn add(&mut self, share: Zeroizing<Vec<u8>>) {
        if !self.shares.iter().any(|known| arcanum_crypto::constant_time_eq(known, &share)) {
            self.shares.push(share);
        }
    }

    /// Checks `nonce` against the operation's and adds `share`; whether `threshold` are in.
    fn offer(
        &mut self,
        share: Zeroizing<Vec<u8>>,
        nonce: &str,
        operation: &str,
        threshold: usize,
    ) -> Result<bool, ApiError> {
        if !arcanum_crypto::constant_time_eq(self.nonce.as_bytes(), nonce.as_bytes()) {
            return Err(ApiError::bad_request(format!(
                "incorrect nonce supplied; nonce for this {operation} operation is {}",
                self.nonce
            )));
        }
        check_share_len(&share)?;
        self.add(share);
        Ok(self.shares.len() >= threshold)
    }

    fn combine(&self) -> Result<Key256, ApiError> {
        let refs: Vec<&[u8]> = self.shares.iter().map(|share| share.as_slice()).collect();
        let secret =
            shamir::combine(&refs).map_err(|err| ApiError::bad_request(format!("invalid key shares: {err}")))?;
        Key256::from_slice(&secret).map_err(|_| ApiError::bad_request("invalid key shares: wrong combined key length"))
    }
}

/// A rekey in progress: the new parameters and the current shares given so far.
#[derive(Debug)]
pub struct RekeyAttempt {
    pub config: SealConfig,
    collection: ShareCollection,
    /// Whom the new shares are for (empty: in the clear).
    delivery: shares::ShareDelivery,
    /// Keep the encrypted new shares at `sys/rekey/backup`.
    backup: bool,
}

/// A finished rekey: the new shares as handed out (encrypted when PGP keys were given).
#[derive(Debug)]
pub struct RekeyOutput {
    pub shares: Vec<Zeroizing<Vec<u8>>>,
    pub pgp_fingerprints: Vec<String>,
    pub backup: bool,
}

/// Which key a rekey replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyTarget {
    /// The unseal key (Shamir seal): `sys/rekey`.
    Barrier,
    /// The recovery key (auto seal): `sys/rekey-recovery-key`.
    Recovery,
}

/// Rekey progress as `sys/rekey/*` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStatus {
    pub started: bool,
    pub nonce: String,
    pub new_shares: usize,
    pub new_threshold: usize,
    pub progress: usize,
    pub required: usize,
    pub pgp_fingerprints: Vec<String>,
    pub backup: bool,
}

/// Seal status as `sys/seal-status` reports it.
#[derive(Debug, Clone)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    /// `shamir`, or the auto seal's type.
    pub kind: &'static str,
    /// With an auto seal, `threshold` and `shares` are the recovery key's.
    pub recovery_seal: bool,
    /// A seal migration is pending.
    pub migration: bool,
    /// Why the last auto-unseal attempt failed, while sealed.
    pub seal_error: Option<String>,
    pub threshold: usize,
    pub shares: usize,
    pub progress: usize,
    pub nonce: String,
    pub cluster: Option<ClusterInfo>,
}

#[derive(Debug, Default)]
struct SealState {
    config: Option<SealConfig>,
    /// The recovery key's shares and threshold (auto seal only; `None` without a recovery key).
    recovery: Option<SealConfig>,
    unseal: Option<ShareCollection>,
    rekey: Option<RekeyAttempt>,
    /// `sys/rekey-recovery-key` in progress.
    recovery_rekey: Option<RekeyAttempt>,
    /// Sealed by `sys/seal`: the auto seal does not reopen it; recovery shares do.
    manually_sealed: bool,
    /// A seal migration the config asks for, pending until an unseal with `migrate`.
    migration: Option<Migration>,
    /// `sys/generate-root` in progress.
    generate_root: Option<GenerateRootAttempt>,
}

/// A root token generation: the one-time pad the new token is encoded with, and the shares
/// (unseal shares, or recovery shares with an auto seal) given so far.
struct GenerateRootAttempt {
    /// How the new token is handed out: XORed with a one-time pad, or encrypted to a PGP key.
    encoding: RootTokenEncoding,
    collection: ShareCollection,
}

enum RootTokenEncoding {
    Otp(Zeroizing<String>),
    Pgp(Box<arcanum_crypto::pgp::PgpRecipient>),
}

impl std::fmt::Debug for GenerateRootAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let encoding = match &self.encoding {
            RootTokenEncoding::Otp(_) => "otp <redacted>".to_owned(),
            RootTokenEncoding::Pgp(key) => format!("pgp {}", key.fingerprint()),
        };
        f.debug_struct("GenerateRootAttempt")
            .field("encoding", &encoding)
            .field("collection", &self.collection)
            .finish()
    }
}

/// `sys/generate-root/attempt` as Vault reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateRootStatus {
    pub started: bool,
    pub nonce: String,
    pub progress: usize,
    pub required: usize,
    /// The OTP's length: the length of the root token that will be minted.
    pub otp_length: usize,
    /// The PGP key the token will be encrypted to, when the attempt was started with one.
    pub pgp_fingerprint: String,
}

/// Length of the tokens the token store mints, which a generate-root OTP must match.
pub const ROOT_TOKEN_LEN: usize = token::TOKEN_PREFIX.len() + token::TOKEN_RANDOM_LEN;

/// Vault's OTP scheme for generated root tokens: the token XOR the one-time pad (of equal
/// length), in unpadded standard base64 (Go's `RawStdEncoding`).
pub fn encode_root_token(token: &str, otp: &str) -> String {
    let encoded: Zeroizing<Vec<u8>> = Zeroizing::new(token.bytes().zip(otp.bytes()).map(|(t, o)| t ^ o).collect());
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, &*encoded)
}

/// The token an `encoded_token` stands for (see [`encode_root_token`]); padding is tolerated.
pub fn decode_root_token(encoded: &str, otp: &str) -> Result<Zeroizing<String>, String> {
    let bytes = Zeroizing::new(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, encoded.trim().trim_end_matches('='))
            .map_err(|_| "the encoded token is not base64".to_owned())?,
    );
    if bytes.len() != otp.len() {
        return Err(format!("the OTP's length ({}) differs from the token's ({})", otp.len(), bytes.len()));
    }
    let token: Vec<u8> = bytes.iter().zip(otp.bytes()).map(|(t, o)| t ^ o).collect();
    String::from_utf8(token).map(Zeroizing::new).map_err(|_| "the OTP does not decode this token".to_owned())
}

/// Which way a pending seal migration goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// Shamir data, an auto seal configured: the unseal key becomes the recovery key.
    ToAutoSeal,
    /// Auto-sealed data, the seal marked disabled: the recovery key becomes the unseal key.
    ToShamir,
}

/// The services that exist only while unsealed; dropping this drops the keys.
#[derive(Debug)]
pub struct Unsealed {
    pub barrier: Arc<Barrier>,
    pub tokens: TokenStore,
    pub policies: PolicyStore,
    pub mounts: MountTable,
    pub cluster: ClusterInfo,
    /// The enabled audit devices; the router records every request through them.
    pub audit: AuditBroker,
    /// Leases and the reaper.
    pub expiration: Expiration,
    /// Rate-limit and lease-count quotas.
    pub quotas: Quotas,
    /// Failed logins and locked users.
    pub lockout: lockout::UserLockout,
    /// The key that signs JWT wrapping tokens, read (or made) at its first use.
    wrapping_jwt_key: tokio::sync::OnceCell<Arc<wrapping::JwtKey>>,
}

impl Unsealed {
    /// Opens every unsealed service over `barrier`.
    async fn open(barrier: Arc<Barrier>, leases: LeaseSettings, catalog: Arc<Catalog>) -> Result<Unsealed, ApiError> {
        Self::open_as(barrier, leases, catalog, false).await
    }

    /// Opens the services for an HA standby's read-only copy (see [`standby`]).
    async fn open_standby_copy(
        barrier: Arc<Barrier>,
        leases: LeaseSettings,
        catalog: Arc<Catalog>,
    ) -> Result<Unsealed, ApiError> {
        Self::open_as(barrier, leases, catalog, true).await
    }

    async fn open_as(
        barrier: Arc<Barrier>,
        leases: LeaseSettings,
        catalog: Arc<Catalog>,
        standby_copy: bool,
    ) -> Result<Unsealed, ApiError> {
        let quotas = Quotas::open(barrier.clone()).await?;
        let mut expiration =
            Expiration::open(Arc::clone(&barrier), leases).await.map_err(internal("restoring the lease schedule"))?;
        expiration.lease_counts = Arc::clone(&quotas.counts);
        let mut tokens = TokenStore::open(Arc::clone(&barrier), Arc::clone(&expiration.schedule))
            .await
            .map_err(internal("opening the token store"))?;
        tokens.lease_counts = Arc::clone(&quotas.counts);
        let cluster: ClusterInfo = StorageView::new(barrier.clone(), "")
            .get_json(CLUSTER_PATH)
            .await?
            .ok_or_else(|| internal("reading cluster info")(BarrierError::Corrupt("missing".into())))?;
        let policies = PolicyStore::load(StorageView::new(barrier.clone(), "sys/policy/")).await?;
        let mounts = MountTable::load(Arc::clone(&barrier), catalog).await?;
        let audit = if standby_copy {
            AuditBroker::open_alongside(barrier.clone()).await?
        } else {
            AuditBroker::open(barrier.clone()).await?
        };
        let unsealed = Unsealed {
            lockout: lockout::UserLockout::new(Arc::clone(&barrier)),
            barrier,
            tokens,
            policies,
            mounts,
            cluster,
            audit,
            expiration,
            quotas,
            wrapping_jwt_key: tokio::sync::OnceCell::new(),
        };
        unsealed.count_for_quotas().await?;
        Ok(unsealed)
    }

    /// Counts what exists under each lease-count quota not counted yet (at unseal, and after
    /// a quota is written). Lists every lease id and reads every token under the quota's
    /// mount, so it costs a scan — only when such quotas exist.
    pub async fn count_for_quotas(&self) -> Result<(), ApiError> {
        for quota in self.quotas.uncounted() {
            let leases = self.expiration.lease_ids_under(&quota.scope.mount).await?;
            // A lease id is its request path plus a random suffix; quotas match the path.
            let request_path = |id: &str| id.rsplit_once('/').map_or(id.to_owned(), |(path, _)| path.to_owned());
            let mut live = leases.iter().filter(|id| quota.scope.covers(&request_path(id))).count();
            for hash in self.tokens.hashes_with_path_prefix(&quota.scope.mount).await? {
                if let Some(entry) = self.tokens.entry_by_hash(&hash).await? {
                    live += usize::from(quota.scope.covers(&entry.path));
                }
            }
            self.quotas.set_count(&quota.name, live as i64);
        }
        Ok(())
    }

    /// Revokes a token with its descendants, and everything kept per token (leases,
    /// cubbyholes). Safe to call for a token that is already gone: what it left is cleared.
    pub async fn revoke_token_tree(&self, id_hash: &str) -> Result<(), ApiError> {
        // Leases first: if this stops part-way, the tokens (and their expiry keys) are still
        // there to lead the next attempt or the reaper back to what is left.
        let tree = self.tokens.tree(id_hash).await?;
        for hash in &tree {
            self.expiration.revoke_token_leases(self, hash).await?;
        }
        let mut revoked = self.tokens.revoke_tree(id_hash).await?;
        for hash in tree {
            if !revoked.contains(&hash) {
                revoked.push(hash);
            }
        }
        self.clear_per_token_data(&revoked).await
    }

    /// Revokes a token alone; its children become orphans.
    pub async fn revoke_token_orphan(&self, id_hash: &str) -> Result<(), ApiError> {
        self.expiration.revoke_token_leases(self, id_hash).await?;
        let revoked = self.tokens.revoke_orphan(id_hash).await?;
        self.clear_per_token_data(&revoked).await
    }

    async fn clear_per_token_data(&self, revoked: &[String]) -> Result<(), ApiError> {
        let Some(cubbyhole) = self.mounts.get(MountTableKind::Secret, "cubbyhole/") else { return Ok(()) };
        for hash in revoked {
            cubbyhole.view.sub_view(&format!("{hash}/")).clear().await?;
        }
        Ok(())
    }

    /// Mints the token for a successful login on `mount`. Login tokens are orphans, as in Vault.
    pub async fn create_login_token(
        &self,
        mount: &MountEntry,
        login: &LoginAuth,
    ) -> Result<(Zeroizing<String>, token::TokenEntry), ApiError> {
        let mut policies: Vec<String> = login.policies.iter().map(|p| arcanum_policy::normalize_name(p)).collect();
        // A role that names root (or the wrapping policy) must not turn a login into root.
        if policies.iter().any(|p| p == "root") {
            return Err(ApiError::bad_request("auth methods cannot create root tokens"));
        }
        if policies.iter().any(|p| p == wrapping::RESPONSE_WRAPPING_POLICY) {
            return Err(ApiError::bad_request(format!(
                "auth methods cannot create tokens with the {} policy",
                wrapping::RESPONSE_WRAPPING_POLICY
            )));
        }
        if !login.no_default_policy {
            policies.push("default".into());
        }
        let max_ttl = match (login.max_ttl, mount.config.max_lease_ttl) {
            (0, 0) => 0,
            (0, mount_max) => mount_max,
            (login_max, 0) => login_max,
            (login_max, mount_max) => login_max.min(mount_max),
        };
        let ttl = if login.ttl == 0 { mount.config.default_lease_ttl } else { login.ttl };
        self.tokens
            .create(token::TokenRequest {
                parent: None,
                policies,
                meta: login.metadata.clone(),
                display_name: format!("{}-{}", mount.path.trim_end_matches('/'), login.display_name),
                path: format!("auth/{}{}", mount.path, login.login_path),
                num_uses: login.num_uses,
                ttl,
                explicit_max_ttl: 0,
                period: login.period,
                renewable: login.renewable,
                role: None,
                id: None,
                max_ttl,
                entity_id: entity_id(&self.cluster.id, &mount.accessor, &login.alias_name),
                bound_cidrs: login.bound_cidrs.clone(),
            })
            .await
    }

    /// Disables a mount after revoking its leases, and deletes its data (idempotent, as in
    /// Vault). A lease that cannot be revoked keeps the mount in place.
    pub async fn disable_mount(&self, table: MountTableKind, path: &str) -> Result<(), ApiError> {
        if let Some(mount) = self.mounts.get(table, path) {
            self.expiration.revoke_prefix(self, &mount.route, false).await?;
        }
        self.mounts.disable(table, path).await.map(|_| ())
    }
}

/// The server core, shared by every request.
#[derive(Debug)]
pub struct Core {
    backend: Arc<dyn Backend>,
    pub config: CoreConfig,
    /// The engine types mounts may have, handed in by the program.
    catalog: Arc<Catalog>,
    /// Held across the awaits of init, unseal, seal and rekey so those transitions serialise.
    state: tokio::sync::Mutex<SealState>,
    /// Read on every request; written only under `state` (and, with HA, by takeover and
    /// step-down).
    unsealed: RwLock<Option<Arc<Unsealed>>>,
    /// With `ha_enabled`: the election, and this node's part in it.
    ha: Option<Arc<ha::Ha>>,
    /// `seal "transit"`: the seal that wraps the root key; `None` for Shamir.
    auto_seal: Option<Arc<dyn seal::AutoSeal>>,
    /// A seal block marked `disabled`: the seal a pending migration moves away from.
    old_seal: Option<Arc<dyn seal::AutoSeal>>,
    /// Why the last auto-unseal attempt failed (kept outside `state` so that seal-status
    /// answers while an attempt waits on the seal).
    seal_error: std::sync::Mutex<Option<String>>,
}

impl Core {
    /// Opens the core over `backend`; it starts sealed (or uninitialised). Mounts are served by
    /// the engines of `catalog`.
    pub async fn new(backend: Arc<dyn Backend>, config: CoreConfig, catalog: Catalog) -> Result<Core, BarrierError> {
        let seal_config = read_seal_config(backend.as_ref(), SEAL_CONFIG_PATH).await?;
        let recovery = read_seal_config(backend.as_ref(), seal::RECOVERY_CONFIG_PATH).await?;
        Ok(Core {
            backend,
            config,
            catalog: Arc::new(catalog),
            state: tokio::sync::Mutex::new(SealState { config: seal_config, recovery, ..SealState::default() }),
            unsealed: RwLock::new(None),
            ha: None,
            auto_seal: None,
            old_seal: None,
            seal_error: std::sync::Mutex::new(None),
        })
    }

    /// Protects the root key with `seal` instead of Shamir shares (`seal "transit"`).
    pub fn with_auto_seal(mut self, seal: Arc<dyn seal::AutoSeal>) -> Core {
        self.auto_seal = Some(seal);
        self
    }

    /// Whether the root key is protected by an auto seal (recovery keys, not unseal keys).
    pub fn has_auto_seal(&self) -> bool {
        self.auto_seal.is_some()
    }

    /// The seal the config marks `disabled = "true"`: the one a migration moves away from.
    pub fn with_old_seal(mut self, seal: Arc<dyn seal::AutoSeal>) -> Core {
        self.old_seal = Some(seal);
        self
    }

    /// Compares the stored seal type with the config's: the same, or a migration the config
    /// asks for (a new auto seal over Shamir data; the old auto seal marked disabled over
    /// auto-sealed data), which is then pending until `sys/unseal` with `migrate`. Anything
    /// else is refused: a transit-sealed store cannot be opened with shares alone.
    pub async fn prepare_seal(&self) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let stored = state.config.map(|config| config.kind);
        if self.auto_seal.is_some() && self.old_seal.is_some() {
            return Err(
                "migrating from one seal \"transit\" to another is not supported: keep one transit block".into()
            );
        }
        state.migration = match (stored, &self.auto_seal, &self.old_seal) {
            (Some(SealType::Shamir), Some(_), _) => Some(Migration::ToAutoSeal),
            (Some(SealType::Transit), None, Some(_)) => Some(Migration::ToShamir),
            (Some(SealType::Transit), None, None) => {
                return Err("the data is sealed by a seal \"transit\" but the config has none; add the seal \
                     block back, or mark it disabled = \"true\" to migrate to Shamir"
                    .into())
            }
            _ => None,
        };
        if let Some(migration) = state.migration {
            tracing::warn!(
                ?migration,
                "seal migration pending: unseal with `arcanum operator unseal -migrate` ({} shares)",
                if migration == Migration::ToAutoSeal { "unseal key" } else { "recovery key" }
            );
        }
        Ok(())
    }

    /// Makes this an HA node: unsealing makes it a standby that campaigns for `backend`'s lock
    /// (call [`Core::start_ha`] once the core is shared).
    pub fn with_ha(mut self, backend: Arc<dyn arcanum_storage::HaBackend>, config: ha::HaConfig) -> Core {
        self.ha = Some(Arc::new(ha::Ha::new(backend, config)));
        self
    }

    /// The HA state, when HA is enabled.
    pub fn ha(&self) -> Option<&Arc<ha::Ha>> {
        self.ha.as_ref()
    }

    /// Whether this node is an unsealed standby (HA only): it serves only the paths Vault
    /// standbys serve themselves and sends the rest to the active node.
    pub fn is_standby(&self) -> bool {
        self.ha.as_ref().is_some_and(|ha| ha.is_unsealed() && !ha.is_active())
    }

    pub fn storage_type(&self) -> &'static str {
        self.backend.kind()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The unsealed services, or Vault's 503 while sealed. With HA only the active node has
    /// them, and only while its lock is valid: a node whose lock lapsed (paused, cut off) stops
    /// serving at once and asks its election task to step down.
    pub fn unsealed(&self) -> Result<Arc<Unsealed>, ApiError> {
        let unsealed = self.unsealed.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match (&self.ha, unsealed) {
            (Some(ha), Some(unsealed)) if ha.is_active() => Ok(unsealed),
            (Some(ha), _) if ha.is_unsealed() => {
                if ha.lock_lapsed() {
                    ha.request_step_down();
                }
                Err(ApiError::new(503, ha::NOT_ACTIVE))
            }
            (_, Some(unsealed)) if self.ha.is_none() => Ok(unsealed),
            _ => Err(ApiError::sealed()),
        }
    }

    pub fn is_sealed(&self) -> bool {
        match &self.ha {
            Some(ha) => !ha.is_unsealed(),
            None => self.unsealed().is_err(),
        }
    }

    pub async fn is_initialized(&self) -> bool {
        let mut state = self.state.lock().await;
        self.reload_seal_config(&mut state).await;
        state.config.is_some()
    }

    /// With HA the store is shared: another node may have initialised it, or rekeyed it, since
    /// this one read the seal config. A sealed node reads it again before it reports or counts
    /// shares against it.
    async fn reload_seal_config(&self, state: &mut SealState) {
        if self.ha.is_none() || !self.is_sealed() {
            return;
        }
        match self.backend.get(SEAL_CONFIG_PATH).await {
            Ok(Some(raw)) => match serde_json::from_slice::<SealConfig>(&raw) {
                Ok(config) => state.config = Some(config),
                Err(err) => tracing::error!(error = %err, "the stored seal config does not parse"),
            },
            Ok(None) => state.config = None,
            Err(err) => tracing::warn!(error = %err, "could not read the seal config; using the last one read"),
        }
        match read_seal_config(self.backend.as_ref(), seal::RECOVERY_CONFIG_PATH).await {
            Ok(recovery) => state.recovery = recovery,
            Err(err) => tracing::warn!(error = %err, "could not read the recovery config; using the last one read"),
        }
    }

    pub async fn seal_status(&self) -> SealStatus {
        let mut state = self.state.lock().await;
        self.reload_seal_config(&mut state).await;
        let unsealed = self.unsealed.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let sealed = self.is_sealed();
        // Before a migration, the shares that count are the ones the data is sealed with now.
        let counted = match (state.migration, &self.auto_seal) {
            (Some(Migration::ToAutoSeal), _) => state.config,
            (Some(Migration::ToShamir), _) | (None, Some(_)) => state.recovery,
            (None, None) => state.config,
        };
        let auto_sealed = match state.config {
            Some(config) => config.kind != SealType::Shamir,
            None => self.auto_seal.is_some(),
        };
        let (threshold, shares) = counted.map_or((0, 0), |c| (c.secret_threshold, c.secret_shares));
        let (progress, nonce) = match &state.unseal {
            Some(attempt) if sealed => (attempt.shares.len(), attempt.nonce.clone()),
            _ => (0, String::new()),
        };
        let seal_error = if sealed { lock(&self.seal_error).clone() } else { None };
        SealStatus {
            initialized: state.config.is_some(),
            sealed,
            kind: if auto_sealed { "transit" } else { "shamir" },
            recovery_seal: auto_sealed,
            migration: state.migration.is_some(),
            seal_error,
            threshold,
            shares,
            progress,
            nonce,
            cluster: unsealed.map(|u| u.cluster.clone()),
        }
    }

    /// `sys/init`: creates the keys, the root token and the seal config. The server stays sealed.
    pub async fn initialize(&self, seal_config: SealConfig) -> Result<InitOutput, ApiError> {
        self.initialize_with_root_token(seal_config, None).await
    }

    /// Like [`Core::initialize`], with a chosen root token value (dev mode's `-dev-root-token-id`).
    pub async fn initialize_with_root_token(
        &self,
        seal_config: SealConfig,
        root_token: Option<Zeroizing<String>>,
    ) -> Result<InitOutput, ApiError> {
        self.initialize_delivering(seal_config, root_token, &shares::ShareDelivery::default()).await
    }

    /// Like [`Core::initialize`], with the shares and the root token encrypted to the
    /// operators' PGP keys (`pgp_keys`, `root_token_pgp_key`) before anything is written.
    pub async fn initialize_delivering(
        &self,
        seal_config: SealConfig,
        root_token: Option<Zeroizing<String>>,
        delivery: &shares::ShareDelivery,
    ) -> Result<InitOutput, ApiError> {
        delivery.check_count(
            seal_config.secret_shares,
            "count mismatch between number of provided PGP keys and number of shares",
        )?;
        if self.auto_seal.is_some() {
            return Err(ApiError::bad_request(
                "parameters secret_shares,secret_threshold not applicable to seal type transit",
            ));
        }
        let mut state = self.state.lock().await;
        if state.config.is_some() {
            return Err(ApiError::bad_request("Vault is already initialized"));
        }
        let unseal_key = Key256::generate();
        let keyring = Keyring::generate(unix_now());
        let sealed_root_key = aead::seal(&unseal_key, keyring.root_key().as_bytes(), ROOT_KEY_AAD);
        let shares = shamir::split(unseal_key.as_bytes(), seal_config.secret_shares, seal_config.secret_threshold)
            .map_err(|err| ApiError::bad_request(format!("invalid seal configuration: {err}")))?;
        let root_token = self.write_initial_records(keyring.clone(), root_token).await?;
        let shares = delivery.seal_shares(shares)?;
        let root_token = delivery.seal_root_token(root_token)?;
        let config_json = to_json(&seal_config)?;
        self.backend
            .batch(vec![
                Op::Put { key: ROOT_KEY_PATH.into(), value: sealed_root_key },
                Op::Put { key: KEYRING_PATH.into(), value: keyring.seal_with_root() },
                Op::Put { key: SEAL_CONFIG_PATH.into(), value: config_json },
            ])
            .await
            .map_err(internal("writing the seal config"))?;
        state.config = Some(seal_config);
        tracing::info!(shares = seal_config.secret_shares, threshold = seal_config.secret_threshold, "initialized");
        Ok(InitOutput { shares, recovery_shares: Vec::new(), root_token })
    }

    /// `sys/init` with an auto seal: the root key is wrapped by the seal (nothing is written
    /// if the seal refuses), recovery shares are handed out instead of unseal keys, and the
    /// server unseals itself at once.
    pub async fn initialize_auto(
        &self,
        recovery: Option<SealConfig>,
        delivery: &shares::ShareDelivery,
    ) -> Result<InitOutput, ApiError> {
        delivery.check_count(
            recovery.map_or(0, |r| r.secret_shares),
            "count mismatch between number of provided PGP keys and number of recovery shares",
        )?;
        let Some(auto_seal) = self.auto_seal.clone() else {
            return Err(ApiError::bad_request(
                "parameters recovery_shares,recovery_threshold not applicable to seal type shamir",
            ));
        };
        if self.state.lock().await.config.is_some() {
            return Err(ApiError::bad_request("Vault is already initialized"));
        }
        // The seal is asked before the seal-state lock is taken, so seal-status and health
        // keep answering while it waits; the lock is then taken and the check repeated.
        let keyring = Keyring::generate(unix_now());
        let root_key = keyring.root_key().clone();
        let wrapped_root = seal::wrap_root_key(auto_seal.as_ref(), &root_key).await?;
        let mut state = self.state.lock().await;
        if state.config.is_some() {
            return Err(ApiError::bad_request("Vault is already initialized"));
        }
        let mut records = vec![Op::Put { key: ROOT_KEY_PATH.into(), value: wrapped_root }];
        let mut recovery_shares = Vec::new();
        if let Some(recovery) = recovery {
            let recovery_key = Key256::generate();
            recovery_shares = shamir::split(recovery_key.as_bytes(), recovery.secret_shares, recovery.secret_threshold)
                .map_err(|err| ApiError::bad_request(format!("invalid recovery configuration: {err}")))?;
            let recovery_json = to_json(&recovery)?;
            records.push(Op::Put { key: seal::RECOVERY_KEY_PATH.into(), value: seal::recovery_check(&recovery_key) });
            records.push(Op::Put { key: seal::RECOVERY_CONFIG_PATH.into(), value: recovery_json });
        }
        let root_token = self.write_initial_records(keyring.clone(), None).await?;
        let recovery_shares = delivery.seal_shares(recovery_shares)?;
        let root_token = delivery.seal_root_token(root_token)?;
        let barrier_config = SealConfig { kind: SealType::Transit, secret_shares: 1, secret_threshold: 1 };
        records.push(Op::Put { key: KEYRING_PATH.into(), value: keyring.seal_with_root() });
        records.push(Op::Put { key: SEAL_CONFIG_PATH.into(), value: to_json(&barrier_config)? });
        self.backend.batch(records).await.map_err(internal("writing the seal config"))?;
        state.config = Some(barrier_config);
        state.recovery = recovery;
        tracing::info!(seal = auto_seal.kind(), recovery_shares = recovery_shares.len(), "initialized");
        // The node is initialised now: its root token and recovery shares must reach the caller
        // even if unsealing fails here; the auto-unseal loop then tries again.
        if let Err(err) = self.finish_unseal(&mut state, root_key).await {
            tracing::error!(error = %err, "initialised, but unsealing right after init failed; retrying with the seal");
        }
        Ok(InitOutput { shares: Vec::new(), recovery_shares, root_token })
    }

    /// The barrier records every new server starts with (cluster identity, token salt, root
    /// token, barrier stats). They are written before the seal config, so a crash in between
    /// leaves the server uninitialised rather than initialised without a root token.
    async fn write_initial_records(
        &self,
        keyring: Keyring,
        root_token: Option<Zeroizing<String>>,
    ) -> Result<Zeroizing<String>, ApiError> {
        let barrier = Barrier::open(Arc::clone(&self.backend), keyring, self.config.rotate_after)
            .await
            .map_err(internal("opening the barrier at init"))?;
        let cluster = ClusterInfo {
            id: uuid::Uuid::new_v4().to_string(),
            name: format!("arcanum-cluster-{}", &arcanum_crypto::token::random_hex(4)),
        };
        let cluster_json = serde_json::to_vec(&cluster).map_err(|_| ApiError::internal())?;
        barrier.put(CLUSTER_PATH, &cluster_json).await.map_err(internal("writing cluster info"))?;
        let tokens = TokenStore::open(Arc::clone(&barrier), Arc::default())
            .await
            .map_err(internal("creating the token salt"))?;
        let root_token = tokens.create_root(root_token).await.map_err(internal("creating the root token"))?;
        barrier.persist_stats().await.map_err(internal("writing barrier stats"))?;
        Ok(root_token)
    }

    /// `sys/unseal` with a key share. Unseals once the threshold is reached.
    pub async fn submit_unseal_share(&self, share: Zeroizing<Vec<u8>>) -> Result<(), ApiError> {
        self.submit_unseal_share_migrating(share, false).await
    }

    /// `sys/unseal` with `migrate`: while a seal migration is pending every share must carry it,
    /// and reaching the threshold migrates the seal, then unseals.
    pub async fn submit_unseal_share_migrating(
        &self,
        share: Zeroizing<Vec<u8>>,
        migrate: bool,
    ) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        match (state.migration, migrate) {
            (Some(_), false) if self.is_sealed() => {
                return Err(ApiError::bad_request(
                    "migrate option not provided and seal migration is pending (arcanum operator unseal -migrate)",
                ))
            }
            (None, true) => {
                return Err(ApiError::bad_request("migrate option provided but seal migration is not in progress"))
            }
            (Some(migration), true) => return self.migrate_seal(&mut state, migration, share).await,
            _ => {}
        }
        self.reload_seal_config(&mut state).await;
        if state.config.is_none() {
            return Err(ApiError::bad_request("Vault is not initialized"));
        }
        if !self.is_sealed() {
            return Ok(());
        }
        // With an auto seal the shares are recovery shares: they are checked against the
        // recovery key, and the seal still has to open the root key.
        let threshold = self
            .authorising_config(&state)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "this server has no recovery key (initialised with recovery_shares=0); restart it to auto-unseal",
                )
            })?
            .secret_threshold;
        check_share_len(&share)?;
        let attempt = state.unseal.get_or_insert_with(ShareCollection::new);
        attempt.add(share);
        if attempt.shares.len() < threshold {
            return Ok(());
        }
        // Whatever happens next, this attempt is over (Vault resets progress on failure too).
        let Some(attempt) = state.unseal.take() else {
            return Ok(());
        };
        let key = attempt.combine()?;
        let root_key = match &self.auto_seal {
            None => self.unseal_root_key(&key).await?,
            Some(auto_seal) => {
                self.check_recovery_key(&key).await?;
                self.root_key_from_seal(auto_seal.as_ref()).await?
            }
        };
        self.finish_unseal(&mut state, root_key).await
    }

    /// One share towards a seal migration; at the threshold the seal's records are rewritten
    /// in one batch (nothing changes if the shares or the seal fail), then the node unseals.
    async fn migrate_seal(
        &self,
        state: &mut SealState,
        migration: Migration,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let (Some(config), recovery) = (state.config, state.recovery) else {
            return Err(ApiError::bad_request("Vault is not initialized"));
        };
        let counted = match migration {
            Migration::ToAutoSeal => config,
            Migration::ToShamir => recovery.ok_or_else(|| {
                ApiError::bad_request("this server has no recovery key (recovery_shares=0): it cannot leave its seal")
            })?,
        };
        check_share_len(&share)?;
        let attempt = state.unseal.get_or_insert_with(ShareCollection::new);
        attempt.add(share);
        if attempt.shares.len() < counted.secret_threshold {
            return Ok(());
        }
        let Some(attempt) = state.unseal.take() else { return Ok(()) };
        let key = attempt.combine()?;
        let (root_key, records, new_config, new_recovery) = match migration {
            Migration::ToAutoSeal => {
                let auto_seal = self.auto_seal.clone().ok_or_else(ApiError::internal)?;
                // The unseal key becomes the recovery key; its shares become recovery shares.
                let root_key = self.unseal_root_key(&key).await?;
                let wrapped = seal::wrap_root_key(auto_seal.as_ref(), &root_key).await?;
                let barrier = SealConfig { kind: SealType::Transit, secret_shares: 1, secret_threshold: 1 };
                let recovery = config;
                let records = vec![
                    Op::Put { key: ROOT_KEY_PATH.into(), value: wrapped },
                    Op::Put { key: seal::RECOVERY_KEY_PATH.into(), value: seal::recovery_check(&key) },
                    Op::Put { key: seal::RECOVERY_CONFIG_PATH.into(), value: to_json(&recovery)? },
                    Op::Put { key: SEAL_CONFIG_PATH.into(), value: to_json(&barrier)? },
                ];
                (root_key, records, barrier, Some(recovery))
            }
            Migration::ToShamir => {
                let old_seal = self.old_seal.clone().ok_or_else(ApiError::internal)?;
                // The recovery key becomes the unseal key; its shares become unseal shares.
                self.check_recovery_key(&key).await?;
                let root_key = self.root_key_from_seal(old_seal.as_ref()).await?;
                let barrier = SealConfig { kind: SealType::Shamir, ..counted };
                let records = vec![
                    Op::Put { key: ROOT_KEY_PATH.into(), value: aead::seal(&key, root_key.as_bytes(), ROOT_KEY_AAD) },
                    Op::Delete { key: seal::RECOVERY_KEY_PATH.into() },
                    Op::Delete { key: seal::RECOVERY_CONFIG_PATH.into() },
                    Op::Put { key: SEAL_CONFIG_PATH.into(), value: to_json(&barrier)? },
                ];
                (root_key, records, barrier, None)
            }
        };
        self.backend.batch(records).await.map_err(internal("writing the migrated seal"))?;
        state.config = Some(new_config);
        state.recovery = new_recovery;
        state.migration = None;
        tracing::info!(?migration, "seal migrated");
        self.finish_unseal(state, root_key).await
    }

    /// Opens every service with the root key (a standby keeps only the root key; the
    /// election opens the rest at takeover).
    async fn finish_unseal(&self, state: &mut SealState, root_key: Key256) -> Result<(), ApiError> {
        let keyring = self.open_keyring_with_root(&root_key).await?;
        state.manually_sealed = false;
        *lock(&self.seal_error) = None;
        if let Some(ha) = &self.ha {
            ha.unsealed(root_key);
            tracing::info!("unsealed as a standby; campaigning for the active role");
            return Ok(());
        }
        let barrier = Barrier::open(Arc::clone(&self.backend), keyring, self.config.rotate_after)
            .await
            .map_err(internal("opening the barrier"))?;
        let unsealed = Arc::new(Unsealed::open(barrier, self.config.leases, Arc::clone(&self.catalog)).await?);
        Expiration::start_reaper(&unsealed);
        *self.unsealed.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(unsealed);
        tracing::info!("unsealed");
        Ok(())
    }

    /// The root key record as stored (sealed by the unseal key, or wrapped by the auto seal).
    async fn stored_root_key(&self) -> Result<Vec<u8>, ApiError> {
        self.backend.get(ROOT_KEY_PATH).await.map_err(internal("reading the root key"))?.ok_or_else(ApiError::internal)
    }

    /// The root key, unwrapped by the auto seal.
    async fn root_key_from_seal(&self, auto_seal: &dyn seal::AutoSeal) -> Result<Key256, ApiError> {
        let stored = self.stored_root_key().await?;
        seal::unwrap_root_key(auto_seal, &stored).await
    }

    /// Refuses a combined recovery key that is not the stored one.
    async fn check_recovery_key(&self, candidate: &Key256) -> Result<(), ApiError> {
        let check = self
            .backend
            .get(seal::RECOVERY_KEY_PATH)
            .await
            .map_err(internal("reading the recovery key check"))?
            .ok_or_else(|| ApiError::bad_request("this server has no recovery key"))?;
        if !seal::recovery_key_matches(candidate, &check) {
            return Err(ApiError::bad_request("the recovery key shares are incorrect (message authentication failed)"));
        }
        Ok(())
    }

    /// Unseals with the auto seal, unless the server is unsealed, uninitialised, sealed by hand
    /// (`sys/seal`; recovery shares reopen it) or has no auto seal. The seal is asked without
    /// holding the seal-state lock, so seal-status keeps answering while it waits. A failure
    /// is kept for `sys/seal-status` and returned; the caller retries.
    pub async fn auto_unseal(&self) -> Result<bool, ApiError> {
        let Some(auto_seal) = self.auto_seal.clone() else { return Ok(false) };
        {
            let mut state = self.state.lock().await;
            self.reload_seal_config(&mut state).await;
            if state.config.is_none() || !self.is_sealed() || state.manually_sealed || state.migration.is_some() {
                return Ok(false);
            }
        }
        let root_key = match self.root_key_from_seal(auto_seal.as_ref()).await {
            Ok(root_key) => root_key,
            Err(err) => {
                *lock(&self.seal_error) = Some(err.errors.join("; "));
                return Err(err);
            }
        };
        let mut state = self.state.lock().await;
        if !self.is_sealed() || state.manually_sealed {
            return Ok(false);
        }
        self.finish_unseal(&mut state, root_key).await.map(|()| true)
    }

    /// Opens the root key with a candidate unseal key; a wrong key is a 400.
    async fn unseal_root_key(&self, unseal_key: &Key256) -> Result<Key256, ApiError> {
        let wrong = || {
            ApiError::bad_request(
                "unseal failed: the key shares do not open the root key (message authentication failed)",
            )
        };
        let sealed_root = self.stored_root_key().await?;
        let root_bytes = Zeroizing::new(aead::open(unseal_key, &sealed_root, ROOT_KEY_AAD).map_err(|_| wrong())?);
        Key256::from_slice(&root_bytes).map_err(|_| ApiError::internal())
    }

    /// `sys/unseal` with `reset`: forget the shares given so far.
    pub async fn reset_unseal(&self) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        if state.config.is_none() {
            return Err(ApiError::bad_request("Vault is not initialized"));
        }
        if !self.is_sealed() {
            return Err(ApiError::bad_request("vault is unsealed"));
        }
        state.unseal = None;
        Ok(())
    }

    /// `sys/seal`: drops every key. Idempotent. An active HA node hands the lock over first.
    pub async fn seal(&self) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        state.manually_sealed = self.auto_seal.is_some();
        // Shares collected towards anything are forgotten with the keys.
        state.recovery_rekey = None;
        state.generate_root = None;
        if let Some(ha) = &self.ha {
            self.step_down_now(ha).await;
            ha.sealed();
            state.unseal = None;
            state.rekey = None;
            tracing::info!("sealed");
            return Ok(());
        }
        let taken = self.unsealed.write().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        state.unseal = None;
        state.rekey = None;
        if let Some(unsealed) = taken {
            unsealed.expiration.stop_reaper();
            unsealed.audit.persist_heads().await;
            if let Err(err) = unsealed.barrier.persist_stats().await {
                tracing::warn!(error = %err, "could not persist barrier stats while sealing");
            }
            tracing::info!("sealed");
        }
        Ok(())
    }

    /// The attempt slot and the current config a rekey of `target` works with.
    fn rekey_slot(state: &mut SealState, target: RekeyTarget) -> (&mut Option<RekeyAttempt>, Option<SealConfig>) {
        match target {
            RekeyTarget::Barrier => (&mut state.rekey, state.config),
            RekeyTarget::Recovery => (&mut state.recovery_rekey, state.recovery),
        }
    }

    pub async fn rekey_status(&self, target: RekeyTarget) -> RekeyStatus {
        let mut state = self.state.lock().await;
        let (slot, current) = Self::rekey_slot(&mut state, target);
        let required = current.map_or(0, |c| c.secret_threshold);
        match slot {
            Some(attempt) => RekeyStatus {
                started: true,
                nonce: attempt.collection.nonce.clone(),
                new_shares: attempt.config.secret_shares,
                new_threshold: attempt.config.secret_threshold,
                progress: attempt.collection.shares.len(),
                required,
                pgp_fingerprints: attempt.delivery.fingerprints(),
                backup: attempt.backup,
            },
            None => RekeyStatus {
                started: false,
                nonce: String::new(),
                new_shares: 0,
                new_threshold: 0,
                progress: 0,
                required,
                pgp_fingerprints: Vec::new(),
                backup: false,
            },
        }
    }

    /// `sys/rekey/init` (new unseal key shares) or `sys/rekey-recovery-key/init` (new recovery
    /// key shares): start collecting current shares for new `config`.
    pub async fn rekey_init(
        &self,
        target: RekeyTarget,
        config: SealConfig,
        pgp_keys: Vec<arcanum_crypto::pgp::PgpRecipient>,
        backup: bool,
    ) -> Result<(), ApiError> {
        self.unsealed()?;
        if backup && pgp_keys.is_empty() {
            return Err(ApiError::bad_request(
                "cannot request a backup of the new keys without providing PGP keys for encryption",
            ));
        }
        let delivery = shares::ShareDelivery { share_keys: pgp_keys, root_token_key: None };
        delivery.check_count(config.secret_shares, "incorrect number of PGP keys for rekey")?;
        match (target, &self.auto_seal) {
            (RekeyTarget::Barrier, Some(auto_seal)) => {
                return Err(ApiError::bad_request(format!(
                    "the root key is protected by the {} seal, not by unseal keys; rekey the recovery key with \
                     sys/rekey-recovery-key",
                    auto_seal.kind()
                )))
            }
            (RekeyTarget::Recovery, None) => {
                return Err(ApiError::bad_request("recovery keys are not supported with a shamir seal"))
            }
            _ => {}
        }
        let mut state = self.state.lock().await;
        if target == RekeyTarget::Recovery && state.recovery.is_none() {
            return Err(ApiError::bad_request("this server has no recovery key to rekey"));
        }
        let (slot, _) = Self::rekey_slot(&mut state, target);
        if slot.is_some() {
            return Err(ApiError::bad_request("rekey already in progress"));
        }
        *slot = Some(RekeyAttempt { config, collection: ShareCollection::new(), delivery, backup });
        Ok(())
    }

    pub async fn rekey_cancel(&self, target: RekeyTarget) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        *Self::rekey_slot(&mut state, target).0 = None;
        Ok(())
    }

    /// `sys/rekey/update` or `sys/rekey-recovery-key/update`: one current share. Returns the
    /// new shares once complete.
    pub async fn rekey_update(
        &self,
        target: RekeyTarget,
        share: Zeroizing<Vec<u8>>,
        nonce: &str,
    ) -> Result<Option<RekeyOutput>, ApiError> {
        self.unsealed()?;
        let mut state = self.state.lock().await;
        let (slot, current) = Self::rekey_slot(&mut state, target);
        let threshold = current.map_or(0, |c| c.secret_threshold);
        let Some(attempt) = slot.as_mut() else {
            return Err(ApiError::bad_request("no rekey in progress"));
        };
        if !attempt.collection.offer(share, nonce, "rekey", threshold)? {
            return Ok(None);
        }
        let Some(attempt) = slot.take() else {
            return Ok(None);
        };
        let current_key = attempt.collection.combine()?;
        let new_key = Key256::generate();
        let new_shares =
            shamir::split(new_key.as_bytes(), attempt.config.secret_shares, attempt.config.secret_threshold)
                .map_err(|err| ApiError::bad_request(format!("invalid seal configuration: {err}")))?;
        let new_shares = attempt.delivery.seal_shares(new_shares)?;
        let config_json = to_json(&attempt.config)?;
        // The new key's record, its config and the backup change together or not at all.
        let mut records = match target {
            RekeyTarget::Barrier => {
                let sealed_root = self.stored_root_key().await?;
                let root_bytes =
                    Zeroizing::new(aead::open(&current_key, &sealed_root, ROOT_KEY_AAD).map_err(|_| {
                        ApiError::bad_request(
                            "rekey failed: the key shares are incorrect (message authentication failed)",
                        )
                    })?);
                vec![
                    Op::Put { key: ROOT_KEY_PATH.into(), value: aead::seal(&new_key, &root_bytes, ROOT_KEY_AAD) },
                    Op::Put { key: SEAL_CONFIG_PATH.into(), value: config_json },
                ]
            }
            RekeyTarget::Recovery => {
                self.check_recovery_key(&current_key).await?;
                vec![
                    Op::Put { key: seal::RECOVERY_KEY_PATH.into(), value: seal::recovery_check(&new_key) },
                    Op::Put { key: seal::RECOVERY_CONFIG_PATH.into(), value: config_json },
                ]
            }
        };
        if attempt.backup {
            let backup = shares::KeysBackup::of(&attempt.collection.nonce, &attempt.delivery, &new_shares);
            records.push(Op::Put { key: Self::backup_path(target).into(), value: to_json(&backup)? });
        }
        self.backend.batch(records).await.map_err(internal("writing the rekeyed key"))?;
        match target {
            RekeyTarget::Barrier => state.config = Some(attempt.config),
            RekeyTarget::Recovery => state.recovery = Some(attempt.config),
        }
        tracing::info!(
            ?target,
            shares = attempt.config.secret_shares,
            threshold = attempt.config.secret_threshold,
            "rekey complete"
        );
        Ok(Some(RekeyOutput {
            shares: new_shares,
            pgp_fingerprints: attempt.delivery.fingerprints(),
            backup: attempt.backup,
        }))
    }

    fn backup_path(target: RekeyTarget) -> &'static str {
        match target {
            RekeyTarget::Barrier => shares::UNSEAL_KEYS_BACKUP_PATH,
            RekeyTarget::Recovery => shares::RECOVERY_KEYS_BACKUP_PATH,
        }
    }

    /// `sys/rekey/backup` (or `recovery-key-backup`): the encrypted shares a rekey kept.
    pub async fn rekey_backup(&self, target: RekeyTarget) -> Result<Option<shares::KeysBackup>, ApiError> {
        self.unsealed()?;
        let Some(raw) =
            self.backend.get(Self::backup_path(target)).await.map_err(internal("reading the key backup"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&raw).map(Some).map_err(|err| {
            tracing::error!(error = %err, "the stored key backup does not parse");
            ApiError::internal()
        })
    }

    pub async fn delete_rekey_backup(&self, target: RekeyTarget) -> Result<(), ApiError> {
        self.unsealed()?;
        self.backend
            .batch(vec![Op::Delete { key: Self::backup_path(target).into() }])
            .await
            .map_err(internal("deleting the key backup"))
    }

    /// The shares and threshold that authorise generate-root and recovery operations: the unseal
    /// key's, or the recovery key's with an auto seal.
    fn authorising_config(&self, state: &SealState) -> Option<SealConfig> {
        if self.auto_seal.is_some() {
            state.recovery
        } else {
            state.config
        }
    }

    pub async fn generate_root_status(&self) -> GenerateRootStatus {
        let state = self.state.lock().await;
        let required = self.authorising_config(&state).map_or(0, |c| c.secret_threshold);
        let (started, nonce, progress) = match &state.generate_root {
            Some(attempt) => (true, attempt.collection.nonce.clone(), attempt.collection.shares.len()),
            None => (false, String::new(), 0),
        };
        let pgp_fingerprint = match state.generate_root.as_ref().map(|attempt| &attempt.encoding) {
            Some(RootTokenEncoding::Pgp(key)) => key.fingerprint().to_owned(),
            _ => String::new(),
        };
        GenerateRootStatus { started, nonce, progress, required, otp_length: ROOT_TOKEN_LEN, pgp_fingerprint }
    }

    /// `sys/generate-root/attempt` PUT: starts a generation with `otp`, or with a fresh
    /// base62 OTP that is returned (once) when none is given.
    pub async fn generate_root_init(
        &self,
        otp: Option<Zeroizing<String>>,
        pgp_key: Option<arcanum_crypto::pgp::PgpRecipient>,
    ) -> Result<Option<Zeroizing<String>>, ApiError> {
        self.unsealed()?;
        let mut state = self.state.lock().await;
        if state.generate_root.is_some() {
            return Err(ApiError::bad_request("root generation already in progress"));
        }
        if self.authorising_config(&state).is_none() {
            return Err(ApiError::bad_request("this server has no recovery key to authorise a root token"));
        }
        let (encoding, generated) = match (otp, pgp_key) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("only one of \"otp\" and \"pgp_key\" may be given"));
            }
            (None, Some(key)) => (RootTokenEncoding::Pgp(Box::new(key)), None),
            (Some(otp), None) if otp.len() != ROOT_TOKEN_LEN => {
                return Err(ApiError::bad_request("OTP string has incorrect length"));
            }
            (Some(otp), None) => (RootTokenEncoding::Otp(otp), None),
            (None, None) => {
                let otp = Zeroizing::new(arcanum_crypto::token::generate("", ROOT_TOKEN_LEN));
                (RootTokenEncoding::Otp(otp.clone()), Some(otp))
            }
        };
        state.generate_root = Some(GenerateRootAttempt { encoding, collection: ShareCollection::new() });
        tracing::info!("root token generation started");
        Ok(generated)
    }

    pub async fn generate_root_cancel(&self) -> Result<(), ApiError> {
        self.state.lock().await.generate_root = None;
        Ok(())
    }

    /// `sys/generate-root/update`: one share (an unseal share, or a recovery share with an auto
    /// seal). At the threshold the shares are checked, a root token is created and returned
    /// encoded: unpadded base64 of the token XOR the OTP.
    pub async fn generate_root_update(
        &self,
        share: Zeroizing<Vec<u8>>,
        nonce: &str,
    ) -> Result<Option<String>, ApiError> {
        let unsealed = self.unsealed()?;
        let mut state = self.state.lock().await;
        let threshold = self.authorising_config(&state).map_or(0, |c| c.secret_threshold);
        let Some(attempt) = state.generate_root.as_mut() else {
            return Err(ApiError::bad_request("no root generation in progress"));
        };
        if !attempt.collection.offer(share, nonce, "root generation", threshold)? {
            return Ok(None);
        }
        let Some(attempt) = state.generate_root.take() else { return Ok(None) };
        let key = attempt.collection.combine()?;
        if self.auto_seal.is_some() {
            self.check_recovery_key(&key).await?;
        } else {
            self.unseal_root_key(&key).await?;
        }
        let token = unsealed.tokens.create_root(None).await.map_err(internal("creating the root token"))?;
        let encoded = match &attempt.encoding {
            RootTokenEncoding::Otp(otp) => Ok(Zeroizing::new(encode_root_token(&token, otp))),
            RootTokenEncoding::Pgp(key) => shares::encrypt_token(key, &token),
        };
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(err) => {
                // Nobody could ever read this token: take it back.
                let hash = unsealed.tokens.hash(&token);
                if let Err(undo) = unsealed.revoke_token_tree(&hash).await {
                    tracing::error!(status = undo.status, "a root token that could not be encrypted was not revoked");
                }
                return Err(err);
            }
        };
        tracing::info!("root token generated");
        Ok(Some(encoded.to_string()))
    }

    /// SIGHUP: audit devices reopen their files (a sealed server has none open).
    pub async fn reopen_audit(&self) {
        if let Ok(unsealed) = self.unsealed() {
            unsealed.audit.reopen().await;
        }
    }

    /// Graceful shutdown: persist counters and make every write durable; an active HA node
    /// hands the lock over at once rather than letting it expire.
    pub async fn shutdown(&self) {
        if let Some(ha) = &self.ha {
            self.step_down_now(ha).await;
            ha.sealed();
        }
        if let Ok(unsealed) = self.unsealed() {
            // The reaper's runtime outlives the API's; nothing may write after the final flush.
            unsealed.expiration.stop_reaper();
            unsealed.audit.persist_heads().await;
            if let Err(err) = unsealed.barrier.persist_stats().await {
                tracing::warn!(error = %err, "could not persist barrier stats at shutdown");
            }
        }
        if let Err(err) = self.backend.flush().await {
            tracing::error!(error = %err, "final storage flush failed");
        }
    }
}

/// A stable entity id for an alias: the same alias name on the same mount always maps to the
/// same id (what Vault's identity store guarantees for logins), shaped like a UUID v4-style id.
/// Arcanum has no identity store yet, so entities carry no policies or metadata of their own.
fn entity_id(cluster_id: &str, mount_accessor: &str, alias_name: &str) -> String {
    if alias_name.is_empty() {
        return String::new();
    }
    let digest =
        arcanum_crypto::hmac_sha256(cluster_id.as_bytes(), format!("{mount_accessor}\0{alias_name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A seal or recovery config (or a key backup) as stored (plaintext JSON).
fn to_json(config: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(config).map_err(|_| ApiError::internal())
}

/// A stored seal or recovery config (plaintext JSON), if there is one.
async fn read_seal_config(backend: &dyn Backend, path: &str) -> Result<Option<SealConfig>, BarrierError> {
    match backend.get(path).await? {
        Some(raw) => serde_json::from_slice::<SealConfig>(&raw)
            .map(Some)
            .map_err(|err| BarrierError::Corrupt(format!("{path}: {err}"))),
        None => Ok(None),
    }
}

fn check_share_len(share: &[u8]) -> Result<(), ApiError> {
    if share.len() != SHARE_LEN {
        return Err(ApiError::bad_request(format!(
            "invalid key: a key share is {SHARE_LEN} bytes, this one is {} bytes",
            share.len()
        )));
    }
    Ok(())
}

/// Logs an internal failure with context and turns it into Vault's opaque 500.
/// A storage failure while `what`, as the client sees it (see [`barrier::api_error`]).
fn internal<E: Into<BarrierError>>(what: &'static str) -> impl Fn(E) -> ApiError {
    move |err| barrier::api_error(what, err.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_storage::InmemBackend;

    /// Every server mounts a `cubbyhole/`; here any backend will do for it.
    fn catalog() -> Catalog {
        #[derive(Debug)]
        struct Empty;

        #[async_trait::async_trait]
        impl arcanum_contract::LogicalBackend for Empty {
            async fn handle(
                &self,
                _req: arcanum_contract::BackendRequest<'_>,
            ) -> Result<arcanum_contract::Response, ApiError> {
                Err(ApiError::not_found())
            }
        }
        Catalog::new().secret("cubbyhole", |_| Ok(Arc::new(Empty)))
    }

    #[tokio::test]
    async fn debug_output_never_shows_shares_tokens_or_keys() {
        let core = Core::new(Arc::new(InmemBackend::new()), CoreConfig::default(), catalog()).await.unwrap();
        let output = core.initialize(SealConfig::new(3, 2).unwrap()).await.unwrap();
        core.submit_unseal_share(output.shares[0].clone()).await.unwrap();
        core.rekey_status(RekeyTarget::Barrier).await;
        let secrets: Vec<String> = output
            .shares
            .iter()
            .map(|share| hex::encode(share.as_slice()))
            .chain([output.root_token.to_string()])
            .collect();
        let partial = format!("{core:?} {output:?}");
        core.submit_unseal_share(output.shares[1].clone()).await.unwrap();
        core.rekey_init(RekeyTarget::Barrier, SealConfig::new(2, 2).unwrap(), Vec::new(), false).await.unwrap();
        core.rekey_update(
            RekeyTarget::Barrier,
            output.shares[2].clone(),
            &core.rekey_status(RekeyTarget::Barrier).await.nonce,
        )
        .await
        .unwrap();
        let unsealed = format!("{core:?}");
        for text in [&partial, &unsealed] {
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "Debug output leaks a secret");
            }
            // Byte-list form, as a derived Debug of Vec<u8> would print it.
            let first_share_bytes = format!("{:?}", output.shares[0].as_slice());
            assert!(!text.contains(&first_share_bytes[1..first_share_bytes.len() - 1]));
        }
        assert!(unsealed.contains("redacted"));
    }
}
