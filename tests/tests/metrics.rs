//! End to end: `sys/metrics` in Prometheus and JSON form, who may read it, and that what it
//! counts is right and carries no secret, token or request path.

use arcanum_tests::{metric, sled_config, TestServer};
use serde_json::{json, Value};

const SECRET_VALUE: &str = "metrics-must-never-show-this-value";
const SECRET_PATH: &str = "very-private-path-name";

#[test]
fn metrics_count_requests_logins_audit_and_storage_without_leaking() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = Some(init.root_token.as_str());

    // Token-protected by default.
    let (status, body) = server.get("sys/metrics", None);
    assert_eq!(status, 403, "{body}");
    let (_, created) = server.put("auth/token/create", root, json!({ "policies": ["default"] }));
    let plain = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, body) = server.get("sys/metrics?format=prometheus", Some(&plain));
    assert_eq!(status, 403, "the default policy does not grant sys/metrics: {body}");

    // Some traffic worth counting.
    let audit_file = server.dir.path().join("audit.log");
    let (status, body) = server.put(
        "sys/audit/file",
        root,
        json!({ "type": "file", "options": { "file_path": audit_file.to_str().unwrap() } }),
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.put("sys/mounts/secret", root, json!({ "type": "kv", "options": { "version": "2" } })).0, 204);
    let secret = format!("secret/data/{SECRET_PATH}");
    assert_eq!(server.put(&secret, root, json!({ "data": { "password": SECRET_VALUE } })).0, 200);
    for _ in 0..3 {
        assert_eq!(server.get(&secret, root).0, 200);
    }
    assert_eq!(server.get("secret/data/missing", root).0, 404);
    assert_eq!(server.put("sys/auth/userpass", root, json!({ "type": "userpass" })).0, 204);
    assert_eq!(server.put("auth/userpass/users/alice", root, json!({ "password": "pw-alice-123" })).0, 204);
    let (status, login) = server.put("auth/userpass/login/alice", None, json!({ "password": "pw-alice-123" }));
    assert_eq!(status, 200, "{login}");
    let login_token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(server.put("auth/userpass/login/alice", None, json!({ "password": "wrong" })).0, 400);
    }

    let text = server.metrics_text(root);
    let value = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"));
    assert_eq!(value("arcanum_core_initialized"), 1.0);
    assert_eq!(value("arcanum_core_unsealed"), 1.0);
    assert_eq!(value(r#"arcanum_http_requests_total{method="GET",mount="secret/",status_class="2xx"}"#), 3.0);
    assert_eq!(value(r#"arcanum_http_requests_total{method="GET",mount="secret/",status_class="4xx"}"#), 1.0);
    assert_eq!(value(r#"arcanum_http_requests_total{method="GET",mount="sys/",status_class="4xx"}"#), 2.0);
    assert!(value(r#"arcanum_http_request_duration_seconds_count{method="GET",mount="secret/"}"#) >= 4.0);
    assert_eq!(value(r#"arcanum_auth_logins_total{auth_method="userpass",mount="auth/userpass/"}"#), 1.0);
    assert_eq!(value(r#"arcanum_auth_login_failures_total{auth_method="userpass",mount="auth/userpass/"}"#), 2.0);
    // root, the default-policy token and the login token.
    assert_eq!(value("arcanum_token_count"), 3.0);
    assert!(value(r#"arcanum_audit_writes_total{device="file/"}"#) >= 20.0);
    assert_eq!(value(r#"arcanum_audit_failures_total{device="file/"}"#), 0.0);
    assert!(value(r#"arcanum_barrier_encryptions_total{term="1"}"#) >= 5.0);
    assert!(value(r#"arcanum_storage_operation_duration_seconds_count{operation="get"}"#) >= 4.0);
    for leak in [SECRET_VALUE, SECRET_PATH, "pw-alice-123", init.root_token.as_str(), &plain, &login_token] {
        assert!(!text.contains(leak), "the metrics contain {leak:?}");
    }

    // Vault's JSON shape without a format.
    let (status, json_body) = server.get("sys/metrics", root);
    assert_eq!(status, 200, "{json_body}");
    for section in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
        assert!(json_body.get(section).is_some(), "missing {section}: {json_body}");
    }
    let unsealed = json_body["Gauges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|gauge| gauge["Name"] == "arcanum_core_unsealed")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(unsealed["Value"], json!(1.0), "{json_body}");
    assert!(!json_body.to_string().contains(SECRET_VALUE));

    let (status, body) = server.get("sys/metrics?format=xml", root);
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("xml"), "{body}");

    // Reading metrics is itself a request: it is audited like any other.
    let log = std::fs::read_to_string(&audit_file).unwrap();
    assert!(log.contains("\"path\":\"sys/metrics\""), "metrics requests are audited");
}

#[test]
fn unauthenticated_metrics_access_works_sealed_and_answers_prometheus_accept_headers() {
    let server = TestServer::start_with(|dir| {
        sled_config(dir, "telemetry {\n    unauthenticated_metrics_access = true\n  }", "")
    });
    let text = server.metrics_text(None);
    assert_eq!(metric(&text, "arcanum_core_initialized"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "arcanum_core_unsealed"), Some(0.0));

    let init = server.init(3, 2);
    let text = server.metrics_text(None);
    assert_eq!(metric(&text, "arcanum_core_initialized"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "arcanum_core_unseal_threshold"), Some(2.0));
    assert_eq!(server.put("sys/unseal", None, json!({ "key": init.keys[0] })).0, 200);
    assert_eq!(metric(&server.metrics_text(None), "arcanum_core_unseal_progress"), Some(1.0));
    assert_eq!(server.put("sys/unseal", None, json!({ "key": init.keys[1] })).0, 200);
    let text = server.metrics_text(None);
    assert_eq!(metric(&text, "arcanum_core_unsealed"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "arcanum_core_unseal_progress"), Some(0.0));

    // Prometheus' own scrape asks by Accept header, without the format parameter.
    let response = reqwest::blocking::Client::new()
        .get(format!("{}/v1/sys/metrics", server.addr))
        .header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(response.text().unwrap().contains("# TYPE arcanum_http_requests_total counter"));
}
