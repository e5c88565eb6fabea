//! The MySQL/MariaDB plugin: mysql_async's pool, reached through Go-style DSNs as Vault users write
//! them (`user:pass@tcp(host:3306)/db`) or `mysql://` URLs.
//!
//! MySQL commits DDL as it goes, so a failed creation cannot be rolled back by a transaction; this
//! module removes the half-made user itself instead.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts, TxOpts};
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore};
use zeroize::Zeroizing;

use super::plugin::{
    error_chain, redact_url, scrub, ConnectionConfig, DatabasePlugin, DbError, DbErrorKind, ResolvedUrl, SqlStatement,
    CONNECT_TIMEOUT, POOL_WAIT_TIMEOUT,
};
use super::template::StatementVars;

/// A connection to one MySQL or MariaDB server as its root user.
pub struct MysqlPlugin {
    config: ConnectionConfig,
    /// `None` once closed. Only root rotation holds the write lock, so no operation starts on the old
    /// pool after its password has changed.
    state: RwLock<Option<Arc<MyState>>>,
}

/// A pool and the root password it logs in with.
struct MyState {
    pool: Pool,
    /// One permit per allowed connection. mysql_async has no connect timeout of its own, so waiting for
    /// a free connection (here, up to [`POOL_WAIT_TIMEOUT`]) is kept apart from connecting (bounded
    /// by `connect_timeout`).
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    password: Zeroizing<String>,
    /// `host:port` or the socket path for error messages; never the DSN, which may hold credentials.
    target: String,
}

impl fmt::Debug for MysqlPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlPlugin").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A pooled connection and the permit that counts it.
struct Lease {
    conn: Conn,
    _permit: OwnedSemaphorePermit,
}

impl MysqlPlugin {
    /// Parses the config and sets up the pool without connecting.
    pub fn new(config: ConnectionConfig) -> Result<MysqlPlugin, DbError> {
        let state = MyState::build(&config, &config.password)?;
        Ok(MysqlPlugin { config, state: RwLock::new(Some(Arc::new(state))) })
    }

    async fn state(&self) -> Result<Arc<MyState>, DbError> {
        self.state.read().await.clone().ok_or_else(DbError::closed)
    }
}

impl MyState {
    fn build(config: &ConnectionConfig, password: &str) -> Result<MyState, DbError> {
        let target = driver_opts(config, password).map_err(|e| e.scrub(&[password]))?;
        let max_open = config.effective_max_open();
        let constraints = PoolConstraints::new(config.effective_max_idle(), max_open)
            .ok_or_else(|| DbError::invalid_config("invalid connection pool limits"))?;
        let pool_opts = PoolOpts::default().with_constraints(constraints).with_abs_conn_ttl(config.max_lifetime());
        // Go's driver only speaks TCP to a TCP address; switching to the local socket would change which
        // account (user@localhost rather than user@127.0.0.1) the server picks.
        let opts = target.builder.prefer_socket(false).pool_opts(pool_opts);
        Ok(MyState {
            pool: Pool::new(Opts::from(opts)),
            permits: Arc::new(Semaphore::new(max_open)),
            connect_timeout: target.connect_timeout,
            password: Zeroizing::new(password.to_owned()),
            target: target.description,
        })
    }

    async fn conn(&self) -> Result<Lease, DbError> {
        let permit = tokio::time::timeout(POOL_WAIT_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                DbError::connection(format!(
                    "timed out after {}s waiting for a free connection to {} (all max_open_connections busy)",
                    POOL_WAIT_TIMEOUT.as_secs(),
                    self.target
                ))
            })?
            .map_err(|_| DbError::closed())?;
        let conn = tokio::time::timeout(self.connect_timeout, self.pool.get_conn())
            .await
            .map_err(|_| {
                DbError::connection(format!(
                    "timed out after {}s connecting to {}",
                    self.connect_timeout.as_secs_f32(),
                    self.target
                ))
            })?
            .map_err(|e| {
                DbError::connection(format!("cannot connect to {}: {}", self.target, my_message(&e)))
                    .scrub(&[&self.password])
            })?;
        Ok(Lease { conn, _permit: permit })
    }
}

/// The server's own words for an error (code, SQLSTATE and message) or the driver's.
fn my_message(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => {
            format!("ERROR {} ({}): {}", server.code, server.state, server.message)
        }
        // The driver's own wording repeats "Input/output error" once per layer.
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Io(mysql_async::IoError::Tls(tls)) => format!("TLS error: {}", error_chain(tls)),
        other => error_chain(other),
    }
}

