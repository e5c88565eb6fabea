//! End to end: the audit log against the real binary — redaction (no secret, password, token
//! or accessor in plaintext, each one findable through `sys/audit-hash`), fail-closed with a
//! device that cannot write or hangs, the hash chain and `arcanum audit verify` on tampered
//! copies, rotation by SIGHUP and across restarts, path checks, and the CLI commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arcanum_tests::TestServer;
use serde_json::{json, Value};

/// An unsealed server with KV v2 at `secret/`; returns (server, root token).
fn ready() -> (TestServer, String) {
    TestServer::unsealed_with_kv_v2()
}

fn enable_file(server: &TestServer, root: &str, name: &str, file: &Path) -> (u16, Value) {
    server.put(
        &format!("sys/audit/{name}"),
        Some(root),
        json!({ "type": "file", "options": { "file_path": file.to_str().unwrap() } }),
    )
}

fn entries(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect()
}

/// An entry's RFC 3339 `time` in a form that orders as time does: the fraction of a second
/// is written without trailing zeros, so the text alone does not.
fn instant(time: &Value) -> (String, u32) {
    let text = time.as_str().unwrap_or_else(|| panic!("time {time} is not text"));
    let (seconds, fraction) = text.trim_end_matches('Z').split_once('.').unwrap_or((text.trim_end_matches('Z'), "0"));
    let nanos = format!("{fraction:0<9}").parse().unwrap_or_else(|_| panic!("time {text} has no fraction in digits"));
    (seconds.to_owned(), nanos)
}

