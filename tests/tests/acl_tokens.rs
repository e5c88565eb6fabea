//! End to end: policies enforced on every path, and the token lifecycle, against the real
//! binary.

use std::time::{Duration, Instant};

use arcanum_tests::TestServer;
use serde_json::{json, Value};

/// An unsealed server with KV v2 at `secret/`, KV v1 at `kv/`; returns (server, root token).
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
    let (status, body) = server.put("sys/mounts/kv", Some(&root), json!({ "type": "kv" }));
    assert_eq!(status, 204, "{body}");
    (server, init)
}

fn policy(server: &TestServer, root: &str, name: &str, text: &str) {
    let (status, body) = server.put(&format!("sys/policies/acl/{name}"), Some(root), json!({ "policy": text }));
    assert_eq!(status, 204, "{name}: {body}");
}

fn token(server: &TestServer, root: &str, body: Value) -> (String, Value) {
    let (status, answer) = server.put("auth/token/create", Some(root), body);
    assert_eq!(status, 200, "{answer}");
    (answer["auth"]["client_token"].as_str().unwrap().to_owned(), answer)
}

#[test]
fn policies_are_enforced_on_allowed_denied_and_neighbouring_paths() {
    let (server, root) = ready();
    for (path, value) in [("a", "A"), ("ab", "AB"), ("a/b", "AB2"), ("private/x", "P"), ("team/one", "T1")] {
        let (status, body) = server.put(&format!("secret/data/{path}"), Some(&root), json!({ "data": { "v": value } }));
        assert_eq!(status, 200, "{path}: {body}");
    }
    server.put("kv/a", Some(&root), json!({ "v": "kvA" }));
    policy(
        &server,
        &root,
        "app",
        r#"
path "secret/data/a" { capabilities = ["read", "update"] }
path "secret/data/team/*" { capabilities = ["create", "read"] }
path "secret/data/+/open" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["list"] }
path "secret/metadata/private/*" { capabilities = ["deny"] }
path "kv/a" { capabilities = ["read"] }
"#,
    );
    let (app, _) = token(&server, &root, json!({ "policies": ["app"] }));
    let app = Some(app.as_str());

    // (method, path, body, expected status)
    let matrix: Vec<(&str, &str, Option<Value>, u16)> = vec![
        ("GET", "secret/data/a", None, 200),
        ("GET", "secret/data/ab", None, 403),
        ("GET", "secret/data/a/b", None, 403),
        ("GET", "secret/data/a/", None, 403),
        ("PUT", "secret/data/a", Some(json!({ "data": { "v": "changed" } })), 200),
        ("DELETE", "secret/data/a", None, 403),
        ("PUT", "secret/data/ab", Some(json!({ "data": { "v": "hijack" } })), 403),
        ("GET", "secret/data/team/one", None, 200),
        ("PUT", "secret/data/team/two", Some(json!({ "data": { "v": "new" } })), 200),
        ("PUT", "secret/data/team/one", Some(json!({ "data": { "v": "overwrite" } })), 403),
        ("GET", "secret/data/private/x", None, 403),
        ("GET", "secret/data/x/open", None, 404),
        ("GET", "secret/data/x/y/open", None, 403),
        ("LIST", "secret/metadata/", None, 200),
        ("LIST", "secret/metadata/private/", None, 403),
        ("GET", "secret/metadata/a", None, 403),
        ("GET", "kv/a", None, 200),
        ("PUT", "kv/a", Some(json!({ "v": "x" })), 403),
        ("GET", "secret/data/a%2fb", None, 403),
        ("GET", "sys/mounts", None, 403),
        ("PUT", "sys/mounts/evil", Some(json!({ "type": "kv" })), 403),
        ("PUT", "sys/policies/acl/app", Some(json!({ "policy": "path \"*\" { capabilities = [\"sudo\"] }" })), 403),
        ("GET", "auth/token/lookup-self", None, 200),
        ("PUT", "auth/token/create", Some(json!({ "policies": ["root"] })), 403),
        ("PUT", "sys/seal", None, 403),
    ];
    for (method, path, body, expected) in &matrix {
        let (status, answer) = server.request(method, path, app, body.as_ref());
        assert_eq!(status, *expected, "{method} {path}: {answer}");
        if *expected == 403 {
            assert_eq!(answer["errors"], json!(["permission denied"]), "{method} {path}");
        }
    }
    // Denied writes left everything as it was.
    for (path, value) in [("ab", "AB"), ("team/one", "T1")] {
        let (_, body) = server.get(&format!("secret/data/{path}"), Some(&root));
        assert_eq!(body["data"]["data"]["v"], json!(value), "{path} was changed by a denied write");
    }
    assert_eq!(server.get("kv/a", Some(&root)).1["data"]["v"], json!("kvA"));
    assert_eq!(server.get("sys/mounts", Some(&root)).1["data"].get("evil/"), None);
    // The allowed write happened.
    assert_eq!(server.get("secret/data/a", Some(&root)).1["data"]["data"]["v"], json!("changed"));

    // capabilities-self and sys/capabilities agree with what just happened.
    let (status, caps) =
        server.put("sys/capabilities-self", app, json!({ "paths": ["secret/data/a", "secret/data/ab"] }));
    assert_eq!(status, 200, "{caps}");
    assert_eq!(caps["data"]["secret/data/a"], json!(["read", "update"]));
    assert_eq!(caps["data"]["secret/data/ab"], json!(["deny"]));
}