/// Runs `statements` in one transaction. DDL commits implicitly in MySQL, so the transaction only
/// protects data statements; callers clean up after a failure.
async fn run_in_transaction(conn: &mut Conn, phase: &str, statements: &[SqlStatement]) -> Result<(), DbError> {
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| DbError::connection(format!("cannot start a transaction: {}", my_message(&e))))?;
    for (index, statement) in statements.iter().enumerate() {
        // The text protocol: not every statement (GRANT, CREATE USER on some versions) can be prepared.
        if let Err(e) = tx.query_drop(statement.text.as_str()).await {
            let err = DbError::statement(phase, index, statements.len(), &statement.shown, &my_message(&e));
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %my_message(&rollback), "rollback after a failed statement failed");
            }
            return Err(err);
        }
    }
    tx.commit()
        .await
        .map_err(|e| DbError::new(DbErrorKind::Statement, format!("{phase} commit failed: {}", my_message(&e))))
}

/// `value` as a MySQL string literal. Quotes are doubled rather than backslash-escaped so the result
/// means the same under `NO_BACKSLASH_ESCAPES`.
pub fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn account(username: &str, host: &str) -> String {
    format!("{}@{}", quote_string(username), quote_string(host))
}

fn reject_nul(value: &str, what: &str) -> Result<(), DbError> {
    if value.contains('\0') {
        return Err(DbError::invalid_request(format!("{what} must not contain a NUL character")));
    }
    Ok(())
}

/// The account the connection is logged in as, quoted for use in SQL.
async fn current_account(conn: &mut Conn) -> Result<String, DbError> {
    let current: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.map_err(|e| {
        DbError::new(DbErrorKind::Statement, format!("cannot look up the root account: {}", my_message(&e)))
    })?;
    let current = current.unwrap_or_default();
    let (user, host) = current
        .rsplit_once('@')
        .ok_or_else(|| DbError::new(DbErrorKind::Statement, format!("unexpected CURRENT_USER() {current:?}")))?;
    Ok(account(user, host))
}

/// The hosts `username` has accounts for, or `None` when the root user cannot read `mysql.user`.
async fn user_hosts(conn: &mut Conn, username: &str) -> Option<Vec<String>> {
    match conn.exec::<String, _, _>("SELECT Host FROM mysql.user WHERE User = ?", (username,)).await {
        Ok(hosts) => Some(hosts),
        Err(e) => {
            tracing::debug!(error = %my_message(&e), "cannot read mysql.user");
            None
        }
    }
}

/// Drops every account of `username` (a generated name belongs to one credential, whatever its host),
/// or `'username'@'%'` when the accounts cannot be listed.
async fn drop_user(conn: &mut Conn, username: &str) -> Result<(), DbError> {
    let hosts = user_hosts(conn, username).await.unwrap_or_else(|| vec!["%".to_owned()]);
    let statements: Vec<SqlStatement> = hosts
        .iter()
        .map(|host| {
            let sql = format!("DROP USER IF EXISTS {}", account(username, host));
            SqlStatement::fixed(sql.clone(), sql)
        })
        .collect();
    for (index, statement) in statements.iter().enumerate() {
        conn.query_drop(statement.text.as_str()).await.map_err(|e| {
            DbError::statement("revocation", index, statements.len(), &statement.shown, &my_message(&e))
        })?;
    }
    Ok(())
}

/// Ends the sessions of `username`. MySQL lets a dropped user's open sessions live on, so revocation
/// must cut them off. Best effort: a session may end by itself meanwhile.
async fn kill_sessions(conn: &mut Conn, username: &str) {
    let ids =
        match conn.exec::<u64, _, _>("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", (username,)).await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(user = username, error = %my_message(&e), "cannot list the sessions of a revoked user");
                return;
            }
        };
    for id in ids {
        if let Err(e) = conn.query_drop(format!("KILL CONNECTION {id}")).await {
            tracing::debug!(user = username, id, error = %my_message(&e), "could not kill a session");
        }
    }
}

#[async_trait::async_trait]
impl DatabasePlugin for MysqlPlugin {
    async fn verify(&self) -> Result<(), DbError> {
        let state = self.state().await?;
        let mut lease = state.conn().await?;
        lease
            .conn
            .query_drop("SELECT 1")
            .await
            .map_err(|e| DbError::connection(format!("{}: {}", state.target, my_message(&e))).scrub(&[&state.password]))
    }

