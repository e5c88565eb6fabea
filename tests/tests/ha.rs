//! High availability end to end: three real `arcanum` processes with `ha_enabled` on one real
//! etcd. One becomes active, the others stand by (429 health, Vault's `sys/leader`), serve KV
//! reads themselves from storage they follow (`X-Vault-Index` for read-after-write), and
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
    three_nodes_with(cluster, LOCK, extra)
}

/// [`three_nodes`] with `storage` inside the storage block.
fn three_nodes_with(cluster: &EtcdCluster, storage: &str, extra: &str) -> (Vec<TestServer>, String) {
    let (nodes, init) = three_nodes_sealed(cluster, storage, [extra; 3]);
    for node in &nodes {
        node.unseal(&init.keys[..2]);
    }
    (nodes, init.root_token.clone())
}

/// Three HA nodes on `cluster`, initialised, all sealed; `extra[i]` goes at the top level of
/// node i's config.
fn three_nodes_sealed(
    cluster: &EtcdCluster,
    storage: &str,
    extra: [&str; 3],
) -> (Vec<TestServer>, arcanum_tests::Init) {
    let endpoints = cluster.endpoints();
    let nodes: Vec<TestServer> = extra
        .iter()
        .map(|extra| TestServer::start_with(|_| format!("{}\n{extra}\n", etcd_config(&endpoints, storage))))
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
    let (mut nodes, init) = three_nodes_sealed(&cluster, LOCK, ["", "", "disable_clustering = true"]);
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
    let (code, stdout, stderr) = nodes[standby].cli(&["status"], None);
    assert_eq!(code, 0, "{stderr}");
    let row = |name: &str, stdout: &str| {
        stdout.lines().find_map(|line| line.strip_prefix(name).map(|rest| rest.trim().to_owned())).unwrap_or_default()
    };
    assert_eq!(row("HA Enabled", &stdout), "true", "{stdout}");
    assert_eq!(row("HA Mode", &stdout), "standby", "{stdout}");
    assert_eq!(row("Active Node Address", &stdout), nodes[active].addr, "{stdout}");
    let (code, stdout, stderr) = nodes[active].cli(&["status"], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(row("HA Mode", &stdout), "active", "{stdout}");
    assert!(!row("Active Since", &stdout).is_empty(), "{stdout}");

    // Everything but KV reads is forwarded: the client gets the active's answer itself (no
    // redirect), and the active audits the client's address, not the standby's.
    let client_ip = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let forwarded = client_from(client_ip)
        .put(format!("{}/v1/secret/data/written-via-standby", nodes[standby].addr))
        .header("X-Vault-Token", &root)
        .json(&json!({"data": {"v": "w"}}))
        .send()
        .expect("request to a standby");
    assert_eq!(forwarded.status().as_u16(), 200);
    assert_eq!(
        forwarded.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "the active's headers come back"
    );
    let body: Value = forwarded.json().expect("json");
    assert_eq!(body["data"]["version"], json!(1), "{body}");
    let (status, body) = nodes[standby].put("sys/policy/missing", Some(&root), json!({"policy": "not hcl {"}));
    assert_eq!(status, 400, "the active's status comes back unchanged: {body}");
    let audited = audited_responses(&audit_log, "secret/data/written-via-standby");
    assert!(!audited.is_empty(), "the active audited no write of secret/data/written-via-standby");
    assert_eq!(audited.last().expect("entry")["request"]["remote_address"], json!(client_ip.to_string()));
    // A forwarded write is answered once the standby has followed it: the writer reads it there.
    let (status, body) = nodes[standby].get("secret/data/written-via-standby", Some(&root));
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("w")), "{body}");

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
    // So does a client that asks for it with Vault's header (for what the standby does not
    // serve itself: like Vault's performance standbys, it answers reads regardless).
    let redirected = no_redirects()
        .put(format!("{}/v1/secret/data/app", nodes[standby].addr))
        .header("X-Vault-Token", &root)
        .header("X-Vault-No-Request-Forwarding", "true")
        .json(&json!({"data": {"v": "never written"}}))
        .send()
        .expect("request to a standby");
    assert_eq!(redirected.status().as_u16(), 307);
    // A standby cannot check a token: sealing it is refused as Vault refuses it.
    let (status, body) = nodes[standby].put("sys/seal", Some(&root), json!({}));
    assert_eq!(status, 500, "{body}");
    assert!(body["errors"][0].as_str().unwrap_or_default().contains("standby"), "{body}");
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

