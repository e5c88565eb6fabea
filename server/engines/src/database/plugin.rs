//! The seam between the database secrets engine and a database: the `DatabasePlugin` trait, its
//! connection config and error type, and the factory that picks PostgreSQL or MySQL.
//!
//! Nothing here may leak a secret: `ConnectionConfig`'s `Debug` and every `DbError` are free of the
//! root password, generated passwords and URL userinfo, because both reach logs and API responses.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::template::{render_statement, StatementVars};

/// Vault's default pool size, used when the config says 0.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 4;

/// How long opening one connection may take; an unreachable database must fail fast, not hang a request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation may wait for a free pooled connection before giving up.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which built-in plugin a connection uses; several of Vault's plugin names share one driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// `postgresql-database-plugin`.
    Postgres,
    /// `mysql-database-plugin`, `mysql-aurora-database-plugin`, `mysql-rds-database-plugin`.
    Mysql,
    /// `mysql-legacy-database-plugin`: MySQL before 5.7, whose user names hold at most 16 characters.
    MysqlLegacy,
}

impl PluginKind {
    /// The kind for one of Vault's built-in plugin names; `None` for anything else.
    pub fn from_plugin_name(name: &str) -> Option<PluginKind> {
        match name {
            "postgresql-database-plugin" => Some(PluginKind::Postgres),
            "mysql-database-plugin" | "mysql-aurora-database-plugin" | "mysql-rds-database-plugin" => {
                Some(PluginKind::Mysql)
            }
            "mysql-legacy-database-plugin" => Some(PluginKind::MysqlLegacy),
            _ => None,
        }
    }

    /// The canonical plugin name (the Aurora and RDS aliases map to `mysql-database-plugin`).
    pub fn plugin_name(&self) -> &'static str {
        match self {
            PluginKind::Postgres => "postgresql-database-plugin",
            PluginKind::Mysql => "mysql-database-plugin",
            PluginKind::MysqlLegacy => "mysql-legacy-database-plugin",
        }
    }

    /// The longest user name the database accepts; generated names are cut to this.
    pub fn max_username_len(&self) -> usize {
        match self {
            PluginKind::Postgres => 63,
            PluginKind::Mysql => 32,
            PluginKind::MysqlLegacy => 16,
        }
    }
}

/// Everything needed to reach one database as its root (admin) user.
#[derive(Clone)]
pub struct ConnectionConfig {
    /// Which driver and dialect.
    pub plugin: PluginKind,
    /// URL or DSN; may hold `{{username}}` (alias `{{name}}`) and `{{password}}` placeholders.
    pub connection_url: String,
    /// The root user, substituted for `{{username}}`.
    pub username: String,
    /// The root password, substituted for `{{password}}`.
    pub password: Zeroizing<String>,
    /// Pool size; 0 means [`DEFAULT_MAX_OPEN_CONNECTIONS`].
    pub max_open_connections: usize,
    /// Idle connections kept; 0 means as many as `max_open_connections`.
    pub max_idle_connections: usize,
    /// Connections older than this are replaced; 0 means never.
    pub max_connection_lifetime_secs: u64,
    /// Substitute the raw credentials into the URL text instead of handing them to the driver intact.
    pub disable_escaping: bool,
}

impl ConnectionConfig {
    /// A config with Vault's defaults for everything but the plugin and URL.
    pub fn new(plugin: PluginKind, connection_url: impl Into<String>) -> ConnectionConfig {
        ConnectionConfig {
            plugin,
            connection_url: connection_url.into(),
            username: String::new(),
            password: Zeroizing::new(String::new()),
            max_open_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            max_idle_connections: 0,
            max_connection_lifetime_secs: 0,
            disable_escaping: false,
        }
    }

    /// Pool size after applying the default.
    pub fn effective_max_open(&self) -> usize {
        if self.max_open_connections == 0 {
            DEFAULT_MAX_OPEN_CONNECTIONS
        } else {
            self.max_open_connections
        }
    }

    /// Idle limit after applying the default; never above the pool size.
    pub fn effective_max_idle(&self) -> usize {
        let open = self.effective_max_open();
        if self.max_idle_connections == 0 {
            open
        } else {
            self.max_idle_connections.min(open)
        }
    }