    async fn create_user(
        &self,
        creation: &[String],
        rollback: &[String],
        username: &str,
        password: &str,
        expiration: i64,
    ) -> Result<(), DbError> {
        if creation.is_empty() {
            return Err(DbError::invalid_request("creation statements are required"));
        }
        let state = self.state().await?;
        let secrets = [password, state.password.as_str()];
        let mut lease = state.conn().await?;
        let vars = StatementVars { name: username, password: Some(password), expiration: Some(expiration) };
        let creation = SqlStatement::templated(creation, &vars);
        let Err(err) = run_in_transaction(&mut lease.conn, "creation", &creation).await else {
            return Ok(());
        };
        if !rollback.is_empty() {
            for statement in SqlStatement::templated(rollback, &vars) {
                if let Err(e) = lease.conn.query_drop(statement.text.as_str()).await {
                    let error = scrub(&my_message(&e), &secrets);
                    tracing::warn!(statement = %statement.shown, %error, "rollback statement failed");
                }
            }
        }
        // Earlier statements may have created the user before a later one failed.
        if let Err(e) = drop_user(&mut lease.conn, username).await {
            tracing::warn!(user = username, error = %e.scrub(&secrets), "could not drop a half-created user");
        }
        Err(err.scrub(&secrets))
    }

    async fn renew_user(&self, renew: &[String], username: &str, expiration: i64) -> Result<(), DbError> {
        // MySQL users do not expire; Vault runs nothing unless the role says so.
        if renew.is_empty() {
            return Ok(());
        }
        let state = self.state().await?;
        let mut lease = state.conn().await?;
        let vars = StatementVars { name: username, password: None, expiration: Some(expiration) };
        run_in_transaction(&mut lease.conn, "renew", &SqlStatement::templated(renew, &vars))
            .await
            .map_err(|e| e.scrub(&[&state.password]))
    }

    async fn revoke_user(&self, revocation: &[String], username: &str) -> Result<(), DbError> {
        let state = self.state().await?;
        let mut lease = state.conn().await?;
        let result = if revocation.is_empty() {
            // Drop first so no new session can start, then end the ones that are open.
            let dropped = drop_user(&mut lease.conn, username).await;
            kill_sessions(&mut lease.conn, username).await;
            dropped
        } else {
            let vars = StatementVars { name: username, ..StatementVars::default() };
            match run_in_transaction(&mut lease.conn, "revocation", &SqlStatement::templated(revocation, &vars)).await {
                // Custom statements need not be idempotent; a user that is gone has been revoked.
                Err(e) if user_hosts(&mut lease.conn, username).await.is_some_and(|hosts| hosts.is_empty()) => {
                    let error = e.scrub(&[&state.password]);
                    tracing::info!(user = username, %error, "revocation failed but the user is gone");
                    Ok(())
                }
                other => other,
            }
        };
        result.map_err(|e| e.scrub(&[&state.password]))
    }

    async fn rotate_root(&self, statements: &[String], new_password: &str) -> Result<(), DbError> {
        reject_nul(new_password, "the new root password")?;
        if redact_url(&self.config.connection_url) != self.config.connection_url {
            return Err(DbError::invalid_config(
                "connection_url holds a literal password; use {{password}} so the rotated password can be used",
            ));
        }
        let mut guard = self.state.write().await;
        let state = guard.clone().ok_or_else(DbError::closed)?;
        let secrets = [new_password, state.password.as_str()];
        // Built first so a config that cannot produce a pool fails before the password changes.
        let next = MyState::build(&self.config, new_password).map_err(|e| e.scrub(&secrets))?;
        {
            let mut lease = state.conn().await.map_err(|e| e.scrub(&secrets))?;
            let to_run = if statements.is_empty() {
                // The account this connection authenticated as, host part included: the root user is
                // often 'root'@'localhost' rather than '...'@'%'. Named explicitly because MariaDB 10.11
                // accepts `ALTER USER CURRENT_USER() IDENTIFIED BY ...` and silently changes nothing.
                let account = current_account(&mut lease.conn).await?;
                vec![SqlStatement::fixed(
                    format!("ALTER USER {account} IDENTIFIED BY {}", quote_string(new_password)),
                    format!("ALTER USER {account} IDENTIFIED BY '[password]'"),
                )]
            } else {
                let vars =
                    StatementVars { name: &self.config.username, password: Some(new_password), expiration: None };
                SqlStatement::templated(statements, &vars)
            };
            run_in_transaction(&mut lease.conn, "root rotation", &to_run).await.map_err(|e| e.scrub(&secrets))?;
        }
        // Statements can succeed without changing anything; switching to a password the server does not
        // know would lock the engine out, so the new one must work first.
        if let Err(e) = next.conn().await {
            return Err(DbError::connection(format!(
                "root rotation statements ran, but logging in with the new password failed, so the old one stays \
                 in use: {}",
                e.scrub(&secrets)
            )));
        }
        *guard = Some(Arc::new(next));
        drop(guard);
        disconnect(state).await;
        Ok(())
    }

