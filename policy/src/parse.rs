//! Parsing policy text (HCL, or its JSON form) into path rules, with Vault's validation rules.
//!
//! Both syntaxes are first reduced to the same shape — a path string plus `(key, JSON value)` entries —
//! so that every semantic check lives in one place ([`compile_path`]) and behaves identically for both.

use crate::capability::{Capabilities, Capability};
use crate::duration::parse_duration_value;
use crate::normalize_name;
use crate::scan::prescan;
use hcl::edit::structure::{Block, Structure};
use hcl::edit::Span;
use hcl::{Expression, ObjectKey};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Parameter name (lower-cased) -> the values a constraint lists for it. An empty list means "any value".
pub type ParameterMap = BTreeMap<String, Vec<Value>>;

/// Keys Vault accepts inside a `path` block. Enterprise-only ones (`mfa_methods`, `control_group`) and
/// `subscribe_event_types` (events, which Arcanum does not serve) are accepted and ignored, as Vault OSS
/// does; OpenBao-only keys (`expiration`, `pagination_limit`, ...) are refused like Vault refuses them,
/// rather than silently dropping a restriction the author relied on.
const PATH_KEYS: &[&str] = &[
    "capabilities",
    "policy",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "comment",
    "mfa_methods",
    "control_group",
    "subscribe_event_types",
];

/// Why a policy text was refused. `Display` is one line for a 400 response; it leaves out Vault's
/// `failed to parse policy: ` lead-in so that the caller can prefix it, as Vault's own messages read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy name must not be empty")]
    EmptyName,
    /// The text is not valid HCL / JSON.
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// The text parses but breaks a rule of the policy language (unknown key or capability, bad TTL...).
    #[error("{message}{}", LineSuffix(*.line))]
    Invalid { message: String, line: Option<usize> },
}

struct LineSuffix(Option<usize>);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

/// How a rule's path matches request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternKind {
    /// Matches exactly that path (a `*` anywhere but at the end, or a `+` inside a segment, is literal).
    Exact,
    /// Ends with `*` and has no `+` segment: a plain string-prefix match.
    Prefix,
    /// Has at least one `+` segment (each matches exactly one path segment); may also end with `*`.
    Segment,
}

/// One `path "..." { ... }` stanza after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRule {
    path: String,
    kind: PatternKind,
    capabilities: Capabilities,
    allowed_parameters: ParameterMap,
    denied_parameters: ParameterMap,
    required_parameters: Vec<String>,
    min_wrapping_ttl: Duration,
    max_wrapping_ttl: Duration,
    templated: bool,
}

impl PathRule {
    /// The path as written, minus one leading `/` (Vault strips exactly one); keeps a trailing `*`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// Capabilities granted; only `deny` if the stanza denies (then it carries no parameter constraints).
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Keys are lower-cased, as Vault stores them.
    pub fn allowed_parameters(&self) -> &ParameterMap {
        &self.allowed_parameters
    }

    /// Keys are lower-cased, as Vault stores them.
    pub fn denied_parameters(&self) -> &ParameterMap {
        &self.denied_parameters
    }

    /// As written (Vault lower-cases them only when looking them up in request data).
    pub fn required_parameters(&self) -> &[String] {
        &self.required_parameters
    }

    /// `Duration::ZERO` when not set.
    pub fn min_wrapping_ttl(&self) -> Duration {
        self.min_wrapping_ttl
    }

    /// `Duration::ZERO` when not set.
    pub fn max_wrapping_ttl(&self) -> Duration {
        self.max_wrapping_ttl
    }

    /// Whether the path contains `{{identity...}}` placeholders. Identity templating is not implemented
    /// yet, so such rules are kept (they round-trip through `sys/policies`) but never match a request —
    /// the same outcome Vault gives a token whose entity cannot fill the template.
    pub fn is_templated(&self) -> bool {
        self.templated
    }
}

/// A parsed policy: normalised name, the original text (returned verbatim by `sys/policies/acl/:name`),
/// and its rules in the order written.
#[derive(Debug, Clone)]
pub struct Policy {
    name: String,
    text: String,
    rules: Vec<PathRule>,
}

