//! High availability end to end: three real `arcanum` processes with `ha_enabled` on one real
//! etcd. One becomes active, the others stand by (429 health, Vault's `sys/leader`) and
//! forward what they do not serve to the active, which audits the real client's address
//! (`disable_clustering`: Vault's 307 instead); the active's death or a step-down hands over to a standby that serves what
//! the old one wrote; a paused active is fenced: once resumed, it writes nothing.

use std::time::{Duration, Instant};

use arcanum_storage::etcd_harness::EtcdCluster;
use arcanum_tests::{etcd_config, pg, pg_addr, pg_role_exists, TestServer};
use serde_json::{json, Value};

/// The lock TTL of these tests: short, so that a failover takes seconds.
const LOCK: &str = "ha_enabled = \"true\"\n  lock_timeout = \"3s\"\n  request_timeout = \"2s\"";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Three HA nodes on `cluster`, initialised through the first and each unsealed; returns them
/// with the root token.
fn three_nodes(cluster: &EtcdCluster, extra: &str) -> (Vec<TestServer>, String) {
    let (nodes, init) = three_nodes_sealed(cluster, [extra; 3]);
    for node in &nodes {
        node.unseal(&init.keys[..2]);
    }
    (nodes, init.root_token.clone())
}

/// Three HA nodes on `cluster`, initialised, all sealed; `extra[i]` goes at the top level of
/// node i's config.
fn three_nodes_sealed(cluster: &EtcdCluster, extra: [&str; 3]) -> (Vec<TestServer>, arcanum_tests::Init) {
    let endpoints = cluster.endpoints();
    let nodes: Vec<TestServer> = extra
        .iter()
        .map(|extra| TestServer::start_with(|_| format!("{}\n{extra}\n", etcd_config(&endpoints, LOCK))))
        .collect();
    let init = nodes[0].init(3, 2);
    (nodes, init)
}

fn leader_view(node: &TestServer) -> Option<Value> {
    let (status, body) = node.get("sys/leader", None);
    (status == 200).then_some(body)
}

/// Waits until exactly one of the running `nodes` says it is the active node; returns its index.
fn wait_for_one_active(nodes: &[TestServer], running: &[usize], within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let active: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&i| leader_view(&nodes[i]).is_some_and(|view| view["is_self"] == json!(true)))
            .collect();
        if let [one] = active.as_slice() {
            return *one;
        }
        assert!(active.len() <= 1, "two active nodes at once: {active:?}");
        assert!(started.elapsed() < within, "no node became active within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that does not follow redirects, to see a standby's own answer.
fn no_redirects() -> reqwest::blocking::Client {
    client_from(std::net::Ipv4Addr::LOCALHOST)
}

/// [`no_redirects`] from another loopback address, to tell the client from the nodes.
fn client_from(source: std::net::Ipv4Addr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::V4(source))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The audit log's response entries for `path`.
fn audited_responses(log: &std::path::Path, path: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["type"] == json!("response") && entry["request"]["path"] == json!(path))
        .collect()
}