    async fn set_password(&self, statements: &[String], username: &str, password: &str) -> Result<(), DbError> {
        reject_nul(password, "the password")?;
        let state = self.state().await?;
        let secrets = [password, state.password.as_str()];
        let to_run = if statements.is_empty() {
            let account = account(username, "%");
            vec![SqlStatement::fixed(
                format!("ALTER USER {account} IDENTIFIED BY {}", quote_string(password)),
                format!("ALTER USER {account} IDENTIFIED BY '[password]'"),
            )]
        } else {
            SqlStatement::templated(
                statements,
                &StatementVars { name: username, password: Some(password), expiration: None },
            )
        };
        let mut lease = state.conn().await.map_err(|e| e.scrub(&secrets))?;
        run_in_transaction(&mut lease.conn, "rotation", &to_run).await.map_err(|e| e.scrub(&secrets))
    }

    async fn close(&self) {
        let state = self.state.write().await.take();
        if let Some(state) = state {
            disconnect(state).await;
        }
    }
}

/// Closes a retired pool. Its disconnect waits for borrowed connections to come back, so it runs in the
/// background rather than holding up the caller.
async fn disconnect(state: Arc<MyState>) {
    let pool = state.pool.clone();
    drop(state);
    tokio::spawn(async move {
        match tokio::time::timeout(POOL_WAIT_TIMEOUT, pool.disconnect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %my_message(&e), "error closing a MySQL pool"),
            Err(_) => tracing::warn!("a MySQL pool did not close within {}s", POOL_WAIT_TIMEOUT.as_secs()),
        }
    });
}

// ---------------------------------------------------------------------------------------------------
// Connection strings.

/// Driver options parsed from the connection URL, with what error messages may say about it.
struct Target {
    builder: OptsBuilder,
    description: String,
    connect_timeout: Duration,
}

fn driver_opts(config: &ConnectionConfig, password: &str) -> Result<Target, DbError> {
    let resolved = ResolvedUrl::new(config, password);
    let text = resolved.text.trim();
    if text.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("mysql://")) {
        return url_opts(config, password, &resolved);
    }
    let dsn = parse_go_dsn(text)?;
    let user = dsn.user.as_deref().map(|u| resolved.fill(u)).filter(|u| !u.is_empty());
    let user = user.map(|u| u.to_string()).or_else(|| (!config.username.is_empty()).then(|| config.username.clone()));
    let pass = match &dsn.pass {
        Some(p) => Some(resolved.fill(p)),
        None => (!password.is_empty()).then(|| Zeroizing::new(password.to_owned())),
    };
    let mut builder = OptsBuilder::default().user(user).pass(pass.map(|p| p.to_string())).db_name(dsn.db);
    let description = match &dsn.address {
        Address::Tcp { host, port } => {
            builder = builder.ip_or_hostname(host.clone()).tcp_port(*port);
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        Address::Unix(path) => {
            builder = builder.socket(Some(path.clone()));
            format!("unix socket {path}")
        }
    };
    let settings = go_params(&dsn.params)?;
    builder = builder.ssl_opts(settings.ssl).init(settings.init);
    Ok(Target { builder, description, connect_timeout: settings.connect_timeout })
}

fn url_opts(config: &ConnectionConfig, password: &str, resolved: &ResolvedUrl) -> Result<Target, DbError> {
    let opts = Opts::from_url(&resolved.text).map_err(|e| {
        DbError::invalid_config(format!("invalid MySQL connection_url: {}", scrub(&e.to_string(), &[password])))
    })?;
    let user = opts.user().map(|u| resolved.fill(u).to_string());
    let user = user.or_else(|| (!config.username.is_empty()).then(|| config.username.clone()));
    let pass = match opts.pass() {
        Some(p) => Some(resolved.fill(p).to_string()),
        None => (!password.is_empty()).then(|| password.to_owned()),
    };
    let description = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let builder = OptsBuilder::from_opts(opts).user(user).pass(pass);
    Ok(Target { builder, description, connect_timeout: CONNECT_TIMEOUT })
}

/// Where a Go DSN points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// The parts of a Go MySQL driver DSN: `[user[:password]@][net[(address)]]/dbname[?param=value&...]`.
#[derive(PartialEq, Eq)]
struct GoDsn {
    user: Option<String>,
    pass: Option<String>,
    address: Address,
    db: Option<String>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for GoDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoDsn")
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .field("address", &self.address)
            .field("db", &self.db)
            .field("params", &self.params)
            .finish()
    }
}

