//! End to end: a KV v2 read or write always builds on the last acknowledged change to the key,
//! whoever made it — the engine itself, `sys/raw` beneath it, or concurrent writers — although
//! the engine keeps the parsed metadata between requests.

use arcanum_tests::TestServer;
use serde_json::{json, Value};

fn read(server: &TestServer, root: &str, path: &str) -> (u16, Value) {
    server.get(path, Some(root))
}

/// The `sys/raw` path of `rest` (`config`, `metadata/<key>`) in the `secret/` mount's storage.
fn raw_path(server: &TestServer, root: &str, rest: &str) -> String {
    let (_, mount) = server.get("sys/mounts/secret", Some(root));
    format!("sys/raw/logical/{}/{rest}", mount["data"]["uuid"].as_str().expect("a uuid"))
}

/// Rewrites the JSON record at the `sys/raw` path `path` beneath the engine with `edit`.
fn edit_raw(server: &TestServer, root: &str, path: &str, edit: impl FnOnce(&mut Value)) {
    let (status, raw) = server.get(path, Some(root));
    assert_eq!(status, 200, "{raw}");
    let mut stored: Value = serde_json::from_str(raw["data"]["value"].as_str().expect("a value")).expect("JSON");
    edit(&mut stored);
    assert_eq!(server.put(path, Some(root), json!({ "value": stored.to_string() })).0, 204);
}

#[test]
fn every_change_to_a_key_is_seen_by_the_next_read() {
    let (server, root) = TestServer::unsealed_with_kv_v2();
    let root = root.as_str();
    let write = |value: &str| {
        let (status, body) = server.put("secret/data/k", Some(root), json!({ "data": { "v": value } }));
        assert_eq!(status, 200, "{body}");
        body["data"]["version"].as_u64().expect("a version")
    };
    assert_eq!(read(&server, root, "secret/data/k").0, 404);
    assert_eq!(write("one"), 1);
    // Read twice: the second read is the one that may come from what the first kept.
    for _ in 0..2 {
        let (status, body) = read(&server, root, "secret/data/k");
        assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("one")), "{body}");
    }

    assert_eq!(write("two"), 2);
    let (_, body) = read(&server, root, "secret/data/k");
    assert_eq!(
        (body["data"]["data"]["v"].clone(), body["data"]["metadata"]["version"].clone()),
        (json!("two"), json!(2))
    );

    // Soft delete, undelete, destroy: each answer changes at once.
    assert_eq!(server.request("DELETE", "secret/data/k", Some(root), None).0, 204);
    let (status, body) = read(&server, root, "secret/data/k");
    assert_eq!(status, 404, "{body}");
    assert_ne!(body["data"]["metadata"]["deletion_time"], json!(""), "{body}");
    assert_eq!(server.put("secret/undelete/k", Some(root), json!({ "versions": [2] })).0, 204);
    let (status, body) = read(&server, root, "secret/data/k");
    assert_eq!((status, body["data"]["data"]["v"].clone()), (200, json!("two")), "{body}");
    assert_eq!(server.put("secret/destroy/k", Some(root), json!({ "versions": [2] })).0, 204);
    let (status, body) = read(&server, root, "secret/data/k");
    assert_eq!((status, body["data"]["metadata"]["destroyed"].clone()), (404, json!(true)), "{body}");

    // Metadata written through the engine, then beneath it through sys/raw.
    let custom = json!({ "custom_metadata": { "owner": "team-a" } });
    assert_eq!(server.put("secret/metadata/k", Some(root), custom).0, 204);
    let (_, body) = read(&server, root, "secret/metadata/k");
    assert_eq!(body["data"]["custom_metadata"], json!({ "owner": "team-a" }), "{body}");
    let raw_path = raw_path(&server, root, "metadata/k");
    edit_raw(&server, root, &raw_path, |stored| stored["custom_metadata"] = json!({ "owner": "team-b" }));
    let (_, body) = read(&server, root, "secret/metadata/k");
    assert_eq!(body["data"]["custom_metadata"], json!({ "owner": "team-b" }), "a change beneath the engine: {body}");

    assert_eq!(server.request("DELETE", "secret/metadata/k", Some(root), None).0, 204);
    assert_eq!(read(&server, root, "secret/data/k").0, 404);
    assert_eq!(read(&server, root, "secret/metadata/k").0, 404);
}

