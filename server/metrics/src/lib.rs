//! Prometheus metrics: the process-wide registry, the instruments every layer records into,
//! and their exposition in Prometheus text or Vault's go-metrics JSON shape.
//!
//! A leaf facade: any crate of the server may record here, and this crate knows none of
//! them. Counters and histograms are updated where things happen. Gauges that describe the
//! core's state (seal state, live tokens, leases per mount) are set by whoever serves
//! `sys/metrics`, just before it asks for the [`exposition`]. No label ever carries a token,
//! a secret or a request path: `mount` is a mount's route, `device` an audit device's path,
//! and methods and operations come from fixed sets.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use arcanum_storage::{Backend, Op, StorageError};
use prometheus::proto::MetricType;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde_json::{json, Map, Value};

/// Request latencies here are mostly well under a millisecond; Prometheus' default buckets
/// start at 5 ms and would put nearly everything in the first one.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Every instrument Arcanum exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub core_initialized: IntGauge,
    pub core_unsealed: IntGauge,
    pub core_unseal_progress: IntGauge,
    pub core_unseal_threshold: IntGauge,
    pub token_count: IntGauge,
    pub leases: IntGaugeVec,
    pub revocations_pending: IntGauge,
    pub revocations_irrevocable: IntGauge,
    pub revocation_failures: IntCounter,
    pub revocations: IntCounter,
    pub logins: IntCounterVec,
    pub login_failures: IntCounterVec,
    pub audit_writes: IntCounterVec,
    pub audit_failures: IntCounterVec,
    pub barrier_encryptions: IntCounterVec,
    pub storage_operation_duration: HistogramVec,
    pub quota_rejections: IntCounterVec,
    pub ha_active: IntGauge,
    pub ha_leadership_changes: IntCounter,
    pub ha_takeover_duration: Histogram,
    pub ha_forwarded_requests: IntCounterVec,
    pub ha_standby_reads: IntCounter,
    pub connections_refused: IntCounter,
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Registers a new metric with `registry` and returns it; the definitions below are fixed, so
/// neither step can fail at run time.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric definition");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    registered(registry, HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels))
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            http_requests: counter_vec(
                &r,
                "arcanum_http_requests_total",
                "HTTP requests answered, by method, mount and status class.",
                &["method", "mount", "status_class"],
            ),
            http_request_duration: histogram_vec(
                &r,
                "arcanum_http_request_duration_seconds",
                "Time from a parsed request to its rendered answer, by method and mount.",
                &["method", "mount"],
            ),
            core_initialized: gauge(&r, "arcanum_core_initialized", "1 when the server has been initialised."),
            core_unsealed: gauge(&r, "arcanum_core_unsealed", "1 when the server is unsealed, 0 when sealed."),
            core_unseal_progress: gauge(&r, "arcanum_core_unseal_progress", "Unseal key shares given so far."),
            core_unseal_threshold: gauge(&r, "arcanum_core_unseal_threshold", "Unseal key shares needed."),
            token_count: gauge(&r, "arcanum_token_count", "Tokens in the token store (counted at most every 15 s)."),
            leases: gauge_vec(
                &r,
                "arcanum_expire_leases",
                "Stored leases by mount (counted at most every 15 s).",
                &["mount"],
            ),
            revocations_pending: gauge(
                &r,
                "arcanum_expire_revocations_pending",
                "Leases whose last revocation attempt failed and that wait for a retry (not yet irrevocable).",
            ),
            revocations_irrevocable: gauge(
                &r,
                "arcanum_expire_revocations_irrevocable",
                "Leases flagged irrevocable after too many failed attempts (still retried).",
            ),
            revocation_failures: counter(&r, "arcanum_expire_revocation_failures_total", "Failed revocation attempts."),
            revocations: counter(&r, "arcanum_expire_revocations_total", "Leases revoked."),
            logins: counter_vec(
                &r,
                "arcanum_auth_logins_total",
                "Successful logins, by auth method type and mount.",
                &["auth_method", "mount"],
            ),
            login_failures: counter_vec(
                &r,
                "arcanum_auth_login_failures_total",
                "Refused logins, by auth method type and mount.",
                &["auth_method", "mount"],
            ),
            audit_writes: counter_vec(
                &r,
                "arcanum_audit_writes_total",
                "Audit entries recorded, by device.",
                &["device"],
            ),
            audit_failures: counter_vec(
                &r,
                "arcanum_audit_failures_total",
                "Audit entries a device failed to record (error or timeout), by device.",
                &["device"],
            ),
            barrier_encryptions: counter_vec(
                &r,
                "arcanum_barrier_encryptions_total",
                "Barrier encryptions since start, by key term.",
                &["term"],
            ),
            storage_operation_duration: histogram_vec(
                &r,
                "arcanum_storage_operation_duration_seconds",
                "Physical storage operation latency, by operation.",
                &["operation"],
            ),
            quota_rejections: counter_vec(
                &r,
                "arcanum_quota_rejections_total",
                "Requests refused by a quota, by quota type and name.",
                &["quota_type", "name"],
            ),
            ha_active: gauge(&r, "arcanum_ha_active", "1 when this node is the active node of an HA cluster, else 0."),
            ha_leadership_changes: counter(
                &r,
                "arcanum_ha_leadership_changes_total",
                "Times this node took over as the active node.",
            ),
            ha_takeover_duration: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "arcanum_ha_takeover_duration_seconds",
                        "Time from taking the HA lock to serving as active (loading every service).",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            ha_forwarded_requests: counter_vec(
                &r,
                "arcanum_ha_forwarded_requests_total",
                "Requests a standby sent on to the active node, by outcome (forwarded, redirected, failed).",
                &["outcome"],
            ),
            connections_refused: counter(
                &r,
                "arcanum_connections_refused_total",
                "New connections closed at once because a listener held max_connections.",
            ),
            ha_standby_reads: counter(
                &r,
                "arcanum_ha_standby_reads_total",
                "Reads a standby served itself from its copy of the services instead of forwarding them.",
            ),
            registry: r,
        }
    }
}