fn audit_hash(server: &TestServer, root: &str, device: &str, input: &str) -> String {
    let (status, body) = server.put(&format!("sys/audit-hash/{device}"), Some(root), json!({ "input": input }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hash"], body["data"]["hash"], "hash is injected at the top level too");
    body["data"]["hash"].as_str().unwrap().to_owned()
}

/// `arcanum audit verify FILES...`: (exit code, stdout).
fn verify(server: &TestServer, files: &[&Path], flags: &[String]) -> (i32, String) {
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    args.extend(flags.iter().cloned());
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = server.cli(&args, None);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn audit_log_holds_only_hmacs_of_secrets_tokens_and_accessors() {
    let (server, root) = ready();
    let log = server.dir.path().join("audit.log");
    assert_eq!(enable_file(&server, &root, "file", &log).0, 204);
    let r = Some(root.as_str());

    let secret_value = "S3cret-Value-of-the-DB-1";
    let api_key = "AKIA-Planted-Api-Key-2";
    let (status, body) =
        server.put("secret/data/app", r, json!({ "data": { "password": secret_value, "api_key": api_key } }));
    assert_eq!(status, 200, "{body}");
    let (status, read) = server.get("secret/data/app", r);
    assert_eq!(status, 200);
    assert_eq!(read["data"]["data"]["password"], secret_value);
    let read_id = read["request_id"].as_str().unwrap().to_owned();

    let (status, created) = server.put("auth/token/create", r, json!({ "policies": ["default"] }));
    assert_eq!(status, 200, "{created}");
    let child = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let child_accessor = created["auth"]["accessor"].as_str().unwrap().to_owned();

    assert_eq!(server.put("sys/auth/userpass", r, json!({ "type": "userpass" })).0, 204);
    let password = "Correct-Horse-Battery-3";
    let wrong_password = "Wrong-Horse-Guess-4";
    assert_eq!(server.put("auth/userpass/users/alice", r, json!({ "password": password })).0, 204);
    let (status, login) = server.put("auth/userpass/login/alice", None, json!({ "password": password }));
    assert_eq!(status, 200, "{login}");
    let alice = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let alice_accessor = login["auth"]["accessor"].as_str().unwrap().to_owned();
    let (status, failed) = server.put("auth/userpass/login/alice", None, json!({ "password": wrong_password }));
    assert_eq!(status, 400, "{failed}");

    // Denied by policy, and refused for a token that does not exist.
    assert_eq!(server.get("secret/data/app", Some(&child)).0, 403);
    let bogus = "hvs.NotARealTokenAtAll000000";
    assert_eq!(server.get("secret/data/app", Some(bogus)).0, 403);
    // Token values and accessors inside response and request data.
    let (status, me) = server.get("auth/token/lookup-self", Some(&alice));
    assert_eq!((status, me["data"]["id"].as_str()), (200, Some(alice.as_str())));
    let (status, root_self) = server.get("auth/token/lookup-self", r);
    assert_eq!(status, 200);
    let root_accessor = root_self["data"]["accessor"].as_str().unwrap().to_owned();
    assert_eq!(server.put("auth/token/lookup-accessor", r, json!({ "accessor": child_accessor })).0, 200);

    let planted = [
        ("secret value", secret_value),
        ("api key", api_key),
        ("password", password),
        ("wrong password", wrong_password),
        ("root token", root.as_str()),
        ("child token", child.as_str()),
        ("login token", alice.as_str()),
        ("bogus token", bogus),
        ("child accessor", child_accessor.as_str()),
        ("login accessor", alice_accessor.as_str()),
        ("root accessor", root_accessor.as_str()),
    ];
    let hashes: Vec<String> = planted.iter().map(|(_, value)| audit_hash(&server, &root, "file", value)).collect();
    let text = std::fs::read_to_string(&log).unwrap();
    for ((what, value), hash) in planted.iter().zip(&hashes) {
        assert!(!text.contains(value), "the {what} appears in plaintext in the audit log");
        assert!(text.contains(hash.as_str()), "the {what} does not appear as its HMAC {hash}");
    }

    let lines = entries(&log);
    for line in &lines {
        assert!(line["type"] == "request" || line["type"] == "response", "{line}");
        assert!(line["time"].is_string() && line["seq"].is_u64() && line["hash"].is_string(), "{line}");
        assert_eq!(line["request"]["namespace"]["id"], "root");
    }
    // The read: request before response, both with the envelope's request_id.
    let read_entries: Vec<&Value> = lines.iter().filter(|l| l["request"]["id"] == read_id.as_str()).collect();
    assert_eq!(read_entries.len(), 2, "{read_entries:?}");
    assert_eq!((&read_entries[0]["type"], &read_entries[1]["type"]), (&json!("request"), &json!("response")));
    let response = &read_entries[1];
    assert_eq!(response["request"]["operation"], "read");
    assert_eq!(response["request"]["mount_type"], "kv");
    assert_eq!(response["request"]["remote_address"], "127.0.0.1");
    assert_eq!(response["response"]["data"]["data"]["password"], hashes[0]);
    assert_eq!(response["auth"]["client_token"], hashes[4]);
    assert_eq!(response["auth"]["policies"], json!(["root"]));
    // The denied request: recorded with the decision and the error.
    let denied = lines
        .iter()
        .find(|l| {
            l["type"] == "request"
                && l["request"]["path"] == "secret/data/app"
                && l["auth"]["policy_results"]["allowed"] == false
        })
        .expect("denied request entry");
    assert_eq!(denied["error"], "permission denied");
    assert_eq!(denied["auth"]["client_token"], hashes[5]);
    // The bogus token: no auth block, its HMAC as the request's client token.
    assert!(lines.iter().any(|l| l["request"]["client_token"] == hashes[7].as_str() && l["error"].is_string()));
    // The failed login: request and response recorded, the response with its error.
    assert!(lines.iter().any(|l| l["type"] == "response"
        && l["request"]["path"] == "auth/userpass/login/alice"
        && l["error"] == "invalid username or password"));
    // The login's new token, in the response's auth block.
    assert!(lines.iter().any(|l| l["response"]["auth"]["client_token"] == hashes[6].as_str()
        && l["response"]["auth"]["accessor"] == hashes[9].as_str()));

    let (status, list) = server.get("sys/audit", r);
    assert_eq!(status, 200);
    assert_eq!(list["file/"], list["data"]["file/"]);
    assert_eq!(list["data"]["file/"]["type"], "file");
    assert_eq!(list["data"]["file/"]["failures"], 0);
    // Every line was counted, a read's request and response entries as two: the count taken
    // by the listing holds all lines but the listing's own response entry, written after it.
    let after = entries(&log);
    let listing = &after[after.len() - 2..];
    assert_eq!(
        (listing[0]["type"].as_str(), listing[0]["request"]["path"].as_str()),
        (Some("request"), Some("sys/audit"))
    );
    assert_eq!(
        (listing[1]["type"].as_str(), listing[1]["request"]["path"].as_str()),
        (Some("response"), Some("sys/audit"))
    );
    assert_eq!(list["data"]["file/"]["writes"].as_u64().unwrap() as usize, after.len() - 1);

    let (code, out) = verify(&server, &[&log], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Intact"), "{out}");
}

#[test]
fn audit_fails_closed_until_a_healthy_device_is_added() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/auth/userpass", r, json!({ "type": "userpass" })).0, 204);
    assert_eq!(server.put("auth/userpass/users/bob", r, json!({ "password": "pw-bob" })).0, 204);
    let accessors = |server: &TestServer| {
        let (status, body) = server.request("LIST", "auth/token/accessors", r, None);
        assert_eq!(status, 200, "{body}");
        body["data"]["keys"].as_array().unwrap().len()
    };
    let tokens_before = accessors(&server);

    let (status, body) = server.put("secret/data/visible", r, json!({ "data": { "v": "s3cret-read" } }));
    assert_eq!(status, 200, "{body}");

    assert_eq!(enable_file(&server, &root, "full", Path::new("/dev/full")).0, 204);
    let internal = json!({ "errors": ["internal error"] });
    // A read's two entries go out together with its answer: none taken, no answer.
    assert_eq!(server.get("secret/data/visible", r), (500, internal.clone()));
    let (status, body) = server.put("secret/data/kept-out", r, json!({ "data": { "v": "never-stored" } }));
    assert_eq!((status, &body), (500, &internal));
    assert_eq!(server.put("auth/token/create", r, json!({})), (500, internal.clone()));
    assert_eq!(server.put("auth/userpass/login/bob", None, json!({ "password": "pw-bob" })), (500, internal.clone()));
    assert_eq!(server.get("sys/audit", r), (500, internal.clone()));
    assert_eq!(server.get("secret/data/kept-out", Some("hvs.bogus")).0, 500);

    // A second, healthy device is accepted (its first line is the request that enables it).
    let good = server.dir.path().join("good.log");
    let (status, body) = enable_file(&server, &root, "good", &good);
    assert_eq!(status, 204, "{body}");
    let first = &entries(&good)[0];
    assert_eq!((&first["type"], &first["request"]["path"]), (&json!("request"), &json!("sys/audit/good")));

    // Nothing the refused requests asked for happened.
    assert_eq!(server.get("secret/data/kept-out", r).0, 404);
    assert_eq!(accessors(&server), tokens_before);
    // Service is back; the failing device keeps failing and says so.
    let (status, body) = server.put("secret/data/kept-out", r, json!({ "data": { "v": "now-stored" } }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("secret/data/kept-out", r).1["data"]["data"]["v"], "now-stored");
    let (status, list) = server.get("sys/audit", r);
    assert_eq!(status, 200);
    assert!(list["data"]["full/"]["failures"].as_u64().unwrap() >= 5, "{list}");
    assert_eq!(list["data"]["good/"]["failures"], 0);
    assert_eq!(server.request("DELETE", "sys/audit/full", r, None).0, 204);
    let (code, out) = verify(&server, &[&good], &[]);
    assert_eq!(code, 0, "{out}");
}

/// A plain read's request entry is appended with its response entry, as the two consecutive
/// lines of one write, even while other requests write their entries: no other line can come
/// between them, and the chain over all of it verifies.
#[test]
fn a_reads_request_and_response_entries_are_consecutive_lines() {
    let (server, root) = ready();
    let log = server.dir.path().join("audit.log");
    assert_eq!(enable_file(&server, &root, "file", &log).0, 204);
    let (status, body) = server.put("secret/data/app", Some(&root), json!({ "data": { "v": "x" } }));
    assert_eq!(status, 200, "{body}");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (server, root) = (&server, root.as_str());
            scope.spawn(move || {
                for _ in 0..25 {
                    assert_eq!(server.get("secret/data/app", Some(root)).0, 200);
                    // A write in between: its request entry goes out before it is acted on.
                    assert_eq!(server.put("cubbyhole/x", Some(root), json!({ "v": "y" })).0, 204);
                }
            });
        }
    });
    let lines = entries(&log);
    let mut reads = 0;
    for (at, line) in lines.iter().enumerate() {
        if line["type"] == "request"
            && line["request"]["path"] == "secret/data/app"
            && line["request"]["operation"] == "read"
        {
            let next = &lines[at + 1];
            assert_eq!((&next["type"], &next["request"]["id"]), (&json!("response"), &line["request"]["id"]), "{next}");
            assert_eq!(next["seq"].as_u64(), line["seq"].as_u64().map(|seq| seq + 1));
            assert!(
                instant(&line["time"]) <= instant(&next["time"]),
                "the request is timed after its response: {line}"
            );
            reads += 1;
        }
    }
    assert_eq!(reads, 200);
    let (code, out) = verify(&server, &[&log], &[]);
    assert_eq!(code, 0, "{out}");
}

/// A FIFO whose reader never reads: once the pipe buffer is full the device's write blocks
/// for good. The request must get 500 within the broker's bound (5 s), later requests fail
/// fast, and a healthy device restores service.
#[test]
fn audit_device_that_hangs_costs_a_bounded_wait_then_500() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let fifo = server.dir.path().join("audit.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader_path = fifo.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Blocks until the server opens the write end; then holds it without reading.
        let reader = std::fs::File::open(reader_path).expect("open fifo");
        let _ = tx.send(reader);
    });
    assert_eq!(enable_file(&server, &root, "fifo", &fifo).0, 204);
    let _reader = rx.recv_timeout(Duration::from_secs(10)).expect("the server opened the fifo");

    // Each request entry is ~40 KB (every value is an HMAC), so the 64 KiB pipe fills fast.
    let data: serde_json::Map<String, Value> = (0..500).map(|i| (format!("key{i}"), json!("v"))).collect();
    let mut hung = None;
    for attempt in 0..10 {
        let started = Instant::now();
        let (status, body) = server.put(&format!("secret/data/big{attempt}"), r, json!({ "data": data }));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(12), "request {attempt} took {took:?}");
        if status == 500 {
            assert_eq!(body, json!({ "errors": ["internal error"] }));
            hung = Some((attempt, took));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (attempt, took) = hung.expect("the pipe never filled");
    assert!(took >= Duration::from_secs(4), "the first refusal (request {attempt}) came after {took:?}");

    // Stuck for longer than the bound: entries now fail at once, and nothing is done. (The
    // write that hung may itself have been stored: when it is the response entry that blocks,
    // the operation has happened and only the answer is withheld, as in Vault.)
    let started = Instant::now();
    let (status, _) = server.put("secret/data/after-hang", r, json!({ "data": { "v": "x" } }));
    assert_eq!(status, 500);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    let good = server.dir.path().join("good.log");
    assert_eq!(enable_file(&server, &root, "good", &good).0, 204);
    let started = Instant::now();
    assert_eq!(server.get("secret/data/big0", r).0, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "a hung neighbour slowed a request to {:?}", started.elapsed());
    assert_eq!(server.get("secret/data/after-hang", r).0, 404, "a write refused for audit was stored");
    let (_, list) = server.get("sys/audit", r);
    assert!(list["data"]["fifo/"]["failures"].as_u64().unwrap() >= 3, "{list}");
}

