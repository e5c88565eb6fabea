//! The seal endpoints of `sys/`: init, seal status, unseal, seal, health, leader, rekey,
//! rotate, key status and raw storage access.
//!
//! Shapes and messages follow Vault's; the raw endpoints (init, seal-status, unseal, health,
//! leader, rekey) answer with bare JSON objects, the others with the envelope.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::clock::rfc3339;
use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_core::ha::Role;
use arcanum_core::shares::{self, PgpRecipient, ShareDelivery};
use arcanum_core::{Core, RekeyTarget, SealConfig, SealStatus};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Answers the `sys/` paths that work without a token and while sealed. `None` means the
/// path is not one of them.
pub async fn handle_unauthenticated(core: &Core, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let result = match (req.path.as_str(), req.operation) {
        ("sys/init", Read) => Ok(Response::raw(json!({ "initialized": core.is_initialized().await }))),
        ("sys/init", Update) => init(core, req).await,
        ("sys/seal-status", Read) => Ok(Response::raw(seal_status_json(core, &core.seal_status().await))),
        ("sys/unseal", Update) => unseal(core, req).await,
        ("sys/health", Read | Header) => health(core, req).await,
        ("sys/leader", Read) => leader(core),
        // As Vault's: a standby has no token store to check the caller against.
        ("sys/seal", _) if core.is_standby() => {
            Err(ApiError::new(500, "cannot seal when in standby mode; please restart instead"))
        }
        ("sys/rekey/init", Read) => Ok(Response::raw(rekey_status_json(core, RekeyTarget::Barrier).await)),
        ("sys/rekey/init", Update) => rekey_init(core, req, RekeyTarget::Barrier).await,
        ("sys/rekey/init", Delete) => core.rekey_cancel(RekeyTarget::Barrier).await.map(|()| Response::NoContent),
        ("sys/rekey/update", Update) => rekey_update(core, req, RekeyTarget::Barrier).await,
        ("sys/rekey-recovery-key/init", Read) => {
            Ok(Response::raw(rekey_status_json(core, RekeyTarget::Recovery).await))
        }
        ("sys/rekey-recovery-key/init", Update) => rekey_init(core, req, RekeyTarget::Recovery).await,
        ("sys/rekey-recovery-key/init", Delete) => {
            core.rekey_cancel(RekeyTarget::Recovery).await.map(|()| Response::NoContent)
        }
        ("sys/rekey-recovery-key/update", Update) => rekey_update(core, req, RekeyTarget::Recovery).await,
        ("sys/generate-root/attempt", Read) => Ok(Response::raw(generate_root_json(core, None, None).await)),
        ("sys/generate-root/attempt", Update) => generate_root_init(core, req).await,
        ("sys/generate-root/attempt", Delete) => core.generate_root_cancel().await.map(|()| Response::NoContent),
        ("sys/generate-root/update", Update) => generate_root_update(core, req).await,
        (
            "sys/init"
            | "sys/seal-status"
            | "sys/unseal"
            | "sys/health"
            | "sys/leader"
            | "sys/rekey/init"
            | "sys/rekey/update"
            | "sys/rekey-recovery-key/init"
            | "sys/rekey-recovery-key/update"
            | "sys/generate-root/attempt"
            | "sys/generate-root/update",
            _,
        ) => Err(ApiError::unsupported_operation()),
        _ => return None,
    };
    Some(result)
}

/// The seal-related `sys/` paths that need a token; the router has already checked the ACL
/// (including `sudo` for seal, rotate and raw). `None`: not one of them.
pub async fn handle_authenticated(core: &Core, req: &Request) -> Option<Result<Response, ApiError>> {
    use Operation::*;
    let result = match (req.path.as_str(), req.operation) {
        ("sys/seal", Update) => core.seal().await.map(|()| Response::NoContent),
        ("sys/rotate" | "sys/rotate/keyring", Update) => rotate(core).await,
        ("sys/key-status", Read) => key_status(core),
        ("sys/step-down", Update) => {
            // Vault answers 204 and hands over in the background; without HA it is a no-op.
            if let Some(ha) = core.ha() {
                ha.request_step_down();
            }
            Ok(Response::NoContent)
        }
        ("sys/ha-status", Read) => ha_status(core).await,
        ("sys/rekey/backup", _) => rekey_backup(core, req, RekeyTarget::Barrier).await,
        ("sys/rekey/recovery-key-backup", _) => rekey_backup(core, req, RekeyTarget::Recovery).await,
        ("sys/decode-token", Update) => decode_token(req),
        ("sys/decode-token", _) => Err(ApiError::unsupported_operation()),
        ("sys/step-down" | "sys/ha-status", _) => Err(ApiError::unsupported_operation()),
        ("sys/seal" | "sys/rotate" | "sys/rotate/keyring" | "sys/key-status", _) => {
            Err(ApiError::unsupported_operation())
        }
        (path, _) if path == "sys/raw" || path.starts_with("sys/raw/") => {
            if !core.config.raw_storage_endpoint {
                return None;
            }
            raw(core, req).await
        }
        _ => return None,
    };
    Some(result)
}

