//! Property tests: exact grants round-trip, deny is monotonic, policy order is irrelevant, and no input
//! makes parsing or checking panic.

use crate::{Acl, AclRequest, Capabilities, Capability, Decision, Operation, Policy};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const OPERATIONS: [Operation; 6] =
    [Operation::Read, Operation::List, Operation::Create, Operation::Update, Operation::Patch, Operation::Delete];

const GRANTS: [Capability; 7] = [
    Capability::Create,
    Capability::Read,
    Capability::Update,
    Capability::Patch,
    Capability::Delete,
    Capability::List,
    Capability::Sudo,
];

fn capability_set() -> impl Strategy<Value = Capabilities> {
    (0u8..128)
        .prop_map(|bits| GRANTS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, c)| *c).collect())
}

fn hcl_list(capabilities: Capabilities) -> String {
    let names: Vec<String> = capabilities.iter().map(|c| format!("{:?}", c.as_str())).collect();
    format!("[{}]", names.join(", "))
}

/// Literal request paths over a small alphabet so that generated patterns overlap them often.
fn request_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "abc", "x", ""]), 1..5), any::<bool>()).prop_map(
        |(segments, folder)| {
            let mut path = segments.join("/");
            if folder {
                path.push('/');
            }
            path
        },
    )
}

/// Patterns mixing exact, `*` and `+` forms over the same alphabet.
fn pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "+", "x"]), 1..5),
        prop::sample::select(vec!["", "*", "/", "/*", "b*"]),
    )
        .prop_map(|(segments, suffix)| {
            let mut pattern = segments.join("/");
            if pattern.ends_with('+') && suffix.starts_with(['*', 'b']) {
                pattern.push('/');
            }
            pattern.push_str(suffix);
            pattern
        })
}

/// A stanza (its pattern and text): capabilities, and optionally a parameter constraint.
fn stanza() -> impl Strategy<Value = (String, String)> {
    (pattern(), capability_set(), any::<bool>(), 0..4u8).prop_map(|(pattern, caps, deny, params)| {
        let caps = if deny { "[\"deny\"]".to_owned() } else { hcl_list(caps) };
        let params = match params {
            0 => "",
            1 => "\n  allowed_parameters = { \"k\" = [\"v*\"] }",
            2 => "\n  denied_parameters = { \"k\" = [] }",
            _ => "\n  required_parameters = [\"k\"]",
        };
        let text = format!("path \"{pattern}\" {{\n  capabilities = {caps}{params}\n}}\n");
        (pattern, text)
    })
}

/// A policy's text and the patterns it uses.
fn policy_text() -> impl Strategy<Value = (Vec<String>, String)> {
    prop::collection::vec(stanza(), 0..6).prop_map(|stanzas| {
        let patterns = stanzas.iter().map(|(p, _)| p.clone()).collect();
        let text = stanzas.into_iter().map(|(_, t)| t).collect::<String>();
        (patterns, text)
    })
}

fn texts_of(policies: &[(Vec<String>, String)]) -> Vec<String> {
    policies.iter().map(|(_, text)| text.clone()).collect()
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    operation: Operation,
    parameters: Option<Map<String, Value>>,
    needs_sudo: bool,
}

fn request() -> impl Strategy<Value = Request> {
    (request_path(), prop::sample::select(OPERATIONS.to_vec()), 0..4u8, any::<bool>()).prop_map(
        |(path, operation, params, needs_sudo)| {
            let parameters = match params {
                0 => None,
                1 => Some(json!({"k": "value"})),
                2 => Some(json!({"k": "other", "z": 1})),
                _ => Some(json!({})),
            };
            Request { path, operation, parameters: parameters.and_then(|v| v.as_object().cloned()), needs_sudo }
        },
    )
}

fn decide(acl: &Acl, request: &Request) -> Decision {
    acl.check(&AclRequest {
        path: &request.path,
        operation: request.operation,
        parameters: request.parameters.as_ref(),
        needs_sudo: request.needs_sudo,
    })
}

fn parse_all(texts: &[String]) -> Vec<Policy> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Policy::parse(&format!("p{i}"), text).unwrap_or_else(|e| panic!("generated policy: {e}\n{text}"))
        })
        .collect()
}

