//! Every input kept under fuzz/regressions/<target>/ (crashes the fuzzers found, fixed since,
//! and seeds worth keeping) runs through the same check as its fuzz target, on stable Rust,
//! so that a fixed bug cannot come back unnoticed. The checks are fuzz/checks.rs.

#[path = "../../fuzz/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read(&path).unwrap())).collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "fuzz/regressions/{target}/ holds no inputs");
    for (path, data) in inputs {
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check again", path.display());
    }
}

#[test]
fn policy_inputs() {
    replay("policy", checks::policy::check);
}

#[test]
fn config_inputs() {
    replay("config", checks::config::check);
}

#[test]
fn barrier_entry_inputs() {
    replay("barrier_entry", checks::barrier_entry::check);
}

#[test]
fn shamir_combine_inputs() {
    replay("shamir_combine", checks::shamir_combine::check);
}

#[test]
fn unseal_key_inputs() {
    replay("unseal_key", checks::unseal_key::check);
}

#[test]
fn kubernetes_jwt_inputs() {
    replay("kubernetes_jwt", checks::kubernetes_jwt::check);
}

#[test]
fn http_request_inputs() {
    replay("http_request", checks::http_request::check);
}
