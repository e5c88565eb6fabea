//! Text the database engine generates: user names from Vault-style (Go text/template) username
//! templates, passwords under Vault's default policy, and SQL statements with `{{name}}`-style
//! placeholders filled in and split into single statements.
//!
//! Only a subset of Go templates is understood; anything else is refused with an error naming the
//! construct, so a template never silently renders differently from Vault.

use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use rand::distributions::{Distribution, Uniform};
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::plugin::{DbError, PluginKind};

const POSTGRES_TEMPLATE: &str = concat!(
    r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) "#,
    r#"(random 20) (unix_time) | truncate 63 }}"#
);
const MYSQL_TEMPLATE: &str = concat!(
    r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 10) (.RoleName | truncate 10) "#,
    r#"(random 20) (unix_time) | truncate 32 }}"#
);
const MYSQL_LEGACY_TEMPLATE: &str = r#"{{ printf "v-%s-%s" (.RoleName | truncate 4) (random 20) | truncate 16 }}"#;

/// The username template Vault uses for `plugin` when the config sets none.
pub fn default_username_template(plugin: PluginKind) -> &'static str {
    match plugin {
        PluginKind::Postgres => POSTGRES_TEMPLATE,
        PluginKind::Mysql => MYSQL_TEMPLATE,
        PluginKind::MysqlLegacy => MYSQL_LEGACY_TEMPLATE,
    }
}

/// A user name for a new dynamic credential: `template` (or the plugin's default when `None` or empty)
/// evaluated with the token's display name and the role name, then cut to the plugin's length limit.
pub fn generate_username(
    template: Option<&str>,
    plugin: PluginKind,
    display_name: &str,
    role_name: &str,
) -> Result<String, DbError> {
    let template = template.filter(|t| !t.is_empty()).unwrap_or_else(|| default_username_template(plugin));
    let data = TemplateData { display_name, role_name };
    let mut name = execute(template, &data)?;
    truncate_in_place(&mut name, plugin.max_username_len());
    if name.is_empty() {
        return Err(DbError::template("username template produced an empty user name"));
    }
    Ok(name)
}

/// Checks a username template when a config is written, as Vault does, by evaluating it with empty data.
pub fn validate_username_template(template: &str) -> Result<(), DbError> {
    execute(template, &TemplateData { display_name: "", role_name: "" }).map(drop)
}

const PASSWORD_LEN: usize = 20;
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DIGITS: &[u8] = b"0123456789";
const PASSWORD_CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";

/// A password under Vault's default policy: 20 characters from `[A-Za-z0-9-]` with at least one upper,
/// one lower, one digit and one `-`. One of each required class is drawn, the rest from the whole set,
/// and the positions shuffled, so no class sits at a predictable place.
pub fn generate_password() -> Zeroizing<String> {
    let mut rng = OsRng;
    let mut chars = Zeroizing::new(Vec::with_capacity(PASSWORD_LEN));
    for class in [UPPER, LOWER, DIGITS] {
        chars.push(class[Uniform::from(0..class.len()).sample(&mut rng)]);
    }
    chars.push(b'-');
    let any = Uniform::from(0..PASSWORD_CHARSET.len());
    while chars.len() < PASSWORD_LEN {
        chars.push(PASSWORD_CHARSET[any.sample(&mut rng)]);
    }
    chars.shuffle(&mut rng);
    Zeroizing::new(chars.iter().map(|&b| char::from(b)).collect())
}

/// Values for the placeholders of a SQL statement.
#[derive(Clone, Copy, Default)]
pub struct StatementVars<'a> {
    /// Fills `{{name}}` and `{{username}}`.
    pub name: &'a str,
    /// Fills `{{password}}`; the placeholder stays when `None`.
    pub password: Option<&'a str>,
    /// Unix seconds; fills `{{expiration}}` formatted as Vault does; the placeholder stays when `None`.
    pub expiration: Option<i64>,
}

impl fmt::Debug for StatementVars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementVars")
            .field("name", &self.name)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// `statement` with `{{name}}`, `{{username}}`, `{{password}}` and `{{expiration}}` replaced textually,
