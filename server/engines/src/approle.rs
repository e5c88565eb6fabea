//! The AppRole credential backend (`approle`): a machine logs in with a role ID (an identifier,
//! like a username) and a secret ID (a credential, usually short-lived and single-use, handed
//! to it by a trusted orchestrator, often response-wrapped).
//!
//! Storage (the mount's view): `salt` (the HMAC key), `role/<name>`, `role_id/<hmac(role id)>`
//! naming the role, `secret_id/<name>/<hmac(secret id)>` per secret ID, and
//! `accessor/<hmac(accessor)>` pointing at one. Secret IDs and role IDs are never stored in the
//! clear, only as HMACs; a login finds a secret ID by its HMAC. Every change to a secret ID
//! (a use counted, a destroy, a tidy) happens under one lock, so a one-use secret ID serves
//! exactly one of any number of concurrent logins.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::backend::{BackendRequest, LogicalBackend};
use arcanum_contract::clock::{rfc3339, unix_now};
use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Response};
use arcanum_contract::mount::MountEntry;
use arcanum_contract::storage::{StorageView, ViewOp};

use crate::token_settings::{cidrs_allow, parse_cidrs, TokenSettings};

const INVALID: &str = "invalid role or secret ID";
/// Expired secret IDs are removed this often (and by `tidy/secret-id`).
const TIDY_INTERVAL_SECS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Role {
    name: String,
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<String>,
    secret_id_num_uses: u64,
    secret_id_ttl: u64,
    local_secret_ids: bool,
    #[serde(flatten)]
    token: TokenSettings,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            name: String::new(),
            role_id: String::new(),
            bind_secret_id: true,
            secret_id_bound_cidrs: Vec::new(),
            secret_id_num_uses: 0,
            secret_id_ttl: 0,
            local_secret_ids: false,
            token: TokenSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct SecretId {
    accessor: String,
    /// Uses left; 0 = unlimited.
    num_uses: u64,
    ttl: u64,
    creation_time: i64,
    /// 0: never expires.
    expiration_time: i64,
    last_updated_time: i64,
    metadata: BTreeMap<String, String>,
    cidr_list: Vec<String>,
    token_bound_cidrs: Vec<String>,
}

impl SecretId {
    fn expired(&self, now: i64) -> bool {
        self.expiration_time != 0 && now >= self.expiration_time
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RoleIdIndex {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessorIndex {
    role: String,
    secret_id_hmac: String,
}

/// One per mount.
#[derive(Default)]
pub struct AppRole {
    salt: tokio::sync::OnceCell<Zeroizing<Vec<u8>>>,
    /// Serialises every change to roles and secret IDs (see the module documentation).
    lock: tokio::sync::Mutex<()>,
    last_tidy: AtomicI64,
}

// By hand: the salt must never reach a log line through `{:?}`.
impl std::fmt::Debug for AppRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRole").finish_non_exhaustive()
    }
}

fn role_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 512
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if !valid {
        return Err(ApiError::bad_request(format!("invalid role name {:?}", raw.chars().take(40).collect::<String>())));
    }
    Ok(name)
}

/// The role fields of a request body; unknown fields are ignored as Vault's framework does
/// (hvac sends some that AppRole does not have).
fn apply_role_fields(role: &mut Role, data: &Map<String, Value>, creating: bool) -> Result<(), ApiError> {
    for (key, value) in data {
        if value.is_null() {
            continue;
        }
        if role.token.apply(key, value)? {
            continue;
        }
        match key.as_str() {
            "bind_secret_id" => role.bind_secret_id = fields::boolean(Some(value), key)?.unwrap_or(true),
            "secret_id_bound_cidrs" | "bound_cidr_list" => {
                role.secret_id_bound_cidrs =
                    parse_cidrs(&fields::string_list(Some(value), key)?.unwrap_or_default(), key)?
            }
            "secret_id_num_uses" => {
                role.secret_id_num_uses = non_negative(value, key)?;
            }
            "secret_id_ttl" => role.secret_id_ttl = fields::duration_secs(Some(value), key)?.unwrap_or(0),
            "local_secret_ids" => {
                let local = fields::boolean(Some(value), key)?.unwrap_or(false);
                if !creating && local != role.local_secret_ids {
                    return Err(ApiError::bad_request("local_secret_ids can only be modified during role creation"));
                }
                role.local_secret_ids = local;
            }
            _ => {}
        }
    }
    if !role.bind_secret_id && role.secret_id_bound_cidrs.is_empty() && role.token.token_bound_cidrs.is_empty() {
        return Err(ApiError::bad_request("at least one constraint should be enabled on the role"));
    }
    role.token.validate()
}

fn non_negative(value: &Value, key: &str) -> Result<u64, ApiError> {
    if value.as_i64().is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request(format!("{key} cannot be negative")));
    }
    Ok(fields::non_negative(Some(value), key)?.unwrap_or(0))
}

