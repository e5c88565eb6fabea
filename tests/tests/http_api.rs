//! End to end: Vault's wire conventions and bad input, against the real binary.

use arcanum_tests::{binary, sled_config, TestServer};
use serde_json::{json, Value};

fn unsealed() -> (TestServer, String) {
    let server = TestServer::start_with(|dir| sled_config(dir, "max_request_size = 4096", ""));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    (server, init.root_token)
}

#[test]
fn bad_init_parameters_get_clear_400s_and_the_server_stays_healthy() {
    let server = TestServer::start();
    let cases = [
        (json!({ "secret_shares": 0, "secret_threshold": 0 }), "shares must be at least one"),
        (json!({ "secret_shares": 256, "secret_threshold": 2 }), "shares must be less than 256"),
        (json!({ "secret_shares": 3, "secret_threshold": 4 }), "threshold cannot be larger than shares"),
        (json!({ "secret_shares": 3, "secret_threshold": 1 }), "threshold must be greater than one"),
        (json!({ "secret_shares": "three", "secret_threshold": 2 }), "secret_shares must be an integer"),
        (json!({ "secret_threshold": 2 }), "secret_shares is required"),
        (
            json!({ "secret_shares": 3, "secret_threshold": 2, "pgp_keys": ["abc"] }),
            "error parsing PGP key pgp_keys[0]",
        ),
    ];
    for (body, message) in cases {
        let (status, answer) = server.put("sys/init", None, body.clone());
        assert_eq!(status, 400, "{body} -> {answer}");
        let errors = answer["errors"][0].as_str().unwrap_or_default();
        assert!(errors.contains(message), "{body}: expected {message:?} in {answer}");
        assert_eq!(server.get("sys/init", None).1, json!({ "initialized": false }));
    }
    // Uninitialised health is 501, as in Vault.
    assert_eq!(server.get("sys/health", None).0, 501);
    let init = server.init(2, 2);
    let (status, body) = server.put("sys/init", None, json!({ "secret_shares": 1, "secret_threshold": 1 }));
    assert_eq!(status, 400);
    assert_eq!(body, json!({ "errors": ["Vault is already initialized"] }));
    server.unseal(&init.keys);
    assert_eq!(server.get("sys/health", None).0, 200);
}

#[test]
fn malformed_and_oversized_bodies_are_refused_in_vaults_shape() {
    let (server, token) = unsealed();
    let client = reqwest::blocking::Client::new();
    let send = |body: Vec<u8>| {
        let response = client
            .put(format!("{}/v1/sys/raw/x", server.addr))
            .header("X-Vault-Token", &token)
            .body(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let body: Value = serde_json::from_str(&response.text().unwrap()).unwrap();
        (status, content_type, body)
    };
    let (status, content_type, body) = send(b"{\"value\": ".to_vec());
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/json");
    assert!(body["errors"][0].as_str().unwrap().contains("failed to parse JSON input"), "{body}");
    let (status, _, body) = send(b"[1,2]".to_vec());
    assert_eq!(status, 400, "{body}");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, _, _) = send(format!("{{\"value\": {deep}}}").into_bytes());
    assert!(status == 400 || status == 413, "deep nesting got {status}");
    let (status, _, body) = send(format!("{{\"value\": \"{}\"}}", "a".repeat(8192)).into_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("too large"));
    // Nothing was half-written, and the server still answers.
    assert_eq!(server.get("sys/raw/x", Some(&token)).0, 404);
    assert_eq!(server.get("sys/health", None).0, 200);
}

