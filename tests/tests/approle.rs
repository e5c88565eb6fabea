//! End to end: the AppRole auth method — roles and their field endpoints, role IDs, secret IDs
//! (generated, custom, looked up and destroyed by value and by accessor, listed, tidied), login
//! with Vault's auth block and refusals, CIDR bounds checked against the client's address,
//! exact single-use counting under concurrent logins, expiry, and the trusted-orchestrator flow
//! with a response-wrapped secret ID as vault agent runs it.

use std::time::{Duration, Instant};

use arcanum_tests::TestServer;
use serde_json::{json, Value};

const INVALID: &str = "invalid role or secret ID";

fn ready() -> (TestServer, String) {
    ready_with("")
}

/// [`ready`] with `extra` at the top level of the server's config.
fn ready_with(extra: &str) -> (TestServer, String) {
    let server = TestServer::start_with(|dir| arcanum_tests::sled_config(dir, "", extra));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token;
    assert_eq!(server.put("sys/auth/approle", Some(&root), json!({ "type": "approle" })).0, 204);
    let policy = "path \"secret/*\" { capabilities = [\"read\"] }";
    assert_eq!(server.put("sys/policies/acl/app", Some(&root), json!({ "policy": policy })).0, 204);
    (server, root)
}

fn error(body: &Value) -> &str {
    body["errors"][0].as_str().unwrap_or_default()
}

fn role_id(server: &TestServer, root: &str, role: &str) -> String {
    let (status, body) = server.get(&format!("auth/approle/role/{role}/role-id"), Some(root));
    assert_eq!(status, 200, "{body}");
    body["data"]["role_id"].as_str().unwrap().to_owned()
}

fn secret_id(server: &TestServer, root: &str, role: &str, body: Value) -> (String, String) {
    let (status, answer) = server.put(&format!("auth/approle/role/{role}/secret-id"), Some(root), body);
    assert_eq!(status, 200, "{answer}");
    let data = &answer["data"];
    (data["secret_id"].as_str().unwrap().to_owned(), data["secret_id_accessor"].as_str().unwrap().to_owned())
}

fn login(server: &TestServer, role_id: &str, secret_id: &str) -> (u16, Value) {
    server.put("auth/approle/login", None, json!({ "role_id": role_id, "secret_id": secret_id }))
}