fn role_json(role: &Role) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("bind_secret_id".into(), json!(role.bind_secret_id));
    data.insert("secret_id_bound_cidrs".into(), json!(role.secret_id_bound_cidrs));
    data.insert("secret_id_num_uses".into(), json!(role.secret_id_num_uses));
    data.insert("secret_id_ttl".into(), json!(role.secret_id_ttl));
    data.insert("local_secret_ids".into(), json!(role.local_secret_ids));
    role.token.write_json(&mut data);
    data
}

/// `role/:name/<field>`: the field endpoints and the fields they read and write.
fn field_of(endpoint: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match endpoint {
        "policies" => ("token_policies", &["policies", "token_policies"]),
        "secret-id-num-uses" => ("secret_id_num_uses", &["secret_id_num_uses"]),
        "secret-id-ttl" => ("secret_id_ttl", &["secret_id_ttl"]),
        "token-ttl" => ("token_ttl", &["token_ttl"]),
        "token-max-ttl" => ("token_max_ttl", &["token_max_ttl"]),
        "token-num-uses" => ("token_num_uses", &["token_num_uses"]),
        "bind-secret-id" => ("bind_secret_id", &["bind_secret_id"]),
        "secret-id-bound-cidrs" => ("secret_id_bound_cidrs", &["secret_id_bound_cidrs"]),
        "token-bound-cidrs" => ("token_bound_cidrs", &["token_bound_cidrs"]),
        "period" => ("token_period", &["period", "token_period"]),
        "local-secret-ids" => ("local_secret_ids", &["local_secret_ids"]),
        _ => return None,
    })
}

/// Metadata for a secret ID: a JSON object of strings, or (as hvac and the CLI send it) a
/// string holding one.
fn metadata_field(req: &BackendRequest<'_>) -> Result<BTreeMap<String, String>, ApiError> {
    let parsed;
    let value = match req.field("metadata") {
        None => return Ok(BTreeMap::new()),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(text)) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|err| ApiError::bad_request(format!("failed to parse metadata: {err}")))?;
            &parsed
        }
        Some(value) => value,
    };
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request("metadata must be a JSON object of strings"));
    };
    map.iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            _ => Err(ApiError::bad_request(format!("metadata value of {key:?} must be a string"))),
        })
        .collect()
}

/// Every CIDR in `inner` must lie within one of `outer` (when `outer` restricts at all).
fn within(inner: &[String], outer: &[String], what: &str) -> Result<(), ApiError> {
    if outer.is_empty() {
        return Ok(());
    }
    let nets = |list: &[String]| list.iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok()).collect::<Vec<_>>();
    let outer = nets(outer);
    if nets(inner).iter().all(|net| outer.iter().any(|o| o.contains(net))) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("failed to verify the CIDR restrictions set on the secret ID: {what}")))
    }
}

fn secret_id_json(entry: &SecretId) -> Map<String, Value> {
    let time = |t: i64| if t == 0 { json!("0001-01-01T00:00:00Z") } else { json!(rfc3339(t)) };
    let mut data = Map::new();
    data.insert("secret_id_accessor".into(), json!(entry.accessor));
    data.insert("secret_id_num_uses".into(), json!(entry.num_uses));
    data.insert("secret_id_ttl".into(), json!(entry.ttl));
    data.insert("creation_time".into(), time(entry.creation_time));
    data.insert("expiration_time".into(), time(entry.expiration_time));
    data.insert("last_updated_time".into(), time(entry.last_updated_time));
    data.insert("metadata".into(), json!(entry.metadata));
    data.insert("cidr_list".into(), json!(entry.cidr_list));
    data.insert("token_bound_cidrs".into(), json!(entry.token_bound_cidrs));
    data
}

