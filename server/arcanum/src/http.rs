//! The HTTP face of the core: Vault's `/v1/` wire protocol on axum.
//!
//! Every request goes through one handler that turns method, path, query, body and token
//! headers into a [`Request`], hands it to [`router::handle`], and renders the answer in
//! Vault's envelope or error shape. Paths are percent-decoded and normalised here, and `.`
//! and `..` segments are refused, before anything looks at them.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use tower::Service;

use arcanum_contract::path::{normalize_path, percent_decode};

use crate::forward::{self, Forwarder};
use crate::router;
use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_core::Core;
use arcanum_metrics as metrics;

// Vault's request headers, as names built once: a lookup by `&str` parses and checks the name
// again on every request.
const X_VAULT_TOKEN: HeaderName = HeaderName::from_static("x-vault-token");
const X_VAULT_WRAP_TTL: HeaderName = HeaderName::from_static("x-vault-wrap-ttl");
const X_VAULT_WRAP_FORMAT: HeaderName = HeaderName::from_static("x-vault-wrap-format");
const FORWARDED_FOR: HeaderName = HeaderName::from_static(arcanum_core::ha::FORWARDED_HEADER);

/// Shared by every request.
#[derive(Debug, Clone)]
struct HttpState {
    core: Arc<Core>,
    /// `None`: no limit (a negative `max_request_size` in Vault's listener config).
    max_request_size: Option<u64>,
    /// How an HA standby passes requests to the active node.
    forwarder: Arc<Forwarder>,
}

/// The service one listener answers every request with: [`serve_request`], for a peer.
///
/// Not an `axum::Router`: every path reaches the one handler, so the router's path lookup, its
/// route's boxed service and the peer address put into each request's extensions (a map
/// allocated per request) were 7.5% of a KV v2 read's instructions spent on nothing
/// (docs/BENCHMARKS.md, thirteenth sitting). The peer is known per connection, so the service
/// made for a connection holds it.
#[derive(Debug, Clone)]
pub struct App {
    state: HttpState,
    /// `None` when the service is driven without a connection (tests and the fuzz checks).
    peer: Option<SocketAddr>,
}

/// The application for one listener, not yet bound to a connection.
pub fn app(core: Arc<Core>, max_request_size: Option<u64>, forwarder: Arc<Forwarder>) -> App {
    App { state: HttpState { core, max_request_size, forwarder }, peer: None }
}

impl App {
    /// What axum-server asks, for each accepted connection, for the service that answers it.
    pub fn per_connection(self) -> Connections {
        Connections(self)
    }
}

/// Makes the [`App`] of each connection, holding its peer's address.
#[derive(Debug, Clone)]
pub struct Connections(App);

impl Service<SocketAddr> for Connections {
    type Response = App;
    type Error = Infallible;
    type Future = Ready<Result<App, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        std::future::ready(Ok(App { peer: Some(peer), ..self.0.clone() }))
    }
}

impl<B> Service<axum::http::Request<B>> for App
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let (state, peer) = (self.state.clone(), self.peer);
        Box::pin(async move {
            let head_only = request.method() == Method::HEAD;
            let mut response = serve_request(state, peer, request.map(Body::new)).await;
            if head_only {
                // What axum's router did: the length the body would have had, and no body.
                if let Some(length) = response.body().size_hint().exact() {
                    response.headers_mut().entry(header::CONTENT_LENGTH).or_insert_with(|| HeaderValue::from(length));
                }
                *response.body_mut() = Body::empty();
            }
            Ok(response)
        })
    }
}

