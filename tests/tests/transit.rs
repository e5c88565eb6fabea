//! End to end: the Transit engine against the real binary — keys and their policy, encrypt,
//! decrypt and rewrap singly and in batches (with Vault's per-item errors and status codes),
//! data keys, random bytes, hashes and HMACs, the `create` capability an upsert needs, and
//! that no plaintext or key material reaches the audit log or the data directory in clear.

use arcanum_tests::{contains, read_tree, TestServer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// An unsealed server with Transit at `transit/` and a file audit device; (server, root).
fn ready() -> (TestServer, String) {
    let (server, root, _) = ready_with_keys();
    (server, root)
}

/// [`ready`], with the unseal keys too.
fn ready_with_keys() -> (TestServer, String, Vec<String>) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token;
    assert_eq!(server.put("sys/mounts/transit", Some(&root), json!({ "type": "transit" })).0, 204);
    let log = server.dir.path().join("audit.log");
    let (status, body) = server.put(
        "sys/audit/file",
        Some(&root),
        json!({ "type": "file", "options": { "file_path": log.to_str().unwrap() } }),
    );
    assert_eq!(status, 204, "{body}");
    (server, root, init.keys)
}

fn b64(text: &str) -> String {
    B64.encode(text)
}

fn encrypt(server: &TestServer, token: &str, key: &str, plaintext: &str) -> String {
    let (status, body) =
        server.put(&format!("transit/encrypt/{key}"), Some(token), json!({ "plaintext": b64(plaintext) }));
    assert_eq!(status, 200, "{body}");
    body["data"]["ciphertext"].as_str().unwrap().to_owned()
}

fn decrypt(server: &TestServer, token: &str, key: &str, ciphertext: &str) -> (u16, Value) {
    server.put(&format!("transit/decrypt/{key}"), Some(token), json!({ "ciphertext": ciphertext }))
}

fn plaintext_of(body: &Value) -> String {
    String::from_utf8(B64.decode(body["data"]["plaintext"].as_str().unwrap()).unwrap()).unwrap()
}