/// Reads an integer field; JSON numbers and numeric strings are accepted.
pub(crate) fn int_field(req: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    match req.field(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer")))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} must be an integer, got {:?}", truncate(s)))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an integer"))),
    }
}

pub(crate) fn bool_field(req: &Request, name: &str) -> Result<bool, ApiError> {
    Ok(arcanum_contract::fields::boolean(req.field(name), name)?.unwrap_or(false))
}

/// Vault decodes these bodies into Go structs, so field names match case-insensitively.
fn case_insensitive(req: &Request) -> Request {
    let mut data = Map::new();
    for (key, value) in &req.data {
        data.insert(key.to_ascii_lowercase(), value.clone());
    }
    Request { data, ..req.clone() }
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

fn seal_config_from(req: &Request) -> Result<SealConfig, ApiError> {
    let shares = int_field(req, "secret_shares")?
        .ok_or_else(|| ApiError::bad_request("secret_shares is required (1 to 255)"))?;
    let threshold = int_field(req, "secret_threshold")?
        .ok_or_else(|| ApiError::bad_request("secret_threshold is required (1 to secret_shares)"))?;
    SealConfig::new(shares, threshold)
}

/// A list of base64 OpenPGP public keys (`pgp_keys`, `recovery_pgp_keys`): a JSON array or a
/// comma-separated string; null or empty means none.
fn pgp_keys_field(req: &Request, name: &str) -> Result<Vec<PgpRecipient>, ApiError> {
    let keys = arcanum_contract::fields::string_list(req.field(name), name)?.unwrap_or_default();
    let keys: Vec<String> = keys.into_iter().filter(|key| !key.trim().is_empty()).collect();
    shares::parse_keys(name, &keys)
}

/// One base64 OpenPGP public key (`root_token_pgp_key`, `pgp_key`); null or "" means none.
fn pgp_key_field(req: &Request, name: &str) -> Result<Option<PgpRecipient>, ApiError> {
    match req.field(name) {
        None => Ok(None),
        Some(Value::String(key)) if key.trim().is_empty() => Ok(None),
        Some(Value::String(key)) => PgpRecipient::from_base64(key)
            .map(Some)
            .map_err(|reason| ApiError::bad_request(format!("error parsing PGP key {name}: {reason}"))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a base64 string"))),
    }
}

async fn init(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let req = case_insensitive(req);
    let hex_list = |shares: &[Zeroizing<Vec<u8>>]| shares.iter().map(|s| hex::encode(s.as_slice())).collect::<Vec<_>>();
    let b64_list = |shares: &[Zeroizing<Vec<u8>>]| {
        shares.iter().map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_slice())).collect::<Vec<_>>()
    };
    let root_token_key = pgp_key_field(&req, "root_token_pgp_key")?;
    if core.has_auto_seal() {
        if !pgp_keys_field(&req, "pgp_keys")?.is_empty() {
            return Err(ApiError::bad_request(
                "pgp_keys is for unseal keys, which a transit seal has none of; use recovery_pgp_keys",
            ));
        }
        let delivery = ShareDelivery { share_keys: pgp_keys_field(&req, "recovery_pgp_keys")?, root_token_key };
        let output = core.initialize_auto(recovery_config_from(&req)?, &delivery).await?;
        return Ok(Response::raw(json!({
            "keys": [],
            "keys_base64": [],
            "recovery_keys": hex_list(&output.recovery_shares),
            "recovery_keys_base64": b64_list(&output.recovery_shares),
            "root_token": output.root_token.as_str(),
        })));
    }
    for auto_only in ["recovery_shares", "recovery_threshold"] {
        if int_field(&req, auto_only)?.is_some_and(|n| n != 0) {
            return Err(ApiError::bad_request(
                "parameters recovery_shares,recovery_threshold not applicable to seal type shamir",
            ));
        }
    }
    if !pgp_keys_field(&req, "recovery_pgp_keys")?.is_empty() {
        return Err(ApiError::bad_request("recovery_pgp_keys not applicable to seal type shamir"));
    }
    let config = seal_config_from(&req)?;
    let delivery = ShareDelivery { share_keys: pgp_keys_field(&req, "pgp_keys")?, root_token_key };
    let output = core.initialize_delivering(config, None, &delivery).await?;
    Ok(Response::raw(json!({
        "keys": hex_list(&output.shares),
        "keys_base64": b64_list(&output.shares),
        "root_token": output.root_token.as_str(),
    })))
}

