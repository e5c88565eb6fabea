//! End to end: the client commands of the `arcanum` CLI (`kv`, `policy`, `token`, `secrets`,
//! `auth`, `login`, generic `read|write|list|delete`) against a real server.

// Wrapped in a module so `cargo nextest run -p arcanum-tests cli_commands` selects these tests by name.
mod cli_commands {
    use std::os::unix::fs::PermissionsExt as _;

    use arcanum_tests::TestServer;
    use serde_json::{json, Value};

    /// An initialised, unsealed server and its root token.
    fn unsealed_server() -> (TestServer, String) {
        let server = TestServer::start();
        let init = server.init(1, 1);
        server.unseal(&init.keys);
        (server, init.root_token)
    }

    /// Runs the CLI with `token`, asserts exit code `expected`, returns stdout.
    fn run(server: &TestServer, token: &str, args: &[&str], expected: i32) -> String {
        let (code, stdout, stderr) = server.cli(args, Some(token));
        assert_eq!(code, expected, "arcanum {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        stdout
    }

    /// Runs the CLI with `-format=json` appended and parses stdout.
    fn run_json(server: &TestServer, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("-format=json");
        let stdout = run(server, token, &args, 0);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("arcanum {args:?} printed invalid JSON ({err}): {stdout}"))
    }

    /// The value column of `key` in a Key/Value table.
    fn table_value(stdout: &str, key: &str) -> Option<String> {
        stdout.lines().find_map(|line| {
            let mut parts = line.splitn(2, "    ");
            (parts.next()?.trim_end() == key).then(|| parts.next().unwrap_or_default().trim().to_owned())
        })
    }

