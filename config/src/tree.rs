//! Turns HCL or JSON text into one generic `serde_json::Value` tree, so both formats share a single validating walker.
//!
//! HCL is converted by hand rather than through `hcl::from_str` because the latter lets an
//! attribute and a block of the same name silently overwrite each other, and renders HCL
//! expressions (which Vault's dialect does not have) as strings through an `unwrap`; a config
//! that means something other than it says is worse than an error. JSON goes through a strict
//! visitor for the same reason: serde_json keeps the last of duplicate keys without a word.

use std::fmt;

use hcl::{Body, Expression, ObjectKey, Structure};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::{quote, ConfigError};

/// A Vault config uses a few dozen of the characters counted by [`nesting_budget`]; far more
/// than this can only be an accident or an attack on the parser's stack.
const MAX_NESTING_BUDGET: usize = 4096;

/// Stack reserved per counted character. Measured worst cases are ~27 KiB per level in debug
/// builds and ~7 KiB in release; the rest is margin. Only touched pages are ever committed.
const STACK_PER_LEVEL: usize = 64 * 1024;
const BASE_STACK: usize = 2 * 1024 * 1024;

pub(crate) fn from_json(source: &str, origin: &str) -> Result<Value, ConfigError> {
    let syntax = |e: serde_json::Error| ConfigError::Syntax {
        origin: origin.to_string(),
        message: format!("invalid JSON: {e}"),
    };
    let mut de = serde_json::Deserializer::from_str(source);
    let StrictValue(value) = StrictValue::deserialize(&mut de).map_err(syntax)?;
    de.end().map_err(syntax)?;
    Ok(value)
}

/// Parses HCL and hands the tree to `then`, all on a thread whose stack fits the input's
/// nesting: dropping a deep tree recurses as much as building it, so it never leaves that thread.
pub(crate) fn with_hcl<T: Send>(
    source: &str,
    origin: &str,
    then: impl FnOnce(&Value) -> Result<T, ConfigError> + Send,
) -> Result<T, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax { origin: origin.to_string(), message };
    // hcl-edit is a recursive-descent parser with no depth limit, so a deeply nested input
    // would overflow the stack and abort the process. Bounding the depth up front and giving
    // the parser a stack sized for that bound turns such input into an ordinary error.
    let budget = nesting_budget(source);
    if budget > MAX_NESTING_BUDGET {
        return Err(syntax(format!(
            "invalid HCL: {budget} brackets and operator characters, more than the {MAX_NESTING_BUDGET} any Vault config needs"
        )));
    }
    // hcl-edit's error locator indexes `len - 1`; empty input has no error to locate anyway.
    if source.is_empty() {
        return then(&Value::Object(Map::new()));
    }
    let stack = BASE_STACK + budget * STACK_PER_LEVEL;
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("hcl-parse".to_string())
            .stack_size(stack)
            .spawn_scoped(scope, || {
                let body = hcl::parse(source).map_err(|e| syntax(format!("invalid HCL:\n{e}")))?;
                let tree = Converter { origin }.body(body, "").map(Value::Object)?;
                then(&tree)
            })
            .map_err(|source| ConfigError::Io { origin: origin.to_string(), source })?;
        // A panic inside hcl-edit must end as an error, not take the server down.
        parser.join().unwrap_or_else(|_| Err(syntax("invalid HCL: the parser failed on this input".to_string())))
    })
}

/// An upper bound on the parser's recursion depth: every level it can nest (brackets, block
/// bodies, template interpolations and directives, unary, binary and conditional operators)
/// consumes at least one of these characters. Counting them everywhere, strings and comments
/// included, overestimates but cannot be fooled by clever quoting.
fn nesting_budget(source: &str) -> usize {
    let bytes = source.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|&(i, b)| match b {
            b'{' | b'[' | b'(' | b'!' | b'?' | b'-' | b'+' | b'*' | b'/' | b'%' | b'&' | b'|' | b'<' | b'>' => true,
            // A lone `=` is an assignment; only `==` is an operator.
            b'=' => bytes.get(i + 1) == Some(&b'='),
            _ => false,
        })
        .count()
}

/// One name inside an HCL body while its blocks are being grouped.
enum Node {
    Attribute(Value),
    /// Bodies of unlabelled blocks (or of the last label level) in source order.
    Bodies(Vec<Map<String, Value>>),
    /// The next label level, in source order.
    Labels(Vec<(String, Node)>),
}

struct Converter<'a> {
    origin: &'a str,
}