fn acl_of(policies: &[Policy]) -> Acl {
    let refs: Vec<&Policy> = policies.iter().collect();
    Acl::new(&refs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A policy granting exactly `p` with capabilities `C` yields `C` on `p`, and allows exactly the
    /// operations `C` covers.
    #[test]
    fn exact_grant_round_trips(
        segments in prop::collection::vec("[a-z0-9_.-]{1,6}", 1..5),
        caps in capability_set(),
    ) {
        let path = segments.join("/");
        let text = format!("path \"{path}\" {{\n  capabilities = {}\n}}\n", hcl_list(caps));
        let policy = Policy::parse("p", &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let acl = Acl::new(&[&policy]);
        for operation in OPERATIONS {
            let decision = acl.check(&AclRequest::new(&path, operation));
            prop_assert_eq!(decision.capabilities, caps);
            prop_assert_eq!(decision.allowed, caps.contains(operation.capability()));
            prop_assert_eq!(decision.sudo, caps.contains(Capability::Sudo));
        }
        let expected = if caps.is_empty() { vec!["deny".to_owned()] } else { caps.to_strings() };
        prop_assert_eq!(acl.capabilities(&path), expected);
        // A sibling path with one more character is not covered by an exact rule.
        let sibling = format!("{path}x");
        prop_assert!(acl.check(&AclRequest::new(&sibling, Operation::Read)).capabilities.is_empty());
    }

    /// Adding a deny stanza never allows anything that was refused before, and whatever it still allows
    /// is decided exactly as before (the deny either wins for a request or changes nothing). Half the
    /// time the deny reuses a pattern already present, so that it merges into an existing rule.
    #[test]
    fn deny_never_widens(
        policies in prop::collection::vec(policy_text(), 1..4),
        fresh_pattern in pattern(),
        reuse in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let existing: Vec<&String> = policies.iter().flat_map(|(patterns, _)| patterns).collect();
        let deny_pattern = if reuse && !existing.is_empty() { pick.get(&existing).to_string() } else { fresh_pattern };
        let texts = texts_of(&policies);
        let before = acl_of(&parse_all(&texts));
        let mut with_deny = texts.clone();
        with_deny.push(format!("path \"{deny_pattern}\" {{\n  capabilities = [\"deny\"]\n}}\n"));
        let after = acl_of(&parse_all(&with_deny));
        for request in &requests {
            let (b, a) = (decide(&before, request), decide(&after, request));
            prop_assert!(!a.allowed || b.allowed, "deny {deny_pattern:?} allowed {request:?}: {a:?} (before {b:?})");
            if a.allowed {
                prop_assert_eq!(&a, &b);
            }
        }
        // On its own pattern the deny always wins (for a literal pattern, the path itself).
        if !deny_pattern.contains(['*', '+']) {
            for operation in OPERATIONS {
                prop_assert!(!after.check(&AclRequest::new(&deny_pattern, operation)).allowed);
            }
        }
    }

    /// The order in which a token's policies are given does not change any decision.
    #[test]
    fn policy_order_is_irrelevant(
        (texts, order) in prop::collection::vec(policy_text(), 1..5).prop_flat_map(|policies| {
            let texts = texts_of(&policies);
            let indices: Vec<usize> = (0..texts.len()).collect();
            (Just(texts), Just(indices).prop_shuffle())
        }),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let policies = parse_all(&texts);
        let shuffled: Vec<&Policy> = order.iter().filter_map(|&i| policies.get(i)).collect();
        let original = acl_of(&policies);
        let reordered = Acl::new(&shuffled);
        for request in &requests {
            prop_assert_eq!(decide(&original, request), decide(&reordered, request), "{:?}", request);
            prop_assert_eq!(original.capabilities(&request.path), reordered.capabilities(&request.path));
        }
    }

    /// Arbitrary text never panics the parser, and whatever parses can be compiled and checked.
    #[test]
    fn arbitrary_text_never_panics(text in "(path|\"|\\{|\\}|\\[|\\]|=|,|capabilities|allowed_parameters|read|\\*|\\+|/| |\n|#|\\$\\{|<<EOT|EOT|[a-z0-9]|!|\\(|-){0,80}") {
        if let Ok(policy) = Policy::parse("fuzz", &text) {
            let acl = Acl::new(&[&policy]);
            for operation in OPERATIONS {
                let _ = acl.check(&AclRequest::new("a/b", operation));
            }
        }
        let _ = Policy::parse("fuzz", &format!("{{{text}"));
    }
}