#[test]
fn parameter_constraints_and_sudo_are_enforced() {
    let (server, root) = ready();
    policy(
        &server,
        &root,
        "limited",
        r#"
path "kv/params" {
  capabilities = ["create", "update"]
  allowed_parameters = { "colour" = ["red", "blue"], "size" = [] }
  denied_parameters = { "size" = ["huge"] }
}
path "sys/mounts/*" { capabilities = ["create", "update", "read"] }
path "sys/auth/*" { capabilities = ["create", "update", "read"] }
"#,
    );
    let (limited, _) = token(&server, &root, json!({ "policies": ["limited"] }));
    let limited = Some(limited.as_str());
    assert_eq!(server.put("kv/params", limited, json!({ "colour": "red", "size": "small" })).0, 204);
    assert_eq!(server.put("kv/params", limited, json!({ "colour": "green" })).0, 403);
    assert_eq!(server.put("kv/params", limited, json!({ "size": "huge" })).0, 403);
    assert_eq!(server.put("kv/params", limited, json!({ "shape": "round" })).0, 403);
    assert_eq!(server.get("kv/params", Some(&root)).1["data"], json!({ "colour": "red", "size": "small" }));
    // sys/mounts/* needs no sudo; sys/auth/* does.
    assert_eq!(server.put("sys/mounts/team", limited, json!({ "type": "kv" })).0, 204);
    assert_eq!(server.put("sys/auth/userpass", limited, json!({ "type": "userpass" })).0, 403);
}