impl Policy {
    /// Parses HCL or its JSON form (`{"path": {"secret/foo": {"capabilities": ["read"]}}}`); text whose first
    /// non-blank character is `{` is taken as JSON, as Vault's HCL parser does.
    ///
    /// Syntax errors name the line and column; semantic errors name the path and the offending key or
    /// value (and, for HCL, the line). Legacy `policy = "read"|"write"|"deny"|"sudo"` is supported. One
    /// leading `/` of a path is stripped. Templated paths (`{{identity.entity.id}}`) are accepted and kept
    /// but never match until identity templating is implemented.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let name = normalize_name(name);
        if name.is_empty() {
            return Err(PolicyError::EmptyName);
        }
        let rules = if text.trim_start().starts_with('{') { parse_json(text)? } else { parse_hcl(text)? };
        Ok(Policy { name, text: text.to_owned(), rules })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }

    /// Whether any rule uses identity templating (see [`PathRule::is_templated`]).
    pub fn is_templated(&self) -> bool {
        self.rules.iter().any(PathRule::is_templated)
    }
}

/// One `key = value` inside a path stanza, already converted to JSON.
struct Entry {
    key: String,
    value: Value,
    line: Option<usize>,
}

/// Byte offset -> 1-based line number.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines(starts)
    }

    fn line_of(&self, offset: usize) -> usize {
        match self.0.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    fn of(&self, item: &impl Span) -> Option<usize> {
        item.span().map(|range| self.line_of(range.start))
    }
}

fn invalid(message: impl Into<String>, line: Option<usize>) -> PolicyError {
    PolicyError::Invalid { message: message.into(), line }
}

fn parse_hcl(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    let lines = Lines::new(text);
    prescan(text).map_err(|e| {
        let line = lines.line_of(e.offset);
        let line_start = lines.0.get(line - 1).copied().unwrap_or(0);
        let column = text.get(line_start..e.offset).map_or(1, |s| s.chars().count() + 1);
        PolicyError::Syntax { line, column, message: e.message }
    })?;
    let body = hcl::edit::parser::parse_body(text).map_err(|e| PolicyError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_owned(),
    })?;
    let mut rules = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Block(block) if block.ident.as_str() == "path" => {
                let line = lines.of(block);
                let path = match block.labels.as_slice() {
                    [label] => label.as_str(),
                    _ => return Err(invalid(r#"a path stanza needs exactly one label: path "<path>" { ... }"#, line)),
                };
                let mut entries = Vec::new();
                for item in block.body.iter() {
                    let (key, value, item_line) = match item {
                        Structure::Attribute(attr) => {
                            let value = expr_to_json(attr.value.clone().into());
                            (attr.key.as_str(), value, lines.of(attr))
                        }
                        Structure::Block(inner) => (inner.ident.as_str(), block_to_json(inner), lines.of(inner)),
                    };
                    let value =
                        value.map_err(|e| invalid(format!("path {path:?}: {key:?}: {e}"), item_line.or(line)))?;
                    entries.push(Entry { key: key.to_owned(), value, line: item_line.or(line) });
                }
                rules.push(compile_path(path, &entries, line)?);
            }
            Structure::Attribute(attr) if attr.key.as_str() == "name" => {}
            // HCL1 also let the path map be written as an attribute; treat it like the JSON form.
            Structure::Attribute(attr) if attr.key.as_str() == "path" => {
                let line = lines.of(attr);
                let value = expr_to_json(attr.value.clone().into()).map_err(|e| invalid(format!("path: {e}"), line))?;
                json_paths(&value, line, &mut rules)?;
            }
            Structure::Attribute(attr) => {
                return Err(invalid(format!("unknown key {:?}", attr.key.as_str()), lines.of(attr)));
            }
            Structure::Block(block) => {
                return Err(invalid(format!("unknown key {:?}", block.ident.as_str()), lines.of(block)));
            }
        }
    }
    Ok(rules)
}

/// A nested block (`allowed_parameters { foo = [] }`, `control_group { ... }`) as a JSON object, so that
/// block and `key = { ... }` spellings mean the same thing.
fn block_to_json(block: &Block) -> Result<Value, String> {
    let mut object = Map::new();
    for item in block.body.iter() {
        match item {
            Structure::Attribute(attr) => {
                object.insert(attr.key.as_str().to_owned(), expr_to_json(attr.value.clone().into())?);
            }
            Structure::Block(inner) => {
                let mut value = block_to_json(inner)?;
                for label in inner.labels.iter().rev() {
                    let mut wrapper = Map::new();
                    wrapper.insert(label.as_str().to_owned(), value);
                    value = Value::Object(wrapper);
                }
                object.insert(inner.ident.as_str().to_owned(), value);
            }
        }
    }
    Ok(Value::Object(object))
}