async fn serve_request(
    state: HttpState,
    peer: Option<SocketAddr>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let started = Instant::now();
    let method = metrics::method_label(parts.method.as_str());
    // Held until the answer is rendered: the body's bytes and what parsing makes of them.
    let admission = match admit_body(&state, &parts).await {
        Ok(admission) => admission,
        Err(error) => return render(Err(error), ""),
    };
    let body = if state.core.is_standby() && !standby_serves(&state.core, &parts.uri) {
        if let Some(response) = standby_read(&state, &parts, peer).await {
            metrics::global().ha_standby_reads.inc();
            return response;
        }
        let outcome = forward::to_the_active(
            &state.forwarder,
            &state.core,
            parts.method.clone(),
            &parts.uri,
            &parts.headers,
            body,
            peer,
            admission.limit,
        )
        .await;
        let response = match outcome {
            // This node took over while the request waited for an active node.
            forward::Outcome::ServeHere(read) => Err(Body::from(read)),
            forward::Outcome::Answered(response) => Ok(response),
            forward::Outcome::Redirect(location) => Ok(render(Ok(Response::Redirect { location }), "")),
            forward::Outcome::Refused(error) => Ok(render(Err(error), "")),
            forward::Outcome::NotActive => {
                let error = ApiError::new(503, "this node is a standby too (the active node is changing); retry");
                let mut response = render(Err(error), "");
                response.headers_mut().insert(forward::STANDBY_MARKER, HeaderValue::from_static("true"));
                Ok(response)
            }
        };
        match response {
            Ok(response) => {
                metrics::forwarded_route().observe(method, response.status().as_u16(), started.elapsed());
                return response;
            }
            Err(body) => body,
        }
    } else {
        body
    };
    let remote = match client_address(&state.core, &parts, peer) {
        Ok(remote) => remote,
        Err(error) => return render(Err(error), ""),
    };
    let (result, request_id, mount, headers) =
        match parse(admission.limit, &parts.method, &parts.uri, &parts.headers, body).await {
            Ok(req) => {
                tracing::debug!(operation = ?req.operation, path = %req.path, "request");
                let request_id = req.id.clone();
                // One mount lookup serves the metrics label and the quota check. Quotas live
                // behind the barrier: while sealed there are none to apply.
                let unsealed = state.core.unsealed().ok();
                let resolved = unsealed.as_ref().and_then(|unsealed| unsealed.mounts.resolve(&req.path));
                let mount = metrics::route_metrics(&req.path, resolved.as_ref().map(|(mount, _)| &mount.metrics));
                let admission = match &unsealed {
                    Some(unsealed) => {
                        let creates = arcanum_quotas::creates_lease(
                            &req.path,
                            resolved.as_ref().map(|(mount, rest)| (&*mount.entry, &*mount.backend, rest.as_str())),
                        );
                        unsealed.quotas.admit(&req, remote.map(|addr| addr.ip()), creates).map(Some)
                    }
                    None => Ok(None),
                };
                match admission {
                    Ok(admission) => {
                        let resolved = unsealed.map(|unsealed| router::Resolved { unsealed, mount: resolved });
                        let result =
                            router::handle(&state.core, Request { remote_addr: remote, ..req }, resolved).await;
                        // Dropping the admission gives back its lease-count slot.
                        let headers = admission.map(|mut admission| std::mem::take(&mut admission.headers));
                        (result, request_id, mount, headers.unwrap_or_default())
                    }
                    Err(rejection) => (Err(rejection.error), request_id, mount, rejection.headers),
                }
            }
            Err(err) => (Err(err), uuid::Uuid::new_v4().to_string(), metrics::unmounted_route(), Vec::new()),
        };
    let not_active = matches!(&result, Err(err) if err.status == 503 && err.errors.first().is_some_and(|e| e == arcanum_core::ha::NOT_ACTIVE));
    let mut response = render(result, &request_id);
    if not_active {
        response.headers_mut().insert(forward::STANDBY_MARKER, HeaderValue::from_static("true"));
    } else if let Some(ha) = state.core.ha().filter(|ha| ha.is_active()) {
        // What a client hands a standby to read what this request wrote (Vault's header).
        if let Ok(index) = HeaderValue::from_str(&forward::encode_index(ha.backend.last_write())) {
            response.headers_mut().insert(forward::INDEX_HEADER, index);
        }
    }
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    mount.observe(method, response.status().as_u16(), started.elapsed());
    response
}