#[test]
fn token_lifecycle_follows_vault() {
    let (mut server, init) = ready_with_keys();
    let root = init.root_token.clone();
    policy(
        &server,
        &root,
        "reader",
        r#"
path "secret/data/*" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update"] }
"#,
    );

    // Lookup shape: numbers, booleans and a present expire_time, as ESO and agent parse them.
    let (parent, created) =
        token(&server, &root, json!({ "policies": ["reader"], "ttl": "1h", "explicit_max_ttl": "2h" }));
    assert_eq!(created["auth"]["lease_duration"], json!(3600));
    assert_eq!(created["auth"]["renewable"], json!(true));
    let (status, me) = server.get("auth/token/lookup-self", Some(&parent));
    assert_eq!(status, 200);
    assert!(me["data"]["ttl"].as_u64().unwrap() <= 3600);
    assert!(me["data"]["expire_time"].is_string());
    assert_eq!(me["data"]["type"], json!("service"));
    assert_eq!(me["data"]["id"], json!(parent));
    let (_, root_me) = server.get("auth/token/lookup-self", Some(&root));
    assert_eq!(root_me["data"]["expire_time"], Value::Null);
    assert_eq!(root_me["data"]["ttl"], json!(0));

    // Renew up to the max TTL, with a warning when capped.
    let (status, renewed) = server.put("auth/token/renew-self", Some(&parent), json!({ "increment": "10h" }));
    assert_eq!(status, 200, "{renewed}");
    assert!(renewed["auth"]["lease_duration"].as_u64().unwrap() <= 7200);
    assert!(renewed["warnings"].to_string().contains("capped"), "{renewed}");

    // A child of the parent, an orphan, and revocation of the parent.
    let (child, _) = token(&server, &parent, json!({ "policies": ["reader"] }));
    let (orphan, _) = {
        let (status, answer) = server.put("auth/token/create-orphan", Some(&parent), json!({ "policies": ["reader"] }));
        assert_eq!(status, 200, "{answer}");
        (answer["auth"]["client_token"].as_str().unwrap().to_owned(), answer)
    };
    let (_, child_lookup) = server.get("auth/token/lookup-self", Some(&child));
    let child_accessor = child_lookup["data"]["accessor"].as_str().unwrap().to_owned();
    assert_eq!(server.put("auth/token/revoke", Some(&root), json!({ "token": parent })).0, 204);
    for (name, token) in [("parent", &parent), ("child", &child)] {
        let (status, body) = server.get("auth/token/lookup-self", Some(token));
        assert_eq!(status, 403, "{name} still works after revoking the parent: {body}");
        assert!(body["errors"].to_string().contains("invalid token"));
    }
    assert_eq!(server.get("auth/token/lookup-self", Some(&orphan)).0, 200, "orphan must survive");
    let (status, _) = server.put("auth/token/lookup-accessor", Some(&root), json!({ "accessor": child_accessor }));
    assert_eq!(status, 400, "a revoked token's accessor must not resolve");

    // A child may not get policies its parent lacks.
    let (status, body) = server.put("auth/token/create", Some(&orphan), json!({ "policies": ["root"] }));
    assert_eq!(status, 400, "{body}");

    // num_uses: two uses, then gone.
    let (limited, _) = token(&server, &root, json!({ "policies": ["reader"], "num_uses": 2 }));
    assert_eq!(server.get("auth/token/lookup-self", Some(&limited)).0, 200);
    assert_eq!(server.get("auth/token/lookup-self", Some(&limited)).0, 200);
    assert_eq!(server.get("auth/token/lookup-self", Some(&limited)).0, 403);
    assert_eq!(server.put("auth/token/create", Some(&root), json!({ "num_uses": -1 })).0, 400);

    // TTL expiry: a 2 s token stops working by itself (polling with a deadline).
    let (short, _) = token(&server, &root, json!({ "policies": ["reader"], "ttl": "2s" }));
    assert_eq!(server.get("auth/token/lookup-self", Some(&short)).0, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if server.get("auth/token/lookup-self", Some(&short)).0 == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "a 2 s token still worked after 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Tokens survive restart + unseal; revoked ones stay revoked.
    let (durable, _) = token(&server, &root, json!({ "policies": ["reader"] }));
    server.restart();
    assert_eq!(server.get("auth/token/lookup-self", Some(&durable)).0, 503);
    server.unseal(&init.keys);
    assert_eq!(server.get("auth/token/lookup-self", Some(&durable)).0, 200);
    assert_eq!(server.get("auth/token/lookup-self", Some(&child)).0, 403);
}

#[test]
fn cubbyhole_is_private_to_each_token_and_goes_with_it() {
    let (server, root) = ready();
    let (one, _) = token(&server, &root, json!({ "policies": ["default"] }));
    let (two, _) = token(&server, &root, json!({ "policies": ["default"] }));
    assert_eq!(server.put("cubbyhole/note", Some(&one), json!({ "secret": "one's" })).0, 204);
    assert_eq!(server.get("cubbyhole/note", Some(&one)).1["data"]["secret"], json!("one's"));
    assert_eq!(server.get("cubbyhole/note", Some(&two)).0, 404);
    assert_eq!(server.get("cubbyhole/note", Some(&root)).0, 404);
    assert_eq!(server.put("auth/token/revoke-self", Some(&one), json!({})).0, 204);
    assert_eq!(server.get("cubbyhole/note", Some(&one)).0, 403);
}

#[test]
fn mounts_can_be_enabled_tuned_moved_and_disabled_with_their_data() {
    let (server, root) = ready();
    let root = Some(root.as_str());
    server.put("secret/data/keep", root, json!({ "data": { "v": 1 } }));
    let (status, info) = server.get("sys/internal/ui/mounts/secret/data/keep", root);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["data"]["options"]["version"], json!("2"));
    assert_eq!(info["data"]["type"], json!("kv"));
    assert_eq!(info["data"]["path"], json!("secret/"));

    assert_eq!(server.put("sys/mounts/secret", root, json!({ "type": "kv" })).0, 400);
    assert_eq!(server.put("sys/mounts/secret/nested", root, json!({ "type": "kv" })).0, 400);
    assert_eq!(server.put("sys/mounts/sys/x", root, json!({ "type": "kv" })).0, 400);
    assert_eq!(server.put("sys/mounts/bad", root, json!({ "type": "nosuchengine" })).0, 400);

    let (status, body) = server.put("sys/remount", root, json!({ "from": "secret", "to": "moved" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("moved/data/keep", root).1["data"]["data"]["v"], json!(1));
    assert_eq!(server.get("secret/data/keep", root).0, 404);

    assert_eq!(server.request("DELETE", "sys/mounts/moved", root, None).0, 204);
    assert_eq!(server.put("sys/mounts/moved", root, json!({ "type": "kv", "options": { "version": "2" } })).0, 204);
    assert_eq!(server.get("moved/data/keep", root).0, 404, "disabling a mount must delete its data");
    assert_eq!(server.request("DELETE", "sys/mounts/cubbyhole", root, None).0, 400);

    // KV v1 -> v2 upgrade keeps the data as version 1; a downgrade is refused.
    server.put("kv/app/config", root, json!({ "k": "v" }));
    server.put("kv/metadata/tricky", root, json!({ "named": "like a v2 record" }));
    let (status, body) = server.put("sys/mounts/kv/tune", root, json!({ "options": { "version": "2" } }));
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"].to_string().contains("Upgraded"), "{body}");
    let (_, read) = server.get("kv/data/app/config", root);
    assert_eq!(read["data"]["data"], json!({ "k": "v" }));
    assert_eq!(read["data"]["metadata"]["version"], json!(1));
    assert_eq!(server.get("kv/data/metadata/tricky", root).1["data"]["data"]["named"], json!("like a v2 record"));
    assert_eq!(server.put("sys/mounts/kv/tune", root, json!({ "options": { "version": "1" } })).0, 400);
}

#[test]
fn token_roles_limit_policies_and_shape_tokens() {
    let (server, root_token) = ready();
    let root = Some(root_token.as_str());
    for name in ["dev-app", "dev-db", "prod-db"] {
        policy(&server, &root_token, name, r#"path "secret/data/x" { capabilities = ["read"] }"#);
    }
    let (status, body) = server.put(
        "auth/token/roles/dev",
        root,
        json!({ "allowed_policies_glob": ["dev-*"], "disallowed_policies": "dev-db", "orphan": true, "token_period": "1h" }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, role) = server.get("auth/token/roles/dev", root);
    assert_eq!(status, 200);
    assert_eq!(role["data"]["token_period"], json!(3600));
    assert_eq!(server.request("LIST", "auth/token/roles", root, None).1["data"]["keys"], json!(["dev"]));

    let (status, created) = server.put("auth/token/create/dev", root, json!({ "policies": ["dev-app"] }));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["auth"]["orphan"], json!(true));
    assert_eq!(created["auth"]["lease_duration"], json!(3600));
    let token = created["auth"]["client_token"].as_str().unwrap();
    let (_, me) = server.get("auth/token/lookup-self", Some(token));
    assert_eq!(me["data"]["role"], json!("dev"));
    assert_eq!(me["data"]["period"], json!(3600));
    assert_eq!(me["data"]["path"], json!("auth/token/create/dev"));
    for refused in ["prod-db", "dev-db"] {
        let (status, body) = server.put("auth/token/create/dev", root, json!({ "policies": [refused] }));
        assert_eq!(status, 400, "{refused}: {body}");
    }
    assert_eq!(server.request("DELETE", "auth/token/roles/dev", root, None).0, 204);
    assert_eq!(server.put("auth/token/create/dev", root, json!({})).0, 400);
}
