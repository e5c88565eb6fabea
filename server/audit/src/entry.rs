//! Vault's JSON audit entry, built from what the core knows about a request, with secrets
//! replaced by `hmac-sha256:<hex>` under one device's salt.
//!
//! HMAC'd unless the device has `log_raw`: the client token wherever it appears, every string
//! leaf of request and response data (except the mount's `audit_non_hmac_*_keys`), and —
//! when `hmac_accessor` is on, the default — token accessors. Paths, operations, policies,
//! metadata, numbers, booleans, errors and times are written as they are (Vault's rules).
//! Nothing here does I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use arcanum_contract::logical::{ApiError, Response};
use arcanum_contract::mount::{MountEntry, MountTableKind};

/// One device's salt and redaction options.
pub struct Redactor {
    /// The salt, prepared as an HMAC key.
    salt: arcanum_crypto::HmacSha256Key,
    pub log_raw: bool,
    pub hmac_accessor: bool,
    pub elide_list_responses: bool,
    /// How the tokens seen lately read in this device's entries, by token name: a token's
    /// every request would otherwise HMAC it and its accessor and serialise its `auth` block
    /// again, and none of them can change. Never holds a raw token (nothing is kept for a
    /// `log_raw` device); cleared whole when it reaches [`TOKEN_FORMS_KEPT`].
    token_forms: Mutex<HashMap<String, Arc<TokenForms>>>,
}

/// The most tokens a device keeps the audit forms of.
const TOKEN_FORMS_KEPT: usize = 4096;

/// One token as a device writes it, for an allowed request.
#[derive(Debug)]
struct TokenForms {
    token: String,
    accessor: String,
    auth: Arc<RawValue>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("salt", &"<redacted>")
            .field("log_raw", &self.log_raw)
            .field("hmac_accessor", &self.hmac_accessor)
            .field("elide_list_responses", &self.elide_list_responses)
            .finish()
    }
}

impl Redactor {
    pub fn new(salt: Zeroizing<Vec<u8>>, log_raw: bool, hmac_accessor: bool, elide_list_responses: bool) -> Redactor {
        Redactor {
            salt: arcanum_crypto::HmacSha256Key::new(&salt),
            log_raw,
            hmac_accessor,
            elide_list_responses,
            token_forms: Mutex::new(HashMap::new()),
        }
    }

    /// The kept forms of the token named `name`, made by `make` when not kept yet.
    fn token_forms(&self, name: &str, make: impl FnOnce() -> TokenForms) -> Arc<TokenForms> {
        let kept = self.token_forms.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned();
        if let Some(forms) = kept {
            return forms;
        }
        // Made outside the lock: the HMACs are the expensive part.
        let forms = Arc::new(make());
        let mut kept = self.token_forms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.len() >= TOKEN_FORMS_KEPT {
            kept.clear();
        }
        kept.insert(name.to_owned(), Arc::clone(&forms));
        forms
    }

    /// `hmac-sha256:<hex>` of `input` under the device salt (what `sys/audit-hash` returns).
    pub fn hash(&self, input: &str) -> String {
        const PREFIX: &str = "hmac-sha256:";
        let mac = self.salt.mac(input.as_bytes());
        let mut hex = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the MAC's length.
        let _ = hex::encode_to_slice(mac, &mut hex);
        let mut out = String::with_capacity(PREFIX.len() + hex.len());
        out.push_str(PREFIX);
        out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        out
    }

    /// A token (or other secret) as written: its HMAC unless `log_raw`.
    fn secret<'a>(&self, value: &'a str) -> Cow<'a, str> {
        if self.log_raw {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(self.hash(value))
        }
    }

    /// An accessor as written: HMAC'd only with `hmac_accessor` (the default).
    fn accessor<'a>(&self, value: &'a str) -> Cow<'a, str> {
        if self.hmac_accessor {
            self.secret(value)
        } else {
            Cow::Borrowed(value)
        }
    }
}

/// The caller's token as the request entry describes it.
#[derive(Debug, Clone)]
pub struct AuthRecord {
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub entity_id: String,
    pub token_ttl: u64,
    pub issue_time: i64,
    /// The ACL decision.
    pub allowed: bool,
    /// The token's name in the token store (the HMAC it is stored under), when it is the
    /// request's own client token and not one a wrapping JWT stands for: what a device keeps
    /// the token's audit forms by.
    pub token_name: Option<String>,
}