/// The `method` label's values, in [`method_index`]'s order.
const METHODS: [&str; 8] = ["GET", "PUT", "POST", "DELETE", "LIST", "HEAD", "PATCH", "OTHER"];
/// The `status` label's values, in [`status_class`]'s order.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &str) -> usize {
    match method {
        "GET" => 0,
        "PUT" => 1,
        "POST" => 2,
        "DELETE" => 3,
        "LIST" => 4,
        "HEAD" => 5,
        "PATCH" => 6,
        _ => 7,
    }
}

fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The request series of one `mount` label in the process-wide metrics, each looked up once,
/// on its first request, and kept: a lookup by label values hashes the labels and takes the
/// vector's lock, on every request. Series appear only once used, as they would without it.
#[derive(Debug)]
pub struct RouteMetrics {
    mount: String,
    /// By `method_index * STATUS_CLASSES.len() + status_class`.
    requests: [OnceLock<IntCounter>; METHODS.len() * STATUS_CLASSES.len()],
    /// By `method_index`.
    durations: [OnceLock<Histogram>; METHODS.len()],
}

impl RouteMetrics {
    pub fn new(mount: impl Into<String>) -> RouteMetrics {
        RouteMetrics {
            mount: mount.into(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The `mount` label.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Records one answered HTTP request in [`global`].
    pub fn observe(&self, method: &str, status: u16, elapsed: Duration) {
        let (method, class) = (method_index(method), status_class(status));
        let metrics = global();
        self.requests[method * STATUS_CLASSES.len() + class]
            .get_or_init(|| {
                metrics.http_requests.with_label_values(&[METHODS[method], &self.mount, STATUS_CLASSES[class]])
            })
            .inc();
        self.durations[method]
            .get_or_init(|| metrics.http_request_duration.with_label_values(&[METHODS[method], &self.mount]))
            .observe(elapsed.as_secs_f64());
    }
}

static SYS_ROUTE: LazyLock<Arc<RouteMetrics>> = LazyLock::new(|| Arc::new(RouteMetrics::new("sys/")));
static TOKEN_ROUTE: LazyLock<Arc<RouteMetrics>> = LazyLock::new(|| Arc::new(RouteMetrics::new("auth/token/")));
static UNMOUNTED_ROUTE: LazyLock<Arc<RouteMetrics>> = LazyLock::new(|| Arc::new(RouteMetrics::new("unmounted")));

/// The series of a request path: `sys/` and `auth/token/` for the paths the core serves
/// itself, whatever the mount table says; otherwise those of the mount the path resolved to
/// (`mount`), or `unmounted`.
pub fn route_metrics(path: &str, mount: Option<&Arc<RouteMetrics>>) -> Arc<RouteMetrics> {
    if path == "sys" || path.starts_with("sys/") {
        Arc::clone(&SYS_ROUTE)
    } else if path == "auth/token" || path.starts_with("auth/token/") {
        Arc::clone(&TOKEN_ROUTE)
    } else {
        Arc::clone(mount.unwrap_or(&UNMOUNTED_ROUTE))
    }
}

/// The series of a request that never reached a mount (it did not parse).
pub fn unmounted_route() -> Arc<RouteMetrics> {
    Arc::clone(&UNMOUNTED_ROUTE)
}

/// The series of requests a standby passed on to the active node.
pub fn forwarded_route() -> &'static RouteMetrics {
    static FORWARDED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("forwarded"));
    &FORWARDED
}

/// The label for an HTTP method: one of a fixed set, so a client cannot mint label values.
pub fn method_label(method: &str) -> &'static str {
    METHODS[method_index(method)]
}