    #[test]
    fn kv_commands_detect_v1_and_v2_mounts() {
        let (server, root) = unsealed_server();
        let out = run(&server, &root, &["secrets", "enable", "-path=secret", "kv-v2"], 0);
        assert!(out.contains("Success! Enabled the kv-v2 secrets engine at: secret/"), "{out}");
        run(&server, &root, &["secrets", "enable", "-path=old", "-version=1", "-description=legacy", "kv"], 0);
        let mounts = run_json(&server, &root, &["secrets", "list"]);
        assert_eq!(mounts["secret/"]["options"]["version"], json!("2"));
        assert_eq!(mounts["old/"]["options"]["version"], json!("1"));
        assert_eq!(mounts["old/"]["description"], json!("legacy"));
        let table = run(&server, &root, &["secrets", "list"], 0);
        assert!(table.lines().any(|l| l.starts_with("old/") && l.contains("legacy")), "{table}");

        // v2: put, get (table and JSON), patch, versions.
        let out = run(&server, &root, &["kv", "put", "secret/app/db", "user=admin", "pass=one"], 0);
        assert!(out.contains("secret/data/app/db") && table_value(&out, "version").as_deref() == Some("1"), "{out}");
        let out = run(&server, &root, &["kv", "get", "secret/app/db"], 0);
        assert!(out.contains("== Secret Path ==") && out.contains("=== Data ==="), "{out}");
        assert_eq!(table_value(&out, "pass").as_deref(), Some("one"), "{out}");
        let got = run_json(&server, &root, &["kv", "get", "secret/app/db"]);
        assert_eq!(got["data"]["data"], json!({"user": "admin", "pass": "one"}));
        assert_eq!(got["data"]["metadata"]["version"], json!(1));
        let patched = run_json(&server, &root, &["kv", "patch", "-mount=secret", "app/db", "pass=two"]);
        assert_eq!(patched["data"]["version"], json!(2));
        let got = run_json(&server, &root, &["kv", "get", "-mount=secret", "app/db"]);
        assert_eq!(got["data"]["data"], json!({"user": "admin", "pass": "two"}), "patch merges");
        assert_eq!(run(&server, &root, &["kv", "get", "-version=1", "-field=pass", "secret/app/db"], 0).trim(), "one");
        // Check-and-set: a stale version is refused by the server (exit 1, Vault's error layout).
        let (code, _, stderr) = server.cli(&["kv", "put", "-cas=1", "secret/app/db", "pass=three"], Some(&root));
        assert_eq!(code, 1);
        assert!(stderr.contains("Code: 400") && stderr.contains("check-and-set"), "{stderr}");
        run(&server, &root, &["kv", "put", "-cas=2", "secret/app/db", "pass=three"], 0);

        // list uses metadata/ on v2.
        assert_eq!(run_json(&server, &root, &["kv", "list", "secret/app"]), json!(["db"]));
        assert_eq!(run_json(&server, &root, &["kv", "list", "secret"]), json!(["app/"]));

        // delete (latest), undelete, destroy, delete -versions.
        let out = run(&server, &root, &["kv", "delete", "secret/app/db"], 0);
        assert!(out.contains("secret/data/app/db"), "{out}");
        let deleted = run_json(&server, &root, &["kv", "get", "secret/app/db"]);
        assert!(deleted["data"]["data"].is_null(), "{deleted}");
        assert_ne!(deleted["data"]["metadata"]["deletion_time"], json!(""));
        run(&server, &root, &["kv", "undelete", "-versions=3", "secret/app/db"], 0);
        assert_eq!(run(&server, &root, &["kv", "get", "-field=pass", "secret/app/db"], 0).trim(), "three");
        run(&server, &root, &["kv", "destroy", "-versions=1", "secret/app/db"], 0);
        run(&server, &root, &["kv", "delete", "-versions=2", "secret/app/db"], 0);
        let meta = run_json(&server, &root, &["kv", "metadata", "get", "secret/app/db"]);
        assert_eq!(meta["data"]["current_version"], json!(3));
        assert_eq!(meta["data"]["versions"]["1"]["destroyed"], json!(true));
        assert_ne!(meta["data"]["versions"]["2"]["deletion_time"], json!(""));
        assert_eq!(meta["data"]["versions"]["3"]["deletion_time"], json!(""));
        let table = run(&server, &root, &["kv", "metadata", "get", "secret/app/db"], 0);
        assert!(table.contains("== Metadata Path ==") && table.contains("Version 3"), "{table}");
        // undelete/destroy without -versions is refused before any request.
        assert_eq!(server.cli(&["kv", "undelete", "secret/app/db"], Some(&root)).0, 1);

        // metadata put: max versions, cas_required, custom metadata.
        run(
            &server,
            &root,
            &[
                "kv",
                "metadata",
                "put",
                "-max-versions=5",
                "-cas-required=true",
                "-delete-version-after=1h",
                "-custom-metadata=owner=ops",
                "-custom-metadata=tier=1",
                "secret/app/db",
            ],
            0,
        );
        let meta = run_json(&server, &root, &["kv", "metadata", "get", "secret/app/db"]);
        assert_eq!(meta["data"]["max_versions"], json!(5));
        assert_eq!(meta["data"]["cas_required"], json!(true));
        assert_eq!(meta["data"]["custom_metadata"], json!({"owner": "ops", "tier": "1"}));
        let (code, _, stderr) = server.cli(&["kv", "put", "secret/app/db", "pass=four"], Some(&root));
        assert_eq!(code, 1, "cas_required refuses a write without -cas: {stderr}");
        run(&server, &root, &["kv", "metadata", "delete", "secret/app/db"], 0);
        let (code, _, stderr) = server.cli(&["kv", "get", "secret/app/db"], Some(&root));
        assert_eq!(code, 2, "nothing left: {stderr}");
        assert!(stderr.contains("No value found at secret/data/app/db"), "{stderr}");

        // v1: plain paths, arbitrary JSON from stdin, no versions.
        let out = run(&server, &root, &["kv", "put", "old/team/app", "k=v"], 0);
        assert!(out.contains("Success! Data written to: old/team/app"), "{out}");
        let (code, _, stderr) =
            server.cli_with(&["kv", "put", "old/team/json", "-"], &[("ARCANUM_TOKEN", &root)], Some(r#"{"n": 1}"#));
        assert_eq!(code, 0, "{stderr}");
        let got = run_json(&server, &root, &["kv", "get", "old/team/json"]);
        assert_eq!(got["data"], json!({"n": 1}));
        let out = run(&server, &root, &["kv", "get", "-mount=old", "team/app"], 0);
        assert_eq!(table_value(&out, "k").as_deref(), Some("v"), "{out}");
        assert!(!out.contains("Secret Path"), "v1 output has no v2 sections: {out}");
        assert_eq!(run_json(&server, &root, &["kv", "list", "old/team"]), json!(["app", "json"]));
        let (code, _, stderr) = server.cli(&["kv", "patch", "old/team/app", "k=w"], Some(&root));
        assert_eq!(code, 2);
        assert!(stderr.contains("must be version 2"), "{stderr}");
        for (command, message) in [
            (vec!["kv", "undelete", "-versions=1", "old/team/app"], "Undelete not supported on KV Version 1"),
            (vec!["kv", "destroy", "-versions=1", "old/team/app"], "Destroy not supported on KV Version 1"),
            (vec!["kv", "metadata", "get", "old/team/app"], "Metadata not supported on KV Version 1"),
            (
                vec!["kv", "metadata", "put", "-max-versions=2", "old/team/app"],
                "Metadata not supported on KV Version 1",
            ),
            (vec!["kv", "delete", "-versions=1", "old/team/app"], "only supported on KV version 2"),
        ] {
            let (code, _, stderr) = server.cli(&command, Some(&root));
            assert_eq!(code, 1, "{command:?}: {stderr}");
            assert!(stderr.contains(message), "{command:?}: {stderr}");
        }
        // The refused commands changed nothing.
        assert_eq!(run_json(&server, &root, &["kv", "get", "old/team/app"])["data"], json!({"k": "v"}));
        run(&server, &root, &["kv", "delete", "old/team/app"], 0);
        assert_eq!(server.cli(&["kv", "get", "old/team/app"], Some(&root)).0, 2);

        // tune and disable.
        run(&server, &root, &["secrets", "tune", "-default-lease-ttl=1h", "-max-lease-ttl=2h", "old"], 0);
        let tune = run_json(&server, &root, &["read", "sys/mounts/old/tune"]);
        assert_eq!(tune["data"]["default_lease_ttl"], json!(3600));
        assert_eq!(tune["data"]["max_lease_ttl"], json!(7200));
        let out = run(&server, &root, &["kv", "get", "old/team/json"], 0);
        assert_eq!(table_value(&out, "refresh_interval").as_deref(), Some("1h"), "{out}");
        run(&server, &root, &["secrets", "disable", "old"], 0);
        assert!(run_json(&server, &root, &["secrets", "list"]).get("old/").is_none());
    }

    #[test]
    fn policy_commands_and_fmt() {
        let (server, root) = unsealed_server();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dev.hcl");
        std::fs::write(&file, "path \"secret/data/dev/*\" {\n  capabilities = [\"read\"]\n}\n").unwrap();
        let out = run(&server, &root, &["policy", "write", "Dev", file.to_str().unwrap()], 0);
        assert!(out.contains("Success! Uploaded policy: dev"), "{out}");
        let (code, _, stderr) = server.cli_with(
            &["policy", "write", "ops", "-"],
            &[("ARCANUM_TOKEN", &root)],
            Some("path \"sys/mounts\" { capabilities = [\"read\"] }"),
        );
        assert_eq!(code, 0, "{stderr}");
        let out = run(&server, &root, &["policy", "read", "dev"], 0);
        assert!(out.contains("secret/data/dev/*"), "{out}");
        assert!(run_json(&server, &root, &["policy", "read", "ops"])["policy"]
            .as_str()
            .unwrap()
            .contains("sys/mounts"));
        let names = run_json(&server, &root, &["policy", "list"]);
        for name in ["default", "dev", "ops", "root"] {
            assert!(names.as_array().unwrap().contains(&json!(name)), "{names}");
        }
        assert!(run(&server, &root, &["policy", "list"], 0).lines().any(|l| l == "ops"));
        let out = run(&server, &root, &["policy", "delete", "ops"], 0);
        assert!(out.contains("Success! Deleted policy: ops"), "{out}");
        let (code, _, stderr) = server.cli(&["policy", "read", "ops"], Some(&root));
        assert_eq!(code, 2);
        assert!(stderr.contains("No policy named: ops"), "{stderr}");
        // A server-side refusal: exit 1 with Vault's error layout.
        let (code, _, stderr) = server.cli(&["policy", "delete", "default"], Some(&root));
        assert_eq!(code, 1);
        assert!(stderr.contains("Error making API request") && stderr.contains("Code: 400"), "{stderr}");

        // fmt rewrites a messy file in place...
        let messy = dir.path().join("messy.hcl");
        std::fs::write(&messy, "path   \"secret/*\"{\ncapabilities=[\"read\",\"list\"]\n      }\npath \"sys/*\" {capabilities = [\"deny\"]}\n")
            .unwrap();
        let out = run(&server, &root, &["policy", "fmt", messy.to_str().unwrap()], 0);
        assert!(out.contains("Success! Formatted policy"), "{out}");
        let formatted = std::fs::read_to_string(&messy).unwrap();
        assert_eq!(
            formatted,
            "path \"secret/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n\npath \"sys/*\" {\n  capabilities = [\"deny\"]\n}\n"
        );
        run(&server, &root, &["policy", "fmt", messy.to_str().unwrap()], 0);
        assert_eq!(std::fs::read_to_string(&messy).unwrap(), formatted, "fmt is idempotent");
        // ...and the result is still accepted by the server.
        run(&server, &root, &["policy", "write", "formatted", messy.to_str().unwrap()], 0);

        // ...but refuses a broken one, naming the line, and leaves it untouched.
        let broken = dir.path().join("broken.hcl");
        let broken_text = "path \"a\" {\n  capabilities = [\"read\"]\n\npath \"b\" {\n  capabilities = [\"list\"]\n";
        std::fs::write(&broken, broken_text).unwrap();
        let (code, stdout, stderr) = server.cli(&["policy", "fmt", broken.to_str().unwrap()], None);
        assert_eq!(code, 1, "{stdout}");
        assert!(stderr.contains("line "), "{stderr}");
        assert_eq!(std::fs::read_to_string(&broken).unwrap(), broken_text);
        // A file that is HCL but not a policy is refused too.
        let bad_capability = dir.path().join("bad.hcl");
        std::fs::write(&bad_capability, "path \"a\" {\n capabilities = [\"reed\"]\n}\n").unwrap();
        assert_eq!(server.cli(&["policy", "fmt", bad_capability.to_str().unwrap()], None).0, 1);
        assert_eq!(std::fs::read_to_string(&bad_capability).unwrap(), "path \"a\" {\n capabilities = [\"reed\"]\n}\n");
    }

    #[test]
    fn token_commands_create_lookup_capabilities_renew_revoke() {
        let (server, root) = unsealed_server();
        run(&server, &root, &["secrets", "enable", "-path=secret", "-version=2", "kv"], 0);
        let policy = dir_file(
            "path \"secret/data/app/*\" {\n  capabilities = [\"read\", \"update\"]\n}\n\
             path \"auth/token/create\" {\n  capabilities = [\"update\"]\n}\n",
        );
        run(&server, &root, &["policy", "write", "app", policy.1.to_str().unwrap()], 0);

        let created = run_json(
            &server,
            &root,
            &[
                "token",
                "create",
                "-policy=app",
                "-ttl=1h",
                "-display-name=ci",
                "-metadata=team=blue",
                "-metadata=env=dev",
            ],
        );
        let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
        let accessor = created["auth"]["accessor"].as_str().unwrap().to_owned();
        assert_eq!(created["auth"]["policies"], json!(["app", "default"]));
        assert_eq!(created["auth"]["lease_duration"], json!(3600));
        assert_eq!(created["auth"]["metadata"], json!({"team": "blue", "env": "dev"}));

        // lookup: by argument (as root), by accessor, and lookup-self with the token itself.
        let looked = run_json(&server, &root, &["token", "lookup", &token]);
        assert_eq!(looked["data"]["policies"], json!(["app", "default"]));
        assert_eq!(looked["data"]["display_name"], json!("token-ci"));
        assert!(looked["data"]["ttl"].as_i64().unwrap() > 3500);
        let by_accessor = run_json(&server, &root, &["token", "lookup", "-accessor", &accessor]);
        assert_eq!(by_accessor["data"]["accessor"], json!(accessor));
        let out = run(&server, &token, &["token", "lookup"], 0);
        assert_eq!(table_value(&out, "policies").as_deref(), Some("[app default]"), "{out}");
        assert_eq!(table_value(&out, "creation_ttl").as_deref(), Some("1h"), "{out}");

        // capabilities: another token's (as root), then our own.
        let out = run(&server, &root, &["token", "capabilities", &token, "secret/data/app/x"], 0);
        assert_eq!(out.trim(), "read, update");
        assert_eq!(
            run_json(&server, &token, &["token", "capabilities", "secret/data/app/x"]),
            json!(["read", "update"])
        );
        assert_eq!(run(&server, &token, &["token", "capabilities", "sys/mounts"], 0).trim(), "deny");

        // The policy really applies through the CLI.
        run(&server, &root, &["kv", "put", "secret/app/x", "v=1"], 0);
        run(&server, &token, &["kv", "get", "secret/app/x"], 0);
        let (code, _, stderr) = server.cli(&["kv", "put", "secret/other", "v=1"], Some(&token));
        assert_eq!(code, 1);
        assert!(stderr.contains("Code: 403") && stderr.contains("permission denied"), "{stderr}");

        // renew by argument and self.
        let renewed = run_json(&server, &root, &["token", "renew", "-increment=30m", &token]);
        assert_eq!(renewed["auth"]["lease_duration"], json!(1800));
        let out = run(&server, &token, &["token", "renew", "-increment=20m"], 0);
        assert_eq!(table_value(&out, "token_duration").as_deref(), Some("20m"), "{out}");

        // A child, an orphan with -renewable=false and a non-default-policy token.
        let child = run_json(&server, &token, &["token", "create", "-policy=app"]);
        let child = child["auth"]["client_token"].as_str().unwrap().to_owned();
        let orphan = run_json(
            &server,
            &root,
            &["token", "create", "-orphan", "-renewable=false", "-no-default-policy", "-policy=app"],
        );
        assert_eq!(orphan["auth"]["renewable"], json!(false));
        assert_eq!(orphan["auth"]["policies"], json!(["app"]));
        let orphan = orphan["auth"]["client_token"].as_str().unwrap().to_owned();
        assert_eq!(run_json(&server, &root, &["token", "lookup", &orphan])["data"]["orphan"], json!(true));
        assert_eq!(run(&server, &root, &["token", "create", "-field=token", "-ttl=5m"], 0).trim().len(), token.len());

        // revoke: the parent takes its child along; -self; -accessor.
        let out = run(&server, &root, &["token", "revoke", &token], 0);
        assert!(out.contains("Success! Revoked token"), "{out}");
        for gone in [&token, &child] {
            let (code, _, stderr) = server.cli(&["token", "lookup", gone], Some(&root));
            assert_eq!(code, 1, "{stderr}");
        }
        // Without the default policy the orphan may not even revoke itself; root revokes it.
        assert_eq!(server.cli(&["token", "revoke", "-self"], Some(&orphan)).0, 1);
        run(&server, &root, &["token", "revoke", "-mode=orphan", &orphan], 0);
        assert_eq!(server.cli(&["token", "lookup"], Some(&orphan)).0, 1);
        let selfish = run(&server, &root, &["token", "create", "-field=token", "-ttl=1h"], 0);
        let selfish = selfish.trim();
        run(&server, selfish, &["token", "revoke", "-self"], 0);
        assert_eq!(server.cli(&["token", "lookup"], Some(selfish)).0, 1);
        let third = run_json(&server, &root, &["token", "create", "-ttl=1h"]);
        let third_accessor = third["auth"]["accessor"].as_str().unwrap();
        run(&server, &root, &["token", "revoke", "-accessor", third_accessor], 0);
        assert_eq!(server.cli(&["token", "lookup", "-accessor", third_accessor], Some(&root)).0, 1);
        // Without a token or -self there is nothing to revoke.
        assert_eq!(server.cli(&["token", "revoke"], Some(&root)).0, 1);
        drop(policy);
    }

    /// A temporary file holding `text` (the directory lives as long as the returned guard).
    fn dir_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn userpass_login_stores_the_token_for_later_commands() {
        let (server, root) = unsealed_server();
        run(&server, &root, &["secrets", "enable", "-path=secret", "kv-v2"], 0);
        let policy =
            dir_file("path \"secret/data/alice/*\" {\n  capabilities = [\"create\", \"read\", \"update\"]\n}\n");
        run(&server, &root, &["policy", "write", "alice", policy.1.to_str().unwrap()], 0);
        let out = run(&server, &root, &["auth", "enable", "userpass"], 0);
        assert!(out.contains("Success! Enabled userpass auth method at: userpass/"), "{out}");
        run(&server, &root, &["auth", "enable", "-path=people", "-description=humans", "userpass"], 0);
        let methods = run_json(&server, &root, &["auth", "list"]);
        assert_eq!(methods["userpass/"]["type"], json!("userpass"));
        assert_eq!(methods["people/"]["description"], json!("humans"));
        assert!(methods.get("token/").is_some());
        let out =
            run(&server, &root, &["write", "auth/userpass/users/alice", "password=w0nderland", "policies=alice"], 0);
        assert!(out.contains("Success! Data written to: auth/userpass/users/alice"), "{out}");
        run(&server, &root, &["write", "auth/people/users/bob", "password=builder"], 0);

        let home = tempfile::tempdir().unwrap();
        let home_path = home.path().to_str().unwrap();
        let token_file = home.path().join(".arcanum-token");

        // A wrong password: exit 1 and nothing stored.
        let (code, _, stderr) = server.cli_with(
            &["login", "-method=userpass", "username=alice", "password=wrong"],
            &[("HOME", home_path)],
            None,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("Error making API request"), "{stderr}");
        assert!(!token_file.exists());

        let (code, stdout, stderr) = server.cli_with(
            &["login", "-method=userpass", "username=alice", "password=w0nderland"],
            &[("HOME", home_path)],
            None,
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("Success! You are now authenticated"), "{stdout}");
        let token = table_value(&stdout, "token").expect("token row");
        assert_eq!(table_value(&stdout, "token_meta_username").as_deref(), Some("alice"), "{stdout}");
        assert_eq!(table_value(&stdout, "policies").as_deref(), Some(r#"["alice" "default"]"#), "{stdout}");
        assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);

        // The next commands, without ARCANUM_TOKEN, use the stored token.
        let (code, stdout, stderr) =
            server.cli_with(&["token", "lookup", "-format=json"], &[("HOME", home_path)], None);
        assert_eq!(code, 0, "{stderr}");
        let looked: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(looked["data"]["id"], json!(token));
        assert_eq!(looked["data"]["meta"]["username"], json!("alice"));
        let (code, _, stderr) =
            server.cli_with(&["kv", "put", "secret/alice/diary", "entry=hello"], &[("HOME", home_path)], None);
        assert_eq!(code, 0, "{stderr}");
        let (code, stdout, _) =
            server.cli_with(&["kv", "get", "-field=entry", "secret/alice/diary"], &[("HOME", home_path)], None);
        assert_eq!((code, stdout.trim()), (0, "hello"));
        // The policy limits what the stored token may do.
        let (code, _, stderr) = server.cli_with(&["kv", "put", "secret/bob/x", "a=b"], &[("HOME", home_path)], None);
        assert_eq!(code, 1);
        assert!(stderr.contains("Code: 403"), "{stderr}");
        // Another HOME has no token at all.
        let (code, _, stderr) = server.cli(&["kv", "get", "secret/alice/diary"], None);
        assert_eq!(code, 1, "{stderr}");
        // ARCANUM_TOKEN wins over the stored token.
        let (code, stdout, _) = server.cli_with(
            &["token", "lookup", "-field=policies"],
            &[("HOME", home_path), ("ARCANUM_TOKEN", &root)],
            None,
        );
        assert_eq!((code, stdout.trim()), (0, "[root]"));

        // -path selects another mount; an existing loose file is tightened to 0600.
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, stdout, stderr) = server.cli_with(
            &["login", "-method=userpass", "-path=people", "-format=json", "username=bob", "password=builder"],
            &[("HOME", home_path)],
            None,
        );
        assert_eq!(code, 0, "{stderr}");
        let login: Value = serde_json::from_str(&stdout).unwrap();
        let bob = login["auth"]["client_token"].as_str().unwrap();
        assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), bob);
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);