#[test]
fn roles_role_ids_and_field_endpoints() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let (status, body) = server.put(
        "auth/approle/role/Web",
        r,
        json!({ "token_policies": "app", "token_ttl": "1h", "secret_id_ttl": "10m", "enable_local_secret_ids": true }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, role) = server.get("auth/approle/role/web", r);
    assert_eq!(status, 200, "role names are case-insensitive: {role}");
    let data = &role["data"];
    assert_eq!((data["bind_secret_id"].clone(), data["secret_id_ttl"].clone()), (json!(true), json!(600)));
    assert_eq!((data["token_policies"].clone(), data["token_ttl"].clone()), (json!(["app"]), json!(3600)));
    assert!(data.get("role_id").is_none(), "a role read never shows its role ID: {role}");
    let (_, list) = server.request("LIST", "auth/approle/role", r, None);
    assert_eq!(list["data"]["keys"], json!(["web"]));

    // Role IDs: generated, settable, unique.
    let generated = role_id(&server, &root, "web");
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(server.put("auth/approle/role/web/role-id", r, json!({ "role_id": "web-role-id" })).0, 204);
    assert_eq!(role_id(&server, &root, "web"), "web-role-id");
    assert_eq!(server.put("auth/approle/role/api", r, json!({ "role_id": "api-role-id" })).0, 204);
    let (status, body) = server.put("auth/approle/role/api/role-id", r, json!({ "role_id": "web-role-id" }));
    assert_eq!((status, error(&body)), (400, "role_id already in use"));

    // Field endpoints read, write and reset one field.
    let (_, policies) = server.get("auth/approle/role/web/policies", r);
    assert_eq!(policies["data"], json!({ "policies": ["app"], "token_policies": ["app"] }));
    assert_eq!(server.put("auth/approle/role/web/secret-id-num-uses", r, json!({ "secret_id_num_uses": 5 })).0, 204);
    assert_eq!(server.get("auth/approle/role/web/secret-id-num-uses", r).1["data"]["secret_id_num_uses"], 5);
    assert_eq!(server.request("DELETE", "auth/approle/role/web/secret-id-num-uses", r, None).0, 204);
    assert_eq!(server.get("auth/approle/role/web/secret-id-num-uses", r).1["data"]["secret_id_num_uses"], 0);
    assert_eq!(server.put("auth/approle/role/web/token-ttl", r, json!({ "token_ttl": "30m" })).0, 204);
    assert_eq!(server.get("auth/approle/role/web", r).1["data"]["token_ttl"], 1800);

    // A role with nothing binding a login is refused, as is a bad CIDR; neither is stored.
    let (status, body) = server.put("auth/approle/role/open", r, json!({ "bind_secret_id": false }));
    assert_eq!((status, error(&body)), (400, "at least one constraint should be enabled on the role"));
    let (status, body) = server.put("auth/approle/role/open", r, json!({ "secret_id_bound_cidrs": "10.0.0.0/99" }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.get("auth/approle/role/open", r).0, 404);

    assert_eq!(server.request("DELETE", "auth/approle/role/web", r, None).0, 204);
    assert_eq!(server.get("auth/approle/role/web", r).0, 404);
    let (status, _) = login(&server, "web-role-id", "anything");
    assert_eq!(status, 400, "a deleted role's ID logs nobody in");
}

#[test]
fn secret_ids_are_generated_looked_up_listed_and_destroyed() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(
        server.put("auth/approle/role/web", r, json!({ "secret_id_num_uses": 3, "secret_id_ttl": "1h" })).0,
        204
    );
    let (status, body) = server.put("auth/approle/role/nope/secret-id", r, json!({}));
    assert_eq!((status, error(&body)), (404, "role \"nope\" does not exist"));
    let (status, body) = server.put("auth/approle/role/web/secret-id", r, json!({ "num_uses": 5 }));
    assert_eq!((status, error(&body)), (400, "num_uses cannot be higher than the role's secret_id_num_uses"));

    let (status, answer) = server.put(
        "auth/approle/role/web/secret-id",
        r,
        json!({ "metadata": "{\"team\":\"payments\"}", "cidr_list": "127.0.0.1/32", "num_uses": 2, "ttl": "10m" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["data"]["secret_id_ttl"].clone(), answer["data"]["secret_id_num_uses"].clone()),
        (json!(600), json!(2))
    );
    let secret = answer["data"]["secret_id"].as_str().unwrap().to_owned();
    let accessor = answer["data"]["secret_id_accessor"].as_str().unwrap().to_owned();

    let (status, by_value) = server.put("auth/approle/role/web/secret-id/lookup", r, json!({ "secret_id": secret }));
    assert_eq!(status, 200, "{by_value}");
    assert_eq!(by_value["data"]["metadata"], json!({ "team": "payments" }));
    assert_eq!(by_value["data"]["cidr_list"], json!(["127.0.0.1/32"]));
    assert_eq!(by_value["data"]["secret_id_accessor"], json!(accessor));
    let (status, by_accessor) =
        server.put("auth/approle/role/web/secret-id-accessor/lookup", r, json!({ "secret_id_accessor": accessor }));
    assert_eq!((status, by_accessor["data"]["secret_id_num_uses"].clone()), (200, json!(2)), "{by_accessor}");
    let (status, _) = server.put("auth/approle/role/web/secret-id/lookup", r, json!({ "secret_id": "unknown" }));
    assert_eq!(status, 204, "an unknown secret ID looks up to nothing");
    let (status, _) =
        server.put("auth/approle/role/web/secret-id-accessor/lookup", r, json!({ "secret_id_accessor": "unknown" }));
    assert_eq!(status, 404);

    let (custom, custom_accessor) = {
        let (status, answer) =
            server.put("auth/approle/role/web/custom-secret-id", r, json!({ "secret_id": "my-own-secret-id" }));
        assert_eq!(status, 200, "{answer}");
        (
            answer["data"]["secret_id"].as_str().unwrap().to_owned(),
            answer["data"]["secret_id_accessor"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(custom, "my-own-secret-id");
    let (status, body) =
        server.put("auth/approle/role/web/custom-secret-id", r, json!({ "secret_id": "my-own-secret-id" }));
    assert_eq!((status, error(&body)), (400, "SecretID is already registered"));

    let (_, listed) = server.request("LIST", "auth/approle/role/web/secret-id", r, None);
    let mut expected = vec![accessor.clone(), custom_accessor.clone()];
    expected.sort();
    assert_eq!(listed["data"]["keys"], json!(expected));

    assert_eq!(server.put("auth/approle/role/web/secret-id/destroy", r, json!({ "secret_id": secret })).0, 204);
    assert_eq!(
        server
            .put(
                "auth/approle/role/web/secret-id-accessor/destroy",
                r,
                json!({ "secret_id_accessor": custom_accessor })
            )
            .0,
        204
    );
    assert_eq!(server.request("LIST", "auth/approle/role/web/secret-id", r, None).0, 404);
    let rid = role_id(&server, &root, "web");
    assert_eq!(login(&server, &rid, &secret), (400, json!({ "errors": [INVALID] })));
    assert_eq!(login(&server, &rid, &custom).0, 400);
}

#[test]
fn login_returns_vaults_auth_block_and_refuses_in_vaults_words() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(
        server
            .put(
                "auth/approle/role/web",
                r,
                json!({ "token_policies": ["app"], "token_ttl": "20m", "secret_id_num_uses": 2 })
            )
            .0,
        204
    );
    let rid = role_id(&server, &root, "web");
    let (secret, _) = secret_id(&server, &root, "web", json!({ "metadata": { "env": "prod" } }));

    let (status, body) = server.put("auth/approle/login", None, json!({ "secret_id": secret }));
    assert_eq!((status, error(&body)), (400, "missing role_id"));
    let (status, body) = server.put("auth/approle/login", None, json!({ "role_id": rid }));
    assert_eq!((status, error(&body)), (400, "missing secret_id"));
    assert_eq!(login(&server, "not-a-role-id", &secret), (400, json!({ "errors": [INVALID] })));
    assert_eq!(login(&server, &rid, "not-a-secret-id"), (400, json!({ "errors": [INVALID] })));

    let (status, answer) = login(&server, &rid, &secret);
    assert_eq!(status, 200, "{answer}");
    let auth = &answer["auth"];
    assert_eq!(auth["policies"], json!(["app", "default"]));
    assert_eq!(auth["metadata"], json!({ "env": "prod", "role_name": "web" }));
    assert_eq!((auth["lease_duration"].clone(), auth["renewable"].clone()), (json!(1200), json!(true)));
    let token = auth["client_token"].as_str().unwrap();
    let (status, me) = server.get("auth/token/lookup-self", Some(token));
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["data"]["path"], "auth/approle/login");
    assert_eq!(me["data"]["display_name"], "approle-web");

    // Two uses: the second login spends it, the third finds nothing.
    assert_eq!(login(&server, &rid, &secret).0, 200);
    assert_eq!(login(&server, &rid, &secret), (400, json!({ "errors": [INVALID] })));
}

#[test]
fn cidr_bounds_are_checked_against_the_clients_address() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("auth/approle/role/web", r, json!({})).0, 204);
    let rid = role_id(&server, &root, "web");
    let (elsewhere, _) = secret_id(&server, &root, "web", json!({ "cidr_list": ["10.0.0.0/8"] }));
    let (status, body) = login(&server, &rid, &elsewhere);
    assert_eq!(status, 400, "{body}");
    assert_eq!(error(&body), "source address \"127.0.0.1\" unauthorized by CIDR restrictions on the secret ID");
    let (here, _) = secret_id(&server, &root, "web", json!({ "cidr_list": ["127.0.0.0/8"] }));
    assert_eq!(login(&server, &rid, &here).0, 200);

    // The role's own bound: refused before the secret ID's use is counted.
    assert_eq!(
        server
            .put(
                "auth/approle/role/fenced",
                r,
                json!({ "secret_id_bound_cidrs": ["192.168.0.0/16"], "secret_id_num_uses": 1 })
            )
            .0,
        204
    );
    let fenced_id = role_id(&server, &root, "fenced");
    let (status, body) = server.put("auth/approle/role/fenced/secret-id", r, json!({ "cidr_list": ["10.0.0.0/8"] }));
    assert_eq!(status, 400, "a secret ID's CIDRs must lie within the role's: {body}");
    let (fenced_secret, _) = secret_id(&server, &root, "fenced", json!({}));
    let (status, body) = login(&server, &fenced_id, &fenced_secret);
    assert_eq!(
        (status, error(&body)),
        (400, "source address \"127.0.0.1\" unauthorized by CIDR restrictions on the role")
    );
    let (status, _) = server.put("auth/approle/role/fenced/secret-id/lookup", r, json!({ "secret_id": fenced_secret }));
    assert_eq!(status, 200, "the refused login did not use up the one-use secret ID");

    // Without a secret ID, a CIDR bound is the constraint.
    assert_eq!(
        server
            .put(
                "auth/approle/role/local",
                r,
                json!({ "bind_secret_id": false, "secret_id_bound_cidrs": "127.0.0.1/32" })
            )
            .0,
        204
    );
    let local_id = role_id(&server, &root, "local");
    let (status, answer) = server.put("auth/approle/login", None, json!({ "role_id": local_id }));
    assert_eq!((status, answer["auth"]["metadata"]["role_name"].clone()), (200, json!("local")), "{answer}");
}

