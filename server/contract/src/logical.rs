//! The logical request and response that flow between the HTTP layer and the core.
//!
//! The HTTP layer turns a wire request into a [`Request`]; the core answers with a
//! [`Response`] or an [`ApiError`]; the HTTP layer renders either in Vault's shape.
//! Nothing here knows about axum.

use std::fmt;
use std::net::SocketAddr;

use serde::ser::SerializeMap as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What a request asks for, as Vault's logical layer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    /// PUT and POST: Vault treats them identically.
    Update,
    Patch,
    Delete,
    /// HEAD: like read, but the answer carries no body.
    Header,
}

/// One request after the HTTP layer has decoded and normalised it.
#[derive(Clone)]
pub struct Request {
    /// Fresh per request: the envelope's `request_id` and the audit entries' `request.id`.
    pub id: String,
    pub operation: Operation,
    /// Normalised path below `/v1/`, without a leading slash (`sys/seal-status`).
    pub path: String,
    /// JSON body for writes, query parameters for reads, lists and deletes.
    pub data: Map<String, Value>,
    /// The client token from `X-Vault-Token` or `Authorization: Bearer`.
    pub client_token: Option<String>,
    /// The client's address, when the request came over a socket.
    pub remote_addr: Option<SocketAddr>,
    /// `X-Vault-Wrap-TTL` in seconds: the answer goes into a wrapping token's cubbyhole and the
    /// client gets the token. `None`: not wrapped.
    pub wrap_ttl: Option<u64>,
    /// `X-Vault-Wrap-Format: jwt`: the wrapping token is handed out as a signed JWT.
    pub wrap_jwt: bool,
}

// Written by hand so that a token never reaches a log line through `{:?}`.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("client_token", &self.client_token.as_ref().map(|_| "<redacted>"))
            .field("wrap_ttl", &self.wrap_ttl)
            .field("wrap_jwt", &self.wrap_jwt)
            .finish()
    }
}

impl Request {
    pub fn new(operation: Operation, path: impl Into<String>) -> Request {
        Request {
            id: uuid::Uuid::new_v4().to_string(),
            operation,
            path: path.into(),
            data: Map::new(),
            client_token: None,
            remote_addr: None,
            wrap_ttl: None,
            wrap_jwt: false,
        }
    }

    /// Field lookup the way Vault's framework does it: JSON `null` counts as absent.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.data.get(name).filter(|value| !value.is_null())
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A bare JSON object without the envelope (`sys/init`, `sys/seal-status`, ...).
    Raw { status: u16, body: Value },
    /// A status code and no body (HEAD on `sys/health`).
    Status(u16),
    /// Vault's envelope.
    Logical(Box<LogicalResponse>),
    /// 204 No Content.
    NoContent,
    /// A non-JSON body (`sys/metrics?format=prometheus`).
    Text { status: u16, content_type: &'static str, body: String },
    /// 307 Temporary Redirect to `location` (an HA standby sends clients to the active node).
    Redirect { location: String },
    /// A credential backend accepted a login; the core turns this into a token and answers
    /// with the `auth` block. Backends never mint tokens themselves.
    Login(Box<LoginAuth>),
}

/// The parts of Vault's envelope a handler fills in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogicalResponse {
    /// HTTP status; 0 means 200. (KV v2 answers 404 *with* data for deleted versions.)
    pub status: u16,
    pub data: Option<Map<String, Value>>,
    pub warnings: Vec<String>,
    /// Copy every `data` key to the top level too, as Vault does for older sys endpoints.
    pub inject_data: bool,
    pub auth: Option<Value>,
    pub lease_id: String,
    pub lease_duration: u64,
    pub renewable: bool,
    /// Set by a backend whose answer must be revoked later (database credentials): the
    /// router records a lease and fills in `lease_id`, `lease_duration` and `renewable`.
    pub secret: Option<crate::backend::LeaseSpec>,
    /// A wrapped answer: `token`, `accessor`, `ttl`, ... of the wrapping token that holds the
    /// real answer. Everything else is then empty.
    pub wrap_info: Option<Map<String, Value>>,
    /// More `data` keys whose values are JSON text as a backend stored or kept it (a KV secret
    /// and its version's metadata): an answer that is only rendered writes them out as they are,
    /// where parsing them into `data` and serialising them again cost more than the rest of
    /// rendering. One of these keys wins over the same key in `data`. Whatever reads `data` (the
    /// audit, response wrapping) calls [`LogicalResponse::materialise`] first.
    pub stored_data: Vec<StoredField>,
}

