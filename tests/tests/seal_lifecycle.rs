//! End to end: init, unseal, restart, rekey and rotate against the real binary on sled.

use arcanum_tests::{contains, read_tree, TestServer};
use serde_json::json;

#[test]
fn records_survive_restart_behind_the_seal_and_never_hit_disk_in_plaintext() {
    // Trace logging, so that the log scan at the end covers every line the server can write.
    let mut server = TestServer::start_with(|dir| arcanum_tests::sled_config(dir, "", "log_level = \"trace\""));
    let (status, body) = server.get("sys/init", None);
    assert_eq!((status, body), (200, json!({ "initialized": false })));
    let init = server.init(5, 3);
    assert_eq!(init.keys.len(), 5);
    assert_eq!(init.keys_base64.len(), 5);
    assert!(init.root_token.starts_with("hvs."));

    // Initialised but still sealed.
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!(status["sealed"], json!(true));
    assert_eq!((status["t"].clone(), status["n"].clone()), (json!(3), json!(5)));
    // Mix hex and base64 shares, as operators do.
    server.unseal(&[init.keys[4].clone(), init.keys_base64[1].clone(), init.keys[2].clone()]);

    let marker = "plaintext-marker-7f3a9c";
    let (status, body) = server.put("sys/raw/app/config", Some(&init.root_token), json!({ "value": marker }));
    assert_eq!(status, 204, "{body}");

    server.restart();
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!(status["sealed"], json!(true), "a restart must come up sealed");
    let (status, body) = server.get("sys/raw/app/config", Some(&init.root_token));
    assert_eq!(status, 503);
    assert_eq!(body, json!({ "errors": ["Vault is sealed"] }));

    // Two shares are not enough.
    for key in &init.keys[..2] {
        let (_, body) = server.put("sys/unseal", None, json!({ "key": key }));
        assert_eq!(body["sealed"], json!(true));
    }
    let (_, body) = server.get("sys/seal-status", None);
    assert_eq!(body["progress"], json!(2));
    let (_, body) = server.put("sys/unseal", None, json!({ "key": init.keys[3] }));
    assert_eq!(body["sealed"], json!(false));
    assert_eq!(body["progress"], json!(0));

    let (status, body) = server.get("sys/raw/app/config", Some(&init.root_token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["value"], json!(marker));

    server.stop();
    let files = read_tree(&server.dir.path().join("data"));
    assert!(!files.is_empty(), "sled wrote no files");
    for (path, bytes) in &files {
        assert!(!contains(bytes, marker.as_bytes()), "plaintext found in {}", path.display());
        assert!(!contains(bytes, init.root_token.as_bytes()), "root token found in {}", path.display());
    }
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    // The scan covers the core's own lines too (the log filter names every crate of ours).
    assert!(log.contains("unsealed") && log.contains("arcanum_core"), "the core's log lines are missing");
    assert!(!log.contains(&init.root_token), "root token in the server log");
    for key in init.keys.iter().chain(&init.keys_base64) {
        assert!(!log.contains(key.as_str()), "unseal key in the server log");
    }
}

#[test]
fn unseal_progress_reset_and_wrong_keys_behave_like_vault() {
    let server = TestServer::start();
    let init = server.init(3, 2);

    // The same share twice counts once.
    let (_, body) = server.put("sys/unseal", None, json!({ "key": init.keys[0] }));
    assert_eq!(body["progress"], json!(1));
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    assert!(!nonce.is_empty());
    let (_, body) = server.put("sys/unseal", None, json!({ "key": init.keys_base64[0] }));
    assert_eq!(body["progress"], json!(1));
    assert_eq!(body["nonce"], json!(nonce));

    // Reset forgets the progress.
    let (status, body) = server.put("sys/unseal", None, json!({ "reset": true }));
    assert_eq!(status, 200);
    assert_eq!((body["progress"].clone(), body["nonce"].clone()), (json!(0), json!("")));

    // A well-formed but wrong share is only found out at the threshold; then the attempt resets.
    let mut wrong = hex_decode(&init.keys[1]);
    wrong[0] ^= 0xff;
    let (_, body) = server.put("sys/unseal", None, json!({ "key": init.keys[0] }));
    assert_eq!(body["progress"], json!(1));
    let (status, body) = server.put("sys/unseal", None, json!({ "key": hex_encode(&wrong) }));
    assert_eq!(status, 400, "{body}");
    let (_, body) = server.get("sys/seal-status", None);
    assert_eq!((body["sealed"].clone(), body["progress"].clone()), (json!(true), json!(0)));

    // Malformed keys are refused without counting.
    for bad in ["zz-not-a-key", "abcd", ""] {
        let (status, body) = server.put("sys/unseal", None, json!({ "key": bad }));
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["errors"][0].as_str().unwrap().len() > 5);
    }
    let (status, _) = server.put("sys/unseal", None, json!({}));
    assert_eq!(status, 400);
    let (_, body) = server.get("sys/seal-status", None);
    assert_eq!(body["progress"], json!(0));

    server.unseal(&init.keys[1..]);
    // Reset on an unsealed server is an error, as in Vault.
    let (status, _) = server.put("sys/unseal", None, json!({ "reset": true }));
    assert_eq!(status, 400);

    // Seal needs a token, then works.
    let (status, body) = server.put("sys/seal", None, json!({}));
    assert_eq!(status, 403, "{body}");
    let (status, _) = server.put("sys/seal", Some(&init.root_token), json!({}));
    assert_eq!(status, 204);
    let (_, body) = server.get("sys/seal-status", None);
    assert_eq!(body["sealed"], json!(true));
}