    /// Connection lifetime, `None` when unlimited.
    pub fn max_lifetime(&self) -> Option<Duration> {
        (self.max_connection_lifetime_secs > 0).then(|| Duration::from_secs(self.max_connection_lifetime_secs))
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("plugin", &self.plugin)
            .field("connection_url", &redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("max_open_connections", &self.max_open_connections)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("max_connection_lifetime_secs", &self.max_connection_lifetime_secs)
            .field("disable_escaping", &self.disable_escaping)
            .finish()
    }
}

/// What went wrong, coarsely, so the caller can pick an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The connection config cannot be used (bad URL, unsupported option): the operator's to fix.
    InvalidConfig,
    /// A username template does not parse or evaluate.
    Template,
    /// The request cannot be served as given (e.g. no creation statements).
    InvalidRequest,
    /// The database could not be reached or refused the login.
    Connection,
    /// The database rejected a statement.
    Statement,
    /// The plugin was closed.
    Closed,
}

/// A database operation failed. The message carries the database's own words (operators need them) but
/// never a password or URL userinfo: every path that builds one scrubs the secrets it knows of.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    kind: DbErrorKind,
    message: String,
}

impl DbError {
    /// An error of `kind`; `message` must already be free of secrets.
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> DbError {
        DbError { kind, message: message.into() }
    }

    /// See [`DbErrorKind::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::InvalidConfig, message)
    }

    /// See [`DbErrorKind::Template`].
    pub fn template(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::Template, message)
    }

    /// See [`DbErrorKind::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::InvalidRequest, message)
    }

    /// See [`DbErrorKind::Connection`].
    pub fn connection(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::Connection, message)
    }

    /// See [`DbErrorKind::Closed`].
    pub fn closed() -> DbError {
        DbError::new(DbErrorKind::Closed, "database connection is closed")
    }

    /// A failed statement: `shown` is the statement as configured (placeholders not filled in), so the
    /// message says which SQL failed without repeating a password.
    pub fn statement(phase: &str, index: usize, count: usize, shown: &str, db_message: &str) -> DbError {
        DbError::new(
            DbErrorKind::Statement,
            format!("{phase} statement {} of {count} failed: {db_message}; statement: {shown}", index + 1),
        )
    }

    /// The coarse category.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// True when the caller, not the database, is at fault (a 400 rather than a 500).
    pub fn is_client_error(&self) -> bool {
        matches!(self.kind, DbErrorKind::InvalidConfig | DbErrorKind::Template | DbErrorKind::InvalidRequest)
    }

    /// The error with every occurrence of each secret replaced by `[password]`. Databases quote the
    /// offending SQL in syntax errors, and that SQL may hold a password.
    pub fn scrub(mut self, secrets: &[&str]) -> DbError {
        self.message = scrub(&self.message, secrets);
        self
    }
}

/// An error's message followed by those of its sources, skipping a source its parent already quotes.
/// Drivers often print only "error connecting to server" and keep the cause ("Connection refused") in
/// the source chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `text` with every occurrence of each non-empty secret replaced by `[password]`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret) {
            out = out.replace(secret, "[password]");
        }
    }
    out
}

/// A statement ready to run, with the text to show for it in errors and logs.
pub struct SqlStatement {
    /// What the database receives; may hold a password.
    pub text: Zeroizing<String>,
    /// What an error shows: the configured statement before its placeholders were filled in, or a
    /// built-in statement with its password masked.
    pub shown: String,
}

impl SqlStatement {
    /// Operator-supplied statements with their placeholders filled in.
    pub fn templated(statements: &[String], vars: &StatementVars<'_>) -> Vec<SqlStatement> {
        statements
            .iter()
            .map(|statement| SqlStatement {
                text: Zeroizing::new(render_statement(statement, vars)),
                shown: statement.trim().to_owned(),
            })
            .collect()
    }

    /// A built-in statement; `shown` must not contain a secret.
    pub fn fixed(text: String, shown: impl Into<String>) -> SqlStatement {
        SqlStatement { text: Zeroizing::new(text), shown: shown.into() }
    }
}

impl fmt::Debug for SqlStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SqlStatement").field(&self.shown).finish()
    }
}