/// What the core knows about a request when it is recorded. Owned, so that an entry can be
/// written after the request's borrow ends (see `AuditBroker::enable`).
#[derive(Clone)]
pub struct RequestRecord {
    pub id: String,
    /// Vault's operation name (`create` when the existence check found nothing).
    pub operation: &'static str,
    pub path: String,
    pub data: Map<String, Value>,
    pub client_token: Option<String>,
    pub remote: Option<SocketAddr>,
    pub mount: Option<Arc<MountEntry>>,
    pub auth: Option<AuthRecord>,
    /// Why the request was refused before any handler ran (bad token, ACL).
    pub error: Option<String>,
    /// `X-Vault-Wrap-TTL`, in seconds.
    pub wrap_ttl: Option<u64>,
}

// By hand, so that the token and the data never reach a log line through `{:?}`.
impl fmt::Debug for RequestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestRecord")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("client_token", &self.client_token.as_ref().map(|_| "<redacted>"))
            .field("mount", &self.mount.as_ref().map(|m| m.route_prefix()))
            .field("error", &self.error)
            .finish()
    }
}

// The entry is serialised straight from these borrowed views: no intermediate JSON tree, and
// string leaves are HMAC'd as they are written. Empty fields are omitted, as in Vault.

#[derive(Serialize)]
struct Entry<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a RawValue>,
    request: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct AuthOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_token: Option<&'a str>,
    accessor: &'a str,
    display_name: &'a str,
    policies: &'a [String],
    token_policies: &'a [String],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    entity_id: &'a str,
    token_type: &'static str,
    token_ttl: u64,
    token_issue_time: String,
    policy_results: PolicyResults,
}

#[derive(Serialize)]
struct PolicyResults {
    allowed: bool,
}

#[derive(Serialize)]
struct Namespace {
    id: &'static str,
}

#[derive(Serialize)]
struct RequestOut<'a> {
    id: &'a str,
    operation: &'static str,
    #[serde(flatten)]
    mount: Option<MountOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_token_accessor: Option<&'a str>,
    namespace: Namespace,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Redacted<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wrap_ttl: Option<u64>,
}

#[derive(Serialize)]
struct MountOut<'a> {
    mount_point: MountPoint<'a>,
    mount_type: &'a str,
    mount_accessor: &'a str,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    #[serde(flatten)]
    mount: Option<MountOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Redacted<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<SecretOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Redacted<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    /// A wrapped answer: only the wrapping token's particulars, never the wrapped data.
    #[serde(skip_serializing_if = "Option::is_none")]
    wrap_info: Option<Redacted<'a>>,
}

#[derive(Serialize)]
struct SecretOut<'a> {
    lease_id: &'a str,
}

/// How a JSON object is written.
#[derive(Clone, Copy)]
enum Redaction<'a> {
    /// Every string leaf HMAC'd, except top-level keys in the list.
    Leaves(&'a [String]),
    /// A response's `auth` block: only `client_token` and `accessor`.
    AuthBlock,
    /// A response's `wrap_info`: the token and the accessors hashed, the rest as it is.
    WrapInfo,
    /// `log_raw`.
    Raw,
}

/// A JSON object serialised with its secrets replaced (see [`Redaction`]).
struct Redacted<'a> {
    map: &'a Map<String, Value>,
    redactor: &'a Redactor,
    how: Redaction<'a>,
    /// `elide_list_responses`: `keys` become their count, `key_info` its size.
    elide: bool,
}

impl Serialize for Redacted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut out = serializer.serialize_map(Some(self.map.len()))?;
        for (key, value) in self.map {
            if self.elide {
                match (key.as_str(), value) {
                    ("keys", Value::Array(items)) => {
                        out.serialize_entry(key, &items.len())?;
                        continue;
                    }
                    ("key_info", Value::Object(info)) => {
                        out.serialize_entry(key, &info.len())?;
                        continue;
                    }
                    _ => {}
                }
            }
            match self.how {
                Redaction::Raw => out.serialize_entry(key, value)?,
                Redaction::Leaves(keep) if keep.iter().any(|k| k == key) => out.serialize_entry(key, value)?,
                Redaction::Leaves(_) => out.serialize_entry(key, &Leaves(value, self.redactor))?,
                Redaction::AuthBlock => match (key.as_str(), value) {
                    ("client_token", Value::String(token)) if !token.is_empty() => {
                        out.serialize_entry(key, &self.redactor.secret(token))?
                    }
                    ("accessor", Value::String(accessor)) if !accessor.is_empty() => {
                        out.serialize_entry(key, &self.redactor.accessor(accessor))?
                    }
                    _ => out.serialize_entry(key, value)?,
                },
                Redaction::WrapInfo => match (key.as_str(), value) {
                    ("token", Value::String(token)) if !token.is_empty() => {
                        out.serialize_entry(key, &self.redactor.secret(token))?
                    }
                    ("accessor" | "wrapped_accessor", Value::String(accessor)) if !accessor.is_empty() => {
                        out.serialize_entry(key, &self.redactor.accessor(accessor))?
                    }
                    _ => out.serialize_entry(key, value)?,
                },
            }
        }
        out.end()
    }
}