/// A read an HA standby serves itself from its copy of the services; `None`: it goes to the
/// active node. A client that hands over `X-Vault-Index` is answered here only once this node
/// has followed storage that far (waiting up to [`forward::INDEX_WAIT`]); otherwise the request
/// goes to the active node, or with `X-Vault-Inconsistent: fail` gets Vault's 412.
async fn standby_read(
    state: &HttpState,
    parts: &axum::http::request::Parts,
    peer: Option<SocketAddr>,
) -> Option<axum::response::Response> {
    if parts.method != Method::GET && parts.method.as_str() != "LIST" {
        return None;
    }
    let ha = state.core.ha()?;
    // Without a token the active node answers (its 403 is the same).
    let token = client_token(&parts.headers).ok()??;
    let wanted = wanted_index(&parts.headers)?;
    if let Some(wanted) = wanted {
        // Only a caller this standby knows may make it wait (a forged index costs nothing).
        if let Some(view) = ha.reads.view() {
            if !matches!(view.tokens.lookup(&token).await, Ok(Some(_))) {
                return None;
            }
        }
        if !ha.reads.wait_for(wanted, forward::INDEX_WAIT).await {
            let fail = parts.headers.get(forward::INCONSISTENT_HEADER).is_some_and(|value| value == "fail");
            let error = ApiError::new(412, "this standby has not caught up with the X-Vault-Index given yet");
            return fail.then(|| render(Err(error), ""));
        }
    }
    let (view, applied) = ha.reads.snapshot()?;
    if wanted.is_some_and(|wanted| applied < wanted) {
        // The copy is reopening: the active node answers.
        return None;
    }
    let started = Instant::now();
    let remote = client_address(&state.core, parts, peer).ok()?;
    let req = parse(state.max_request_size, &parts.method, &parts.uri, &parts.headers, Body::empty()).await.ok()?;
    let request_id = req.id.clone();
    let mount = {
        let resolved = view.mounts.resolve(&req.path);
        metrics::route_metrics(&req.path, resolved.as_ref().map(|(mount, _)| &mount.metrics))
    };
    let quotas = Arc::clone(&view);
    let mut quota_headers = Vec::new();
    let admit = |req: &Request| match quotas.quotas.admit(req, remote.map(|addr| addr.ip()), false) {
        Ok(mut admission) => {
            quota_headers = std::mem::take(&mut admission.headers);
            Ok(())
        }
        Err(rejection) => {
            quota_headers = rejection.headers;
            Err(rejection.error)
        }
    };
    let result = router::standby_read(&state.core, view, Request { remote_addr: remote, ..req }, admit).await.ok()?;
    let mut response = render(result, &request_id);
    for (name, value) in quota_headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    let method = metrics::method_label(parts.method.as_str());
    mount.observe(method, response.status().as_u16(), started.elapsed());
    Some(response)
}

/// The most a request without a token may carry: enough for any login, unseal, init with PGP
/// keys or unwrap, and no help to a client that wants to make the server buffer large bodies
/// without credentials.
pub const UNAUTHENTICATED_BODY_LIMIT: u64 = 1024 * 1024;
/// The body bytes all requests together may hold at once (their parsed JSON counts against
/// the same budget: it is charged at twice the body's size).
const BODY_MEMORY_BUDGET: u64 = 256 * 1024 * 1024;
/// How long a request waits for room in that budget before it is refused.
const BODY_MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn body_memory() -> &'static Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(tokio::sync::Semaphore::new((BODY_MEMORY_BUDGET / 1024) as usize)))
}