/// A counter from a node's own Prometheus metrics (the listener allows them without a token).
fn own_counter(node: &TestServer, name: &str) -> f64 {
    arcanum_tests::metric(&node.metrics_text(None), name).unwrap_or_else(|| panic!("{name} not in the metrics"))
}

/// A request with optional Vault consistency headers; the answer's status, body and
/// `X-Vault-Index`.
fn call(
    node: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut request = no_redirects()
        .request(method.parse().expect("method"), format!("{}/v1/{path}", node.addr))
        .header("X-Vault-Token", token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().expect("request");
    let status = answer.status().as_u16();
    let index = answer.headers().get("x-vault-index").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = answer.json().unwrap_or(Value::Null);
    (status, body, index)
}

/// Standbys serve KV reads themselves from storage they follow (OpenBao's standby reads, Vault's
/// performance standbys) and send everything else to the active node. A client sees its own
/// writes through the standby it wrote through, and what it wrote through the active node once
/// it hands the standby that node's `X-Vault-Index`; revoked tokens, changed policies and a
/// rotated keyring are followed too.
#[test]
fn a_standby_serves_kv_reads_itself_and_follows_what_the_active_changes() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let endpoints = cluster.endpoints();
    let metrics = "tls_disable = true\n  telemetry {\n    unauthenticated_metrics_access = true\n  }";
    let nodes: Vec<TestServer> = (0..2)
        .map(|_| TestServer::start_with(|_| etcd_config(&endpoints, LOCK).replace("tls_disable = true", metrics)))
        .collect();
    let init = nodes[0].init(3, 2);
    let root = init.root_token.clone();
    nodes[0].unseal(&init.keys[..2]);
    let active = wait_for_one_active(&nodes, &[0], Duration::from_secs(20));
    nodes[1].unseal(&init.keys[..2]);
    let (a, s) = (&nodes[active], &nodes[1 - active]);
    let ok = |(status, body, index): (u16, Value, Option<String>)| {
        assert!(status == 200 || status == 204, "{status} {body}");
        index.expect("the active's answer carries X-Vault-Index")
    };
    ok(call(a, "POST", "sys/mounts/secret", &root, Some(json!({"type": "kv", "options": {"version": "2"}})), &[]));
    let policy = json!({"policy": "path \"secret/*\" { capabilities = [\"read\", \"list\"] }"});
    ok(call(a, "PUT", "sys/policies/acl/reader", &root, Some(policy), &[]));
    let (_, body, _) = call(a, "POST", "auth/token/create", &root, Some(json!({"policies": ["reader"]})), &[]);
    let reader = body["auth"]["client_token"].as_str().expect("token").to_owned();
    let index = ok(call(a, "PUT", "secret/data/app", &root, Some(json!({"data": {"v": "one"}})), &[]));

    // Written through the active, read through the standby with the active's index: served there.
    let served = own_counter(s, "arcanum_ha_standby_reads_total");
    let (status, body, _) = call(s, "GET", "secret/data/app", &reader, None, &[("X-Vault-Index", &index)]);
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("one")), "{body}");
    let (status, body, _) = call(s, "LIST", "secret/metadata", &reader, None, &[]);
    assert_eq!((status, body["data"]["keys"].clone()), (200, json!(["app"])), "{body}");
    let (status, _, _) = call(s, "GET", "secret/data/missing", &reader, None, &[]);
    assert_eq!(status, 404);
    let (status, _, _) = call(s, "GET", "secret/data/app", "hvs.not-a-token", None, &[]);
    assert_eq!(status, 403, "a token the standby does not know goes to the active, which refuses it");
    assert_eq!(own_counter(s, "arcanum_ha_standby_reads_total") - served, 3.0, "the standby served the reads itself");

    // Writes go to the active; once answered, the standby has followed them: the writer reads
    // its own write through the same standby, every time.
    for n in 0..20 {
        let (status, body, _) = call(s, "PUT", "secret/data/app", &root, Some(json!({"data": {"v": n}})), &[]);
        assert_eq!(status, 200, "{body}");
        let (status, body, _) = call(s, "GET", "secret/data/app", &reader, None, &[]);
        assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!(n)), "{body}");
    }

    // A token revoked through the active is refused by the standby once it has that index.
    let (_, body, _) = call(a, "POST", "auth/token/create", &root, Some(json!({"policies": ["reader"]})), &[]);
    let doomed = body["auth"]["client_token"].as_str().expect("token").to_owned();
    let (status, _, _) = call(s, "GET", "secret/data/app", &doomed, None, &[]);
    assert_eq!(status, 200);
    let index = ok(call(a, "POST", "auth/token/revoke", &root, Some(json!({"token": doomed})), &[]));
    let (status, _, _) = call(s, "GET", "secret/data/app", &doomed, None, &[("X-Vault-Index", &index)]);
    assert_eq!(status, 403, "a revoked token read through the standby");

    // A narrowed policy and a rotated keyring are followed (the standby reopens its services).
    let index = ok(call(a, "POST", "sys/rotate", &root, Some(json!({})), &[]));
    let (status, body, _) = call(s, "GET", "sys/key-status", &root, None, &[("X-Vault-Index", &index)]);
    assert_eq!((status, body["term"].clone()), (200, json!(2)), "{body}");
    let index = ok(call(a, "PUT", "secret/data/after-rotation", &root, Some(json!({"data": {"v": "r"}})), &[]));
    let (status, body, _) = call(s, "GET", "secret/data/after-rotation", &reader, None, &[("X-Vault-Index", &index)]);
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("r")), "{body}");
    let narrowed = json!({"policy": "path \"secret/data/other\" { capabilities = [\"read\"] }"});
    let index = ok(call(a, "PUT", "sys/policies/acl/reader", &root, Some(narrowed), &[]));
    let (status, _, _) = call(s, "GET", "secret/data/app", &reader, None, &[("X-Vault-Index", &index)]);
    assert_eq!(status, 403, "the narrowed policy holds on the standby");

    // A token with a use limit goes to the active, which counts every use.
    let (_, body, _) =
        call(a, "POST", "auth/token/create", &root, Some(json!({"policies": ["default"], "num_uses": 2})), &[]);
    let limited = body["auth"]["client_token"].as_str().expect("token").to_owned();
    let served = own_counter(s, "arcanum_ha_standby_reads_total");
    let statuses: Vec<u16> = (0..3).map(|_| call(s, "GET", "secret/data/app", &limited, None, &[]).0).collect();
    assert_eq!(statuses, [403, 403, 403], "default policy: denied, but each use counted");
    let (status, _, _) = call(a, "GET", "auth/token/lookup-self", &limited, None, &[]);
    assert_eq!(status, 403, "both uses were spent on the active");
    assert_eq!(own_counter(s, "arcanum_ha_standby_reads_total"), served);

    // An index the standby cannot reach in time: the active answers, or Vault's 412 on request.
    let (format, revision) = index.rsplit_once(':').expect("an index names a revision");
    let ahead = format!("{format}:{}", revision.parse::<i64>().expect("a revision") + 1_000_000);
    let (status, body, _) = call(s, "GET", "secret/data/app", &root, None, &[("X-Vault-Index", &ahead)]);
    assert_eq!(status, 200, "sent on to the active: {body}");
    let fail = [("X-Vault-Index", ahead.as_str()), ("X-Vault-Inconsistent", "fail")];
    let (status, _, _) = call(s, "GET", "secret/data/app", &root, None, &fail);
    assert_eq!(status, 412);
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

