//! Vault's user lockout, end to end: repeated failed logins lock a userpass user or an AppRole
//! role ID (the right credentials are refused too), `sys/locked-users` lists the lock and
//! unlocks it, a successful login clears the count, and a lock outlives a restart and expires.

use std::time::{Duration, Instant};

use arcanum_tests::{sled_config, TestServer};
use serde_json::{json, Value};

fn server_with(lockout: &str) -> (TestServer, String, Vec<String>) {
    let server = TestServer::start_with(|dir| sled_config(dir, "", lockout));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    (server, init.root_token.clone(), init.keys)
}

fn userpass(server: &TestServer, root: &str) -> String {
    assert_eq!(server.put("sys/auth/userpass", Some(root), json!({"type": "userpass"})).0, 204);
    let (status, body) = server.put("auth/userpass/users/alice", Some(root), json!({"password": "correct horse"}));
    assert_eq!(status, 204, "{body}");
    let (_, mounts) = server.get("sys/auth", Some(root));
    mounts["data"]["userpass/"]["accessor"].as_str().expect("accessor").to_owned()
}

fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    server.put(&format!("auth/userpass/login/{user}"), None, json!({"password": password}))
}

#[test]
fn failed_logins_lock_a_user_until_unlocked_and_the_lock_outlives_a_restart() {
    let lockout = "user_lockout \"all\" {\n  lockout_threshold = 3\n  lockout_duration = \"1h\"\n}";
    let (mut server, root, keys) = server_with(lockout);
    let accessor = userpass(&server, &root);

    // Failures interrupted by a success never add up to the threshold.
    for _ in 0..2 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 200);
    for _ in 0..2 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 200, "the success cleared the count");

    // Three in a row: locked; the right password is refused too, under any spelling of the name.
    for _ in 0..3 {
        let (status, body) = login(&server, "alice", "guess");
        assert_eq!(status, 400, "{body}");
    }
    for name in ["alice", "ALICE", "%20Alice"] {
        let (status, body) = login(&server, name, "correct horse");
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(body["errors"][0], json!("permission denied"), "{body}");
    }
    let (status, body) = server.get("sys/locked-users", Some(&root));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["total"], json!(1), "{body}");
    let locked = &body["data"]["by_namespace"][0]["mount_accessors"][0];
    assert_eq!(locked["mount_accessor"], json!(accessor), "{body}");
    assert_eq!(locked["alias_identifiers"], json!(["alice"]), "{body}");

    // The lock is stored: a restart does not lift it.
    server.restart();
    server.unseal(&keys);
    assert_eq!(login(&server, "alice", "correct horse").0, 403, "still locked after a restart");

    let (status, body) = server.put(&format!("sys/locked-users/{accessor}/unlock/alice"), Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    assert_eq!(login(&server, "alice", "correct horse").0, 200);
    let (_, body) = server.get("sys/locked-users", Some(&root));
    assert_eq!(body["data"]["total"], json!(0), "{body}");
}

#[test]
fn an_approle_role_id_locks_and_a_lock_expires_after_its_duration() {
    let lockout = "user_lockout \"approle\" {\n  lockout_threshold = 2\n  lockout_duration = \"2s\"\n}";
    let (server, root, _) = server_with(lockout);
    assert_eq!(server.put("sys/auth/approle", Some(&root), json!({"type": "approle"})).0, 204);
    assert_eq!(server.put("auth/approle/role/web", Some(&root), json!({"token_policies": "default"})).0, 204);
    let (_, body) = server.get("auth/approle/role/web/role-id", Some(&root));
    let role_id = body["data"]["role_id"].as_str().expect("role id").to_owned();
    let (_, body) = server.put("auth/approle/role/web/secret-id", Some(&root), json!({}));
    let secret_id = body["data"]["secret_id"].as_str().expect("secret id").to_owned();
    let approle_login =
        |secret: &str| server.put("auth/approle/login", None, json!({"role_id": role_id, "secret_id": secret}));

    for _ in 0..2 {
        assert_eq!(approle_login("not-the-secret").0, 400);
    }
    let (status, body) = approle_login(&secret_id);
    assert_eq!(status, 403, "locked: {body}");
    // Userpass is not covered by the approle stanza: its defaults (5 failures) apply there.
    let accessor = userpass(&server, &root);
    for _ in 0..4 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 200, "4 failures are under the default threshold");
    let (_, body) = server.get(&format!("sys/locked-users?mount_accessor={accessor}"), Some(&root));
    assert_eq!(body["data"]["total"], json!(0), "{body}");

    // The lock lasts its duration (2 s), then logins work again.
    let locked_at = Instant::now();
    loop {
        let (status, body) = approle_login(&secret_id);
        if status == 200 {
            break;
        }
        assert_eq!(status, 403, "{body}");
        assert!(locked_at.elapsed() < Duration::from_secs(10), "the lock never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(locked_at.elapsed() >= Duration::from_millis(500), "the lock lasted {:?}", locked_at.elapsed());
}

#[test]
fn disable_lockout_turns_it_off_for_a_method() {
    let lockout = "user_lockout \"userpass\" {\n  disable_lockout = true\n}";
    let (server, root, _) = server_with(lockout);
    userpass(&server, &root);
    for _ in 0..8 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 200);
}

#[test]
fn a_mounts_user_lockout_config_tune_overrides_the_server_settings() {
    let (server, root, _) = server_with("");
    userpass(&server, &root);
    let tune = json!({"user_lockout_config": {"lockout_threshold": "2", "lockout_duration": "1h", "lockout_counter_reset": 600}});
    let (status, body) = server.put("sys/auth/userpass/tune", Some(&root), tune);
    assert_eq!(status, 204, "{body}");
    let (_, read) = server.get("sys/auth/userpass/tune", Some(&root));
    assert_eq!(read["data"]["user_lockout_threshold"], json!(2), "{read}");
    assert_eq!(read["data"]["user_lockout_duration"], json!(3600), "{read}");
    assert_eq!(read["data"]["user_lockout_counter_reset_duration"], json!(600), "{read}");
    for _ in 0..2 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 403, "two failures lock under the tuned threshold");

    // Turned off for the mount: failures never lock.
    let (_, mounts) = server.get("sys/auth", Some(&root));
    let accessor = mounts["data"]["userpass/"]["accessor"].as_str().expect("accessor").to_owned();
    assert_eq!(server.put(&format!("sys/locked-users/{accessor}/unlock/alice"), Some(&root), json!({})).0, 204);
    let off = json!({"user_lockout_config": {"lockout_disable": true}});
    assert_eq!(server.put("sys/auth/userpass/tune", Some(&root), off).0, 204);
    for _ in 0..4 {
        assert_eq!(login(&server, "alice", "wrong").0, 400);
    }
    assert_eq!(login(&server, "alice", "correct horse").0, 200);

    // Only auth methods with lockout take it; bad values change nothing.
    assert_eq!(server.put("sys/mounts/kv", Some(&root), json!({"type": "kv"})).0, 204);
    let tune = json!({"user_lockout_config": {"lockout_threshold": 3}});
    assert_eq!(server.put("sys/mounts/kv/tune", Some(&root), tune).0, 400);
    for bad in [json!({"lockout_threshold": 0}), json!({"lockout_duration": "soon"}), json!({"lockout_other": 1})] {
        let (status, body) = server.put("sys/auth/userpass/tune", Some(&root), json!({"user_lockout_config": bad}));
        assert_eq!(status, 400, "{body}");
    }
    let (_, read) = server.get("sys/auth/userpass/tune", Some(&root));
    assert_eq!(read["data"]["user_lockout_threshold"], json!(2), "{read}");
}
