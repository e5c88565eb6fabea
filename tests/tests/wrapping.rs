//! End to end: response wrapping — `X-Vault-Wrap-TTL` on KV reads, token creation and logins,
//! `sys/wrapping/{wrap,unwrap,lookup,rewrap}` with Vault's shapes and errors, single use,
//! expiry, policy `min_wrapping_ttl`/`max_wrapping_ttl`, the audit record of a wrap, the
//! forgery guard (nobody else may hold the `response-wrapping` policy) and the CLI.

use std::path::Path;
use std::time::{Duration, Instant};

use arcanum_tests::TestServer;
use serde_json::{json, Value};

const INVALID: &str = "wrapping token is not valid or does not exist";

fn ready() -> (TestServer, String) {
    let (server, root) = TestServer::unsealed_with_kv_v2();
    let (status, body) =
        server.put("secret/data/db", Some(&root), json!({ "data": { "username": "app", "password": "s3cr3t-value" } }));
    assert_eq!(status, 200, "{body}");
    (server, root)
}

fn wrapped(server: &TestServer, method: &str, path: &str, token: &str, ttl: &str, body: Option<Value>) -> Value {
    let (status, answer) =
        server.request_with_headers(method, path, Some(token), &[("X-Vault-Wrap-TTL", ttl)], body.as_ref());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"], Value::Null, "a wrapped answer carries no data: {answer}");
    assert_eq!(answer["auth"], Value::Null, "{answer}");
    answer["wrap_info"].clone()
}

fn error(body: &Value) -> &str {
    body["errors"][0].as_str().unwrap_or_default()
}

#[test]
fn a_wrapped_read_is_unwrapped_once_and_verbatim() {
    let (server, root) = ready();
    let info = wrapped(&server, "GET", "secret/data/db", &root, "5m", None);
    let token = info["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hvs."), "{info}");
    assert_eq!(info["ttl"], 300);
    assert_eq!(info["creation_path"], "secret/data/db");
    assert!(info["accessor"].as_str().is_some_and(|a| !a.is_empty()), "{info}");
    assert!(info.get("wrapped_accessor").is_none(), "a read wraps no token: {info}");
    assert!(info["creation_time"].as_str().unwrap().contains('T'), "{info}");

    // The wrapping token is a single-use service token with only the response-wrapping policy.
    let (status, looked) = server.put("auth/token/lookup", Some(&root), json!({ "token": token }));
    assert_eq!(status, 200, "{looked}");
    assert_eq!(looked["data"]["policies"], json!(["response-wrapping"]));
    assert_eq!((looked["data"]["num_uses"].clone(), looked["data"]["renewable"].clone()), (json!(1), json!(false)));
    assert_eq!(looked["data"]["explicit_max_ttl"], 300);

    // Lookup needs no token of one's own and does not use the wrapping token.
    for _ in 0..2 {
        let (status, meta) = server.put("sys/wrapping/lookup", None, json!({ "token": token }));
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["data"]["creation_path"], "secret/data/db");
        assert_eq!(meta["data"]["creation_ttl"], 300);
        assert_eq!(meta["data"]["creation_time"], info["creation_time"]);
    }
    let (status, meta) = server.get("sys/wrapping/lookup", Some(&token));
    assert_eq!((status, meta["data"]["creation_ttl"].clone()), (200, json!(300)), "{meta}");

    // Unwrapping with the wrapping token as the request's token gives the original answer.
    let (status, original) = server.put("sys/wrapping/unwrap", Some(&token), json!(null));
    assert_eq!(status, 200, "{original}");
    assert_eq!(original["data"]["data"], json!({ "username": "app", "password": "s3cr3t-value" }));
    assert_eq!(original["data"]["metadata"]["version"], 1);
    assert!(original["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{original}");
    assert_eq!(original["wrap_info"], Value::Null);

    // Once only: the token is gone, for unwrap and lookup alike.
    let (status, again) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": token }));
    assert_eq!((status, error(&again)), (400, INVALID), "{again}");
    let (status, again) = server.put("sys/wrapping/lookup", None, json!({ "token": token }));
    assert_eq!((status, error(&again)), (400, INVALID), "{again}");
    let (status, _) = server.put("sys/wrapping/unwrap", Some(&token), json!(null));
    assert_eq!(status, 403, "a spent wrapping token is an invalid token");
}

