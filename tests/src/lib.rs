//! Harness for the end-to-end tests: start the real `arcanum` binary on a free loopback
//! port, talk to it over HTTP, stop or kill it, start it again on the same data.
//!
//! The binary is found through `$ARCANUM_BIN` (set by `scripts/test`), else next to the test
//! executable in Cargo's target directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Path of the `arcanum` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ARCANUM_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/arcanum
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let candidate = dir.join("arcanum");
    assert!(
        candidate.exists(),
        "arcanum binary not found at {}; run `cargo build -p arcanum` or set ARCANUM_BIN",
        candidate.display()
    );
    candidate
}

/// A running (or stopped) server with its own data directory.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub config_path: PathBuf,
    pub stdout_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
    pub ca_cert: Option<PathBuf>,
    /// Extra environment for the server process (see [`TestServer::start_with_env`]).
    pub server_env: Vec<(String, String)>,
}

/// Config for a sled-backed server on a free port with `sys/raw` enabled; `listener_extra`
/// goes inside the listener block, `extra` at the top level.
pub fn sled_config(data_dir: &Path, listener_extra: &str, extra: &str) -> String {
    format!(
        "storage \"sled\" {{\n  path = \"{}\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n  {listener_extra}\n}}\nraw_storage_endpoint = true\n{extra}\n",
        data_dir.join("data").display()
    )
}

/// Config for an etcd-backed server on a free port with `sys/raw` enabled; `storage_extra`
/// goes inside the storage block.
pub fn etcd_config(endpoints: &[String], storage_extra: &str) -> String {
    format!(
        "storage \"etcd\" {{\n  address = \"{}\"\n  {storage_extra}\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}}\nraw_storage_endpoint = true\n",
        endpoints.join(",")
    )
}

impl TestServer {
    /// Starts a sled-backed server with `raw_storage_endpoint` enabled.
    pub fn start() -> TestServer {
        Self::start_with(|dir| sled_config(dir, "", ""))
    }

    /// Starts a server with the config text `make_config(data_dir)`.
    pub fn start_with(make_config: impl FnOnce(&Path) -> String) -> TestServer {
        Self::start_with_config_and_env(make_config, &[])
    }

    /// [`TestServer::start_with`], with extra environment variables for the server process
    /// (kept for relaunches).
    pub fn start_with_config_and_env(make_config: impl FnOnce(&Path) -> String, env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.hcl");
        std::fs::write(&config_path, make_config(dir.path())).expect("write config");
        let mut server = TestServer {
            child: None,
            addr: String::new(),
            config_path,
            dir,
            stdout_lines: Default::default(),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            ca_cert: None,
            server_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        server.launch();
        server
    }

    /// Like [`TestServer::start`], with extra environment variables for the server process
    /// (kept for relaunches).
    pub fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        let mut server = Self::start_with(|dir| sled_config(dir, "", ""));
        server.stop();
        server.server_env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        server.launch();
        server
    }

