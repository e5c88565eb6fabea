//! End to end: an acknowledged write survives SIGKILL of the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcanum_tests::TestServer;
use serde_json::json;

const WRITERS: usize = 8;
/// Kill once this many writes have been acknowledged (writes keep flowing at that moment).
const ACKED_BEFORE_KILL: usize = 300;

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let mut server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);

    for cycle in 0..2 {
        let acked: Arc<Mutex<BTreeMap<String, String>>> = Default::default();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let addr = server.addr.clone();
                let token = init.root_token.clone();
                let acked = Arc::clone(&acked);
                let acked_count = Arc::clone(&acked_count);
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    for n in 0.. {
                        let key = format!("crash/{cycle}/{writer}/{n}");
                        let value = format!("value-{cycle}-{writer}-{n}");
                        let sent = client
                            .put(format!("{addr}/v1/sys/raw/{key}"))
                            .header("X-Vault-Token", &token)
                            .json(&json!({ "value": value }))
                            .send();
                        match sent {
                            Ok(response) if response.status().is_success() => {
                                acked.lock().unwrap().insert(key, value);
                                acked_count.fetch_add(1, Ordering::SeqCst);
                            }
                            // The server died under us: from here nothing more is acknowledged.
                            _ => return n,
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        // Wait (bounded) until enough writes were acknowledged, then kill mid-stream.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acked_count.load(Ordering::SeqCst) < ACKED_BEFORE_KILL {
            assert!(std::time::Instant::now() < deadline, "writers made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        let attempted: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= ACKED_BEFORE_KILL);
        assert!(attempted >= acked.len());

        server.launch();
        server.unseal(&init.keys);
        let mut missing = Vec::new();
        for (key, value) in &acked {
            let (status, body) = server.get(&format!("sys/raw/{key}"), Some(&init.root_token));
            if status != 200 || body["data"]["value"] != json!(value) {
                missing.push(format!("{key}: {status} {body}"));
            }
        }
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} acknowledged writes lost: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}
