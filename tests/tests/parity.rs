//! End to end: answers that must read exactly as Vault's, for clients that match on them —
//! unknown plugin types, unknown audit devices, KV v2 check-and-set errors, malformed token
//! headers, and the privacy of another token's cubbyhole.

use arcanum_tests::TestServer;
use serde_json::{json, Value};

fn ready() -> (TestServer, String) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    (server, init.root_token)
}

fn first_error(body: &Value) -> &str {
    body["errors"][0].as_str().unwrap_or_default()
}

#[test]
fn unknown_plugin_types_and_audit_devices_are_refused_in_vaults_words() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    for path in ["sys/mounts/nosuch", "sys/auth/nosuch"] {
        let (status, body) = server.put(path, r, json!({ "type": "no-such-plugin" }));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(first_error(&body).starts_with("plugin not found in the catalog"), "{path}: {body}");
    }
    let (status, body) = server.put("sys/audit-hash/nope", r, json!({ "input": "x" }));
    assert_eq!(status, 400, "{body}");
    assert!(first_error(&body).starts_with("unknown audit backend"), "{body}");
}

#[test]
fn kv_v2_check_and_set_errors_match_vault() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/mounts/secret", r, json!({ "type": "kv", "options": { "version": "2" } })).0, 204);
    assert_eq!(server.put("secret/data/a", r, json!({ "data": { "v": 1 } })).0, 200);
    let write = |cas: Value| server.put("secret/data/a", r, json!({ "data": { "v": 2 }, "options": { "cas": cas } }));

    let (status, body) = write(json!("abc"));
    assert_eq!((status, first_error(&body)), (400, "error parsing check-and-set parameter"));
    let (status, body) = write(json!(-1));
    assert_eq!((status, first_error(&body)), (400, "check-and-set parameter did not match the current version"));
    let (status, body) = write(json!("1"));
    assert_eq!((status, body["data"]["version"].clone()), (200, json!(2)), "a numeric string is a number: {body}");

    assert_eq!(server.put("secret/config", r, json!({ "cas_required": true })).0, 204);
    let (status, body) = server.put("secret/data/a", r, json!({ "data": { "v": 3 } }));
    assert_eq!((status, first_error(&body)), (400, "check-and-set parameter required for this call"));
    // Nothing was half-written by the refusals.
    let (_, read) = server.get("secret/data/a", r);
    assert_eq!((read["data"]["data"]["v"].clone(), read["data"]["metadata"]["version"].clone()), (json!(2), json!(2)));
}

#[test]
fn a_malformed_token_header_is_refused_not_treated_as_absent() {
    let (server, root) = ready();
    let get = |name: &str, value: &[u8]| {
        let client = reqwest::blocking::Client::new();
        let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
        let response =
            client.get(format!("{}/v1/auth/token/lookup-self", server.addr)).header(name, value).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    for (name, value) in [
        ("X-Vault-Token", &b"hvs.abc\xff"[..]),
        ("X-Vault-Token", b"hvs.a b"),
        ("X-Vault-Token", b"hvs.a\tb"),
        ("Authorization", b"Bearer hvs.a\xe9b"),
    ] {
        let (status, body) = get(name, value);
        assert_eq!(status, 400, "{name}: {value:?}: {body}");
        assert!(first_error(&body).starts_with(&format!("malformed {name} header")), "{body}");
    }
    // A well-formed but unknown token is the usual 403; surrounding spaces are tolerated.
    assert_eq!(get("X-Vault-Token", b"hvs.unknown").0, 403);
    assert_eq!(get("X-Vault-Token", format!(" {root} ").as_bytes()).0, 200);
    assert_eq!(get("Authorization", format!("Bearer {root}").as_bytes()).0, 200);
}

#[test]
fn another_tokens_cubbyhole_cannot_be_read_even_by_root() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let (_, child) = server.put("auth/token/create", r, json!({ "policies": ["default"] }));
    let child = child["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(server.put("cubbyhole/private", Some(&child), json!({ "pin": "1234" })).0, 204);
    assert_eq!(server.get("cubbyhole/private", Some(&child)).1["data"]["pin"], "1234");

    // Root sees its own, empty cubbyhole: Vault's bare 404, nothing about the child's.
    assert_eq!(server.get("cubbyhole/private", r), (404, json!({ "errors": [] })));
    assert_eq!(server.request("LIST", "cubbyhole/", r, None), (404, json!({ "errors": [] })));
    let (_, other) = server.put("auth/token/create", r, json!({ "policies": ["default"] }));
    let other = other["auth"]["client_token"].as_str().unwrap();
    assert_eq!(server.get("cubbyhole/private", Some(other)), (404, json!({ "errors": [] })));
    // Naming the child's storage folder does not reach it either.
    assert_eq!(server.get(&format!("cubbyhole/{child}/private"), r).0, 404);
}