#[test]
fn a_third_party_unwraps_with_the_token_in_the_body_and_only_one_of_two_racing_unwraps_wins() {
    let (server, root) = ready();
    let (status, body) = server.put(
        "sys/policies/acl/reader",
        Some(&root),
        json!({ "policy": "path \"nothing\" { capabilities = [\"read\"] }" }),
    );
    assert_eq!(status, 204, "{body}");
    let (_, child) = server.put("auth/token/create", Some(&root), json!({ "policies": ["reader"] }));
    let child = child["auth"]["client_token"].as_str().unwrap().to_owned();

    for round in 0..5 {
        let info = wrapped(&server, "GET", "secret/data/db", &root, "60", None);
        let token = info["token"].as_str().unwrap().to_owned();
        // The default policy lets any token unwrap; two callers race for the one use.
        let (a, b) = std::thread::scope(|scope| {
            let first = scope.spawn(|| server.put("sys/wrapping/unwrap", Some(&child), json!({ "token": token })));
            let second = scope.spawn(|| server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": token })));
            (first.join().unwrap(), second.join().unwrap())
        });
        let winners: Vec<&(u16, Value)> = [&a, &b].into_iter().filter(|(status, _)| *status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one unwrap may succeed: {a:?} {b:?}");
        assert_eq!(winners[0].1["data"]["data"]["password"], "s3cr3t-value");
        let loser = if a.0 == 200 { &b } else { &a };
        assert_eq!((loser.0, error(&loser.1)), (400, INVALID), "round {round}");
    }

    // An unknown token, an empty one and a non-wrapping token are refused in Vault's words.
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": "hvs.nosuchtoken" }));
    assert_eq!((status, error(&body)), (400, INVALID));
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": child }));
    assert_eq!((status, error(&body)), (400, INVALID), "an ordinary token is not a wrapping token");
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({}));
    assert_eq!((status, error(&body)), (400, INVALID), "root's own token is not a wrapping token");
    let (status, body) = server.put("sys/wrapping/lookup", None, json!({}));
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).starts_with("error validating wrapping token"), "{body}");
    // The child still works: a failed unwrap does not spend the caller's token.
    assert_eq!(server.get("auth/token/lookup-self", Some(&child)).0, 200);
}

