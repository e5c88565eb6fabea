//! End to end: crash consistency. Cycles of concurrent writers (KV v2 writes, token creation,
//! database leases against the real PostgreSQL) -> SIGKILL at a random moment -> restart ->
//! unseal -> every acknowledged write is there and readable, and the audit chain verifies.
//!
//! `ARCANUM_CRASH_CYCLES` sets the number of cycles (default 5); the random kill points come
//! from a seed printed at the start (`ARCANUM_CRASH_SEED` replays one).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arcanum_tests::{pg_addr, TestServer};
use serde_json::{json, Value};

const KV_WRITERS: usize = 4;
const TOKEN_WRITERS: usize = 2;
const LEASE_WRITERS: usize = 2;

/// What a writer got acknowledged, to be found again after the crash.
#[derive(Debug, Clone)]
enum Acked {
    Kv { path: String, value: String },
    Token(String),
    Lease(String),
}

/// A small xorshift generator: enough to pick kill points, and replayable from its seed.
struct KillPoints(u64);

impl KillPoints {
    fn next_in(&mut self, low: usize, high: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + (self.0 % (high - low) as u64) as usize
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// One write of `kind`; `Some` once the server acknowledged it, `None` when the server is gone.
fn write_once(http: &reqwest::blocking::Client, addr: &str, token: &str, kind: usize, tag: &str) -> Option<Acked> {
    let (request, path, value) = match kind {
        0 => {
            let path = format!("secret/data/crash/{tag}");
            let value = format!("value-{tag}");
            (http.put(format!("{addr}/v1/{path}")).json(&json!({ "data": { "v": value } })), path, value)
        }
        1 => (
            http.post(format!("{addr}/v1/auth/token/create")).json(&json!({ "policies": ["default"], "ttl": "1h" })),
            String::new(),
            String::new(),
        ),
        _ => (http.get(format!("{addr}/v1/database/creds/crash")), String::new(), String::new()),
    };
    let response = request.header("X-Vault-Token", token).send().ok()?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        // A refusal is not a crash symptom: it would hide lost writes, so it fails the test.
        panic!("{tag}: the server answered {status} before it was killed: {body}");
    }
    let body: Value = response.json().ok()?;
    Some(match kind {
        0 => Acked::Kv { path, value },
        1 => Acked::Token(body["auth"]["client_token"].as_str()?.to_owned()),
        _ => Acked::Lease(body["lease_id"].as_str()?.to_owned()),
    })
}

/// Why an acknowledged write is not found after the restart, if it is not.
fn missing(server: &TestServer, root: &str, acked: &Acked) -> Option<String> {
    match acked {
        Acked::Kv { path, value } => {
            let (status, body) = server.get(path, Some(root));
            (status != 200 || body["data"]["data"]["v"] != json!(value)).then(|| format!("{path}: {status} {body}"))
        }
        Acked::Token(token) => {
            let (status, body) = server.get("auth/token/lookup-self", Some(token));
            (status != 200).then(|| format!("token: {status} {body}"))
        }
        Acked::Lease(lease) => {
            let (status, body) = server.put("sys/leases/lookup", Some(root), json!({ "lease_id": lease }));
            (status != 200).then(|| format!("{lease}: {status} {body}"))
        }
    }
}

#[test]
fn acknowledged_kv_writes_tokens_and_leases_survive_repeated_sigkill() {
    let cycles: usize = std::env::var("ARCANUM_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let seed = std::env::var("ARCANUM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("crash test: {cycles} cycles, ARCANUM_CRASH_SEED={seed}");
    let mut kill_points = KillPoints(seed);
    // The final check counts this role's users; a failed earlier run may have left some.
    crash_users(true);

    let mut server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let audit_log = server.dir.path().join("audit.log");
    let setup = [
        ("sys/audit/file", json!({ "type": "file", "options": { "file_path": audit_log.to_str().unwrap() } })),
        ("sys/mounts/secret", json!({ "type": "kv", "options": { "version": "2" } })),
        ("sys/mounts/database", json!({ "type": "database" })),
        (
            "database/config/pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{}/test?sslmode=disable", pg_addr()),
                "username": "postgres",
                "password": "unused-with-trust-auth",
                "allowed_roles": "crash",
            }),
        ),
        (
            "database/roles/crash",
            json!({
                "db_name": "pg",
                "creation_statements": [r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#],
                "default_ttl": "1h",
            }),
        ),
    ];
    for (path, body) in setup {
        let (status, answer) = server.put(path, Some(&root), body);
        assert!(status == 200 || status == 204, "{path}: {status} {answer} (is PostgreSQL running at {}?)", pg_addr());
    }

