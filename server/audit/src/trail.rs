//! [`Trail`]: one request's passage through the audit broker.
//!
//! The router opens a trail right after the seal gate, calls [`Trail::request`] at the one
//! point where the request is about to be acted on (after the token and ACL checks, or
//! before a login or an optional-token path is served), and hands its final result to
//! [`Trail::finish`], which records the response. A request that changes nothing whatever its
//! outcome (a plain read) calls [`Trail::request_with_answer`] instead: its entry is appended
//! with the response's, in one write, still before the answer leaves. Requests refused before
//! that point (a bad token, a storage error) are recorded by `finish` too, with their error.
//! When no device can record an entry the answer becomes Vault's 500 `internal error`: before
//! the handler, the handler never runs; after it, the outcome is withheld from the client.
//!
//! With no device enabled a trail costs one snapshot of the device list and nothing else.

use std::borrow::Cow;
use std::sync::Arc;

use arcanum_contract::mount::MountEntry;
use arcanum_contract::token::TokenView;

use super::entry::{self, AuthRecord, Prepared, RequestRecord};
use super::{AuditBroker, Device};
use arcanum_contract::logical::{ApiError, Operation, Request, Response};

/// The caller, once the token and the ACL check have been evaluated.
#[derive(Debug, Clone, Copy)]
pub struct Authorized<'t> {
    pub token: TokenView<'t>,
    /// The ACL decision; a denied request is recorded before it is refused.
    pub allowed: bool,
    /// The existence check found nothing: Vault's operation is `create`.
    pub create: bool,
    /// `token` is the request's own client token, not the one a wrapping JWT stands for.
    pub presented: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing recorded yet.
    Open,
    /// The request entry reached at least one device.
    Recorded,
    /// No device took the request entry; the request was refused with 500.
    Refused,
    /// No device took it, but the request enables a new device that may (see
    /// `AuditBroker::enable`).
    Deferred,
    /// Built but not written: a request that changes nothing, whose entry goes out with the
    /// response's (see [`Trail::request_with_answer`]).
    WithAnswer,
}

/// The most request data recorded for a request refused before it was authenticated.
pub const REFUSED_DATA_LIMIT: usize = 64 * 1024;

/// A request refused before it was acted on (a bad token, a storage error) keeps its data in
/// the audit entries only up to [`REFUSED_DATA_LIMIT`] bytes of JSON: a client without
/// credentials must not be able to grow the audit log by the size of its bodies. The entries
/// still say what was left out.
fn bound_refused_data(record: &mut RequestRecord) {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut size = Counter(0);
    if serde_json::to_writer(&mut size, &record.data).is_err() || size.0 <= REFUSED_DATA_LIMIT {
        return;
    }
    record.data = serde_json::Map::new();
    let note = format!("request data of {} bytes not recorded: the request was refused before it was acted on", size.0);
    record.error = Some(match record.error.take() {
        Some(error) => format!("{error}; {note}"),
        None => note,
    });
}

/// See the module documentation.
#[derive(Debug)]
pub struct Trail<'a> {
    broker: &'a AuditBroker,
    devices: Arc<Vec<Arc<Device>>>,
    /// `None` when no device is enabled: nothing to do.
    record: Option<RequestRecord>,
    /// The redacted `auth` and `request` blocks for each of `devices`, built with the request
    /// entry and reused by the response entry.
    prepared: Vec<Prepared>,
    operation: Operation,
    state: State,
}