/// The metrics as `sys/metrics` serves them.
#[derive(Debug)]
pub enum Exposition {
    /// Prometheus' text exposition format, version 0.0.4.
    Prometheus(String),
    /// Vault's go-metrics JSON shape.
    GoMetricsJson(Value),
}

/// Everything registered, in Prometheus' text format or (`prometheus == false`) Vault's
/// go-metrics JSON shape. Gauges of the core's state are whatever was last set.
pub fn exposition(prometheus: bool) -> prometheus::Result<Exposition> {
    let families = global().registry.gather();
    if prometheus {
        let mut text = Vec::new();
        TextEncoder::new().encode(&families, &mut text)?;
        return Ok(Exposition::Prometheus(String::from_utf8_lossy(&text).into_owned()));
    }
    Ok(Exposition::GoMetricsJson(go_metrics_json(&families)))
}

/// Vault's JSON dump. Values are cumulative since start (not go-metrics' per-interval
/// aggregates): a counter's `Count` and `Sum` are its value, a histogram's `Count`, `Sum` and
/// `Mean` are in milliseconds, as go-metrics samples are.
fn go_metrics_json(families: &[prometheus::proto::MetricFamily]) -> Value {
    let (mut gauges, mut counters, mut samples) = (Vec::new(), Vec::new(), Vec::new());
    for family in families {
        for metric in family.get_metric() {
            let labels: Map<String, Value> =
                metric.get_label().iter().map(|pair| (pair.name().to_owned(), json!(pair.value()))).collect();
            let name = family.name();
            match family.get_field_type() {
                MetricType::GAUGE => {
                    gauges.push(json!({"Name": name, "Value": metric.get_gauge().get_value(), "Labels": labels}))
                }
                MetricType::COUNTER => {
                    let value = metric.get_counter().get_value();
                    counters.push(json!({"Name": name, "Count": value as u64, "Sum": value, "Labels": labels}));
                }
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let count = histogram.get_sample_count();
                    let sum_ms = histogram.get_sample_sum() * 1000.0;
                    let mean = if count == 0 { 0.0 } else { sum_ms / count as f64 };
                    samples.push(json!({"Name": name, "Count": count, "Sum": sum_ms, "Mean": mean, "Labels": labels}));
                }
                _ => {}
            }
        }
    }
    let timestamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"))
        .unwrap_or_default();
    json!({"Timestamp": timestamp, "Gauges": gauges, "Points": [], "Counters": counters, "Samples": samples})
}

