//! Prometheus metrics: the process-wide registry, the instruments every layer records into,
//! and their exposition in Prometheus text or Vault's go-metrics JSON shape.
//!
//! A leaf facade: any crate of the server may record here, and this crate knows none of
//! them. Counters and histograms are updated where things happen. Gauges that describe the
//! core's state (seal state, live tokens, leases per mount) are set by whoever serves
//! `sys/metrics`, just before it asks for the [`exposition`]. No label ever carries a token,
//! a secret or a request path: `mount` is a mount's route, `device` an audit device's path,
//! and methods and operations come from fixed sets.

use std::sync::{Arc, LazyLock};
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

    /// Records one answered HTTP request.
    pub fn observe_request(&self, method: &str, mount: &str, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[method, mount, class]).inc();
        self.http_request_duration.with_label_values(&[method, mount]).observe(elapsed.as_secs_f64());
    }
}

/// Mount label of a request path: `sys/`, `auth/token/`, `mount_route` (the route of the mount
/// the path resolved to, if any), or `unmounted`.
pub fn mount_label(path: &str, mount_route: Option<&str>) -> String {
    if path == "sys" || path.starts_with("sys/") {
        return "sys/".into();
    }
    if path == "auth/token" || path.starts_with("auth/token/") {
        return "auth/token/".into();
    }
    mount_route.map_or_else(|| "unmounted".into(), str::to_owned)
}

/// The label for an HTTP method: one of a fixed set, so a client cannot mint label values.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "LIST" => "LIST",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        _ => "OTHER",
    }
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
    fn json_shape_has_vaults_sections() {
        let metrics = global();
        metrics.observe_request("GET", "secret/", 200, Duration::from_millis(2));
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