#[test]
fn wrap_and_rewrap_keep_the_payload_ttl_and_creation_path() {
    let (server, root) = ready();
    let (status, body) = server.put("sys/wrapping/wrap", Some(&root), json!({ "a": "b" }));
    assert_eq!((status, error(&body)), (400, "endpoint requires response wrapping to be used"));

    let info = wrapped(&server, "POST", "sys/wrapping/wrap", &root, "2m", Some(json!({ "a": "b", "n": 1 })));
    assert_eq!((info["ttl"].clone(), info["creation_path"].clone()), (json!(120), json!("sys/wrapping/wrap")));
    let old = info["token"].as_str().unwrap().to_owned();

    let (status, rewrapped) = server.put("sys/wrapping/rewrap", Some(&root), json!({ "token": old }));
    assert_eq!(status, 200, "{rewrapped}");
    let new = rewrapped["wrap_info"]["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rewrapped["wrap_info"]["ttl"], 120);
    assert_eq!(rewrapped["wrap_info"]["creation_path"], "sys/wrapping/wrap");
    let (status, body) = server.put("sys/wrapping/lookup", None, json!({ "token": old }));
    assert_eq!((status, error(&body)), (400, INVALID), "the old token is revoked");

    let (status, original) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": new }));
    assert_eq!(status, 200, "{original}");
    assert_eq!(original["data"], json!({ "a": "b", "n": 1 }));
}

#[test]
fn wrapped_tokens_and_logins_name_the_wrapped_accessor_and_unwrap_to_the_auth_block() {
    let (server, root) = ready();
    let info = wrapped(&server, "POST", "auth/token/create", &root, "300", Some(json!({ "policies": ["default"] })));
    let (status, original) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": info["token"] }));
    assert_eq!(status, 200, "{original}");
    let token = original["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(original["auth"]["accessor"], info["wrapped_accessor"], "{info} {original}");
    let (status, me) = server.get("auth/token/lookup-self", Some(&token));
    assert_eq!((status, me["data"]["policies"].clone()), (200, json!(["default"])));

    assert_eq!(server.put("sys/auth/userpass", Some(&root), json!({ "type": "userpass" })).0, 204);
    let (status, body) =
        server.put("auth/userpass/users/alice", Some(&root), json!({ "password": "pw-alice", "policies": "default" }));
    assert_eq!(status, 204, "{body}");
    let (status, login) = server.request_with_headers(
        "POST",
        "auth/userpass/login/alice",
        None,
        &[("X-Vault-Wrap-TTL", "1m")],
        Some(&json!({ "password": "pw-alice" })),
    );
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["auth"], Value::Null, "a wrapped login hands out no token: {login}");
    let info = &login["wrap_info"];
    assert_eq!(info["creation_path"], "auth/userpass/login/alice");
    let (status, original) = server.put("sys/wrapping/unwrap", Some(info["token"].as_str().unwrap()), json!(null));
    assert_eq!(status, 200, "{original}");
    assert_eq!(original["auth"]["accessor"], info["wrapped_accessor"]);
    assert_eq!(original["auth"]["metadata"]["username"], "alice");
    let token = original["auth"]["client_token"].as_str().unwrap();
    assert_eq!(server.get("auth/token/lookup-self", Some(token)).0, 200);
}

#[test]
fn bad_wrap_ttls_are_refused_and_zero_means_unwrapped() {
    let (server, root) = ready();
    for bad in ["-5", "abc", "5 parsecs"] {
        let (status, body) =
            server.request_with_headers("GET", "secret/data/db", Some(&root), &[("X-Vault-Wrap-TTL", bad)], None);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error(&body).starts_with("error parsing X-Vault-Wrap-TTL header"), "{bad}: {body}");
    }
    let (status, body) =
        server.request_with_headers("GET", "secret/data/db", Some(&root), &[("X-Vault-Wrap-TTL", "0")], None);
    assert_eq!((status, body["data"]["data"]["username"].clone()), (200, json!("app")), "{body}");
    let (status, body) = server.request_with_headers(
        "GET",
        "secret/data/db",
        Some(&root),
        &[("X-Vault-Wrap-TTL", "60"), ("X-Vault-Wrap-Format", "pem")],
        None,
    );
    assert_eq!(status, 400, "an unknown wrap format is refused, not silently ignored: {body}");
    // Errors and 204s are not wrapped.
    let (status, body) =
        server.request_with_headers("GET", "secret/data/missing", Some(&root), &[("X-Vault-Wrap-TTL", "60")], None);
    assert_eq!((status, body["wrap_info"].clone()), (404, Value::Null), "{body}");
    let (status, _) =
        server.request_with_headers("DELETE", "secret/metadata/db", Some(&root), &[("X-Vault-Wrap-TTL", "60")], None);
    assert_eq!(status, 204);
}