#[test]
fn rekey_replaces_the_shares_and_keeps_the_data() {
    let mut server = TestServer::start();
    let init = server.init(3, 2);
    server.unseal(&init.keys);
    let token = init.root_token.as_str();
    server.put("sys/raw/kept", Some(token), json!({ "value": "still here" }));

    let (status, body) = server.put("sys/rekey/init", None, json!({ "secret_shares": 4, "secret_threshold": 3 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["started"], json!(true));
    assert_eq!(body["required"], json!(2));
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    let (status, _) = server.put("sys/rekey/init", None, json!({ "secret_shares": 4, "secret_threshold": 3 }));
    assert_eq!(status, 400, "a second rekey must not start");
    let (status, _) = server.put("sys/rekey/update", None, json!({ "key": init.keys[0], "nonce": "wrong" }));
    assert_eq!(status, 400);
    let (_, body) = server.put("sys/rekey/update", None, json!({ "key": init.keys[0], "nonce": nonce }));
    assert_eq!(body["progress"], json!(1));
    let (status, body) = server.put("sys/rekey/update", None, json!({ "key": init.keys[1], "nonce": nonce }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["complete"], json!(true));
    let new_keys: Vec<String> =
        body["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    assert_eq!(new_keys.len(), 4);

    server.restart();
    let (_, status) = server.get("sys/seal-status", None);
    assert_eq!((status["t"].clone(), status["n"].clone()), (json!(3), json!(4)));
    // The old shares no longer open it.
    for key in &init.keys[..2] {
        server.put("sys/unseal", None, json!({ "key": key }));
    }
    let (status, _) = server.put("sys/unseal", None, json!({ "key": init.keys[2] }));
    assert_eq!(status, 400, "old shares must not unseal after a rekey");
    server.unseal(&new_keys[1..]);
    let (_, body) = server.get("sys/raw/kept", Some(token));
    assert_eq!(body["data"]["value"], json!("still here"));

    // Cancel works and a cancelled rekey reports not started.
    server.put("sys/rekey/init", None, json!({ "secret_shares": 1, "secret_threshold": 1 }));
    let (status, _) = server.request("DELETE", "sys/rekey/init", None, None);
    assert_eq!(status, 204);
    let (_, body) = server.get("sys/rekey/init", None);
    assert_eq!(body["started"], json!(false));
}

#[test]
fn rotation_adds_terms_and_old_records_stay_readable_across_restarts() {
    let mut server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let token = Some(init.root_token.as_str());
    server.put("sys/raw/before", token, json!({ "value": "term one" }));
    let (status, body) = server.get("sys/key-status", token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["term"], json!(1));
    assert_eq!(body["term"], json!(1), "key-status copies data to the top level like Vault");
    assert!(body["data"]["install_time"].as_str().unwrap().contains('T'));

    let (status, _) = server.put("sys/rotate", token, json!({}));
    assert_eq!(status, 204);
    server.put("sys/raw/after", token, json!({ "value": "term two" }));
    let (_, body) = server.get("sys/key-status", token);
    assert_eq!(body["data"]["term"], json!(2));

    server.restart();
    server.unseal(&init.keys);
    let (_, body) = server.get("sys/key-status", token);
    assert_eq!(body["data"]["term"], json!(2));
    assert_eq!(server.get("sys/raw/before", token).1["data"]["value"], json!("term one"));
    assert_eq!(server.get("sys/raw/after", token).1["data"]["value"], json!("term two"));
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