/// in one pass, so a value that happens to contain a placeholder is not expanded again. Values are not
/// escaped: statements are the operator's SQL, exactly as in Vault.
pub fn render_statement(statement: &str, vars: &StatementVars<'_>) -> String {
    let expiration = vars.expiration.map(format_expiration);
    let mut out = String::with_capacity(statement.len() + 32);
    let mut rest = statement;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let value = [
            ("{{name}}", Some(vars.name)),
            ("{{username}}", Some(vars.name)),
            ("{{password}}", vars.password),
            ("{{expiration}}", expiration.as_deref()),
        ]
        .into_iter()
        .find_map(|(key, value)| Some((key, value?)).filter(|_| after.starts_with(key)));
        match value {
            Some((key, value)) => {
                out.push_str(value);
                rest = &after[key.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Unix seconds in Vault's statement format, Go's `2006-01-02 15:04:05-0700`, in UTC.
pub fn format_expiration(unix_secs: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(if unix_secs < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        // Beyond year 9999: the latest instant that still formats as four digits.
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(253_402_300_799)
    });
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+0000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Splits statement entries the way Vault does: each entry may hold several statements separated by
/// `;`; pieces are trimmed and empty ones dropped. Unlike a plain split, a `;` inside quotes, a dollar-
/// quoted body or a comment does not split, and an entry holding the keyword `END` outside quotes (a
/// `DO`/`BEGIN ... END` block) is kept whole, as Vault's PostgreSQL plugin does.
pub fn split_statements(statements: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in statements {
        let pieces = scan_sql(entry);
        if pieces.has_end_keyword {
            let whole = entry.trim();
            if !whole.is_empty() {
                out.push(whole.to_owned());
            }
            continue;
        }
        out.extend(pieces.statements.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
    }
    out
}

struct ScannedSql<'a> {
    statements: Vec<&'a str>,
    has_end_keyword: bool,
}

/// One pass over SQL text that knows where quotes, dollar quotes and comments start and end.
fn scan_sql(sql: &str) -> ScannedSql<'_> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut has_end_keyword = false;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => {
                statements.push(&sql[start..i]);
                start = i + 1;
                i += 1;
            }
            quote @ (b'\'' | b'"' | b'`') => i = skip_quoted(bytes, i, quote),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(bytes.len(), |p| i + 2 + p + 2);
            }
            b'$' => i = skip_dollar_quoted(sql, i),
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = bytes[i..].iter().position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$'));
                let end = end.map_or(bytes.len(), |p| i + p);
                if sql[i..end].eq_ignore_ascii_case("end") {
                    has_end_keyword = true;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    statements.push(&sql[start..]);
    ScannedSql { statements, has_end_keyword }
}

/// Index just past the quoted text starting at `open`; doubled quotes and backslash escapes stay inside.
fn skip_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'\'' => i += 2,
            b if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index just past a PostgreSQL `$tag$ ... $tag$` body starting at `open`, or past the `$` when it is
/// not one (`$1` is a parameter).
fn skip_dollar_quoted(sql: &str, open: usize) -> usize {
    let rest = &sql[open + 1..];
    let tag_len = rest.find('$');
    let Some(tag_len) = tag_len else { return open + 1 };
    let tag = &rest[..tag_len];
    let valid_tag = tag.chars().next().is_none_or(|c| c.is_ascii_alphabetic() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_tag {
        return open + 1;
    }
    let delimiter = &sql[open..open + tag_len + 2];
    let body_start = open + delimiter.len();
    sql[body_start..].find(delimiter).map_or(sql.len(), |p| body_start + p + delimiter.len())
}

fn truncate_in_place(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let mut cut = max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

// ---------------------------------------------------------------------------------------------------
// The Go text/template subset.

struct TemplateData<'a> {
    display_name: &'a str,
    role_name: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
}

#[derive(Debug)]
enum Operand {
    Str(String),
    Int(i64),
    Field(String),
    Function(String),
    Pipeline(Vec<Command>),
}

/// One stage of a pipeline: an operand, or a function and its arguments.
type Command = Vec<Operand>;

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Vec<Command>),
}

fn template_error(message: impl fmt::Display) -> DbError {
    DbError::template(format!("username template: {message}"))
}

fn execute(template: &str, data: &TemplateData<'_>) -> Result<String, DbError> {
    let mut out = String::new();
    for node in parse(template)? {
        match node {
            Node::Text(text) => out.push_str(&text),
            Node::Action(pipeline) => match eval_pipeline(&pipeline, data)? {
                Value::Str(s) => out.push_str(&s),
                Value::Int(n) => out.push_str(&n.to_string()),
            },
        }
    }
    Ok(out)
}

/// Limits that keep a hostile template from exhausting the stack (parsing recurses per `(`).
const MAX_TEMPLATE_LEN: usize = 4096;
const MAX_PARENTHESES: usize = 64;

fn parse(template: &str) -> Result<Vec<Node>, DbError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(template_error(format!("template is longer than {MAX_TEMPLATE_LEN} bytes")));
    }
    if template.matches('(').count() > MAX_PARENTHESES {
        return Err(template_error(format!("template has more than {MAX_PARENTHESES} parentheses")));
    }
    let mut nodes = Vec::new();
    let mut lexer = Lexer { src: template, pos: 0 };
    let mut trim_next_text = false;
    loop {
        let rest = &template[lexer.pos..];
        let open = rest.find("{{");
        let mut text = &rest[..open.unwrap_or(rest.len())];
        if trim_next_text {
            text = text.trim_start();
        }
        let Some(open) = open else {
            push_text(&mut nodes, text);
            return Ok(nodes);
        };
        lexer.pos += open + 2;
        // "{{- " trims the text before; "{{-3}}" is the number -3.
        let after = &template[lexer.pos..];
        if after.starts_with('-') && after[1..].starts_with([' ', '\t', '\r', '\n']) {
            text = text.trim_end();
            lexer.pos += 1;
        }
        push_text(&mut nodes, text);
        lexer.skip_space();
        if lexer.rest().starts_with("/*") {
            let end = lexer.rest().find("*/").ok_or_else(|| template_error("unclosed comment"))?;
            lexer.pos += end + 2;
            trim_next_text = match lexer.next()? {
                Token::Close { trim } => trim,
                _ => return Err(template_error("comment must be the whole action")),
            };
            continue;
        }
        let (pipeline, close) = parse_pipeline(&mut lexer)?;
        match close {
            Token::Close { trim } => trim_next_text = trim,
            _ => return Err(template_error("unexpected ')'")),
        }
        if pipeline.is_empty() {
            return Err(template_error("missing value for command"));
        }
        nodes.push(Node::Action(pipeline));
    }
}

