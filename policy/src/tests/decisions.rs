//! Table-driven decisions: each row is policies + request + the outcome Vault gives.

use crate::{default_policy_text, Acl, AclRequest, Capabilities, Capability, Operation, Policy};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// An operation plus whether the server marked the path root-protected.
#[derive(Debug, Clone, Copy)]
struct Op(Operation, bool);

const READ: Op = Op(Operation::Read, false);
const LIST: Op = Op(Operation::List, false);
const CREATE: Op = Op(Operation::Create, false);
const UPDATE: Op = Op(Operation::Update, false);
const PATCH: Op = Op(Operation::Patch, false);
const DELETE: Op = Op(Operation::Delete, false);
const READ_SUDO: Op = Op(Operation::Read, true);
const UPDATE_SUDO: Op = Op(Operation::Update, true);

/// Stand-ins for the built-in policies inside a row's policy list.
const ROOT: &str = "@root";
const DEFAULT: &str = "@default";

fn build_acl(policies: &[&str]) -> Acl {
    let parsed: Vec<Policy> = policies
        .iter()
        .enumerate()
        .map(|(i, text)| match *text {
            ROOT => Policy::parse("root", "").expect("root"),
            DEFAULT => Policy::parse("default", default_policy_text()).expect("default policy parses"),
            text => Policy::parse(&format!("p{i}"), text).unwrap_or_else(|e| panic!("policy {i} does not parse: {e}")),
        })
        .collect();
    let refs: Vec<&Policy> = parsed.iter().collect();
    Acl::new(&refs)
}

fn object(params: &Option<Value>) -> Option<Map<String, Value>> {
    params.as_ref().map(|v| v.as_object().expect("params must be a JSON object").clone())
}

/// Returns a description of the mismatch, if any, so the table reports every failing row at once.
fn check(policies: &[&str], path: &str, op: Op, params: Option<Value>, expected: bool) -> Option<String> {
    let acl = build_acl(policies);
    let data = object(&params);
    let request = AclRequest { path, operation: op.0, parameters: data.as_ref(), needs_sudo: op.1 };
    let decision = acl.check(&request);
    (decision.allowed != expected)
        .then(|| format!("{:?} {path:?} params={params:?}: expected allowed={expected}, got {decision:?}", op))
}

