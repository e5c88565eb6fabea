//! A bare axum JSON endpoint: the baseline the HTTP benchmarks compare Arcanum against.
//!
//! `cargo run --release -p arcanum --example baseline -- 127.0.0.1:8300` serves
//! `GET /v1/sys/seal-status` with a constant body of the same size and shape as Arcanum's,
//! on the same runtime settings, so the ratio shows what the server adds on top of axum.

use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

async fn seal_status() -> Json<Value> {
    Json(json!({
        "type": "shamir", "initialized": true, "sealed": false, "t": 1, "n": 1, "progress": 0,
        "nonce": "", "version": "0.1.0", "build_date": "", "migration": false, "recovery_seal": false,
        "storage_type": "inmem", "cluster_name": "arcanum-cluster-00000000",
        "cluster_id": "00000000-0000-0000-0000-000000000000",
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8300".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("baseline: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, axum::Router::new().route("/v1/sys/seal-status", get(seal_status))).await
}
