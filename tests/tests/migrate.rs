//! `arcanum operator migrate` end to end: sled -> etcd -> sled with the real binary, a real
//! etcd member and PostgreSQL for a real lease; everything is unsealed with the original keys
//! and read back at each step. Also the refusals: a sled source in use, a non-empty
//! destination, and the migration lock (which also keeps a server from starting).

use std::path::Path;
use std::process::Command;

use arcanum_storage::etcd_harness::EtcdCluster;
use arcanum_tests::{binary, etcd_config, pg_addr, sled_config, TestServer};
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Runs `arcanum operator migrate` with `config` (and `flags`); returns (exit code, stdout, stderr).
fn migrate(dir: &Path, config: &str, flags: &[&str]) -> (i32, String, String) {
    let path = dir.join(format!("migrate-{}.hcl", rand_suffix()));
    std::fs::write(&path, config).expect("write migration config");
    let output = Command::new(binary())
        .args(["operator", "migrate", &format!("-config={}", path.display())])
        .args(flags)
        .output()
        .expect("run arcanum operator migrate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn rand_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos())
}

fn sled_block(kind: &str, path: &Path) -> String {
    format!("{kind} \"sled\" {{\n  path = \"{}\"\n}}\n", path.display())
}

fn etcd_block(kind: &str, endpoints: &[String]) -> String {
    format!("{kind} \"etcd\" {{\n  address = \"{}\"\n}}\n", endpoints.join(","))
}

/// A migration config from `cluster` into a sled store at `destination`.
fn etcd_to_sled(cluster: &EtcdCluster, destination: &Path) -> String {
    format!("{}{}", etcd_block("storage_source", &cluster.endpoints()), sled_block("storage_destination", destination))
}

/// What the source server held, to be found again after each migration.
struct Expected {
    root: String,
    app_token: String,
    lease_id: String,
    marker: String,
}

fn check_everything_is_there(server: &TestServer, expected: &Expected, audit_log: &Path) {
    let (status, body) = server.get("secret/data/app/db", Some(&expected.app_token));
    assert_eq!(status, 200, "KV read with the migrated token: {body}");
    assert_eq!(body["data"]["data"]["password"], json!(expected.marker));
    let (status, body) = server.get("sys/policies/acl/app", Some(&expected.root));
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["policy"].as_str().unwrap_or_default().contains("secret/data/app/*"));
    let (status, body) = server.get("auth/token/lookup-self", Some(&expected.app_token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["policies"], json!(["app", "default"]));
    let (status, body) =
        server.put("sys/leases/lookup", Some(&expected.root), json!({ "lease_id": expected.lease_id }));
    assert_eq!(status, 200, "the lease survived: {body}");
    let (status, body) = server.get("sys/audit", Some(&expected.root));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["file/"]["options"]["file_path"], json!(audit_log.display().to_string()));
    let (status, body) = server.get("sys/key-status", Some(&expected.root));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["term"], json!(2), "the keyring with its rotation came along");
}