/// Writes a few requests' worth of lines and returns the log's lines (newline kept).
fn sample_log(server: &TestServer, root: &str, log: &Path) -> Vec<Vec<u8>> {
    assert_eq!(enable_file(server, root, "file", log).0, 204);
    for i in 0..5 {
        assert_eq!(server.put(&format!("secret/data/s{i}"), Some(root), json!({ "data": { "v": i } })).0, 200);
    }
    let bytes = std::fs::read(log).unwrap();
    bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

#[test]
fn audit_verify_finds_each_kind_of_tampering_at_its_line() {
    let (server, root) = ready();
    let log = server.dir.path().join("audit.log");
    let lines = sample_log(&server, &root, &log);
    assert!(lines.len() >= 10, "{} lines", lines.len());
    let middle = lines.len() / 2;
    let last = lines.len();
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, content: Vec<Vec<u8>>| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content.concat()).unwrap();
        path
    };

    let mut edited = lines.clone();
    let at = edited[middle].windows(6).position(|w| w == b"secret").unwrap();
    edited[middle][at] = b'S';
    let mut removed = lines.clone();
    removed.remove(middle);
    let mut swapped = lines.clone();
    swapped.swap(middle, middle + 1);
    let mut truncated = lines.clone();
    let tail = truncated.last_mut().unwrap();
    tail.truncate(tail.len() - 20);
    let mut foreign = lines.clone();
    foreign.push(
        b"{\"time\":\"2024-01-01T00:00:00Z\",\"type\":\"request\",\"request\":{\"path\":\"secret/data/x\"}}\n".to_vec(),
    );
    // A forger who knows the fields but not how the hash is made.
    let previous: Value = serde_json::from_slice(&lines[last - 1]).unwrap();
    let mut forged = lines.clone();
    forged.push(
        format!(
            "{{\"seq\":{},\"prev_hash\":\"{}\",\"type\":\"request\",\"hash\":\"{}\"}}\n",
            previous["seq"].as_u64().unwrap() + 1,
            previous["hash"].as_str().unwrap(),
            "ab".repeat(32)
        )
        .into_bytes(),
    );

    let cases = [
        ("intact", lines.clone(), None),
        ("edited", edited, Some((middle + 1, "edited"))),
        ("removed", removed, Some((middle + 1, "removed: 1 line(s) missing"))),
        ("swapped", swapped, Some((middle + 1, "reordered"))),
        ("truncated", truncated, Some((last, "truncated"))),
        ("foreign", foreign, Some((last + 1, "foreign line inserted"))),
        ("forged", forged, Some((last + 1, "edited"))),
    ];
    for (name, content, expected) in cases {
        let path = case(name, content);
        let (code, out) = verify(&server, &[&path], &[]);
        match expected {
            None => assert_eq!(code, 0, "{name}: {out}"),
            Some((line, reason)) => {
                assert_eq!(code, 1, "{name}: {out}");
                let want = format!("{}:{line}: {reason}", path.display());
                assert!(out.contains(&want), "{name}: expected {want:?}, got {out}");
            }
        }
    }
}