impl<'a> Trail<'a> {
    /// Opens the trail of `req`; `mount` tells which mount the path falls under, and is asked
    /// only when a device is enabled.
    pub fn begin(broker: &'a AuditBroker, req: &Request, mount: impl FnOnce() -> Option<Arc<MountEntry>>) -> Trail<'a> {
        let devices = broker.snapshot();
        let record = (!devices.is_empty()).then(|| RequestRecord {
            id: req.id.clone(),
            operation: entry::operation_name(req.operation, false),
            path: req.path.clone(),
            data: req.data.clone(),
            client_token: req.client_token.clone(),
            remote: req.remote_addr,
            mount: mount(),
            auth: None,
            error: None,
            wrap_ttl: req.wrap_ttl,
        });
        Trail { broker, devices, record, prepared: Vec::new(), operation: req.operation, state: State::Open }
    }

    /// Records the request entry; `Err` (500) means no device took it and nothing may be done.
    pub async fn request(&mut self, authorized: Option<Authorized<'_>>) -> Result<(), ApiError> {
        self.note_caller(authorized);
        self.record_request().await
    }

    /// For a request that changes nothing whatever its outcome (a plain read: no lease, no
    /// token use to count, no wrapping): its entry is built now and written by
    /// [`Trail::finish`] together with the response's, as two lines of one append, before the
    /// answer leaves. It is on record before it is answered, and since it changes nothing,
    /// nothing happens before that which the record would have had to precede; one append per
    /// request instead of two. When no device takes the pair, the answer is withheld (500).
    pub fn request_with_answer(&mut self, authorized: Authorized<'_>) {
        self.note_caller(Some(authorized));
        let Some(record) = self.record.as_ref() else { return };
        self.prepared = self.devices.iter().map(|device| Prepared::of(&device.redactor, record)).collect();
        self.state = State::WithAnswer;
    }

    fn note_caller(&mut self, authorized: Option<Authorized<'_>>) {
        let Some(record) = self.record.as_mut() else { return };
        if let Some(Authorized { token, allowed, create, presented }) = authorized {
            record.operation = entry::operation_name(self.operation, create);
            record.auth = Some(AuthRecord {
                accessor: token.accessor.to_owned(),
                display_name: token.display_name.to_owned(),
                policies: token.policies.to_vec(),
                metadata: token.meta.clone(),
                entity_id: token.entity_id.to_owned(),
                token_ttl: token.creation_ttl,
                issue_time: token.creation_time,
                allowed,
                token_name: presented.then(|| token.id_hash.to_owned()),
            });
            if !allowed {
                record.error = Some("permission denied".into());
            }
        }
    }

    async fn record_request(&mut self) -> Result<(), ApiError> {
        let Some(record) = self.record.as_ref() else { return Ok(()) };
        self.prepared = self.devices.iter().map(|device| Prepared::of(&device.redactor, record)).collect();
        let (devices, prepared) = (&self.devices, &self.prepared);
        let recorded = self
            .broker
            .log(devices, 1, |device| entry::request_entry(record, &prepared_for(devices, prepared, device, record)))
            .await;
        if recorded > 0 {
            self.state = State::Recorded;
            return Ok(());
        }
        if enables_a_device(record) && self.state == State::Open && record.error.is_none() {
            self.broker.defer(record.clone());
            self.state = State::Deferred;
            return Ok(());
        }
        self.state = State::Refused;
        tracing::error!(path = %record.path, "no audit device recorded the request; refusing it");
        Err(ApiError::internal())
    }

    /// Records the response entry and returns `result`, or 500 when it cannot be recorded.
    pub async fn finish(mut self, mut result: Result<Response, ApiError>) -> Result<Response, ApiError> {
        if self.record.is_none() {
            return result;
        }
        // The response entry HMACs every leaf of `data`, stored fields included.
        if let Ok(Response::Logical(logical)) = &mut result {
            logical.materialise();
        }
        match self.state {
            State::Refused => return result,
            State::Open => {
                if result.is_ok() {
                    // A path that skipped `request`: a router bug, but the entry is still written.
                    tracing::error!("a request was served before its audit entry was recorded");
                }
                if let (Some(record), Err(err)) = (self.record.as_mut(), &result) {
                    record.error = Some(err.errors.join("; "));
                    bound_refused_data(record);
                }
                // The handler has not run, so a deferral cannot be consumed: refuse.
                if self.record_request().await.is_err() || self.state != State::Recorded {
                    if let Some(record) = &self.record {
                        self.broker.take_deferred(&record.id);
                    }
                    return Err(ApiError::internal());
                }
            }
            State::Deferred => {
                let id = self.record.as_ref().map(|r| r.id.clone()).unwrap_or_default();
                match self.broker.take_deferred(&id) {
                    Some(device) => {
                        let mut devices: Vec<Arc<Device>> = self.devices.iter().cloned().collect();
                        devices.push(device);
                        self.devices = Arc::new(devices);
                    }
                    None => {
                        tracing::error!("no audit device recorded an audit-device enable request; refusing it");
                        return Err(ApiError::internal());
                    }
                }
            }
            State::Recorded | State::WithAnswer => {}
        }
        let Some(record) = self.record.as_ref() else { return result };
        let (devices, prepared) = (&self.devices, &self.prepared);
        let with_request = self.state == State::WithAnswer;
        let recorded = self
            .broker
            .log(devices, if with_request { 2 } else { 1 }, |device| {
                let blocks = prepared_for(devices, prepared, device, record);
                if !with_request {
                    return entry::response_entry(&device.redactor, record, &blocks, &result);
                }
                // The request's entry first, so that its time is not after the response's.
                // Compact JSON holds no raw newline: the device seals each line on its own.
                let request = entry::request_entry(record, &blocks);
                let response = entry::response_entry(&device.redactor, record, &blocks, &result);
                let mut both = String::with_capacity(request.len() + 1 + response.len());
                both.push_str(&request);
                both.push('\n');
                both.push_str(&response);
                both
            })
            .await;
        if recorded == 0 {
            tracing::error!(path = %record.path, "no audit device recorded the response; withholding it");
            return Err(ApiError::internal());
        }
        result
    }
}

/// `device`'s blocks in `prepared` (which follows `devices`), or fresh ones for a device that
/// was added after the request entry.
fn prepared_for<'h>(
    devices: &[Arc<Device>],
    prepared: &'h [Prepared],
    device: &Device,
    record: &RequestRecord,
) -> Cow<'h, Prepared> {
    match devices.iter().position(|d| std::ptr::eq(&**d, device)).and_then(|i| prepared.get(i)) {
        Some(cached) => Cow::Borrowed(cached),
        None => Cow::Owned(Prepared::of(&device.redactor, record)),
    }
}

/// `PUT|POST sys/audit/:path`: the one request allowed to be recorded by the device it adds.
fn enables_a_device(record: &RequestRecord) -> bool {
    matches!(record.operation, "update" | "create")
        && record.path.strip_prefix("sys/audit/").is_some_and(|rest| !rest.trim_matches('/').is_empty())
}