/// A `data` key with JSON text for its value; see [`LogicalResponse::stored_data`].
#[derive(Clone)]
pub struct StoredField {
    pub key: String,
    pub json: Box<RawValue>,
}

impl StoredField {
    /// `json` must be JSON text (a stored record); text that is not is refused.
    pub fn new(key: impl Into<String>, json: Vec<u8>) -> Result<StoredField, serde_json::Error> {
        let text = String::from_utf8(json).map_err(|err| serde::de::Error::custom(err.utf8_error()))?;
        Ok(StoredField { key: key.into(), json: RawValue::from_string(text)? })
    }

    /// JSON text already checked (a `RawValue` is only ever valid JSON).
    pub fn from_raw(key: impl Into<String>, json: Box<RawValue>) -> StoredField {
        StoredField { key: key.into(), json }
    }
}

impl PartialEq for StoredField {
    fn eq(&self, other: &StoredField) -> bool {
        self.key == other.key && self.json.get() == other.json.get()
    }
}

/// The key only: the value is a secret.
impl fmt::Debug for StoredField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredField").field("key", &self.key).finish_non_exhaustive()
    }
}

/// `data` with the stored fields in their sorted places, as the map would hold them once
/// materialised.
struct DataOut<'a> {
    data: Option<&'a Map<String, Value>>,
    stored: &'a [StoredField],
}

impl serde::Serialize for DataOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut stored: Vec<&StoredField> = self.stored.iter().collect();
        stored.sort_by(|a, b| a.key.cmp(&b.key));
        // The last of fields with one key wins, as `materialise` inserts them in order.
        stored.reverse();
        stored.dedup_by(|later, earlier| later.key == earlier.key);
        stored.reverse();
        let mut stored = stored.into_iter().peekable();
        let entries = self.data.into_iter().flatten().filter(|(key, _)| !self.stored.iter().any(|s| s.key == **key));
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in entries {
            while let Some(field) = stored.next_if(|field| field.key.as_str() < key.as_str()) {
                map.serialize_entry(&field.key, &field.json)?;
            }
            map.serialize_entry(key, value)?;
        }
        for field in stored {
            map.serialize_entry(&field.key, &field.json)?;
        }
        map.end()
    }
}

/// The envelope's `data`: the map, or the map with the stored field spliced in.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum EnvelopeData<'a> {
    Map(&'a Option<Map<String, Value>>),
    WithStored(DataOut<'a>),
}

/// Vault's envelope, borrowed from a [`LogicalResponse`]: the one list of its fields, in the
/// order a serde_json map keeps them (sorted), so that the map and the text agree.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    auth: &'a Option<Value>,
    data: EnvelopeData<'a>,
    lease_duration: u64,
    lease_id: &'a str,
    mount_type: &'static str,
    renewable: bool,
    request_id: &'a str,
    warnings: Option<&'a [String]>,
    wrap_info: &'a Option<Map<String, Value>>,
}

impl LogicalResponse {
    fn envelope_fields<'a>(&'a self, request_id: &'a str) -> Envelope<'a> {
        Envelope {
            auth: &self.auth,
            data: if self.stored_data.is_empty() {
                EnvelopeData::Map(&self.data)
            } else {
                EnvelopeData::WithStored(DataOut { data: self.data.as_ref(), stored: &self.stored_data })
            },
            lease_duration: self.lease_duration,
            lease_id: &self.lease_id,
            mount_type: "",
            renewable: self.renewable,
            // A wrapped answer carries nothing of the request: its id is in the wrapped answer.
            request_id: if self.wrap_info.is_some() { "" } else { request_id },
            warnings: (!self.warnings.is_empty()).then_some(self.warnings.as_slice()),
            wrap_info: &self.wrap_info,
        }
    }

    /// Parses [`stored_data`](Self::stored_data) into `data`, for what reads `data`.
    pub fn materialise(&mut self) {
        for stored in std::mem::take(&mut self.stored_data) {
            // A `RawValue` is valid JSON text.
            let value = serde_json::from_str(stored.json.get()).unwrap_or(Value::Null);
            self.data.get_or_insert_with(Map::new).insert(stored.key, value);
        }
    }

