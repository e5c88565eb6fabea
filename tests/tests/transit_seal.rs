//! End to end: `seal "transit"` with two real processes — one serving Transit, one unsealing
//! itself from it. Init hands out recovery keys; restarts unseal without a human; with the
//! transit server down the node stays sealed, says why, and unseals by itself once it is back;
//! recovery keys reopen a manual seal and can be rekeyed; a wrong token or key name leaves the
//! node uninitialised; a seal type Arcanum does not implement stops the server at start.

#[path = "pgp/operator.rs"]
mod operator;

use std::process::Command;
use std::time::{Duration, Instant};

use arcanum_storage::etcd_harness::free_port;
use arcanum_tests::{binary, sled_config, TestServer};
use serde_json::{json, Value};

/// The transit server: Shamir-sealed, on a fixed port so it can come back at the same address.
struct Unsealer {
    server: TestServer,
    keys: Vec<String>,
    root: String,
}

impl Unsealer {
    fn start() -> Unsealer {
        let port = free_port();
        let server =
            TestServer::start_with(|dir| sled_config(dir, "", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
        let init = server.init(1, 1);
        server.unseal(&init.keys);
        let root = init.root_token;
        let r = Some(root.as_str());
        assert_eq!(server.put("sys/mounts/transit", r, json!({ "type": "transit" })).0, 204);
        assert_eq!(server.put("transit/keys/autounseal", r, json!({})).0, 200);
        let policy = "path \"transit/encrypt/autounseal\" { capabilities = [\"update\"] }\n\
                      path \"transit/decrypt/autounseal\" { capabilities = [\"update\"] }";
        assert_eq!(server.put("sys/policies/acl/autounseal", r, json!({ "policy": policy })).0, 204);
        Unsealer { server, keys: init.keys, root }
    }

    /// A periodic orphan token that may only encrypt and decrypt with the seal's key.
    fn token(&self) -> String {
        let (status, body) = self.server.put(
            "auth/token/create-orphan",
            Some(&self.root),
            json!({ "policies": ["autounseal"], "period": "24h", "no_default_policy": false }),
        );
        assert_eq!(status, 200, "{body}");
        body["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

fn seal_block(unsealer: &Unsealer, token: &str, key_name: &str) -> String {
    format!(
        "seal \"transit\" {{\n  address = \"{}\"\n  token = \"{token}\"\n  key_name = \"{key_name}\"\n  mount_path = \"transit/\"\n}}\n",
        unsealer.server.addr
    )
}

fn auto_unsealing(unsealer: &Unsealer, token: &str, key_name: &str) -> TestServer {
    let block = seal_block(unsealer, token, key_name);
    TestServer::start_with(|dir| sled_config(dir, "", &block))
}

/// Polls seal-status until `sealed` is `want` (the auto-unseal retries every 5 s).
fn wait_sealed(server: &TestServer, want: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.get("sys/seal-status", None);
        assert_eq!(status, 200, "{body}");
        if body["sealed"] == json!(want) {
            return body;
        }
        assert!(Instant::now() < deadline, "sealed did not become {want}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn recovery_init(server: &TestServer, shares: u32, threshold: u32) -> (Vec<String>, String) {
    let (status, body) =
        server.put("sys/init", None, json!({ "recovery_shares": shares, "recovery_threshold": threshold }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys"], json!([]));
    let keys: Vec<String> =
        body["recovery_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), shares as usize);
    assert_eq!(body["recovery_keys_base64"].as_array().unwrap().len(), shares as usize);
    (keys, body["root_token"].as_str().unwrap().to_owned())
}

#[test]
fn a_node_unseals_itself_through_another_servers_transit_key() {
    let mut unsealer = Unsealer::start();
    let token = unsealer.token();
    let mut node = auto_unsealing(&unsealer, &token, "autounseal");

    let (_, status) = node.get("sys/seal-status", None);
    assert_eq!((status["type"].clone(), status["initialized"].clone()), (json!("transit"), json!(false)));
    let (code, body) = node.put("sys/init", None, json!({ "secret_shares": 1, "secret_threshold": 1 }));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["errors"][0], "parameters secret_shares,secret_threshold not applicable to seal type transit");

    let (recovery, root) = recovery_init(&node, 3, 2);
    // Init unseals at once; seal-status speaks of the recovery key.
    let status = wait_sealed(&node, false);
    assert_eq!((status["t"].clone(), status["n"].clone()), (json!(2), json!(3)));
    assert_eq!((status["recovery_seal"].clone(), status["recovery_seal_type"].clone()), (json!(true), json!("shamir")));
    let r = Some(root.as_str());
    assert_eq!(node.put("sys/mounts/secret", r, json!({ "type": "kv" })).0, 204);
    assert_eq!(node.put("secret/app", r, json!({ "password": "hunter2" })).0, 204);

    // A restart unseals without anyone typing a share.
    node.restart();
    wait_sealed(&node, false);
    assert_eq!(node.get("secret/app", r).1["data"]["password"], "hunter2");

    // With the transit server down, a restarted node stays sealed and says why...
    unsealer.server.stop();
    node.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        let (_, status) = node.get("sys/seal-status", None);
        assert_eq!(status["sealed"], true, "unsealed without its transit server: {status}");
        if let Some(error) = status["seal_error"].as_str() {
            break error.to_owned();
        }
        assert!(Instant::now() < deadline, "no reason given for staying sealed: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(why.contains("the unsealer could not be reached"), "{why}");
    // Unauthenticated callers learn what kind of failure it is, not where the unsealer is.
    assert!(!why.contains(&unsealer.server.addr), "{why}");
    assert!(!why.contains(&token), "the seal token leaked into seal-status: {why}");
    let (code, stdout, _) = node.cli(&["status"], None);
    assert_eq!(code, 2, "sealed: {stdout}");
    assert!(stdout.contains("Seal Error") && stdout.contains("transit seal"), "{stdout}");
    let (code, _) = node.get("secret/app", r);
    assert_eq!(code, 503);
    // ...and unseals by itself once the transit server is back (and unsealed).
    unsealer.server.launch();
    unsealer.server.unseal(&unsealer.keys);
    wait_sealed(&node, false);
    assert_eq!(node.get("secret/app", r).1["data"]["password"], "hunter2");
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(log.contains("auto-unseal failed"), "no log line for the failed attempts");
    assert!(!log.contains(&token), "the seal token leaked into the log");

    // A manual seal is not undone by the seal: recovery shares reopen it.
    assert_eq!(node.put("sys/seal", r, json!({})).0, 204);
    let (code, body) = node.put("sys/unseal", None, json!({ "key": recovery[0] }));
    assert_eq!((code, body["progress"].clone()), (200, json!(1)), "{body}");
    let (code, body) = node.put("sys/unseal", None, json!({ "key": recovery[1] }));
    assert_eq!((code, body["sealed"].clone()), (200, json!(false)), "{body}");

    // Recovery shares authorise a new root token.
    let (_, started) = node.put("sys/generate-root/attempt", None, json!({}));
    let (otp, nonce) = (started["otp"].as_str().unwrap().to_owned(), started["nonce"].as_str().unwrap().to_owned());
    node.put("sys/generate-root/update", None, json!({ "key": recovery[0], "nonce": nonce }));
    let (_, done) = node.put("sys/generate-root/update", None, json!({ "key": recovery[2], "nonce": nonce }));
    let encoded = done["encoded_token"].as_str().unwrap();
    let (code, new_root, _) =
        node.cli(&["operator", "generate-root", &format!("-decode={encoded}"), &format!("-otp={otp}")], None);
    assert_eq!(code, 0);
    assert_eq!(node.get("secret/app", Some(new_root.trim())).1["data"]["password"], "hunter2");

    // Rekeying the recovery key: the old shares stop working, the new ones work.
    let (code, body) =
        node.put("sys/rekey-recovery-key/init", None, json!({ "secret_shares": 2, "secret_threshold": 2 }));
    assert_eq!(code, 200, "{body}");
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    node.put("sys/rekey-recovery-key/update", None, json!({ "key": recovery[1], "nonce": nonce }));
    let (code, done) = node.put("sys/rekey-recovery-key/update", None, json!({ "key": recovery[2], "nonce": nonce }));
    assert_eq!((code, done["complete"].clone()), (200, json!(true)), "{done}");
    let new_keys: Vec<String> =
        done["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    let (code, body) = node.put("sys/rekey/init", None, json!({ "secret_shares": 1, "secret_threshold": 1 }));
    assert_eq!(code, 400, "the root key has no unseal shares to rekey: {body}");
    assert_eq!(node.put("sys/seal", r, json!({})).0, 204);
    node.put("sys/unseal", None, json!({ "key": recovery[0] }));
    let (code, body) = node.put("sys/unseal", None, json!({ "key": recovery[1] }));
    assert_eq!(code, 400, "old recovery shares still open the node: {body}");
    node.unseal(&new_keys);
    assert_eq!(node.get("secret/app", r).1["data"]["password"], "hunter2");
}

#[test]
fn recovery_shares_go_to_pgp_keys_and_a_recovery_rekey_keeps_a_backup() {
    let unsealer = Unsealer::start();
    let token = unsealer.token();
    let node = auto_unsealing(&unsealer, &token, "autounseal");
    let operators = [operator::operator("ivy", false), operator::operator("jon", false)];
    let keys: Vec<&str> = operators.iter().map(|o| o.public_base64.as_str()).collect();
    let strings = |value: &Value| -> Vec<String> {
        value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };

    // A transit seal has no unseal keys to encrypt.
    let (status, body) =
        node.put("sys/init", None, json!({ "recovery_shares": 2, "recovery_threshold": 2, "pgp_keys": keys }));
    assert_eq!(status, 400, "{body}");
    let (status, init) = node.put(
        "sys/init",
        None,
        json!({
            "recovery_shares": 2,
            "recovery_threshold": 2,
            "recovery_pgp_keys": keys,
            "root_token_pgp_key": operators[0].public_base64,
        }),
    );
    assert_eq!(status, 200, "{init}");
    let shares: Vec<String> =
        operators.iter().zip(strings(&init["recovery_keys"])).map(|(op, share)| op.decrypt_hex(&share)).collect();
    let root = operators[0].decrypt_base64(init["root_token"].as_str().unwrap());
    let home = operator::gnupg_home(node.dir.path(), "gnupg-ivy");
    let encrypted_share = operator::hex_decode(init["recovery_keys"][0].as_str().unwrap());
    assert_eq!(operators[0].gpg_decrypt(&home, &encrypted_share), shares[0], "gpg opens a recovery share");
    wait_sealed(&node, false);
    let r = Some(root.as_str());

    let (status, started) = node.put(
        "sys/rekey-recovery-key/init",
        None,
        json!({ "secret_shares": 2, "secret_threshold": 2, "pgp_keys": keys, "backup": true }),
    );
    assert_eq!(status, 200, "{started}");
    let mut done = Value::Null;
    for share in &shares {
        done = node.put("sys/rekey-recovery-key/update", None, json!({ "key": share, "nonce": started["nonce"] })).1;
    }
    assert_eq!(done["complete"], true, "{done}");
    let new_shares: Vec<String> =
        operators.iter().zip(strings(&done["keys"])).map(|(op, share)| op.decrypt_hex(&share)).collect();
    let (status, backup) = node.get("sys/rekey/recovery-key-backup", r);
    assert_eq!(status, 200, "{backup}");
    assert_eq!(backup["data"]["keys"][&operators[1].fingerprint], json!([done["keys"][1]]));
    assert_eq!(node.get("sys/rekey/backup", r).0, 400, "the unseal-key backup is another record");

    // The new recovery shares reopen a node sealed by hand.
    assert_eq!(node.put("sys/seal", r, json!({})).0, 204);
    node.unseal(&new_shares);
}

#[test]
fn a_wrong_token_or_key_name_leaves_the_node_uninitialised() {
    let unsealer = Unsealer::start();
    let token = unsealer.token();
    for (token, key_name, expected) in [("not-a-token", "autounseal", "403"), (token.as_str(), "no-such-key", "403")] {
        let node = auto_unsealing(&unsealer, token, key_name);
        let (code, body) = node.put("sys/init", None, json!({ "recovery_shares": 1, "recovery_threshold": 1 }));
        assert_eq!(code, 500, "{body}");
        let error = body["errors"][0].as_str().unwrap();
        assert!(error.contains("the seal could not be used") && error.contains(expected), "{error}");
        assert!(!error.contains(token), "the token leaked into the error: {error}");
        assert_eq!(node.get("sys/init", None).1["initialized"], false, "a failed init left a half-initialised node");
    }
}

#[test]
fn the_seal_token_is_renewed_while_the_node_runs() {
    let unsealer = Unsealer::start();
    let (status, body) = unsealer.server.put(
        "auth/token/create-orphan",
        Some(&unsealer.root),
        json!({ "policies": ["autounseal"], "period": "4s" }),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let node = auto_unsealing(&unsealer, &token, "autounseal");
    recovery_init(&node, 1, 1);
    // The node renews at half the TTL: the transit server records a renewal within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, lookup) =
            unsealer.server.put("auth/token/lookup", Some(&unsealer.root), json!({ "token": token }));
        assert_eq!(status, 200, "the seal's token expired: {lookup}");
        if lookup["data"]["last_renewal_time"].is_number() {
            break;
        }
        assert!(Instant::now() < deadline, "the seal's token was never renewed: {lookup}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_unimplemented_seal_type_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.hcl");
    std::fs::write(&config, sled_config(dir.path(), "", "seal \"awskms\" {\n  kms_key_id = \"k\"\n}\n")).unwrap();
    let output = Command::new(binary()).arg("server").arg(format!("-config={}", config.display())).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported seal type \"awskms\""), "{stderr}");

    // A transit-sealed store does not open under a config without its seal.
    let unsealer = Unsealer::start();
    let token = unsealer.token();
    let mut node = auto_unsealing(&unsealer, &token, "autounseal");
    // The CLI sees the auto seal and asks for recovery shares, as Vault's does.
    let (code, stdout, stderr) =
        node.cli(&["operator", "init", "-recovery-shares=2", "-recovery-threshold=2", "-format=json"], None);
    assert_eq!(code, 0, "{stderr}");
    let init: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(init["recovery_keys_hex"].as_array().unwrap().len(), 2, "{init}");
    assert_eq!((init["unseal_keys_hex"].clone(), init["recovery_keys_threshold"].clone()), (json!([]), json!(2)));
    wait_sealed(&node, false);
    node.stop();
    std::fs::write(&node.config_path, sled_config(node.dir.path(), "", "")).unwrap();
    let output =
        Command::new(binary()).arg("server").arg(format!("-config={}", node.config_path.display())).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sealed by a seal \"transit\""), "{stderr}");
}

#[test]
fn seals_migrate_from_shamir_to_transit_and_back_without_losing_data() {
    let unsealer = Unsealer::start();
    let token = unsealer.token();
    let mut node = TestServer::start();
    let init = node.init(3, 2);
    node.unseal(&init.keys);
    let r = Some(init.root_token.as_str());
    assert_eq!(node.put("sys/mounts/secret", r, json!({ "type": "kv" })).0, 204);
    assert_eq!(node.put("secret/app", r, json!({ "password": "hunter2" })).0, 204);
    let read_back = |node: &TestServer| node.get("secret/app", r).1["data"]["password"].clone();

    // Shamir -> transit: add the seal block, restart, give the unseal shares with migrate.
    node.stop();
    let base = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, format!("{base}{}", seal_block(&unsealer, &token, "autounseal"))).unwrap();
    node.launch();
    let (_, status) = node.get("sys/seal-status", None);
    assert_eq!(
        (status["migration"].clone(), status["sealed"].clone(), status["t"].clone()),
        (json!(true), json!(true), json!(2))
    );
    let (code, body) = node.put("sys/unseal", None, json!({ "key": init.keys[0] }));
    assert_eq!(code, 400, "a share without migrate is refused while migrating: {body}");
    let (code, stdout, stderr) = node.cli(&["operator", "unseal", "-migrate", &init.keys[0]], None);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, body) = node.put("sys/unseal", None, json!({ "key": init.keys[1], "migrate": true }));
    assert_eq!((code, body["sealed"].clone()), (200, json!(false)), "{body}");
    assert_eq!(
        (body["type"].clone(), body["recovery_seal"].clone(), body["migration"].clone()),
        (json!("transit"), json!(true), json!(false))
    );
    assert_eq!(read_back(&node), "hunter2");
    // Now it unseals itself; the old unseal shares are its recovery shares.
    node.restart();
    wait_sealed(&node, false);
    assert_eq!(read_back(&node), "hunter2");
    assert_eq!(node.put("sys/seal", r, json!({})).0, 204);
    node.unseal(&init.keys[1..]);
    assert_eq!(read_back(&node), "hunter2");

    // Transit -> Shamir: mark the block disabled, restart, give the recovery shares with migrate.
    node.stop();
    let disabled = seal_block(&unsealer, &token, "autounseal")
        .replace("seal \"transit\" {", "seal \"transit\" {\n  disabled = \"true\"");
    std::fs::write(&node.config_path, format!("{base}{disabled}")).unwrap();
    node.launch();
    let status = wait_sealed(&node, true);
    assert_eq!(status["migration"], true, "{status}");
    for key in &init.keys[..2] {
        node.put("sys/unseal", None, json!({ "key": key, "migrate": true }));
    }
    let status = wait_sealed(&node, false);
    assert_eq!((status["type"].clone(), status["recovery_seal"].clone()), (json!("shamir"), json!(false)));
    assert_eq!(read_back(&node), "hunter2");
    // Without any seal block, the same shares unseal it, with no unsealer involved.
    node.stop();
    std::fs::write(&node.config_path, &base).unwrap();
    node.launch();
    node.unseal(&init.keys[..2]);
    assert_eq!(read_back(&node), "hunter2");
}

/// Whether `node` answers `sys/leader` as the active node.
fn is_active(node: &TestServer) -> bool {
    let (status, body) = node.get("sys/leader", None);
    status == 200 && body["is_self"] == json!(true)
}

#[test]
fn ha_nodes_on_etcd_unseal_themselves_and_fail_over() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cluster = runtime.block_on(arcanum_storage::etcd_harness::EtcdCluster::start(1));
    let unsealer = Unsealer::start();
    let token = unsealer.token();
    let storage = "ha_enabled = \"true\"\n  lock_timeout = \"3s\"\n  request_timeout = \"2s\"";
    let config = format!(
        "{}\n{}",
        arcanum_tests::etcd_config(&cluster.endpoints(), storage),
        seal_block(&unsealer, &token, "autounseal")
    );
    let mut nodes: Vec<TestServer> = (0..2).map(|_| TestServer::start_with(|_| config.clone())).collect();
    let (_, root) = recovery_init(&nodes[0], 1, 1);
    let r = Some(root.as_str());
    // Both unseal without a share: the first at init, the second on its own next attempt.
    for node in &nodes {
        wait_sealed(node, false);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let active = loop {
        match (is_active(&nodes[0]), is_active(&nodes[1])) {
            (true, false) => break 0,
            (false, true) => break 1,
            (true, true) => panic!("two active nodes"),
            (false, false) => {}
        }
        assert!(Instant::now() < deadline, "no node became active");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(nodes[active].put("sys/mounts/secret", r, json!({ "type": "kv" })).0, 204);
    assert_eq!(nodes[active].put("secret/app", r, json!({ "password": "hunter2" })).0, 204);

    // The active dies; the other takes over; the dead one restarts and unseals as a standby.
    nodes[active].kill();
    let survivor = 1 - active;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_active(&nodes[survivor]) {
        assert!(Instant::now() < deadline, "the standby did not take over");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(nodes[survivor].get("secret/app", r).1["data"]["password"], "hunter2");
    nodes[active].launch();
    wait_sealed(&nodes[active], false);
    assert_eq!(nodes[active].get("sys/health", None).0, 429, "the restarted node is a standby");
    assert_eq!(nodes[active].get("secret/app", r).1["data"]["password"], "hunter2", "forwarded to the active");
}