impl Converter<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { origin: self.origin.to_string(), key: key.to_string(), message: message.into() }
    }

    /// Follows the HCL JSON spec layout (`name.label1.label2 = body`, repeated blocks become a
    /// list), which is also how Vault's JSON configs are written.
    fn body(&self, body: Body, prefix: &str) -> Result<Map<String, Value>, ConfigError> {
        let mut nodes: Vec<(String, Node)> = Vec::new();
        for structure in body {
            match structure {
                Structure::Attribute(attr) => {
                    let name = attr.key.into_inner();
                    let path = join(prefix, &name);
                    // hcl-edit rejects this today; the check keeps that a local guarantee.
                    if nodes.iter().any(|(k, _)| *k == name) {
                        return Err(self.invalid(&path, "defined more than once"));
                    }
                    let value = self.expr(attr.expr, &path)?;
                    nodes.push((name, Node::Attribute(value)));
                }
                Structure::Block(block) => {
                    let name = block.identifier.into_inner();
                    let labels: Vec<String> = block.labels.into_iter().map(|l| l.into_inner()).collect();
                    let mut path = join(prefix, &name);
                    for label in &labels {
                        path = join(&path, label);
                    }
                    let body = self.body(block.body, &path)?;
                    add_block(&mut nodes, name, &labels, body).map_err(|why| self.invalid(&path, why))?;
                }
            }
        }
        Ok(nodes.into_iter().map(|(k, n)| (k, node_value(n))).collect())
    }

    fn expr(&self, expr: Expression, path: &str) -> Result<Value, ConfigError> {
        Ok(match expr {
            Expression::Null => Value::Null,
            Expression::Bool(b) => Value::Bool(b),
            Expression::String(s) => Value::String(s),
            Expression::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else if let Some(i) = n.as_i64() {
                    Value::from(i)
                } else {
                    n.as_f64()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| self.invalid(path, "number is out of range"))?
                }
            }
            // Vault's HCL dialect has no interpolation, so "${...}" is kept as literal text.
            Expression::TemplateExpr(t) => Value::String(t.to_string()),
            Expression::Parenthesis(inner) => self.expr(*inner, path)?,
            Expression::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.expr(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Expression::Object(object) => {
                let mut map = Map::new();
                for (key, value) in object {
                    let key = match key {
                        ObjectKey::Identifier(ident) => ident.into_inner(),
                        ObjectKey::Expression(Expression::String(s)) => s,
                        _ => {
                            return Err(
                                self.invalid(path, "object keys must be names or plain strings, not expressions")
                            )
                        }
                    };
                    let child = join(path, &key);
                    if map.contains_key(&key) {
                        return Err(self.invalid(&child, "defined more than once"));
                    }
                    let value = self.expr(value, &child)?;
                    map.insert(key, value);
                }
                Value::Object(map)
            }
            _ => {
                return Err(self.invalid(
                    path,
                    "expected a literal value; Vault's config format does not evaluate HCL expressions",
                ))
            }
        })
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn add_block(
    nodes: &mut Vec<(String, Node)>,
    name: String,
    labels: &[String],
    body: Map<String, Value>,
) -> Result<(), &'static str> {
    let index = match nodes.iter().position(|(k, _)| *k == name) {
        Some(i) => i,
        None => {
            let fresh = if labels.is_empty() { Node::Bodies(Vec::new()) } else { Node::Labels(Vec::new()) };
            nodes.push((name, fresh));
            nodes.len() - 1
        }
    };
    let Some((_, node)) = nodes.get_mut(index) else {
        return Err("internal error while grouping blocks");
    };
    match (node, labels.split_first()) {
        (Node::Bodies(bodies), None) => {
            bodies.push(body);
            Ok(())
        }
        (Node::Labels(children), Some((first, rest))) => add_block(children, first.clone(), rest, body),
        (Node::Attribute(_), _) => Err("defined both as an attribute and as a block"),
        _ => Err("blocks of this name are written with different numbers of labels"),
    }
}

fn node_value(node: Node) -> Value {
    match node {
        Node::Attribute(v) => v,
        Node::Bodies(mut bodies) => {
            if bodies.len() == 1 {
                Value::Object(bodies.remove(0))
            } else {
                Value::Array(bodies.into_iter().map(Value::Object).collect())
            }
        }
        Node::Labels(children) => Value::Object(children.into_iter().map(|(k, n)| (k, node_value(n))).collect()),
    }
}

