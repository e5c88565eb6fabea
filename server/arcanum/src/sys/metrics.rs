//! `GET sys/metrics`: brings the gauges of the core's state up to date, then serves the
//! metrics registry in Prometheus text or Vault's go-metrics JSON shape.
//!
//! Seal state is read at every scrape. Stored state (live tokens, leases per mount) is counted
//! at most once per [`STORED_STATE_MAX_AGE`], because counting lists every key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arcanum_metrics::Exposition;
use serde_json::Value;

use arcanum_contract::logical::{ApiError, Operation, Request, Response};
use arcanum_core::{Core, Unsealed};

/// How stale the stored-state gauges may be before a scrape recounts them.
pub const STORED_STATE_MAX_AGE: Duration = Duration::from_secs(15);

/// When the stored-state gauges were last counted (one counter at a time).
static STORED_STATE_COUNTED: tokio::sync::Mutex<Option<Instant>> = tokio::sync::Mutex::const_new(None);

/// `GET sys/metrics[?format=prometheus]`: `format=prometheus` gives the text exposition format
/// (the HTTP layer adds it when the Accept header asks for Prometheus' formats); no format
/// gives Vault's go-metrics JSON shape.
pub async fn handle(core: &Core, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    let prometheus = match req.field("format").and_then(Value::as_str) {
        Some("prometheus") => true,
        None | Some("") => false,
        Some(other) => return Err(ApiError::bad_request(format!("unknown metrics format {other:?}"))),
    };
    refresh(core).await;
    match arcanum_metrics::exposition(prometheus) {
        Ok(Exposition::Prometheus(body)) => {
            Ok(Response::Text { status: 200, content_type: "text/plain; version=0.0.4", body })
        }
        Ok(Exposition::GoMetricsJson(body)) => Ok(Response::Raw { status: 200, body }),
        Err(err) => {
            tracing::error!(error = %err, "encoding metrics failed");
            Err(ApiError::internal())
        }
    }
}

/// Brings the gauges up to date with `core`: seal state always, stored state when stale.
async fn refresh(core: &Core) {
    let metrics = arcanum_metrics::global();
    let status = core.seal_status().await;
    metrics.core_initialized.set(i64::from(status.initialized));
    metrics.core_unsealed.set(i64::from(!status.sealed));
    metrics.core_unseal_progress.set(status.progress as i64);
    metrics.core_unseal_threshold.set(status.threshold as i64);
    let Ok(unsealed) = core.unsealed() else {
        return;
    };
    let (pending, irrevocable) = unsealed.expiration.failing_revocations();
    metrics.revocations_pending.set(pending as i64);
    metrics.revocations_irrevocable.set(irrevocable as i64);

    let mut counted = STORED_STATE_COUNTED.lock().await;
    if counted.is_some_and(|at| at.elapsed() < STORED_STATE_MAX_AGE) {
        return;
    }
    if let Err(err) = count_stored_state(&unsealed).await {
        tracing::warn!(status = err.status, "counting tokens and leases for metrics failed");
        return;
    }
    *counted = Some(Instant::now());
}

async fn count_stored_state(unsealed: &Unsealed) -> Result<(), ApiError> {
    let metrics = arcanum_metrics::global();
    metrics.token_count.set(unsealed.tokens.count().await? as i64);
    let mut by_mount: HashMap<String, i64> = HashMap::new();
    for lease_id in unsealed.expiration.lease_ids_under("").await? {
        let mount = unsealed.mounts.resolve(&lease_id).map_or_else(|| "unmounted".to_owned(), |(m, _)| m.route.clone());
        *by_mount.entry(mount).or_default() += 1;
    }
    // Mounts without leases are dropped rather than left at a stale count.
    metrics.leases.reset();
    for (mount, count) in by_mount {
        metrics.leases.with_label_values(&[&mount]).set(count);
    }
    Ok(())
}
