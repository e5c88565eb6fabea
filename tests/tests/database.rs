//! End to end: the database secrets engine and the lease lifecycle against the real
//! PostgreSQL and MariaDB on this machine (addresses from `ARCANUM_TEST_PG_ADDR` and
//! `ARCANUM_TEST_MYSQL_ADDR`, defaulting to 127.0.0.1:5432 and 127.0.0.1:3306).

use std::time::{Duration, Instant};

use arcanum_tests::{pg, pg_addr, pg_as, pg_role_exists, TestServer};
use serde_json::{json, Value};

fn mysql_addr() -> String {
    std::env::var("ARCANUM_TEST_MYSQL_ADDR").unwrap_or_else(|_| "127.0.0.1:3306".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Runs SQL on MariaDB as `user`/`password`; returns the first column of each row.
fn mysql_as(user: &str, password: &str, sql: &str) -> Result<Vec<String>, String> {
    use mysql_async::prelude::Queryable as _;
    let addr = mysql_addr();
    let (host, port) = addr.split_once(':').expect("host:port");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_owned())
        .tcp_port(port.parse().expect("port"))
        .user(Some(user.to_owned()))
        .pass(Some(password.to_owned()));
    let sql = sql.to_owned();
    runtime().block_on(async move {
        let mut conn = mysql_async::Conn::new(opts).await.map_err(|err| err.to_string())?;
        let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(|err| err.to_string())?;
        let _ = conn.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|row| match row.as_ref(0) {
                Some(mysql_async::Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(mysql_async::Value::Int(i)) => i.to_string(),
                Some(mysql_async::Value::UInt(u)) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect())
    })
}

fn mysql(sql: &str) -> Vec<String> {
    mysql_as("root", "", sql).unwrap_or_else(|err| {
        panic!("MariaDB at {} is required for this test (root, empty password): {err}", mysql_addr())
    })
}

fn mysql_user_exists(name: &str) -> bool {
    mysql(&format!("SELECT count(*) FROM mysql.user WHERE user = '{name}'")) == ["1"]
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    format!("{prefix}{}{nanos:x}", std::process::id())
}

/// Polls `condition` until it holds or `deadline` passes.
fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready_with(extra: &str) -> (TestServer, String, arcanum_tests::Init) {
    let extra = extra.to_owned();
    let server = TestServer::start_with(move |dir| arcanum_tests::sled_config(dir, "", &extra));
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token.clone();
    let (status, body) = server.put("sys/mounts/database", Some(&root), json!({ "type": "database" }));
    assert_eq!(status, 204, "{body}");
    (server, root, init)
}

fn ready() -> (TestServer, String) {
    let (server, root, _) = ready_with("");
    (server, root)
}

const PG_PLUGIN: &str = "postgresql-database-plugin";
const MYSQL_PLUGIN: &str = "mysql-database-plugin";

fn pg_url(addr: &str) -> String {
    format!("postgresql://{{{{username}}}}:{{{{password}}}}@{addr}/test?sslmode=disable")
}

fn configure_pg(server: &TestServer, root: &str, name: &str) {
    let (status, body) = server.put(
        &format!("database/config/{name}"),
        Some(root),
        json!({
            "plugin_name": PG_PLUGIN,
            "connection_url": pg_url(&pg_addr()),
            "username": "postgres",
            "password": "unused-with-trust-auth",
            "allowed_roles": "*",
        }),
    );
    assert_eq!(status, 204, "configuring PostgreSQL: {body}");
}

fn configure_mysql(server: &TestServer, root: &str, name: &str, user: &str, password: &str) {
    let (status, body) = server.put(
        &format!("database/config/{name}"),
        Some(root),
        json!({
            "plugin_name": MYSQL_PLUGIN,
            "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({})/", mysql_addr()),
            "username": user,
            "password": password,
            "allowed_roles": ["*"],
        }),
    );
    assert_eq!(status, 204, "configuring MariaDB: {body}");
}

const PG_CREATE: &str = r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON arcanum_probe TO "{{name}}";"#;

fn pg_role(server: &TestServer, root: &str, role: &str, db: &str, ttl: &str, max_ttl: &str) {
    pg("CREATE TABLE IF NOT EXISTS arcanum_probe (v int)");
    let (status, body) = server.put(
        &format!("database/roles/{role}"),
        Some(root),
        json!({ "db_name": db, "creation_statements": [PG_CREATE], "default_ttl": ttl, "max_ttl": max_ttl }),
    );
    assert_eq!(status, 204, "{body}");
}

/// Reads creds; returns (lease_id, username, password, whole answer).
fn creds(server: &TestServer, token: &str, role: &str) -> (String, String, String, Value) {
    let (status, body) = server.get(&format!("database/creds/{role}"), Some(token));
    assert_eq!(status, 200, "creds for {role}: {body}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&body["lease_id"]), text(&body["data"]["username"]), text(&body["data"]["password"]), body)
}

#[test]
fn postgres_creds_work_until_revoked_and_the_role_is_then_gone() {
    let (server, root) = ready();
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "reader", "pg", "1h", "2h");
    let (lease_id, username, password, body) = creds(&server, &root, "reader");
    assert!(lease_id.starts_with("database/creds/reader/"), "{body}");
    assert_eq!(body["lease_duration"], 3600, "{body}");
    assert_eq!(body["renewable"], true);
    assert!(username.starts_with("v-root-reader-"), "Vault's default template: {username}");
    assert!(username.len() <= 63);
    assert_eq!(password.len(), 20);
    // The user can do what the creation statements granted, and nothing they did not.
    assert!(pg_as(&username, "SELECT count(*) FROM arcanum_probe").is_ok());
    let refused = pg_as(&username, "CREATE TABLE arcanum_not_allowed (v int)").unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");

    let (status, lookup) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!(status, 200, "{lookup}");
    assert_eq!(lookup["data"]["id"], lease_id.as_str());
    assert!(lookup["data"]["ttl"].as_i64().unwrap() > 3500);
    let (status, list) = server.request("LIST", "sys/leases/lookup/database/creds/reader/", Some(&root), None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"]["keys"], json!([lease_id.rsplit('/').next().unwrap()]));

    let (status, body) = server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!(status, 204, "{body}");
    assert!(!pg_role_exists(&username), "{username} still in pg_roles after revoke");
    assert!(pg_as(&username, "SELECT 1").is_err(), "the revoked user can still log in");
    let (status, body) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("invalid lease")));
    // The password never appears in a config read.
    let (_, config) = server.get("database/config/pg", Some(&root));
    assert!(!config.to_string().contains("unused-with-trust-auth"), "{config}");
    assert_eq!(config["data"]["plugin_name"], PG_PLUGIN);
    // Disabling the mount revokes what it issued before its data goes.
    let (_, username, _, _) = creds(&server, &root, "reader");
    let (status, body) = server.request("DELETE", "sys/mounts/database", Some(&root), None);
    assert_eq!(status, 204, "{body}");
    assert!(!pg_role_exists(&username), "disabling the mount must revoke its leases");
}