fn push_text(nodes: &mut Vec<Node>, text: &str) {
    if !text.is_empty() {
        nodes.push(Node::Text(text.to_owned()));
    }
}

/// Parses commands separated by `|` until `)` or `}}`, which it returns.
fn parse_pipeline(lexer: &mut Lexer<'_>) -> Result<(Vec<Command>, Token), DbError> {
    let mut pipeline = Vec::new();
    let mut command: Command = Vec::new();
    loop {
        let token = lexer.next()?;
        match token {
            Token::Close { .. } | Token::RParen => {
                if command.is_empty() {
                    if !pipeline.is_empty() {
                        return Err(template_error("missing command after '|'"));
                    }
                } else {
                    pipeline.push(command);
                }
                return Ok((pipeline, token));
            }
            Token::Pipe => {
                if command.is_empty() {
                    return Err(template_error("missing command before '|'"));
                }
                pipeline.push(std::mem::take(&mut command));
            }
            Token::LParen => {
                let (inner, close) = parse_pipeline(lexer)?;
                if !matches!(close, Token::RParen) {
                    return Err(template_error("unclosed '('"));
                }
                if inner.is_empty() {
                    return Err(template_error("missing value in '()'"));
                }
                command.push(Operand::Pipeline(inner));
            }
            Token::Str(s) => command.push(Operand::Str(s)),
            Token::Int(n) => command.push(Operand::Int(n)),
            Token::Field(name) => command.push(Operand::Field(name)),
            Token::Ident(name) => command.push(Operand::Function(name)),
        }
    }
}

#[derive(Debug)]
enum Token {
    Pipe,
    LParen,
    RParen,
    Close { trim: bool },
    Str(String),
    Int(i64),
    Field(String),
    Ident(String),
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

const KEYWORDS: &[&str] =
    &["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil", "true", "false"];

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    /// Skips whitespace, saying whether there was any (a `-}}` trim marker needs it before).
    fn skip_space(&mut self) -> bool {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
        rest.len() != trimmed.len()
    }