/// A JSON value with every string leaf HMAC'd, recursively (arrays and objects included).
struct Leaves<'a>(&'a Value, &'a Redactor);

impl Serialize for Leaves<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        match self.0 {
            Value::String(text) => serializer.serialize_str(&self.1.hash(text)),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Leaves(item, self.1))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &Leaves(value, self.1))?;
                }
                out.end()
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => self.0.serialize(serializer),
        }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A mount's route (`secret/`, `auth/userpass/`), written straight into the entry.
struct MountPoint<'a>(&'a MountEntry);

impl Serialize for MountPoint<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.table {
            MountTableKind::Secret => serializer.serialize_str(&self.0.path),
            MountTableKind::Auth => serializer.collect_str(&format_args!("auth/{}", self.0.path)),
        }
    }
}

fn mount_out(record: &RequestRecord) -> Option<MountOut<'_>> {
    record.mount.as_ref().map(|mount| MountOut {
        mount_point: MountPoint(mount),
        mount_type: &mount.kind,
        mount_accessor: &mount.accessor,
    })
}

/// The `auth` and `request` blocks of one request as one device writes them. Both of its
/// entries carry them unchanged (as in Vault), so they are redacted and serialised once, with
/// the request entry, and copied into the response entry.
#[derive(Debug, Clone)]
pub struct Prepared {
    auth: Option<Arc<RawValue>>,
    request: Box<RawValue>,
}

impl Prepared {
    pub fn of(redactor: &Redactor, record: &RequestRecord) -> Prepared {
        if let Some(forms) = kept_token_forms(redactor, record) {
            let (token, accessor) = (Some(forms.token.as_str()), Some(forms.accessor.as_str()));
            return Prepared {
                auth: Some(Arc::clone(&forms.auth)),
                request: raw(&request_out(redactor, record, token, accessor)),
            };
        }
        let token = record.client_token.as_deref().filter(|t| !t.is_empty()).map(|t| redactor.secret(t));
        let accessor = record.auth.as_ref().map(|auth| redactor.accessor(&auth.accessor));
        let (token, accessor) = (token.as_deref(), accessor.as_deref());
        Prepared {
            auth: auth_out(record, token, accessor).map(|auth| Arc::from(raw(&auth))),
            request: raw(&request_out(redactor, record, token, accessor)),
        }
    }
}

/// The device's forms of the request's token, for an allowed request with a named token of
/// its own, on a device that HMACs tokens.
fn kept_token_forms(redactor: &Redactor, record: &RequestRecord) -> Option<Arc<TokenForms>> {
    let auth = record.auth.as_ref().filter(|auth| auth.allowed && !redactor.log_raw)?;
    let name = auth.token_name.as_deref()?;
    let token = record.client_token.as_deref().filter(|t| !t.is_empty())?;
    Some(redactor.token_forms(name, || {
        let (token, accessor) = (redactor.hash(token), redactor.accessor(&auth.accessor).into_owned());
        let block = auth_out(record, Some(&token), Some(&accessor)).map(|auth| raw(&auth));
        TokenForms { auth: Arc::from(block.unwrap_or_else(|| RawValue::NULL.to_owned())), token, accessor }
    }))
}

fn raw(block: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(block).unwrap_or_else(|err| {
        // Only a non-string map key could fail here, and every map here has string keys.
        tracing::error!(error = %err, "audit entry did not serialise");
        RawValue::NULL.to_owned()
    })
}

fn auth_out<'a>(record: &'a RequestRecord, token: Option<&'a str>, accessor: Option<&'a str>) -> Option<AuthOut<'a>> {
    let auth = record.auth.as_ref()?;
    Some(AuthOut {
        client_token: token,
        accessor: accessor.unwrap_or_default(),
        display_name: &auth.display_name,
        policies: &auth.policies,
        token_policies: &auth.policies,
        metadata: &auth.metadata,
        entity_id: &auth.entity_id,
        token_type: "service",
        token_ttl: auth.token_ttl,
        token_issue_time: arcanum_contract::clock::rfc3339(auth.issue_time),
        policy_results: PolicyResults { allowed: auth.allowed },
    })
}