#[test]
fn one_active_standbys_forward_and_a_killed_active_hands_over() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    // The third node redirects instead of forwarding, and unseals last, so it is a standby.
    let (mut nodes, init) = three_nodes_sealed(&cluster, ["", "", "disable_clustering = true"]);
    let root = init.root_token.clone();
    nodes[0].unseal(&init.keys[..2]);
    nodes[1].unseal(&init.keys[..2]);
    let active = wait_for_one_active(&nodes, &[0, 1], Duration::from_secs(20));
    nodes[2].unseal(&init.keys[..2]);
    let standby = 1 - active;

    let (status, body) = nodes[active].request(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(&json!({"type": "kv", "options": {"version": "2"}})),
    );
    assert_eq!(status, 204, "{body}");
    let audit_log = nodes[active].dir.path().join("audit.log");
    let (status, body) = nodes[active].put(
        "sys/audit/file",
        Some(&root),
        json!({"type": "file", "options": {"file_path": audit_log.display().to_string()}}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = nodes[active].put("secret/data/app", Some(&root), json!({"data": {"v": "before failover"}}));
    assert_eq!(status, 200, "{body}");

    // A standby as Vault's: health 429 (200 with standbyok), sealed false, sys/leader names the
    // active.
    let (status, health) = nodes[standby].get("sys/health", None);
    assert_eq!((status, health["standby"].clone(), health["sealed"].clone()), (429, json!(true), json!(false)));
    assert_eq!(nodes[standby].get("sys/health?standbyok=true", None).0, 200);
    assert_eq!(nodes[active].get("sys/health", None).0, 200);
    let view = leader_view(&nodes[standby]).expect("sys/leader on a standby");
    assert_eq!((view["ha_enabled"].clone(), view["is_self"].clone()), (json!(true), json!(false)));
    assert_eq!(view["leader_address"], json!(nodes[active].addr));

    // Everything else is forwarded: the client gets the active's answer itself (no redirect),
    // and the active audits the client's address, not the standby's.
    let client_ip = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let forwarded = client_from(client_ip)
        .get(format!("{}/v1/secret/data/app?version=1", nodes[standby].addr))
        .header("X-Vault-Token", &root)
        .send()
        .expect("request to a standby");
    assert_eq!(forwarded.status().as_u16(), 200);
    assert_eq!(
        forwarded.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "the active's headers come back"
    );
    let body: Value = forwarded.json().expect("json");
    assert_eq!(body["data"]["data"]["v"], json!("before failover"), "{body}");
    let (status, body) =
        nodes[standby].put("secret/data/written-via-standby", Some(&root), json!({"data": {"v": "w"}}));
    assert_eq!((status, body["data"]["version"].clone()), (200, json!(1)), "{body}");
    let (status, body) = nodes[standby].get("secret/data/missing", Some(&root));
    assert_eq!(status, 404, "the active's status comes back unchanged: {body}");
    let audited = audited_responses(&audit_log, "secret/data/app");
    assert!(!audited.is_empty(), "the active audited no read of secret/data/app");
    assert_eq!(audited.last().expect("entry")["request"]["remote_address"], json!(client_ip.to_string()));

    // A client cannot claim another address: a forwarding header it made is refused.
    let spoofed = client_from(client_ip)
        .get(format!("{}/v1/secret/data/app", nodes[active].addr))
        .header("X-Vault-Token", &root)
        .header(
            "X-Arcanum-Forwarded-For",
            format!("10.1.2.3:1 {} {}", arcanum_contract::clock::unix_now(), "0".repeat(64)),
        )
        .send()
        .expect("request to the active");
    assert_eq!(spoofed.status().as_u16(), 400);
    let body: Value = spoofed.json().expect("json");
    assert!(body["errors"][0].as_str().unwrap_or_default().contains("does not verify"), "{body}");

    // With disable_clustering, Vault's 307 to the active's api_addr instead.
    let redirected = no_redirects()
        .get(format!("{}/v1/secret/data/app?version=1", nodes[2].addr))
        .header("X-Vault-Token", &root)
        .send()
        .expect("request to a standby");
    assert_eq!(redirected.status().as_u16(), 307);
    let location = redirected.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(location, format!("{}/v1/secret/data/app?version=1", nodes[active].addr));
    // A client that follows redirects (hvac, the Go client) gets the active's answer.
    let (status, body) = nodes[2].get("secret/data/app", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("before failover")));

    // Every node's heartbeat shows in sys/ha-status (each writes one when it unseals and when
    // its role changes, then every 2 s).
    let started = Instant::now();
    let listed = loop {
        let (status, body) = nodes[active].get("sys/ha-status", Some(&root));
        assert_eq!(status, 200, "{body}");
        let listed = body["data"]["nodes"].as_array().cloned().unwrap_or_default();
        if listed.len() == 3 && listed.iter().any(|n| n["active_node"] == json!(true)) {
            break listed;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "ha-status never listed the three nodes: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed.iter().filter(|n| n["active_node"] == json!(true)).count(), 1, "{listed:?}");
    let active_entry = listed.iter().find(|n| n["active_node"] == json!(true)).expect("the active");
    assert_eq!(
        (active_entry["api_address"].clone(), active_entry["last_echo"].clone()),
        (json!(nodes[active].addr), Value::Null)
    );

    // kill -9 of the active: a standby takes over within the lock TTL and a bit, and serves
    // what the old active wrote.
    nodes[active].kill();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != active).collect();
    let next = wait_for_one_active(&nodes, &survivors, Duration::from_secs(15));
    let (status, body) = nodes[next].get("secret/data/app", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("before failover")), "{body}");
    let (status, body) = nodes[next].put("secret/data/app", Some(&root), json!({"data": {"v": "after failover"}}));
    assert_eq!(status, 200, "{body}");

    // A step-down hands over to the last standby at once.
    let (status, body) = nodes[next].put("sys/step-down", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let last = survivors.iter().copied().find(|&i| i != next).expect("a last standby");
    assert_eq!(wait_for_one_active(&nodes, &[last], Duration::from_secs(15)), last);
    let (status, body) = nodes[last].get("secret/data/app", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("after failover")), "{body}");
}

#[test]
fn a_paused_active_is_fenced_and_storage_holds_only_what_the_new_active_acknowledged() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    // Standbys redirect here, so that the resumed node's own answer shows (forwarded, its write
    // would be the new active's, acknowledged by it).
    let (nodes, root) = three_nodes(&cluster, "disable_clustering = true");
    let old = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    let (status, body) = nodes[old].request(
        "POST",
        "sys/mounts/kv",
        Some(&root),
        Some(&json!({"type": "kv", "options": {"version": "2"}})),
    );
    assert_eq!(status, 204, "{body}");
    let (status, _) = nodes[old].put("kv/data/by-old", Some(&root), json!({"data": {"v": "1"}}));
    assert_eq!(status, 200);

    // Pause the active past its lock TTL; another node takes over and writes.
    nodes[old].signal("STOP");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_for_one_active(&nodes, &others, Duration::from_secs(20));
    let (status, body) = nodes[new].put("kv/data/by-new", Some(&root), json!({"data": {"v": "2"}}));
    assert_eq!(status, 200, "{body}");

    // Resumed, the old active serves no write: it finds its lock lapsed and steps down.
    nodes[old].signal("CONT");
    let (status, body) = no_redirects()
        .put(format!("{}/v1/kv/data/by-old", nodes[old].addr))
        .header("X-Vault-Token", &root)
        .json(&json!({"data": {"v": "written after being deposed"}}))
        .send()
        .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
        .expect("request to the resumed node");
    assert_ne!(status, 200, "a deposed active acknowledged a write: {body}");
    assert!(status == 307 || status == 503, "{status} {body}");
    let view = leader_view(&nodes[old]).expect("sys/leader");
    assert_eq!(view["is_self"], json!(false), "the old active still thinks it leads");

    let (status, body) = nodes[new].get("kv/data/by-old", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("1")), "{body}");
    let (status, body) = nodes[new].get("kv/data/by-new", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("2")), "{body}");
}

