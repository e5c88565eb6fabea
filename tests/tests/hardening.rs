//! End to end: the server disables core dumps, and locks its memory unless the config says
//! `disable_mlock = true` — where the OS allows it (root, `CAP_IPC_LOCK`, or an unlimited
//! memlock limit), and says plainly when it does not.

use arcanum_tests::{sled_config, TestServer};

/// A `/proc/<pid>/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn banner(server: &TestServer, label: &str) -> String {
    let lines = server.stdout_lines.lock().unwrap();
    let line = lines.iter().find(|line| line.trim_start().starts_with(&format!("{label}:"))).cloned();
    line.unwrap_or_else(|| panic!("no {label} line in the banner: {lines:?}"))
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned()
}

/// Whether this (test) process could lock all its memory: the server inherits the same rights.
fn may_lock_memory() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap_or("0");
    let effective = u64::from_str_radix(caps, 16).unwrap_or(0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let unlimited = limits.lines().any(|l| l.starts_with("Max locked memory") && l.contains("unlimited"));
    // CAP_IPC_LOCK (14) locks past the limit; CAP_SYS_RESOURCE (24) may raise the limit.
    effective & (1 << 14) != 0 || effective & (1 << 24) != 0 || unlimited
}

#[test]
fn core_dumps_are_off_and_memory_is_locked_where_the_os_allows() {
    let server = TestServer::start_with(|dir| sled_config(dir, "", "disable_mlock = false"));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let pid = server.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(), ["0", "0"], "{core}");
    assert_eq!(banner(&server, "Core dumps"), "disabled");
    if may_lock_memory() {
        assert_eq!(banner(&server, "Mlock"), "locked");
        let locked = status_kb(pid, "VmLck:");
        // The unsealed keys live in the heap, which is locked as it is touched.
        assert!(locked > 1024, "only {locked} kB locked");
        // VmLck counts whole locked mappings; with MCL_ONFAULT their untouched pages stay out
        // of RAM, so the resident size stays that of an ordinary server.
        let resident = status_kb(pid, "VmRSS:");
        assert!(
            resident < 256 * 1024,
            "{resident} kB resident: locking faulted in reserved memory ({locked} kB locked)"
        );
    } else {
        assert_eq!(banner(&server, "Mlock"), "not locked");
        let log = std::fs::read_to_string(server.log_path()).unwrap();
        assert!(log.contains("memory is not locked"), "the refusal must be logged: {log}");
    }
}

#[test]
fn disable_mlock_leaves_memory_unlocked() {
    let server = TestServer::start_with(|dir| sled_config(dir, "", "disable_mlock = true"));
    assert_eq!(banner(&server, "Mlock"), "not locked");
    assert_eq!(status_kb(server.pid(), "VmLck:"), 0);
    assert_eq!(banner(&server, "Core dumps"), "disabled");
}

/// Every folder and file under `dir`, with its permission bits.
fn modes_under(dir: &std::path::Path, found: &mut Vec<(std::path::PathBuf, u32)>) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        if path.is_dir() {
            modes_under(&path, found);
        }
        found.push((path, mode));
    }
}

#[test]
fn storage_and_audit_files_are_readable_by_the_server_user_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let audit = server.dir.path().join("audit.log");
    let (status, body) = server.put(
        "sys/audit/file",
        Some(&root),
        serde_json::json!({"type": "file", "options": {"file_path": audit.display().to_string()}}),
    );
    assert_eq!(status, 204, "{body}");
    for n in 0..50 {
        let (status, body) = server.put(&format!("cubbyhole/k{n}"), Some(&root), serde_json::json!({"v": n}));
        assert_eq!(status, 204, "{body}");
    }
    let data = server.dir.path().join("data");
    let mut found = vec![(data.clone(), std::fs::metadata(&data).unwrap().permissions().mode() & 0o777)];
    modes_under(&data, &mut found);
    found.push((audit.clone(), std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777));
    assert!(found.len() > 3, "{found:?}");
    for (path, mode) in &found {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, expected, "{} is {mode:o}", path.display());
    }
}
