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

/// A standby's answer to a request the active node must serve.
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
    if uri.path().trim_end_matches('/') == "/v1/sys/seal" {
        return failed(ApiError::bad_request(
            "this node is a standby: sealing a standby is not supported; restart it (it comes up sealed) or seal the active node",
        ));
    }
    if headers.contains_key(FORWARDED_HEADER) {
        // The node that forwarded this took us for the active one: leadership is changing.
        return failed(ApiError::new(503, "this node is a standby too (the active node is changing); retry"));
    }
    let Some(ha) = core.ha() else { return failed(ApiError::internal()) };
    let leader = match ha.role() {
        Role::Standby { leader: Some(leader) } if leader.node_id != ha.config.node_id => leader,
        _ => return failed(ApiError::new(503, "this node is a standby and no active node is known yet; retry")),
    };
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let location = format!("{}{target}", leader.api_addr.trim_end_matches('/'));
    let Some(client) = &forwarder.client else {
        metrics.ha_forwarded_requests.with_label_values(&["redirected"]).inc();
        return Outcome::Redirect(location);
    };
    let limit = max_request_size.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return failed(ApiError::new(413, "http: request body too large")),
    };
    let client_addr = remote.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    let Some(signature) = ha.sign_forwarded(&client_addr, method.as_str(), target) else {
        return failed(ApiError::sealed());
    };
    let mut outgoing = HeaderMap::new();
    for (name, value) in headers {
        if !hop_by_hop(name) && name.as_str() != FORWARDED_HEADER {
            outgoing.append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&signature) {
        outgoing.insert(HeaderName::from_static(FORWARDED_HEADER), value);
    }
    let sent = client.request(method, &location).headers(outgoing).body(body).send().await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(err) if err.is_connect() => {
            // Nothing reached the active node: the client may safely go there itself.
            tracing::warn!(active = %leader.api_addr, error = %err, "cannot reach the active node; redirecting the client");
            metrics.ha_forwarded_requests.with_label_values(&["redirected"]).inc();
            return Outcome::Redirect(location);
        }
        Err(err) => {
            tracing::warn!(active = %leader.api_addr, error = %err, "forwarding to the active node failed");
            return failed(ApiError::new(
                502,
                "forwarding to the active node failed after the request was sent; whether it was applied is unknown",
            ));
        }
    };
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
            tracing::warn!(active = %leader.api_addr, error = %err, "the active node's answer broke off");
            return failed(ApiError::new(
                502,
                "the active node's answer broke off; whether the request was applied is unknown",
            ));
        }
    };
    metrics.ha_forwarded_requests.with_label_values(&["forwarded"]).inc();
    let mut response = (status, body).into_response();
    *response.headers_mut() = returned;
    Outcome::Answered(response)
}