/// Policies hold literal data only; anything that would need evaluation (variables, functions,
/// operators) is refused. A template string keeps its raw text, as Vault's HCL1 parser keeps `${...}`.
fn expr_to_json(expr: Expression) -> Result<Value, String> {
    Ok(match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(b),
        Expression::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("unsupported number {n}"))?
            }
        }
        Expression::String(s) => Value::String(s),
        Expression::TemplateExpr(t) => Value::String(t.to_string()),
        Expression::Array(items) => Value::Array(items.into_iter().map(expr_to_json).collect::<Result<_, _>>()?),
        Expression::Object(object) => {
            let mut map = Map::new();
            for (key, value) in object {
                let key = match key {
                    ObjectKey::Identifier(id) => id.to_string(),
                    ObjectKey::Expression(Expression::String(s)) => s,
                    ObjectKey::Expression(Expression::TemplateExpr(t)) => t.to_string(),
                    ObjectKey::Expression(Expression::Variable(v)) => v.to_string(),
                    ObjectKey::Expression(Expression::Number(n)) => n.to_string(),
                    ObjectKey::Expression(Expression::Bool(b)) => b.to_string(),
                    _ => return Err("object keys must be strings".to_owned()),
                };
                map.insert(key, expr_to_json(value)?);
            }
            Value::Object(map)
        }
        Expression::Parenthesis(inner) => expr_to_json(*inner)?,
        _ => return Err("unsupported expression: only literal values are allowed in a policy".to_owned()),
    })
}

fn parse_json(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        PolicyError::Syntax {
            line: e.line(),
            column: e.column(),
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
        }
    })?;
    let Value::Object(top) = root else {
        return Err(invalid("a JSON policy must be an object", None));
    };
    let mut rules = Vec::new();
    for (key, value) in &top {
        match key.as_str() {
            "name" => {}
            "path" => json_paths(value, None, &mut rules)?,
            other => return Err(invalid(format!("unknown key {other:?}"), None)),
        }
    }
    Ok(rules)
}