    /// Vault's envelope for this answer; `request_id` is the one the audit entries carry. With
    /// `inject_data` every `data` key is copied to the top level too (the envelope's own keys win).
    pub fn envelope(mut self, request_id: &str) -> Map<String, Value> {
        self.materialise();
        let fields = match serde_json::to_value(self.envelope_fields(request_id)) {
            Ok(Value::Object(fields)) => fields,
            _ => unreachable!("a struct of JSON values serialises to an object"),
        };
        let mut envelope = match (self.inject_data, self.data) {
            (true, Some(data)) => data,
            _ => Map::new(),
        };
        envelope.extend(fields);
        envelope
    }

    /// [`envelope`](Self::envelope) as the JSON text the client gets, written straight from the
    /// fields: building the map cost more than the rest of rendering on the hottest read path.
    pub fn envelope_json(self, request_id: &str) -> String {
        if self.inject_data {
            return Value::Object(self.envelope(request_id)).to_string();
        }
        serde_json::to_string(&self.envelope_fields(request_id))
            .unwrap_or_else(|_| unreachable!("JSON values always serialise"))
    }
}

/// What a login produced, before it becomes a token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoginAuth {
    pub policies: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub display_name: String,
    pub ttl: u64,
    pub max_ttl: u64,
    pub period: u64,
    pub num_uses: u64,
    pub no_default_policy: bool,
    /// The token may only be used from these CIDR blocks (empty: anywhere).
    pub bound_cidrs: Vec<String>,
    pub renewable: bool,
    /// The auth mount's path without `auth/` (`userpass/`), for the token's `path`.
    pub mount_path: String,
    /// The name of the login path (`login/alice`), for the token's `path`.
    pub login_path: String,
    /// Vault's entity alias name (`alias_name_source`); the same alias on the same mount always
    /// gets the same `entity_id`. Empty: no entity.
    pub alias_name: String,
}

impl Response {
    pub fn raw(body: Value) -> Response {
        Response::Raw { status: 200, body }
    }

    pub fn data(data: Map<String, Value>) -> Response {
        Response::Logical(Box::new(LogicalResponse { data: Some(data), ..LogicalResponse::default() }))
    }

    /// Data that older sys endpoints also copy to the top level.
    pub fn injected(data: Map<String, Value>) -> Response {
        Response::Logical(Box::new(LogicalResponse {
            data: Some(data),
            inject_data: true,
            ..LogicalResponse::default()
        }))
    }

    /// `{"keys": [...]}`, or Vault's 404 for a list with nothing in it.
    pub fn list(keys: Vec<String>) -> Result<Response, ApiError> {
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        let mut data = Map::new();
        data.insert("keys".into(), Value::from(keys));
        Ok(Response::data(data))
    }
}

