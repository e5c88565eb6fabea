//! Unit tests of the broker: enable/list/hash/disable, persistence across unseals, fail-closed
//! with one or two devices, and the bound on a device that hangs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arcanum_contract::storage::MemoryStorage;
use serde_json::Value;

use super::*;

async fn barrier() -> Arc<MemoryStorage> {
    MemoryStorage::new()
}

fn file_request(path: &str, file: &Path) -> EnableRequest {
    let mut options = BTreeMap::new();
    options.insert("file_path".to_owned(), file.to_string_lossy().into_owned());
    EnableRequest { path: path.into(), kind: "file".into(), description: "d".into(), options, local: false }
}

fn lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[tokio::test]
async fn enable_list_hash_disable_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let barrier = barrier().await;
    let broker = AuditBroker::open(barrier.clone()).await.unwrap();
    broker.enable(file_request("file/", &file), "req").await.unwrap();

    let list = broker.list();
    assert_eq!(list["file/"]["type"], "file");
    assert_eq!(list["file/"]["options"]["file_path"], file.to_str().unwrap());
    assert_eq!(list["file/"]["chain"]["seq"], Value::Null);
    let hash = broker.hash("file/", "secret").unwrap();
    assert!(hash.starts_with("hmac-sha256:") && hash.len() == "hmac-sha256:".len() + 64);
    assert_eq!(broker.hash("nope/", "x").unwrap_err().status, 400);

    let devices = broker.snapshot();
    assert_eq!(broker.log(&devices, 1, |_| "{\"type\":\"request\"}".into()).await, 1);
    assert_eq!(devices[0].writes(), 1);
    broker.persist_heads().await;
    drop(devices);
    drop(broker);

    // As after a seal and unseal: same salt, and the chain continues where it was.
    let broker = AuditBroker::open(barrier.clone()).await.unwrap();
    assert_eq!(broker.hash("file/", "secret").unwrap(), hash);
    let devices = broker.snapshot();
    assert_eq!(broker.log(&devices, 1, |_| "{\"type\":\"response\"}".into()).await, 1);
    let written = lines(&file);
    assert_eq!(written.len(), 2);
    assert_eq!(written[1]["seq"], 1);
    assert_eq!(written[1]["prev_hash"], written[0]["hash"]);
    assert_eq!(written[0]["prev_hash"], broker.list()["file/"]["chain"]["genesis"]);
    assert_eq!(broker.list()["file/"]["chain"]["seq"], 1);

    broker.disable("file/").await.unwrap();
    broker.disable("file/").await.unwrap();
    assert!(broker.list().is_empty());
    let reloaded = AuditBroker::open(barrier).await.unwrap();
    assert!(reloaded.list().is_empty());
}

#[tokio::test]
async fn enable_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let broker = AuditBroker::open(barrier().await).await.unwrap();
    let file = dir.path().join("a.log");
    let mut syslog = file_request("s/", &file);
    syslog.kind = "syslog".into();
    assert_eq!(broker.enable(syslog, "r").await.unwrap_err().status, 400);
    assert_eq!(broker.enable(file_request("d/", dir.path()), "r").await.unwrap_err().status, 400);
    broker.enable(file_request("a/", &file), "r").await.unwrap();
    let conflict = broker.enable(file_request("a/", &dir.path().join("b.log")), "r").await.unwrap_err();
    assert!(conflict.errors[0].contains("already in use"), "{conflict}");
    let same_file = broker.enable(file_request("b/", &file), "r").await.unwrap_err();
    assert!(same_file.errors[0].contains("already written"), "{same_file}");
    assert_eq!(broker.list().len(), 1);
}

#[tokio::test]
async fn failing_device_fails_closed_and_a_second_device_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = AuditBroker::open(barrier().await).await.unwrap();
    broker.enable(file_request("full/", Path::new("/dev/full")), "r").await.unwrap();
    let entry = |_: &Device| "{\"type\":\"request\"}".to_owned();
    assert_eq!(broker.log(&broker.snapshot(), 1, entry).await, 0);
    assert_eq!(broker.list()["full/"]["failures"], 1);

    broker.enable(file_request("good/", &dir.path().join("good.log")), "r").await.unwrap();
    assert_eq!(broker.log(&broker.snapshot(), 1, entry).await, 1);
    let list = broker.list();
    assert_eq!((list["full/"]["failures"].clone(), list["good/"]["writes"].clone()), (2.into(), 1.into()));
}

/// A real hang: a FIFO whose reader never reads. Once the pipe buffer is full the writer
/// thread blocks in `write`; every entry after that must fail within the bound.
#[tokio::test]
async fn hung_device_fails_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let reader_path = fifo.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::fs::File::open(reader_path).unwrap();
        tx.send(reader).unwrap();
    });
    let broker = AuditBroker::open(barrier().await).await.unwrap();
    broker.set_timeout(Duration::from_millis(300));
    broker.enable(file_request("fifo/", &fifo), "r").await.unwrap();
    let _reader = rx.recv_timeout(Duration::from_secs(5)).unwrap();

    let big = format!("{{\"type\":\"request\",\"pad\":\"{}\"}}", "x".repeat(16 * 1024));
    let mut failed_after = None;
    for attempt in 0..64 {
        let started = Instant::now();
        let recorded = broker.log(&broker.snapshot(), 1, |_| big.clone()).await;
        assert!(started.elapsed() < Duration::from_secs(2), "a log call took {:?}", started.elapsed());
        if recorded == 0 {
            failed_after = Some(attempt);
            break;
        }
    }
    let failed_after = failed_after.expect("the pipe never filled up");
    assert!(failed_after >= 1, "the first entries fit in the pipe buffer");
    // Once the writer has been stuck for longer than the bound, entries fail at once instead
    // of each waiting out the bound behind it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    assert_eq!(broker.log(&broker.snapshot(), 1, |_| big.clone()).await, 0);
    assert!(started.elapsed() < Duration::from_millis(200), "took {:?}", started.elapsed());
    assert!(broker.list()["fifo/"]["failures"].as_u64().unwrap() >= 2);
}