#[test]
fn mysql_creds_log_in_with_their_password_until_revoked() {
    let (server, root) = ready();
    configure_mysql(&server, &root, "maria", "root", "");
    let (status, body) = server.put(
        "database/roles/app",
        Some(&root),
        json!({
            "db_name": "maria",
            "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON test.* TO '{{name}}'@'%';",
            "default_ttl": 600,
        }),
    );
    assert_eq!(status, 204, "{body}");
    let (lease_id, username, password, _) = creds(&server, &root, "app");
    assert!(username.len() <= 32 && username.starts_with("v-root-app-"), "{username}");
    assert_eq!(mysql_as(&username, &password, "SELECT CURRENT_USER()").unwrap().len(), 1);
    assert!(mysql_as(&username, "wrong-password", "SELECT 1").is_err(), "a wrong password must not work");
    let (status, body) = server.put(&format!("sys/leases/revoke/{lease_id}"), Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    assert!(!mysql_user_exists(&username));
    assert!(mysql_as(&username, &password, "SELECT 1").is_err());
}

#[test]
fn expired_leases_are_revoked_by_the_reaper_without_any_call() {
    let (server, root) = ready();
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "short", "pg", "2s", "10s");
    let (lease_id, username, _, body) = creds(&server, &root, "short");
    assert_eq!(body["lease_duration"], 2);
    assert!(pg_role_exists(&username));
    eventually("the reaper drops the expired user", Duration::from_secs(15), || !pg_role_exists(&username));
    let (status, _) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!(status, 400, "the lease is gone with the user");
    // The reaper runs on a thread of its own that yields the CPU to API requests.
    assert_eq!(thread_niceness(server.pid(), "arcanum-reaper"), Some(10));
}

/// The niceness of the thread called `name` in process `pid`, if there is one.
fn thread_niceness(pid: u32, name: &str) -> Option<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc").flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised command name; niceness is the 19th field of the whole line.
        let after_name = stat.rsplit_once(')')?.1;
        after_name.split_whitespace().nth(16)?.parse().ok()
    })
}

