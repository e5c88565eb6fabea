//! End to end: key shares and root tokens encrypted to operators' OpenPGP keys — `pgp_keys`
//! and `root_token_pgp_key` at `sys/init`, `pgp_keys` and `backup` at `sys/rekey/init` with
//! `sys/rekey/backup`, and `pgp_key` for `sys/generate-root`. The operators' keys are made in
//! the test (RSA as most operators have, and Curve25519 as newer GnuPG makes); what the server
//! encrypts is opened with the `pgp` crate and with `gpg`.

#[path = "pgp/operator.rs"]
mod operator;

use arcanum_tests::TestServer;
use base64::Engine as _;
use operator::{gnupg_home, hex_decode, operator};
use serde_json::{json, Value};

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[test]
fn init_encrypts_each_share_and_the_root_token_to_its_operator() {
    let operators = [operator("alice", true), operator("bob", false), operator("carol", false)];
    let keys: Vec<&str> = operators.iter().map(|o| o.public_base64.as_str()).collect();
    let server = TestServer::start();

    // Refusals change nothing: a count mismatch, and a key that is not a key.
    let (status, body) =
        server.put("sys/init", None, json!({ "secret_shares": 3, "secret_threshold": 2, "pgp_keys": &keys[..2] }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0], "count mismatch between number of provided PGP keys and number of shares");
    let (status, body) = server.put(
        "sys/init",
        None,
        json!({ "secret_shares": 3, "secret_threshold": 2, "pgp_keys": [keys[0], "bm90IGEga2V5", keys[2]] }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("pgp_keys[1]"), "{body}");
    assert_eq!(server.get("sys/init", None).1["initialized"], false);

    let (status, init) = server.put(
        "sys/init",
        None,
        json!({
            "secret_shares": 3,
            "secret_threshold": 2,
            "pgp_keys": keys,
            "root_token_pgp_key": operators[1].public_base64,
        }),
    );
    assert_eq!(status, 200, "{init}");
    let encrypted = strings(&init["keys"]);
    let encrypted_base64 = strings(&init["keys_base64"]);
    // Each operator opens their own share (the hex text of the share) and only theirs.
    let shares: Vec<String> = operators.iter().zip(&encrypted).map(|(op, share)| op.decrypt_hex(share)).collect();
    for (share, encoded) in shares.iter().zip(&encrypted_base64) {
        assert_eq!(share.len(), 66, "a 33-byte share as hex: {share}");
        assert!(!encrypted.contains(share) && !init.to_string().contains(share.as_str()), "a share in the clear");
        assert!(!encoded.is_empty());
    }
    assert_eq!(operators[1].decrypt_base64(&encrypted_base64[1]), shares[1]);
    let root = operators[1].decrypt_base64(init["root_token"].as_str().unwrap());
    assert!(root.starts_with("hvs."), "{root}");

    // GnuPG opens the RSA operator's share too.
    let home = gnupg_home(server.dir.path(), "gnupg-alice");
    assert_eq!(operators[0].gpg_decrypt(&home, &hex_decode(&encrypted[0])), shares[0]);

    server.unseal(&shares[1..]);
    let (status, me) = server.get("auth/token/lookup-self", Some(&root));
    assert_eq!((status, me["data"]["policies"].clone()), (200, json!(["root"])));
}

#[test]
fn rekey_encrypts_the_new_shares_and_keeps_a_backup_until_deleted() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = Some(init.root_token.as_str());
    let operators = [operator("dave", false), operator("erin", false)];
    let keys: Vec<&str> = operators.iter().map(|o| o.public_base64.as_str()).collect();

    let (status, body) =
        server.put("sys/rekey/init", None, json!({ "secret_shares": 2, "secret_threshold": 2, "backup": true }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0], "cannot request a backup of the new keys without providing PGP keys for encryption");
    let (status, body) =
        server.put("sys/rekey/init", None, json!({ "secret_shares": 3, "secret_threshold": 2, "pgp_keys": keys }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("incorrect number of PGP keys for rekey")));

    let (status, started) = server.put(
        "sys/rekey/init",
        None,
        json!({ "secret_shares": 2, "secret_threshold": 2, "pgp_keys": keys, "backup": true }),
    );
    assert_eq!(status, 200, "{started}");
    let fingerprints: Vec<String> = operators.iter().map(|o| o.fingerprint.clone()).collect();
    assert_eq!(started["pgp_fingerprints"], json!(fingerprints));
    assert_eq!(started["backup"], true);
    let (_, done) = server.put("sys/rekey/update", None, json!({ "key": init.keys[0], "nonce": started["nonce"] }));
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!((done["pgp_fingerprints"].clone(), done["backup"].clone()), (json!(fingerprints), json!(true)));
    let encrypted = strings(&done["keys"]);
    let shares: Vec<String> = operators.iter().zip(&encrypted).map(|(op, share)| op.decrypt_hex(share)).collect();

    // The backup holds the same encrypted shares, by fingerprint; it needs a (sudo) token.
    assert_eq!(server.get("sys/rekey/backup", None).0, 403);
    let (status, backup) = server.get("sys/rekey/backup", root);
    assert_eq!(status, 200, "{backup}");
    assert_eq!(backup["data"]["nonce"], started["nonce"]);
    for (fingerprint, share) in fingerprints.iter().zip(&encrypted) {
        assert_eq!(backup["data"]["keys"][fingerprint], json!([share]));
    }
    assert_eq!(backup["data"]["keys_base64"][&fingerprints[1]], json!([done["keys_base64"][1]]));

    // The new shares unseal; the old one no longer does.
    assert_eq!(server.put("sys/seal", root, json!({})).0, 204);
    let (_, status) = server.put("sys/unseal", None, json!({ "key": init.keys[0] }));
    assert_eq!(status["sealed"], true);
    server.put("sys/unseal", None, json!({ "reset": true }));
    server.unseal(&shares);

    assert_eq!(server.request("DELETE", "sys/rekey/backup", root, None).0, 204);
    let (status, body) = server.get("sys/rekey/backup", root);
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("no backed-up keys found")));
}