/// `recovery_shares`/`recovery_threshold` at init with an auto seal; 0 shares (or none given)
/// keeps no recovery key, as in Vault. Unseal-key parameters are refused, as Vault does.
fn recovery_config_from(req: &Request) -> Result<Option<SealConfig>, ApiError> {
    if int_field(req, "secret_shares")?.is_some_and(|n| n != 0)
        || int_field(req, "secret_threshold")?.is_some_and(|n| n != 0)
    {
        return Err(ApiError::bad_request(
            "parameters secret_shares,secret_threshold not applicable to seal type transit",
        ));
    }
    let shares = int_field(req, "recovery_shares")?.unwrap_or(0);
    let threshold = int_field(req, "recovery_threshold")?.unwrap_or(0);
    if shares == 0 && threshold == 0 {
        return Ok(None);
    }
    SealConfig::new(shares, threshold).map(Some).map_err(|err| {
        ApiError::bad_request(err.errors.join("; ").replace("seal configuration", "recovery configuration"))
    })
}

pub fn seal_status_json(core: &Core, status: &SealStatus) -> Value {
    let mut body = json!({
        "type": status.kind,
        "initialized": status.initialized,
        "sealed": status.sealed,
        "t": status.threshold,
        "n": status.shares,
        "progress": status.progress,
        "nonce": status.nonce,
        "version": VERSION,
        "build_date": "",
        "migration": status.migration,
        "recovery_seal": status.recovery_seal,
        "storage_type": core.storage_type(),
    });
    if let Value::Object(map) = &mut body {
        if status.recovery_seal {
            map.insert("recovery_seal_type".into(), json!("shamir"));
        }
        // Not in Vault's shape: why this node, with an auto seal, is still sealed.
        if let Some(error) = &status.seal_error {
            map.insert("seal_error".into(), json!(error));
        }
    }
    if let (Some(cluster), Value::Object(map)) = (&status.cluster, &mut body) {
        map.insert("cluster_name".into(), json!(cluster.name));
        map.insert("cluster_id".into(), json!(cluster.id));
    }
    body
}

/// Decodes a key share given as hex or base64, as Vault does (hex first).
pub fn decode_share(key: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let key = key.trim();
    if let Ok(bytes) = hex::decode(key) {
        return Ok(Zeroizing::new(bytes));
    }
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(Zeroizing::new)
        .map_err(|_| ApiError::bad_request("'key' must be a valid hex or base64 string"))
}

async fn unseal(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let req = case_insensitive(req);
    if bool_field(&req, "reset")? {
        core.reset_unseal().await?;
    } else {
        let key = match req.field("key") {
            Some(Value::String(key)) if !key.is_empty() => key,
            Some(Value::String(_)) | None => {
                return Err(ApiError::bad_request(
                    "'key' must be specified in request body as JSON, or 'reset' set to true",
                ))
            }
            Some(_) => return Err(ApiError::bad_request("'key' must be a string")),
        };
        core.submit_unseal_share_migrating(decode_share(key)?, bool_field(&req, "migrate")?).await?;
    }
    Ok(Response::raw(seal_status_json(core, &core.seal_status().await)))
}

