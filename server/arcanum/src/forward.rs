//! Request forwarding: an HA standby passes the requests only the active node can serve to it and
//! hands the client the active node's answer unchanged (status, headers, body).
//!
//! The hop is plain HTTP(S) to the active node's advertised `api_addr`. The standby adds
//! [`FORWARDED_HEADER`], which carries the client's address signed with a key every unsealed
//! node derives from the root key, so the active node audits, rate-limits and CIDR-checks the
//! real client and a client cannot claim another address. When the request cannot reach the
//! active node at all (nothing was sent), the client gets Vault's 307 to `api_addr`; when it
//! failed after it was sent, a 502 that says the outcome is unknown, never a guess.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::IntoResponse;

use arcanum_contract::logical::ApiError;
use arcanum_core::ha::{Role, FORWARDED_HEADER};
use arcanum_core::Core;

/// How long a standby holds a request while the active node changes.
pub const HOLD: Duration = Duration::from_secs(10);
/// How soon a request refused by the node that holds the lock is sent there again: that node is
/// still opening its services, and becoming active changes nothing in the lock to wake on.
const TAKING_OVER_RETRY: Duration = Duration::from_millis(50);
/// Marks a standby's refusal of a request another standby forwarded to it: nothing was
/// applied, and the forwarding node may send it on once it knows the new active node.
pub const STANDBY_MARKER: &str = "x-arcanum-standby";

/// Vault's header asking a standby for its 307 rather than forwarding.
const NO_FORWARDING: &str = "x-vault-no-request-forwarding";

/// Vault's `X-Vault-Index`: on every answer of the active node, the storage revision of its last
/// write; a client that hands it to a standby reads what that write wrote. Opaque to clients.
pub const INDEX_HEADER: &str = "x-vault-index";
/// Vault's `X-Vault-Inconsistent`: `fail` asks for a 412 rather than a forwarded request when a
/// standby has not caught up with the index given.
pub const INCONSISTENT_HEADER: &str = "x-vault-inconsistent";
/// How long a standby waits to catch up with an index before it lets the active node answer.
pub const INDEX_WAIT: Duration = Duration::from_secs(2);
const INDEX_PREFIX: &str = "arcanum-etcd-v1:";

/// The `X-Vault-Index` value for a storage revision.
pub fn encode_index(revision: i64) -> String {
    format!("{INDEX_PREFIX}{revision}")
}

/// The storage revision in an `X-Vault-Index` value this server made.
pub fn decode_index(value: &str) -> Option<i64> {
    value.strip_prefix(INDEX_PREFIX)?.parse().ok()
}

/// How long a forwarded request may take, end to end.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How a standby passes requests on.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// `None`: `disable_clustering` is set, and standbys answer with Vault's 307 instead.
    client: Option<reqwest::Client>,
}

impl Forwarder {
    /// A forwarder that trusts the public roots and every certificate in `extra_roots_pem` (the
    /// nodes' own listener certificates: in a cluster they share a CA or a certificate).
    pub fn new(extra_roots_pem: &[Vec<u8>]) -> anyhow::Result<Forwarder> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64);
        for pem in extra_roots_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Forwarder { client: Some(builder.build()?) })
    }

    /// Standbys redirect (`disable_clustering`).
    pub fn redirect_only() -> Forwarder {
        Forwarder { client: None }
    }
}

/// What became of a request a standby could not serve itself.
#[derive(Debug)]
pub enum Outcome {
    /// The active node's answer, to hand to the client unchanged.
    Answered(axum::response::Response),
    /// Vault's 307 to this location on the active node.
    Redirect(String),
    /// Neither: the client gets this error.
    Refused(ApiError),
    /// A forwarded request reached a standby: 503 with [`STANDBY_MARKER`].
    NotActive,
    /// This node became active while it held the request: serve it here (the body, read).
    ServeHere(axum::body::Bytes),
}