/// One database behind a connection pool, driven by the secrets engine.
#[async_trait::async_trait]
pub trait DatabasePlugin: Send + Sync + fmt::Debug {
    /// Open a connection and run a trivial query (verify_connection=true on config write).
    async fn verify(&self) -> Result<(), DbError>;

    /// Create a dynamic user with `creation` (templated with name, username, password, expiration) in
    /// one transaction where the database allows. On failure `rollback` runs (best effort), no part of
    /// the user remains, and the error says which statement failed.
    async fn create_user(
        &self,
        creation: &[String],
        rollback: &[String],
        username: &str,
        password: &str,
        expiration: i64,
    ) -> Result<(), DbError>;

    /// Move a user's expiry to `expiration` (unix seconds); the plugin's default when `renew` is empty.
    async fn renew_user(&self, renew: &[String], username: &str, expiration: i64) -> Result<(), DbError>;

    /// Remove a user; the plugin's thorough default when `revocation` is empty. A user that no longer
    /// exists counts as revoked, so retries succeed.
    async fn revoke_user(&self, revocation: &[String], username: &str) -> Result<(), DbError>;

    /// Change the root user's own password to `new_password`, then rebuild the pool with it.
    async fn rotate_root(&self, statements: &[String], new_password: &str) -> Result<(), DbError>;

    /// Set a (static role's) user's password; the plugin's default when `statements` is empty.
    async fn set_password(&self, statements: &[String], username: &str, password: &str) -> Result<(), DbError>;

    /// Close the pool; later calls fail with [`DbErrorKind::Closed`].
    async fn close(&self);
}

/// Builds the plugin for `config`. The pool connects lazily ([`DatabasePlugin::verify`] forces a
/// connection), so this does no I/O and does not block.
pub fn open(config: &ConnectionConfig) -> Result<Arc<dyn DatabasePlugin>, DbError> {
    match config.plugin {
        PluginKind::Postgres => Ok(Arc::new(super::postgres::PostgresPlugin::new(config.clone())?)),
        PluginKind::Mysql | PluginKind::MysqlLegacy => Ok(Arc::new(super::mysql::MysqlPlugin::new(config.clone())?)),
    }
}

/// `url` fit for display: the password in URL or DSN userinfo, in a `password` query parameter, or
/// in a libpq `password=` key becomes `*****`. A templated `{{password}}` is left as is, since it is
/// not a secret.
pub fn redact_url(url: &str) -> String {
    if is_keyword_form(url) {
        return redact_password_values(url, &[], |c| c.is_whitespace());
    }
    let without_userinfo = redact_userinfo(url).unwrap_or_else(|| url.to_owned());
    redact_password_values(&without_userinfo, &['?', '&'], |c| c == '&' || c == '#')
}

const MASK: &str = "*****";

/// libpq's `key=value` form, told apart from URLs and Go DSNs by its leading `key=`.
fn is_keyword_form(url: &str) -> bool {
    let trimmed = url.trim_start();
    let key_len = trimmed.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(trimmed.len());
    key_len > 0 && trimmed[key_len..].trim_start().starts_with('=')
}

/// Handles `scheme://user:pass@host...` and Go's `user:pass@tcp(host)/db`. The userinfo ends at the
/// last `@`: a password may itself hold `@`, and hiding too much is the safe mistake.
fn redact_userinfo(url: &str) -> Option<String> {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[start..];
    let at = rest.rfind('@')?;
    let userinfo = &rest[..at];
    let colon = userinfo.find(':')?;
    let password = &userinfo[colon + 1..];
    if password.is_empty() || password == "{{password}}" {
        return None;
    }
    Some(format!("{}{}:{MASK}{}", &url[..start], &userinfo[..colon], &rest[at..]))
}