impl AppRole {
    async fn hmac(&self, storage: &StorageView, value: &str) -> Result<String, ApiError> {
        let salt = self
            .salt
            .get_or_try_init(|| async {
                if let Some(salt) = storage.get("salt").await? {
                    return Ok::<_, ApiError>(Zeroizing::new(salt));
                }
                let salt = arcanum_crypto::token::random_bytes(32);
                storage.put("salt", &salt).await?;
                Ok(Zeroizing::new(salt))
            })
            .await?;
        Ok(hex::encode(arcanum_crypto::hmac_sha256(salt, value.as_bytes())))
    }

    async fn role(&self, storage: &StorageView, name: &str) -> Result<Option<Role>, ApiError> {
        storage.get_json(&format!("role/{name}")).await
    }

    async fn existing_role(&self, storage: &StorageView, name: &str) -> Result<Role, ApiError> {
        self.role(storage, name).await?.ok_or_else(|| ApiError::new(404, format!("role {name:?} does not exist")))
    }

    /// Writes `role` and its role-ID index (replacing the old index when the ID changed).
    async fn store_role(&self, storage: &StorageView, role: &Role, old_role_id: Option<&str>) -> Result<(), ApiError> {
        let index_key = format!("role_id/{}", self.hmac(storage, &role.role_id).await?);
        if let Some(holder) = storage.get_json::<RoleIdIndex>(&index_key).await? {
            if holder.name != role.name {
                return Err(ApiError::bad_request("role_id already in use"));
            }
        }
        let mut ops = vec![
            ViewOp::Put { key: index_key, value: to_vec(&RoleIdIndex { name: role.name.clone() })? },
            ViewOp::Put { key: format!("role/{}", role.name), value: to_vec(role)? },
        ];
        if let Some(old) = old_role_id.filter(|old| *old != role.role_id) {
            ops.push(ViewOp::Delete { key: format!("role_id/{}", self.hmac(storage, old).await?) });
        }
        storage.batch(ops).await
    }

    async fn write_role(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
        let _guard = self.lock.lock().await;
        let existing = self.role(req.storage, name).await?;
        let creating = existing.is_none();
        let mut role = existing.clone().unwrap_or_else(|| Role { name: name.to_owned(), ..Role::default() });
        apply_role_fields(&mut role, req.data, creating)?;
        if let Some(role_id) = req.non_empty_string("role_id")? {
            role.role_id = role_id;
        }
        if role.role_id.is_empty() {
            role.role_id = uuid::Uuid::new_v4().to_string();
        }
        self.store_role(req.storage, &role, existing.as_ref().map(|r| r.role_id.as_str())).await?;
        Ok(Response::NoContent)
    }

    async fn delete_role(&self, storage: &StorageView, name: &str) -> Result<Response, ApiError> {
        let _guard = self.lock.lock().await;
        let Some(role) = self.role(storage, name).await? else { return Ok(Response::NoContent) };
        // Secret IDs first: a crash part-way leaves a role whose delete can be repeated.
        for hmac in storage.list(&format!("secret_id/{name}/")).await? {
            self.remove_secret_id(storage, name, &hmac).await?;
        }
        let index_key = format!("role_id/{}", self.hmac(storage, &role.role_id).await?);
        storage.batch(vec![ViewOp::Delete { key: index_key }, ViewOp::Delete { key: format!("role/{name}") }]).await?;
        Ok(Response::NoContent)
    }

    /// Deletes a secret ID and its accessor index (the caller holds the lock).
    async fn remove_secret_id(&self, storage: &StorageView, name: &str, hmac: &str) -> Result<(), ApiError> {
        let key = format!("secret_id/{name}/{hmac}");
        let mut ops = vec![ViewOp::Delete { key: key.clone() }];
        if let Some(entry) = storage.get_json::<SecretId>(&key).await? {
            ops.push(ViewOp::Delete { key: format!("accessor/{}", self.hmac(storage, &entry.accessor).await?) });
        }
        storage.batch(ops).await
    }

