//! End to end: `sys/quotas/*` — per-client rate limits (429 with Vault's body, exempt paths,
//! block intervals, response headers) and lease-count quotas that stop a client from piling
//! up login tokens, surviving a restart.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use arcanum_tests::{metric, TestServer};
use serde_json::{json, Value};

fn ready() -> (TestServer, String) {
    let (server, init) = ready_with_keys();
    (server, init.root_token)
}

fn ready_with_keys() -> (TestServer, arcanum_tests::Init) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let (status, body) =
        server.put("sys/mounts/secret", Some(&root), json!({ "type": "kv", "options": { "version": "2" } }));
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.put("secret/data/app", Some(&root), json!({ "data": { "k": "v" } })).0, 200);
    (server, init)
}

/// A client whose requests come from `source` (any 127.x address reaches the server).
fn client_from(source: Ipv4Addr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get_status(client: &reqwest::blocking::Client, server: &TestServer, path: &str, token: &str) -> u16 {
    client.get(format!("{}/v1/{path}", server.addr)).header("X-Vault-Token", token).send().unwrap().status().as_u16()
}

#[test]
fn rate_limits_apply_per_client_to_the_most_specific_path_and_answer_429() {
    let (server, root) = ready();
    let token = root.as_str();
    let root = Some(token);
    // A generous global quota and a tight one on the mount: the mount's wins there.
    assert_eq!(server.put("sys/quotas/rate-limit/global", root, json!({ "path": "", "rate": 1000 })).0, 204);
    let (status, body) =
        server.put("sys/quotas/rate-limit/kv", root, json!({ "path": "secret/", "rate": 5, "interval": "1h" }));
    assert_eq!(status, 204, "{body}");
    let (status, quota) = server.get("sys/quotas/rate-limit/kv", root);
    assert_eq!(status, 200, "{quota}");
    assert_eq!(quota["data"]["type"], "rate-limit");
    assert_eq!(quota["data"]["path"], "secret/");
    assert_eq!(quota["data"]["rate"], json!(5.0));
    assert_eq!(quota["data"]["interval"], json!(3600));
    assert_eq!(quota["data"]["block_interval"], json!(0));

    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let statuses: Vec<u16> = (0..12).map(|_| get_status(&first, &server, "secret/data/app", token)).collect();
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let refused =
        first.get(format!("{}/v1/secret/data/app", server.addr)).header("X-Vault-Token", token).send().unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().unwrap();
    assert_eq!(body, json!({ "errors": ["request path \"secret/data/app\": rate limit quota exceeded"] }));

    // Another client has its own bucket; other mounts follow the global quota; health is exempt.
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(get_status(&second, &server, "secret/data/app", token), 200);
    assert_eq!(get_status(&first, &server, "sys/mounts", token), 200);
    assert_eq!(server.put("sys/quotas/rate-limit/global", root, json!({ "rate": 1, "interval": "1h" })).0, 204);
    for _ in 0..5 {
        assert_eq!(get_status(&first, &server, "sys/health", token), 200, "sys/health is exempt");
    }
    assert_eq!(get_status(&first, &server, "sys/mounts", token), 200);
    assert_eq!(get_status(&first, &server, "sys/mounts", token), 429, "the global quota is now 1 an hour");
    assert_eq!(get_status(&second, &server, "sys/mounts", token), 200);
    // Lifting it is a request too: from a third address, whose bucket still holds its one request.
    let third = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let lifted =
        third.delete(format!("{}/v1/sys/quotas/rate-limit/global", server.addr)).header("X-Vault-Token", token).send();
    assert_eq!(lifted.unwrap().status().as_u16(), 204);

    // Response headers on request (Vault's opt-in).
    assert_eq!(server.put("sys/quotas/config", root, json!({ "enable_rate_limit_response_headers": true })).0, 204);
    let refused =
        first.get(format!("{}/v1/secret/data/app", server.addr)).header("X-Vault-Token", token).send().unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["x-ratelimit-limit"], "5");
    assert!(refused.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    let metrics = server.metrics_text(root);
    let rejected = metric(&metrics, r#"arcanum_quota_rejections_total{name="kv",quota_type="rate-limit"}"#);
    assert_eq!(rejected, Some(9.0), "{metrics}");
    let global = metric(&metrics, r#"arcanum_quota_rejections_total{name="global",quota_type="rate-limit"}"#);
    assert_eq!(global, Some(1.0), "{metrics}");

    // Deleting the quota lifts it.
    assert_eq!(server.request("DELETE", "sys/quotas/rate-limit/kv", root, None).0, 204);
    for _ in 0..10 {
        assert_eq!(get_status(&first, &server, "secret/data/app", token), 200);
    }
    let (status, _) = server.get("sys/quotas/rate-limit/kv", root);
    assert_eq!(status, 404);
}

#[test]
fn block_interval_keeps_a_client_out_after_it_hits_the_limit() {
    let (server, root) = ready();
    let (status, body) = server.put(
        "sys/quotas/rate-limit/tight",
        Some(&root),
        json!({ "path": "secret/data/app", "rate": 2, "interval": "4s", "block_interval": "5s" }),
    );
    assert_eq!(status, 204, "{body}");
    let client = client_from(Ipv4Addr::LOCALHOST);
    assert_eq!(get_status(&client, &server, "secret/data/app", &root), 200);
    assert_eq!(get_status(&client, &server, "secret/data/app", &root), 200);
    assert_eq!(get_status(&client, &server, "secret/data/app", &root), 429);
    let blocked_at = Instant::now();
    // An exact-path quota leaves the rest of the mount alone.
    assert_eq!(get_status(&client, &server, "secret/metadata/app", &root), 200);
    // Without the block the bucket would refill one request within 2 s; the block holds for 5 s.
    let deadline = Duration::from_secs(20);
    while get_status(&client, &server, "secret/data/app", &root) == 429 {
        assert!(blocked_at.elapsed() < deadline, "still blocked after {deadline:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let blocked_for = blocked_at.elapsed();
    assert!(blocked_for >= Duration::from_millis(4500), "unblocked after only {blocked_for:?}");
}

#[test]
fn lease_count_quota_caps_login_tokens_and_counts_again_after_restart() {
    let (mut server, init) = ready_with_keys();
    let root = Some(init.root_token.as_str());
    assert_eq!(server.put("sys/auth/userpass", root, json!({ "type": "userpass" })).0, 204);
    assert_eq!(server.put("auth/userpass/users/ci", root, json!({ "password": "reconcile" })).0, 204);
    let (status, body) =
        server.put("sys/quotas/lease-count/logins", root, json!({ "path": "auth/userpass/", "max_leases": 3 }));
    assert_eq!(status, 204, "{body}");

    let login = |server: &TestServer| server.put("auth/userpass/login/ci", None, json!({ "password": "reconcile" }));
    let tokens: Vec<String> = (0..3)
        .map(|_| {
            let (status, body) = login(&server);
            assert_eq!(status, 200, "{body}");
            body["auth"]["client_token"].as_str().unwrap().to_owned()
        })
        .collect();
    let (status, body) = login(&server);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body, json!({ "errors": ["request path \"auth/userpass/login/ci\": lease count quota exceeded"] }));
    let (_, quota) = server.get("sys/quotas/lease-count/logins", root);
    assert_eq!(quota["data"]["counter"], json!(3), "{quota}");
    assert_eq!(quota["data"]["max_leases"], json!(3));
    // Only requests that could create a lease or token wait: reads and writes under the same
    // mount, other mounts, sys/ and the token store's revoke go on.
    assert_eq!(server.get("auth/userpass/users/ci", root).0, 200);
    assert_eq!(server.put("auth/userpass/users/other", root, json!({ "password": "x" })).0, 204);
    assert_eq!(server.get("secret/data/app", root).0, 200);
    assert_eq!(server.put("auth/token/revoke-self", Some(&tokens[0]), json!({})).0, 204);
    let (status, body) = login(&server);
    assert_eq!(status, 200, "a revoked token frees its slot: {body}");

    // After a restart the count is rebuilt from what is stored.
    server.restart();
    let (status, _) = server.get("sys/quotas/lease-count/logins", root);
    assert_eq!(status, 503, "sealed after restart");
    server.unseal(&init.keys);
    let (_, quota) = server.get("sys/quotas/lease-count/logins", root);
    assert_eq!(quota["data"]["counter"], json!(3), "{quota}");
    assert_eq!(login(&server).0, 429);
    let (_, names) = server.request("LIST", "sys/quotas/lease-count", root, None);
    assert_eq!(names["data"]["keys"], json!(["logins"]));
}

#[test]
fn bad_quota_input_is_refused_clearly_and_nothing_is_stored() {
    let (server, root) = ready();
    let root = Some(root.as_str());
    assert_eq!(server.put("sys/auth/userpass", root, json!({ "type": "userpass" })).0, 204);
    let cases = [
        ("sys/quotas/rate-limit/q", json!({ "rate": 0 }), "rate must be positive"),
        ("sys/quotas/rate-limit/q", json!({ "rate": -3 }), "rate must be positive"),
        ("sys/quotas/rate-limit/q", json!({ "rate": "fast" }), "rate must be a number"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1, "path": "nowhere/" }), "invalid mount path"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1, "path": "secret/*/x" }), "glob"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1, "interval": "soon" }), "invalid interval"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1, "path": "auth/userpass/", "role": "r" }), "role"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1, "type": "lease-count" }), "type must be"),
        ("sys/quotas/rate-limit/q", json!({ "rate": 1e-20 }), "at least one request a year"),
        ("sys/quotas/rate-limit/team/q", json!({ "rate": 1 }), "cannot contain '/'"),
        ("sys/quotas/lease-count/team/q", json!({ "max_leases": 1 }), "cannot contain '/'"),
        ("sys/quotas/lease-count/q", json!({ "max_leases": 0 }), "max_leases"),
        ("sys/quotas/lease-count/q", json!({ "max_leases": -1 }), "max_leases"),
        ("sys/quotas/config", json!({ "enable_rate_limit_audit_logging": true }), "not supported"),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = server.put(path, root, body.clone());
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let message = answer["errors"][0].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{path} {body}: {message:?} should mention {expected:?}");
    }
    assert_eq!(server.get("sys/quotas/rate-limit/q", root).0, 404);
    assert_eq!(server.get("sys/quotas/lease-count/q", root).0, 404);
    let (status, config) = server.get("sys/quotas/config", root);
    assert_eq!(status, 200);
    assert_eq!(config["data"]["enable_rate_limit_audit_logging"], json!(false));
    assert!(config["data"]["rate_limit_exempt_paths"].as_array().unwrap().contains(&json!("sys/health")));
    // Quotas are for operators: a default-policy token may not write them.
    let (_, created) = server.put("auth/token/create", root, json!({ "policies": ["default"] }));
    let plain = created["auth"]["client_token"].as_str().unwrap();
    assert_eq!(server.put("sys/quotas/rate-limit/q", Some(plain), json!({ "rate": 1 })).0, 403);
}