    /// Uses `ca_pem` to verify the server's TLS certificate.
    pub fn trust(&mut self, ca_pem: &[u8], ca_path: PathBuf) {
        let cert = reqwest::Certificate::from_pem(ca_pem).expect("ca pem");
        self.http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(cert)
            .build()
            .expect("client");
        self.ca_cert = Some(ca_path);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the binary on the existing config and data; waits for its listening line.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut child = Command::new(binary())
            .arg("server")
            .arg(format!("-config={}", self.config_path.display()))
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn arcanum");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::clone(&self.stdout_lines);
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("arcanum: listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                lines.lock().expect("lines").push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => self.addr = url,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                panic!(
                    "server did not report its address (exit: {status:?}); log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
        }
        self.child = Some(child);
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// Sends a signal by name (`HUP`, `USR1`, ...) to the running server.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("server not running");
        let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (which must end in a clean exit), then start again on the same data.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "server exited with {status} after SIGTERM");
        self.launch();
    }

    /// Sends a request; returns status and JSON body (Null when empty).
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        self.request_with_headers(method, path, token, &[], body)
    }

    /// [`TestServer::request`] with extra headers (`X-Vault-Wrap-TTL`, ...).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}/v1/{}", self.addr, path));
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request("GET", path, token, None)
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request("PUT", path, token, Some(&body))
    }

    /// Initialises with `shares`/`threshold`; returns (hex keys, base64 keys, root token).
    pub fn init(&self, shares: u32, threshold: u32) -> Init {
        let (status, body) =
            self.put("sys/init", None, json!({ "secret_shares": shares, "secret_threshold": threshold }));
        assert_eq!(status, 200, "init failed: {body}");
        Init {
            keys: strings(&body["keys"]),
            keys_base64: strings(&body["keys_base64"]),
            root_token: body["root_token"].as_str().expect("root_token").to_owned(),
        }
    }

    /// Submits keys until unsealed; panics if it stays sealed.
    pub fn unseal(&self, keys: &[String]) {
        for key in keys {
            let (status, body) = self.put("sys/unseal", None, json!({ "key": key }));
            assert_eq!(status, 200, "unseal failed: {body}");
            if body["sealed"] == json!(false) {
                return;
            }
        }
        panic!("still sealed after {} keys", keys.len());
    }

    /// A started server, initialised with one key share and unsealed, with KV v2 mounted at
    /// `secret/`; returns it with its root token.
    pub fn unsealed_with_kv_v2() -> (TestServer, String) {
        let server = TestServer::start();
        let init = server.init(1, 1);
        server.unseal(&init.keys);
        let root = init.root_token;
        let (status, body) =
            server.put("sys/mounts/secret", Some(&root), json!({ "type": "kv", "options": { "version": "2" } }));
        assert_eq!(status, 204, "{body}");
        (server, root)
    }

    /// Runs the CLI against this server; returns (exit code, stdout, stderr). HOME is the
    /// server's temporary directory, so a developer's `~/.arcanum-token` never leaks in.
    pub fn cli(&self, args: &[&str], token: Option<&str>) -> (i32, String, String) {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("ARCANUM_ADDR", &self.addr)
            .env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        match token {
            Some(token) => command.env("ARCANUM_TOKEN", token),
            None => command.env_remove("ARCANUM_TOKEN"),
        };
        if let Some(ca) = &self.ca_cert {
            command.env("ARCANUM_CACERT", ca);
        }
        let output = command.stdin(Stdio::null()).output().expect("run cli");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Like [`TestServer::cli`] without a token, plus environment variables (an empty value
    /// removes the variable) and optional stdin text. HOME defaults to the server's directory.
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write as _;
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("ARCANUM_ADDR", &self.addr)
            .env("HOME", self.dir.path())
            .env_remove("ARCANUM_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        if let Some(ca) = &self.ca_cert {
            command.env("ARCANUM_CACERT", ca);
        }
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("run cli");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let output = child.wait_with_output().expect("wait cli");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What `sys/init` returned.
#[derive(Debug, Clone)]
pub struct Init {
    pub keys: Vec<String>,
    pub keys_base64: Vec<String>,
    pub root_token: String,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().expect("array").iter().map(|v| v.as_str().expect("string").to_owned()).collect()
}

/// Every file under `dir`, read whole (for plaintext scans of the storage).
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The value of one series in Prometheus' text format: `series` is the name with its labels
/// exactly as rendered (`arcanum_core_unsealed`, `arcanum_expire_leases{mount="database/"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl TestServer {
    /// `GET sys/metrics?format=prometheus` as text; panics unless it answers 200.
    pub fn metrics_text(&self, token: Option<&str>) -> String {
        match self.get("sys/metrics?format=prometheus", token) {
            (200, Value::String(text)) => text,
            (status, body) => panic!("sys/metrics answered {status}: {body}"),
        }
    }
}

/// The PostgreSQL the database tests use: `ARCANUM_TEST_PG_ADDR`, else 127.0.0.1:5432.
pub fn pg_addr() -> String {
    std::env::var("ARCANUM_TEST_PG_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into())
}

/// Runs SQL on PostgreSQL as `user` (trust auth) and returns the first column of each row as text.
pub fn pg_as(user: &str, sql: &str) -> Result<Vec<String>, String> {
    let addr = pg_addr();
    let (host, port) = addr.split_once(':').expect("host:port");
    let conn = format!("host={host} port={port} user={user} dbname=test connect_timeout=5");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let (client, connection) =
            tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.map_err(|err| err.to_string())?;
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(sql).await.map_err(|err| match err.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => err.to_string(),
        })?;
        drop(client);
        let _ = driver.await;
        Ok(rows
            .into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_owned()),
                _ => None,
            })
            .collect())
    })
}

/// [`pg_as`] as `postgres`; fails with a clear message when PostgreSQL is unreachable.
pub fn pg(sql: &str) -> Vec<String> {
    pg_as("postgres", sql).unwrap_or_else(|err| {
        panic!("PostgreSQL at {} is required for this test (user postgres, db test): {err}", pg_addr())
    })
}

/// Whether PostgreSQL has a role of this name.
pub fn pg_role_exists(name: &str) -> bool {
    pg(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'")) == ["1"]
}