/// Masks the value of every `password` key. A key counts after the start, whitespace or one of
/// `separators`; an unquoted value runs until `ends_value` says stop.
fn redact_password_values(text: &str, separators: &[char], ends_value: impl Fn(char) -> bool) -> String {
    const KEY: &str = "password";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = find_key(rest, KEY, separators) {
        let (before, tail) = rest.split_at(pos);
        out.push_str(before);
        let after_key = &tail[KEY.len()..];
        let eq = after_key.find('=').map_or(0, |i| i + 1);
        let value = after_key[eq..].trim_start();
        let value_start = after_key.len() - value.len();
        let value_len = value_len(value, &ends_value);
        out.push_str(&tail[..KEY.len() + value_start]);
        let raw = &value[..value_len];
        out.push_str(if raw == "{{password}}" || raw == "'{{password}}'" || raw.is_empty() { raw } else { MASK });
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Position of `key` as a whole key: at the start or after whitespace or a separator, followed by
/// optional spaces and `=`.
fn find_key(text: &str, key: &str, separators: &[char]) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(key) {
        let pos = from + found;
        let at_boundary = pos == 0 || text[..pos].ends_with(char::is_whitespace) || text[..pos].ends_with(separators);
        let followed_by_eq = text[pos + key.len()..].trim_start().starts_with('=');
        if at_boundary && followed_by_eq {
            return Some(pos);
        }
        from = pos + key.len();
    }
    None
}

/// Length of a value: quoted with `\` escapes, or up to where `ends_value` stops it.
fn value_len(value: &str, ends_value: impl Fn(char) -> bool) -> usize {
    if let Some(body) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return i + 2,
                _ => {}
            }
        }
        value.len()
    } else {
        value.find(ends_value).unwrap_or(value.len())
    }
}

/// The connection URL with its placeholders resolved, ready for a driver's parser.
///
/// Unless escaping is disabled, the placeholders are first replaced by random markers that no parser
/// treats specially; once the driver has split the URL into fields, [`ResolvedUrl::fill`] puts the real
/// credentials into those fields. That hands the database the exact credentials whatever characters
/// they hold and whatever form the URL takes (URL, libpq key=value, Go DSN), which is what Vault's
/// URL escaping achieves for URLs.
pub struct ResolvedUrl {
    /// The text to parse.
    pub text: Zeroizing<String>,
    markers: Option<(String, String)>,
    username: String,
    password: Zeroizing<String>,
}

impl ResolvedUrl {
    /// Resolves `config.connection_url` with `password` as the current root password.
    pub fn new(config: &ConnectionConfig, password: &str) -> ResolvedUrl {
        let url = &config.connection_url;
        if config.disable_escaping {
            let text = url
                .replace("{{username}}", &config.username)
                .replace("{{name}}", &config.username)
                .replace("{{password}}", password);
            return ResolvedUrl {
                text: Zeroizing::new(text),
                markers: None,
                username: config.username.clone(),
                password: Zeroizing::new(password.to_owned()),
            };
        }
        let user_marker = random_marker();
        let pass_marker = random_marker();
        let text = url
            .replace("{{username}}", &user_marker)
            .replace("{{name}}", &user_marker)
            .replace("{{password}}", &pass_marker);
        ResolvedUrl {
            text: Zeroizing::new(text),
            markers: Some((user_marker, pass_marker)),
            username: config.username.clone(),
            password: Zeroizing::new(password.to_owned()),
        }
    }

    /// A parsed field with the credentials put back in place of the markers.
    pub fn fill(&self, field: &str) -> Zeroizing<String> {
        match &self.markers {
            Some((user_marker, pass_marker)) => Zeroizing::new(
                field.replace(user_marker.as_str(), &self.username).replace(pass_marker.as_str(), &self.password),
            ),
            None => Zeroizing::new(field.to_owned()),
        }
    }
}

impl fmt::Debug for ResolvedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedUrl").field("text", &redact_url(&self.text)).finish_non_exhaustive()
    }
}