fn request_out<'a>(
    redactor: &'a Redactor,
    record: &'a RequestRecord,
    token: Option<&'a str>,
    accessor: Option<&'a str>,
) -> RequestOut<'a> {
    let keep = record.mount.as_ref().map_or(&[][..], |m| &m.config.audit_non_hmac_request_keys[..]);
    RequestOut {
        id: &record.id,
        operation: record.operation,
        mount: mount_out(record),
        client_token: token,
        client_token_accessor: accessor,
        namespace: Namespace { id: "root" },
        path: &record.path,
        data: (!record.data.is_empty()).then_some(Redacted {
            map: &record.data,
            redactor,
            how: if redactor.log_raw { Redaction::Raw } else { Redaction::Leaves(keep) },
            elide: false,
        }),
        remote_address: record.remote.map(|remote| remote.ip().to_string()),
        remote_port: record.remote.map(|remote| remote.port()),
        wrap_ttl: record.wrap_ttl,
    }
}

/// Room for a typical entry: `serde_json::to_string` starts at 128 bytes and an entry of a
/// read grows it four times over, copying as it goes.
const ENTRY_CAPACITY: usize = 2048;

fn serialize(entry: &Entry<'_>) -> String {
    let mut out = Vec::with_capacity(ENTRY_CAPACITY);
    match serde_json::to_writer(&mut out, entry).map(|()| String::from_utf8(out)) {
        Ok(Ok(text)) => text,
        // Only a non-string map key could fail here, and every map here has string keys;
        // serde_json writes nothing but UTF-8.
        failed => {
            tracing::error!(error = ?failed.err(), "audit entry did not serialise");
            String::from("{}")
        }
    }
}

/// The request entry (`type: request`), as a compact JSON object; `prepared` is
/// [`Prepared::of`] the device and `record`.
pub fn request_entry(record: &RequestRecord, prepared: &Prepared) -> String {
    serialize(&Entry {
        time: now(),
        kind: "request",
        auth: prepared.auth.as_deref(),
        request: &prepared.request,
        response: None,
        error: record.error.as_deref().map(Cow::Borrowed),
    })
}

/// The response entry (`type: response`) for `result`, as a compact JSON object.
pub fn response_entry(
    redactor: &Redactor,
    record: &RequestRecord,
    prepared: &Prepared,
    result: &Result<Response, ApiError>,
) -> String {
    let keep = record.mount.as_ref().map_or(&[][..], |m| &m.config.audit_non_hmac_response_keys[..]);
    let leaves = if redactor.log_raw { Redaction::Raw } else { Redaction::Leaves(keep) };
    let auth_block = if redactor.log_raw { Redaction::Raw } else { Redaction::AuthBlock };
    let elide = redactor.elide_list_responses && record.operation == "list";
    let wrap_info = if redactor.log_raw { Redaction::Raw } else { Redaction::WrapInfo };
    let mut response =
        ResponseOut { mount: mount_out(record), auth: None, secret: None, data: None, warnings: &[], wrap_info: None };
    // `Trail::finish` hands over `data` materialised; any other caller still gets every leaf.
    let materialised;
    let result = match result {
        Ok(Response::Logical(logical)) if !logical.stored_data.is_empty() => {
            let mut logical = logical.clone();
            logical.materialise();
            materialised = Ok(Response::Logical(logical));
            &materialised
        }
        result => result,
    };
    match result {
        Ok(Response::Logical(logical)) => {
            if let Some(Value::Object(auth)) = &logical.auth {
                response.auth = Some(Redacted { map: auth, redactor, how: auth_block, elide: false });
            }
            if !logical.lease_id.is_empty() {
                response.secret = Some(SecretOut { lease_id: &logical.lease_id });
            }
            if let Some(data) = &logical.data {
                response.data = Some(Redacted { map: data, redactor, how: leaves, elide });
            }
            response.warnings = &logical.warnings;
            if let Some(info) = &logical.wrap_info {
                response.wrap_info = Some(Redacted { map: info, redactor, how: wrap_info, elide: false });
            }
        }
        Ok(Response::Raw { body: Value::Object(body), .. }) => {
            response.data = Some(Redacted { map: body, redactor, how: leaves, elide: false });
        }
        Ok(
            Response::Raw { .. }
            | Response::Status(_)
            | Response::NoContent
            | Response::Text { .. }
            | Response::Redirect { .. }
            | Response::Login(_),
        )
        | Err(_) => {}
    }
    let error = match result {
        Err(err) if err.errors.is_empty() => Some(Cow::Owned(err.status.to_string())),
        Err(err) => Some(Cow::Owned(err.errors.join("; "))),
        Ok(_) => record.error.as_deref().map(Cow::Borrowed),
    };
    serialize(&Entry {
        time: now(),
        kind: "response",
        auth: prepared.auth.as_deref(),
        request: &prepared.request,
        response: Some(response),
        error,
    })
}