    let mut all_acked: Vec<Acked> = Vec::new();
    for cycle in 0..cycles {
        let kill_after = kill_points.next_in(40, 240);
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let kinds = std::iter::repeat_n(0, KV_WRITERS)
            .chain(std::iter::repeat_n(1, TOKEN_WRITERS))
            .chain(std::iter::repeat_n(2, LEASE_WRITERS));
        let writers: Vec<_> = kinds
            .enumerate()
            .map(|(writer, kind)| {
                let (addr, token) = (server.addr.clone(), root.clone());
                let (acked, acked_count) = (Arc::clone(&acked), Arc::clone(&acked_count));
                std::thread::spawn(move || {
                    let http = client();
                    for n in 0.. {
                        match write_once(&http, &addr, &token, kind, &format!("c{cycle}/w{writer}/{n}")) {
                            Some(done) => {
                                acked.lock().unwrap().push(done);
                                acked_count.fetch_add(1, Ordering::SeqCst);
                            }
                            // The server died under us: nothing more is acknowledged.
                            None => return,
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_count.load(Ordering::SeqCst) < kill_after {
            assert!(Instant::now() < deadline, "cycle {cycle}: writers made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        server.kill();
        for writer in writers {
            writer.join().expect("a writer panicked");
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(acked.len() >= kill_after);

        server.launch();
        server.unseal(&init.keys);
        all_acked.extend(acked);
        // Everything acknowledged in this cycle and every earlier one.
        let lost: Vec<String> = all_acked.iter().filter_map(|write| missing(&server, &root, write)).collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle} (seed {seed}): {} of {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            all_acked.len(),
            &lost[..lost.len().min(5)]
        );
        let (code, stdout, stderr) = server.cli(&["audit", "verify", audit_log.to_str().unwrap()], None);
        assert_eq!(code, 0, "cycle {cycle}: the audit chain does not verify after SIGKILL:\n{stdout}{stderr}");
    }
    let count = |kind: fn(&Acked) -> bool| all_acked.iter().filter(|a| kind(a)).count();
    println!(
        "crash test: {cycles} SIGKILL cycles, {} acknowledged writes ({} KV, {} tokens, {} leases), 0 lost",
        all_acked.len(),
        count(|a| matches!(a, Acked::Kv { .. })),
        count(|a| matches!(a, Acked::Token(_))),
        count(|a| matches!(a, Acked::Lease(_))),
    );

    // The database users behind the leases go with them.
    let (status, body) = server.put("sys/leases/revoke-prefix/database/creds/crash", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let (_, counted) = server.get("sys/leases/count", Some(&root));
    assert_eq!(counted["data"]["lease_count"], json!(0), "{counted}");
    // A kill between creating a user and recording its lease leaves a user no lease knows;
    // the intent recorded before the user was made brings it back to the server, which
    // revokes it on its first periodic tick after the restart.
    let left = orphaned_users();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while orphaned_users() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "database users without a lease are still there 30 s after the last restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("crash test: {left} database users left without a lease by kills, all revoked by the server");
}

/// Database users of the crash role that no lease accounts for (every lease was revoked).
fn orphaned_users() -> usize {
    crash_users(false)
}

/// The crash role's users, dropped first when `drop` (left by an earlier run that failed).
fn crash_users(drop: bool) -> usize {
    let addr = pg_addr();
    let (host, port) = addr.split_once(':').expect("host:port");
    let conn = format!("host={host} port={port} user=postgres dbname=test connect_timeout=5");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.expect("PostgreSQL");
        let driver = tokio::spawn(connection);
        let rows = client.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-root-crash-%'", &[]).await.unwrap();
        if drop {
            for row in &rows {
                let name: String = row.get(0);
                client.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\"")).await.unwrap();
            }
        }
        std::mem::drop(client);
        let _ = driver.await;
        rows.len()
    })
}