    async fn field_endpoint(&self, req: &BackendRequest<'_>, name: &str, endpoint: &str) -> Result<Response, ApiError> {
        let Some((field, shown)) = field_of(endpoint) else { return Err(ApiError::no_handler(req.path)) };
        match req.operation {
            Operation::Read => {
                let role = self.role(req.storage, name).await?.ok_or_else(ApiError::not_found)?;
                let all = role_json(&role);
                let data =
                    shown.iter().filter_map(|key| all.get(*key).map(|v| ((*key).to_owned(), v.clone()))).collect();
                Ok(Response::data(data))
            }
            Operation::Update | Operation::Delete if endpoint == "local-secret-ids" => {
                Err(ApiError::unsupported_operation())
            }
            Operation::Update | Operation::Delete => {
                let _guard = self.lock.lock().await;
                let mut role = self.existing_role(req.storage, name).await?;
                let value = if req.operation == Operation::Delete {
                    let defaults = role_json(&Role::default());
                    defaults.get(field).cloned().unwrap_or(Value::Null)
                } else {
                    shown
                        .iter()
                        .find_map(|key| req.field(key))
                        .cloned()
                        .ok_or_else(|| ApiError::bad_request(format!("missing {field}")))?
                };
                let mut change = Map::new();
                change.insert(field.to_owned(), value);
                apply_role_fields(&mut role, &change, false)?;
                self.store_role(req.storage, &role, Some(&role.role_id.clone())).await?;
                Ok(Response::NoContent)
            }
            _ => Err(ApiError::unsupported_operation()),
        }
    }