#[test]
fn a_one_use_secret_id_serves_exactly_one_of_concurrent_logins() {
    // The losers' failures would lock the role ID (user lockout, tested in lockout.rs); what
    // is tested here is the use count alone.
    let (server, root) = ready_with("user_lockout \"approle\" {\n  disable_lockout = true\n}");
    assert_eq!(server.put("auth/approle/role/web", Some(&root), json!({ "secret_id_num_uses": 1 })).0, 204);
    let rid = role_id(&server, &root, "web");
    for round in 0..5 {
        let (secret, _) = secret_id(&server, &root, "web", json!({}));
        let results: Vec<u16> = std::thread::scope(|scope| {
            let logins: Vec<_> = (0..8).map(|_| scope.spawn(|| login(&server, &rid, &secret).0)).collect();
            logins.into_iter().map(|login| login.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|status| **status == 200).count(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|status| *status == 200 || *status == 400), "round {round}: {results:?}");
    }
}

#[test]
fn expired_secret_ids_stop_working_and_are_tidied() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("auth/approle/role/web", r, json!({})).0, 204);
    let rid = role_id(&server, &root, "web");
    let (short, _) = secret_id(&server, &root, "web", json!({ "ttl": "1s" }));
    // Never presented again: only the tidy can remove it.
    let (_unused, accessor) = secret_id(&server, &root, "web", json!({ "ttl": "1s" }));
    let (lasting, _) = secret_id(&server, &root, "web", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.put("auth/approle/role/web/secret-id/lookup", r, json!({ "secret_id": short })).0 == 200 {
        assert!(Instant::now() < deadline, "the secret ID outlived its 1s TTL by 30s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(login(&server, &rid, &short), (400, json!({ "errors": [INVALID] })));
    let lookup_accessor = || {
        server.put("auth/approle/role/web/secret-id-accessor/lookup", r, json!({ "secret_id_accessor": accessor })).0
    };
    assert_eq!(lookup_accessor(), 200, "expired but not yet tidied");
    let (status, tidy) = server.put("auth/approle/tidy/secret-id", r, json!({}));
    assert_eq!(status, 202, "{tidy}");
    assert!(tidy["warnings"][0].as_str().unwrap().starts_with("Tidy operation successfully started"));
    assert_eq!(lookup_accessor(), 404, "the tidy removed the expired secret ID");
    let (status, listed) = server.request("LIST", "auth/approle/role/web/secret-id", r, None);
    assert_eq!((status, listed["data"]["keys"].as_array().map(Vec::len)), (200, Some(1)), "{listed}");
    assert_eq!(login(&server, &rid, &lasting).0, 200, "tidy keeps live secret IDs");
}

#[test]
fn a_wrapped_secret_id_reaches_the_app_through_the_agents_sequence() {
    let (server, root) = ready();
    assert_eq!(server.put("auth/approle/role/web", Some(&root), json!({ "token_policies": "app" })).0, 204);
    let rid = role_id(&server, &root, "web");
    // The trusted orchestrator asks for a wrapped secret ID.
    let (status, wrapped) = server.request_with_headers(
        "POST",
        "auth/approle/role/web/secret-id",
        Some(&root),
        &[("X-Vault-Wrap-TTL", "120")],
        Some(&json!({})),
    );
    assert_eq!(status, 200, "{wrapped}");
    assert_eq!(wrapped["data"], Value::Null);
    let info = &wrapped["wrap_info"];
    let wrapping_token = info["token"].as_str().unwrap();

    // vault agent (secret_id_response_wrapping_path): look up with the token in the header,
    // insist on the creation path, unwrap, log in.
    let (status, looked) = server.get("sys/wrapping/lookup", Some(wrapping_token));
    assert_eq!(status, 200, "{looked}");
    assert_eq!(looked["data"]["creation_path"], "auth/approle/role/web/secret-id");
    let (status, unwrapped) = server.put("sys/wrapping/unwrap", Some(wrapping_token), json!(null));
    assert_eq!(status, 200, "{unwrapped}");
    assert_eq!(
        unwrapped["data"]["secret_id_accessor"], info["wrapped_accessor"],
        "wrapped_accessor names the secret ID"
    );
    let secret = unwrapped["data"]["secret_id"].as_str().unwrap();
    let (status, answer) = login(&server, &rid, secret);
    assert_eq!((status, answer["auth"]["policies"].clone()), (200, json!(["app", "default"])), "{answer}");
}

#[test]
fn tokens_bound_to_cidrs_work_only_from_there() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let here = json!({ "token_policies": "app", "token_bound_cidrs": ["127.0.0.1/32"] });
    assert_eq!(server.put("auth/approle/role/here", r, here).0, 204);
    let far = json!({ "token_policies": "app", "token_bound_cidrs": ["10.0.0.0/8"] });
    assert_eq!(server.put("auth/approle/role/far", r, far).0, 204);
    let token_of = |role: &str| {
        let rid = role_id(&server, &root, role);
        let (secret, _) = secret_id(&server, &root, role, json!({}));
        let (status, answer) = login(&server, &rid, &secret);
        assert_eq!(status, 200, "the login itself is not bound by token_bound_cidrs: {answer}");
        answer["auth"]["client_token"].as_str().unwrap().to_owned()
    };

    let near = token_of("here");
    let (status, me) = server.get("auth/token/lookup-self", Some(&near));
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["data"]["bound_cidrs"], json!(["127.0.0.1/32"]));
    let distant = token_of("far");
    let (status, body) = server.get("auth/token/lookup-self", Some(&distant));
    assert_eq!((status, body), (403, json!({ "errors": ["permission denied"] })), "used from 127.0.0.1");

    // A token role's bounds bind the tokens created against it too.
    let role = json!({ "allowed_policies": "app", "token_bound_cidrs": "192.168.0.0/16" });
    assert_eq!(server.put("auth/token/roles/lan", r, role).0, 204);
    let (status, made) = server.put("auth/token/create/lan", r, json!({ "policies": "app" }));
    assert_eq!(status, 200, "{made}");
    let lan = made["auth"]["client_token"].as_str().unwrap();
    assert_eq!(server.get("auth/token/lookup-self", Some(lan)).0, 403);
    let (status, looked) = server.put("auth/token/lookup", r, json!({ "token": lan }));
    assert_eq!((status, looked["data"]["bound_cidrs"].clone()), (200, json!(["192.168.0.0/16"])), "{looked}");
}

