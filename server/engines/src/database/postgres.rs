//! The PostgreSQL plugin: tokio-postgres behind a deadpool pool, running the engine's statements and
//! its safe defaults (quoted identifiers, a revocation that leaves nothing behind).
//!
//! TLS follows libpq's `sslmode` (`pg_tls.rs`): `prefer` by default, `require`, `verify-ca` and
//! `verify-full` with `sslrootcert`.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::TimeoutType;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::RwLock;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::plugin::{
    error_chain, redact_url, scrub, ConnectionConfig, DatabasePlugin, DbError, DbErrorKind, ResolvedUrl, SqlStatement,
    CONNECT_TIMEOUT, POOL_WAIT_TIMEOUT,
};
use super::template::{format_expiration, StatementVars};

/// A connection to one PostgreSQL server as its root user.
pub struct PostgresPlugin {
    config: ConnectionConfig,
    /// `None` once closed. Operations clone the `Arc` and let go of the lock; only root rotation holds
    /// the write lock, so no operation starts on the old pool after its password has changed.
    state: RwLock<Option<Arc<PgState>>>,
}

/// A pool and the root password it logs in with.
struct PgState {
    pool: Pool,
    password: Zeroizing<String>,
    /// `host:port` for error messages; never the URL, which may hold credentials.
    target: String,
}

impl fmt::Debug for PostgresPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresPlugin").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PostgresPlugin {
    /// Parses the config and sets up the pool without connecting.
    pub fn new(config: ConnectionConfig) -> Result<PostgresPlugin, DbError> {
        let state = PgState::build(&config, &config.password)?;
        Ok(PostgresPlugin { config, state: RwLock::new(Some(Arc::new(state))) })
    }

    async fn state(&self) -> Result<Arc<PgState>, DbError> {
        self.state.read().await.clone().ok_or_else(DbError::closed)
    }
}

/// Parses `config.connection_url` into a driver config logging in with `password`, and the TLS
/// connector its `sslmode` asks for.
fn driver_config(
    config: &ConnectionConfig,
    password: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), DbError> {
    let resolved = ResolvedUrl::new(config, password);
    let (text, tls) = super::pg_tls::take_tls_params(&resolved.text)?;
    let text = Zeroizing::new(text);
    let (ssl_mode, connector) = tls.connector()?;
    let mut pg: tokio_postgres::Config = text.parse().map_err(|e: tokio_postgres::Error| {
        DbError::invalid_config(format!("invalid PostgreSQL connection_url: {}", scrub(&error_chain(&e), &[password])))
    })?;
    match pg.get_user().map(str::to_owned) {
        Some(user) => pg.user(resolved.fill(&user).as_str()),
        None if !config.username.is_empty() => pg.user(&config.username),
        None => &mut pg,
    };
    match pg.get_password().map(|p| Zeroizing::new(String::from_utf8_lossy(p).into_owned())) {
        Some(url_password) => pg.password(resolved.fill(&url_password).as_bytes()),
        None if !password.is_empty() => pg.password(password),
        None => &mut pg,
    };
    // libpq ignores sslmode on Unix sockets; TLS there would only fail.
    #[cfg(unix)]
    let ssl_mode = if !pg.get_hosts().is_empty() && pg.get_hosts().iter().all(|host| matches!(host, Host::Unix(_))) {
        tokio_postgres::config::SslMode::Disable
    } else {
        ssl_mode
    };
    pg.ssl_mode(ssl_mode);
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("arcanum");
    }
    Ok((pg, connector))
}

fn describe_target(pg: &tokio_postgres::Config) -> String {
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    match pg.get_hosts().first() {
        Some(Host::Tcp(host)) => format!("{host}:{port}"),
        #[cfg(unix)]
        Some(Host::Unix(path)) => format!("{}", path.display()),
        None => format!("localhost:{port}"),
    }
}