    fn next(&mut self) -> Result<Token, DbError> {
        let had_space = self.skip_space();
        let rest = self.rest();
        if had_space && rest.starts_with("-}}") {
            self.pos += 3;
            return Ok(Token::Close { trim: true });
        }
        if rest.starts_with("}}") {
            self.pos += 2;
            return Ok(Token::Close { trim: false });
        }
        let Some(c) = rest.chars().next() else {
            return Err(template_error("unclosed action: missing '}}'"));
        };
        match c {
            '|' | '(' | ')' => {
                self.pos += 1;
                Ok(match c {
                    '|' => Token::Pipe,
                    '(' => Token::LParen,
                    _ => Token::RParen,
                })
            }
            '"' => self.interpreted_string(),
            '`' => {
                let end = rest[1..].find('`').ok_or_else(|| template_error("unterminated raw string"))?;
                self.pos += end + 2;
                Ok(Token::Str(rest[1..=end].to_owned()))
            }
            '0'..='9' | '-' | '+' => {
                let len = 1 + rest[1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - 1);
                let number =
                    rest[..len].parse::<i64>().map_err(|_| template_error(format!("bad number {:?}", &rest[..len])))?;
                self.pos += len;
                Ok(Token::Int(number))
            }
            '.' => {
                let name = identifier(&rest[1..]);
                if name.is_empty() {
                    return Err(template_error("'.' (the whole data) is not supported; use .DisplayName or .RoleName"));
                }
                self.pos += 1 + name.len();
                Ok(Token::Field(name.to_owned()))
            }
            '$' => Err(template_error("variables ($...) are not supported")),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let name = identifier(rest);
                if KEYWORDS.contains(&name) {
                    return Err(template_error(format!("'{name}' is not supported")));
                }
                self.pos += name.len();
                Ok(Token::Ident(name.to_owned()))
            }
            ':' | '=' => Err(template_error("variable assignment is not supported")),
            other => Err(template_error(format!("unexpected {other:?} in action"))),
        }
    }

    fn interpreted_string(&mut self) -> Result<Token, DbError> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Token::Str(out));
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => return Err(template_error(format!("unsupported escape \\{other} in string"))),
                    None => break,
                },
                '\n' => break,
                c => out.push(c),
            }
        }
        Err(template_error("unterminated quoted string"))
    }
}

fn identifier(text: &str) -> &str {
    let len = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..len]
}

fn eval_pipeline(pipeline: &[Command], data: &TemplateData<'_>) -> Result<Value, DbError> {
    let mut piped = None;
    for command in pipeline {
        piped = Some(eval_command(command, piped, data)?);
    }
    piped.ok_or_else(|| template_error("empty pipeline"))
}

fn eval_command(command: &[Operand], piped: Option<Value>, data: &TemplateData<'_>) -> Result<Value, DbError> {
    let Some((head, args)) = command.split_first() else {
        return Err(template_error("empty command"));
    };
    if let Operand::Function(name) = head {
        let mut values = args.iter().map(|arg| eval_operand(arg, data)).collect::<Result<Vec<_>, _>>()?;
        values.extend(piped);
        return call(name, values);
    }
    if !args.is_empty() || piped.is_some() {
        return Err(template_error("can't give argument to non-function"));
    }
    eval_operand(head, data)
}

fn eval_operand(operand: &Operand, data: &TemplateData<'_>) -> Result<Value, DbError> {
    match operand {
        Operand::Str(s) => Ok(Value::Str(s.clone())),
        Operand::Int(n) => Ok(Value::Int(*n)),
        Operand::Field(name) => match name.as_str() {
            "DisplayName" => Ok(Value::Str(data.display_name.to_owned())),
            "RoleName" => Ok(Value::Str(data.role_name.to_owned())),
            other => Err(template_error(format!("unknown field .{other} (only .DisplayName and .RoleName exist)"))),
        },
        Operand::Function(name) => call(name, Vec::new()),
        Operand::Pipeline(pipeline) => eval_pipeline(pipeline, data),
    }
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, DbError> {
    let mut args = Args { function: name, values: args.into_iter() };
    let result = match name {
        "random" => {
            let n = args.int()?;
            if !(1..=1024).contains(&n) {
                return Err(template_error(format!("random: length must be between 1 and 1024, got {n}")));
            }
            let n = usize::try_from(n).unwrap_or(1);
            Value::Str(arcanum_crypto::token::generate("", n))
        }
        "truncate" => {
            let n = args.int()?;
            let mut s = args.string()?;
            if n <= 0 {
                return Err(template_error(format!("truncate: max length must be > 0 but was {n}")));
            }
            truncate_in_place(&mut s, usize::try_from(n).unwrap_or(usize::MAX));
            Value::Str(s)
        }
        "truncate_sha256" => {
            let n = args.int()?;
            let s = args.string()?;
            if n <= 8 {
                return Err(template_error(format!("truncate_sha256: max length must be > 8 but was {n}")));
            }
            Value::Str(truncate_sha256(s, usize::try_from(n).unwrap_or(usize::MAX)))
        }
        "uppercase" => Value::Str(args.string()?.to_uppercase()),
        "lowercase" => Value::Str(args.string()?.to_lowercase()),
        "replace" => {
            let find = args.string()?;
            let replacement = args.string()?;
            Value::Str(args.string()?.replace(&find, &replacement))
        }
        "sha256" => Value::Str(hex(&Sha256::digest(args.string()?.as_bytes()))),
        "base64" => Value::Str(base64::engine::general_purpose::STANDARD.encode(args.string()?)),
        "decode_base64" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(args.string()?)
                .map_err(|e| template_error(format!("decode_base64: {e}")))?;
            Value::Str(utf8(name, decoded)?)
        }
        "hex" => Value::Str(hex(args.string()?.as_bytes())),
        "decode_hex" => Value::Str(utf8(name, unhex(&args.string()?)?)?),
        "unix_time" => Value::Str(OffsetDateTime::now_utc().unix_timestamp().to_string()),
        "unix_time_millis" => Value::Str((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).to_string()),
        "uuid" => Value::Str(uuid::Uuid::new_v4().to_string()),
        "timestamp" => Value::Str(go_time_format(&args.string()?, OffsetDateTime::now_utc())),
        "printf" => {
            let format = args.string()?;
            let rest: Vec<Value> = args.values.by_ref().collect();
            Value::Str(printf(&format, &rest)?)
        }
        "glob" => return Err(template_error("function \"glob\" is not supported (it needs 'if')")),
        other => return Err(template_error(format!("function {other:?} is not supported"))),
    };
    args.finish()?;
    Ok(result)
}