async fn health(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let code = |name: &str, default: i64| -> Result<u16, ApiError> {
        let code = int_field(req, name)
            .map_err(|_| ApiError::bad_request(format!("bad code for {name}: must be an integer")))?
            .unwrap_or(default);
        u16::try_from(code)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| ApiError::bad_request(format!("bad code for {name}: {code} is not an HTTP status")))
    };
    // Every code is validated, also those of roles Arcanum has no use for: bad input is still bad.
    let active = code("activecode", 200)?;
    let standby_code = code("standbycode", 429)?;
    for (name, default) in
        [("drsecondarycode", 472), ("performancestandbycode", 473), ("haunhealthycode", 474), ("removedcode", 530)]
    {
        code(name, default)?;
    }
    let sealed_code = code("sealedcode", 503)?;
    let uninit_code = code("uninitcode", 501)?;
    let standby_ok = bool_field(req, "standbyok")?;
    bool_field(req, "perfstandbyok")?;

    let status = core.seal_status().await;
    let standby = core.is_standby();
    let http_status = if !status.initialized {
        uninit_code
    } else if status.sealed {
        sealed_code
    } else if standby && !standby_ok {
        standby_code
    } else {
        active
    };
    if req.operation == Operation::Header {
        return Ok(Response::Status(http_status));
    }
    let mut body = json!({
        "initialized": status.initialized,
        "sealed": status.sealed,
        "standby": standby,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": VERSION,
    });
    if let (Some(cluster), Value::Object(map)) = (&status.cluster, &mut body) {
        map.insert("cluster_name".into(), json!(cluster.name));
        map.insert("cluster_id".into(), json!(cluster.id));
    }
    Ok(Response::Raw { status: http_status, body })
}

/// `GET sys/ha-status`: every node whose heartbeat is current, sorted by API address; the
/// active one has `active_node: true` and `last_echo: null`, as in Vault.
async fn ha_status(core: &Core) -> Result<Response, ApiError> {
    let Some(ha) = core.ha() else {
        return Err(ApiError::bad_request("high availability is not enabled on this node"));
    };
    let nodes: Vec<Value> = ha
        .nodes()
        .await?
        .into_iter()
        .map(|node| {
            let active = node.active_since.is_some();
            json!({
                "hostname": node.hostname,
                "api_address": node.api_addr,
                "cluster_address": node.cluster_addr,
                "active_node": active,
                "last_echo": if active { Value::Null } else { json!(rfc3339(node.last_echo)) },
                "version": node.version,
            })
        })
        .collect();
    let mut data = Map::new();
    data.insert("nodes".into(), json!(nodes));
    Ok(Response::injected(data))
}

/// `GET sys/leader`, Vault's shape. A sealed HA node answers 500 "Vault is sealed", as Vault
/// does (its CLI matches that text).
fn leader(core: &Core) -> Result<Response, ApiError> {
    let never = "0001-01-01T00:00:00Z";
    let Some(ha) = core.ha() else {
        return Ok(Response::raw(json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": never,
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        })));
    };
    let (is_self, active_time, address, cluster_address) = match ha.role() {
        Role::Sealed => return Err(ApiError::new(500, "Vault is sealed")),
        Role::Active { since } => (true, rfc3339(since), ha.config.api_addr.clone(), ha.config.cluster_addr.clone()),
        Role::Standby { leader: Some(leader) } => (false, never.to_owned(), leader.api_addr, leader.cluster_addr),
        Role::Standby { leader: None } => (false, never.to_owned(), String::new(), String::new()),
    };
    Ok(Response::raw(json!({
        "ha_enabled": true,
        "is_self": is_self,
        "active_time": active_time,
        "leader_address": address,
        "leader_cluster_address": cluster_address,
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
        "last_wal": 0,
    })))
}

async fn rekey_status_json(core: &Core, target: RekeyTarget) -> Value {
    let status = core.rekey_status(target).await;
    json!({
        "started": status.started,
        "nonce": status.nonce,
        "t": status.new_threshold,
        "n": status.new_shares,
        "progress": status.progress,
        "required": status.required,
        "pgp_fingerprints": fingerprints_json(&status.pgp_fingerprints),
        "backup": status.backup,
        "verification_required": false,
    })
}

fn fingerprints_json(fingerprints: &[String]) -> Value {
    if fingerprints.is_empty() {
        Value::Null
    } else {
        json!(fingerprints)
    }
}