/// A client writing `kv/data/w<i % KEYS>` = i, one write after another, to the nodes in turn
/// (standbys forward); on an error it tries the next node with the same write. It records, per
/// key, the last value acknowledged and the last attempted.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: std::sync::Arc<std::sync::Mutex<WriterProgress>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default, Clone)]
struct WriterProgress {
    acknowledged: u64,
    failed: u64,
    /// The first few failures, as status and body.
    failures: Vec<String>,
    /// Per key: (last value acknowledged, last value attempted).
    keys: std::collections::BTreeMap<u64, (Option<u64>, u64)>,
}

const KEYS: u64 = 100;

impl Writer {
    /// Writes through the nodes at `addrs` (kept current by the test) until stopped.
    fn start(addrs: std::sync::Arc<std::sync::Mutex<Vec<String>>>, token: String) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let progress = std::sync::Arc::new(std::sync::Mutex::new(WriterProgress::default()));
        let thread = {
            let (stop, progress) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&progress));
            std::thread::spawn(move || {
                let client = no_redirects();
                let mut i = 0u64;
                let mut node = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = i % KEYS;
                    progress.lock().expect("progress").keys.entry(key).or_insert((None, i)).1 = i;
                    let addr = addrs.lock().expect("addrs")[node % 3].clone();
                    let (status, answer) = client
                        .put(format!("{addr}/v1/kv/data/w{key}"))
                        .header("X-Vault-Token", &token)
                        .json(&json!({"data": {"v": i}}))
                        .send()
                        .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
                        .unwrap_or_else(|err| (0, err.to_string()));
                    let mut p = progress.lock().expect("progress");
                    if status == 200 {
                        p.acknowledged += 1;
                        p.keys.get_mut(&key).expect("key").0 = Some(i);
                        i += 1;
                    } else {
                        p.failed += 1;
                        if p.failures.len() < 5 {
                            p.failures.push(format!("{status} {answer}"));
                        }
                        node += 1;
                    }
                }
            })
        };
        Writer { stop, progress, thread: Some(thread) }
    }

    fn acknowledged(&self) -> u64 {
        self.progress.lock().expect("progress").acknowledged
    }

    /// Waits until `more` further writes are acknowledged.
    fn wait_for(&self, more: u64, within: Duration) {
        let target = self.acknowledged() + more;
        let started = Instant::now();
        while self.acknowledged() < target {
            assert!(started.elapsed() < within, "the writer made no progress for {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> WriterProgress {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("writer thread");
        self.progress.lock().expect("progress").clone()
    }
}

/// Every key holds its last acknowledged value or a later attempted one: nothing acknowledged
/// was lost.
fn assert_nothing_acknowledged_lost(node: &TestServer, token: &str, progress: &WriterProgress) {
    for (key, (acknowledged, attempted)) in &progress.keys {
        let (status, body) = node.get(&format!("kv/data/w{key}"), Some(token));
        let Some(acknowledged) = acknowledged else { continue };
        assert_eq!(status, 200, "w{key}: {body}");
        let stored = body["data"]["data"]["v"].as_u64().expect("v");
        assert!(
            stored >= *acknowledged && stored <= *attempted,
            "w{key} holds {stored}, but {acknowledged} was acknowledged (last attempted {attempted})"
        );
    }
}

fn mount_kv(node: &TestServer, token: &str) {
    let (status, body) =
        node.request("POST", "sys/mounts/kv", Some(token), Some(&json!({"type": "kv", "options": {"version": "2"}})));
    assert_eq!(status, 204, "{body}");
}

#[test]
fn thirty_kills_of_the_active_under_writes_lose_no_acknowledged_write() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(3));
    let (mut nodes, init) = three_nodes_sealed(&cluster, LOCK, [""; 3]);
    let root = init.root_token.clone();
    for node in &nodes {
        node.unseal(&init.keys[..2]);
    }
    let first = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    mount_kv(&nodes[first], &root);
    let addrs = std::sync::Arc::new(std::sync::Mutex::new(nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>()));
    let writer = Writer::start(std::sync::Arc::clone(&addrs), root.clone());
    for _cycle in 0..30 {
        writer.wait_for(3, Duration::from_secs(30));
        let active = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
        nodes[active].kill();
        let others: Vec<usize> = (0..3).filter(|&i| i != active).collect();
        wait_for_one_active(&nodes, &others, Duration::from_secs(20));
        nodes[active].launch();
        nodes[active].unseal(&init.keys[..2]);
        addrs.lock().expect("addrs")[active] = nodes[active].addr.clone();
    }
    writer.wait_for(3, Duration::from_secs(30));
    let progress = writer.finish();
    let active = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    eprintln!(
        "30 kills: {} writes acknowledged, {} attempts failed, the first: {:?}",
        progress.acknowledged, progress.failed, progress.failures
    );
    assert_nothing_acknowledged_lost(&nodes[active], &root, &progress);
}