fn jwt_part(part: &str) -> Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn jwt_wrapping_tokens_are_signed_es512_and_unwrap_like_tokens() {
    use base64::Engine as _;
    let (server, root) = ready();
    let jwt_wrapped = |path: &str| {
        let headers = [("X-Vault-Wrap-TTL", "60"), ("X-Vault-Wrap-Format", "jwt")];
        let (status, answer) = server.request_with_headers("GET", path, Some(&root), &headers, None);
        assert_eq!(status, 200, "{answer}");
        answer["wrap_info"].clone()
    };
    let info = jwt_wrapped("secret/data/db");
    let jwt = info["token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    assert_eq!(jwt_part(parts[0])["alg"], "ES512");
    let claims = jwt_part(parts[1]);
    assert_eq!((claims["type"].clone(), claims["accessor"].clone()), (json!("wrapping"), info["accessor"].clone()));
    assert!(claims["jti"].as_str().unwrap().starts_with("hvs."), "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(signature.len(), 132, "ES512 signatures are r || s, 66 bytes each");

    // Lookup and unwrap take the JWT wherever they take a token.
    let (status, meta) = server.put("sys/wrapping/lookup", None, json!({ "token": jwt }));
    assert_eq!((status, meta["data"]["creation_path"].clone()), (200, json!("secret/data/db")), "{meta}");
    let (status, original) = server.put("sys/wrapping/unwrap", Some(&jwt), json!(null));
    assert_eq!(status, 200, "{original}");
    assert_eq!(original["data"]["data"]["password"], "s3cr3t-value");
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": jwt }));
    assert_eq!((status, error(&body)), (400, INVALID), "used once");

    // A JWT whose claims were changed (to name another live wrapping token) does not verify.
    let other = jwt_wrapped("secret/data/db");
    let other_claims = jwt_part(other["token"].as_str().unwrap().split('.').nth(1).unwrap());
    let mut forged_claims = claims.clone();
    forged_claims["jti"] = other_claims["jti"].clone();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": forged }));
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).starts_with("error validating wrapping token"), "{body}");
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&forged), json!(null));
    assert_eq!(status, 403, "{body}");
    // The genuine one still unwraps through the body.
    let (status, original) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": other["token"] }));
    assert_eq!((status, original["data"]["data"]["username"].clone()), (200, json!("app")), "{original}");
}

#[test]
fn an_unused_wrapping_token_expires_with_its_ttl() {
    let (server, root) = ready();
    let info = wrapped(&server, "GET", "secret/data/db", &root, "1s", None);
    let token = info["token"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.put("sys/wrapping/lookup", None, json!({ "token": token }));
        if status == 400 {
            assert_eq!(error(&body), INVALID);
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "the wrapping token outlived its 1s TTL by 30s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": token }));
    assert_eq!((status, error(&body)), (400, INVALID));
}

#[test]
fn policies_can_require_wrapping_within_bounds() {
    let (server, root) = ready();
    let policy = r#"
path "secret/data/db" {
  capabilities = ["read"]
  min_wrapping_ttl = "30s"
  max_wrapping_ttl = "2m"
}
"#;
    assert_eq!(server.put("sys/policies/acl/wrapped-only", Some(&root), json!({ "policy": policy })).0, 204);
    let (_, child) = server.put("auth/token/create", Some(&root), json!({ "policies": ["wrapped-only"] }));
    let child = child["auth"]["client_token"].as_str().unwrap().to_owned();

    assert_eq!(server.get("secret/data/db", Some(&child)).0, 403, "unwrapped reads are refused");
    for ttl in ["10s", "5m"] {
        let (status, body) =
            server.request_with_headers("GET", "secret/data/db", Some(&child), &[("X-Vault-Wrap-TTL", ttl)], None);
        assert_eq!(status, 403, "{ttl}: {body}");
    }
    let info = wrapped(&server, "GET", "secret/data/db", &child, "1m", None);
    let (status, original) = server.put("sys/wrapping/unwrap", Some(&child), json!({ "token": info["token"] }));
    assert_eq!((status, original["data"]["data"]["username"].clone()), (200, json!("app")));
}

