//! End to end: userpass login, and that a failed login looks the same whether or not the
//! user exists (same message, same order of time).

use std::time::Instant;

use arcanum_tests::TestServer;
use serde_json::json;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[test]
fn failed_logins_do_not_reveal_whether_the_user_exists() {
    // Seven failures for alice would lock her out (tested in lockout.rs); timing is what this
    // test compares.
    let server = TestServer::start_with(|dir| {
        arcanum_tests::sled_config(dir, "", "user_lockout \"userpass\" {\n  disable_lockout = true\n}")
    });
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = Some(init.root_token.as_str());
    assert_eq!(server.put("sys/auth/userpass", root, json!({ "type": "userpass" })).0, 204);
    let (status, body) = server.put(
        "auth/userpass/users/Alice",
        root,
        json!({ "password": "correct horse", "token_policies": "reader" }),
    );
    assert_eq!(status, 204, "{body}");
    // Names are case-insensitive; the password hash never comes back.
    let (status, user) = server.get("auth/userpass/users/alice", root);
    assert_eq!(status, 200);
    assert_eq!(user["data"]["token_policies"], json!(["reader"]));
    assert!(!user.to_string().contains("argon2"), "{user}");

    let (status, login) = server.put("auth/userpass/login/ALICE", None, json!({ "password": "correct horse" }));
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["auth"]["policies"], json!(["default", "reader"]));
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let (_, me) = server.get("auth/token/lookup-self", Some(&token));
    assert_eq!(me["data"]["path"], json!("auth/userpass/login/alice"));
    assert_eq!(me["data"]["meta"]["username"], json!("alice"));

    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for round in 0..7 {
        for (user, samples) in [("alice", &mut known), (format!("nobody{round}").as_str(), &mut unknown)] {
            let started = Instant::now();
            let (status, body) =
                server.put(&format!("auth/userpass/login/{user}"), None, json!({ "password": "wrong" }));
            samples.push(started.elapsed().as_secs_f64());
            assert_eq!(status, 400, "{user}: {body}");
            assert_eq!(body["errors"], json!(["invalid username or password"]), "{user}");
        }
    }
    let ratio = median(unknown) / median(known);
    // Without the dummy hash an unknown user answers ~100x faster; allow for noise, not for that.
    assert!((0.5..2.0).contains(&ratio), "unknown/known login time ratio {ratio:.2}");

    // A password change takes effect; the old one stops working.
    assert_eq!(server.put("auth/userpass/users/alice/password", root, json!({ "password": "new horse" })).0, 204);
    assert_eq!(server.put("auth/userpass/login/alice", None, json!({ "password": "correct horse" })).0, 400);
    assert_eq!(server.put("auth/userpass/login/alice", None, json!({ "password": "new horse" })).0, 200);
}