impl PgState {
    fn build(config: &ConnectionConfig, password: &str) -> Result<PgState, DbError> {
        let (pg, connector) = driver_config(config, password)?;
        let target = describe_target(&pg);
        // Verified recycling runs an empty query before reuse, so a connection the server dropped is
        // replaced instead of failing the next statement.
        let manager =
            Manager::from_config(pg, connector, ManagerConfig { recycling_method: RecyclingMethod::Verified });
        let mut builder = Pool::builder(manager)
            .max_size(config.effective_max_open())
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT_TIMEOUT));
        if let Some(lifetime) = config.max_lifetime() {
            builder = builder.pre_recycle(Hook::sync_fn(move |_, metrics| {
                if metrics.age() > lifetime {
                    Err(HookError::message("connection reached max_connection_lifetime"))
                } else {
                    Ok(())
                }
            }));
        }
        let pool = builder
            .build()
            .map_err(|e| DbError::invalid_config(format!("cannot build the PostgreSQL connection pool: {e}")))?;
        Ok(PgState { pool, password: Zeroizing::new(password.to_owned()), target })
    }

    async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }

    fn pool_error(&self, error: PoolError) -> DbError {
        let target = &self.target;
        let err = match error {
            PoolError::Timeout(TimeoutType::Wait) => DbError::connection(format!(
                "timed out after {}s waiting for a free connection to {target} (all max_open_connections busy)",
                POOL_WAIT_TIMEOUT.as_secs()
            )),
            PoolError::Timeout(TimeoutType::Create) => {
                DbError::connection(format!("timed out after {}s connecting to {target}", CONNECT_TIMEOUT.as_secs()))
            }
            PoolError::Timeout(TimeoutType::Recycle) => {
                DbError::connection(format!("timed out checking a pooled connection to {target}"))
            }
            PoolError::Backend(e) => DbError::connection(format!("cannot connect to {target}: {}", pg_message(&e))),
            PoolError::Closed => DbError::closed(),
            PoolError::NoRuntimeSpecified => DbError::connection("connection pool has no runtime"),
            PoolError::PostCreateHook(e) => DbError::connection(format!("cannot connect to {target}: {e}")),
        };
        err.scrub(&[&self.password])
    }
}

/// The server's own words for an error: severity, message, SQLSTATE, detail and hint.
fn pg_message(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        return error_chain(error);
    };
    let mut message = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        message.push_str("; detail: ");
        message.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        message.push_str("; hint: ");
        message.push_str(hint);
    }
    message
}

/// PostgreSQL errors that mean "another transaction touched the same catalog row": concurrent
/// GRANTs on one table fail with the first, which is routine under load. The failed transaction
/// rolled back whole, so running it again is safe.
const TRANSIENT_ERRORS: [&str; 3] = ["tuple concurrently updated", "(SQLSTATE 40001)", "(SQLSTATE 40P01)"];
const TRANSIENT_ATTEMPTS: u64 = 8;
/// The advisory lock a retried transaction takes first: retries run one at a time, so transactions
/// that keep colliding on the same catalog rows (grants on one table) cannot starve each other.
const CATALOG_LOCK: i64 = 0x4172_6361_6e75_6d01;

fn is_transient(err: &DbError) -> bool {
    let text = err.to_string();
    TRANSIENT_ERRORS.iter().any(|transient| text.contains(transient))
}

/// A short random pause before retry `attempt`, so colliding transactions do not collide again.
async fn transient_pause(attempt: u64) {
    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=10 * attempt);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// Runs `statements` in one transaction; the first failure rolls it back and names the statement.
/// A transaction that lost a catalog race runs again (a few times) under [`CATALOG_LOCK`].
async fn run_in_transaction(client: &mut Object, phase: &str, statements: &[SqlStatement]) -> Result<(), DbError> {
    let mut attempt = 1;
    loop {
        match run_once(client, phase, statements, attempt > 1).await {
            Err(err) if attempt < TRANSIENT_ATTEMPTS && is_transient(&err) => {
                transient_pause(attempt).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn run_once(
    client: &mut Object,
    phase: &str,
    statements: &[SqlStatement],
    serialized: bool,
) -> Result<(), DbError> {
    let tx = begin(client).await?;
    if serialized {
        lock_catalog(&tx).await?;
    }
    run_statements(&tx, phase, statements).await?;
    commit(tx, phase).await
}

async fn lock_catalog(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), DbError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK])
        .await
        .map(|_| ())
        .map_err(|e| DbError::new(DbErrorKind::Statement, format!("cannot take the catalog lock: {}", pg_message(&e))))
}

async fn begin(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, DbError> {
    client
        .transaction()
        .await
        .map_err(|e| DbError::connection(format!("cannot start a transaction: {}", pg_message(&e))))
}

async fn commit(tx: deadpool_postgres::Transaction<'_>, phase: &str) -> Result<(), DbError> {
    tx.commit()
        .await
        .map_err(|e| DbError::new(DbErrorKind::Statement, format!("{phase} commit failed: {}", pg_message(&e))))
}

async fn run_statements(
    tx: &deadpool_postgres::Transaction<'_>,
    phase: &str,
    statements: &[SqlStatement],
) -> Result<(), DbError> {
    for (index, statement) in statements.iter().enumerate() {
        // The simple-query protocol, so an entry kept whole (a DO block) may hold several statements.
        if let Err(e) = tx.batch_execute(&statement.text).await {
            return Err(DbError::statement(phase, index, statements.len(), &statement.shown, &pg_message(&e)));
        }
    }
    Ok(())
}

async fn role_exists(client: &Object, role: &str) -> Result<bool, DbError> {
    client
        .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role])
        .await
        .map(|row| row.is_some())
        .map_err(|e| DbError::new(DbErrorKind::Statement, format!("cannot look up role: {}", pg_message(&e))))
}