const KV: &str = r#"
path "secret/*"           { capabilities = ["read", "list"] }
path "secret/data/*"      { capabilities = ["create", "update"] }
path "secret/data/+/x"    { capabilities = ["delete"] }
path "secret/data/team/x" { capabilities = ["patch"] }
"#;
const ZIP: &str = r#"path "secret/zip-*" { capabilities = ["read"] }"#;
const EXACT_A: &str = r#"path "secret/data/a" { capabilities = ["read"] }"#;
const EXACT_A_LIST: &str = r#"path "secret/data/a" { capabilities = ["list"] }"#;
const MIDDLE_STAR: &str = r#"path "secret/*/foo" { capabilities = ["read"] }"#;
const PLUS: &str = r#"path "secret/+/teamb" { capabilities = ["read"] }"#;
const PLUS_GLOB: &str = r#"path "secret/+/foo/*" { capabilities = ["read"] }"#;
const PLUS_FIRST: &str = r#"path "+/x" { capabilities = ["read"] }"#;
const PRIO_FIRST_WC: &str = r#"
path "foo/bar/+" { capabilities = ["read"] }
path "foo/+/bar" { capabilities = ["update"] }
"#;
const PRIO_NOT_GLOB: &str = r#"
path "foo/+" { capabilities = ["read"] }
path "foo/*" { capabilities = ["update"] }
"#;
const PRIO_GLOB_LATER: &str = r#"
path "foo/a*" { capabilities = ["read"] }
path "foo/+"  { capabilities = ["update"] }
"#;
const PRIO_FEWER_PLUS: &str = r#"
path "a/+/b/c" { capabilities = ["read"] }
path "a/+/+/c" { capabilities = ["update"] }
"#;
const PRIO_LONGER: &str = r#"
path "a/+/bar/ba*" { capabilities = ["read"] }
path "a/+/bar/b*"  { capabilities = ["update"] }
"#;
const PRIO_LEXICAL: &str = r#"
path "a/+/b/+" { capabilities = ["read"] }
path "a/+/+/c" { capabilities = ["update"] }
"#;
const FOO_READ: &str = r#"path "secret/foo" { capabilities = ["read"] }"#;
const FOO_UPDATE: &str = r#"path "secret/foo" { capabilities = ["update"] }"#;
const SECRET_BROAD: &str = r#"path "secret/*" { capabilities = ["read", "update", "delete"] }"#;
const FOO_DENY: &str = r#"path "secret/foo" { capabilities = ["deny"] }"#;
const FOO_DENY_WITH_SUDO: &str = r#"path "secret/foo" { capabilities = ["read", "sudo", "deny"] }"#;
const META_EXACT_DENY: &str = r#"
path "secret/metadata/*"       { capabilities = ["list"] }
path "secret/metadata/private" { capabilities = ["deny"] }
"#;
const META_GLOB_DENY: &str = r#"
path "secret/metadata/*"         { capabilities = ["list"] }
path "secret/metadata/private/*" { capabilities = ["deny"] }
"#;
const META_PLUS_DENY: &str = r#"
path "secret/metadata/*" { capabilities = ["list"] }
path "secret/metadata/+" { capabilities = ["deny"] }
"#;
const BROAD_DENY: &str = r#"
path "secret/*"  { capabilities = ["deny"] }
path "secret/ok" { capabilities = ["read"] }
"#;
const ALLOWED: &str = r#"
path "auth/token/create" {
  capabilities       = ["create", "update"]
  allowed_parameters = { "policies" = ["web", "db-*"], "ttl" = [] }
}
"#;
const DENIED: &str = r#"
path "sys/mounts/*" {
  capabilities      = ["create", "update", "read"]
  denied_parameters = { "type" = ["plugin-*"], "local" = [] }
}
"#;
const DENY_ALL_PARAMS: &str = r#"
path "x/deny-all" {
  capabilities = ["update"]
  denied_parameters = { "*" = [] }
}
"#;
const ALLOW_ALL_PARAMS: &str = r#"
path "x/allow-all" {
  capabilities = ["update"]
  allowed_parameters = { "*" = [] }
}
"#;
const ALLOW_STAR_AND_KEY: &str = r#"
path "x/mixed" {
  capabilities = ["update"]
  allowed_parameters = { "*" = [], "foo" = ["bar"] }
}
"#;
const ALLOW_AND_DENY: &str = r#"
path "x/both" {
  capabilities = ["update"]
  allowed_parameters = { "foo" = [] }
  denied_parameters  = { "foo" = ["bad"] }
}
"#;
const REQUIRED: &str = r#"
path "x/req" {
  capabilities        = ["update", "delete"]
  required_parameters = ["id"]
}
"#;
const SUFFIX_GLOB: &str = r#"
path "x/suffix" {
  capabilities = ["update"]
  allowed_parameters = { "name" = ["*-prod"] }
}
"#;
const MERGE_P1: &str = r#"
path "x/merge" {
  capabilities = ["update"]
  allowed_parameters = { "a" = ["1"] }
}
"#;
const MERGE_P2: &str = r#"
path "x/merge" {
  capabilities = ["update"]
  allowed_parameters = { "a" = ["2"], "b" = [] }
}
"#;
const MERGE_UNRESTRICTED: &str = r#"path "x/merge" { capabilities = ["update"] }"#;
const SUDO: &str = r#"
path "sys/audit"   { capabilities = ["read", "sudo"] }
path "sys/audit/*" { capabilities = ["update"] }
"#;
const LEGACY_WRITE: &str = r#"path "secret/legacy" { policy = "write" }"#;
const LEGACY_READ: &str = r#"path "secret/legacy" { policy = "read" }"#;
const FOLDER: &str = r#"path "secret/folder/" { capabilities = ["list"] }"#;
const LEADING_SLASH: &str = r#"path "/secret/lead" { capabilities = ["read"] }"#;
const CREATE_ONLY: &str = r#"path "secret/c" { capabilities = ["create"] }"#;
const WRAPPED: &str = r#"
path "secret/w" {
  capabilities     = ["read"]
  min_wrapping_ttl = "1s"
}
"#;

