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

/// Enables a file audit device writing to `audit.log` in the server's folder; returns its path.
fn enable_file_audit(server: &TestServer, root: &str) -> std::path::PathBuf {
    let audit = server.dir.path().join("audit.log");
    let (status, body) = server.put(
        "sys/audit/file",
        Some(root),
        serde_json::json!({"type": "file", "options": {"file_path": audit.display().to_string()}}),
    );
    assert_eq!(status, 204, "{body}");
    audit
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
    let audit = enable_file_audit(&server, &root);
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

/// Sends a request head declaring a `length`-byte body and no body at all; the status line the
/// server answers with (it must answer without waiting for the body).
fn status_for_an_unsent_body(server: &TestServer, path: &str, token: Option<&str>, length: u64) -> String {
    use std::io::{BufRead as _, Write as _};
    let addr = server.addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let token = token.map(|t| format!("X-Vault-Token: {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "PUT /v1/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{token}Content-Length: {length}\r\n\r\n"
    )
    .expect("write");
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).expect("the server answers before the body arrives");
    line.trim().to_owned()
}

#[test]
fn bodies_without_a_valid_token_are_refused_unread_and_refused_requests_audit_little() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let huge = 30 * 1024 * 1024;
    for token in [None, Some("hvs.not-a-token")] {
        let status = status_for_an_unsent_body(&server, "secret/big", token, huge);
        assert!(status.contains(" 413 "), "{token:?}: {status}");
    }
    // Beyond the unauthenticated limit, sent in full: refused with the reason.
    let two_mib = serde_json::json!({"v": "x".repeat(2 * 1024 * 1024)});
    let (status, body) = server.put("cubbyhole/big", None, two_mib.clone());
    assert_eq!(status, 413, "{body}");
    assert!(body["errors"][0].as_str().unwrap_or_default().contains("without a valid token"), "{body}");
    // A valid token may send it (up to the listener's max_request_size).
    let (status, body) = server.put("cubbyhole/big", Some(&root), two_mib);
    assert_eq!(status, 204, "{body}");

    // Under the limit, with a bad token: refused by the router, and its audit entries leave the
    // data out instead of writing it twice.
    let audit = enable_file_audit(&server, &root);
    let before = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    let (status, _) =
        server.put("secret/big", Some("hvs.not-a-token"), serde_json::json!({"v": "y".repeat(900 * 1024)}));
    assert_eq!(status, 403);
    let grown = std::fs::metadata(&audit).expect("audit file").len() - before;
    assert!(grown < 16 * 1024, "a refused 900 KiB request grew the audit log by {grown} bytes");
    let text = std::fs::read_to_string(&audit).expect("audit");
    let refused: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["request"]["path"] == serde_json::json!("secret/big"))
        .collect();
    assert_eq!(refused.len(), 2, "request and response entries");
    for entry in &refused {
        assert!(entry["request"]["data"].as_object().is_none_or(|data| data.is_empty()), "{entry}");
    }
    let request = refused.iter().find(|entry| entry["type"] == serde_json::json!("request")).expect("request entry");
    assert!(request["error"].as_str().unwrap_or_default().contains("not recorded"), "{request}");
}

#[test]
fn silent_and_half_sent_connections_cannot_lock_clients_out() {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};
    let server =
        TestServer::start_with(|dir| sled_config(dir, "http_read_header_timeout = \"2s\"\n  max_connections = 32", ""));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let addr = server.addr.trim_start_matches("http://").to_owned();
    let descriptors = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("fd list").count();
    let before = descriptors();
    // Far more silent connections than the cap.
    let silent: Vec<std::net::TcpStream> =
        (0..300).map(|_| std::net::TcpStream::connect(&addr).expect("connect")).collect();
    // A client connecting now is served at once, on a new connection each time: it takes the
    // slot of the oldest connection that has said nothing.
    let fresh = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for _ in 0..10 {
        let status = fresh.get(format!("{}/v1/sys/health", server.addr)).send().expect("health").status();
        assert_eq!(status.as_u16(), 200);
    }
    let held = descriptors();
    assert!(held < before + 32 + 16, "the server holds {held} descriptors (was {before}) under 300 silent connections");
    // The server closes a silent connection, and one that sent half a request head, within the
    // header timeout.
    let mut half = std::net::TcpStream::connect(&addr).expect("connect");
    half.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n").expect("write");
    half.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = half.read(&mut byte);
    assert!(matches!(read, Ok(0) | Err(_)) || byte[0] == b'H', "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "a half-sent head held its connection {:?}", started.elapsed());
    drop(silent);
}