#[test]
fn keys_are_created_rotated_configured_trimmed_and_deleted_with_vaults_shapes() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let (status, created) = server.put("transit/keys/orders", r, json!({}));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["data"]["type"], "aes256-gcm96");
    let (status, info) = server.get("transit/keys/orders", r);
    assert_eq!(status, 200);
    let data = &info["data"];
    for (field, value) in [
        ("name", json!("orders")),
        ("latest_version", json!(1)),
        ("min_decryption_version", json!(1)),
        ("min_encryption_version", json!(0)),
        ("min_available_version", json!(0)),
        ("deletion_allowed", json!(false)),
        ("exportable", json!(false)),
        ("derived", json!(false)),
        ("supports_encryption", json!(true)),
        ("supports_signing", json!(false)),
        ("auto_rotate_period", json!(0)),
    ] {
        assert_eq!(data[field], value, "{field} in {info}");
    }
    assert!(data["keys"]["1"].as_i64().unwrap() > 1_700_000_000, "{info}");
    // Creating it again changes nothing and says so.
    let (status, again) = server.put("transit/keys/orders", r, json!({ "type": "chacha20-poly1305" }));
    assert_eq!(status, 200);
    assert_eq!(again["data"]["type"], "aes256-gcm96");
    assert!(again["warnings"][0].as_str().unwrap().contains("already existed"), "{again}");

    let v1 = encrypt(&server, &root, "orders", "first");
    assert!(v1.starts_with("vault:v1:"), "{v1}");
    let (status, rotated) = server.put("transit/keys/orders/rotate", r, json!({}));
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["data"]["latest_version"], 2);
    let v2 = encrypt(&server, &root, "orders", "second");
    assert!(v2.starts_with("vault:v2:"), "{v2}");
    assert_eq!(plaintext_of(&decrypt(&server, &root, "orders", &v1).1), "first");

    // Rewrap moves an old ciphertext to the latest version without showing the plaintext.
    let (status, rewrapped) = server.put("transit/rewrap/orders", r, json!({ "ciphertext": v1 }));
    assert_eq!(status, 200, "{rewrapped}");
    let rewrapped = rewrapped["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    assert_eq!(plaintext_of(&decrypt(&server, &root, "orders", &rewrapped).1), "first");

    // Retiring version 1: its ciphertexts are refused, then trimmed away for good.
    let (status, body) = server.put("transit/keys/orders/config", r, json!({ "min_decryption_version": 3 }));
    assert_eq!(
        (status, body["errors"][0].as_str().unwrap()),
        (400, "cannot set min decryption version of 3, latest key version is 2")
    );
    let (status, body) = server.put("transit/keys/orders/config", r, json!({ "min_decryption_version": 2 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["min_decryption_version"], 2);
    let (status, body) = decrypt(&server, &root, "orders", &v1);
    assert_eq!(status, 400);
    assert_eq!(body["errors"], json!(["ciphertext or signature version is disallowed by policy (too old)"]));
    let (status, body) = server.put("transit/keys/orders/trim", r, json!({ "min_available_version": 2 }));
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0], "minimum available version cannot be set when minimum encryption version is not set");
    assert_eq!(server.put("transit/keys/orders/config", r, json!({ "min_encryption_version": 2 })).0, 200);
    let (status, body) = server.put("transit/keys/orders/trim", r, json!({ "min_available_version": 2 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["min_available_version"], 2);
    assert_eq!(body["data"]["keys"].as_object().unwrap().keys().collect::<Vec<_>>(), ["2"]);
    assert_eq!(plaintext_of(&decrypt(&server, &root, "orders", &v2).1), "second");

    // Export only when exportable; once exportable, always exportable.
    let (status, body) = server.get("transit/export/encryption-key/orders", r);
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.put("transit/keys/orders/config", r, json!({ "exportable": true }));
    assert_eq!(status, 200);
    assert_eq!(
        server.put("transit/keys/orders/config", r, json!({ "exportable": false })).1["data"]["exportable"],
        true
    );
    let (status, exported) = server.get("transit/export/encryption-key/orders/latest", r);
    assert_eq!(status, 200, "{exported}");
    assert_eq!(B64.decode(exported["data"]["keys"]["2"].as_str().unwrap()).unwrap().len(), 32);

    // LIST, then deletion only once allowed.
    let (status, listed) = server.request("LIST", "transit/keys", r, None);
    assert_eq!((status, &listed["data"]["keys"]), (200, &json!(["orders"])));
    let (status, body) = server.request("DELETE", "transit/keys/orders", r, None);
    assert_eq!(status, 400);
    assert_eq!(body["errors"], json!(["error deleting policy orders: deletion is not allowed for this key"]));
    assert_eq!(server.put("transit/keys/orders/config", r, json!({ "deletion_allowed": true })).0, 200);
    assert_eq!(server.request("DELETE", "transit/keys/orders", r, None).0, 204);
    assert_eq!(server.get("transit/keys/orders", r).0, 404);
    let (status, body) = decrypt(&server, &root, "orders", &v2);
    assert_eq!((status, body["errors"].clone()), (400, json!(["encryption key not found"])));
}

#[test]
fn batches_carry_per_item_errors_and_vaults_status_codes() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("transit/keys/batch", r, json!({})).0, 200);
    let (status, body) = server.put(
        "transit/encrypt/batch",
        r,
        json!({ "plaintext": null, "batch_input": [
            { "plaintext": b64("one"), "reference": "a" },
            { "plaintext": b64("two") },
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let results = body["data"]["batch_results"].as_array().unwrap().clone();
    assert_eq!(results[0]["reference"], "a");
    assert_eq!(results[1]["reference"], "");
    assert_eq!(results[1]["key_version"], 1);

    // Decrypt: one bad item makes the reply 400 with the normal envelope and the good item decrypted.
    let decrypt_input = json!([
        { "ciphertext": results[0]["ciphertext"], "reference": "good" },
        { "ciphertext": "vault:v1:AAAA", "reference": "bad" },
    ]);
    let (status, body) = server.put("transit/decrypt/batch", r, json!({ "batch_input": decrypt_input }));
    assert_eq!(status, 400, "{body}");
    let items = &body["data"]["batch_results"];
    assert_eq!(B64.decode(items[0]["plaintext"].as_str().unwrap()).unwrap(), b"one");
    assert!(items[0].get("error").is_none(), "{body}");
    assert_eq!(items[1]["reference"], "bad");
    assert_eq!(items[1]["plaintext"], "");
    assert_eq!(items[1]["error"], "invalid ciphertext length");
    // partial_failure_response_code replaces the 400 when something succeeded.
    let (status, _) = server.put(
        "transit/decrypt/batch",
        r,
        json!({ "batch_input": decrypt_input, "partial_failure_response_code": 207 }),
    );
    assert_eq!(status, 207);
    // Rewrap reports failures inside a 200.
    let (status, body) = server.put("transit/rewrap/batch", r, json!({ "batch_input": decrypt_input }));
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["batch_results"][0]["ciphertext"].as_str().unwrap().starts_with("vault:v1:"));
    assert!(body["data"]["batch_results"][1]["error"].is_string(), "{body}");

    // A single bad request is a plain 400 naming what is wrong.
    for (path, body, message) in [
        ("transit/encrypt/batch", json!({}), "missing plaintext to encrypt"),
        ("transit/decrypt/batch", json!({ "ciphertext": "nope" }), "invalid ciphertext: no prefix"),
        ("transit/encrypt/batch", json!({ "plaintext": "%%%" }), "failed to base64-decode plaintext"),
        (
            "transit/encrypt/batch",
            json!({ "plaintext": b64("x"), "key_version": 9 }),
            "requested version for encryption is higher than the latest key version",
        ),
        ("transit/datakey/plaintext/batch", json!({ "bits": 100 }), "invalid bit length"),
        ("transit/hash", json!({ "input": b64("x"), "algorithm": "md5" }), "unsupported algorithm md5"),
        ("transit/random/200000", json!({}), "\"bytes\" should be less than 131072"),
    ] {
        let (status, answer) = server.put(path, r, body);
        assert_eq!((status, answer["errors"][0].as_str()), (400, Some(message)), "{path}: {answer}");
    }
}

#[test]
fn an_encryption_creates_its_key_only_with_the_create_capability() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    for (name, rules) in [
        (
            "use-only",
            "path \"transit/encrypt/*\" { capabilities = [\"update\"] }\npath \"transit/decrypt/*\" { capabilities = [\"update\"] }",
        ),
        ("may-create", r#"path "transit/encrypt/*" { capabilities = ["create", "update"] }"#),
    ] {
        assert_eq!(server.put(&format!("sys/policies/acl/{name}"), r, json!({ "policy": rules })).0, 204);
    }
    let token = |policy: &str| {
        let (_, body) = server.put("auth/token/create", r, json!({ "policies": [policy] }));
        body["auth"]["client_token"].as_str().unwrap().to_owned()
    };
    let (user, creator) = (token("use-only"), token("may-create"));
    let (status, _) = server.put("transit/encrypt/fresh", Some(&user), json!({ "plaintext": b64("x") }));
    assert_eq!(status, 403);
    assert_eq!(server.get("transit/keys/fresh", r).0, 404, "a refused upsert must not create the key");

    // With `create`, the first encryption makes a derived key when it carries a context.
    let (status, body) = server.put(
        "transit/encrypt/fresh",
        Some(&creator),
        json!({ "plaintext": b64("tenant data"), "context": b64("tenant-1") }),
    );
    assert_eq!(status, 200, "{body}");
    let ciphertext = body["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (_, info) = server.get("transit/keys/fresh", r);
    assert_eq!((info["data"]["derived"].clone(), info["data"]["kdf"].clone()), (json!(true), json!("hkdf_sha256")));
    // The existing key needs only `update` now; a derived key needs its context back.
    let (status, body) = server.put(
        "transit/decrypt/fresh",
        Some(&user),
        json!({ "ciphertext": ciphertext, "context": b64("tenant-1") }),
    );
    assert_eq!((status, plaintext_of(&body)), (200, "tenant data".to_owned()));
    let (status, body) = decrypt(&server, &user, "fresh", &ciphertext);
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().starts_with("missing 'context' for key derivation"), "{body}");

    // disable_upsert turns the convenience off for everyone.
    assert_eq!(server.put("transit/config/keys", r, json!({ "disable_upsert": true })).0, 200);
    let (status, body) = server.put("transit/encrypt/other", r, json!({ "plaintext": b64("x") }));
    assert_eq!((status, body["errors"].clone()), (400, json!(["encryption key not found"])));
}

#[test]
fn convergent_keys_datakeys_hashes_hmacs_and_random_bytes() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let (status, body) = server.put(
        "transit/keys/conv",
        r,
        json!({ "type": "chacha20-poly1305", "derived": true, "convergent_encryption": true }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["convergent_encryption"], true);
    let same = |context: &str| {
        let (_, body) =
            server.put("transit/encrypt/conv", r, json!({ "plaintext": b64("ssn-123"), "context": b64(context) }));
        body["data"]["ciphertext"].as_str().unwrap().to_owned()
    };
    assert_eq!(same("c1"), same("c1"), "convergent encryption is deterministic");
    assert_ne!(same("c1"), same("c2"));

    assert_eq!(server.put("transit/keys/dk", r, json!({ "type": "aes128-gcm96" })).0, 200);
    let (status, key) = server.put("transit/datakey/plaintext/dk", r, json!({ "bits": 512 }));
    assert_eq!(status, 200, "{key}");
    assert_eq!(B64.decode(key["data"]["plaintext"].as_str().unwrap()).unwrap().len(), 64);
    let (_, opened) = decrypt(&server, &root, "dk", key["data"]["ciphertext"].as_str().unwrap());
    assert_eq!(opened["data"]["plaintext"], key["data"]["plaintext"]);
    let (_, wrapped) = server.put("transit/datakey/wrapped/dk", r, json!({}));
    assert!(wrapped["data"].get("plaintext").is_none(), "{wrapped}");

    let (_, sum) = server.put("transit/hash/sha2-256", r, json!({ "input": b64("abc") }));
    assert_eq!(sum["data"]["sum"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let (_, sum) =
        server.put("transit/hash", r, json!({ "input": b64("abc"), "algorithm": "sha3-256", "format": "base64" }));
    assert_eq!(B64.decode(sum["data"]["sum"].as_str().unwrap()).unwrap().len(), 32);

    let (status, random) = server.put("transit/random/48", r, json!({ "format": "hex" }));
    assert_eq!(status, 200, "{random}");
    assert_eq!(random["data"]["random_bytes"].as_str().unwrap().len(), 96);

    assert_eq!(server.put("transit/keys/mac", r, json!({ "type": "hmac", "key_size": 64 })).0, 200);
    let (_, mac) = server.put("transit/hmac/mac/sha2-512", r, json!({ "input": b64("payload") }));
    let mac = mac["data"]["hmac"].as_str().unwrap().to_owned();
    assert!(mac.starts_with("vault:v1:"), "{mac}");
    let verify = |input: &str| {
        server.put("transit/verify/mac/sha2-512", r, json!({ "input": b64(input), "hmac": mac })).1["data"]["valid"]
            .clone()
    };
    assert_eq!((verify("payload"), verify("tampered")), (json!(true), json!(false)));
    let (status, body) = server.put("transit/sign/mac", r, json!({ "input": b64("x") }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("key type hmac does not support signing")));
}

#[test]
fn keys_survive_a_restart_and_nothing_secret_is_stored_or_audited_in_clear() {
    let (mut server, root, keys) = ready_with_keys();
    let r = Some(root.as_str());
    assert_eq!(server.put("transit/keys/vault", r, json!({ "exportable": true })).0, 200);
    let secret = "card 4111-1111-1111-1111";
    let ciphertext = encrypt(&server, &root, "vault", secret);
    let (_, exported) = server.get("transit/export/encryption-key/vault/1", r);
    let key = B64.decode(exported["data"]["keys"]["1"].as_str().unwrap()).unwrap();
    let (_, opened) = decrypt(&server, &root, "vault", &ciphertext);
    assert_eq!(plaintext_of(&opened), secret);

    let log = std::fs::read(server.dir.path().join("audit.log")).unwrap();
    for needle in [b64(secret).into_bytes(), B64.encode(&key).into_bytes()] {
        assert!(!contains(&log, &needle), "the audit log holds {} in clear", String::from_utf8_lossy(&needle));
    }
    for (path, bytes) in read_tree(&server.dir.path().join("data")) {
        assert!(!contains(&bytes, &key), "{} holds the raw key", path.display());
        assert!(!contains(&bytes, B64.encode(&key).as_bytes()), "{} holds the key in base64", path.display());
    }

    server.restart();
    server.unseal(&keys);
    let (status, opened) = decrypt(&server, &root, "vault", &ciphertext);
    assert_eq!((status, plaintext_of(&opened)), (200, secret.to_owned()));
}

#[test]
fn signing_keys_sign_and_verify_singly_and_in_batches() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    assert_eq!(server.put("transit/keys/ec", r, json!({ "type": "ecdsa-p256" })).0, 200);
    let (_, info) = server.get("transit/keys/ec", r);
    let version = &info["data"]["keys"]["1"];
    assert_eq!(version["name"], "P-256");
    assert!(version["public_key"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"), "{info}");
    assert!(version["creation_time"].as_str().unwrap().contains('T'), "{info}");
    assert_eq!(info["data"]["supports_signing"], true);

    let (status, signed) = server.put("transit/sign/ec/sha2-384", r, json!({ "input": b64("invoice 17") }));
    assert_eq!(status, 200, "{signed}");
    let signature = signed["data"]["signature"].as_str().unwrap().to_owned();
    assert!(signature.starts_with("vault:v1:"), "{signature}");
    assert_eq!(signed["data"]["key_version"], 1);
    let verify = |path: &str, input: &str, signature: &str| {
        let (status, body) = server.put(path, r, json!({ "input": b64(input), "signature": signature }));
        assert_eq!(status, 200, "{body}");
        body["data"]["valid"].clone()
    };
    assert_eq!(verify("transit/verify/ec/sha2-384", "invoice 17", &signature), json!(true));
    assert_eq!(verify("transit/verify/ec/sha2-384", "invoice 18", &signature), json!(false));
    assert_eq!(verify("transit/verify/ec", "invoice 17", &signature), json!(false), "hashed with sha2-256 instead");
    let (status, body) = server.put("transit/verify/ec", r, json!({ "input": b64("x"), "signature": "vault:v1:!!" }));
    assert_eq!(status, 400, "a malformed signature is an error, not a false: {body}");

    let (status, batch) = server.put(
        "transit/sign/ec",
        r,
        json!({ "marshaling_algorithm": "jws", "batch_input": [
            { "input": b64("a"), "reference": "first" },
            { "input": "%%%", "reference": "broken" },
        ]}),
    );
    assert_eq!(status, 200, "{batch}");
    let results = batch["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results[0]["reference"], "first");
    assert!(results[1]["error"].as_str().unwrap().contains("base64"), "{batch}");
    let (_, checked) = server.put(
        "transit/verify/ec",
        r,
        json!({ "marshaling_algorithm": "jws", "batch_input": [
            { "input": b64("a"), "signature": results[0]["signature"] },
            { "input": b64("b"), "signature": results[0]["signature"] },
        ]}),
    );
    let valid: Vec<Value> =
        checked["data"]["batch_results"].as_array().unwrap().iter().map(|i| i["valid"].clone()).collect();
    assert_eq!(valid, [json!(true), json!(false)]);

    // A derived ed25519 key signs with the key of the context, and shows its public key.
    assert_eq!(server.put("transit/keys/ed", r, json!({ "type": "ed25519", "derived": true })).0, 200);
    let (status, body) = server.put("transit/sign/ed", r, json!({ "input": b64("m") }));
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().starts_with("missing 'context'"), "{body}");
    let (_, signed) = server.put("transit/sign/ed", r, json!({ "input": b64("m"), "context": b64("tenant") }));
    let (_, info) = server.get(&format!("transit/keys/ed?context={}", b64("tenant")), r);
    assert_eq!(signed["data"]["public_key"], info["data"]["keys"]["1"]["public_key"], "{signed} {info}");
    let (_, without) = server.get("transit/keys/ed", r);
    assert_eq!(without["data"]["keys"]["1"]["public_key"], "");

    // Public keys export without `exportable`; private ones do not.
    let (status, public) = server.get("transit/export/public-key/ec/1", r);
    assert_eq!(status, 200, "{public}");
    assert_eq!(public["data"]["keys"]["1"], info_public(&server, r));
    assert_eq!(server.get("transit/export/signing-key/ec", r).0, 400);

    let (status, body) = server.put("transit/sign/nothing", r, json!({ "input": b64("m") }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("signing key not found")));
    assert_eq!(server.put("transit/keys/sym", r, json!({})).0, 200);
    let (status, body) = server.put("transit/sign/sym", r, json!({ "input": b64("m") }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("key type aes256-gcm96 does not support signing")));
    let (status, body) = server.put("transit/encrypt/ec", r, json!({ "plaintext": b64("m") }));
    assert_eq!(
        (status, body["errors"][0].as_str()),
        (400, Some("message encryption not supported for key type ecdsa-p256"))
    );
}

fn info_public(server: &TestServer, token: Option<&str>) -> Value {
    server.get("transit/keys/ec", token).1["data"]["keys"]["1"]["public_key"].clone()
}

#[test]
fn rsa_keys_encrypt_with_oaep_and_sign_with_pss_or_pkcs1v15() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    for kind in ["rsa-3072", "rsa-4096"] {
        let (status, body) = server.put(&format!("transit/keys/{kind}"), r, json!({ "type": kind }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["keys"]["1"]["name"], kind);
        let ciphertext = encrypt(&server, &root, kind, "card 4111");
        assert_eq!(plaintext_of(&decrypt(&server, &root, kind, &ciphertext).1), "card 4111");
    }
    let (status, body) = server.put(
        "transit/decrypt/rsa-3072",
        r,
        json!({ "ciphertext": encrypt(&server, &root, "rsa-3072", "x"), "padding_scheme": "pkcs1v15" }),
    );
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("RUSTSEC-2023-0071"), "{body}");
    let (status, body) =
        server.put("transit/encrypt/rsa-3072", r, json!({ "plaintext": b64("x"), "associated_data": b64("row") }));
    assert_eq!(
        (status, body["errors"][0].as_str()),
        (400, Some("associated_data provided for non-AEAD cipher suite rsa-3072"))
    );

    // A prehashed digest signed with `none` (PKCS#1 v1.5 without DigestInfo), then verified.
    let digest = B64.encode([7u8; 32]);
    let body = json!({ "input": digest, "prehashed": true, "signature_algorithm": "pkcs1v15" });
    let (status, signed) = server.put("transit/sign/rsa-3072/none", r, body.clone());
    assert_eq!(status, 200, "{signed}");
    let mut check = body.clone();
    check["signature"] = signed["data"]["signature"].clone();
    assert_eq!(server.put("transit/verify/rsa-3072/none", r, check).1["data"]["valid"], true);
    // `none` without prehashed input, or with PSS, is refused.
    let (status, _) = server.put("transit/sign/rsa-3072/none", r, json!({ "input": digest }));
    assert_eq!(status, 400);
}