async fn rekey_init(core: &Core, req: &Request, target: RekeyTarget) -> Result<Response, ApiError> {
    let req = case_insensitive(req);
    if bool_field(&req, "require_verification")? {
        return Err(ApiError::bad_request("require_verification is not supported by Arcanum yet"));
    }
    let config = seal_config_from(&req)?;
    let pgp_keys = pgp_keys_field(&req, "pgp_keys")?;
    core.rekey_init(target, config, pgp_keys, bool_field(&req, "backup")?).await?;
    Ok(Response::raw(rekey_status_json(core, target).await))
}

/// The `key` share and `nonce` of a rekey or generate-root update.
fn share_and_nonce(req: &Request) -> Result<(Zeroizing<Vec<u8>>, String), ApiError> {
    let req = case_insensitive(req);
    let key = match req.field("key") {
        Some(Value::String(key)) if !key.is_empty() => key,
        _ => return Err(ApiError::bad_request("'key' must be specified in request body as JSON")),
    };
    let nonce = match req.field("nonce") {
        Some(Value::String(nonce)) => nonce.as_str(),
        _ => return Err(ApiError::bad_request("'nonce' must be specified in request body as JSON")),
    };
    Ok((decode_share(key)?, nonce.to_owned()))
}

async fn rekey_update(core: &Core, req: &Request, target: RekeyTarget) -> Result<Response, ApiError> {
    let (share, nonce) = share_and_nonce(req)?;
    let nonce = nonce.as_str();
    match core.rekey_update(target, share, nonce).await? {
        None => Ok(Response::raw(rekey_status_json(core, target).await)),
        Some(output) => Ok(Response::raw(json!({
            "complete": true,
            "nonce": nonce,
            "keys": output.shares.iter().map(|s| hex::encode(s.as_slice())).collect::<Vec<_>>(),
            "keys_base64": output.shares.iter().map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_slice())).collect::<Vec<_>>(),
            "pgp_fingerprints": fingerprints_json(&output.pgp_fingerprints),
            "backup": output.backup,
            "verification_required": false,
        }))),
    }
}