/// Writers and readers of the same keys at once: after a write is acknowledged, no read of
/// that key shows an older version, and no two writes of a key get the same version (a write
/// built on metadata older than the last write would).
#[test]
fn concurrent_writers_never_read_back_an_older_version() {
    let (server, root) = TestServer::unsealed_with_kv_v2();
    const WRITES: u64 = 60;
    let versions: Vec<(String, Vec<u64>)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (server, root) = (&server, root.as_str());
                scope.spawn(move || {
                    let path = format!("secret/data/shared-{}", writer % 2);
                    let mut versions = Vec::new();
                    for n in 0..WRITES {
                        let (status, body) = server.put(&path, Some(root), json!({ "data": { "n": n } }));
                        assert_eq!(status, 200, "{body}");
                        let written = body["data"]["version"].as_u64().expect("a version");
                        let (status, body) = server.get(&path, Some(root));
                        assert_eq!(status, 200, "{body}");
                        let seen = body["data"]["metadata"]["version"].as_u64().expect("a version");
                        assert!(seen >= written, "wrote version {written} of {path}, then read version {seen}");
                        versions.push(written);
                    }
                    (path, versions)
                })
            })
            .collect();
        writers.into_iter().map(|writer| writer.join().expect("a writer")).collect()
    });
    for shared in ["secret/data/shared-0", "secret/data/shared-1"] {
        let mut written: Vec<u64> =
            versions.iter().filter(|(path, _)| path == shared).flat_map(|(_, v)| v.iter().copied()).collect();
        written.sort_unstable();
        let expected: Vec<u64> = (1..=2 * WRITES).collect();
        assert_eq!(written, expected, "the writes of {shared} got every version once");
    }
}

/// Data writes keep the key's parsed metadata too, absent or present, between requests: each
/// change to it beneath the engine, through `sys/raw`, rules the very next write.
#[test]
fn every_change_to_a_keys_metadata_rules_the_next_write() {
    let (server, root) = TestServer::unsealed_with_kv_v2();
    let root = root.as_str();
    let write = |body: Value| server.put("secret/data/m", Some(root), body);
    let raw_path = raw_path(&server, root, "metadata/m");

    // The key's absence is kept by this read; then metadata appears beneath the engine.
    assert_eq!(read(&server, root, "secret/data/m").0, 404);
    let planted = json!({
        "current_version": 5, "oldest_version": 5, "cas_required": false,
        "created_time": "2026-01-01T00:00:00Z", "updated_time": "2026-01-01T00:00:00Z",
        "versions": { "5": { "created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": true } },
    });
    assert_eq!(server.put(&raw_path, Some(root), json!({ "value": planted.to_string() })).0, 204);
    let (status, body) = write(json!({ "data": { "n": 6 } }));
    assert_eq!(
        (status, body["data"]["version"].clone()),
        (200, json!(6)),
        "metadata planted beneath the engine: {body}"
    );
    let (status, body) = write(json!({ "data": { "n": 7 } }));
    assert_eq!((status, body["data"]["version"].clone()), (200, json!(7)), "{body}");

    // cas_required set on the key beneath the engine rules the next write.
    edit_raw(&server, root, &raw_path, |stored| stored["cas_required"] = json!(true));
    let (status, body) = write(json!({ "data": { "n": 8 } }));
    assert_eq!(status, 400, "cas_required set on the key beneath the engine: {body}");
    let (status, body) = write(json!({ "data": { "n": 8 }, "options": { "cas": 7 } }));
    assert_eq!((status, body["data"]["version"].clone()), (200, json!(8)), "{body}");

    // The metadata removed beneath the engine: the key starts again at version 1.
    assert_eq!(server.request("DELETE", &raw_path, Some(root), None).0, 204);
    let (status, body) = write(json!({ "data": { "n": 1 } }));
    assert_eq!(
        (status, body["data"]["version"].clone()),
        (200, json!(1)),
        "metadata removed beneath the engine: {body}"
    );
}

/// Writes keep the engine's parsed `config` between requests too: each change to it, through
/// the engine or beneath it through `sys/raw`, rules the very next write.
#[test]
fn every_change_to_the_engine_config_rules_the_next_write() {
    let (server, root) = TestServer::unsealed_with_kv_v2();
    let root = root.as_str();
    let write = |body: Value| server.put("secret/data/c", Some(root), body);
    // Twice, so that the second write is one that may use what the first kept.
    for n in 0..2 {
        let (status, body) = write(json!({ "data": { "n": n } }));
        assert_eq!(status, 200, "{body}");
    }

    assert_eq!(server.put("secret/config", Some(root), json!({ "cas_required": true })).0, 204);
    let (status, body) = write(json!({ "data": { "n": 2 } }));
    assert_eq!(status, 400, "cas_required set through the engine: {body}");
    let (status, body) = write(json!({ "data": { "n": 2 }, "options": { "cas": 2 } }));
    assert_eq!(status, 200, "{body}");

    let raw_path = raw_path(&server, root, "config");
    let raw = json!({ "max_versions": 1, "cas_required": false, "delete_version_after": 0 });
    assert_eq!(server.put(&raw_path, Some(root), json!({ "value": raw.to_string() })).0, 204);
    let (status, body) = write(json!({ "data": { "n": 3 } }));
    assert_eq!(status, 200, "cas_required cleared beneath the engine: {body}");
    let (status, body) = server.get("secret/metadata/c", Some(root));
    assert_eq!(status, 200, "{body}");
    let kept: Vec<&String> = body["data"]["versions"].as_object().expect("versions").keys().collect();
    assert_eq!(kept, ["4"], "max_versions 1 set beneath the engine keeps one version: {body}");
}