#[test]
fn step_down_and_sigterm_hand_over_without_a_failed_request() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let (mut nodes, root) = three_nodes(&cluster, "");
    let first = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    mount_kv(&nodes[first], &root);
    // The client talks to one standby throughout; the handovers happen behind it.
    let through = (first + 1) % 3;
    let addrs = std::sync::Arc::new(std::sync::Mutex::new(vec![nodes[through].addr.clone(); 3]));
    let writer = Writer::start(std::sync::Arc::clone(&addrs), root.clone());
    writer.wait_for(20, Duration::from_secs(30));

    // Step-downs until the active is neither `through` nor the first (one or two hand-overs).
    let mut active = first;
    while active == first || active == through {
        let (status, body) = nodes[active].put("sys/step-down", Some(&root), json!({}));
        assert_eq!(status, 204, "{body}");
        let others: Vec<usize> = (0..3).filter(|&i| i != active).collect();
        active = wait_for_one_active(&nodes, &others, Duration::from_secs(20));
        writer.wait_for(20, Duration::from_secs(30));
    }
    // A graceful shutdown of the active hands over too.
    let status = nodes[active].stop();
    assert!(status.success(), "{status}");
    let others: Vec<usize> = (0..3).filter(|&i| i != active).collect();
    let last = wait_for_one_active(&nodes, &others, Duration::from_secs(20));
    writer.wait_for(20, Duration::from_secs(30));
    let progress = writer.finish();
    assert_eq!(
        progress.failed, 0,
        "requests failed during the hand-overs ({} acknowledged): {:?}",
        progress.acknowledged, progress.failures
    );
    assert_nothing_acknowledged_lost(&nodes[last], &root, &progress);
}