#[test]
fn a_secret_ids_token_bounds_narrow_the_roles() {
    let (server, root) = ready();
    let role = json!({ "token_policies": "app", "token_bound_cidrs": ["127.0.0.0/8"] });
    assert_eq!(server.put("auth/approle/role/web", Some(&root), role).0, 204);
    let rid = role_id(&server, &root, "web");
    let (narrow, _) = secret_id(&server, &root, "web", json!({ "token_bound_cidrs": ["127.0.0.2/32"] }));
    let (_, answer) = login(&server, &rid, &narrow);
    let token = answer["auth"]["client_token"].as_str().unwrap();
    assert_eq!(server.get("auth/token/lookup-self", Some(token)).0, 403, "bound to 127.0.0.2, used from 127.0.0.1");
    let (status, body) = server.request_with_headers(
        "POST",
        "auth/approle/role/web/secret-id",
        Some(&root),
        &[],
        Some(&json!({ "token_bound_cidrs": ["10.0.0.0/8"] })),
    );
    assert_eq!(status, 400, "outside the role's bounds: {body}");
}

#[test]
fn roles_cannot_mint_root_or_wrapping_tokens_and_credentials_are_trimmed() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    for (role, policies) in [("boss", json!(["app", " Root "])), ("wrapper", json!(["response-wrapping"]))] {
        assert_eq!(server.put(&format!("auth/approle/role/{role}"), r, json!({ "token_policies": policies })).0, 204);
        let rid = role_id(&server, &root, role);
        let (secret, _) = secret_id(&server, &root, role, json!({}));
        let (status, body) = login(&server, &rid, &secret);
        assert_eq!(status, 400, "{role}: {body}");
        assert!(error(&body).starts_with("auth methods cannot create"), "{body}");
    }

    // Files written with `echo` end in a newline; Vault trims both IDs.
    assert_eq!(server.put("auth/approle/role/web", r, json!({ "token_policies": "app" })).0, 204);
    let rid = role_id(&server, &root, "web");
    let (secret, _) = secret_id(&server, &root, "web", json!({}));
    let (status, body) = login(&server, &format!("{rid}\n"), &format!(" {secret}\n"));
    assert_eq!(status, 200, "{body}");
}
