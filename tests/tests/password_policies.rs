//! End to end: `sys/policies/password` against the real binary — writing, reading, listing,
//! generating and deleting policies, Vault's refusals, ACLs, and policies surviving a restart.

use arcanum_policy::PasswordPolicy;
use arcanum_tests::TestServer;
use base64::Engine as _;
use serde_json::json;

const POLICY: &str = r#"
length = 30
rule "charset" {
  charset = "abcdefghijklmnopqrstuvwxyz"
  min-chars = 2
}
rule "charset" {
  charset = "0123456789"
  min-chars = 3
}
rule "charset" {
  charset = "!@#%^*"
  min-chars = 1
}
"#;

fn ready() -> (TestServer, arcanum_tests::Init) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    (server, init)
}

#[test]
fn password_policies_are_written_read_listed_used_and_deleted() {
    let (mut server, init) = ready();
    let root = Some(init.root_token.as_str());
    let parsed = PasswordPolicy::parse(POLICY).expect("the test policy is valid");

    // Nothing yet: Vault answers an empty list with 404.
    assert_eq!(server.request("LIST", "sys/policies/password", root, None).0, 404);
    let (status, body) = server.put("sys/policies/password/app", root, json!({ "policy": POLICY }));
    assert_eq!(status, 204, "{body}");
    // Sent base64-encoded, as the vault CLI and some tools do; stored decoded.
    let encoded = base64::engine::general_purpose::STANDARD.encode(POLICY);
    let (status, body) = server.put("sys/policies/password/team/db", root, json!({ "policy": encoded }));
    assert_eq!(status, 204, "{body}");

    let (status, body) = server.get("sys/policies/password/team/db", root);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["policy"], POLICY);
    let (status, body) = server.request("LIST", "sys/policies/password", root, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["keys"], json!(["app", "team/db"]));
    // hvac's generic `list()` is a GET with `list=True` (Go's ParseBool spellings are accepted).
    let (status, body) = server.get("sys/policies/password?list=True", root);
    assert_eq!((status, &body["data"]["keys"]), (200, &json!(["app", "team/db"])), "{body}");
    let (status, body) = server.get("sys/policies/password?list=yes", root);
    assert_eq!(status, 400, "Vault refuses what ParseBool does not know: {body}");

    let mut seen = std::collections::HashSet::new();
    for name in ["app", "team/db"] {
        for _ in 0..20 {
            let (status, body) = server.get(&format!("sys/policies/password/{name}/generate"), root);
            assert_eq!(status, 200, "{body}");
            let password = body["data"]["password"].as_str().expect("a password").to_owned();
            assert!(parsed.admits(&password), "{password:?} breaks the policy");
            assert!(seen.insert(password), "a password came twice");
        }
    }

    // Names are case-sensitive, as in Vault.
    let (status, body) = server.get("sys/policies/password/APP/generate", root);
    assert_eq!((status, body["errors"][0].as_str()), (404, Some("policy does not exist")), "{body}");
    assert_eq!(server.get("sys/policies/password/APP", root).0, 404);

    // Survives a restart (stored behind the barrier).
    server.restart();
    server.unseal(&init.keys);
    let (status, body) = server.get("sys/policies/password/app/generate", root);
    assert_eq!(status, 200, "{body}");
    assert!(parsed.admits(body["data"]["password"].as_str().unwrap()));

    let (status, body) = server.request("DELETE", "sys/policies/password/app", root, None);
    assert_eq!(status, 204, "{body}");
    // Deleting what is not there succeeds, as in Vault.
    assert_eq!(server.request("DELETE", "sys/policies/password/app", root, None).0, 204);
    assert_eq!(server.get("sys/policies/password/app", root).0, 404);
    assert_eq!(server.request("LIST", "sys/policies/password", root, None).1["data"]["keys"], json!(["team/db"]));
}

#[test]
fn policies_vault_refuses_are_refused_and_nothing_is_stored() {
    let (server, init) = ready();
    let root = Some(init.root_token.as_str());
    let cases = [
        ("", "missing policy"),
        ("length = 3\nrule \"charset\" {\n charset = \"abc\"\n}\n", "passwords must be between 4 and 100 characters"),
        ("length = 101\nrule \"charset\" {\n charset = \"abc\"\n}\n", "passwords must be between 4 and 100 characters"),
        ("length = 20\n", "no charset specified"),
        (
            "length = 4\nrule \"charset\" {\n charset = \"ab\"\n min-chars = 5\n}\n",
            "specified rules require at least 5 characters but 4 is specified",
        ),
        ("length = 8\nrule \"words\" {\n charset = \"ab\"\n}\n", "unrecognized rule type words"),
        ("length = 8\nrule \"charset\" {", "invalid password policy: "),
    ];
    for (text, message) in cases {
        let (status, body) = server.put("sys/policies/password/bad", root, json!({ "policy": text }));
        assert_eq!(status, 400, "{text:?}: {body}");
        let error = body["errors"][0].as_str().unwrap_or_default();
        assert!(error.contains(message), "{text:?}: {error:?} should mention {message:?}");
        assert_eq!(server.get("sys/policies/password/bad", root).0, 404, "{text:?} was stored");
    }
    let (status, body) = server.put("sys/policies/password/bad", root, json!({ "policy": 42 }));
    assert_eq!(status, 400, "{body}");
    // A bad rewrite leaves the good policy in place.
    assert_eq!(server.put("sys/policies/password/good", root, json!({ "policy": POLICY })).0, 204);
    assert_eq!(server.put("sys/policies/password/good", root, json!({ "policy": "length = 2" })).0, 400);
    assert_eq!(server.get("sys/policies/password/good", root).1["data"]["policy"], POLICY);
    assert_eq!(server.request("LIST", "sys/policies/password", root, None).1["data"]["keys"], json!(["good"]));
}

#[test]
fn acls_govern_password_policies_like_any_path() {
    let (server, init) = ready();
    let root = Some(init.root_token.as_str());
    assert_eq!(server.put("sys/policies/password/app", root, json!({ "policy": POLICY })).0, 204);
    let acl = r#"path "sys/policies/password/app/generate" { capabilities = ["read"] }"#;
    assert_eq!(server.put("sys/policies/acl/gen", root, json!({ "policy": acl })).0, 204);
    let (status, body) = server.put("auth/token/create", root, json!({ "policies": ["gen"] }));
    assert_eq!(status, 200, "{body}");
    let limited = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let limited = Some(limited.as_str());

    let (status, body) = server.get("sys/policies/password/app/generate", limited);
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("sys/policies/password/app", limited).0, 403);
    assert_eq!(server.put("sys/policies/password/app", limited, json!({ "policy": "length = 4" })).0, 403);
    assert_eq!(server.request("DELETE", "sys/policies/password/app", limited, None).0, 403);
    assert_eq!(server.request("LIST", "sys/policies/password", limited, None).0, 403);
    assert_eq!(server.get("sys/policies/password/app", root).1["data"]["policy"], POLICY);
}