#[test]
fn nobody_can_mint_or_rewrite_a_wrapping_token() {
    let (server, root) = ready();
    let (status, body) = server.put("auth/token/create", Some(&root), json!({ "policies": ["response-wrapping"] }));
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("response-wrapping"), "{body}");
    let (status, body) = server.put(
        "sys/policies/acl/response-wrapping",
        Some(&root),
        json!({ "policy": "path \"*\" { capabilities = [\"sudo\"] }" }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.request("DELETE", "sys/policies/acl/response-wrapping", Some(&root), None).0, 400);

    // Reading cubbyhole/response with the wrapping token (the pre-unwrap way) gives the answer
    // as a JSON string, and spends the token.
    let info = wrapped(&server, "GET", "secret/data/db", &root, "5m", None);
    let token = info["token"].as_str().unwrap();
    let (status, body) = server.get("cubbyhole/response", Some(token));
    assert_eq!(status, 200, "{body}");
    let inner: Value = serde_json::from_str(body["data"]["response"].as_str().unwrap()).unwrap();
    assert_eq!(inner["data"]["data"]["password"], "s3cr3t-value");
    let (status, body) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": token }));
    assert_eq!((status, error(&body)), (400, INVALID));
    // A wrapping token reaches nothing else (and is spent by trying).
    let info = wrapped(&server, "GET", "secret/data/db", &root, "5m", None);
    assert_eq!(server.get("secret/data/db", info["token"].as_str()).0, 403);
}

fn audit_entries(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn the_audit_log_records_the_wrap_with_hmacs_and_never_the_wrapped_data() {
    let (server, root) = ready();
    let log = server.dir.path().join("audit.log");
    let (status, body) = server.put(
        "sys/audit/file",
        Some(&root),
        json!({ "type": "file", "options": { "file_path": log.to_str().unwrap() } }),
    );
    assert_eq!(status, 204, "{body}");
    let info = wrapped(&server, "GET", "secret/data/db", &root, "90", None);
    let token = info["token"].as_str().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(token), "the wrapping token is in the audit log in plaintext");
    assert!(!text.contains("s3cr3t-value"), "the wrapped secret is in the audit log");

    let entries = audit_entries(&log);
    let request =
        entries.iter().rev().find(|e| e["type"] == "request" && e["request"]["path"] == "secret/data/db").unwrap();
    assert_eq!(request["request"]["wrap_ttl"], 90, "{request}");
    let response =
        entries.iter().rev().find(|e| e["type"] == "response" && e["request"]["path"] == "secret/data/db").unwrap();
    let logged = &response["response"]["wrap_info"];
    let (status, hashed) = server.put("sys/audit-hash/file", Some(&root), json!({ "input": token }));
    assert_eq!(status, 200, "{hashed}");
    assert_eq!(logged["token"], hashed["data"]["hash"], "{response}");
    assert_eq!((logged["ttl"].clone(), logged["creation_path"].clone()), (json!(90), json!("secret/data/db")));
    assert!(response["response"].get("data").is_none(), "{response}");

    // The unwrap is audited with the secret HMAC'd.
    let (status, _) = server.put("sys/wrapping/unwrap", Some(&root), json!({ "token": token }));
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("s3cr3t-value"), "the unwrapped secret is in the audit log");
}

#[test]
fn the_cli_wraps_with_wrap_ttl_and_unwraps() {
    let (server, root) = ready();
    let (code, token, stderr) =
        server.cli(&["kv", "get", "-wrap-ttl=5m", "-field=wrapping_token", "secret/db"], Some(&root));
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("hvs."), "{token}");
    // As with the vault CLI, the fields are the wrapped answer's: KV v2 puts the secret under `data`.
    let (code, out, stderr) = server.cli(&["unwrap", "-format=json", "-field=data", &token], Some(&root));
    assert_eq!(code, 0, "{stderr}");
    let data: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(data["password"], "s3cr3t-value");

    // Without a token of its own, the CLI presents the wrapping token as the request's token.
    let (code, table, stderr) = server.cli(&["read", "-wrap-ttl=60", "secret/data/db"], Some(&root));
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains("wrapping_token_creation_path:") && table.contains("secret/data/db"), "{table}");
    let token = table.lines().find_map(|l| l.strip_prefix("wrapping_token:")).unwrap().trim().to_owned();
    let (code, out, stderr) = server.cli_with(
        &["unwrap", "-format=json", &token],
        &[("ARCANUM_ADDR", server.addr.as_str()), ("HOME", server.dir.path().to_str().unwrap())],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let original: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(original["data"]["data"]["username"], "app");
}
