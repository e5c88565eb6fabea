//! High availability end to end: three real `arcanum` processes with `ha_enabled` on one real
//! etcd. One becomes active, the others stand by (429 health, 307 to the active, Vault's
//! `sys/leader`); the active's death or a step-down hands over to a standby that serves what
//! the old one wrote; a paused active is fenced: once resumed, it writes nothing.

use std::time::{Duration, Instant};

use arcanum_storage::etcd_harness::EtcdCluster;
use arcanum_tests::{etcd_config, TestServer};
use serde_json::{json, Value};

/// The lock TTL of these tests: short, so that a failover takes seconds.
const LOCK: &str = "ha_enabled = \"true\"\n  lock_timeout = \"3s\"\n  request_timeout = \"2s\"";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Three HA nodes on `cluster`, initialised through the first and each unsealed; returns them
/// with the root token.
fn three_nodes(cluster: &EtcdCluster) -> (Vec<TestServer>, String) {
    let endpoints = cluster.endpoints();
    let nodes: Vec<TestServer> = (0..3).map(|_| TestServer::start_with(|_| etcd_config(&endpoints, LOCK))).collect();
    let init = nodes[0].init(3, 2);
    for node in &nodes {
        node.unseal(&init.keys[..2]);
    }
    (nodes, init.root_token.clone())
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

/// A client that does not follow redirects, to see a standby's 307 itself.
fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[test]
fn one_active_standbys_redirect_and_a_killed_active_hands_over() {
    let rt = runtime();
    let cluster = rt.block_on(EtcdCluster::start(1));
    let (mut nodes, root) = three_nodes(&cluster);
    let active = wait_for_one_active(&nodes, &[0, 1, 2], Duration::from_secs(20));
    let standby = (active + 1) % 3;

    let (status, body) = nodes[active].request(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(&json!({"type": "kv", "options": {"version": "2"}})),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = nodes[active].put("secret/data/app", Some(&root), json!({"data": {"v": "before failover"}}));
    assert_eq!(status, 200, "{body}");

    // A standby as Vault's: health 429 (200 with standbyok), sealed false, sys/leader names the
    // active, and every other request is sent to the active.
    let (status, health) = nodes[standby].get("sys/health", None);
    assert_eq!((status, health["standby"].clone(), health["sealed"].clone()), (429, json!(true), json!(false)));
    assert_eq!(nodes[standby].get("sys/health?standbyok=true", None).0, 200);
    assert_eq!(nodes[active].get("sys/health", None).0, 200);
    let view = leader_view(&nodes[standby]).expect("sys/leader on a standby");
    assert_eq!((view["ha_enabled"].clone(), view["is_self"].clone()), (json!(true), json!(false)));
    assert_eq!(view["leader_address"], json!(nodes[active].addr));
    let redirected = no_redirects()
        .get(format!("{}/v1/secret/data/app?version=1", nodes[standby].addr))
        .header("X-Vault-Token", &root)
        .send()
        .expect("request to a standby");
    assert_eq!(redirected.status().as_u16(), 307);
    let location = redirected.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(location, format!("{}/v1/secret/data/app?version=1", nodes[active].addr));
    // A client that follows redirects (hvac, the Go client) gets the active's answer.
    let (status, body) = nodes[standby].get("secret/data/app", Some(&root));
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
    let (nodes, root) = three_nodes(&cluster);
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