/// A failed request: a status code and the messages for Vault's `{"errors": [...]}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, errors: vec![message.into()] }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn permission_denied() -> ApiError {
        ApiError::new(403, "permission denied")
    }

    /// Clients (vault agent, the Go api client) re-authenticate only when they see both phrases.
    pub fn invalid_token() -> ApiError {
        ApiError { status: 403, errors: vec!["permission denied".into(), "invalid token".into()] }
    }

    pub fn no_handler(path: &str) -> ApiError {
        ApiError::new(404, format!("no handler for route {path:?}. route entry not found."))
    }

    /// A read that found nothing: Vault answers 404 with an empty error list.
    pub fn not_found() -> ApiError {
        ApiError { status: 404, errors: Vec::new() }
    }

    pub fn unsupported_operation() -> ApiError {
        ApiError::new(405, "unsupported operation")
    }

    pub fn sealed() -> ApiError {
        ApiError::new(503, "Vault is sealed")
    }

    /// Internal failures are logged where they happen; the client sees no detail.
    pub fn internal() -> ApiError {
        ApiError::new(500, "internal error")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.errors.join("; "))
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod envelope_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_json_is_the_envelope_map_serialised() {
        let object = |value: Value| value.as_object().cloned();
        let responses = [
            LogicalResponse::default(),
            LogicalResponse {
                data: object(json!({"data": {"k": "v\"\u{1}"}, "metadata": {"version": 3}})),
                ..Default::default()
            },
            LogicalResponse {
                auth: Some(json!({"client_token": "t", "policies": ["a"]})),
                warnings: vec!["careful".into(), "twice".into()],
                lease_id: "database/creds/x/abc".into(),
                lease_duration: 3600,
                renewable: true,
                ..Default::default()
            },
            LogicalResponse { wrap_info: object(json!({"token": "w", "ttl": 60})), ..Default::default() },
            LogicalResponse {
                inject_data: true,
                data: object(json!({"sealed": false, "zz": 1, "auth": "shadowed"})),
                ..Default::default()
            },
        ];
        for response in responses {
            let expected = Value::Object(response.clone().envelope("req-1")).to_string();
            assert_eq!(response.envelope_json("req-1"), expected);
        }
    }

    #[test]
    fn a_stored_field_renders_in_its_sorted_place_as_it_would_once_materialised() {
        // Compact with sorted keys, as serde_json writes what the KV engine stores: then the text
        // is byte for byte what the materialised map renders.
        let compact = r#"{"n":[1,2.5],"password":"s3cré\"t"}"#;
        let spaced = r#"{"password": "s3cré\"t", "n": [1, 2.5]}"#;
        let data = json!({"b": 1, "metadata": {"version": 3}, "data": "shadowed"}).as_object().cloned();
        for key in ["a", "data", "c", "zz"] {
            for data in [None, data.clone()] {
                for text in [compact, spaced] {
                    let stored = StoredField::new(key, text.as_bytes().to_vec()).unwrap();
                    let other = StoredField::new("m", br#"{"version":3}"#.to_vec()).unwrap();
                    let response =
                        LogicalResponse { data: data.clone(), stored_data: vec![stored, other], ..Default::default() };
                    let mut materialised = response.clone();
                    materialised.materialise();
                    assert!(materialised.stored_data.is_empty());
                    let rendered = response.clone().envelope_json("r");
                    let parsed: Value = serde_json::from_str(&rendered).unwrap();
                    assert_eq!(parsed, Value::Object(materialised.clone().envelope("r")), "key {key}");
                    assert_eq!(parsed["data"][key], json!({"password": "s3cré\"t", "n": [1, 2.5]}));
                    if text == compact {
                        assert_eq!(rendered, materialised.envelope_json("r"));
                    }
                }
            }
        }
        // Of two fields with one key the last wins, rendered or materialised.
        let twice = LogicalResponse {
            stored_data: vec![
                StoredField::new("k", b"1".to_vec()).unwrap(),
                StoredField::new("k", b"2".to_vec()).unwrap(),
            ],
            ..Default::default()
        };
        let rendered: Value = serde_json::from_str(&twice.clone().envelope_json("r")).unwrap();
        assert_eq!(rendered["data"], json!({"k": 2}));
        assert_eq!(Value::Object(twice.envelope("r"))["data"], json!({"k": 2}));
        assert!(StoredField::new("data", b"{not json".to_vec()).is_err());
        assert!(StoredField::new("data", vec![0xff, b'1']).is_err());
        let shown = format!("{:?}", StoredField::new("data", compact.as_bytes().to_vec()).unwrap());
        assert!(!shown.contains("s3cr"), "{shown}");
    }

    #[test]
    fn the_envelope_keeps_vaults_shape() {
        let response = LogicalResponse {
            data: json!({"k": "v"}).as_object().cloned(),
            warnings: vec!["w".into()],
            ..Default::default()
        };
        assert_eq!(
            response.envelope_json("req-1"),
            r#"{"auth":null,"data":{"k":"v"},"lease_duration":0,"lease_id":"","mount_type":"","renewable":false,"request_id":"req-1","warnings":["w"],"wrap_info":null}"#
        );
        let injected = LogicalResponse {
            inject_data: true,
            data: json!({"sealed": false, "auth": "shadowed"}).as_object().cloned(),
            ..Default::default()
        };
        let envelope = injected.envelope("req-2");
        assert_eq!(envelope["sealed"], json!(false));
        assert_eq!(envelope["auth"], Value::Null, "the envelope's own keys win over injected data");
        assert_eq!(envelope["data"], json!({"sealed": false, "auth": "shadowed"}));
        assert_eq!(envelope["request_id"], json!("req-2"));
        let wrapped = LogicalResponse { wrap_info: json!({"token": "w"}).as_object().cloned(), ..Default::default() };
        assert_eq!(wrapped.envelope("req-3")["request_id"], json!(""), "a wrapped answer names no request");
    }
}