/// What a request may send as its body, decided before a byte of it is read.
#[derive(Debug)]
struct BodyAdmission {
    /// The most this request's body may hold (`None`: no limit, a negative `max_request_size`).
    limit: Option<u64>,
    /// Its share of [`BODY_MEMORY_BUDGET`], held until the answer is rendered.
    _memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Decides, before a byte of the body is read, how much of it the server will buffer, and
/// reserves the memory that takes. A request without a token this server knows (where it can
/// tell: an unsealed active node, or a standby with its copy of the token store) may send at
/// most [`UNAUTHENTICATED_BODY_LIMIT`]; a larger declared body is refused unread. The
/// reservation is the declared size (the limit for a chunked body), doubled for the parsed form.
async fn admit_body(state: &HttpState, parts: &axum::http::request::Parts) -> Result<BodyAdmission, ApiError> {
    if !matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH") {
        return Ok(BodyAdmission { limit: state.max_request_size, _memory: None });
    }
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // A body declared within the unauthenticated limit needs no token lookup here (the router
    // does it anyway): what follows only matters for larger or undeclared bodies.
    let small = declared.is_some_and(|len| len <= UNAUTHENTICATED_BODY_LIMIT);
    let authenticated = small
        || match client_token(&parts.headers)? {
            None => false,
            Some(token) => {
                let tokens = state.core.unsealed().ok().or_else(|| state.core.ha().and_then(|ha| ha.reads.view()));
                match tokens {
                    Some(unsealed) => unsealed.tokens.lookup(&token).await?.is_some(),
                    // Sealed, or a standby without a copy: the node that serves it checks.
                    None => true,
                }
            }
        };
    let limit = match (authenticated, state.max_request_size) {
        (true, limit) => limit,
        (false, limit) => Some(limit.map_or(UNAUTHENTICATED_BODY_LIMIT, |max| max.min(UNAUTHENTICATED_BODY_LIMIT))),
    };
    if let (Some(len), Some(max)) = (declared, limit) {
        if len > max {
            return Err(if authenticated || state.max_request_size.is_some_and(|listener| len > listener) {
                ApiError::new(413, "http: request body too large")
            } else {
                ApiError::new(
                    413,
                    format!(
                        "http: request body too large: a request without a valid token may carry at most {UNAUTHENTICATED_BODY_LIMIT} bytes"
                    ),
                )
            });
        }
    }
    let Some(max) = limit else { return Ok(BodyAdmission { limit, _memory: None }) };
    let kib = (declared.unwrap_or(max).min(max).saturating_mul(2) / 1024 + 1).min(BODY_MEMORY_BUDGET / 1024) as u32;
    let reserve = Arc::clone(body_memory()).acquire_many_owned(kib);
    match tokio::time::timeout(BODY_MEMORY_WAIT, reserve).await {
        Ok(Ok(permit)) => Ok(BodyAdmission { limit, _memory: Some(permit) }),
        _ => Err(ApiError::new(503, "the server is busy reading other request bodies; retry")),
    }
}

/// The highest revision among the request's `X-Vault-Index` values (Vault's clients may send
/// several); `Some(None)` when there is none, `None` when one is not this server's (the active
/// node decides what to make of it).
fn wanted_index(headers: &HeaderMap) -> Option<Option<i64>> {
    let mut wanted = None;
    for value in headers.get_all(forward::INDEX_HEADER) {
        let revision = value.to_str().ok().and_then(forward::decode_index)?;
        wanted = wanted.max(Some(revision));
    }
    Some(wanted)
}

/// Whether a standby answers this request itself, as Vault's do (`sys/health`, `sys/seal-status`,
/// `sys/leader`, `sys/unseal`, `sys/init`, `sys/seal`, its own `sys/metrics` when they need no
/// token, and paths it refuses anyway); everything else goes to the active node.
fn standby_serves(core: &Core, uri: &axum::http::Uri) -> bool {
    let Some(raw_path) = uri.path().strip_prefix("/v1/") else { return true };
    match normalize_path(raw_path) {
        Ok(path) => match path.trim_end_matches('/') {
            "sys/health" | "sys/seal-status" | "sys/leader" | "sys/unseal" | "sys/init" | "sys/seal" => true,
            "sys/metrics" => core.config.unauthenticated_metrics_access,
            _ => false,
        },
        Err(_) => true,
    }
}