        // Token login validates the token first: a bogus one is refused and not stored.
        let (code, _, _) = server.cli_with(&["login", "hvs.not-a-token"], &[("HOME", home_path)], None);
        assert_eq!(code, 1);
        assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), bob);
        let (code, stdout, stderr) = server.cli_with(&["login", "-method=token", &root], &[("HOME", home_path)], None);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(table_value(&stdout, "token_duration").as_deref(), Some("∞"), "{stdout}");
        assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), root);
        let (code, _, _) = server.cli_with(&["secrets", "list"], &[("HOME", home_path)], None);
        assert_eq!(code, 0, "the stored root token works");

        run(&server, &root, &["auth", "disable", "people"], 0);
        assert!(run_json(&server, &root, &["auth", "list"]).get("people/").is_none());
    }

    #[test]
    fn generic_read_write_list_delete() {
        let (server, root) = unsealed_server();
        run(&server, &root, &["secrets", "enable", "-path=kv", "kv"], 0);
        let value_file = dir_file("from a file\n");
        let value_arg = format!("cert=@{}", value_file.1.display());
        let out = run(&server, &root, &["write", "kv/app/one", "a=1", "tags=x", "tags=y", &value_arg], 0);
        assert!(out.contains("Success! Data written to: kv/app/one"), "{out}");
        let got = run_json(&server, &root, &["read", "kv/app/one"]);
        assert_eq!(got["data"], json!({"a": "1", "tags": ["x", "y"], "cert": "from a file\n"}));
        let out = run(&server, &root, &["read", "kv/app/one"], 0);
        assert_eq!(table_value(&out, "refresh_interval").as_deref(), Some("768h"), "{out}");
        assert_eq!(table_value(&out, "a").as_deref(), Some("1"), "{out}");
        assert_eq!(table_value(&out, "tags").as_deref(), Some("[x y]"), "{out}");
        assert_eq!(run(&server, &root, &["read", "-field=a", "kv/app/one"], 0), "1\n");

        // `-` merges a JSON object from stdin.
        let (code, _, stderr) = server.cli_with(
            &["write", "kv/app/two", "-", "extra=yes"],
            &[("ARCANUM_TOKEN", &root)],
            Some(r#"{"nested": {"n": 2}, "list": [1, 2]}"#),
        );
        assert_eq!(code, 0, "{stderr}");
        let got = run_json(&server, &root, &["read", "kv/app/two"]);
        assert_eq!(got["data"], json!({"nested": {"n": 2}, "list": [1, 2], "extra": "yes"}));

        assert_eq!(run_json(&server, &root, &["list", "kv/app"]), json!(["one", "two"]));
        let out = run(&server, &root, &["list", "kv/"], 0);
        assert_eq!(out.lines().collect::<Vec<_>>(), ["Keys", "----", "app/"]);

        // A write that returns data prints it (token create through the generic command).
        let created = run_json(&server, &root, &["write", "auth/token/create", "policies=default", "ttl=10m"]);
        assert_eq!(created["auth"]["lease_duration"], json!(600));

        let out = run(&server, &root, &["delete", "kv/app/one"], 0);
        assert!(out.contains("Success! Data deleted (if it existed) at: kv/app/one"), "{out}");
        let (code, _, stderr) = server.cli(&["read", "kv/app/one"], Some(&root));
        assert_eq!(code, 2);
        assert!(stderr.contains("No value found at kv/app/one"), "{stderr}");
        assert_eq!(run_json(&server, &root, &["list", "kv/app"]), json!(["two"]));
        run(&server, &root, &["delete", "kv/app/two"], 0);
        let (code, _, stderr) = server.cli(&["list", "kv/app"], Some(&root));
        assert_eq!(code, 2, "an empty folder: {stderr}");

        // Writing nothing needs -force; a bad data argument and a server error exit 1.
        let (code, _, stderr) = server.cli(&["write", "kv/app/three"], Some(&root));
        assert_eq!(code, 1);
        assert!(stderr.contains("Must supply data or use -force"), "{stderr}");
        assert_eq!(server.cli(&["write", "kv/app/three", "novalue"], Some(&root)).0, 1);
        let (code, _, stderr) = server.cli(&["read", "sys/mounts"], None);
        assert_eq!(code, 1);
        assert!(stderr.contains("Code: 403") && stderr.contains("URL: GET"), "{stderr}");
    }

    #[test]
    fn usage_errors_exit_2() {
        let (server, root) = unsealed_server();
        for args in [
            &["kv"][..],
            &["kv", "get"],
            &["kv", "put", "-cas=notanumber", "secret/x", "a=b"],
            &["token", "create", "-num-uses=lots"],
            &["token", "create", "-renewable=maybe"],
            &["token", "capabilities"],
            &["policy", "write", "only-a-name"],
            &["secrets", "enable"],
            &["login", "-no-such-flag"],
            &["read"],
            &["frobnicate"],
        ] {
            let (code, stdout, stderr) = server.cli(args, Some(&root));
            assert_eq!(code, 2, "arcanum {args:?}\nstdout: {stdout}\nstderr: {stderr}");
            assert!(!stderr.is_empty());
        }
    }
}