#[test]
fn audit_chain_continues_across_sighup_rotation_and_restarts() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let mut server = server;
    let log = server.dir.path().join("audit.log");
    let rotated = server.dir.path().join("audit.log.1");
    assert_eq!(enable_file(&server, &root, "file", &log).0, 204);
    for _ in 0..3 {
        assert_eq!(server.get("sys/mounts", Some(&root)).0, 200);
    }
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new audit file after SIGHUP");
        assert_eq!(server.get("sys/mounts", Some(&root)).0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        assert_eq!(server.get("sys/mounts", Some(&root)).0, 200);
    }
    let (code, out) = verify(&server, &[&rotated, &log], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&server, &[&log, &rotated], &[]);
    assert_eq!(code, 1, "files out of order must not verify: {out}");
    assert!(out.contains("reordered"), "{out}");
    let old = entries(&rotated);
    let new = entries(&log);
    assert_eq!(new[0]["prev_hash"], old.last().unwrap()["hash"]);
    assert_eq!(new[0]["seq"], old.last().unwrap()["seq"].as_u64().unwrap() + 1);

    // Restart (SIGTERM), and rotate while the server is down: the chain resumes from the
    // head recorded at shutdown, in a fresh file.
    let stopped = server.stop();
    assert!(stopped.success());
    let rotated2 = server.dir.path().join("audit.log.2");
    std::fs::rename(&log, &rotated2).unwrap();
    server.launch();
    server.unseal(&init.keys);
    assert_eq!(server.get("sys/mounts", Some(&root)).0, 200);
    let (status, list) = server.get("sys/audit", Some(&root));
    assert_eq!(status, 200);
    let chain = &list["data"]["file/"]["chain"];
    let checkpoint = format!("--checkpoint={}:{}", chain["seq"], chain["hash"].as_str().unwrap());
    let anchor = format!("--anchor={}", chain["genesis"].as_str().unwrap());
    assert_eq!(entries(&rotated)[0]["prev_hash"], chain["genesis"]);
    let all = [rotated.as_path(), rotated2.as_path(), log.as_path()];
    let (code, out) = verify(&server, &all, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&server, &all, &[anchor.clone(), checkpoint.clone()]);
    assert_eq!(code, 0, "{out}");
    // Losing the newest file is visible only against a checkpoint recorded elsewhere.
    let (code, out) = verify(&server, &all[..2], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&server, &all[..2], &[checkpoint]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated at the end"), "{out}");
    // Dropping the oldest file is visible against the anchor.
    let (code, out) = verify(&server, &all[1..], &[anchor]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("anchor mismatch"), "{out}");
}