/// The client's address: the TCP peer's, or for a request an HA standby forwarded, the address
/// the standby signed. A forwarding header that does not verify is refused: only a standby of
/// this cluster can make one.
fn client_address(
    core: &Core,
    parts: &axum::http::request::Parts,
    peer: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, ApiError> {
    let Some(value) = parts.headers.get(FORWARDED_FOR) else { return Ok(peer) };
    let refused = |why: &str| ApiError::bad_request(format!("{}: {why}", arcanum_core::ha::FORWARDED_HEADER));
    let Some(ha) = core.ha() else { return Err(refused("this server is not part of an HA cluster")) };
    let value = value.to_str().map_err(|_| refused("malformed"))?;
    let target = parts.uri.path_and_query().map_or(parts.uri.path(), |pq| pq.as_str());
    let client = ha.verify_forwarded(value, parts.method.as_str(), target).map_err(refused)?;
    Ok(client.parse().ok())
}

async fn parse(
    body_limit: Option<u64>,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Request, ApiError> {
    let Some(raw_path) = uri.path().strip_prefix("/v1/") else {
        return Err(ApiError::new(404, format!("no handler for route {:?}", uri.path())));
    };
    let path = normalize_path(raw_path)?;
    let query = parse_query(uri.query().unwrap_or(""))?;
    // Go's strconv.ParseBool, as Vault reads it: hvac's generic `list()` sends `list=True`; anything
    // else is a 400 rather than a silent read.
    let wants_list = match query.get("list").and_then(Value::as_str) {
        None => false,
        Some("1" | "t" | "T" | "true" | "True" | "TRUE") => true,
        Some("0" | "f" | "F" | "false" | "False" | "FALSE") => false,
        Some(other) => return Err(ApiError::bad_request(format!("invalid value {other:?} for the list parameter"))),
    };
    let operation = match method.as_str() {
        "GET" if wants_list => Operation::List,
        "GET" => Operation::Read,
        "LIST" => Operation::List,
        "PUT" | "POST" => Operation::Update,
        "PATCH" => Operation::Patch,
        "DELETE" => Operation::Delete,
        "HEAD" => Operation::Header,
        _ => return Err(ApiError::new(405, "unsupported operation")),
    };
    if operation == Operation::Patch {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/merge-patch+json") {
            return Err(ApiError::new(415, "PATCH requires Content-Type application/merge-patch+json"));
        }
    }
    let data = match operation {
        Operation::Update | Operation::Patch => parse_body(body_limit, headers, body).await?,
        _ => {
            let mut query = query;
            if operation == Operation::List {
                query.remove("list");
            }
            if path == "sys/metrics" && !query.contains_key("format") && accepts_prometheus(headers) {
                query.insert("format".into(), Value::String("prometheus".into()));
            }
            query
        }
    };
    let path = if operation == Operation::List && !path.is_empty() && !path.ends_with('/') {
        format!("{path}/")
    } else {
        path
    };
    Ok(Request {
        id: uuid::Uuid::new_v4().to_string(),
        operation,
        path,
        data,
        client_token: client_token(headers)?,
        remote_addr: None,
        wrap_ttl: wrap_ttl(headers)?,
        wrap_jwt: wrap_format_is_jwt(headers)?,
    })
}

/// `X-Vault-Wrap-Format`: `token` (the default) or `jwt`.
fn wrap_format_is_jwt(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(format) = headers.get(X_VAULT_WRAP_FORMAT) else { return Ok(false) };
    match format.to_str().map(str::trim) {
        Ok("" | "token") => Ok(false),
        Ok("jwt") => Ok(true),
        _ => Err(ApiError::bad_request("invalid X-Vault-Wrap-Format header: expected \"token\" or \"jwt\"")),
    }
}

/// `X-Vault-Wrap-TTL` (seconds or a duration such as `5m`; 0 means no wrapping).
fn wrap_ttl(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(X_VAULT_WRAP_TTL) else { return Ok(None) };
    let refused = |why: &str| ApiError::bad_request(format!("error parsing X-Vault-Wrap-TTL header: {why}"));
    let text = value.to_str().map_err(|_| refused("not valid text"))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err(refused("the TTL must not be negative"));
    }
    let seconds =
        arcanum_config::duration::parse_duration_value(&Value::String(text.to_owned())).map_err(|err| refused(&err))?;
    Ok(Some(seconds.as_secs()).filter(|&ttl| ttl > 0))
}