/// `name` as a PostgreSQL identifier: double-quoted, inner quotes doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a PostgreSQL string literal that means the same whatever `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn reject_nul(value: &str, what: &str) -> Result<(), DbError> {
    if value.contains('\0') {
        return Err(DbError::invalid_request(format!("{what} must not contain a NUL character")));
    }
    Ok(())
}

/// Removes a role completely: sessions ended, owned objects handed to the root user, its privileges
/// dropped, then the role. A root user that is not a superuser first makes itself a member of the
/// role, which `REASSIGN OWNED` and `DROP OWNED` require; the membership goes with the role.
///
/// The usual case takes three round trips: one to learn whether the role exists and whether we are a
/// superuser, one that disables its login (committed), and one multi-statement query that PostgreSQL
/// runs as a single implicit transaction (all or nothing). The reaper revokes thousands of these at
/// once, and each extra round trip costs CPU on both sides. If that query fails, the step-by-step path takes over: session termination allowed to
/// fail, transient catalog conflicts retried.
async fn default_revoke(client: &mut Object, username: &str) -> Result<(), DbError> {
    let role = quote_identifier(username);
    let literal = quote_literal(username);
    let lookup = format!(
        "SELECT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), \
         EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {literal})"
    );
    let messages = client.simple_query(&lookup).await.map_err(|e| {
        DbError::new(DbErrorKind::Statement, format!("cannot look up the role to revoke: {}", pg_message(&e)))
    })?;
    let Some((superuser, exists)) = messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some((row.get(0) == Some("t"), row.get(1) == Some("t"))),
        _ => None,
    }) else {
        return Err(DbError::new(DbErrorKind::Statement, "the role lookup returned no row"));
    };
    if !exists {
        return Ok(());
    }
    // Committed before any session is ended, and kept even if the drop below fails: a client
    // reconnecting meanwhile must already be refused, or its session would outlive the role.
    if let Err(e) = client.batch_execute(&format!("ALTER ROLE {role} NOLOGIN")).await {
        tracing::debug!(role = username, error = %pg_message(&e), "could not disable login before revoking");
    }
    let mut all_at_once = String::new();
    if !superuser {
        all_at_once.push_str(&format!("GRANT {role} TO CURRENT_USER; "));
    }
    all_at_once.push_str(&format!(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
         WHERE usename = {literal} AND pid <> pg_catalog.pg_backend_pid(); \
         REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"
    ));
    match client.batch_execute(&all_at_once).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::info!(role = username, error = %pg_message(&e), "one-step revocation failed; revoking step by step");
            default_revoke_stepwise(client, username, superuser).await
        }
    }
}