#[test]
fn leases_that_expired_while_the_server_was_down_are_revoked_after_unseal() {
    let (mut server, root, init) = ready_with("");
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "brief", "pg", "3s", "1h");
    let users: Vec<String> = (0..3).map(|_| creds(&server, &root, "brief").1).collect();
    let issued = Instant::now();
    server.stop();
    // Down past every expiry; nothing can revoke them meanwhile.
    eventually("the leases to expire while the server is down", Duration::from_secs(10), || {
        issued.elapsed() > Duration::from_secs(4)
    });
    assert!(users.iter().all(|user| pg_role_exists(user)), "nothing revokes while the server is down");
    server.launch();
    server.unseal(&init.keys);
    eventually("the catch-up after unseal", Duration::from_secs(10), || users.iter().all(|user| !pg_role_exists(user)));
    // A lease also survives seal and unseal, and can be renewed and revoked afterwards.
    pg_role(&server, &root, "lasting", "pg", "1h", "2h");
    let (lease, user, _, _) = creds(&server, &root, "lasting");
    let (status, body) = server.put("sys/seal", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": lease })).0, 503);
    server.unseal(&init.keys);
    let (status, body) = server.put("sys/leases/renew", Some(&root), json!({ "lease_id": lease }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": lease })).0, 204);
    assert!(!pg_role_exists(&user));
}

/// A user created in the database whose lease was never stored (the server killed while the
/// creation statements were still running) is revoked after the restart, through the intent
/// recorded before the user was made; users with leases are left alone.
#[test]
fn a_user_created_without_a_stored_lease_is_revoked_after_a_restart() {
    let orphans = || mysql("SELECT user FROM mysql.user WHERE user LIKE 'v-root-orphaned-%'");
    // Left by an earlier run that failed: not this run's.
    for user in orphans() {
        mysql(&format!("DROP USER IF EXISTS '{user}'@'%'"));
    }
    let (mut server, root, init) = ready_with("");
    configure_mysql(&server, &root, "maria", "root", "");
    for (role, creation) in [
        ("kept", "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';"),
        // MariaDB commits CREATE USER at once; the sleep keeps the request (and its lease) open.
        ("orphaned", "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; DO SLEEP(20);"),
    ] {
        let body = json!({ "db_name": "maria", "creation_statements": creation, "default_ttl": 600 });
        let (status, body) = server.put(&format!("database/roles/{role}"), Some(&root), body);
        assert_eq!(status, 204, "{body}");
    }
    let (_, kept, _, _) = creds(&server, &root, "kept");
    let url = format!("{}/v1/database/creds/orphaned", server.addr);
    let token = root.clone();
    let request = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        client.get(url).header("X-Vault-Token", token).send().map(|r| r.status().as_u16())
    });
    eventually("the user to exist while its creation still runs", Duration::from_secs(15), || orphans().len() == 1);
    server.kill();
    assert!(request.join().unwrap().is_err(), "the request was answered although the server was killed");
    let orphan = orphans().remove(0);
    server.launch();
    server.unseal(&init.keys);
    eventually("the server to revoke the user no lease knows", Duration::from_secs(30), || !mysql_user_exists(&orphan));
    assert!(mysql_user_exists(&kept), "a user with a lease was revoked with the orphan");
    let (status, body) = server.request("LIST", "sys/leases/lookup/database/creds/", Some(&root), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["keys"], json!(["kept/"]), "the killed request left no lease: {body}");
    let (status, body) = server.put("sys/leases/revoke-prefix/database/creds/kept", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    assert!(!mysql_user_exists(&kept), "the leased user goes with its lease");
}

#[test]
fn a_lease_count_quota_on_a_creds_path_holds_across_a_restart() {
    let (mut server, root, init) = ready_with("");
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "capped", "pg", "1h", "2h");
    let (status, body) = server.put(
        "sys/quotas/lease-count/capped",
        Some(&root),
        json!({ "path": "database/creds/capped", "max_leases": 2 }),
    );
    assert_eq!(status, 204, "{body}");
    let leases: Vec<String> = (0..2).map(|_| creds(&server, &root, "capped").0).collect();
    let (status, body) = server.get("database/creds/capped", Some(&root));
    assert_eq!(status, 429, "{body}");
    // The count is rebuilt from the stored leases (ids are the request path plus a suffix).
    server.restart();
    server.unseal(&init.keys);
    let (_, quota) = server.get("sys/quotas/lease-count/capped", Some(&root));
    assert_eq!(quota["data"]["counter"], json!(2), "{quota}");
    assert_eq!(server.get("database/creds/capped", Some(&root)).0, 429);
    // Revoking a lease frees its slot.
    assert_eq!(server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": leases[0] })).0, 204);
    let (lease, _, _, _) = creds(&server, &root, "capped");
    assert!(lease.starts_with("database/creds/capped/"), "{lease}");
    let (status, body) = server.put("sys/leases/revoke-prefix/database/creds/capped", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
}

#[test]
fn an_unreachable_database_keeps_leases_pending_and_visible_until_it_is_back() {
    let (server, root, _) = ready_with("lease_revocation_max_backoff = \"1s\"\nlease_revocation_max_attempts = 2\n");
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "flaky", "pg", "2s", "1h");
    let leases: Vec<(String, String)> = (0..4)
        .map(|_| {
            let (lease, user, _, _) = creds(&server, &root, "flaky");
            (lease, user)
        })
        .collect();
    let metrics = server.metrics_text(Some(&root));
    assert_eq!(arcanum_tests::metric(&metrics, "arcanum_expire_leases{mount=\"database/\"}"), Some(4.0), "{metrics}");
    assert_eq!(arcanum_tests::metric(&metrics, "arcanum_expire_revocations_pending"), Some(0.0));
    // The database goes away: the config now points at a closed port.
    let (status, body) = server.put(
        "database/config/pg",
        Some(&root),
        json!({ "connection_url": pg_url("127.0.0.1:1"), "verify_connection": false }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("database/reset/pg", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    // The failure is visible on the lease meanwhile.
    let (first_lease, _) = &leases[0];
    eventually("a failed revocation shows on the lease", Duration::from_secs(15), || {
        let (status, body) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": first_lease }));
        status == 200 && body["data"]["revocation_pending"] == true
    });
    let (_, body) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": first_lease }));
    let error = body["data"]["revocation_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty() && body["data"]["revocation_attempts"].as_u64() >= Some(1), "{body}");
    // Past the attempt limit a lease is flagged irrevocable for an operator — and still retried.
    eventually("a lease flagged irrevocable", Duration::from_secs(15), || {
        let (status, body) = server.get("sys/leases?type=irrevocable", Some(&root));
        status == 200 && body["data"]["lease_count"].as_u64() >= Some(1)
    });
    let (_, listed) = server.get("sys/leases?type=irrevocable", Some(&root));
    assert!(listed["data"]["leases"][0]["error"].as_str().unwrap_or_default().contains("revoke"), "{listed}");
    let (_, count) = server.get("sys/leases/count?type=irrevocable", Some(&root));
    assert!(count["data"]["lease_count"].as_u64() >= Some(1), "{count}");
    assert!(leases.iter().all(|(_, user)| pg_role_exists(user)), "nothing was revoked while unreachable");
    // ... and in the metrics.
    let metrics = server.metrics_text(Some(&root));
    assert!(arcanum_tests::metric(&metrics, "arcanum_expire_revocation_failures_total") >= Some(2.0), "{metrics}");
    assert!(arcanum_tests::metric(&metrics, "arcanum_expire_revocations_irrevocable") >= Some(1.0), "{metrics}");
    // Back: every lease is eventually revoked, none lost.
    let (status, body) = server.put(
        "database/config/pg",
        Some(&root),
        json!({ "connection_url": pg_url(&pg_addr()), "verify_connection": true }),
    );
    assert_eq!(status, 204, "{body}");
    eventually("every pending lease is revoked once the database is back", Duration::from_secs(20), || {
        leases.iter().all(|(_, user)| !pg_role_exists(user))
    });
    for (lease, _) in &leases {
        let (status, body) = server.put("sys/leases/lookup", Some(&root), json!({ "lease_id": lease }));
        assert_eq!(status, 400, "{lease} should be gone: {body}");
    }
    let metrics = server.metrics_text(Some(&root));
    assert_eq!(arcanum_tests::metric(&metrics, "arcanum_expire_revocations_pending"), Some(0.0), "{metrics}");
    assert_eq!(arcanum_tests::metric(&metrics, "arcanum_expire_revocations_irrevocable"), Some(0.0), "{metrics}");
}

#[test]
fn revoking_a_token_revokes_its_leases_and_revoke_prefix_is_exact() {
    let (server, root) = ready();
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "ro", "pg", "1h", "2h");
    pg_role(&server, &root, "rox", "pg", "1h", "2h");
    let (status, body) = server.put(
        "sys/policies/acl/creds",
        Some(&root),
        json!({ "policy": "path \"database/creds/*\" { capabilities = [\"read\"] }" }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, token) = server.put("auth/token/create", Some(&root), json!({ "policies": ["creds"] }));
    assert_eq!(status, 200, "{token}");
    let app = token["auth"]["client_token"].as_str().unwrap().to_owned();
    let (_, app_user, _, _) = creds(&server, &app, "ro");
    assert!(app_user.starts_with("v-token-ro-"), "the token's display name goes into the username: {app_user}");
    let (status, body) = server.put("auth/token/revoke", Some(&root), json!({ "token": app }));
    assert_eq!(status, 204, "{body}");
    eventually("the token's lease goes with it", Duration::from_secs(5), || !pg_role_exists(&app_user));

    let ro: Vec<String> = (0..2).map(|_| creds(&server, &root, "ro").1).collect();
    let rox = creds(&server, &root, "rox").1;
    let (status, body) = server.put("sys/leases/revoke-prefix/database/creds/ro", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    assert!(ro.iter().all(|user| !pg_role_exists(user)), "every lease under the prefix is revoked");
    assert!(pg_role_exists(&rox), "creds/rox is not under creds/ro/");
    let (status, _) = server.request("LIST", "sys/leases/lookup/database/creds/rox/", Some(&root), None);
    assert_eq!(status, 200);
    // revoke-prefix needs sudo: a token with plain update is refused.
    let (_, limited) = server.put(
        "sys/policies/acl/leases",
        Some(&root),
        json!({ "policy": "path \"sys/leases/*\" { capabilities = [\"update\"] }" }),
    );
    assert!(limited.is_null() || limited.get("errors").is_none(), "{limited}");
    let (_, token) = server.put("auth/token/create", Some(&root), json!({ "policies": ["leases"] }));
    let leases_token = token["auth"]["client_token"].as_str().unwrap();
    let (status, _) = server.put("sys/leases/revoke-prefix/database/", Some(leases_token), json!({}));
    assert_eq!(status, 403);
    assert!(pg_role_exists(&rox));
    let (status, _) = server.put("sys/leases/revoke-force/database/", Some(&root), json!({}));
    assert_eq!(status, 204);
    assert!(!pg_role_exists(&rox), "revoke-force still asks the backend first");
}

#[test]
fn renewals_extend_up_to_max_ttl_and_run_the_renew_statements() {
    let (server, root) = ready();
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "renewable", "pg", "60s", "120s");
    let (lease_id, username, _, _) = creds(&server, &root, "renewable");
    let (status, body) =
        server.put("sys/leases/renew", Some(&root), json!({ "lease_id": lease_id, "increment": "90s" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lease_id"], lease_id.as_str());
    assert_eq!(body["renewable"], true);
    let duration = body["lease_duration"].as_u64().unwrap();
    assert!((85..=90).contains(&duration), "{body}");
    // Past the max: capped, with Vault's warning.
    let (status, body) =
        server.put("sys/leases/renew", Some(&root), json!({ "lease_id": lease_id, "increment": 3600 }));
    assert_eq!(status, 200, "{body}");
    assert!(body["lease_duration"].as_u64().unwrap() <= 120, "{body}");
    assert!(body["warnings"][0].as_str().unwrap_or_default().contains("capped"), "{body}");
    // The renew statement moved VALID UNTIL along.
    let valid_until =
        pg(&format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{username}'"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let until: i64 = valid_until[0].parse().unwrap();
    assert!(until > now + 60, "VALID UNTIL was not extended: {until} vs now {now}");
    // The legacy alias works too, and unknown leases are refused clearly.
    let (status, body) = server.put("sys/renew", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.put("sys/leases/renew", Some(&root), json!({ "lease_id": "database/creds/nope/x" }));
    assert_eq!((status, body["errors"][0].as_str()), (400, Some("lease not found")));
    let (status, _) = server.put("sys/revoke", Some(&root), json!({ "lease_id": lease_id }));
    assert_eq!(status, 204);
    assert!(!pg_role_exists(&username));
}

#[test]
fn rotate_root_replaces_the_password_in_the_database_and_keeps_only_the_new_one() {
    let (server, root) = ready();
    // A dedicated admin per database: the shared root and postgres accounts are never rotated.
    let maria_admin = unique("arc_admin_");
    mysql(&format!("CREATE USER '{maria_admin}'@'%' IDENTIFIED BY 'first-password'"));
    mysql(&format!("GRANT ALL PRIVILEGES ON *.* TO '{maria_admin}'@'%' WITH GRANT OPTION"));
    configure_mysql(&server, &root, "maria", &maria_admin, "first-password");
    let (status, body) = server.put(
        "database/roles/app",
        Some(&root),
        json!({ "db_name": "maria", "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"] }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("database/rotate-root/maria", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let old = mysql_as(&maria_admin, "first-password", "SELECT 1").unwrap_err();
    assert!(old.contains("Access denied"), "the old root password still works: {old}");
    let (_, user, password, _) = creds(&server, &root, "app");
    assert!(mysql_as(&user, &password, "SELECT 1").is_ok(), "creds still issue after rotation");
    let (_, config) = server.get("database/config/maria", Some(&root));
    assert!(!config.to_string().contains("first-password"));

    // A crash between changing the password in the database and saving it: storage still has
    // a stale password, the new one only as pending. The next connection keeps the one that works.
    let (_, mount) = server.get("sys/mounts/database", Some(&root));
    let raw_path = format!("sys/raw/logical/{}/config/maria", mount["data"]["uuid"].as_str().unwrap());
    let (status, raw) = server.get(&raw_path, Some(&root));
    assert_eq!(status, 200, "{raw}");
    let mut stored: Value = serde_json::from_str(raw["data"]["value"].as_str().unwrap()).unwrap();
    let current = stored["password"].as_str().unwrap().to_owned();
    stored["password"] = json!("stale-before-the-crash");
    stored["pending_root_password"] = json!(current);
    let (status, body) = server.put(&raw_path, Some(&root), json!({ "value": stored.to_string() }));
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("database/reset/maria", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let (_, user, password, _) = creds(&server, &root, "app");
    assert!(mysql_as(&user, &password, "SELECT 1").is_ok(), "the pending password was recovered");
    let (_, raw) = server.get(&raw_path, Some(&root));
    let settled: Value = serde_json::from_str(raw["data"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(settled["password"], json!(current));
    assert_eq!(settled["pending_root_password"], json!(""));

    let pg_admin = unique("arc_admin_");
    pg(&format!("CREATE ROLE {pg_admin} WITH LOGIN SUPERUSER PASSWORD 'first-password'"));
    let hash_before = pg(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{pg_admin}'"));
    let (status, body) = server.put(
        "database/config/pgadmin",
        Some(&root),
        json!({ "plugin_name": PG_PLUGIN, "connection_url": pg_url(&pg_addr()), "username": pg_admin, "password": "first-password", "allowed_roles": "*" }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.put("database/rotate-root/pgadmin", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let hash_after = pg(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{pg_admin}'"));
    assert_ne!(hash_before, hash_after, "PostgreSQL has trust auth here, so the stored verifier is what proves it");
    pg_role(&server, &root, "afterrotate", "pgadmin", "1h", "2h");
    let (lease, user, _, _) = creds(&server, &root, "afterrotate");
    assert!(pg_role_exists(&user));
    server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": lease }));
    mysql(&format!("DROP USER IF EXISTS '{maria_admin}'@'%'"));
    server.put("sys/leases/revoke-prefix/database/", Some(&root), json!({}));
    pg(&format!("DROP ROLE IF EXISTS {pg_admin}"));
}

#[test]
fn static_roles_rotate_on_schedule_and_serve_the_current_password() {
    let (server, root) = ready();
    configure_mysql(&server, &root, "maria", "root", "");
    let account = unique("arc_static_");
    mysql(&format!("CREATE USER '{account}'@'%' IDENTIFIED BY 'set-by-a-human'"));
    let (status, body) = server.put(
        "database/static-roles/svc",
        Some(&root),
        json!({ "db_name": "maria", "username": account, "rotation_period": "5s" }),
    );
    assert_eq!(status, 204, "{body}");
    assert!(mysql_as(&account, "set-by-a-human", "SELECT 1").is_err(), "created means rotated at once");
    let (status, first) = server.get("database/static-creds/svc", Some(&root));
    assert_eq!(status, 200, "{first}");
    let first_password = first["data"]["password"].as_str().unwrap().to_owned();
    assert!(mysql_as(&account, &first_password, "SELECT 1").is_ok());
    assert_eq!(first["data"]["rotation_period"], 5);
    eventually("the scheduled rotation", Duration::from_secs(20), || {
        let (_, now) = server.get("database/static-creds/svc", Some(&root));
        now["data"]["password"].as_str() != Some(first_password.as_str())
    });
    let (_, current) = server.get("database/static-creds/svc", Some(&root));
    let current_password = current["data"]["password"].as_str().unwrap();
    assert!(mysql_as(&account, current_password, "SELECT 1").is_ok());
    let (status, _) = server.put("database/rotate-role/svc", Some(&root), json!({}));
    assert_eq!(status, 204);
    let (status, role) = server.get("database/static-roles/svc", Some(&root));
    assert_eq!(status, 200);
    assert!(role["data"].get("password").is_none(), "{role}");
    server.request("DELETE", "database/static-roles/svc", Some(&root), None);
    mysql(&format!("DROP USER IF EXISTS '{account}'@'%'"));
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_behind() {
    let (server, root) = ready();
    let (status, body) = server.put(
        "database/config/x",
        Some(&root),
        json!({ "plugin_name": "oracle-database-plugin", "connection_url": "x" }),
    );
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("oracle-database-plugin"), "{body}");

    let (status, body) = server.put(
        "database/config/down",
        Some(&root),
        json!({ "plugin_name": PG_PLUGIN, "connection_url": pg_url("127.0.0.1:1"), "username": "postgres", "password": "secret-root-pw" }),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["errors"][0].as_str().unwrap();
    assert!(message.contains("verifying connection"), "{message}");
    assert!(!message.contains("secret-root-pw"), "an error must not echo the password: {message}");
    let (status, _) = server.get("database/config/down", Some(&root));
    assert_eq!(status, 404, "a config that failed verification is not saved");

    // Settings Arcanum cannot honour are refused, not silently dropped, and nothing is saved.
    for (field, value) in [("tls_ca", "-----BEGIN CERTIFICATE-----"), ("password_authentication", "scram-sha-256")] {
        let (status, body) = server.put(
            "database/config/unsupported",
            Some(&root),
            json!({ "plugin_name": PG_PLUGIN, "connection_url": pg_url(&pg_addr()), "username": "postgres",
                    "password": "x", field: value }),
        );
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body["errors"][0].as_str().unwrap().contains(field), "{body}");
        assert_eq!(server.get("database/config/unsupported", Some(&root)).0, 404);
    }
    // A TLS mode that verifies nothing without a CA is refused when it asks to verify.
    let (status, body) = server.put(
        "database/config/unverifiable",
        Some(&root),
        json!({ "plugin_name": PG_PLUGIN, "connection_url": pg_url(&pg_addr()).replace("sslmode=disable", "sslmode=verify-full"),
                "username": "postgres", "password": "x" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("sslrootcert"), "{body}");

    // Plugin-specific fields Vault passes through are accepted and named back, not refused.
    let (status, body) = server.put(
        "database/config/extra",
        Some(&root),
        json!({ "plugin_name": PG_PLUGIN, "connection_url": pg_url(&pg_addr()), "username": "postgres",
                "password": "x", "tls_ca": "", "connect_timeout": "5s" }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"][0].as_str().unwrap().contains("connect_timeout"), "{body}");
    let (status, body) = server.put(
        "database/roles/orphan",
        Some(&root),
        json!({ "db_name": "missing", "creation_statements": ["CREATE ROLE \"{{name}}\""] }),
    );
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("missing"), "{body}");

    configure_pg(&server, &root, "pg");
    let (status, body) = server.put(
        "database/roles/toolong",
        Some(&root),
        json!({ "db_name": "pg", "creation_statements": [PG_CREATE], "default_ttl": "2h", "max_ttl": "1h" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("max_ttl"));

    let (status, body) = server.put(
        "database/roles/broken",
        Some(&root),
        json!({ "db_name": "pg", "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; GRANT SELEC ON arcanum_probe TO \"{{name}}\";"] }),
    );
    assert_eq!(status, 204, "{body}");
    let before = pg("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-broken-%'");
    let (status, body) = server.get("database/creds/broken", Some(&root));
    assert_eq!(status, 400, "{body}");
    // The database's own message names the mistake.
    assert!(body["errors"][0].as_str().unwrap().contains("unrecognized privilege type"), "{body}");
    assert_eq!(pg("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-broken-%'"), before, "no half-made user");
    let (status, _) = server.request("LIST", "sys/leases/lookup/database/creds/broken/", Some(&root), None);
    assert_eq!(status, 404, "no lease for a failed creation");

    let (status, body) = server.get("database/creds/nosuchrole", Some(&root));
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("nosuchrole"));
    let (status, _) = server.put("sys/leases/lookup", Some(&root), json!({}));
    assert_eq!(status, 400);
    // The mount can still be used and the server is healthy after all of this.
    pg_role(&server, &root, "fine", "pg", "1h", "2h");
    let (lease, _, _, _) = creds(&server, &root, "fine");
    server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": lease }));
}

#[test]
fn postgres_connections_use_tls_as_sslmode_says() {
    let (server, root) = ready();
    let ca = std::env::var("ARCANUM_TEST_PG_CA").unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into());
    assert!(
        std::path::Path::new(&ca).exists(),
        "the PostgreSQL server's CA certificate is needed at {ca} (ARCANUM_TEST_PG_CA)"
    );
    let app = unique("arc_tls_");
    let url = pg_url(&pg_addr()).replace(
        "sslmode=disable",
        &format!("sslmode=verify-ca&sslrootcert={}&application_name={app}", ca.replace('/', "%2F")),
    );
    let (status, body) = server.put(
        "database/config/pgtls",
        Some(&root),
        json!({ "plugin_name": PG_PLUGIN, "connection_url": url, "username": "postgres", "password": "unused", "allowed_roles": "*" }),
    );
    assert_eq!(status, 204, "{body}");
    pg_role(&server, &root, "tlsuser", "pgtls", "1h", "2h");
    let (lease, username, _, _) = creds(&server, &root, "tlsuser");
    assert!(pg_role_exists(&username));
    // Every connection Arcanum holds for this config is encrypted, as PostgreSQL itself reports.
    let encrypted = pg(&format!(
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_catalog.pg_stat_ssl s \
         JOIN pg_catalog.pg_stat_activity a USING (pid) WHERE a.application_name = '{app}'"
    ));
    let (tls, all) = encrypted[0].split_once('/').expect("count/count");
    assert!(all != "0" && tls == all, "connections over TLS / all: {tls}/{all}");
    let (status, body) = server.put("sys/leases/revoke", Some(&root), json!({ "lease_id": lease }));
    assert_eq!(status, 204, "{body}");
    assert!(!pg_role_exists(&username));
}

#[test]
fn password_policies_shape_every_password_the_engine_makes() {
    let (server, root) = ready();
    let policy = r#"
        length = 32
        rule "charset" {
          charset = "abcdefghijklmnopqrstuvwxyz"
          min-chars = 5
        }
        rule "charset" {
          charset = "0123456789"
          min-chars = 5
        }
        rule "charset" {
          charset = "-_.~"
          min-chars = 3
        }
    "#;
    let parsed = arcanum_policy::PasswordPolicy::parse(policy).expect("valid");
    let admin = unique("arc_admin_");
    mysql(&format!("CREATE USER '{admin}'@'%' IDENTIFIED BY 'first-password'"));
    mysql(&format!("GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION"));
    // As in Vault, the policy may be named before it exists; the answer warns.
    let (status, body) = server.put(
        "database/config/maria",
        Some(&root),
        json!({ "plugin_name": MYSQL_PLUGIN, "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({})/", mysql_addr()),
                "username": admin, "password": "first-password", "allowed_roles": "*", "password_policy": "db-pw" }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"][0].as_str().unwrap().contains("\"db-pw\" does not exist"), "{body}");
    assert_eq!(server.get("database/config/maria", Some(&root)).1["data"]["password_policy"], "db-pw");
    let (status, body) = server.put(
        "database/roles/app",
        Some(&root),
        json!({ "db_name": "maria", "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"] }),
    );
    assert_eq!(status, 204, "{body}");

    // Missing policy: Vault's 500, and nothing made in the database or the lease store.
    let users_before = mysql("SELECT count(*) FROM mysql.user WHERE user LIKE 'v-root-app-%'");
    let (status, body) = server.get("database/creds/app", Some(&root));
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errors"][0], "failed to generate password: no password policy found", "{body}");
    assert_eq!(mysql("SELECT count(*) FROM mysql.user WHERE user LIKE 'v-root-app-%'"), users_before);
    assert_eq!(server.request("LIST", "sys/leases/lookup/database/creds/app/", Some(&root), None).0, 404);

    let (status, body) = server.put("sys/policies/password/db-pw", Some(&root), json!({ "policy": policy }));
    assert_eq!(status, 204, "{body}");
    for _ in 0..3 {
        let (_, user, password, _) = creds(&server, &root, "app");
        assert!(parsed.admits(&password), "{password:?} breaks the policy");
        assert!(mysql_as(&user, &password, "SELECT 1").is_ok(), "the policy's password logs in");
    }

    // Root rotation draws from the policy too, and the stored root password is the one that works.
    let (status, body) = server.put("database/rotate-root/maria", Some(&root), json!({}));
    assert_eq!(status, 204, "{body}");
    let (_, mount) = server.get("sys/mounts/database", Some(&root));
    let raw_path = format!("sys/raw/logical/{}/config/maria", mount["data"]["uuid"].as_str().unwrap());
    let (_, raw) = server.get(&raw_path, Some(&root));
    let stored: Value = serde_json::from_str(raw["data"]["value"].as_str().unwrap()).unwrap();
    let root_password = stored["password"].as_str().unwrap();
    assert!(parsed.admits(root_password), "rotated root password {root_password:?} breaks the policy");
    assert!(mysql_as(&admin, root_password, "SELECT 1").is_ok());
    let (_, user, password, _) = creds(&server, &root, "app");
    assert!(mysql_as(&user, &password, "SELECT 1").is_ok(), "creds still issue after rotation");

    // A role's own policy (`credential_config`) wins over the connection's.
    let digits = "length = 12\nrule \"charset\" {\n  charset = \"0123456789\"\n  min-chars = 12\n}\n";
    assert_eq!(server.put("sys/policies/password/pin", Some(&root), json!({ "policy": digits })).0, 204);
    let (status, body) = server.put(
        "database/roles/pin",
        Some(&root),
        json!({ "db_name": "maria", "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"],
                "credential_type": "password", "credential_config": { "password_policy": "pin" } }),
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.get("database/roles/pin", Some(&root)).1["data"]["credential_config"]["password_policy"], "pin");
    let (_, user, password, _) = creds(&server, &root, "pin");
    assert!(password.len() == 12 && password.bytes().all(|b| b.is_ascii_digit()), "{password:?}");
    assert!(mysql_as(&user, &password, "SELECT 1").is_ok());
    let (status, body) = server.put(
        "database/roles/pin",
        Some(&root),
        json!({ "credential_config": { "password_policy": "pin", "length": 5 } }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("\"length\""), "{body}");

    server.put("sys/leases/revoke-prefix/database/", Some(&root), json!({}));
    assert_eq!(mysql("SELECT count(*) FROM mysql.user WHERE user LIKE 'v-root-app-%'"), users_before);
    assert!(!mysql_user_exists(&user));
    mysql(&format!("DROP USER IF EXISTS '{admin}'@'%'"));
}

#[test]
fn cli_reads_creds_and_manages_leases() {
    let (server, root) = ready();
    configure_pg(&server, &root, "pg");
    pg_role(&server, &root, "cli", "pg", "1h", "2h");
    let (code, out, err) = server.cli(&["read", "-format=json", "database/creds/cli"], Some(&root));
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).expect("json");
    let lease = answer["lease_id"].as_str().unwrap().to_owned();
    let user = answer["data"]["username"].as_str().unwrap().to_owned();
    let (code, out, err) = server.cli(&["lease", "lookup", &lease], Some(&root));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&lease), "{out}");
    let (code, out, err) = server.cli(&["lease", "renew", "-increment=30m", &lease], Some(&root));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30m") || out.contains("1800"), "{out}");
    let (code, out, err) = server.cli(&["lease", "revoke", "-prefix", "database/creds/cli"], Some(&root));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Success"), "{out}");
    assert!(!pg_role_exists(&user));
    let (code, _, err) = server.cli(&["lease", "lookup", &lease], Some(&root));
    assert_ne!(code, 0);
    assert!(err.contains("invalid lease"), "{err}");
}