fn parse_query(query: &str) -> Result<Map<String, Value>, ApiError> {
    let mut data = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        let (Some(key), Some(value)) = (decode(key), decode(value)) else {
            return Err(ApiError::bad_request("invalid query string: bad percent-encoding"));
        };
        data.insert(key, Value::String(value));
    }
    Ok(data)
}

async fn parse_body(max: Option<u64>, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    let too_large = || ApiError::new(413, "http: request body too large");
    let limit = max.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| max.is_some_and(|max| len > max)) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if std::error::Error::source(&err).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::bad_request("failed to read request body")
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad_request("failed to parse JSON input: the body must be a JSON object")),
        Err(err) => Err(ApiError::bad_request(format!("failed to parse JSON input: {err}"))),
    }
}

/// Prometheus asks for its formats in the Accept header (Vault honours that as well).
fn accepts_prometheus(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text") || accept.contains("prometheus/telemetry"))
}

/// The token from `X-Vault-Token`, else `Authorization: Bearer`. A token header that is present
/// but malformed (not printable ASCII, or with spaces inside) is refused rather than read as no
/// token, so a client with a broken token gets told so instead of an anonymous answer.
fn client_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let checked = |raw: &[u8], what: &str| -> Result<Option<String>, ApiError> {
        let token = raw.trim_ascii();
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(ApiError::bad_request(format!(
                "malformed {what} header: a token is printable ASCII without spaces"
            )));
        }
        Ok(Some(String::from_utf8_lossy(token).into_owned()).filter(|t| !t.is_empty()))
    };
    if let Some(value) = headers.get(X_VAULT_TOKEN) {
        return checked(value.as_bytes(), "X-Vault-Token");
    }
    for value in headers.get_all(header::AUTHORIZATION) {
        if let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") {
            return checked(token, "Authorization");
        }
    }
    Ok(None)
}

/// Renders an answer; `request_id` is the one the audit entries carry.
fn render(result: Result<Response, ApiError>, request_id: &str) -> axum::response::Response {
    let (status, body) = match result {
        Ok(Response::Raw { status, body }) => (status, Some(body)),
        Ok(Response::Status(status)) => (status, None),
        Ok(Response::NoContent) => (204, None),
        Ok(Response::Text { status, content_type, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        Ok(Response::Redirect { location }) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            match HeaderValue::from_str(&location) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        Ok(Response::Logical(logical)) => {
            let status = if logical.status == 0 { 200 } else { logical.status };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(status, logical.envelope_json(request_id));
        }
        Ok(Response::Login(_)) => {
            // The router always turns a login into a token before it gets here.
            tracing::error!("a login response reached the HTTP layer unconverted");
            (500, Some(json!({ "errors": ["internal error"] })))
        }
        Err(err) => (err.status, Some(json!({ "errors": err.errors }))),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(body) => json_response(status, body.to_string()),
        None => with_json_headers(status.into_response()),
    }
}

fn json_response(status: StatusCode, body: String) -> axum::response::Response {
    with_json_headers((status, body).into_response())
}

fn with_json_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("list=true&a=b%2Fc&x").unwrap();
        assert_eq!(q["list"], "true");
        assert_eq!(q["a"], "b/c");
        assert_eq!(q["x"], "");
    }
}