/// Splits a DSN the way Go's driver does: the database name follows the last `/`, the userinfo ends at
/// the last `@` before it, and the password follows the first `:` of the userinfo.
fn parse_go_dsn(dsn: &str) -> Result<GoDsn, DbError> {
    let invalid = |why: &str| DbError::invalid_config(format!("invalid MySQL connection_url: {why}"));
    let slash = dsn.rfind('/').ok_or_else(|| {
        invalid("missing the '/' before the database name (expected user:password@tcp(host:3306)/dbname)")
    })?;
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (db, query) = tail.split_once('?').unwrap_or((tail, ""));
    let (userinfo, net_address) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, pass) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
            None => (Some(info.to_owned()), None),
        },
        None => (None, None),
    };
    let (net, address) = match net_address.find('(') {
        Some(open) => {
            let inner =
                net_address[open + 1..].strip_suffix(')').ok_or_else(|| invalid("unclosed '(' in the address"))?;
            (&net_address[..open], inner)
        }
        None => (net_address, ""),
    };
    let address = match net {
        "" | "tcp" | "tcp4" | "tcp6" => parse_host_port(if address.is_empty() { "127.0.0.1:3306" } else { address })
            .ok_or_else(|| invalid("bad host:port"))?,
        "unix" => Address::Unix(if address.is_empty() { "/tmp/mysql.sock" } else { address }.to_owned()),
        other => return Err(invalid(&format!("unsupported network {other:?} (use tcp or unix)"))),
    };
    let db = decode(db).ok_or_else(|| invalid("the database name is not valid percent-encoded UTF-8"))?;
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| invalid(&format!("parameter {pair:?} has no value")))?;
        let value = decode(&value.replace('+', " "))
            .ok_or_else(|| invalid(&format!("parameter {key:?} is not valid UTF-8")))?;
        params.push((key.to_owned(), value));
    }
    Ok(GoDsn { user, pass, address, db: (!db.is_empty()).then_some(db), params })
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|s| s.into_owned())
}

fn parse_host_port(address: &str) -> Option<Address> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 3306,
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Some(Address::Tcp { host: host.to_owned(), port })
}

/// What the Go driver's parameters ask of the connection.
struct GoSettings {
    ssl: Option<SslOpts>,
    connect_timeout: Duration,
    /// `SET` statements for parameters the driver does not know: Go's driver sets those as session
    /// variables.
    init: Vec<String>,
}

/// Go driver parameters that only tune Go's own client and mean nothing to this one.
const IGNORED_GO_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowCleartextPasswords",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "writeTimeout",
];

fn go_params(params: &[(String, String)]) -> Result<GoSettings, DbError> {
    let mut settings = GoSettings { ssl: None, connect_timeout: CONNECT_TIMEOUT, init: Vec::new() };
    for (key, value) in params {
        match key.as_str() {
            "tls" => {
                settings.ssl = match value.as_str() {
                    "false" | "" => None,
                    "true" => Some(SslOpts::default()),
                    "skip-verify" => Some(SslOpts::default().with_danger_accept_invalid_certs(true)),
                    other => {
                        return Err(DbError::invalid_config(format!(
                            "MySQL tls={other:?} is not supported (use true, skip-verify or false)"
                        )))
                    }
                }
            }
            "timeout" => {
                settings.connect_timeout = parse_go_duration(value)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| DbError::invalid_config(format!("MySQL timeout={value:?} is not a duration")))?;
            }
            ignored if IGNORED_GO_PARAMS.contains(&ignored) => {}
            variable => {
                if variable.is_empty() || !variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(DbError::invalid_config(format!(
                        "MySQL parameter {variable:?} is not a variable name"
                    )));
                }
                settings.init.push(format!("SET {variable}={value}"));
            }
        }
    }
    Ok(settings)
}

