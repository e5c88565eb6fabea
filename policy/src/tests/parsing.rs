//! Parse errors and accepted syntaxes.

use crate::{default_policy_text, Capabilities, Capability, PatternKind, Policy, PolicyError};
use serde_json::json;
use std::time::Duration;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse("test", text)
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(p) => panic!("expected an error, parsed {:?}", p.rules()),
        Err(e) => e.to_string(),
    }
}

fn caps(names: &[Capability]) -> Capabilities {
    names.iter().copied().collect()
}

#[test]
fn syntax_error_names_the_line() {
    let text =
        "path \"secret/a\" {\n  capabilities = [\"read\"]\n}\n\npath \"secret/b\" {\n  capabilities = [\"read\"\n}\n";
    match parse(text) {
        Err(PolicyError::Syntax { line, .. }) => assert_eq!(line, 7),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let message = error(text);
    assert!(message.starts_with("line 7, column "), "{message}");
    assert!(!message.contains('\n'), "one-line message expected: {message}");
}

#[test]
fn unknown_capability_names_path_and_value() {
    let message = error("path \"secret/*\" {\n  capabilities = [\"read\", \"raed\"]\n}\n");
    assert_eq!(message, r#"path "secret/*": unknown capability "raed" (line 2)"#);
    // Capability names are case-sensitive, as in Vault.
    assert!(error(r#"path "a" { capabilities = ["Read"] }"#).contains(r#"unknown capability "Read""#));
}

#[test]
fn unknown_keys_are_refused() {
    let message = error("path \"secret/*\" {\n  capabilities = [\"read\"]\n  capabilitiez = [\"list\"]\n}\n");
    assert_eq!(message, r#"path "secret/*": unknown key "capabilitiez" (line 3)"#);
    assert!(error("foo = 1\n").contains(r#"unknown key "foo" (line 1)"#));
    assert!(error("\nresource \"x\" {}\n").contains(r#"unknown key "resource" (line 2)"#));
    // OpenBao-only keys: refused as Vault refuses them, rather than dropping the restriction silently.
    assert!(error(r#"path "a" { expiration = "2030-01-01T00:00:00Z" }"#).contains(r#"unknown key "expiration""#));
    assert!(error(r#"{"path": {"a": {"capabilities": ["read"], "bogus": 1}}}"#).contains(r#"unknown key "bogus""#));
    assert!(error(r#"{"paths": {}}"#).contains(r#"unknown key "paths""#));
}

#[test]
fn vault_keys_without_arcanum_features_are_accepted() {
    let policy = parse(
        r#"
        name = "ignored"
        path "a" {
          capabilities = ["read", "subscribe", "recover"]
          comment = "why this exists"
          mfa_methods = ["totp"]
          subscribe_event_types = ["kv*"]
          control_group {
            ttl = "4h"
          }
        }
        "#,
    )
    .expect("parses");
    assert_eq!(policy.rules()[0].capabilities(), caps(&[Capability::Read]));
}

#[test]
fn wildcards() {
    let policy = parse(
        r#"
        path "secret/*/foo" { capabilities = ["read"] }
        path "secret/foo*" { capabilities = ["read"] }
        path "secret/+/foo" { capabilities = ["read"] }
        path "secret/+/foo/*" { capabilities = ["read"] }
        path "+" { capabilities = ["read"] }
        path "a+b/c" { capabilities = ["read"] }
        path "/lead" { capabilities = ["read"] }
        path "*" { capabilities = ["read"] }
        "#,
    )
    .expect("parses");
    let kinds: Vec<(&str, PatternKind)> = policy.rules().iter().map(|r| (r.path(), r.kind())).collect();
    assert_eq!(
        kinds,
        vec![
            ("secret/*/foo", PatternKind::Exact),
            ("secret/foo*", PatternKind::Prefix),
            ("secret/+/foo", PatternKind::Segment),
            ("secret/+/foo/*", PatternKind::Segment),
            ("+", PatternKind::Segment),
            ("a+b/c", PatternKind::Exact),
            ("lead", PatternKind::Exact),
            ("*", PatternKind::Prefix),
        ]
    );
    assert!(error(r#"path "secret/+*" { capabilities = ["read"] }"#).contains("'+*' is forbidden"));
}

#[test]
fn json_form_matches_hcl() {
    let hcl = parse(
        r#"
        path "secret/foo" {
          capabilities = ["read", "list"]
          allowed_parameters = { "Bar" = ["zip", "zap"], "*" = [] }
          denied_parameters = { "ttl" = [] }
          required_parameters = ["id"]
          min_wrapping_ttl = "1s"
          max_wrapping_ttl = 90
        }
        path "secret/other/*" { capabilities = ["deny"] }
        "#,
    )
    .expect("hcl");
    let json = parse(
        &json!({"path": {
            "secret/foo": {
                "capabilities": ["read", "list"],
                "allowed_parameters": {"Bar": ["zip", "zap"], "*": []},
                "denied_parameters": {"ttl": []},
                "required_parameters": ["id"],
                "min_wrapping_ttl": "1s",
                "max_wrapping_ttl": 90
            },
            "secret/other/*": {"capabilities": ["deny"]}
        }})
        .to_string(),
    )
    .expect("json");
    assert_eq!(hcl.rules(), json.rules());
    let rule = &json.rules()[0];
    assert_eq!(rule.allowed_parameters().get("bar"), Some(&vec![json!("zip"), json!("zap")]));
    assert_eq!(rule.min_wrapping_ttl(), Duration::from_secs(1));
    assert_eq!(rule.max_wrapping_ttl(), Duration::from_secs(90));
    assert_eq!(rule.required_parameters(), ["id".to_owned()]);

    // HCL1's JSON flavour: arrays of objects.
    let arrays = parse(r#"{"path": [{"secret/foo": [{"capabilities": ["read"]}]}, {"b": {"policy": "write"}}]}"#)
        .expect("array form");
    assert_eq!(arrays.rules().len(), 2);
    assert_eq!(arrays.rules()[1].capabilities().to_strings(), vec!["create", "delete", "list", "read", "update"]);

    match parse("{\n  \"path\": {\n    \"a\": {\"capabilities\": [\"read\"],}\n  }\n}") {
        Err(PolicyError::Syntax { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected a JSON syntax error, got {other:?}"),
    }
    assert!(error(r#"{"path": {"a": ["read"]}}"#).contains("must be an object"));
    assert!(error(r#"{"path": "a"}"#).contains(r#""path" must be an object"#));
    assert!(error(r#"{"path": {"a": {"capabilities": ["raed"]}}}"#).contains(r#"path "a": unknown capability "raed""#));
}

#[test]
fn legacy_policy_values() {
    let policy = parse(
        r#"
        path "a" { policy = "read" }
        path "b" { policy = "write" }
        path "c" { policy = "sudo" }
        path "d" {
          policy = "deny"
          capabilities = ["read"]
        }
        path "e" {
          policy = "read"
          capabilities = ["update"]
        }
        "#,
    )
    .expect("parses");
    let got: Vec<Vec<String>> = policy.rules().iter().map(|r| r.capabilities().to_strings()).collect();
    assert_eq!(
        got,
        vec![
            vec!["list", "read"],
            vec!["create", "delete", "list", "read", "update"],
            vec!["create", "delete", "list", "read", "sudo", "update"],
            vec!["deny"],
            vec!["list", "read", "update"],
        ]
    );
    assert!(error(r#"path "a" { policy = "admin" }"#).contains(r#"invalid policy "admin""#));
}

#[test]
fn deny_stanza_carries_no_constraints() {
    let policy = parse(
        r#"
        path "a" {
          capabilities = ["deny", "read", "whatever"]
          allowed_parameters = { "x" = [] }
        }
        "#,
    )
    .expect("deny ends the stanza, as in Vault");
    let rule = &policy.rules()[0];
    assert_eq!(rule.capabilities(), Capabilities::deny());
    assert!(rule.allowed_parameters().is_empty());
}

#[test]
fn parameter_and_ttl_validation() {
    assert!(error(r#"path "a" { allowed_parameters = ["x"] }"#).contains("allowed_parameters must be a map"));
    assert!(error(r#"path "a" { denied_parameters = { "fo*o" = [] } }"#).contains("non-tail wildcards"));
    assert!(parse(r#"path "a" { denied_parameters = { "/a/b/*" = [] } }"#).is_ok());
    assert!(error(r#"path "a" { required_parameters = [1] }"#).contains("required_parameters must be a list"));
    assert!(error(r#"path "a" { capabilities = "read, list" }"#).contains(r#"unknown capability "read, list""#));
    assert!(error(r#"path "a" { capabilities = 5 }"#).contains("capabilities must be a list of strings"));
    assert!(error(r#"path "a" { min_wrapping_ttl = "soon" }"#).contains("invalid min_wrapping_ttl"));
    let message = error("path \"a\" {\n  min_wrapping_ttl = \"1h\"\n  max_wrapping_ttl = \"1m\"\n}\n");
    assert!(message.contains("max_wrapping_ttl cannot be less than min_wrapping_ttl"), "{message}");
    assert!(error(r#"path "a" { capabilities = [var.x] }"#).contains("only literal values"));
    assert!(error(r#"path "a" "b" { capabilities = ["read"] }"#).contains("exactly one label"));

    // Block spelling of a parameter map, heredoc and numeric values.
    let policy = parse(
        "path \"a\" {\n  allowed_parameters {\n    foo = [1, true, \"x\"]\n  }\n  comment = <<EOT\nmulti\nline\nEOT\n}\n",
    )
    .expect("parses");
    assert_eq!(policy.rules()[0].allowed_parameters().get("foo"), Some(&vec![json!(1), json!(true), json!("x")]));
}

#[test]
fn templated_paths_are_kept() {
    let policy = parse(r#"path "secret/data/{{identity.entity.name}}/*" { capabilities = ["read"] }"#).expect("parses");
    assert!(policy.is_templated());
    assert_eq!(policy.rules()[0].path(), "secret/data/{{identity.entity.name}}/*");
    assert!(error(r#"path "secret/{{identity.entity.id" { capabilities = ["read"] }"#).contains("unbalanced"));
    assert!(error(r#"path "secret/{{foo}}" { capabilities = ["read"] }"#).contains("invalid template"));
    let default = Policy::parse("default", default_policy_text()).expect("default parses");
    assert!(default.is_templated());
}

#[test]
fn names_and_text() {
    let text = "path \"a\" { capabilities = [\"read\"] }\n";
    let policy = Policy::parse("  Dev-Team ", text).expect("parses");
    assert_eq!(policy.name(), "dev-team");
    assert_eq!(policy.text(), text);
    assert_eq!(Policy::parse("   ", text).err(), Some(PolicyError::EmptyName));
    assert_eq!(crate::normalize_name(" ROOT "), "root");
    let empty = Policy::parse("x", "# only a comment\n").expect("comments only");
    assert!(empty.rules().is_empty());
}

/// Runs on a 2 MiB stack (tokio's worker default) so that a parser recursing per nesting level would
/// overflow here, in a debug build, rather than in the server.
#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let worker = std::thread::Builder::new().stack_size(2 << 20).spawn(|| {
        let n = 100_000;
        let mut refused = vec![
            format!("path \"a\" {{ capabilities = {}{} }}", "[".repeat(n), "]".repeat(n)),
            format!("{{\"path\": {}{}}}", "[".repeat(n), "]".repeat(n)),
            format!("{{\"path\": {}", "{\"a\": ".repeat(n)),
            format!("path \"a\" {{ comment = {}true }}", "!".repeat(n)),
            format!("path \"a\" {{ comment = {}1 }}", "-".repeat(n)),
            format!("path \"a\" {{ comment = {}1 }}", "- ".repeat(n)),
            format!("path \"a\" {{ comment = 1{} }}", " + 1".repeat(n)),
            format!("path \"a\" {{ comment = 1{} }}", "-1".repeat(n)),
            format!("path \"a\" {{ comment = {}1{} }}", "(".repeat(n), ")".repeat(n)),
            format!("path \"a\" {{ comment = {}1 }}", "x ? 1 : ".repeat(n)),
            format!("path \"a\" {{ comment = \"{}x{}\" }}", "${\"".repeat(n), "\"}".repeat(n)),
            format!("path \"a\" {{ comment = \"{}\" }}", "%{if x}".repeat(n)),
            format!("path \"a\" {{ comment = {} }}", "f(".repeat(n)),
            format!("path \"a\" {{ comment = [for x in {} }}", "[for x in ".repeat(n)),
            format!("path \"a\" {{ comment = {{ a = {} }} }}", "{ a = ".repeat(n)),
            "b {\n".repeat(n),
            format!("path \"a\" {{ comment = <<EOT\n{}\nEOT\n }}", "${\"".repeat(n)),
        ];
        refused.push(format!("path \"a\" {{ comment = x{} }}", "[0]".repeat(n)));
        refused.push(format!("path \"a\" {{ comment = x{} }}", ".b".repeat(n)));
        for text in &refused {
            assert!(parse(text).is_err(), "{}", &text[..80.min(text.len())]);
        }
        for text in [
            "path",
            "path \"a\"",
            "path \"a\" {",
            "}",
            "\u{0}",
            "path \"\u{1F600}\" { capabilities = [\"read\"] }",
            "path \"a\" { capabilities = [\"read\"] } path \"b\" {}",
            "[",
            "{",
            "{\"path\": null}",
            "path \"a\" { allowed_parameters = { (1 + 2) = [] } }",
            "path \"a\" { comment = <<EOT\nunterminated",
        ] {
            let _ = parse(text);
        }
    });
    assert!(worker.map(|w| w.join().is_ok()).unwrap_or(false), "parsing panicked");
}