/// Policies, request path, operation, request data, expected `allowed`.
type Row = (&'static [&'static str], &'static str, Op, Option<Value>, bool);

#[test]
fn decision_table() {
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        // Longest glob, `+` over glob at the same position, exact over everything.
        (&[KV], "secret/foo", READ, None, true),
        (&[KV], "secret/foo", UPDATE, None, false),
        (&[KV], "secret/data/a", UPDATE, None, true),
        (&[KV], "secret/data/a", READ, None, false),
        (&[KV], "secret/data/b/x", DELETE, None, true),
        (&[KV], "secret/data/b/x", UPDATE, None, false),
        (&[KV], "secret/data/team/x", PATCH, None, true),
        (&[KV], "secret/data/team/x", DELETE, None, false),
        (&[KV], "secret/data/b/x/y", UPDATE, None, true),
        (&[KV], "secret", READ, None, false),
        (&[KV], "secret/", LIST, None, true),
        // `*` is a plain string prefix, not a segment glob.
        (&[ZIP], "secret/zip-zap/zong", READ, None, true),
        (&[ZIP], "secret/zip", READ, None, false),
        (&[ZIP], "secret/zipzap", READ, None, false),
        // Exact paths do not match longer names or trailing slashes.
        (&[EXACT_A], "secret/data/a", READ, None, true),
        (&[EXACT_A], "secret/data/ab", READ, None, false),
        (&[EXACT_A], "secret/data/a/", READ, None, false),
        (&[EXACT_A], "secret/data/a/", LIST, None, false),
        (&[EXACT_A_LIST], "secret/data/a/", LIST, None, true),
        (&[EXACT_A_LIST], "secret/data/ab/", LIST, None, false),
        // A `*` that is not last is literal.
        (&[MIDDLE_STAR], "secret/x/foo", READ, None, false),
        (&[MIDDLE_STAR], "secret/*/foo", READ, None, true),
        // `+` is exactly one segment.
        (&[PLUS], "secret/x/teamb", READ, None, true),
        (&[PLUS], "secret/x/y/teamb", READ, None, false),
        (&[PLUS], "secret/x/teamb/z", READ, None, false),
        (&[PLUS], "secret//teamb", READ, None, true),
        (&[PLUS_GLOB], "secret/a/foo/bar/baz", READ, None, true),
        (&[PLUS_GLOB], "secret/a/foo", READ, None, false),
        (&[PLUS_GLOB], "secret/a/foo/", READ, None, true),
        (&[PLUS_GLOB], "secret/a/b/foo/c", READ, None, false),
        (&[PLUS_FIRST], "a/x", READ, None, true),
        (&[PLUS_FIRST], "a/y", READ, None, false),
        // Vault's priority order between overlapping non-exact rules.
        (&[PRIO_FIRST_WC], "foo/bar/bar", READ, None, true),
        (&[PRIO_FIRST_WC], "foo/bar/bar", UPDATE, None, false),
        (&[PRIO_FIRST_WC], "foo/baz/bar", UPDATE, None, true),
        (&[PRIO_NOT_GLOB], "foo/x", READ, None, true),
        (&[PRIO_NOT_GLOB], "foo/x", UPDATE, None, false),
        (&[PRIO_NOT_GLOB], "foo/x/y", UPDATE, None, true),
        (&[PRIO_GLOB_LATER], "foo/ab", READ, None, true),
        (&[PRIO_GLOB_LATER], "foo/ab", UPDATE, None, false),
        (&[PRIO_GLOB_LATER], "foo/b", UPDATE, None, true),
        (&[PRIO_FEWER_PLUS], "a/x/b/c", READ, None, true),
        (&[PRIO_FEWER_PLUS], "a/x/b/c", UPDATE, None, false),
        (&[PRIO_LONGER], "a/x/bar/baz", READ, None, true),
        (&[PRIO_LONGER], "a/x/bar/baz", UPDATE, None, false),
        (&[PRIO_LONGER], "a/x/bar/bz", UPDATE, None, true),
        (&[PRIO_LEXICAL], "a/x/b/c", READ, None, true),
        (&[PRIO_LEXICAL], "a/x/b/c", UPDATE, None, false),
        // Same path in several policies merges; different paths never do.
        (&[FOO_READ, FOO_UPDATE], "secret/foo", UPDATE, None, true),
        (&[FOO_READ, FOO_UPDATE], "secret/foo", READ, None, true),
        (&[FOO_READ, FOO_UPDATE], "secret/foo", DELETE, None, false),
        (&[FOO_READ, SECRET_BROAD], "secret/foo", DELETE, None, false),
        (&[FOO_READ, SECRET_BROAD], "secret/foo", READ, None, true),
        (&[FOO_READ, SECRET_BROAD], "secret/bar", DELETE, None, true),
        // Deny wins on the rule it merges into, and a deny stanza grants nothing.
        (&[FOO_READ, FOO_UPDATE, FOO_DENY], "secret/foo", READ, None, false),
        (&[FOO_DENY, FOO_UPDATE], "secret/foo", UPDATE, None, false),
        (&[FOO_DENY], "secret/foo/", LIST, None, false),
        (&[FOO_DENY_WITH_SUDO], "secret/foo", READ, None, false),
        (&[FOO_DENY, SECRET_BROAD], "secret/bar", READ, None, true),
        // GHSA-xp3c-3jw3-4vcr: listing a folder must not bypass a more specific deny on it.
        (&[META_EXACT_DENY], "secret/metadata/private/", LIST, None, false),
        (&[META_EXACT_DENY], "secret/metadata/", LIST, None, true),
        (&[META_EXACT_DENY], "secret/metadata/public/", LIST, None, true),
        (&[META_PLUS_DENY], "secret/metadata/private/", LIST, None, false),
        (&[META_PLUS_DENY], "secret/metadata/a/b/", LIST, None, true),
        (&[META_GLOB_DENY], "secret/metadata/private/", LIST, None, false),
        (&[META_GLOB_DENY], "secret/metadata/private/x/", LIST, None, false),
        (&[META_GLOB_DENY], "secret/metadata/privateer/", LIST, None, true),
        // A broad deny does not override a more specific grant.
        (&[BROAD_DENY], "secret/ok", READ, None, true),
        (&[BROAD_DENY], "secret/nope", READ, None, false),
        // allowed_parameters: listed values, globs, lists, comma strings, empty list = any value.
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": "web"})), true),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": "db-ro"})), true),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": "admin"})), false),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": ["web", "db-x"]})), true),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": ["web", "root"]})), false),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"policies": "web,admin"})), false),
        (&[ALLOWED], "auth/token/create", CREATE, Some(json!({"other": 1})), false),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({"ttl": "1h", "POLICIES": "web"})), true),
        (&[ALLOWED], "auth/token/create", UPDATE, None, true),
        (&[ALLOWED], "auth/token/create", UPDATE, Some(json!({})), true),
        // denied_parameters: globbed values, empty list = any value, reads checked too, keys case-folded.
        (&[DENIED], "sys/mounts/kv", UPDATE, Some(json!({"type": "kv"})), true),
        (&[DENIED], "sys/mounts/kv", UPDATE, Some(json!({"type": "plugin-x"})), false),
        (&[DENIED], "sys/mounts/kv", UPDATE, Some(json!({"local": false})), false),
        (&[DENIED], "sys/mounts/kv", READ, Some(json!({"local": true})), false),
        (&[DENIED], "sys/mounts/kv", UPDATE, Some(json!({"Type": "plugin-x"})), false),
        (&[DENY_ALL_PARAMS], "x/deny-all", UPDATE, Some(json!({})), true),
        (&[DENY_ALL_PARAMS], "x/deny-all", UPDATE, Some(json!({"a": 1})), false),
        (&[ALLOW_ALL_PARAMS], "x/allow-all", UPDATE, Some(json!({"anything": [1, 2]})), true),
        (&[ALLOW_STAR_AND_KEY], "x/mixed", UPDATE, Some(json!({"foo": "baz"})), false),
        (&[ALLOW_STAR_AND_KEY], "x/mixed", UPDATE, Some(json!({"x": 1, "foo": "bar"})), true),
        (&[ALLOW_AND_DENY], "x/both", UPDATE, Some(json!({"foo": "bad"})), false),
        (&[ALLOW_AND_DENY], "x/both", UPDATE, Some(json!({"foo": "good"})), true),
        (&[REQUIRED], "x/req", UPDATE, Some(json!({"id": 1})), true),
        (&[REQUIRED], "x/req", UPDATE, Some(json!({"name": "x"})), false),
        (&[REQUIRED], "x/req", UPDATE, None, false),
        (&[REQUIRED], "x/req", DELETE, None, true),
        (&[SUFFIX_GLOB], "x/suffix", UPDATE, Some(json!({"name": "app-prod"})), true),
        (&[SUFFIX_GLOB], "x/suffix", UPDATE, Some(json!({"name": "prod-app"})), false),
        // Parameter constraints of identical paths merge; Vault's quirk: an unrestricted stanza does
        // not lift the other stanza's allow-list.
        (&[MERGE_P1, MERGE_P2], "x/merge", UPDATE, Some(json!({"a": "2"})), true),
        (&[MERGE_P1, MERGE_P2], "x/merge", UPDATE, Some(json!({"a": "1", "b": 9})), true),
        (&[MERGE_P1, MERGE_P2], "x/merge", UPDATE, Some(json!({"a": "3"})), false),
        (&[MERGE_P1, MERGE_UNRESTRICTED], "x/merge", UPDATE, Some(json!({"c": 1})), false),
        // Sudo on root-protected paths.
        (&[SUDO], "sys/audit", READ_SUDO, None, true),
        (&[SUDO], "sys/audit/file", UPDATE_SUDO, None, false),
        (&[SUDO], "sys/audit/file", UPDATE, None, true),
        // Root allows everything; the default policy grants self-service only.
        (&[ROOT], "sys/raw/anything", UPDATE_SUDO, Some(json!({"x": 1})), true),
        (&[ROOT, FOO_DENY], "secret/foo", READ, None, true),
        (&[DEFAULT], "auth/token/lookup-self", READ, None, true),
        (&[DEFAULT], "auth/token/lookup", READ, None, false),
        (&[DEFAULT], "auth/token/lookup", UPDATE, None, false),
        (&[DEFAULT], "cubbyhole/foo", CREATE, None, true),
        (&[DEFAULT], "cubbyhole/", LIST, None, true),
        (&[DEFAULT], "sys/tools/hash/sha2-256", UPDATE, None, true),
        (&[DEFAULT], "identity/entity/id/abc", READ, None, false),
        (&[DEFAULT], "identity/oidc/provider/p1/authorize", READ, None, true),
        (&[DEFAULT], "secret/foo", READ, None, false),
        // Legacy `policy = ...`.
        (&[LEGACY_WRITE], "secret/legacy", UPDATE, None, true),
        (&[LEGACY_WRITE], "secret/legacy", PATCH, None, false),
        (&[LEGACY_READ], "secret/legacy/", LIST, None, true),
        (&[LEGACY_READ], "secret/legacy", UPDATE, None, false),
        // Trailing and leading slashes, create vs update, mandatory wrapping.
        (&[FOLDER], "secret/folder/", LIST, None, true),
        (&[FOLDER], "secret/folder", READ, None, false),
        (&[LEADING_SLASH], "secret/lead", READ, None, true),
        (&[LEADING_SLASH], "/secret/lead", READ, None, true),
        (&[CREATE_ONLY], "secret/c", CREATE, None, true),
        (&[CREATE_ONLY], "secret/c", UPDATE, None, false),
        (&[WRAPPED], "secret/w", READ, None, false),
        (&[], "secret/foo", READ, None, false),
    ];
    assert!(table.len() >= 60);
    let failures: Vec<String> = table
        .into_iter()
        .enumerate()
        .filter_map(|(i, (policies, path, op, params, expected))| {
            check(policies, path, op, params, expected).map(|m| format!("row {i}: {m}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} failing rows:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn decision_reports_capabilities_sudo_and_reason() {
    let acl = build_acl(&[KV, SUDO, DENIED, FOO_DENY]);
    let d = acl.check(&AclRequest::new("secret/data/b/x", Operation::Delete));
    assert_eq!(d.capabilities, Capabilities::from(Capability::Delete));
    assert!(d.allowed && !d.sudo && d.reason.is_none());

    let d = acl.check(&AclRequest::new("sys/audit", Operation::Read).with_sudo(true));
    assert!(d.allowed && d.sudo);
    assert_eq!(d.capabilities.to_strings(), vec!["read", "sudo"]);

    let d = acl.check(&AclRequest::new("secret/foo", Operation::Read));
    assert!(!d.allowed);
    assert_eq!(d.capabilities, Capabilities::deny());

    let d = acl.check(&AclRequest::new("nothing/here", Operation::Read));
    assert_eq!(d, crate::Decision { allowed: false, capabilities: Capabilities::empty(), sudo: false, reason: None });

    let data = json!({"local": true}).as_object().cloned().unwrap_or_default();
    let d = acl.check(&AclRequest::new("sys/mounts/kv", Operation::Update).with_parameters(&data));
    assert!(!d.allowed);
    assert_eq!(d.reason.as_deref(), Some(r#"parameter "local" is denied"#));

    let data = json!({"type": "plugin-evil"}).as_object().cloned().unwrap_or_default();
    let d = acl.check(&AclRequest::new("sys/mounts/kv", Operation::Update).with_parameters(&data));
    assert_eq!(d.reason.as_deref(), Some(r#"parameter "type": value is denied"#));

    let acl = build_acl(&[ALLOWED, REQUIRED]);
    let data = json!({"bogus": 1}).as_object().cloned().unwrap_or_default();
    let d = acl.check(&AclRequest::new("auth/token/create", Operation::Update).with_parameters(&data));
    assert_eq!(d.reason.as_deref(), Some(r#"parameter "bogus" is not allowed"#));
    let d = acl.check(&AclRequest::new("x/req", Operation::Update));
    assert_eq!(d.reason.as_deref(), Some(r#"missing required parameter "id""#));
    // A capability refusal is not a parameter refusal.
    let d = acl.check(&AclRequest::new("x/req", Operation::Read));
    assert!(!d.allowed && d.reason.is_none());

    let root = Acl::root();
    let d = root.check(&AclRequest::new("anything", Operation::Delete).with_sudo(true));
    assert!(d.allowed && d.sudo && root.is_root());
    assert!(d.capabilities.contains(Capability::Sudo) && !d.capabilities.contains(Capability::Deny));
}

#[test]
fn wrapping_ttl_constraints() {
    let acl = build_acl(&[
        "path \"w/min\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = \"1m\"\n}",
        "path \"w/max\" {\n capabilities = [\"read\"]\n max_wrapping_ttl = \"90s\"\n}",
        "path \"w/merged\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = \"10m\"\n}",
        "path \"w/merged\" {\n capabilities = [\"read\"]\n max_wrapping_ttl = \"1m\"\n}",
    ]);
    let req = |p| AclRequest::new(p, Operation::Read);
    let secs = |s| Some(Duration::from_secs(s));
    assert!(!acl.check(&req("w/min")).allowed);
    assert!(!acl.check_wrapped(&req("w/min"), secs(30)).allowed);
    assert!(acl.check_wrapped(&req("w/min"), secs(60)).allowed);
    assert!(!acl.check(&req("w/max")).allowed);
    assert!(acl.check_wrapped(&req("w/max"), secs(90)).allowed);
    let d = acl.check_wrapped(&req("w/max"), secs(91));
    assert!(!d.allowed);
    assert_eq!(d.reason.as_deref(), Some("response wrapping with a TTL of at most 90s is required"));
    // Merged min 10m > merged max 1m: nothing can satisfy it.
    for ttl in [30, 60, 600, 3600] {
        assert!(!acl.check_wrapped(&req("w/merged"), secs(ttl)).allowed, "ttl {ttl}");
    }
}

#[test]
fn sys_capabilities_view() {
    let acl = build_acl(&[KV, META_EXACT_DENY, FOO_DENY, SUDO]);
    assert_eq!(acl.capabilities("secret/foo"), vec!["deny"]);
    assert_eq!(acl.capabilities("secret/bar"), vec!["list", "read"]);
    assert_eq!(acl.capabilities("secret/data/b/x"), vec!["delete"]);
    assert_eq!(acl.capabilities("secret/data/q"), vec!["create", "update"]);
    assert_eq!(acl.capabilities("sys/audit"), vec!["read", "sudo"]);
    assert_eq!(acl.capabilities("nowhere"), vec!["deny"]);
    // Evaluated as a list request: the folder form finds the rule for the folder itself.
    assert_eq!(acl.capabilities("secret/metadata/private/"), vec!["deny"]);
    assert_eq!(acl.capabilities("/sys/audit"), vec!["read", "sudo"]);
    assert_eq!(Acl::root().capabilities("anything"), vec!["root"]);
    assert_eq!(Acl::default().capabilities("anything"), vec!["deny"]);
    let empty = build_acl(&[r#"path "a" { capabilities = [] }"#]);
    assert_eq!(empty.capabilities("a"), vec!["deny"]);
}

#[test]
fn root_is_recognised_by_normalised_name() {
    for name in ["root", "Root ", " ROOT", "rOoT\n"] {
        let policy = Policy::parse(name, "").expect("empty policy parses");
        assert_eq!(policy.name(), "root");
        assert!(Acl::new(&[&policy]).is_root(), "{name:?}");
    }
    let not_root = Policy::parse("root2", "").expect("parses");
    assert!(!Acl::new(&[&not_root]).is_root());
}

#[test]
fn mount_visibility() {
    let acl = build_acl(&[r#"
path "secret/data/app"     { capabilities = ["read"] }
path "kv/*"                { capabilities = ["deny"] }
path "pki/+/issue"         { capabilities = ["update"] }
path "transit/*"           { capabilities = ["list"] }
path "db/creds/x"          { capabilities = ["deny"] }
path "auth/+/login"        { capabilities = ["update"] }
path "ssh/+/sign"          { capabilities = ["deny"] }
"#]);
    assert!(acl.has_mount_access("secret/"), "an exact rule under the mount");
    assert!(!acl.has_mount_access("kv/"), "only a deny covers it");
    assert!(acl.has_mount_access("pki/"), "a + rule whose leading segment is the mount");
    assert!(acl.has_mount_access("transit/"), "a glob on the mount");
    assert!(!acl.has_mount_access("db/"), "only a deny under it");
    assert!(acl.has_mount_access("auth/approle/"), "a + segment inside the mount path");
    assert!(!acl.has_mount_access("ssh/"), "a + deny grants nothing");
    assert!(!acl.has_mount_access("other/"));
    assert!(Acl::root().has_mount_access("anything/"));
}