#[test]
fn generate_root_with_a_pgp_key_hands_out_the_token_encrypted() {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let operator = operator("frank", true);

    let (status, body) = server.put(
        "sys/generate-root/attempt",
        None,
        json!({ "pgp_key": operator.public_base64, "otp": "A".repeat(28) }),
    );
    assert_eq!(status, 400, "{body}");
    let (status, started) = server.put("sys/generate-root/attempt", None, json!({ "pgp_key": operator.public_base64 }));
    assert_eq!(status, 200, "{started}");
    assert_eq!((started["pgp_fingerprint"].clone(), started["otp"].clone()), (json!(operator.fingerprint), json!("")));
    assert_eq!(server.get("sys/generate-root/attempt", None).1["pgp_fingerprint"], json!(operator.fingerprint));

    let (_, done) =
        server.put("sys/generate-root/update", None, json!({ "key": init.keys[0], "nonce": started["nonce"] }));
    assert_eq!(done["complete"], true, "{done}");
    let encoded = done["encoded_token"].as_str().unwrap();
    let token = operator.decrypt_base64(encoded);
    assert!(token.starts_with("hvs.") && token != init.root_token, "{token}");
    let home = gnupg_home(server.dir.path(), "gnupg-frank");
    let message = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    assert_eq!(operator.gpg_decrypt(&home, &message), token);
    let (status, me) = server.get("auth/token/lookup-self", Some(&token));
    assert_eq!((status, me["data"]["policies"].clone()), (200, json!(["root"])));
}

#[test]
fn the_cli_takes_key_files_binary_or_base64_and_prints_the_encrypted_shares() {
    let operators = [operator("gina", false), operator("hank", false)];
    let server = TestServer::start();
    let binary = server.dir.path().join("gina.gpg");
    std::fs::write(&binary, base64::engine::general_purpose::STANDARD.decode(&operators[0].public_base64).unwrap())
        .unwrap();
    let text = server.dir.path().join("hank.b64");
    std::fs::write(&text, format!("{}\n", operators[1].public_base64)).unwrap();
    let (binary, text) = (binary.to_str().unwrap(), text.to_str().unwrap());
    let (code, out, stderr) = server.cli(
        &[
            "operator",
            "init",
            "-key-shares=2",
            "-key-threshold=2",
            &format!("-pgp-keys={binary},{text}"),
            &format!("-root-token-pgp-key={text}"),
            "-format=json",
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let init: Value = serde_json::from_str(&out).unwrap();
    let shares: Vec<String> =
        operators.iter().zip(strings(&init["unseal_keys_b64"])).map(|(op, share)| op.decrypt_base64(&share)).collect();
    let root = operators[1].decrypt_base64(init["root_token"].as_str().unwrap());
    server.unseal(&shares);
    assert_eq!(server.get("auth/token/lookup-self", Some(&root)).0, 200);
}
