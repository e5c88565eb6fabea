//! End to end: bad input to policies and KV gets a clear 4xx and changes nothing.

use arcanum_tests::TestServer;
use serde_json::json;

#[test]
fn bad_policy_and_kv_input_is_refused_clearly_and_changes_nothing() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = Some(init.root_token.as_str());
    server.put("sys/mounts/secret", root, json!({ "type": "kv", "options": { "version": "2" } }));
    server.put("secret/data/app", root, json!({ "data": { "v": "original" } }));
    server.put("sys/policies/acl/good", root, json!({ "policy": "path \"a/*\" { capabilities = [\"read\"] }" }));

    let expect_400 = |method: &str, path: &str, body: serde_json::Value, needle: &str| {
        let (status, answer) = server.request(method, path, root, Some(&body));
        assert_eq!(status, 400, "{method} {path}: {answer}");
        let text = answer["errors"].to_string();
        assert!(text.contains(needle), "{method} {path}: expected {needle:?} in {text}");
    };
    // Invalid HCL names the line; an unknown capability names the capability.
    expect_400(
        "PUT",
        "sys/policies/acl/good",
        json!({ "policy": "path \"a/*\" {\n  capabilities = [\"read\"\n" }),
        "line",
    );
    expect_400(
        "PUT",
        "sys/policies/acl/good",
        json!({ "policy": "path \"a/*\" { capabilities = [\"raed\"] }" }),
        "raed",
    );
    expect_400("PUT", "sys/policies/acl/good", json!({ "policy": "" }), "policy");
    expect_400("PUT", "sys/policies/acl/root", json!({ "policy": "path \"*\" { capabilities = [\"read\"] }" }), "root");
    let (_, stored) = server.get("sys/policies/acl/good", root);
    assert!(stored["data"]["policy"].as_str().unwrap().contains("\"read\""), "a refused write changed the policy");

    // KV v2: non-object data, missing data, CAS mismatch, huge key.
    expect_400("PUT", "secret/data/app", json!({ "data": "not an object" }), "data must be a JSON object");
    expect_400("PUT", "secret/data/app", json!({ "nothing": 1 }), "no data provided");
    expect_400(
        "PUT",
        "secret/data/app",
        json!({ "data": { "v": "x" }, "options": { "cas": 7 } }),
        "did not match the current version",
    );
    let huge = "k".repeat(5000);
    expect_400("PUT", &format!("secret/data/{huge}"), json!({ "data": { "v": "x" } }), "too long");
    expect_400("PUT", "secret/metadata/app", json!({ "max_versions": "many" }), "max_versions");
    expect_400("PUT", "secret/undelete/app", json!({ "versions": "x,y" }), "versions");
    let (_, read) = server.get("secret/data/app", root);
    assert_eq!(read["data"]["data"]["v"], json!("original"));
    assert_eq!(read["data"]["metadata"]["version"], json!(1));

    // A version that does not exist, and a path that does not exist: 404 with no errors.
    let (status, body) = server.get("secret/data/app?version=9", root);
    assert_eq!((status, body), (404, json!({ "errors": [] })));
    assert_eq!(server.get("secret/data/nothing", root).0, 404);
    // Paths without data/ on a v2 mount are 404 with a pointer to the right path.
    let (status, body) = server.get("secret/app", root);
    assert_eq!(status, 404);
    assert!(body["errors"].to_string().contains("data/"), "{body}");
    // cas_required makes writes without cas fail.
    server.put("secret/config", root, json!({ "cas_required": true }));
    expect_400("PUT", "secret/data/app", json!({ "data": { "v": "x" } }), "check-and-set parameter required");
    assert_eq!(server.put("secret/data/app", root, json!({ "data": { "v": "x" }, "options": { "cas": 1 } })).0, 200);
}
