//! End to end on etcd: the real binary with `storage "etcd"` against real etcd members
//! (Debian's etcd, started per test on loopback): data kept encrypted across restarts, config
//! errors named at start, limits named to the client, and member failures seen by clients as
//! Vault-shaped 503s that heal by themselves.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arcanum_storage::etcd_harness::EtcdCluster;
use arcanum_tests::{binary, contains, etcd_config, TestServer};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Starts the server on `cluster`, initialises and unseals it; returns it with its root token.
fn unsealed_on(cluster: &EtcdCluster, storage_extra: &str) -> (TestServer, String, Vec<String>) {
    let endpoints = cluster.endpoints();
    let server = TestServer::start_with(|_| etcd_config(&endpoints, storage_extra));
    let init = server.init(3, 2);
    server.unseal(&init.keys[..2]);
    (server, init.root_token.clone(), init.keys.clone())
}

#[test]
fn a_server_on_etcd_keeps_everything_encrypted_across_restarts() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let (mut server, root, keys) = unsealed_on(&cluster, "");
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!(status["storage_type"], json!("etcd"));

    let marker = "etcd-plaintext-marker-51c2";
    let (status, body) = server.request(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(&json!({"type": "kv", "options": {"version": "2"}})),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("secret/data/app/db", Some(&root), json!({"data": {"password": marker}}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.put(
        "sys/policies/acl/app",
        Some(&root),
        json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("auth/token/create", Some(&root), json!({"policies": ["app"]}));
    assert_eq!(status, 200, "{body}");
    let app = body["auth"]["client_token"].as_str().expect("token").to_owned();

    server.restart();
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!(status["sealed"], json!(true));
    server.unseal(&keys[1..]);
    let (status, body) = server.get("secret/data/app/db", Some(&app));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["data"]["password"], json!(marker));

    // A secret etcd cannot take in one request is refused by name, and nothing is half written.
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, body) = server.put("secret/data/app/big", Some(&root), json!({"data": {"blob": big}}));
    assert_eq!(status, 413, "{body}");
    let message = body["errors"][0].as_str().unwrap_or_default();
    assert!(message.contains("etcd") && message.contains("1572864"), "{body}");
    let (status, _) = server.get("secret/data/app/big", Some(&root));
    assert_eq!(status, 404);

    let pairs = rt.block_on(cluster.dump("/arcanum"));
    assert!(pairs.iter().any(|(key, _)| key == "/arcanum/core/keyring"), "the physical layout is under the prefix");
    for (key, value) in &pairs {
        assert!(!contains(value, marker.as_bytes()) && !key.contains(marker), "plaintext in etcd at {key}");
        assert!(!contains(value, root.as_bytes()) && !contains(value, app.as_bytes()), "a token in etcd at {key}");
    }
}

/// Runs `arcanum server` on `config` and returns its exit status and stderr; it must exit
/// (never hang) within 30 seconds.
fn refused(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.hcl");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(binary())
        .arg("server")
        .arg(format!("-config={}", path.display()))
        .env_remove("ETCD_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn arcanum");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
            return (status.code().unwrap_or(-1), stderr);
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the server neither started nor exited within 30 s on:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_etcd_config_fails_at_start_naming_the_parameter() {
    let listener = "listener \"tcp\" {\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}\n";
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let cases = [
        (format!("storage \"etcd\" {{}}\n{listener}"), "storage.etcd.address: missing"),
        (
            format!("storage \"etcd\" {{\n address = \"http://127.0.0.1:{free}\"\n colour = \"blue\"\n}}\n{listener}"),
            "storage.etcd.colour: unknown key",
        ),
        (
            format!("storage \"etcd\" {{\n address = \"https://127.0.0.1:{free}\"\n tls_ca_file = \"/nonexistent/ca.pem\"\n}}\n{listener}"),
            "storage.etcd.tls_ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            format!("storage \"etcd\" {{\n address = \"http://127.0.0.1:{free}\"\n request_timeout = \"1s\"\n}}\n{listener}"),
            "storage unavailable: etcd at http://127.0.0.1",
        ),
    ];
    for (config, expected) in cases {
        let (code, stderr) = refused(&config);
        assert_ne!(code, 0, "started on:\n{config}");
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
    }
}

#[test]
fn etcd_member_failures_reach_clients_as_503_and_heal_without_losing_writes() {
    let rt = runtime();
    let mut cluster = rt.block_on(EtcdCluster::start(3));
    let (server, root, _) = unsealed_on(&cluster, "request_timeout = \"2s\"");
    let (status, body) =
        server.request("POST", "sys/mounts/kv", Some(&root), Some(&json!({"type": "kv", "options": {"version": "2"}})));
    assert_eq!(status, 204, "{body}");
    let mut acknowledged = Vec::new();
    let write = |name: String| {
        let (status, body) = server.put(&format!("kv/data/{name}"), Some(&root), json!({"data": {"v": name}}));
        (status, body, name)
    };

    let leader = rt.block_on(cluster.leader_index());
    let follower = (leader + 1) % 3;
    cluster.kill_member(follower);
    for i in 0..20 {
        let (status, body, name) = write(format!("one-down-{i}"));
        assert_eq!(status, 200, "write {i} with one member down: {body}");
        acknowledged.push(name);
    }

    cluster.kill_member(leader);
    let started = Instant::now();
    let (status, body, _) = write("no-quorum".into());
    assert_eq!(status, 503, "{body}");
    let message = body["errors"][0].as_str().unwrap_or_default();
    assert!(message.starts_with("storage unavailable"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(15), "failing took {:?}", started.elapsed());

    cluster.start_member(follower);
    cluster.start_member(leader);
    rt.block_on(cluster.wait_ready());
    let healed = Instant::now();
    loop {
        let (status, body, name) = write("after".into());
        if status == 200 {
            acknowledged.push(name);
            break;
        }
        assert!(status == 503 && healed.elapsed() < Duration::from_secs(30), "did not heal: {status} {body}");
    }
    for name in &acknowledged {
        let (status, body) = server.get(&format!("kv/data/{name}"), Some(&root));
        assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!(name)), "acknowledged {name} is missing");
    }
}