/// Typed access to a function's arguments, in order, with Go-like error messages.
struct Args<'a> {
    function: &'a str,
    values: std::vec::IntoIter<Value>,
}

impl Args<'_> {
    fn next(&mut self) -> Result<Value, DbError> {
        self.values.next().ok_or_else(|| template_error(format!("{}: too few arguments", self.function)))
    }

    fn int(&mut self) -> Result<i64, DbError> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::Str(_) => {
                Err(template_error(format!("{}: wrong type for value; expected int; got string", self.function)))
            }
        }
    }

    fn string(&mut self) -> Result<String, DbError> {
        match self.next()? {
            Value::Str(s) => Ok(s),
            Value::Int(_) => {
                Err(template_error(format!("{}: wrong type for value; expected string; got int", self.function)))
            }
        }
    }

    fn finish(mut self) -> Result<(), DbError> {
        match self.values.next() {
            None => Ok(()),
            Some(_) => Err(template_error(format!("{}: too many arguments", self.function))),
        }
    }
}

/// Keeps `max - 8` bytes and replaces the rest by the first 8 hex digits of its SHA-256, so distinct long
/// names stay distinct.
fn truncate_sha256(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max - 8;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex(&Sha256::digest(&s.as_bytes()[cut..]));
    format!("{}{}", &s[..cut], &digest[..8])
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Result<Vec<u8>, DbError> {
    let bad = || template_error("decode_hex: invalid hex string");
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

fn utf8(function: &str, bytes: Vec<u8>) -> Result<String, DbError> {
    String::from_utf8(bytes).map_err(|_| template_error(format!("{function}: result is not UTF-8")))
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %q %x %X %%`, no flags or widths.
fn printf(format: &str, args: &[Value]) -> Result<String, DbError> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or_else(|| template_error("printf: format ends with '%'"))?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or_else(|| template_error(format!("printf: missing argument for %{verb}")))?;
        match (verb, arg) {
            ('s' | 'v', Value::Str(s)) => out.push_str(s),
            ('s' | 'v' | 'd', Value::Int(n)) => out.push_str(&n.to_string()),
            ('q', Value::Str(s)) => out.push_str(&format!("{s:?}")),
            ('x', Value::Str(s)) => out.push_str(&hex(s.as_bytes())),
            ('X', Value::Str(s)) => out.push_str(&hex(s.as_bytes()).to_uppercase()),
            ('x', Value::Int(n)) => out.push_str(&format!("{n:x}")),
            ('X', Value::Int(n)) => out.push_str(&format!("{n:X}")),
            ('d', Value::Str(_)) => return Err(template_error("printf: %d needs an int, got a string")),
            (other, _) => return Err(template_error(format!("printf: verb %{other} is not supported"))),
        }
    }
    if args.next().is_some() {
        return Err(template_error("printf: more arguments than verbs"));
    }
    Ok(out)
}

/// Formats `at` with a Go reference-time layout (`2006-01-02T15:04:05Z07:00` and friends).
fn go_time_format(layout: &str, at: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let month = usize::from(u8::from(at.month())) - 1;
    let weekday = usize::from(at.weekday().number_days_from_monday());
    let hour12 = match at.hour() % 12 {
        0 => 12,
        h => h,
    };
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        // Longest chunks first, as Go's own parser prefers them.
        let chunks: [(&str, String); 27] = [
            ("January", MONTHS[month].to_owned()),
            ("Jan", MONTHS[month][..3].to_owned()),
            ("Monday", DAYS[weekday].to_owned()),
            ("Mon", DAYS[weekday][..3].to_owned()),
            ("MST", "UTC".to_owned()),
            ("2006", format!("{:04}", at.year())),
            ("002", format!("{:03}", at.ordinal())),
            ("01", format!("{:02}", month + 1)),
            ("02", format!("{:02}", at.day())),
            ("03", format!("{hour12:02}")),
            ("04", format!("{:02}", at.minute())),
            ("05", format!("{:02}", at.second())),
            ("06", format!("{:02}", at.year().rem_euclid(100))),
            ("15", format!("{:02}", at.hour())),
            ("_2", format!("{:>2}", at.day())),
            ("-07:00:00", "+00:00:00".to_owned()),
            ("-0700", "+0000".to_owned()),
            ("-07:00", "+00:00".to_owned()),
            ("-07", "+00".to_owned()),
            ("Z07:00:00", "Z".to_owned()),
            ("Z0700", "Z".to_owned()),
            ("Z07:00", "Z".to_owned()),
            ("Z07", "Z".to_owned()),
            ("PM", if at.hour() < 12 { "AM" } else { "PM" }.to_owned()),
            ("pm", if at.hour() < 12 { "am" } else { "pm" }.to_owned()),
            ("1", (month + 1).to_string()),
            ("2", at.day().to_string()),
        ];
        if let Some((chunk, value)) = chunks.iter().find(|(chunk, _)| rest.starts_with(chunk)) {
            out.push_str(value);
            rest = &rest[chunk.len()..];
            continue;
        }
        let single = [("3", hour12.to_string()), ("4", at.minute().to_string()), ("5", at.second().to_string())];
        if let Some((chunk, value)) = single.iter().find(|(chunk, _)| rest.starts_with(chunk)) {
            out.push_str(value);
            rest = &rest[chunk.len()..];
            continue;
        }
        if let Some(fraction) = fraction_chunk(rest) {
            let digits = fraction - 1;
            let nanos = format!("{:09}", at.nanosecond());
            let shown = &nanos[..digits.min(9)];
            if rest.as_bytes()[1] == b'9' {
                let trimmed = shown.trim_end_matches('0');
                if !trimmed.is_empty() {
                    out.push_str(&rest[..1]);
                    out.push_str(trimmed);
                }
            } else {
                out.push_str(&rest[..1]);
                out.push_str(shown);
            }
            rest = &rest[fraction..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Length of a `.000`/`,999`-style fractional-second chunk at the start of `text`, if there is one.
fn fraction_chunk(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !matches!(bytes.first(), Some(b'.' | b',')) {
        return None;
    }
    let digit = *bytes.get(1).filter(|&&b| b == b'0' || b == b'9')?;
    let run = bytes[1..].iter().take_while(|&&b| b == digit).count();
    let after = bytes.get(1 + run);
    (!after.is_some_and(u8::is_ascii_digit)).then_some(1 + run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Result<String, DbError> {
        execute(template, &TemplateData { display_name: "token-display-name", role_name: "readonly-role" })
    }

    fn is_random_part(s: &str) -> bool {
        s.len() == 20 && s.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    #[test]
    fn default_postgres_username_has_vaults_shape() {
        let name = generate_username(None, PluginKind::Postgres, "token", "readonly").expect("name");
        let parts: Vec<&str> = name.split('-').collect();
        assert_eq!(parts.len(), 5, "{name}");
        assert_eq!(&parts[..3], ["v", "token", "readonly"]);
        assert!(is_random_part(parts[3]), "{name}");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let stamp: i64 = parts[4].parse().expect("unix time");
        assert!((now - stamp).abs() < 5);

        let long = generate_username(Some(""), PluginKind::Postgres, &"d".repeat(40), &"r".repeat(40)).expect("name");
        assert!(long.starts_with("v-dddddddd-rrrrrrrr-"), "{long}");
        assert_eq!(long.len(), 2 + 8 + 1 + 8 + 1 + 20 + 1 + 10);
        assert!(long.len() <= 63);
    }

    #[test]
    fn default_mysql_usernames_fit_their_limits() {
        let name = generate_username(None, PluginKind::Mysql, "kubernetes-ns-sa", "readonly-role").expect("name");
        assert_eq!(name.len(), 32, "{name}");
        assert!(name.starts_with("v-kubernetes-readonly-r-"), "{name}");

        let legacy = generate_username(None, PluginKind::MysqlLegacy, "token", "readonly").expect("name");
        assert_eq!(legacy.len(), 16, "{legacy}");
        assert!(legacy.starts_with("v-read-"), "{legacy}");
        assert!(legacy[7..].bytes().all(|b| b.is_ascii_alphanumeric()), "{legacy}");
    }

    #[test]
    fn custom_templates_evaluate_like_go() {
        let cases = [
            ("{{.RoleName}}", "readonly-role"),
            ("static-{{ .DisplayName | truncate 5 }}-x", "static-token-x"),
            ("{{ .RoleName | uppercase }}", "READONLY-ROLE"),
            ("{{ \"ABC\" | lowercase }}", "abc"),
            ("{{ .RoleName | replace \"-\" \"_\" }}", "readonly_role"),
            ("{{ printf \"v-%s\" (.RoleName | truncate 8) | truncate 6 }}", "v-read"),
            ("{{ printf \"%s_%d_%%\" .RoleName 42 }}", "readonly-role_42_%"),
            ("{{ .RoleName | truncate_sha256 20 }}", "readonly-role"),
            ("{{ .DisplayName | truncate_sha256 12 }}", "token-5a3d1"),
            ("{{ `raw|str` }}", "raw|str"),
            ("a {{- \" b \" -}} c", "a b c"),
            ("x{{/* note */}}y", "xy"),
            ("{{ \"hi\" | base64 }}", "aGk="),
            ("{{ \"aGk=\" | decode_base64 }}", "hi"),
            ("{{ \"hi\" | hex }}", "6869"),
            ("{{ \"6869\" | decode_hex }}", "hi"),
            ("{{ \"\" | sha256 }}", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("{{ (\"nested\") | truncate 3 }}", "nes"),
        ];
        for (template, want) in cases {
            let got = render(template).unwrap_or_else(|e| panic!("{template}: {e}"));
            if template.contains("truncate_sha256 12") {
                // 4 bytes kept, then 8 hex digits of the hash of the rest.
                assert!(got.starts_with("toke") && got.len() == 12, "{template}: {got}");
                assert_eq!(&got[4..], &hex(&Sha256::digest(b"n-display-name"))[..8]);
                continue;
            }
            assert_eq!(got, want, "{template}");
        }
    }

    #[test]
    fn generated_values_have_their_formats() {
        let random = render("{{random 12}}").expect("random");
        assert!(random.len() == 12 && random.bytes().all(|b| b.is_ascii_alphanumeric()));
        let millis: i64 = render("{{unix_time_millis}}").expect("millis").parse().expect("number");
        assert!(millis > 1_600_000_000_000);
        let uuid = render("{{ uuid }}").expect("uuid");
        assert_eq!(uuid.len(), 36);
        assert!(uuid::Uuid::parse_str(&uuid).is_ok());
        let day = render("{{ timestamp \"2006-01-02\" }}").expect("timestamp");
        assert_eq!(day.len(), 10);
        assert_eq!(day.as_bytes()[4], b'-');
    }

    #[test]
    fn go_layouts_format_a_known_instant() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time") + time::Duration::milliseconds(120);
        assert_eq!(go_time_format("2006-01-02T15:04:05Z07:00", at), "2023-11-14T22:13:20Z");
        assert_eq!(go_time_format("Mon Jan _2 03:04:05.000 PM MST 06", at), "Tue Nov 14 10:13:20.120 PM UTC 23");
        assert_eq!(go_time_format("20060102.999999 -0700", at), "20231114.12 +0000");
        assert_eq!(go_time_format("1/2 3:4:5", at), "11/14 10:13:20");
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let cases = [
            ("{{ if .RoleName }}x{{ end }}", "'if' is not supported"),
            ("{{ $x := 1 }}", "variables"),
            ("{{ .Foo }}", "unknown field .Foo"),
            ("{{ . }}", "whole data"),
            ("{{ len .RoleName }}", "function \"len\" is not supported"),
            ("{{ glob \"a*\" .RoleName }}", "glob"),
            ("{{ .RoleName | truncate 0 }}", "max length must be > 0"),
            ("{{ .RoleName | truncate_sha256 8 }}", "must be > 8"),
            ("{{ .RoleName | truncate \"8\" }}", "expected int"),
            ("{{ truncate 3 }}", "too few arguments"),
            ("{{ printf \"%s %s\" .RoleName }}", "missing argument"),
            ("{{ printf \"%5s\" .RoleName }}", "verb %5"),
            ("{{ .RoleName", "unclosed action"),
            ("{{ (.RoleName }}", "unclosed '('"),
            ("{{ \"abc }}", "unterminated quoted string"),
            ("{{ .RoleName 3 }}", "non-function"),
            ("{{ }}", "missing value"),
            ("{{ random 0 }}", "between 1 and 1024"),
        ];
        for (template, fragment) in cases {
            let err = render(template).expect_err(template);
            assert_eq!(err.kind(), super::super::plugin::DbErrorKind::Template);
            assert!(err.to_string().contains(fragment), "{template}: {err}");
        }
        assert!(validate_username_template("{{ nope }}").is_err());
        assert!(validate_username_template(POSTGRES_TEMPLATE).is_ok());
    }

    #[test]
    fn custom_template_result_is_cut_to_the_plugin_limit() {
        let name = generate_username(Some("{{ random 100 }}"), PluginKind::MysqlLegacy, "d", "r").expect("name");
        assert_eq!(name.len(), 16);
        let err = generate_username(Some("{{ \"\" }}"), PluginKind::Mysql, "d", "r").expect_err("empty");
        assert!(err.to_string().contains("empty user name"));
    }

    #[test]
    fn passwords_follow_the_default_policy() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let password = generate_password();
            assert_eq!(password.len(), 20);
            assert!(password.bytes().all(|b| PASSWORD_CHARSET.contains(&b)), "{}", password.as_str());
            assert!(password.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(password.bytes().any(|b| b.is_ascii_digit()));
            assert!(password.contains('-'));
            seen.insert(password.to_string());
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn statements_split_like_vault_but_respect_quotes() {
        let entries = vec![
            concat!(
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';\n",
                " GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
            )
            .to_owned(),
            "  ; ;".to_owned(),
            "ALTER ROLE x SET search_path = 'a;b'; SELECT \"c;d\"".to_owned(),
            "SELECT $$ x; y $$; SELECT $tag$ ; $tag$; SELECT $1".to_owned(),
            "SELECT 1 -- a; comment\n; SELECT /* b; */ 2".to_owned(),
            "DO $$ BEGIN CREATE ROLE a; END $$;".to_owned(),
            "BEGIN NOT ATOMIC SELECT 1; SELECT 2; END".to_owned(),
        ];
        assert_eq!(
            split_statements(&entries),
            vec![
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\"",
                "ALTER ROLE x SET search_path = 'a;b'",
                "SELECT \"c;d\"",
                "SELECT $$ x; y $$",
                "SELECT $tag$ ; $tag$",
                "SELECT $1",
                "SELECT 1 -- a; comment",
                "SELECT /* b; */ 2",
                "DO $$ BEGIN CREATE ROLE a; END $$",
                "BEGIN NOT ATOMIC SELECT 1; SELECT 2; END",
            ]
        );
        assert!(split_statements(&[]).is_empty());
        // "backend" and "weekend" are not the keyword END.
        assert_eq!(split_statements(&["SELECT backend; SELECT weekend".to_owned()]).len(), 2);
    }

    #[test]
    fn statements_render_placeholders_once() {
        let vars = StatementVars { name: "v-{{password}}", password: Some("pw"), expiration: Some(1_700_000_000) };
        assert_eq!(
            render_statement(
                "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' -- {{username}}{{x}}",
                &vars
            ),
            "CREATE ROLE \"v-{{password}}\" PASSWORD 'pw' VALID UNTIL '2023-11-14 22:13:20+0000' -- v-{{password}}{{x}}"
        );
        let bare = StatementVars { name: "u", ..StatementVars::default() };
        assert_eq!(render_statement("{{password}} {{expiration}} {{", &bare), "{{password}} {{expiration}} {{");
        assert!(!format!("{vars:?}").contains("pw\""));
    }

    #[test]
    fn expiration_formats_in_utc_and_clamps() {
        assert_eq!(format_expiration(0), "1970-01-01 00:00:00+0000");
        assert_eq!(format_expiration(i64::MAX), "9999-12-31 23:59:59+0000");
        assert_eq!(format_expiration(i64::MIN), "1970-01-01 00:00:00+0000");
    }
}