#[test]
fn audit_enable_refuses_unsafe_paths_and_needs_sudo() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let bin_dir = server.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let tool = bin_dir.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::process::Command::new("chmod").arg("755").arg(&tool).status().unwrap();
    let binary_dir = arcanum_tests::binary().canonicalize().unwrap().parent().unwrap().to_path_buf();
    let dir = server.dir.path().to_str().unwrap().to_owned();
    let refused = [
        json!({ "file_path": "relative.log" }),
        json!({ "file_path": format!("{dir}/../escape.log") }),
        json!({ "file_path": dir }),
        json!({ "file_path": tool.to_str().unwrap() }),
        json!({ "file_path": bin_dir.join("audit.log").to_str().unwrap() }),
        json!({ "file_path": binary_dir.join("audit.log").to_str().unwrap() }),
        json!({ "file_path": format!("{dir}/a.log"), "mode": "0755" }),
        json!({ "file_path": format!("{dir}/a.log"), "format": "jsonx" }),
        json!({}),
    ];
    for options in refused {
        let (status, body) = server.put("sys/audit/bad", r, json!({ "type": "file", "options": options }));
        assert_eq!(status, 400, "{options} was accepted: {body}");
    }
    let (status, _) = server.put("sys/audit/bad", r, json!({ "type": "socket", "options": {} }));
    assert_eq!(status, 400);
    assert!(!binary_dir.join("audit.log").exists());
    assert_eq!(server.get("sys/audit", r).1["data"], json!({}));

    // A created file gets the mode asked for (default 0600), never an execute bit.
    let log = server.dir.path().join("moded.log");
    let (status, body) = server.put(
        "sys/audit/moded",
        r,
        json!({ "type": "file", "options": { "file_path": log.to_str().unwrap(), "mode": "0640" } }),
    );
    assert_eq!(status, 204, "{body}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o640);

    // All audit endpoints need sudo.
    let policy = r#"path "sys/audit*" { capabilities = ["create", "read", "update", "delete", "list"] }"#;
    assert_eq!(server.put("sys/policies/acl/auditor", r, json!({ "policy": policy })).0, 204);
    let (_, created) = server.put("auth/token/create", r, json!({ "policies": ["auditor"] }));
    let auditor = created["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("sys/audit", Some(&auditor)).0, 403);
    assert_eq!(server.put("sys/audit-hash/moded", Some(&auditor), json!({ "input": "x" })).0, 403);
    assert_eq!(server.request("DELETE", "sys/audit/moded", Some(&auditor), None).0, 403);
}

#[test]
fn audit_cli_enables_lists_and_disables_devices() {
    let (server, root) = ready();
    let log = server.dir.path().join("cli.log");
    let file_path = format!("file_path={}", log.display());
    let (code, out, err) =
        server.cli(&["audit", "enable", "-path=cli", "-description=from the CLI", "file", &file_path], Some(&root));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Success! Enabled the file audit device at: cli/"), "{out}");
    let (code, out, err) = server.cli(&["audit", "list"], Some(&root));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cli/") && out.contains("file") && out.contains("from the CLI"), "{out}");
    let (code, out, _) = server.cli(&["audit", "list", "-detailed"], Some(&root));
    assert_eq!(code, 0);
    assert!(out.contains("Failures") && out.contains("Checkpoint"), "{out}");
    let (code, out, _) = server.cli(&["audit", "list", "-format=json"], Some(&root));
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["cli/"]["options"]["file_path"], log.to_str().unwrap());
    let (code, out, err) = server.cli(&["audit", "disable", "cli"], Some(&root));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = server.cli(&["audit", "list"], Some(&root));
    assert_eq!(code, 2);
    assert!(out.contains("No audit devices are enabled."), "{out}");
    // The disable itself was recorded on the device it removed.
    let last = entries(&log).pop().unwrap();
    assert_eq!((&last["type"], &last["request"]["path"]), (&json!("response"), &json!("sys/audit/cli/")));
    let (code, out) = verify(&server, &[&log], &[]);
    assert_eq!(code, 0, "{out}");
}