/// Vault's operation names.
pub fn operation_name(operation: arcanum_contract::logical::Operation, create: bool) -> &'static str {
    use arcanum_contract::logical::Operation;
    match operation {
        Operation::Read => "read",
        Operation::List => "list",
        Operation::Update if create => "create",
        Operation::Update => "update",
        Operation::Patch => "patch",
        Operation::Delete => "delete",
        Operation::Header => "header",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_contract::logical::LogicalResponse;
    use serde_json::json;

    fn redactor(log_raw: bool, hmac_accessor: bool) -> Redactor {
        Redactor::new(Zeroizing::new(b"salt".to_vec()), log_raw, hmac_accessor, false)
    }

    /// The request entry of [`record`] under `redactor`.
    fn entry_of(redactor: &Redactor) -> String {
        request_entry(&record(), &Prepared::of(redactor, &record()))
    }

    fn record() -> RequestRecord {
        let mut data = Map::new();
        data.insert("password".into(), json!("hunter2"));
        data.insert("nested".into(), json!({ "list": ["a", 1, true, null] }));
        RequestRecord {
            id: "req-1".into(),
            operation: "update",
            path: "auth/userpass/login/alice".into(),
            data,
            client_token: Some("hvs.TOKEN".into()),
            remote: Some("127.0.0.1:4000".parse().unwrap()),
            mount: None,
            auth: Some(AuthRecord {
                accessor: "ACCESSOR".into(),
                display_name: "token".into(),
                policies: vec!["root".into()],
                metadata: Default::default(),
                entity_id: String::new(),
                token_ttl: 0,
                issue_time: 0,
                allowed: true,
                token_name: None,
            }),
            error: None,
            wrap_ttl: None,
        }
    }

    #[test]
    fn the_mount_block_names_the_route_type_and_accessor() {
        let redactor = redactor(true, false);
        for (table, path, route) in
            [(MountTableKind::Auth, "userpass/", "auth/userpass/"), (MountTableKind::Secret, "kv/", "kv/")]
        {
            let mount = Arc::new(MountEntry::new(table, path, "userpass", ""));
            let record = RequestRecord { mount: Some(Arc::clone(&mount)), ..record() };
            let entry: Value =
                serde_json::from_str(&request_entry(&record, &Prepared::of(&redactor, &record))).unwrap();
            assert_eq!(entry["request"]["mount_point"], route);
            assert_eq!(entry["request"]["mount_type"], "userpass");
            assert_eq!(entry["request"]["mount_accessor"], mount.accessor.as_str());
        }
    }

    #[test]
    fn request_entry_hmacs_token_accessor_and_every_string_leaf() {
        let r = redactor(false, true);
        let text = request_entry(&record(), &Prepared::of(&r, &record()));
        for secret in ["hvs.TOKEN", "ACCESSOR", "hunter2", "\"a\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let entry: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(entry["type"], "request");
        assert_eq!(entry["request"]["client_token"], r.hash("hvs.TOKEN"));
        assert_eq!(entry["auth"]["client_token"], r.hash("hvs.TOKEN"));
        assert_eq!(entry["auth"]["accessor"], r.hash("ACCESSOR"));
        assert_eq!(entry["request"]["client_token_accessor"], r.hash("ACCESSOR"));
        assert_eq!(entry["request"]["data"]["password"], r.hash("hunter2"));
        assert_eq!(entry["request"]["data"]["nested"]["list"], json!([r.hash("a"), 1, true, null]));
        assert_eq!(entry["request"]["path"], "auth/userpass/login/alice");
        assert_eq!(entry["request"]["remote_address"], "127.0.0.1");
        assert_eq!(entry["auth"]["policies"], json!(["root"]));
    }

    #[test]
    fn kept_token_forms_write_what_fresh_ones_would() {
        let blocks = |r: &Redactor, record: &RequestRecord| {
            let entry: Value = serde_json::from_str(&request_entry(record, &Prepared::of(r, record))).unwrap();
            (entry["auth"].clone(), entry["request"].clone())
        };
        let named = |allowed: bool| {
            let mut record = record();
            let auth = record.auth.as_mut().unwrap();
            (auth.token_name, auth.allowed) = (Some("name-1".into()), allowed);
            record
        };
        let r = redactor(false, true);
        let fresh = blocks(&r, &record());
        assert_eq!(blocks(&r, &named(true)), fresh, "made and kept");
        assert_eq!(blocks(&r, &named(true)), fresh, "read back");
        assert_eq!(r.token_forms.lock().unwrap().len(), 1);
        let (denied, _) = blocks(&r, &named(false));
        assert_eq!(denied["policy_results"]["allowed"], false, "a denied request does not get the allowed block");

        let raw = redactor(true, true);
        let (auth, _) = blocks(&raw, &named(true));
        assert_eq!(auth["client_token"], "hvs.TOKEN");
        assert!(raw.token_forms.lock().unwrap().is_empty(), "a log_raw device keeps no token");
    }

    #[test]
    fn hmac_accessor_false_and_log_raw() {
        let entry: Value = serde_json::from_str(&entry_of(&redactor(false, false))).unwrap();
        assert_eq!(entry["auth"]["accessor"], "ACCESSOR");
        assert!(entry["auth"]["client_token"].as_str().unwrap().starts_with("hmac-sha256:"));
        let raw: Value = serde_json::from_str(&entry_of(&redactor(true, true))).unwrap();
        assert_eq!(raw["request"]["data"]["password"], "hunter2");
        assert_eq!(raw["auth"]["client_token"], "hvs.TOKEN");
    }

    #[test]
    fn response_entry_redacts_auth_and_data_and_elides_lists() {
        let r = redactor(false, true);
        let mut data = Map::new();
        data.insert("keys".into(), json!(["a", "b"]));
        let response = Ok(Response::Logical(Box::new(LogicalResponse {
            data: Some(data),
            auth: Some(json!({ "client_token": "hvs.NEW", "accessor": "NEWACC", "policies": ["default"] })),
            ..Default::default()
        })));
        let text = response_entry(&r, &record(), &Prepared::of(&r, &record()), &response);
        assert!(!text.contains("hvs.NEW") && !text.contains("NEWACC"));
        let entry: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(entry["response"]["auth"]["client_token"], r.hash("hvs.NEW"));
        assert_eq!(entry["response"]["data"]["keys"], json!([r.hash("a"), r.hash("b")]));

        let elider = Redactor::new(Zeroizing::new(b"s".to_vec()), false, true, true);
        let mut list = record();
        list.operation = "list";
        let entry: Value =
            serde_json::from_str(&response_entry(&elider, &list, &Prepared::of(&elider, &list), &response)).unwrap();
        assert_eq!(entry["response"]["data"]["keys"], 2);

        let failed = response_entry(&r, &record(), &Prepared::of(&r, &record()), &Err(ApiError::permission_denied()));
        let entry: Value = serde_json::from_str(&failed).unwrap();
        assert_eq!(entry["error"], "permission denied");
    }

    #[test]
    fn a_stored_field_in_the_response_is_hmaced_like_the_rest_of_data() {
        let r = redactor(false, true);
        let stored = arcanum_contract::logical::StoredField::new("data", br#"{"password":"s3cret"}"#.to_vec()).unwrap();
        let response = Ok(Response::Logical(Box::new(LogicalResponse {
            data: json!({ "metadata": { "version": 1 } }).as_object().cloned(),
            stored_data: vec![stored],
            ..Default::default()
        })));
        let text = response_entry(&r, &record(), &Prepared::of(&r, &record()), &response);
        assert!(!text.contains("s3cret"), "{text}");
        let entry: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(entry["response"]["data"]["data"]["password"], r.hash("s3cret"));
        assert_eq!(entry["response"]["data"]["metadata"]["version"], 1);
    }

    #[test]
    fn debug_hides_token_and_salt() {
        let text = format!("{:?} {:?}", record(), redactor(false, true));
        let salt_bytes = format!("{:?}", b"salt".to_vec());
        assert!(!text.contains("hvs.TOKEN") && !text.contains("hunter2"));
        assert!(!text.contains(&salt_bytes[1..salt_bytes.len() - 1]));
    }
}