/// A Go duration such as `5s`, `500ms` or `1m30s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    //! Unit tests of DSN handling, and tests against the real MariaDB/MySQL server named by
    //! `ARCANUM_TEST_MYSQL_URL`. Every test uses its own random user names and never touches `root`.

    use std::time::Instant;

    use super::super::plugin::{open, PluginKind};
    use super::super::template::{generate_password, generate_username, split_statements};
    use super::*;

    const DEFAULT_URL: &str = "root:@tcp(127.0.0.1:3306)/";

    fn test_url() -> String {
        std::env::var("ARCANUM_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    fn suffix() -> String {
        arcanum_crypto::token::generate("", 10).to_lowercase()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    async fn root_plugin() -> Arc<dyn DatabasePlugin> {
        let url = test_url();
        let plugin = open(&ConnectionConfig::new(PluginKind::Mysql, url.clone())).expect("plugin");
        if let Err(e) = plugin.verify().await {
            panic!(
                "MySQL test database at {} is unreachable ({e}); start it or set ARCANUM_TEST_MYSQL_URL",
                redact_url(&url)
            );
        }
        plugin
    }

    /// A direct connection, outside any plugin, with the test URL's address and the given credentials.
    async fn connect_as(user: Option<&str>, password: Option<&str>) -> Result<Conn, mysql_async::Error> {
        let config = ConnectionConfig::new(PluginKind::Mysql, test_url());
        let mut builder = driver_opts(&config, "").expect("test url").builder.prefer_socket(false);
        if let Some(user) = user {
            builder = builder.user(Some(user)).pass(password);
        }
        Conn::new(Opts::from(builder)).await
    }

    async fn raw_root() -> Conn {
        connect_as(None, None).await.expect("connect to the test database as its root user")
    }

    async fn hosts_of(root: &mut Conn, user: &str) -> Vec<String> {
        root.exec("SELECT Host FROM mysql.user WHERE User = ?", (user,)).await.expect("query mysql.user")
    }

    fn creation() -> Vec<String> {
        split_statements(&[
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';"
                .to_owned(),
        ])
    }

    fn dsn(text: &str) -> GoDsn {
        parse_go_dsn(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn go_dsns_parse_like_the_go_driver() {
        let parsed = dsn("{{username}}:{{password}}@tcp(127.0.0.1:3306)/");
        assert_eq!(parsed.user.as_deref(), Some("{{username}}"));
        assert_eq!(parsed.pass.as_deref(), Some("{{password}}"));
        assert_eq!(parsed.address, Address::Tcp { host: "127.0.0.1".into(), port: 3306 });
        assert_eq!(parsed.db, None);

        let parsed = dsn("u:p@ss:w/rd@tcp([::1]:3307)/app%2Fdb?tls=skip-verify&timeout=2s&sql_mode=%27ANSI%27");
        assert_eq!(parsed.user.as_deref(), Some("u"));
        assert_eq!(parsed.address, Address::Tcp { host: "::1".into(), port: 3307 });
        assert_eq!(parsed.db.as_deref(), Some("app/db"));
        assert_eq!(parsed.params.len(), 3);
        // The database name follows the last '/', so the password may hold one.
        assert_eq!(parsed.pass.as_deref(), Some("p@ss:w/rd"));
        assert!(!format!("{parsed:?}").contains("p@ss"));

        assert_eq!(dsn("root@/db").address, Address::Tcp { host: "127.0.0.1".into(), port: 3306 });
        assert_eq!(dsn("root@tcp(db.example)/").address, Address::Tcp { host: "db.example".into(), port: 3306 });
        assert_eq!(dsn("root@unix(/run/mysqld/mysqld.sock)/").address, Address::Unix("/run/mysqld/mysqld.sock".into()));
        assert_eq!(dsn("/").user, None);

        for (bad, fragment) in [
            ("root@tcp(127.0.0.1:3306)", "missing the '/'"),
            ("root@tcp(127.0.0.1:3306/", "unclosed '('"),
            ("root@udp(h)/", "unsupported network"),
            ("root@tcp(h:port)/", "bad host:port"),
            ("root@tcp(h)/?novalue", "has no value"),
        ] {
            let err = parse_go_dsn(bad).expect_err(bad);
            assert!(err.to_string().contains(fragment), "{bad}: {err}");
            assert!(err.is_client_error());
        }
    }

    #[test]
    fn go_params_map_to_driver_settings() {
        let params = |text: &str| go_params(&dsn(&format!("u@tcp(h)/?{text}")).params);
        let settings = params("tls=true&timeout=1m30s&charset=utf8mb4&parseTime=true&sql_mode=%27ANSI%27").expect("ok");
        assert!(settings.ssl.is_some());
        assert_eq!(settings.connect_timeout, Duration::from_secs(90));
        assert_eq!(settings.init, vec!["SET sql_mode='ANSI'".to_owned()]);
        assert!(params("tls=skip-verify").expect("ok").ssl.is_some_and(|ssl| ssl.accept_invalid_certs()));
        assert!(params("tls=false").expect("ok").ssl.is_none());
        assert!(params("tls=preferred").is_err());
        assert!(params("timeout=soon").is_err());
        assert!(params("bad-name=1").is_err());
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
    }

    #[test]
    fn credentials_reach_the_driver_intact() {
        for url in ["{{username}}:{{password}}@tcp(db:3306)/app", "mysql://{{username}}:{{password}}@db:3306/app"] {
            let mut config = ConnectionConfig::new(PluginKind::Mysql, url);
            config.username = "ad@m:in".into();
            let target = driver_opts(&config, "p@ss:w/rd%'").expect(url);
            let opts = Opts::from(target.builder);
            assert_eq!(opts.user(), Some("ad@m:in"), "{url}");
            assert_eq!(opts.pass(), Some("p@ss:w/rd%'"), "{url}");
            assert_eq!(opts.db_name(), Some("app"), "{url}");
            assert_eq!(target.description, "db:3306");
        }
        let mut config = ConnectionConfig::new(PluginKind::Mysql, "tcp(db)/");
        config.username = "admin".into();
        let opts = Opts::from(driver_opts(&config, "pw").expect("config").builder);
        assert_eq!((opts.user(), opts.pass()), (Some("admin"), Some("pw")));
    }

    #[test]
    fn opening_needs_no_runtime_and_no_server() {
        let plugin = open(&ConnectionConfig::new(PluginKind::MysqlLegacy, "root@tcp(127.0.0.1:1)/")).expect("plugin");
        drop(plugin);
    }

    #[tokio::test]
    async fn a_one_connection_pool_serves_concurrent_callers() {
        let _ = root_plugin().await;
        let mut config = ConnectionConfig::new(PluginKind::Mysql, test_url());
        config.max_open_connections = 1;
        config.max_connection_lifetime_secs = 60;
        let plugin = open(&config).expect("plugin");
        let (a, b, c) = tokio::join!(plugin.verify(), plugin.verify(), plugin.revoke_user(&[], "v-nobody-at-all"));
        a.and(b).and(c).expect("all succeed one after another");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_string("it's \\"), "'it''s \\\\'");
        assert_eq!(account("u", "%"), "'u'@'%'");
    }

    #[tokio::test]
    async fn created_user_logs_in_and_revocation_removes_it() {
        let plugin = root_plugin().await;
        let mut root = raw_root().await;
        let name = generate_username(None, PluginKind::Mysql, "test", "readonly").expect("name");
        let password = generate_password();
        plugin.create_user(&creation(), &[], &name, &password, now() + 3600).await.expect("create user");
        assert_eq!(hosts_of(&mut root, &name).await, vec!["%".to_owned()]);

        let mut session = connect_as(Some(&name), Some(&password)).await.expect("log in as the new user");
        let who: Option<String> = session.query_first("SELECT CURRENT_USER()").await.expect("query");
        assert_eq!(who, Some(format!("{name}@%")));
        assert!(connect_as(Some(&name), Some("wrong-Password-1")).await.is_err());

        plugin.renew_user(&[], &name, now() + 7200).await.expect("renew is a no-op");
        plugin.revoke_user(&[], &name).await.expect("revoke");
        assert!(hosts_of(&mut root, &name).await.is_empty(), "user still exists");
        assert!(session.query_drop("SELECT 1").await.is_err(), "the revoked user's session is still alive");
        assert!(connect_as(Some(&name), Some(&password)).await.is_err());

        plugin.revoke_user(&[], &name).await.expect("revoking again succeeds");
    }

    #[tokio::test]
    async fn failed_creation_leaves_no_user_and_names_the_statement() {
        let plugin = root_plugin().await;
        let mut root = raw_root().await;
        let name = generate_username(None, PluginKind::Mysql, "test", "broken").expect("name");
        let password = generate_password();
        // CREATE USER commits at once; the broken GRANT after it must not leave the user behind.
        let creation = vec![
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned(),
            "GRANTT SELECT ON *.* TO '{{name}}'@'%'".to_owned(),
        ];
        let err = plugin.create_user(&creation, &[], &name, &password, now() + 60).await.expect_err("fails");
        let message = err.to_string();
        assert_eq!(err.kind(), DbErrorKind::Statement);
        assert!(message.contains("creation statement 2 of 2 failed"), "{message}");
        assert!(message.contains("ERROR 1064"), "{message}");
        assert!(message.contains("GRANTT"), "{message}");
        assert!(hosts_of(&mut root, &name).await.is_empty(), "half-made user left behind");

        // MySQL quotes the SQL after the error, password included; it must come out scrubbed.
        let creation = vec!["CREATE USER '{{name}}'@'%' IDENTIFIED BYY '{{password}}'".to_owned()];
        let rollback = vec!["DROP USER IF EXISTS '{{name}}'@'%'".to_owned()];
        let err = plugin.create_user(&creation, &rollback, &name, &password, now() + 60).await.expect_err("fails");
        let message = err.to_string();
        assert!(message.contains("near 'BYY '[password]''"), "{message}");
        assert!(!message.contains(password.as_str()), "{message}");
        assert!(hosts_of(&mut root, &name).await.is_empty());
    }

    #[tokio::test]
    async fn revoking_a_missing_user_succeeds() {
        let plugin = root_plugin().await;
        let name = format!("v-missing-{}", suffix());
        plugin.revoke_user(&[], &name).await.expect("default revocation");
        let vault_default = split_statements(&[
            "REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%'; DROP USER '{{name}}'@'%'".to_owned(),
        ]);
        plugin.revoke_user(&vault_default, &name).await.expect("custom revocation");
    }

    #[tokio::test]
    async fn set_password_changes_the_login_password() {
        let plugin = root_plugin().await;
        let name = format!("static-{}", suffix());
        let first = generate_password();
        plugin.create_user(&creation(), &[], &name, &first, now() + 600).await.expect("create");
        let second = "n3w-Pa'ss\\word";
        plugin.set_password(&[], &name, second).await.expect("default rotation statement");
        assert!(connect_as(Some(&name), Some(&first)).await.is_err(), "old password still works");
        connect_as(Some(&name), Some(second)).await.expect("new password works");
        let third = generate_password();
        let custom = vec!["ALTER USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned()];
        plugin.set_password(&custom, &name, &third).await.expect("custom rotation statement");
        connect_as(Some(&name), Some(&third)).await.expect("newest password works");
        plugin.revoke_user(&[], &name).await.expect("clean up");
    }

    #[tokio::test]
    async fn rotate_root_changes_the_admin_password_and_keeps_working() {
        let _ = root_plugin().await;
        let mut root = raw_root().await;
        let admin = format!("arcadm_{}", suffix());
        let initial = generate_password();
        let base = driver_opts(&ConnectionConfig::new(PluginKind::Mysql, test_url()), "").expect("test url");
        let (host, port) = {
            let opts = Opts::from(base.builder);
            (opts.ip_or_hostname().to_owned(), opts.tcp_port())
        };
        // Not '%': the root account of a real server usually names its host, which CURRENT_USER() handles.
        let admin_host = if host == "127.0.0.1" { "127.0.0.1" } else { "%" };
        root.query_drop(format!(
            "CREATE USER {} IDENTIFIED BY {}",
            account(&admin, admin_host),
            quote_string(&initial)
        ))
        .await
        .expect("create a dedicated admin");
        root.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION", account(&admin, admin_host)))
            .await
            .expect("grant the admin");

        let mut config =
            ConnectionConfig::new(PluginKind::Mysql, format!("{{{{username}}}}:{{{{password}}}}@tcp({host}:{port})/"));
        config.username = admin.clone();
        config.password = Zeroizing::new(initial.to_string());
        let plugin = open(&config).expect("plugin");
        plugin.verify().await.expect("admin connects");

        let new_password = generate_password();
        plugin.rotate_root(&[], &new_password).await.expect("rotate");
        assert!(connect_as(Some(&admin), Some(&initial)).await.is_err(), "old admin password still works");
        connect_as(Some(&admin), Some(&new_password)).await.expect("new admin password works");
        plugin.verify().await.expect("plugin works after rotation");

        let name = generate_username(None, PluginKind::Mysql, "test", "rotated").expect("name");
        plugin.create_user(&creation(), &[], &name, &generate_password(), now() + 60).await.expect("create");
        plugin.revoke_user(&[], &name).await.expect("revoke");
        assert!(hosts_of(&mut root, &name).await.is_empty());

        let custom = vec!["ALTER USER '{{username}}'@'{}' IDENTIFIED BY '{{password}}'".replace("{}", admin_host)];
        let newest = generate_password();
        plugin.rotate_root(&custom, &newest).await.expect("rotate with custom statements");
        connect_as(Some(&admin), Some(&newest)).await.expect("newest admin password works");
        plugin.verify().await.expect("plugin works after the second rotation");

        // MariaDB 10.11 accepts this and changes nothing; the plugin must notice and keep the old password.
        let no_op = vec!["ALTER USER CURRENT_USER() IDENTIFIED BY '{{password}}'".to_owned()];
        match plugin.rotate_root(&no_op, &generate_password()).await {
            Err(err) => {
                assert!(err.to_string().contains("the old one stays in use"), "{err}");
                connect_as(Some(&admin), Some(&newest)).await.expect("admin password unchanged");
            }
            // MySQL 8 honours the statement.
            Ok(()) => assert!(connect_as(Some(&admin), Some(&newest)).await.is_err()),
        }
        plugin.verify().await.expect("plugin uses the password that works");

        plugin.close().await;
        assert_eq!(plugin.verify().await.expect_err("closed").kind(), DbErrorKind::Closed);
        root.query_drop(format!("DROP USER {}", account(&admin, admin_host))).await.expect("clean up");
    }

    #[tokio::test]
    async fn rotate_root_refuses_a_literal_password_in_the_url() {
        let plugin =
            open(&ConnectionConfig::new(PluginKind::Mysql, "admin:literal@tcp(127.0.0.1:1)/")).expect("plugin");
        let err = plugin.rotate_root(&[], "new-Password-1").await.expect_err("refused");
        assert!(err.is_client_error(), "{err}");
    }

    #[tokio::test]
    async fn unreachable_database_fails_fast() {
        let started = Instant::now();
        let plugin = open(&ConnectionConfig::new(PluginKind::Mysql, "root:pw-secret@tcp(127.0.0.1:1)/"))
            .expect("plugin builds without connecting");
        let err = plugin.verify().await.expect_err("nothing listens on port 1");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        let message = err.to_string();
        assert_eq!(err.kind(), DbErrorKind::Connection);
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.to_lowercase().contains("refused"), "{message}");
        assert!(!message.contains("pw-secret"), "{message}");
    }
}