#[test]
fn a_takeover_serves_everything_the_old_active_wrote_and_revokes_its_leases_on_time() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let (mut nodes, root) = three_nodes(&cluster, "");
    let old = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    let a = &nodes[old];
    let shared = tempfile::tempdir().expect("tempdir");
    let audit_log = shared.path().join("audit.log");
    let ok = |(status, body): (u16, Value)| assert!(status == 200 || status == 204, "{status} {body}");
    ok(a.request("POST", "sys/mounts/secret", Some(&root), Some(&json!({"type": "kv", "options": {"version": "2"}}))));
    ok(a.put(
        "sys/policies/acl/reader",
        Some(&root),
        json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"}),
    ));
    ok(a.put("sys/auth/userpass", Some(&root), json!({"type": "userpass"})));
    ok(a.put(
        "auth/userpass/users/alice",
        Some(&root),
        json!({"password": "correct horse", "token_policies": "reader"}),
    ));
    ok(a.put(
        "sys/audit/file",
        Some(&root),
        json!({"type": "file", "options": {"file_path": audit_log.display().to_string()}}),
    ));
    let (status, body) = a.put("auth/token/create", Some(&root), json!({"policies": ["reader"], "ttl": "1h"}));
    assert_eq!(status, 200, "{body}");
    let reader = body["auth"]["client_token"].as_str().expect("token").to_owned();
    // A keyring rotation by the old active, and a record sealed under the new term.
    ok(a.put("sys/rotate", Some(&root), json!({})));
    ok(a.put("secret/data/after-rotation", Some(&root), json!({"data": {"v": "sealed under term 2"}})));

    // A database lease created on the old active, expiring after the failover.
    ok(a.put("sys/mounts/database", Some(&root), json!({"type": "database"})));
    ok(a.put(
        "database/config/pg",
        Some(&root),
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{}/test?sslmode=disable", pg_addr()),
            "username": "postgres",
            "password": "unused-with-trust-auth",
            "allowed_roles": "*",
        }),
    ));
    pg("CREATE TABLE IF NOT EXISTS arcanum_probe (v int)");
    ok(a.put(
        "database/roles/short",
        Some(&root),
        json!({"db_name": "pg", "default_ttl": "8s", "max_ttl": "8s", "creation_statements":
            [r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON arcanum_probe TO "{{name}}";"#]}),
    ));
    let (status, body) = a.get("database/creds/short", Some(&root));
    assert_eq!(status, 200, "{body}");
    let created = Instant::now();
    let username = body["data"]["username"].as_str().expect("username").to_owned();
    let lease_id = body["lease_id"].as_str().expect("lease_id").to_owned();
    assert!(pg_role_exists(&username));

    nodes[old].kill();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_for_one_active(&nodes, &survivors, Duration::from_secs(15));
    let b = &nodes[new];

    // The keyring as rotated, the policies, the token store, the auth methods, the audit device.
    let (status, body) = b.get("sys/key-status", Some(&root));
    assert_eq!((status, body["term"].clone()), (200, json!(2)), "{body}");
    let (status, body) = b.get("secret/data/after-rotation", Some(&reader));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("sealed under term 2")), "{body}");
    let (status, body) = b.put("secret/data/after-rotation", Some(&reader), json!({"data": {"v": "no"}}));
    assert_eq!(status, 403, "the reader policy was not loaded: {body}");
    let (status, body) = b.put("auth/userpass/login/alice", None, json!({"password": "correct horse"}));
    assert_eq!(status, 200, "{body}");
    let audited = audited_responses(&audit_log, "auth/userpass/login/alice");
    assert_eq!(audited.len(), 1, "the new active's audit device did not record the login");

    // The lease the old active created is revoked by the new one when it expires, and the
    // PostgreSQL role is really dropped.
    let deadline = created + Duration::from_secs(8 + 20);
    while pg_role_exists(&username) {
        assert!(Instant::now() < deadline, "{username} still exists 20 s after its lease expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(created.elapsed() >= Duration::from_secs(7), "the lease was revoked before it expired");
    let (status, body) = b.put("sys/leases/lookup", Some(&root), json!({"lease_id": lease_id}));
    assert_eq!(status, 400, "the revoked lease is still known: {body}");
}