/// The physical backend with every operation timed into
/// `arcanum_storage_operation_duration_seconds` (one histogram per operation, looked up once).
#[derive(Debug)]
pub struct MeteredBackend {
    inner: Arc<dyn Backend>,
    get: Histogram,
    put: Histogram,
    delete: Histogram,
    list: Histogram,
    batch: Histogram,
    flush: Histogram,
}

impl MeteredBackend {
    pub fn wrap(inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        let histogram = |operation: &str| global().storage_operation_duration.with_label_values(&[operation]);
        Arc::new(MeteredBackend {
            inner,
            get: histogram("get"),
            put: histogram("put"),
            delete: histogram("delete"),
            list: histogram("list"),
            batch: histogram("batch"),
            flush: histogram("flush"),
        })
    }
}

/// Runs `operation`, recording how long it took in `histogram`.
async fn timed<T>(histogram: &Histogram, operation: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let result = operation.await;
    histogram.observe(started.elapsed().as_secs_f64());
    result
}

#[async_trait::async_trait]
impl Backend for MeteredBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        timed(&self.get, self.inner.get(key)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        timed(&self.put, self.inner.put(key, value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        timed(&self.delete, self.inner.delete(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        timed(&self.list, self.inner.list(prefix)).await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        timed(&self.batch, self.inner.batch(ops)).await
    }

    async fn batch_in_order(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        timed(&self.batch, self.inner.batch_in_order(ops)).await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        timed(&self.flush, self.inner.flush()).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("LIST"), "LIST");
        assert_eq!(method_label("hvs.secret-token"), "OTHER");
    }

    #[test]
    fn route_series_are_the_labelled_series() {
        let route = RouteMetrics::new("kept-route/");
        route.observe("PUT", 404, Duration::from_millis(1));
        route.observe("PUT", 403, Duration::from_millis(1));
        route.observe("BREW", 503, Duration::from_millis(1));
        let requests = |labels: &[&str]| global().http_requests.with_label_values(labels).get();
        assert_eq!(requests(&["PUT", "kept-route/", "4xx"]), 2);
        assert_eq!(requests(&["OTHER", "kept-route/", "5xx"]), 1);
        assert_eq!(global().http_request_duration.with_label_values(&["PUT", "kept-route/"]).get_sample_count(), 2);

        let mount = Arc::new(RouteMetrics::new("secret/"));
        assert_eq!(route_metrics("secret/data/a", Some(&mount)).mount(), "secret/");
        assert_eq!(route_metrics("sys/health", Some(&mount)).mount(), "sys/");
        assert_eq!(route_metrics("auth/token/create", None).mount(), "auth/token/");
        assert_eq!(route_metrics("nowhere/a", None).mount(), "unmounted");
    }

    #[test]
    fn json_shape_has_vaults_sections() {
        let metrics = global();
        RouteMetrics::new("secret/").observe("GET", 200, Duration::from_millis(2));
        let body = go_metrics_json(&metrics.registry.gather());
        for section in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
            assert!(body.get(section).is_some(), "missing {section}");
        }
        let sample = body["Samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Name"] == "arcanum_http_request_duration_seconds" && s["Labels"]["mount"] == "secret/")
            .expect("the observed request is in Samples");
        assert!(sample["Count"].as_u64().unwrap() >= 1);
        assert!(sample["Mean"].as_f64().unwrap() > 0.0);
    }
}