    async fn create_secret_id(&self, req: &BackendRequest<'_>, name: &str, custom: bool) -> Result<Response, ApiError> {
        let role = self.existing_role(req.storage, name).await?;
        let secret_id = if custom {
            req.non_empty_string("secret_id")?.ok_or_else(|| ApiError::bad_request("missing secret_id"))?
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        let cidr_list =
            parse_cidrs(&fields::string_list(req.field("cidr_list"), "cidr_list")?.unwrap_or_default(), "cidr_list")?;
        within(&cidr_list, &role.secret_id_bound_cidrs, "cidr_list is not within the role's secret_id_bound_cidrs")?;
        let token_bound_cidrs = parse_cidrs(
            &fields::string_list(req.field("token_bound_cidrs"), "token_bound_cidrs")?.unwrap_or_default(),
            "token_bound_cidrs",
        )?;
        within(&token_bound_cidrs, &role.token.token_bound_cidrs, "token_bound_cidrs is not within the role's")?;
        let num_uses = match req.field("num_uses") {
            None => role.secret_id_num_uses,
            Some(value) => non_negative(value, "num_uses")?,
        };
        if role.secret_id_num_uses > 0 && (num_uses == 0 || num_uses > role.secret_id_num_uses) {
            return Err(ApiError::bad_request("num_uses cannot be higher than the role's secret_id_num_uses"));
        }
        let ttl = match fields::duration_secs(req.field("ttl"), "ttl")? {
            None | Some(0) => role.secret_id_ttl,
            Some(ttl) => ttl,
        };
        if role.secret_id_ttl > 0 && (ttl == 0 || ttl > role.secret_id_ttl) {
            return Err(ApiError::bad_request("ttl cannot be longer than the role's secret_id_ttl"));
        }
        let now = unix_now();
        let entry = SecretId {
            accessor: uuid::Uuid::new_v4().to_string(),
            num_uses,
            ttl,
            creation_time: now,
            expiration_time: if ttl == 0 { 0 } else { now + ttl as i64 },
            last_updated_time: now,
            metadata: metadata_field(req)?,
            cidr_list,
            token_bound_cidrs,
        };
        let hmac = self.hmac(req.storage, &secret_id).await?;
        let key = format!("secret_id/{name}/{hmac}");
        let _guard = self.lock.lock().await;
        if req.storage.get(&key).await?.is_some() {
            return Err(ApiError::bad_request("SecretID is already registered"));
        }
        let accessor_key = format!("accessor/{}", self.hmac(req.storage, &entry.accessor).await?);
        let index = AccessorIndex { role: name.to_owned(), secret_id_hmac: hmac };
        req.storage
            .batch(vec![
                ViewOp::Put { key, value: to_vec(&entry)? },
                ViewOp::Put { key: accessor_key, value: to_vec(&index)? },
            ])
            .await?;
        let mut data = Map::new();
        data.insert("secret_id".into(), json!(secret_id));
        data.insert("secret_id_accessor".into(), json!(entry.accessor));
        data.insert("secret_id_ttl".into(), json!(entry.ttl));
        data.insert("secret_id_num_uses".into(), json!(entry.num_uses));
        Ok(Response::data(data))
    }

    async fn secret_id_action(&self, req: &BackendRequest<'_>, name: &str, action: &str) -> Result<Response, ApiError> {
        self.existing_role(req.storage, name).await?;
        let secret_id = req.non_empty_string("secret_id")?.ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
        let hmac = self.hmac(req.storage, &secret_id).await?;
        let key = format!("secret_id/{name}/{hmac}");
        match action {
            "lookup" => match req.storage.get_json::<SecretId>(&key).await? {
                Some(entry) if !entry.expired(unix_now()) => Ok(Response::data(secret_id_json(&entry))),
                _ => Ok(Response::NoContent),
            },
            _ => {
                let _guard = self.lock.lock().await;
                self.remove_secret_id(req.storage, name, &hmac).await?;
                Ok(Response::NoContent)
            }
        }
    }

    async fn accessor_action(&self, req: &BackendRequest<'_>, name: &str, action: &str) -> Result<Response, ApiError> {
        self.existing_role(req.storage, name).await?;
        let accessor = req
            .non_empty_string("secret_id_accessor")?
            .ok_or_else(|| ApiError::bad_request("missing secret_id_accessor"))?;
        let not_found =
            || ApiError::new(404, format!("failed to find accessor entry for secret_id_accessor: {accessor:?}"));
        let index_key = format!("accessor/{}", self.hmac(req.storage, &accessor).await?);
        let index: AccessorIndex = req.storage.get_json(&index_key).await?.ok_or_else(not_found)?;
        if index.role != name {
            return Err(not_found());
        }
        match action {
            "lookup" => {
                let entry: SecretId = req
                    .storage
                    .get_json(&format!("secret_id/{name}/{}", index.secret_id_hmac))
                    .await?
                    .ok_or_else(not_found)?;
                Ok(Response::data(secret_id_json(&entry)))
            }
            _ => {
                let _guard = self.lock.lock().await;
                self.remove_secret_id(req.storage, name, &index.secret_id_hmac).await?;
                Ok(Response::NoContent)
            }
        }
    }

    async fn list_accessors(&self, storage: &StorageView, name: &str) -> Result<Response, ApiError> {
        self.existing_role(storage, name).await?;
        let mut accessors = Vec::new();
        for hmac in storage.list(&format!("secret_id/{name}/")).await? {
            if let Some(entry) = storage.get_json::<SecretId>(&format!("secret_id/{name}/{hmac}")).await? {
                accessors.push(entry.accessor);
            }
        }
        accessors.sort();
        Response::list(accessors)
    }

    async fn login(&self, req: &BackendRequest<'_>) -> Result<Response, ApiError> {
        // Trimmed as Vault does: credential files written with `echo` end in a newline.
        let trimmed = |name: &str| {
            Ok::<_, ApiError>(req.non_empty_string(name)?.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
        };
        let role_id = trimmed("role_id")?.ok_or_else(|| ApiError::bad_request("missing role_id"))?;
        let index_key = format!("role_id/{}", self.hmac(req.storage, &role_id).await?);
        let index: RoleIdIndex =
            req.storage.get_json(&index_key).await?.ok_or_else(|| ApiError::bad_request(INVALID))?;
        let role = self.role(req.storage, &index.name).await?.ok_or_else(|| ApiError::bad_request(INVALID))?;
        if !arcanum_crypto::constant_time_eq(role.role_id.as_bytes(), role_id.as_bytes()) {
            return Err(ApiError::bad_request(INVALID));
        }
        let client = req.remote_addr;
        let refused_by = |on: &str| {
            let address = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            ApiError::bad_request(format!("source address {address:?} unauthorized by CIDR restrictions on the {on}"))
        };
        // Every refusal comes before a use is counted.
        if !cidrs_allow(&role.secret_id_bound_cidrs, client) {
            return Err(refused_by("role"));
        }
        let mut metadata = BTreeMap::new();
        let mut token_bound_cidrs = Vec::new();
        if role.bind_secret_id {
            let secret_id = trimmed("secret_id")?.ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
            let hmac = self.hmac(req.storage, &secret_id).await?;
            let key = format!("secret_id/{}/{hmac}", role.name);
            let _guard = self.lock.lock().await;
            let mut entry: SecretId =
                req.storage.get_json(&key).await?.ok_or_else(|| ApiError::bad_request(INVALID))?;
            let now = unix_now();
            if entry.expired(now) {
                self.remove_secret_id(req.storage, &role.name, &hmac).await?;
                return Err(ApiError::bad_request(INVALID));
            }
            if !cidrs_allow(&entry.cidr_list, client) {
                return Err(refused_by("secret ID"));
            }
            match entry.num_uses {
                0 => {}
                1 => self.remove_secret_id(req.storage, &role.name, &hmac).await?,
                _ => {
                    entry.num_uses -= 1;
                    entry.last_updated_time = now;
                    req.storage.put_json(&key, &entry).await?;
                }
            }
            metadata = entry.metadata;
            token_bound_cidrs = entry.token_bound_cidrs;
        }
        metadata.insert("role_name".to_owned(), role.name.clone());
        let mut auth = role.token.login(metadata, role.name.clone(), &req.mount.path, "login", role_id);
        // A secret ID's own bounds (within the role's, checked at its creation) are the narrower.
        if !token_bound_cidrs.is_empty() {
            auth.bound_cidrs = token_bound_cidrs;
        }
        Ok(Response::Login(Box::new(auth)))
    }

    /// Removes expired secret IDs and accessor entries that point at nothing.
    async fn tidy(&self, storage: &StorageView) -> Result<usize, ApiError> {
        let _guard = self.lock.lock().await;
        let now = unix_now();
        let mut removed = 0;
        for role in storage.list("secret_id/").await? {
            let role = role.trim_end_matches('/');
            for hmac in storage.list(&format!("secret_id/{role}/")).await? {
                let entry: Option<SecretId> = storage.get_json(&format!("secret_id/{role}/{hmac}")).await?;
                if entry.is_some_and(|entry| entry.expired(now)) {
                    self.remove_secret_id(storage, role, &hmac).await?;
                    removed += 1;
                }
            }
        }
        for accessor in storage.list("accessor/").await? {
            let key = format!("accessor/{accessor}");
            if let Some(index) = storage.get_json::<AccessorIndex>(&key).await? {
                if storage.get(&format!("secret_id/{}/{}", index.role, index.secret_id_hmac)).await?.is_none() {
                    storage.delete(&key).await?;
                }
            }
        }
        self.last_tidy.store(now, Ordering::Relaxed);
        Ok(removed)
    }
}

fn to_vec(value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|_| ApiError::internal())
}

#[async_trait::async_trait]
impl LogicalBackend for AppRole {
    async fn handle(&self, req: BackendRequest<'_>) -> Result<Response, ApiError> {
        use Operation::*;
        let path = req.path.trim_end_matches('/');
        if path == "login" {
            return match req.operation {
                Update => self.login(&req).await,
                _ => Err(ApiError::unsupported_operation()),
            };
        }
        if path == "tidy/secret-id" {
            if req.operation != Update {
                return Err(ApiError::unsupported_operation());
            }
            let removed = self.tidy(req.storage).await?;
            tracing::info!(mount = %req.mount.path, removed, "approle secret-id tidy finished");
            return Ok(Response::Logical(Box::new(LogicalResponse {
                status: 202,
                warnings: vec!["Tidy operation successfully started. Any information from the operation will be printed to Vault's server logs.".into()],
                ..Default::default()
            })));
        }
        if path == "role" {
            return match req.operation {
                List => Response::list(req.storage.list("role/").await?),
                _ => Err(ApiError::unsupported_operation()),
            };
        }
        let Some(rest) = path.strip_prefix("role/") else { return Err(ApiError::no_handler(req.path)) };
        let (raw_name, action) = rest.split_once('/').map_or((rest, None), |(name, action)| (name, Some(action)));
        let name = role_name(raw_name)?;
        match (action, req.operation) {
            (None, Read) => {
                let role = self.role(req.storage, &name).await?.ok_or_else(ApiError::not_found)?;
                Ok(Response::data(role_json(&role)))
            }
            (None, Update) => self.write_role(&req, &name).await,
            (None, Delete) => self.delete_role(req.storage, &name).await,
            (Some("role-id"), Read) => {
                let role = self.role(req.storage, &name).await?.ok_or_else(ApiError::not_found)?;
                let mut data = Map::new();
                data.insert("role_id".into(), json!(role.role_id));
                Ok(Response::data(data))
            }
            (Some("role-id"), Update) => {
                let role_id =
                    req.non_empty_string("role_id")?.ok_or_else(|| ApiError::bad_request("missing role_id"))?;
                let _guard = self.lock.lock().await;
                let mut role = self.existing_role(req.storage, &name).await?;
                let old = std::mem::replace(&mut role.role_id, role_id);
                self.store_role(req.storage, &role, Some(&old)).await?;
                Ok(Response::NoContent)
            }
            (Some("secret-id"), Update) => self.create_secret_id(&req, &name, false).await,
            (Some("secret-id"), List) => self.list_accessors(req.storage, &name).await,
            (Some("custom-secret-id"), Update) => self.create_secret_id(&req, &name, true).await,
            (Some(action @ ("secret-id/lookup" | "secret-id/destroy")), Update) => {
                self.secret_id_action(&req, &name, action.trim_start_matches("secret-id/")).await
            }
            (Some("secret-id/destroy"), Delete) => self.secret_id_action(&req, &name, "destroy").await,
            (Some(action @ ("secret-id-accessor/lookup" | "secret-id-accessor/destroy")), Update) => {
                self.accessor_action(&req, &name, action.trim_start_matches("secret-id-accessor/")).await
            }
            (Some("secret-id-accessor/destroy"), Delete) => self.accessor_action(&req, &name, "destroy").await,
            (Some(endpoint), _) if field_of(endpoint).is_some() => self.field_endpoint(&req, &name, endpoint).await,
            (None | Some("role-id" | "secret-id" | "custom-secret-id"), _) => Err(ApiError::unsupported_operation()),
            _ => Err(ApiError::no_handler(req.path)),
        }
    }

