//! The ceiling for durable KV v2 writes on etcd: what a minimal client gets from the same etcd
//! for the same transaction a KV v2 write makes (two puts in one transaction: a 359-byte
//! metadata record and a 77-byte version record, keys of the same lengths), with no server in
//! between.
//!
//! Usage: `cargo run --release -p arcanum-storage --example etcd_txns -- <endpoint> <concurrency> <seconds>`
//! Prints `etcd_txns concurrency <n> txns_per_sec <rate>`.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};

const METADATA_LEN: usize = 359;
const VERSION_LEN: usize = 77;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, concurrency, seconds] = args.as_slice() else {
        return Err("usage: etcd_txns <endpoint> <concurrency> <seconds>".into());
    };
    let concurrency: usize = concurrency.parse()?;
    let seconds: u64 = seconds.parse()?;
    // One client, as the backend has one per member: its requests share one HTTP/2 connection.
    let client = Client::connect([endpoint.as_str()], None).await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (mut kv, done, stop) = (client.kv_client(), Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let (metadata, version) = (vec![0x5a; METADATA_LEN], vec![0xa5; VERSION_LEN]);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let uuid = "00b9371b-3fac-4314-819f-f5c36384c4a2";
                let metadata_key = format!("/ceiling/logical/{uuid}/metadata/app/w{task:02}-{i:010}");
                let version_key = format!("/ceiling/logical/{uuid}/versions/{:064x}/1", (task as u64) << 40 | i);
                let txn = Txn::new().and_then(vec![
                    TxnOp::put(metadata_key, metadata.clone(), None),
                    TxnOp::put(version_key, version.clone(), None),
                ]);
                kv.txn(txn).await.expect("txn");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A second to warm up, then the measured interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start_count, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (done.load(Ordering::Relaxed) - start_count) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    println!("etcd_txns concurrency {concurrency} txns_per_sec {rate:.0}");
    Ok(())
}