/// The careful revocation (login already disabled by the caller): each step on its own, so that one
/// failing step says which it was, and transient catalog conflicts retried.
async fn default_revoke_stepwise(client: &mut Object, username: &str, superuser: bool) -> Result<(), DbError> {
    let role = quote_identifier(username);
    let mut attempt = 1;
    loop {
        match default_revoke_once(client, username, &role, superuser, attempt > 1).await {
            Err(err) if attempt < TRANSIENT_ATTEMPTS && is_transient(&err) => {
                transient_pause(attempt).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn default_revoke_once(
    client: &mut Object,
    username: &str,
    role: &str,
    superuser: bool,
    serialized: bool,
) -> Result<(), DbError> {
    let mut tx = begin(client).await?;
    if serialized {
        lock_catalog(&tx).await?;
    }
    if !superuser {
        let grant = format!("GRANT {role} TO CURRENT_USER");
        run_statements(&tx, "revocation", &[SqlStatement::fixed(grant.clone(), grant)]).await?;
    }
    terminate_sessions(&mut tx, username).await;
    let statements = [
        format!("REASSIGN OWNED BY {role} TO CURRENT_USER"),
        format!("DROP OWNED BY {role}"),
        format!("DROP ROLE IF EXISTS {role}"),
    ]
    .map(|sql| SqlStatement::fixed(sql.clone(), sql));
    run_statements(&tx, "revocation", &statements).await?;
    commit(tx, "revocation").await
}

/// Ends the role's open sessions, best effort: inside a savepoint so that lacking the right to signal
/// them does not abort the revocation.
async fn terminate_sessions(tx: &mut deadpool_postgres::Transaction<'_>, username: &str) {
    let savepoint = match tx.savepoint("arcanum_terminate").await {
        Ok(savepoint) => savepoint,
        Err(e) => {
            tracing::warn!(role = username, error = %pg_message(&e), "could not end the sessions of a revoked role");
            return;
        }
    };
    let terminate = "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()";
    let result = match savepoint.execute(terminate, &[&username]).await {
        Ok(_) => savepoint.commit().await,
        Err(e) => {
            tracing::warn!(role = username, error = %pg_message(&e), "could not end the sessions of a revoked role");
            savepoint.rollback().await
        }
    };
    if let Err(e) = result {
        tracing::warn!(role = username, error = %pg_message(&e), "could not release the session savepoint");
    }
}

#[async_trait::async_trait]
impl DatabasePlugin for PostgresPlugin {
    async fn verify(&self) -> Result<(), DbError> {
        let state = self.state().await?;
        let client = state.client().await?;
        client
            .batch_execute("SELECT 1")
            .await
            .map_err(|e| DbError::connection(format!("{}: {}", state.target, pg_message(&e))).scrub(&[&state.password]))
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
        let mut client = state.client().await?;
        let vars = StatementVars { name: username, password: Some(password), expiration: Some(expiration) };
        let Err(err) = run_in_transaction(&mut client, "creation", &SqlStatement::templated(creation, &vars)).await
        else {
            return Ok(());
        };
        // The transaction already undid the creation; rollback statements are for what it cannot undo.
        if !rollback.is_empty() {
            if let Err(e) = run_in_transaction(&mut client, "rollback", &SqlStatement::templated(rollback, &vars)).await
            {
                tracing::warn!(error = %e.scrub(&secrets), "rollback statements failed after a failed creation");
            }
        }
        Err(err.scrub(&secrets))
    }

    async fn renew_user(&self, renew: &[String], username: &str, expiration: i64) -> Result<(), DbError> {
        let state = self.state().await?;
        let statements = if renew.is_empty() {
            let sql =
                format!("ALTER ROLE {} VALID UNTIL '{}'", quote_identifier(username), format_expiration(expiration));
            vec![SqlStatement::fixed(sql.clone(), sql)]
        } else {
            SqlStatement::templated(
                renew,
                &StatementVars { name: username, password: None, expiration: Some(expiration) },
            )
        };
        let mut client = state.client().await?;
        run_in_transaction(&mut client, "renew", &statements).await.map_err(|e| e.scrub(&[&state.password]))
    }

    async fn revoke_user(&self, revocation: &[String], username: &str) -> Result<(), DbError> {
        let state = self.state().await?;
        let mut client = state.client().await?;
        let result = if revocation.is_empty() {
            default_revoke(&mut client, username).await
        } else {
            let vars = StatementVars { name: username, ..StatementVars::default() };
            match run_in_transaction(&mut client, "revocation", &SqlStatement::templated(revocation, &vars)).await {
                // Custom statements need not be idempotent; a role that is gone has been revoked.
                Err(e) if !role_exists(&client, username).await.unwrap_or(true) => {
                    let error = e.scrub(&[&state.password]);
                    tracing::info!(role = username, %error, "revocation failed but the role is gone");
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
        let next = PgState::build(&self.config, new_password).map_err(|e| e.scrub(&secrets))?;
        let to_run = if statements.is_empty() {
            vec![SqlStatement::fixed(
                format!("ALTER ROLE CURRENT_USER WITH PASSWORD {}", quote_literal(new_password)),
                "ALTER ROLE CURRENT_USER WITH PASSWORD '[password]'",
            )]
        } else {
            let vars = StatementVars { name: &self.config.username, password: Some(new_password), expiration: None };
            SqlStatement::templated(statements, &vars)
        };
        {
            let mut client = state.client().await.map_err(|e| e.scrub(&secrets))?;
            run_in_transaction(&mut client, "root rotation", &to_run).await.map_err(|e| e.scrub(&secrets))?;
        }
        // Statements can succeed without changing anything; switching to a password the server does not
        // know would lock the engine out, so the new one must work first.
        if let Err(e) = next.client().await {
            return Err(DbError::connection(format!(
                "root rotation statements ran, but logging in with the new password failed, so the old one stays \
                 in use: {}",
                e.scrub(&secrets)
            )));
        }
        *guard = Some(Arc::new(next));
        state.pool.close();
        Ok(())
    }

    async fn set_password(&self, statements: &[String], username: &str, password: &str) -> Result<(), DbError> {
        reject_nul(password, "the password")?;
        let state = self.state().await?;
        let secrets = [password, state.password.as_str()];
        let to_run = if statements.is_empty() {
            let role = quote_identifier(username);
            vec![SqlStatement::fixed(
                format!("ALTER ROLE {role} WITH PASSWORD {}", quote_literal(password)),
                format!("ALTER ROLE {role} WITH PASSWORD '[password]'"),
            )]
        } else {
            SqlStatement::templated(
                statements,
                &StatementVars { name: username, password: Some(password), expiration: None },
            )
        };
        let mut client = state.client().await.map_err(|e| e.scrub(&secrets))?;
        run_in_transaction(&mut client, "rotation", &to_run).await.map_err(|e| e.scrub(&secrets))
    }

    async fn close(&self) {
        if let Some(state) = self.state.write().await.take() {
            state.pool.close();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of URL handling, and tests against the real PostgreSQL server named by
    //! `ARCANUM_TEST_PG_URL` (trust auth). Every test uses its own random role names.

    use std::time::Instant;

    use super::super::plugin::{open, PluginKind};
    use super::super::template::{generate_password, generate_username, split_statements};
    use super::*;

    const DEFAULT_URL: &str = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable";

    fn test_url() -> String {
        std::env::var("ARCANUM_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    fn suffix() -> String {
        arcanum_crypto::token::generate("", 10).to_lowercase()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The plugin as the test database's root user; fails the test when the database is down.
    async fn root_plugin() -> Arc<dyn DatabasePlugin> {
        let url = test_url();
        let plugin = open(&ConnectionConfig::new(PluginKind::Postgres, url.clone())).expect("plugin");
        if let Err(e) = plugin.verify().await {
            panic!(
                "PostgreSQL test database at {} is unreachable ({e}); start it or set ARCANUM_TEST_PG_URL",
                redact_url(&url)
            );
        }
        plugin
    }

    async fn raw_root() -> tokio_postgres::Client {
        let config: tokio_postgres::Config = test_url().parse().expect("test url");
        connect(&config).await.expect("connect to the test database as its root user")
    }

    /// The revoked role's table was handed to the root user, not dropped.
    async fn assert_owned_by_root(root: &tokio_postgres::Client, table: &str) {
        let owner: String = root
            .query_one("SELECT tableowner::text FROM pg_catalog.pg_tables WHERE tablename = $1", &[&table])
            .await
            .expect("table survives")
            .get(0);
        let root_name: String = root.query_one("SELECT current_user::text", &[]).await.expect("query").get(0);
        assert_eq!(owner, root_name);
    }

    async fn role_valid_until(root: &tokio_postgres::Client, role: &str) -> Option<Option<i64>> {
        let row = root
            .query_opt(
                "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .expect("query pg_roles");
        row.map(|row| row.get(0))
    }

    async fn stored_password(root: &tokio_postgres::Client, role: &str) -> Option<String> {
        let row = root
            .query_one("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1", &[&role])
            .await
            .expect("query pg_authid");
        row.get(0)
    }

    fn creation() -> Vec<String> {
        split_statements(&[concat!(
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\n",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
        )
        .to_owned()])
    }

    #[test]
    fn placeholders_reach_the_driver_intact() {
        for url in [
            "postgresql://{{username}}:{{password}}@db.example:6432/app?sslmode=disable",
            "host=db.example port=6432 user={{name}} password={{password}} dbname=app",
        ] {
            let mut config = ConnectionConfig::new(PluginKind::Postgres, url);
            config.username = "ad@m:in".into();
            let (pg, _) = driver_config(&config, "p@ss w/rd'%").expect(url);
            assert_eq!(pg.get_user(), Some("ad@m:in"), "{url}");
            assert_eq!(pg.get_password(), Some(&b"p@ss w/rd'%"[..]), "{url}");
            assert_eq!(describe_target(&pg), "db.example:6432");
            assert_eq!(pg.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        }
    }

    #[test]
    fn credentials_fields_fill_in_when_the_url_has_none() {
        let mut config = ConnectionConfig::new(PluginKind::Postgres, "postgresql://db/app");
        config.username = "admin".into();
        let (pg, _) = driver_config(&config, "pw").expect("config");
        assert_eq!(pg.get_user(), Some("admin"));
        assert_eq!(pg.get_password(), Some(&b"pw"[..]));
    }

    /// The test server's certificate (Debian's snakeoil one unless `ARCANUM_TEST_PG_CA` says otherwise).
    fn test_ca() -> String {
        std::env::var("ARCANUM_TEST_PG_CA").unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".to_owned())
    }

    /// Whether the plugin's connection runs over TLS, as the server itself reports it.
    async fn uses_tls(url: &str) -> Result<bool, DbError> {
        let plugin = PostgresPlugin::new(ConnectionConfig::new(PluginKind::Postgres, url))?;
        let state = plugin.state().await?;
        let client = state.client().await?;
        let row = client
            .query_one("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()", &[])
            .await
            .expect("pg_stat_ssl");
        Ok(row.get(0))
    }

    #[tokio::test]
    async fn sslmode_is_honoured_against_the_real_server() {
        let base = test_url().replace("sslmode=disable", "").trim_end_matches(['?', '&']).to_owned();
        let with = |params: &str| format!("{base}{}{params}", if base.contains('?') { '&' } else { '?' });
        let ca = test_ca();
        assert!(
            std::path::Path::new(&ca).exists(),
            "the TLS tests need the PostgreSQL server's CA certificate at {ca} (set ARCANUM_TEST_PG_CA)"
        );
        let root = raw_root().await;
        let ssl_on: String = root.query_one("SHOW ssl", &[]).await.expect("SHOW ssl").get(0);
        assert_eq!(ssl_on, "on", "the TLS tests need ssl = on in the test PostgreSQL (Debian's default)");

        assert!(!uses_tls(&with("sslmode=disable")).await.expect("disable"));
        assert!(uses_tls(&with("sslmode=prefer")).await.expect("prefer"), "prefer takes TLS when offered");
        assert!(uses_tls(&with("sslmode=require")).await.expect("require"));
        let root_cert =
            format!("sslrootcert={}", percent_encoding::utf8_percent_encode(&ca, percent_encoding::NON_ALPHANUMERIC));
        assert!(uses_tls(&with(&format!("sslmode=verify-ca&{root_cert}"))).await.expect("verify-ca"));

        // The snakeoil certificate names the machine, not 127.0.0.1: verify-full must refuse it.
        let err = uses_tls(&with(&format!("sslmode=verify-full&{root_cert}"))).await.expect_err("wrong name");
        assert!(err.to_string().contains("certificate"), "{err}");
        // A CA that did not sign the server's certificate: refused by verify-ca, and by require
        // (libpq checks the chain whenever a root certificate is given).
        let other_ca = "sslrootcert=%2Fetc%2Fssl%2Fcerts%2Fca-certificates.crt";
        let err = uses_tls(&with(&format!("sslmode=verify-ca&{other_ca}"))).await.expect_err("untrusted chain");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert!(uses_tls(&with(&format!("sslmode=require&{other_ca}"))).await.is_err());
    }

    #[tokio::test]
    async fn a_one_connection_pool_serves_concurrent_callers() {
        let _ = root_plugin().await;
        let mut config = ConnectionConfig::new(PluginKind::Postgres, test_url());
        config.max_open_connections = 1;
        config.max_connection_lifetime_secs = 60;
        let plugin = open(&config).expect("plugin");
        let (a, b, c) = tokio::join!(plugin.verify(), plugin.verify(), plugin.revoke_user(&[], "v-nobody-at-all"));
        a.and(b).and(c).expect("all succeed one after another");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's \\"), "E'it''s \\\\'");
    }

    #[tokio::test]
    async fn created_user_logs_in_and_revocation_removes_everything() {
        let plugin = root_plugin().await;
        let root = raw_root().await;
        let name = generate_username(None, PluginKind::Postgres, "test", "readonly").expect("name");
        let password = generate_password();
        let expiration = now() + 3600;
        plugin.create_user(&creation(), &[], &name, &password, expiration).await.expect("create user");
        assert_eq!(role_valid_until(&root, &name).await, Some(Some(expiration)));

        let mut as_user: tokio_postgres::Config = test_url().parse().expect("url");
        as_user.user(&name).password(password.as_str());
        let session = connect(&as_user).await.expect("log in as the new user");
        let who: String = session.query_one("SELECT current_user::text", &[]).await.expect("query").get(0);
        assert_eq!(who, name);

        let table = format!("arc_owned_{}", suffix());
        root.batch_execute(&format!(
            "CREATE TABLE {table} (id int); ALTER TABLE {table} OWNER TO {}",
            quote_identifier(&name)
        ))
        .await
        .expect("give the role a table");

        let renewed = expiration + 600;
        plugin.renew_user(&[], &name, renewed).await.expect("renew");
        assert_eq!(role_valid_until(&root, &name).await, Some(Some(renewed)));

        plugin.revoke_user(&[], &name).await.expect("revoke");
        assert_eq!(role_valid_until(&root, &name).await, None, "role still exists");
        assert_owned_by_root(&root, &table).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while session.batch_execute("SELECT 1").await.is_ok() {
            assert!(Instant::now() < deadline, "the revoked user's session is still alive");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        plugin.revoke_user(&[], &name).await.expect("revoking again succeeds");
        root.batch_execute(&format!("DROP TABLE {table}")).await.expect("clean up");
    }

    #[tokio::test]
    async fn failed_creation_leaves_no_user_and_names_the_statement() {
        let plugin = root_plugin().await;
        let root = raw_root().await;
        let name = generate_username(None, PluginKind::Postgres, "test", "broken").expect("name");
        let password = generate_password();
        let creation = vec![
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'".to_owned(),
            "GRANTT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\"".to_owned(),
        ];
        let rollback = vec!["DROP ROLE IF EXISTS \"{{name}}\"".to_owned()];
        let err = plugin.create_user(&creation, &rollback, &name, &password, now() + 60).await.expect_err("fails");
        let message = err.to_string();
        assert_eq!(err.kind(), DbErrorKind::Statement);
        assert!(message.contains("creation statement 2 of 2 failed"), "{message}");
        assert!(message.contains("syntax error at or near \"GRANTT\""), "{message}");
        assert!(message.contains("42601"), "{message}");
        assert!(!message.contains(password.as_str()), "{message}");
        assert_eq!(role_valid_until(&root, &name).await, None, "half-made role left behind");
    }

    #[tokio::test]
    async fn the_step_by_step_revocation_also_removes_everything() {
        // The path taken when the one-step revocation fails; driven directly here.
        let root = raw_root().await;
        let name = format!("v-stepwise-{}", suffix());
        let table = format!("arc_owned_{}", suffix());
        root.batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; CREATE TABLE {table} (id int); ALTER TABLE {table} OWNER TO {role}",
            role = quote_identifier(&name)
        ))
        .await
        .expect("a role owning a table");
        let plugin = PostgresPlugin::new(ConnectionConfig::new(PluginKind::Postgres, test_url())).expect("plugin");
        let state = plugin.state().await.expect("pool");
        let mut client = state.client().await.expect("connection");
        default_revoke_stepwise(&mut client, &name, true).await.expect("stepwise revocation");
        assert_eq!(role_valid_until(&root, &name).await, None, "role still exists");
        assert_owned_by_root(&root, &table).await;
        root.batch_execute(&format!("DROP TABLE {table}")).await.expect("clean up");
    }

    #[tokio::test]
    async fn revoking_a_missing_user_succeeds() {
        let plugin = root_plugin().await;
        let name = format!("v-missing-{}", suffix());
        plugin.revoke_user(&[], &name).await.expect("default revocation");
        let custom =
            vec!["REVOKE ALL ON SCHEMA public FROM \"{{name}}\"".to_owned(), "DROP ROLE \"{{name}}\"".to_owned()];
        plugin.revoke_user(&custom, &name).await.expect("custom revocation");
    }

    #[tokio::test]
    async fn set_password_changes_the_stored_password() {
        let plugin = root_plugin().await;
        let root = raw_root().await;
        let name = format!("static-{}", suffix());
        plugin.create_user(&creation(), &[], &name, &generate_password(), now() + 600).await.expect("create");
        let before = stored_password(&root, &name).await;
        plugin.set_password(&[], &name, "n3w-Pa'ss\\word").await.expect("default rotation statement");
        let middle = stored_password(&root, &name).await;
        assert_ne!(before, middle);
        let custom = vec!["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'".to_owned()];
        plugin.set_password(&custom, &name, &generate_password()).await.expect("custom rotation statement");
        assert_ne!(middle, stored_password(&root, &name).await);
        let err = plugin.set_password(&[], &format!("nobody-{}", suffix()), "Secret-123").await.expect_err("no role");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!err.to_string().contains("Secret-123"), "{err}");
        plugin.revoke_user(&[], &name).await.expect("clean up");
    }

    #[tokio::test]
    async fn rotate_root_changes_the_admin_password_and_keeps_working() {
        let root = raw_root().await;
        let admin = format!("arc_admin_{}", suffix());
        let initial = generate_password();
        root.batch_execute(&format!(
            "CREATE ROLE {} WITH LOGIN CREATEROLE PASSWORD {}",
            quote_identifier(&admin),
            quote_literal(&initial)
        ))
        .await
        .expect("create a dedicated admin");
        let base: tokio_postgres::Config = test_url().parse().expect("url");
        let host = match base.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = base.get_ports().first().copied().unwrap_or(5432);
        let db = base.get_dbname().unwrap_or("postgres");
        let mut config = ConnectionConfig::new(
            PluginKind::Postgres,
            format!("postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{db}?sslmode=disable"),
        );
        config.username = admin.clone();
        config.password = Zeroizing::new(initial.to_string());
        let plugin = open(&config).expect("plugin");
        plugin.verify().await.expect("admin connects");
        let before = stored_password(&root, &admin).await;

        let new_password = generate_password();
        plugin.rotate_root(&[], &new_password).await.expect("rotate");
        let after = stored_password(&root, &admin).await;
        assert_ne!(before, after);
        assert!(after.as_deref().unwrap_or_default().starts_with("SCRAM-SHA-256$"));
        plugin.verify().await.expect("plugin works after rotation");

        // A non-superuser root can still create and fully revoke users. (No blanket GRANT here: tables
        // that parallel tests hand to other roles are not this admin's to grant.)
        let name = generate_username(None, PluginKind::Postgres, "test", "rotated").expect("name");
        let create = vec!["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'".to_owned()];
        plugin.create_user(&create, &[], &name, &generate_password(), now() + 60).await.expect("create");
        plugin.revoke_user(&[], &name).await.expect("revoke as non-superuser");
        assert_eq!(role_valid_until(&root, &name).await, None);

        let custom = vec!["ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}'".to_owned()];
        plugin.rotate_root(&custom, &generate_password()).await.expect("rotate with custom statements");
        assert_ne!(after, stored_password(&root, &admin).await);
        plugin.verify().await.expect("plugin works after the second rotation");

        plugin.close().await;
        assert_eq!(plugin.verify().await.expect_err("closed").kind(), DbErrorKind::Closed);
        root.batch_execute(&format!("DROP ROLE {}", quote_identifier(&admin))).await.expect("clean up");
    }

    #[tokio::test]
    async fn rotate_root_refuses_a_literal_password_in_the_url() {
        let mut config = ConnectionConfig::new(PluginKind::Postgres, "postgresql://admin:literal@127.0.0.1:1/db");
        config.password = Zeroizing::new("literal".into());
        let plugin = open(&config).expect("plugin");
        let err = plugin.rotate_root(&[], "new-Password-1").await.expect_err("refused");
        assert!(err.is_client_error(), "{err}");
        assert!(!err.to_string().contains("literal@"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_database_fails_fast() {
        let started = Instant::now();
        let plugin = open(&ConnectionConfig::new(
            PluginKind::Postgres,
            "postgresql://u:pw-secret@127.0.0.1:1/db?sslmode=disable",
        ))
        .expect("plugin builds without connecting");
        let err = plugin.verify().await.expect_err("nothing listens on port 1");
        assert!(started.elapsed() < CONNECT_TIMEOUT + std::time::Duration::from_secs(1));
        let message = err.to_string();
        assert_eq!(err.kind(), DbErrorKind::Connection);
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.to_lowercase().contains("refused"), "{message}");
        assert!(!message.contains("pw-secret"), "{message}");
    }
}
