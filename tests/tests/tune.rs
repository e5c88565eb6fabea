//! End to end: `sys/mounts/:path/tune` and `sys/auth/:path/tune` read and write every field
//! Vault has, a Go-client tune (empty TTL strings, null options) changes only what it names,
//! and the audit HMAC exemptions a tune sets take effect in the audit log.

use arcanum_tests::TestServer;
use serde_json::{json, Value};

fn ready() -> (TestServer, String) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    (server, init.root_token)
}

#[test]
fn every_tune_field_reads_back_on_secret_and_auth_mounts() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/mounts/kv", r, json!({ "type": "kv", "options": { "version": "1" } })).0, 204);
    assert_eq!(server.put("sys/auth/userpass", r, json!({ "type": "userpass" })).0, 204);
    let tune = json!({
        "default_lease_ttl": "1h",
        "max_lease_ttl": "2h",
        "description": "team secrets",
        "audit_non_hmac_request_keys": ["username"],
        "audit_non_hmac_response_keys": ["username", "role"],
        "listing_visibility": "unauth",
        "passthrough_request_headers": ["X-Team"],
        "allowed_response_headers": ["X-Trace"],
    });
    for (path, extra) in [
        ("sys/mounts/kv/tune", json!({ "options": { "version": "2" } })),
        ("sys/auth/userpass/tune", json!({ "token_type": "service" })),
    ] {
        let mut body = tune.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, answer) = server.put(path, r, body);
        assert!(status == 204 || status == 200, "{path}: {answer}");
        let (status, read) = server.get(path, r);
        assert_eq!(status, 200, "{read}");
        let data = &read["data"];
        assert_eq!((data["default_lease_ttl"].clone(), data["max_lease_ttl"].clone()), (json!(3600), json!(7200)));
        for field in [
            "description",
            "audit_non_hmac_request_keys",
            "audit_non_hmac_response_keys",
            "listing_visibility",
            "passthrough_request_headers",
            "allowed_response_headers",
        ] {
            assert_eq!(data[field], tune[field], "{path}: {field}");
            assert_eq!(read[field], tune[field], "{path}: {field} is at the top level too");
        }
        if path.starts_with("sys/auth") {
            assert_eq!(data["token_type"], "service");
        } else {
            assert_eq!(data["options"]["version"], "2", "the tune upgraded the KV mount");
        }
    }
    // The mount listing shows the tuned description and config.
    let (_, mounts) = server.get("sys/mounts", r);
    assert_eq!(mounts["data"]["kv/"]["description"], "team secrets");
    assert_eq!(mounts["data"]["kv/"]["config"]["listing_visibility"], "unauth");
    // listing_visibility=unauth shows the mount to a client without a token.
    let (status, listing) = server.get("sys/internal/ui/mounts", None);
    assert_eq!(status, 200, "{listing}");
    assert!(listing["data"]["secret"]["kv/"].is_object(), "{listing}");
}

#[test]
fn a_go_client_tune_changes_only_what_it_names_and_bad_values_change_nothing() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/mounts/kv", r, json!({ "type": "kv" })).0, 204);
    assert_eq!(server.put("sys/mounts/kv/tune", r, json!({ "default_lease_ttl": "1h", "max_lease_ttl": "2h" })).0, 204);
    // What the vault CLI sends for `vault secrets tune -description=x kv`.
    let go_client = json!({ "options": null, "default_lease_ttl": "", "max_lease_ttl": "", "force_no_cache": false, "description": "x" });
    assert_eq!(server.put("sys/mounts/kv/tune", r, go_client).0, 204);
    let (_, read) = server.get("sys/mounts/kv/tune", r);
    assert_eq!(
        (read["data"]["default_lease_ttl"].clone(), read["data"]["max_lease_ttl"].clone()),
        (json!(3600), json!(7200))
    );
    assert_eq!(read["data"]["description"], "x");

    for (body, message) in [
        (json!({ "default_lease_ttl": "3h" }), "default_lease_ttl cannot be greater than max_lease_ttl"),
        (json!({ "token_type": "service" }), "'token_type' can only be modified on auth mounts"),
        (json!({ "listing_visibility": "everyone" }), "invalid listing_visibility"),
    ] {
        let (status, answer) = server.put("sys/mounts/kv/tune", r, body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["errors"][0].as_str().unwrap().starts_with(message), "{body}: {answer}");
    }
    let (_, after) = server.get("sys/mounts/kv/tune", r);
    assert_eq!(after["data"], read["data"], "a refused tune changed nothing");

    assert_eq!(server.put("sys/auth/userpass", r, json!({ "type": "userpass" })).0, 204);
    let (status, answer) = server.put("sys/auth/userpass/tune", r, json!({ "token_type": "batch" }));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = server.put("sys/mounts/nope/tune", r, json!({ "description": "x" }));
    assert_eq!(status, 400, "{answer}");
}

fn audit_entries(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn tuned_audit_exemptions_take_effect() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let log = server.dir.path().join("audit.log");
    let (status, body) =
        server.put("sys/audit/file", r, json!({ "type": "file", "options": { "file_path": log.to_str().unwrap() } }));
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.put("sys/mounts/kv", r, json!({ "type": "kv" })).0, 204);
    let tune = json!({ "audit_non_hmac_request_keys": ["username"], "audit_non_hmac_response_keys": ["username"] });
    assert_eq!(server.put("sys/mounts/kv/tune", r, tune).0, 204);

    assert_eq!(server.put("kv/app", r, json!({ "username": "alice-in-clear", "password": "pw-hidden" })).0, 204);
    assert_eq!(server.get("kv/app", r).0, 200);
    let entries = audit_entries(&log);
    let request = entries.iter().find(|e| e["type"] == "request" && e["request"]["path"] == "kv/app").unwrap();
    assert_eq!(request["request"]["data"]["username"], "alice-in-clear", "{request}");
    assert!(request["request"]["data"]["password"].as_str().unwrap().starts_with("hmac-sha256:"), "{request}");
    let response = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["path"] == "kv/app" && e["request"]["operation"] == "read")
        .unwrap();
    assert_eq!(response["response"]["data"]["username"], "alice-in-clear", "{response}");
    assert!(response["response"]["data"]["password"].as_str().unwrap().starts_with("hmac-sha256:"), "{response}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("pw-hidden"));
}