/// Headers that belong to one hop and are not passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// A standby's answer to a request the active node must serve. While the active node changes
/// (none known, the one known refuses as a standby, or it cannot be reached: in every case
/// nothing was applied) the request is held for up to [`HOLD`] and sent to the next one.
#[allow(clippy::too_many_arguments)] // the parts of one HTTP request, taken apart by axum
pub async fn to_the_active(
    forwarder: &Forwarder,
    core: &Core,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    remote: Option<SocketAddr>,
    max_request_size: Option<u64>,
) -> Outcome {
    let metrics = arcanum_metrics::global();
    let failed = |error: ApiError| {
        metrics.ha_forwarded_requests.with_label_values(&["failed"]).inc();
        Outcome::Refused(error)
    };
    if headers.contains_key(FORWARDED_HEADER) {
        // The node that forwarded this took us for the active one: leadership is changing.
        metrics.ha_forwarded_requests.with_label_values(&["failed"]).inc();
        return Outcome::NotActive;
    }
    let Some(ha) = core.ha() else { return failed(ApiError::internal()) };
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    // Vault's opt-out: the client wants the 307 and goes to the active node itself.
    let no_forwarding = headers.get(NO_FORWARDING).is_some_and(|value| !value.is_empty());
    let client = forwarder.client.as_ref().filter(|_| !no_forwarding);
    let Some(client) = client else {
        return match known_leader(core) {
            Some(leader) => {
                metrics.ha_forwarded_requests.with_label_values(&["redirected"]).inc();
                Outcome::Redirect(format!("{}{target}", leader.api_addr.trim_end_matches('/')))
            }
            None => failed(ApiError::new(503, "this node is a standby and no active node is known yet; retry")),
        };
    };
    let limit = max_request_size.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return failed(ApiError::new(413, "http: request body too large")),
    };
    let client_addr = remote.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    let mut outgoing = HeaderMap::new();
    for (name, value) in headers {
        if !hop_by_hop(name) {
            outgoing.append(name.clone(), value.clone());
        }
    }
    let deadline = tokio::time::Instant::now() + HOLD;
    let mut leadership = ha.watch_leadership();
    let mut unreachable = None;
    loop {
        let mut taking_over = false;
        leadership.borrow_and_update();
        let leader = known_leader(core);
        if let Some(leader) = &leader {
            let location = format!("{}{target}", leader.api_addr.trim_end_matches('/'));
            let Some(signature) = ha.sign_forwarded(&client_addr, method.as_str(), target) else {
                return failed(ApiError::sealed());
            };
            match HeaderValue::from_str(&signature) {
                Ok(value) => outgoing.insert(HeaderName::from_static(FORWARDED_HEADER), value),
                Err(_) => return failed(ApiError::internal()),
            };
            let sent =
                client.request(method.clone(), &location).headers(outgoing.clone()).body(body.clone()).send().await;
            match sent {
                Ok(answer) if answer.status().as_u16() == 503 && answer.headers().contains_key(STANDBY_MARKER) => {
                    tracing::debug!(node = %leader.api_addr, "the node taken for the active one is a standby; holding the request");
                    taking_over = true;
                }
                Ok(answer) => return answered(answer, &leader.api_addr, ha).await,
                Err(err) if err.is_connect() => {
                    tracing::debug!(active = %leader.api_addr, error = %err, "cannot reach the active node; holding the request");
                    unreachable = Some(location);
                }
                Err(err) => {
                    tracing::warn!(active = %leader.api_addr, error = %err, "forwarding to the active node failed");
                    return failed(ApiError::new(
                        502,
                        "forwarding to the active node failed after the request was sent; whether it was applied is unknown",
                    ));
                }
            }
        }
        // Nothing was applied: wait for the leadership to change (or, while the lock holder is
        // still taking over, a moment), then try the active node again.
        let next_try = async {
            if taking_over {
                tokio::select! {
                    _ = leadership.changed() => {}
                    () = tokio::time::sleep(TAKING_OVER_RETRY) => {}
                }
            } else {
                let _ = leadership.changed().await;
            }
        };
        if tokio::time::timeout_at(deadline, next_try).await.is_err() {
            if let Some(location) = unreachable {
                // The client may reach what this node cannot (api_addr behind a load balancer).
                metrics.ha_forwarded_requests.with_label_values(&["redirected"]).inc();
                return Outcome::Redirect(location);
            }
            return failed(ApiError::new(503, "this node is a standby and no active node took over in time; retry"));
        }
        if core.ha().is_some_and(|ha| ha.is_active()) {
            // This node took over while the request waited: the caller serves it here.
            return Outcome::ServeHere(body);
        }
    }
}

/// The leader this standby knows, unless it is itself (a stale view).
fn known_leader(core: &Core) -> Option<arcanum_core::ha::Advertisement> {
    let ha = core.ha()?;
    match ha.role() {
        Role::Standby { leader: Some(leader) } if leader.node_id != ha.config.node_id => Some(leader),
        _ => None,
    }
}

/// The active node's answer, as the client gets it. A standby that serves reads itself hands it
/// over only once it has followed storage up to the answer's index (bounded by [`INDEX_WAIT`]),
/// so the client's next read here sees what it just wrote.
async fn answered(answer: reqwest::Response, active: &str, ha: &arcanum_core::ha::Ha) -> Outcome {
    let metrics = arcanum_metrics::global();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut returned = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            returned.append(name.clone(), value.clone());
        }
    }
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(active, error = %err, "the active node's answer broke off");
            metrics.ha_forwarded_requests.with_label_values(&["failed"]).inc();
            return Outcome::Refused(ApiError::new(
                502,
                "the active node's answer broke off; whether the request was applied is unknown",
            ));
        }
    };
    metrics.ha_forwarded_requests.with_label_values(&["forwarded"]).inc();
    let index = returned.get(INDEX_HEADER).and_then(|value| value.to_str().ok()).and_then(decode_index);
    if let Some(index) = index.filter(|_| ha.reads.view().is_some()) {
        if !ha.reads.wait_for(index, INDEX_WAIT).await {
            tracing::debug!(index, "answering a forwarded request before this standby caught up with it");
        }
    }
    let mut response = (status, body).into_response();
    *response.headers_mut() = returned;
    Outcome::Answered(response)
}