#[test]
fn etcd_member_loss_changes_nothing_and_quorum_loss_fails_cleanly_then_recovers() {
    let rt = runtime();
    let mut cluster = rt.block_on(EtcdCluster::start(3));
    // A lock TTL that outlasts an etcd election (the default, 15 s, does by far); the default
    // request timeout (5 s) lets a write outlast one too.
    let (nodes, root) = three_nodes_with(&cluster, "ha_enabled = \"true\"\n  lock_timeout = \"6s\"", "");
    let active = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    mount_kv(&nodes[active], &root);

    // One member down (etcd's leader): the same node stays active and writes go on, the first
    // of them while the other two members elect a new leader.
    let etcd_leader = rt.block_on(cluster.leader_index());
    cluster.kill_member(etcd_leader);
    for i in 0..20 {
        let (status, body) =
            nodes[(active + i) % 3].put(&format!("kv/data/one-down-{i}"), Some(&root), json!({"data": {"v": i}}));
        assert_eq!(status, 200, "write {i} with one etcd member down: {body}");
    }
    assert_eq!(wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(5)), active);

    // Quorum lost: a write fails with a clear error within the request timeout, and the active
    // gives up its role within the lock TTL.
    let second = (etcd_leader + 1) % 3;
    cluster.kill_member(second);
    let started = Instant::now();
    let (status, body) = nodes[active].put("kv/data/no-quorum", Some(&root), json!({"data": {"v": 0}}));
    assert_eq!(status, 503, "{body}");
    assert!(body["errors"][0].is_string(), "{body}");
    assert!(started.elapsed() < Duration::from_secs(15), "a write without quorum took {:?}", started.elapsed());
    let started = Instant::now();
    while leader_view(&nodes[active]).is_some_and(|view| view["is_self"] == json!(true)) {
        assert!(started.elapsed() < Duration::from_secs(10), "the active kept its role without etcd quorum");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, health) = nodes[active].get("sys/health", None);
    assert_eq!((status, health["sealed"].clone()), (429, json!(false)), "it stands by, unsealed: {health}");

    // Quorum back: service resumes by itself, with everything acknowledged before.
    cluster.start_member(etcd_leader);
    cluster.start_member(second);
    rt.block_on(cluster.wait_ready());
    let now_active = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(30));
    let (status, body) = nodes[now_active].put("kv/data/after-quorum", Some(&root), json!({"data": {"v": 1}}));
    assert_eq!(status, 200, "{body}");
    for i in 0..20 {
        let (status, body) = nodes[now_active].get(&format!("kv/data/one-down-{i}"), Some(&root));
        assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!(i)), "{body}");
    }
}