/// The value of a `"path"` key: an object of path -> stanza, or (HCL1's JSON flavour) an array of such
/// objects; a stanza may itself be an array of objects, each then a separate stanza for that path.
fn json_paths(value: &Value, line: Option<usize>, rules: &mut Vec<PathRule>) -> Result<(), PolicyError> {
    match value {
        Value::Object(paths) => {
            for (path, stanza) in paths {
                json_stanza(path, stanza, line, rules)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| json_paths(item, line, rules)),
        _ => Err(invalid(r#""path" must be an object mapping paths to stanzas"#, line)),
    }
}

fn json_stanza(path: &str, stanza: &Value, line: Option<usize>, rules: &mut Vec<PathRule>) -> Result<(), PolicyError> {
    match stanza {
        Value::Object(body) => {
            let entries: Vec<Entry> =
                body.iter().map(|(key, value)| Entry { key: key.clone(), value: value.clone(), line }).collect();
            rules.push(compile_path(path, &entries, line)?);
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| json_stanza(path, item, line, rules)),
        _ => Err(invalid(format!("path {path:?}: the stanza must be an object"), line)),
    }
}

/// A list of strings; a lone string is accepted as a one-element list, as HCL1 decoding did.
fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

/// Vault's check on identity templates: every `{{` must be closed and name an `identity.` value.
fn check_templating(path: &str) -> Result<bool, String> {
    if !path.contains("{{") {
        return Ok(false);
    }
    let mut rest = path;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unbalanced templating characters")?;
        let inner = after[..end].trim();
        if !inner.starts_with("identity.") || inner.len() == "identity.".len() {
            return Err(format!("invalid template {inner:?}: templates must name an identity value"));
        }
        rest = &after[end + 2..];
    }
    Ok(true)
}

/// Vault's rule for parameter names: a `*` is only allowed as the whole key, or as the tail of a
/// JSON-pointer key (`/a/b/*`).
fn check_parameter_key(key: &str) -> Result<(), String> {
    if !key.contains('*') || key == "*" {
        return Ok(());
    }
    if key.starts_with('/') && key.ends_with("/*") && !key[..key.len() - 2].contains('*') {
        return Ok(());
    }
    Err(format!("parameter key {key:?} cannot contain non-tail wildcards"))
}

fn parameter_map(path: &str, field: &str, entry: &Entry) -> Result<ParameterMap, PolicyError> {
    let Value::Object(object) = &entry.value else {
        return Err(invalid(
            format!("path {path:?}: {field} must be a map of parameter names to lists of values"),
            entry.line,
        ));
    };
    let mut map = ParameterMap::new();
    for (key, values) in object {
        check_parameter_key(key).map_err(|e| invalid(format!("path {path:?}: {field}: {e}"), entry.line))?;
        let values = match values {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        map.insert(key.to_lowercase(), values);
    }
    Ok(map)
}

/// All semantic validation of one stanza; `path_key` is the path exactly as written, used in messages.
fn compile_path(path_key: &str, entries: &[Entry], line: Option<usize>) -> Result<PathRule, PolicyError> {
    let fail = |message: String, at: Option<usize>| invalid(format!("path {path_key:?}: {message}"), at.or(line));

    for entry in entries {
        if !PATH_KEYS.contains(&entry.key.as_str()) {
            return Err(fail(format!("unknown key {:?}", entry.key), entry.line));
        }
    }
    let last = |key: &str| entries.iter().rev().find(|e| e.key == key);

    let path = path_key.strip_prefix('/').unwrap_or(path_key);
    let templated = check_templating(path).map_err(|e| fail(e, None))?;
    if path.contains("+*") {
        return Err(fail("invalid use of wildcards ('+*' is forbidden)".to_owned(), None));
    }
    let has_segment_wildcards = path == "+" || path.contains("/+") || path.starts_with("+/");
    let kind = if has_segment_wildcards {
        PatternKind::Segment
    } else if path.ends_with('*') {
        PatternKind::Prefix
    } else {
        PatternKind::Exact
    };

    let mut names = match last("capabilities") {
        Some(entry) => string_list(&entry.value)
            .ok_or_else(|| fail("capabilities must be a list of strings".to_owned(), entry.line))?,
        None => Vec::new(),
    };
    if let Some(entry) = last("policy") {
        let legacy = entry.value.as_str().ok_or_else(|| fail("policy must be a string".to_owned(), entry.line))?;
        let implied: &[&str] = match legacy {
            "deny" => {
                names.clear();
                &["deny"]
            }
            "read" => &["read", "list"],
            "write" => &["create", "read", "update", "delete", "list"],
            "sudo" => &["create", "read", "update", "delete", "list", "sudo"],
            other => return Err(fail(format!("invalid policy {other:?}"), entry.line)),
        };
        names.extend(implied.iter().map(|s| (*s).to_owned()));
    }

    let mut rule = PathRule {
        path: path.to_owned(),
        kind,
        capabilities: Capabilities::empty(),
        allowed_parameters: ParameterMap::new(),
        denied_parameters: ParameterMap::new(),
        required_parameters: Vec::new(),
        min_wrapping_ttl: Duration::ZERO,
        max_wrapping_ttl: Duration::ZERO,
        templated,
    };
    let caps_line = last("capabilities").and_then(|e| e.line);
    for name in &names {
        match Capability::parse(name) {
            // Like Vault, `deny` ends the stanza: nothing after it (not even a bad capability) matters,
            // and a denying stanza carries no parameter or wrapping constraints.
            Some(Capability::Deny) => {
                rule.capabilities = Capabilities::deny();
                return Ok(rule);
            }
            Some(capability) => rule.capabilities.insert(capability),
            // Vault-known capabilities for features Arcanum does not serve: valid, grant nothing here.
            None if name == "subscribe" || name == "recover" => {}
            None => return Err(fail(format!("unknown capability {name:?}"), caps_line)),
        }
    }

    if let Some(entry) = last("allowed_parameters") {
        rule.allowed_parameters = parameter_map(path_key, "allowed_parameters", entry)?;
    }
    if let Some(entry) = last("denied_parameters") {
        rule.denied_parameters = parameter_map(path_key, "denied_parameters", entry)?;
    }
    if let Some(entry) = last("required_parameters") {
        rule.required_parameters = string_list(&entry.value)
            .ok_or_else(|| fail("required_parameters must be a list of strings".to_owned(), entry.line))?;
    }
    if let Some(entry) = last("min_wrapping_ttl") {
        rule.min_wrapping_ttl = parse_duration_value(&entry.value)
            .map_err(|e| fail(format!("invalid min_wrapping_ttl: {e}"), entry.line))?;
    }
    if let Some(entry) = last("max_wrapping_ttl") {
        rule.max_wrapping_ttl = parse_duration_value(&entry.value)
            .map_err(|e| fail(format!("invalid max_wrapping_ttl: {e}"), entry.line))?;
    }
    if !rule.min_wrapping_ttl.is_zero()
        && !rule.max_wrapping_ttl.is_zero()
        && rule.max_wrapping_ttl < rule.min_wrapping_ttl
    {
        return Err(fail("max_wrapping_ttl cannot be less than min_wrapping_ttl".to_owned(), None));
    }
    Ok(rule)
}
