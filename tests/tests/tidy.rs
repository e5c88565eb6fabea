//! Code invariants checked as tests: every source file says what it is for, the leaf crates
//! depend on none of ours, the server's crates depend only on the layers docs/ARCHITECTURE.md
//! allows them, and no test is switched off.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n.to_string_lossy().starts_with('.')) {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for member in ["crypto", "storage", "policy", "config", "server", "tests"] {
        rust_files(&workspace_root().join(member), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    files
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap_or_default().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a leading //! line: {missing:?}");
}

#[test]
fn leaf_crates_depend_on_none_of_ours() {
    for leaf in ["crypto", "storage", "policy", "config"] {
        let manifest = std::fs::read_to_string(workspace_root().join(leaf).join("Cargo.toml")).expect("manifest");
        // Only what follows the package's own table: dependencies, features, benches.
        let (_, rest) = manifest.split_once("[lints]").expect("manifest has a [lints] table");
        for line in rest.lines() {
            assert!(
                !line.trim_start().starts_with("arcanum") && !line.contains("path ="),
                "{leaf}/Cargo.toml depends on one of our crates: {line}"
            );
        }
    }
}

/// The crates of ours that a manifest names in its dependency tables (dev-dependencies too:
/// a test that reaches up a layer would hide the same wrong-way arrow).
fn our_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.ends_with("dependencies]");
            continue;
        }
        if in_dependencies && line.starts_with("arcanum") {
            let name = line.split(|c: char| c == '=' || c == '.' || c.is_whitespace()).next().unwrap_or_default();
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn server_crates_depend_only_on_the_layers_below_them() {
    // The table in docs/ARCHITECTURE.md ("Layers").
    let allowed: [(&str, &[&str]); 6] = [
        ("server/metrics", &["arcanum-storage"]),
        ("server/contract", &["arcanum-config", "arcanum-crypto", "arcanum-policy"]),
        ("server/quotas", &["arcanum-contract", "arcanum-metrics"]),
        ("server/audit", &["arcanum-contract", "arcanum-crypto", "arcanum-metrics"]),
        ("server/engines", &["arcanum-config", "arcanum-contract", "arcanum-crypto", "arcanum-policy"]),
        (
            "server/core",
            &[
                "arcanum-audit",
                "arcanum-contract",
                "arcanum-crypto",
                "arcanum-metrics",
                "arcanum-policy",
                "arcanum-quotas",
                "arcanum-storage",
            ],
        ),
    ];
    for (dir, allowed) in allowed {
        let manifest = std::fs::read_to_string(workspace_root().join(dir).join("Cargo.toml")).expect("manifest");
        for dependency in our_dependencies(&manifest) {
            assert!(
                allowed.contains(&dependency.as_str()),
                "{dir}/Cargo.toml depends on {dependency}, a layer it may not use"
            );
        }
    }
    // The check reads what it should: the core does use the contract.
    let core = std::fs::read_to_string(workspace_root().join("server/core/Cargo.toml")).expect("manifest");
    assert!(our_dependencies(&core).contains(&"arcanum-contract".to_owned()));
}

#[test]
fn no_test_is_ignored() {
    let needle = ["#[", "ignore"].concat();
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| std::fs::read_to_string(path).unwrap_or_default().contains(&needle))
        .collect();
    assert!(offenders.is_empty(), "ignored tests in {offenders:?}");
}