fn random_marker() -> String {
    arcanum_crypto::token::generate("arcanumcred", 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_round_trip() {
        for (name, kind) in [
            ("postgresql-database-plugin", PluginKind::Postgres),
            ("mysql-database-plugin", PluginKind::Mysql),
            ("mysql-aurora-database-plugin", PluginKind::Mysql),
            ("mysql-rds-database-plugin", PluginKind::Mysql),
            ("mysql-legacy-database-plugin", PluginKind::MysqlLegacy),
        ] {
            assert_eq!(PluginKind::from_plugin_name(name), Some(kind), "{name}");
        }
        assert_eq!(PluginKind::from_plugin_name("mongodb-database-plugin"), None);
        assert_eq!(PluginKind::Postgres.plugin_name(), "postgresql-database-plugin");
        assert_eq!(PluginKind::MysqlLegacy.plugin_name(), "mysql-legacy-database-plugin");
    }

    #[test]
    fn redact_url_hides_passwords_in_every_form() {
        let cases = [
            (
                "postgresql://u:secret@127.0.0.1:5432/db?sslmode=disable",
                "postgresql://u:*****@127.0.0.1:5432/db?sslmode=disable",
            ),
            ("postgresql://{{username}}:{{password}}@h/db", "postgresql://{{username}}:{{password}}@h/db"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("postgresql://h/db", "postgresql://h/db"),
            ("mysql://root:p@ss:w@rd@h:3306/", "mysql://root:*****@h:3306/"),
            ("root:secret@tcp(127.0.0.1:3306)/", "root:*****@tcp(127.0.0.1:3306)/"),
            ("{{username}}:{{password}}@tcp(127.0.0.1:3306)/", "{{username}}:{{password}}@tcp(127.0.0.1:3306)/"),
            ("root:@tcp(127.0.0.1:3306)/", "root:@tcp(127.0.0.1:3306)/"),
            ("host=h user=u password=secret dbname=d", "host=h user=u password=***** dbname=d"),
            ("host=h password = 'se cr\\'et' dbname=d", "host=h password = ***** dbname=d"),
            ("host=h password={{password}}", "host=h password={{password}}"),
            ("host=h mypassword=x", "host=h mypassword=x"),
            (
                "postgresql://h/db?user=u&password=secret&sslmode=disable",
                "postgresql://h/db?user=u&password=*****&sslmode=disable",
            ),
            ("u:pa=ss@tcp(h)/db", "u:*****@tcp(h)/db"),
            ("u:pass@tcp(h)/db?x=a@b", "u:*****@b"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }

    #[test]
    fn debug_redacts_password_and_url_userinfo() {
        let mut config = ConnectionConfig::new(PluginKind::Postgres, "postgresql://admin:hunter2@db/x");
        config.username = "admin".into();
        config.password = Zeroizing::new("sup3rsecret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("sup3rsecret"), "{shown}");
        assert!(shown.contains("admin:*****@db/x"), "{shown}");
    }

    #[test]
    fn scrub_replaces_secrets_and_ignores_empty_ones() {
        let err = DbError::statement("creation", 0, 2, "CREATE USER x", "near 'pw123' at line 1").scrub(&["", "pw123"]);
        assert_eq!(
            err.to_string(),
            "creation statement 1 of 2 failed: near '[password]' at line 1; statement: CREATE USER x"
        );
        assert_eq!(err.kind(), DbErrorKind::Statement);
        assert!(!err.is_client_error());
    }

    #[test]
    fn resolved_url_keeps_credentials_out_of_the_parsed_text() {
        let mut config = ConnectionConfig::new(PluginKind::Postgres, "postgresql://{{username}}:{{password}}@h/db");
        config.username = "ad@min".into();
        let resolved = ResolvedUrl::new(&config, "p@ss/word");
        assert!(!resolved.text.contains("p@ss"));
        let user_field = resolved.text.trim_start_matches("postgresql://").split(':').next().unwrap_or_default();
        assert_eq!(resolved.fill(user_field).as_str(), "ad@min");

        config.disable_escaping = true;
        let raw = ResolvedUrl::new(&config, "pw");
        assert_eq!(raw.text.as_str(), "postgresql://ad@min:pw@h/db");
        assert_eq!(raw.fill("x").as_str(), "x");
    }

    #[test]
    fn pool_defaults_follow_vault() {
        let mut config = ConnectionConfig::new(PluginKind::Mysql, "x");
        config.max_open_connections = 0;
        assert_eq!(config.effective_max_open(), 4);
        assert_eq!(config.effective_max_idle(), 4);
        config.max_open_connections = 2;
        config.max_idle_connections = 9;
        assert_eq!(config.effective_max_idle(), 2);
        assert_eq!(config.max_lifetime(), None);
        config.max_connection_lifetime_secs = 30;
        assert_eq!(config.max_lifetime(), Some(Duration::from_secs(30)));
    }
}
