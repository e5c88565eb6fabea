//! End to end: `sys/generate-root` — start with a generated or a given OTP, give unseal shares
//! with the attempt's nonce, decode the encoded token with the CLI (Vault's XOR and unpadded
//! base64), and use the new root token; wrong nonces, OTPs and shares are refused.

use arcanum_tests::TestServer;
use serde_json::{json, Value};

fn root_generation(server: &TestServer, body: Value) -> Value {
    let (status, started) = server.put("sys/generate-root/attempt", None, body);
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["started"], true);
    started
}

#[test]
fn a_new_root_token_comes_from_the_shares_and_decodes_with_the_otp() {
    let server = TestServer::start();
    let init = server.init(3, 2);
    server.unseal(&init.keys);

    let (_, idle) = server.get("sys/generate-root/attempt", None);
    assert_eq!(
        (idle["started"].clone(), idle["required"].clone(), idle["otp_length"].clone()),
        (json!(false), json!(2), json!(28))
    );
    let started = root_generation(&server, json!({}));
    let otp = started["otp"].as_str().unwrap().to_owned();
    assert_eq!(otp.len(), 28, "{started}");
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    // The OTP is shown once.
    assert_eq!(server.get("sys/generate-root/attempt", None).1["otp"], "");
    let (status, body) = server.put("sys/generate-root/attempt", None, json!({}));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("root generation already in progress")));

    let (status, body) = server.put("sys/generate-root/update", None, json!({ "key": init.keys[0], "nonce": "nope" }));
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().starts_with("incorrect nonce supplied"), "{body}");
    let (_, progress) = server.put("sys/generate-root/update", None, json!({ "key": init.keys[0], "nonce": nonce }));
    assert_eq!((progress["progress"].clone(), progress["complete"].clone()), (json!(1), json!(false)));
    let (status, done) = server.put("sys/generate-root/update", None, json!({ "key": init.keys[2], "nonce": nonce }));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["complete"], true);
    let encoded = done["encoded_token"].as_str().unwrap().to_owned();
    assert_eq!(done["encoded_root_token"], json!(encoded));
    assert!(!encoded.ends_with('='), "Vault's encoding is unpadded: {encoded}");

    let (code, token, stderr) =
        server.cli(&["operator", "generate-root", &format!("-decode={encoded}"), &format!("-otp={otp}")], None);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("hvs.") && token != init.root_token, "{token}");
    // The server decodes it the same way (`sys/decode-token`, Vault 1.10+).
    let (status, decoded) =
        server.put("sys/decode-token", Some(&init.root_token), json!({ "encoded_token": encoded, "otp": otp }));
    assert_eq!((status, decoded["data"]["token"].as_str()), (200, Some(token.as_str())), "{decoded}");
    let (status, refused) =
        server.put("sys/decode-token", Some(&init.root_token), json!({ "encoded_token": encoded, "otp": "short" }));
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = server.put("sys/decode-token", Some(&init.root_token), json!({ "otp": otp }));
    assert_eq!((status, refused["errors"][0].as_str()), (400, Some("missing encoded_token")));
    let (status, me) = server.get("auth/token/lookup-self", Some(&token));
    assert_eq!((status, me["data"]["policies"].clone()), (200, json!(["root"])));

    // A given OTP must have the token's length; wrong shares give no token.
    let (status, body) = server.put("sys/generate-root/attempt", None, json!({ "otp": "short" }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("OTP string has incorrect length")));
    let started = root_generation(&server, json!({ "otp": "A".repeat(28) }));
    assert_eq!(started["otp"], "", "a given OTP is not echoed");
    let nonce = started["nonce"].as_str().unwrap();
    let other = TestServer::start();
    let foreign = other.init(2, 2).keys;
    server.put("sys/generate-root/update", None, json!({ "key": foreign[0], "nonce": nonce }));
    let (status, body) = server.put("sys/generate-root/update", None, json!({ "key": foreign[1], "nonce": nonce }));
    assert_eq!(status, 400, "foreign shares made a root token: {body}");
    assert_eq!(server.request("DELETE", "sys/generate-root/attempt", None, None).0, 204);
    assert_eq!(server.get("sys/generate-root/attempt", None).1["started"], false);
}