/// A `serde_json::Value` whose deserialization rejects duplicate object keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number is out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key {}", quote(&key))));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hcl(source: &str) -> Result<Value, String> {
        with_hcl(source, "t.hcl", |tree| Ok(tree.clone())).map_err(|e| e.to_string())
    }

    #[test]
    fn hcl_blocks_follow_the_json_layout() {
        let cases = [
            (r#"storage "sled" { path = "/x" }"#, json!({"storage": {"sled": {"path": "/x"}}})),
            (
                "listener \"tcp\" {\n a = 1\n}\nlistener \"tcp\" {\n a = 2\n}\n",
                json!({"listener": {"tcp": [{"a": 1}, {"a": 2}]}}),
            ),
            (
                "listener \"tcp\" {\n a = 1\n}\nlistener \"unix\" {\n a = 2\n}\n",
                json!({"listener": {"tcp": {"a": 1}, "unix": {"a": 2}}}),
            ),
            ("telemetry {\n x = true\n}\n", json!({"telemetry": {"x": true}})),
            ("telemetry {}\ntelemetry {}\n", json!({"telemetry": [{}, {}]})),
            (
                "a \"b\" \"c\" {\n d = [1, 2.5, \"${x}\", null]\n e = { f = \"g\", \"h\" = (1) }\n}\n",
                json!({"a": {"b": {"c": {"d": [1, 2.5, "${x}", null], "e": {"f": "g", "h": 1}}}}}),
            ),
            ("", json!({})),
        ];
        for (source, expected) in cases {
            assert_eq!(hcl(source).unwrap(), expected, "source {source:?}");
        }
    }

    #[test]
    fn hcl_ambiguities_are_errors() {
        let cases = [
            ("a = 1\na = 2\n", "t.hcl: invalid HCL:\n --> HCL parse error in line 2, column 1"),
            ("a = 1\na {}\n", "t.hcl: a: defined both as an attribute and as a block"),
            ("a \"x\" {}\na {}\n", "t.hcl: a: blocks of this name are written with different numbers of labels"),
            ("b {\n a = 1\n a = 2\n}\n", "t.hcl: invalid HCL:\n --> HCL parse error in line 3"),
            // hcl-rs already merges `{ b = 1, b = 2 }` (last wins); only differently spelled keys reach us.
            ("a = { b = 1, \"b\" = 2 }\n", "t.hcl: a.b: defined more than once"),
            ("a = foo.bar\n", "t.hcl: a: expected a literal value"),
            ("a = upper(\"x\")\n", "t.hcl: a: expected a literal value"),
            ("a = 1 + 2\n", "t.hcl: a: expected a literal value"),
        ];
        for (source, expected) in cases {
            let err = hcl(source).unwrap_err();
            assert!(err.starts_with(expected), "source {source:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let too_deep = [
            format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a = \"${{{}1}}\"", "!".repeat(5_000)),
            format!("a = {}1\n", "1==".repeat(5_000)),
        ];
        for source in too_deep {
            let err = hcl(&source).unwrap_err();
            assert!(err.contains("more than the 4096 any Vault config needs"), "{err}");
        }
        // Just under the limit, in the constructs that cost the most stack per level, the
        // parser must finish on its own thread (with whatever result) instead of aborting.
        let n = MAX_NESTING_BUDGET / 2;
        let near_limit = [
            format!("a = \"${{{}{}}}\"", "[".repeat(n * 2 - 2), "]".repeat(n * 2 - 2)),
            format!("{}{}", "a {\n".repeat(n * 2), "}\n".repeat(n * 2)),
            format!("a = \"{}{}\"", "%{ if a }".repeat(n / 2), "%{ endif }".repeat(n / 2)),
            format!("a = {}1\n", "a ? 1 : ".repeat(n * 2 - 1)),
        ];
        for source in near_limit {
            let budget = nesting_budget(&source);
            assert!(budget <= MAX_NESTING_BUDGET, "{budget}: {}", source.get(..20).unwrap_or_default());
            let _ = with_hcl(&source, "t.hcl", |_| Ok(()));
        }
        assert_eq!(nesting_budget("a = 1\nb == c /* - */ \"[\""), 7);
    }

    #[test]
    fn json_rejects_duplicate_keys_and_trailing_text() {
        let cases = [
            (r#"{"a": 1, "a": 2}"#, "duplicate key \"a\" at line 1"),
            (r#"{"b": {"a": 1, "a": 2}}"#, "duplicate key \"a\""),
            (r#"{} x"#, "trailing characters at line 1 column 4"),
            (r#"{"a": }"#, "expected value at line 1 column 7"),
        ];
        for (source, expected) in cases {
            let err = from_json(source, "t.json").unwrap_err().to_string();
            assert!(err.starts_with("t.json: invalid JSON: ") && err.contains(expected), "source {source:?}: {err}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(from_json(&deep, "t.json").is_err());
        assert_eq!(
            from_json(r#"{"a": [1, -2, 1.5, "s", null, true]}"#, "t.json").unwrap(),
            json!({"a": [1, -2, 1.5, "s", null, true]})
        );
    }
}