#[test]
fn tokens_paths_and_verbs_follow_vault() {
    let (server, token) = unsealed();
    // No token, a bad token: 403 with both phrases clients look for.
    for bad in [None, Some("hvs.doesnotexist")] {
        let (status, body) = server.get("sys/key-status", bad);
        assert_eq!(status, 403);
        let text = body["errors"].to_string();
        assert!(text.contains("permission denied") && text.contains("invalid token"), "{body}");
    }
    // Authorization: Bearer works like X-Vault-Token.
    let response = reqwest::blocking::Client::new()
        .get(format!("{}/v1/sys/key-status", server.addr))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");

    // Unknown paths are 404 in Vault's shape.
    let (status, body) = server.get("nope/at/all", Some(&token));
    assert_eq!(status, 404);
    assert!(body["errors"][0].as_str().unwrap().contains("no handler for route"));

    // Traversal is refused before anything else, encoded or not. Sent over a raw socket
    // because HTTP client libraries resolve dot segments before sending.
    for path in ["sys/raw/a/../core/keyring", "sys/raw/a/%2e%2e/core/keyring", "sys/raw/./x", "sys/raw/a/%2E/x"] {
        let (status, body) = raw_get(&server.addr, &format!("/v1/{path}"), &token);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("'..' segments are not allowed"), "{path}: {body}");
    }
    // The seal's own records are out of reach of sys/raw.
    assert_eq!(server.get("sys/raw/core/keyring", Some(&token)).0, 400);

    // PUT and POST are the same; LIST and GET ?list=true are the same.
    assert_eq!(server.request("POST", "sys/raw/dir/a", Some(&token), Some(&json!({ "value": "1" }))).0, 204);
    assert_eq!(server.put("sys/raw/dir/b/c", Some(&token), json!({ "value": "2" })).0, 204);
    let (status, listed) = server.request("LIST", "sys/raw/dir", Some(&token), None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"]["keys"], json!(["a", "b/"]));
    let (_, listed_get) = server.get("sys/raw/dir?list=true", Some(&token));
    assert_eq!(listed_get["data"], listed["data"]);
    // Envelope fields are all there.
    for field in ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"] {
        assert!(listed.get(field).is_some(), "envelope lacks {field}: {listed}");
    }
    assert_eq!(server.request("LIST", "sys/raw/empty", Some(&token), None).0, 404);
    assert_eq!(server.request("DELETE", "sys/raw/dir/a", Some(&token), None).0, 204);
    assert_eq!(server.get("sys/raw/dir/a", Some(&token)).0, 404);
    assert_eq!(server.request("PATCH", "sys/raw/dir/b/c", Some(&token), Some(&json!({}))).0, 415);
}

#[test]
fn health_codes_and_leader_follow_vault() {
    let mut server = TestServer::start();
    let init = server.init(1, 1);
    let (status, body) = server.get("sys/health", None);
    assert_eq!(status, 503);
    assert_eq!(body["sealed"], json!(true));
    assert_eq!(server.get("sys/health?sealedcode=299", None).0, 299);
    assert_eq!(server.get("sys/health?sealedcode=abc", None).0, 400);
    server.unseal(&init.keys);
    let (status, body) = server.get("sys/health", None);
    assert_eq!(status, 200);
    for field in ["initialized", "sealed", "standby", "server_time_utc", "version", "cluster_id", "cluster_name"] {
        assert!(body.get(field).is_some(), "health lacks {field}: {body}");
    }
    assert_eq!(server.get("sys/health?activecode=218&standbyok=true", None).0, 218);
    let head = reqwest::blocking::Client::new().head(format!("{}/v1/sys/health", server.addr)).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);
    // Said outright: without a length a client may wait for the connection to close.
    assert_eq!(head.headers().get("content-length").map(|value| value.to_str().unwrap()), Some("0"));
    assert_eq!(head.text().unwrap(), "");
    // A HEAD that is refused says how long its error would have been, and sends no body.
    let head = reqwest::blocking::Client::new().head(format!("{}/v1/sys/seal-status", server.addr)).send().unwrap();
    assert_eq!(head.status().as_u16(), 405);
    let length = head.headers().get("content-length").map(|value| value.to_str().unwrap().to_owned());
    assert!(length.as_deref().is_some_and(|length| length != "0"), "content-length {length:?}");
    assert_eq!(head.text().unwrap(), "");
    let (status, body) = server.get("sys/leader", None);
    assert_eq!(status, 200);
    assert_eq!(body["ha_enabled"], json!(false));
    server.restart();
    // Sealed: every other path is 503, whatever the token.
    for path in ["sys/key-status", "sys/raw/x", "nope"] {
        let (status, body) = server.get(path, Some(&init.root_token));
        assert_eq!((status, body), (503, json!({ "errors": ["Vault is sealed"] })), "{path}");
    }
}

#[test]
fn bad_config_fails_start_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("storage \"inmem\" {}\nlistener \"tcp\" {\n address = \"127.0.0.1:0\"\n tls_disable = true\n}\nbogus_key = 1\n", "bogus_key"),
        ("storage \"raft\" {}\nlistener \"tcp\" {\n address = \"127.0.0.1:0\"\n tls_disable = true\n}\n", "raft"),
        ("storage \"inmem\" {}\nlistener \"tcp\" {\n address = \"127.0.0.1:0\"\n tls_min_version = \"tls11\"\n}\n", "tls_min_version"),
        ("storage \"inmem\" {\nlistener", "config.hcl"),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("config.hcl");
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(binary())
            .args(["server", &format!("-config={}", path.display())])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}: {stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    }
}

/// A GET with the path sent byte for byte; returns status and body text.
fn raw_get(base: &str, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