#[test]
fn sled_to_etcd_to_sled_keeps_everything_and_unseals_with_the_same_keys() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let work = tempfile::tempdir().expect("tempdir");
    let audit_log = work.path().join("audit.log");

    let mut source = TestServer::start();
    let init = source.init(3, 2);
    source.unseal(&init.keys[..2]);
    let root = init.root_token.clone();
    let ok =
        |(status, body): (u16, Value), what: &str| assert!(status == 200 || status == 204, "{what}: {status} {body}");
    ok(
        source.request(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(&json!({"type": "kv", "options": {"version": "2"}})),
        ),
        "kv",
    );
    let marker = "migrated-marker-9d1e".to_owned();
    ok(source.put("secret/data/app/db", Some(&root), json!({"data": {"password": marker}})), "write");
    ok(
        source.put(
            "sys/policies/acl/app",
            Some(&root),
            json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
        ),
        "policy",
    );
    let (_, token) = source.put("auth/token/create", Some(&root), json!({"policies": ["app"], "ttl": "1h"}));
    let app_token = token["auth"]["client_token"].as_str().expect("app token").to_owned();
    ok(source.request("POST", "sys/mounts/database", Some(&root), Some(&json!({"type": "database"}))), "database");
    ok(
        source.put(
            "database/config/pg",
            Some(&root),
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{}/test?sslmode=disable", pg_addr()),
                "username": "postgres",
                "password": "unused-with-trust-auth",
                "allowed_roles": "*",
            }),
        ),
        "database config",
    );
    ok(
        source.put(
            "database/roles/ro",
            Some(&root),
            json!({"db_name": "pg", "default_ttl": "1h", "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"]}),
        ),
        "database role",
    );
    let (status, creds) = source.get("database/creds/ro", Some(&root));
    assert_eq!(status, 200, "creds: {creds}");
    let lease_id = creds["lease_id"].as_str().expect("lease id").to_owned();
    ok(
        source.put(
            "sys/audit/file",
            Some(&root),
            json!({"type": "file", "options": {"file_path": audit_log.display().to_string()}}),
        ),
        "audit",
    );
    ok(source.put("sys/rotate", Some(&root), json!({})), "rotate");
    let expected = Expected { root: root.clone(), app_token, lease_id, marker };
    let sled_dir = source.dir.path().join("data");
    let to_etcd = format!(
        "{}{}",
        sled_block("storage_source", &sled_dir),
        etcd_block("storage_destination", &cluster.endpoints())
    );

    // sled locks its directory: no migration while the server runs on it.
    let (code, _, stderr) = migrate(work.path(), &to_etcd, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is a server running on it"), "{stderr}");
    source.stop();

    let (code, stdout, stderr) = migrate(work.path(), &to_etcd, &[]);
    assert_eq!(code, 0, "sled -> etcd: {stdout}{stderr}");
    assert!(stdout.contains("Success! All of the keys have been migrated") && stdout.contains("verified"), "{stdout}");
    // Once there, the destination is not empty any more.
    let (code, _, stderr) = migrate(work.path(), &to_etcd, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already holds entries"), "{stderr}");

    let endpoints = cluster.endpoints();
    let mut on_etcd = TestServer::start_with(|_| etcd_config(&endpoints, ""));
    on_etcd.unseal(&init.keys[1..]);
    check_everything_is_there(&on_etcd, &expected, &audit_log);
    on_etcd.stop();

    let back = work.path().join("back");
    let to_sled = etcd_to_sled(&cluster, &back);
    let (code, stdout, stderr) = migrate(work.path(), &to_sled, &["-max-parallel=4"]);
    assert_eq!(code, 0, "etcd -> sled: {stdout}{stderr}");
    let mut on_sled = TestServer::start_with(|dir| {
        sled_config(dir, "", "").replace(&dir.join("data").display().to_string(), &back.display().to_string())
    });
    on_sled.unseal(&[init.keys[0].clone(), init.keys[2].clone()]);
    check_everything_is_there(&on_sled, &expected, &audit_log);
    let (status, body) = on_sled.put("sys/leases/revoke", Some(&root), json!({"lease_id": expected.lease_id}));
    assert_eq!(status, 204, "cleaning up the database user: {body}");
    on_sled.stop();
}

#[test]
fn the_migration_lock_holds_off_migrations_and_servers_until_reset() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let work = tempfile::tempdir().expect("tempdir");
    let endpoints = cluster.endpoints();
    let mut server = TestServer::start_with(|_| etcd_config(&endpoints, ""));
    server.init(1, 1);
    server.stop();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(cluster.endpoints(), None).await.expect("etcd client");
        client.put("/arcanum/core/migration", r#"{"start":"2026-12-04T10:00:00Z"}"#, None).await.expect("put lock");
    });

    let to_sled = etcd_to_sled(&cluster, &work.path().join("d"));
    let (code, _, stderr) = migrate(work.path(), &to_sled, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already running, or was interrupted") && stderr.contains("-reset"), "{stderr}");

    let output = Command::new(binary())
        .args(["server", &format!("-config={}", server.config_path.display())])
        .output()
        .expect("run the server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a migration from this storage is running or was interrupted"), "{stderr}");

    let (code, stdout, stderr) = migrate(work.path(), &to_sled, &["-reset"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    server.launch();

    // A mistyped source is not an empty store.
    let missing = work.path().join("no-such-dir");
    let from_nowhere = format!(
        "{}{}",
        sled_block("storage_source", &missing),
        etcd_block("storage_destination", &cluster.endpoints())
    );
    let (code, _, stderr) = migrate(work.path(), &from_nowhere, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("storage_source.sled.path") && stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists(), "the refused migration created the source directory");
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!(status["initialized"], json!(true));
}

#[test]
fn an_etcd_source_with_an_active_ha_node_is_refused_until_it_stops() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let work = tempfile::tempdir().expect("tempdir");
    let endpoints = cluster.endpoints();
    let mut server = TestServer::start_with(|_| etcd_config(&endpoints, "ha_enabled = \"true\""));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let started = std::time::Instant::now();
    while server.get("sys/leader", None).1["is_self"] != json!(true) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the node never became active");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let to_sled = etcd_to_sled(&cluster, &work.path().join("d"));
    let (code, _, stderr) = migrate(work.path(), &to_sled, &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("an Arcanum node is active on the source")
            && stderr.contains(server.addr.trim_start_matches("http://")),
        "{stderr}"
    );
    assert!(!work.path().join("d").exists(), "the refused migration touched the destination");

    // A graceful stop gives the lock up: the migration goes ahead.
    server.stop();
    let (code, stdout, stderr) = migrate(work.path(), &to_sled, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