/// `sys/rekey/backup` and `sys/rekey/recovery-key-backup`: the encrypted shares a rekey with
/// `backup = true` kept, by key fingerprint (lists, since one key may hold several shares).
async fn rekey_backup(core: &Core, req: &Request, target: RekeyTarget) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let backup =
                core.rekey_backup(target).await?.ok_or_else(|| ApiError::bad_request("no backed-up keys found"))?;
            let base64_keys: Map<String, Value> = backup
                .keys
                .iter()
                .map(|(fingerprint, shares)| {
                    let encoded = shares
                        .iter()
                        .filter_map(|share| hex::decode(share).ok())
                        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                        .collect::<Vec<_>>();
                    (fingerprint.clone(), json!(encoded))
                })
                .collect();
            let mut data = Map::new();
            data.insert("nonce".into(), json!(backup.nonce));
            data.insert("keys".into(), json!(backup.keys));
            data.insert("keys_base64".into(), Value::Object(base64_keys));
            Ok(Response::injected(data))
        }
        Operation::Delete => core.delete_rekey_backup(target).await.map(|()| Response::NoContent),
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/generate-root/attempt` and `/update` answers: Vault's fields, with the OTP only in the
/// answer that generated it and the encoded token only in the one that completed.
async fn generate_root_json(core: &Core, otp: Option<&str>, encoded: Option<&str>) -> Value {
    let status = core.generate_root_status().await;
    json!({
        "nonce": status.nonce,
        "started": status.started,
        "progress": status.progress,
        "required": status.required,
        "complete": encoded.is_some(),
        "encoded_token": encoded.unwrap_or_default(),
        "encoded_root_token": encoded.unwrap_or_default(),
        "pgp_fingerprint": status.pgp_fingerprint,
        "otp": otp.unwrap_or_default(),
        "otp_length": status.otp_length,
    })
}

async fn generate_root_init(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let req = case_insensitive(req);
    let pgp_key = pgp_key_field(&req, "pgp_key")?;
    let otp = match req.field("otp") {
        None => None,
        Some(Value::String(otp)) if otp.is_empty() => None,
        Some(Value::String(otp)) => Some(Zeroizing::new(otp.clone())),
        Some(_) => return Err(ApiError::bad_request("'otp' must be a string")),
    };
    let generated = core.generate_root_init(otp, pgp_key).await?;
    Ok(Response::raw(generate_root_json(core, generated.as_deref().map(String::as_str), None).await))
}

async fn generate_root_update(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let (share, nonce) = share_and_nonce(req)?;
    let nonce = nonce.as_str();
    let encoded = core.generate_root_update(share, nonce).await?;
    let mut body = generate_root_json(core, None, encoded.as_deref()).await;
    if encoded.is_some() {
        // The attempt is over; its nonce is the one the caller used.
        body["nonce"] = json!(nonce);
    }
    Ok(Response::raw(body))
}

/// `sys/decode-token` (Vault 1.10+): what `operator generate-root -decode` does, on the server.
fn decode_token(req: &Request) -> Result<Response, ApiError> {
    let text = |name: &str| match req.field(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value.as_str()),
        Some(Value::String(_)) | None => Err(ApiError::bad_request(format!("missing {name}"))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    };
    let (encoded, otp) = (text("encoded_token")?, text("otp")?);
    let token = arcanum_core::decode_root_token(encoded, otp).map_err(ApiError::bad_request)?;
    let mut data = Map::new();
    data.insert("token".into(), json!(token.as_str()));
    Ok(Response::data(data))
}

async fn rotate(core: &Core) -> Result<Response, ApiError> {
    let unsealed = core.unsealed()?;
    let status = unsealed.barrier.rotate().await.map_err(|err| {
        tracing::error!(error = %err, "barrier rotation failed");
        ApiError::internal()
    })?;
    tracing::info!(term = status.term, "barrier key rotated on request");
    Ok(Response::NoContent)
}

fn key_status(core: &Core) -> Result<Response, ApiError> {
    let status = core.unsealed()?.barrier.key_status();
    let install_time = time::OffsetDateTime::from_unix_timestamp(status.install_time_unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let mut data = Map::new();
    data.insert("term".into(), json!(status.term));
    data.insert("install_time".into(), json!(install_time));
    data.insert("encryptions".into(), json!(status.encryptions));
    Ok(Response::injected(data))
}

/// `sys/raw/<path>`: root-only access to barrier records (decrypted), for recovery and tests.
/// The seal's own records under `core/` are out of reach in both directions.
async fn raw(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let path = req.path.strip_prefix("sys/raw").unwrap_or_default().trim_start_matches('/');
    if path == "core" || path.starts_with("core/") {
        return Err(ApiError::bad_request(format!("cannot access {path:?}: core/ is protected")));
    }
    let barrier = core.unsealed()?.barrier.clone();
    let storage_error = |err: arcanum_core::barrier::BarrierError| {
        tracing::error!(error = %err, "raw storage access failed");
        ApiError::internal()
    };
    match req.operation {
        Operation::Read => {
            let value = barrier.get(path).await.map_err(storage_error)?.ok_or_else(ApiError::not_found)?;
            let value = String::from_utf8(value)
                .map(Value::String)
                .unwrap_or_else(|err| json!(base64::engine::general_purpose::STANDARD.encode(err.as_bytes())));
            let mut data = Map::new();
            data.insert("value".into(), value);
            Ok(Response::data(data))
        }
        Operation::Update => {
            let value = match req.field("value") {
                Some(Value::String(value)) => value,
                _ => return Err(ApiError::bad_request("'value' must be given as a string")),
            };
            if path.is_empty() {
                return Err(ApiError::bad_request("a path under sys/raw/ is required"));
            }
            barrier.put(path, value.as_bytes()).await.map_err(storage_error)?;
            Ok(Response::NoContent)
        }
        Operation::Delete => {
            barrier.delete(path).await.map_err(storage_error)?;
            Ok(Response::NoContent)
        }
        Operation::List => {
            let prefix = if path.is_empty() || path.ends_with('/') { path.to_owned() } else { format!("{path}/") };
            let keys = barrier.list(&prefix).await.map_err(storage_error)?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            let mut data = Map::new();
            data.insert("keys".into(), json!(keys));
            Ok(Response::data(data))
        }
        Operation::Patch | Operation::Header => Err(ApiError::unsupported_operation()),
    }
}