/// A real crash in the middle of 1,000-op batches: a writer process is SIGKILLed at a random
/// moment while it rewrites 1,000 keys batch after batch; after each kill a fresh backend must
/// find all 1,000 keys at one generation, never older than the last batch etcd acknowledged.
#[test]
fn a_writer_killed_mid_batch_leaves_every_batch_whole() {
    use std::io::BufRead as _;

    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    for round in 0..4 {
        let mut writer = Command::new(env!("CARGO_BIN_EXE_etcd_batch_writer"))
            .env("ARCANUM_ETCD_ENDPOINTS", cluster.endpoints().join(","))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the batch writer");
        let stdout = std::io::BufReader::new(writer.stdout.take().expect("stdout"));
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("committed ").and_then(|n| n.parse::<u64>().ok()) {
                    let _ = sender.send(n);
                }
            }
        });
        // Wait for a first acknowledged batch, then kill at a random point of a later one.
        let mut acknowledged = receiver.recv_timeout(Duration::from_secs(60)).expect("a first batch");
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(seed >> 33 & 0x1ff));
        writer.kill().expect("SIGKILL the writer");
        writer.wait().expect("reap the writer");
        while let Ok(n) = receiver.try_recv() {
            acknowledged = n;
        }

        let generations = rt.block_on(async {
            let etcd = arcanum_storage::EtcdBackend::connect(arcanum_storage::EtcdOptions::new(
                cluster.endpoints(),
                "/arcanum/",
            ))
            .await
            .expect("reconnect after the crash");
            let mut generations = std::collections::BTreeSet::new();
            for key in 0..1000 {
                let value = arcanum_storage::Backend::get(&etcd, &format!("crash/k{key:04}"))
                    .await
                    .expect("read")
                    .expect("every key");
                let generation: u64 = std::str::from_utf8(&value[..12]).expect("text").parse().expect("generation");
                generations.insert(generation);
            }
            generations
        });
        assert_eq!(generations.len(), 1, "round {round}: keys from several batches after the crash: {generations:?}");
        let found = *generations.first().expect("one generation");
        assert!(found >= acknowledged, "round {round}: batch {acknowledged} was acknowledged, storage holds {found}");
        assert!(
            found <= acknowledged + 1,
            "round {round}: storage holds {found}, the writer only began {}",
            acknowledged + 1
        );
    }
}