    async fn exists(&self, req: BackendRequest<'_>) -> Result<Option<bool>, ApiError> {
        let path = req.path.trim_end_matches('/');
        match path.strip_prefix("role/") {
            Some(name) if !name.contains('/') => Ok(Some(self.role(req.storage, &role_name(name)?).await?.is_some())),
            _ => Ok(None),
        }
    }

    fn is_unauthenticated(&self, path: &str) -> bool {
        path.trim_end_matches('/') == "login"
    }

    /// The role ID, trimmed as the login trims it.
    fn login_alias(&self, path: &str, data: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        if path.trim_end_matches('/') != "login" {
            return None;
        }
        let role_id = data.get("role_id")?.as_str()?.trim();
        (!role_id.is_empty()).then(|| role_id.to_owned())
    }

    fn is_invalid_credentials(&self, error: &ApiError) -> bool {
        error.errors.first().is_some_and(|message| message == INVALID)
    }

    async fn periodic(&self, storage: &StorageView, mount: &MountEntry) {
        if unix_now() - self.last_tidy.load(Ordering::Relaxed) < TIDY_INTERVAL_SECS {
            return;
        }
        match self.tidy(storage).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(mount = %mount.path, removed, "expired approle secret IDs removed"),
            Err(err) => tracing::warn!(mount = %mount.path, error = %err, "approle secret-id tidy failed"),
        }
    }
}