#[path = "kubernetes/standin.rs"]
mod standin;

/// The labels the stand-in API server holds for pod `vault/<name>`.
fn pod_labels(api: &standin::FakeApi, name: &str) -> serde_json::Map<String, Value> {
    api.state().pods.get(&("vault".to_owned(), name.to_owned())).cloned().unwrap_or_default()
}

/// Waits until `check` holds for the pods' labels.
fn wait_for_labels(api: &standin::FakeApi, what: &str, check: impl Fn(&[serde_json::Map<String, Value>; 2]) -> bool) {
    let started = Instant::now();
    loop {
        let labels = [pod_labels(api, "arcanum-0"), pod_labels(api, "arcanum-1")];
        if check(&labels) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: the pods' labels are {labels:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_node_labels_its_own_pod_and_the_active_label_follows_the_lock() {
    let api = standin::FakeApi::start();
    for pod in ["arcanum-0", "arcanum-1"] {
        api.state().pods.insert(("vault".to_owned(), pod.to_owned()), serde_json::Map::new());
    }
    let sa_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(sa_dir.path().join("token"), standin::sa_jwt("vault", "arcanum")).expect("token");
    std::fs::write(sa_dir.path().join("ca.crt"), &api.ca_pem).expect("ca");
    let port = api.addr.port().to_string();
    let sa_path = sa_dir.path().display().to_string();
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let endpoints = cluster.endpoints();
    let nodes: Vec<TestServer> = ["arcanum-0", "arcanum-1"]
        .iter()
        .map(|pod| {
            TestServer::start_with_config_and_env(
                |_| {
                    format!(
                        "{}\nservice_registration \"kubernetes\" {{\n  namespace = \"vault\"\n}}\n",
                        etcd_config(&endpoints, LOCK)
                    )
                },
                &[
                    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                    ("KUBERNETES_SERVICE_PORT", &port),
                    ("ARCANUM_K8S_SA_DIR", &sa_path),
                    ("VAULT_K8S_POD_NAME", pod),
                ],
            )
        })
        .collect();
    let is = |labels: &serde_json::Map<String, Value>, name: &str, value: &str| labels.get(name) == Some(&json!(value));

    wait_for_labels(&api, "sealed and uninitialised", |pods| {
        pods.iter().all(|l| {
            is(l, "vault-sealed", "true") && is(l, "vault-initialized", "false") && is(l, "vault-active", "false")
        })
    });
    let init = nodes[0].init(1, 1);
    for node in &nodes {
        node.unseal(&init.keys[..1]);
    }
    let active = wait_for_one_active(&nodes, &[0, 1], Duration::from_secs(20));
    wait_for_labels(&api, "one active, both unsealed", |pods| {
        pods.iter().all(|l| is(l, "vault-sealed", "false") && is(l, "vault-initialized", "true"))
            && is(&pods[active], "vault-active", "true")
            && is(&pods[1 - active], "vault-active", "false")
    });
    let labels = pod_labels(&api, "arcanum-0");
    assert!(labels["vault-version"].as_str().is_some_and(|v| !v.is_empty()), "{labels:?}");
    assert_eq!(labels["vault-perf-standby"], json!("false"));

    // A step-down moves the active label to the other pod.
    let (status, body) = nodes[active].put("sys/step-down", Some(&init.root_token), json!({}));
    assert_eq!(status, 204, "{body}");
    assert_eq!(wait_for_one_active(&nodes, &[1 - active], Duration::from_secs(15)), 1 - active);
    wait_for_labels(&api, "the active label moved", |pods| {
        is(&pods[1 - active], "vault-active", "true") && is(&pods[active], "vault-active", "false")
    });
    let patches = api.state().patches.len();
    assert!(patches >= 4, "{patches} patches");
}
