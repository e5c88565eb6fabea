//! Request-parameter constraints of the winning rule (`required_parameters`, `denied_parameters`,
//! `allowed_parameters`), evaluated in Vault's order with Vault's value-matching rules.

use crate::acl::Permissions;
use serde_json::{Map, Value};

/// `Err` carries the refusal reason returned to the client.
pub(crate) fn check_parameters(permissions: &Permissions, data: Option<&Map<String, Value>>) -> Result<(), String> {
    // Vault looks the lower-cased required name up in the request data as sent (request keys are not
    // lower-cased for this check).
    for name in &permissions.required {
        let key = name.to_lowercase();
        if !data.is_some_and(|d| d.contains_key(&key)) {
            return Err(format!("missing required parameter {key:?}"));
        }
    }
    let Some(data) = data.filter(|d| !d.is_empty()) else {
        return Ok(());
    };

    if !permissions.denied.is_empty() {
        if permissions.denied.contains_key("*") {
            let first = data.keys().next().map(String::as_str).unwrap_or_default();
            return Err(format!("parameter {first:?} is denied"));
        }
        for (key, value) in data {
            if let Some(values) = permissions.denied.get(&key.to_lowercase()) {
                if values.is_empty() {
                    return Err(format!("parameter {key:?} is denied"));
                }
                if value_in_denied_list(value, values) {
                    return Err(format!("parameter {key:?}: value is denied"));
                }
            }
        }
    }

    if permissions.allowed.is_empty() {
        return Ok(());
    }
    let allow_any_key = permissions.allowed.contains_key("*");
    if allow_any_key && permissions.allowed.len() == 1 {
        return Ok(());
    }
    for (key, value) in data {
        match permissions.allowed.get(&key.to_lowercase()) {
            None if allow_any_key => {}
            None => return Err(format!("parameter {key:?} is not allowed")),
            Some(values) => {
                if !value_in_allowed_list(value, values) {
                    return Err(format!("parameter {key:?}: value is not allowed"));
                }
            }
        }
    }
    Ok(())
}

/// An allowed list accepts a value that matches one entry; a list value, or a string that may be a
/// comma-separated list (Vault cannot know the field type), is accepted when every element is.
/// Like Vault, this means an empty string or empty list passes any non-empty allowed list.
fn value_in_allowed_list(value: &Value, list: &[Value]) -> bool {
    if list.is_empty() || value_in_list(value, list) {
        return true;
    }
    match value {
        Value::Array(items) => items.iter().all(|v| value_in_list(v, list)),
        Value::String(s) => comma_elements(s).all(|e| string_in_list(e, list)),
        _ => false,
    }
}

/// A denied list refuses a value that matches one entry, or a list / comma-separated string with any
/// element that does.
fn value_in_denied_list(value: &Value, list: &[Value]) -> bool {
    if list.is_empty() || value_in_list(value, list) {
        return true;
    }
    match value {
        Value::Array(items) => items.iter().any(|v| value_in_list(v, list)),
        Value::String(s) => comma_elements(s).any(|e| string_in_list(e, list)),
        _ => false,
    }
}

/// Vault's comma-string parsing: split on `,` and trim each element; the empty string has no elements.
fn comma_elements(s: &str) -> impl Iterator<Item = &str> {
    let parts = if s.is_empty() { None } else { Some(s.split(',').map(str::trim)) };
    parts.into_iter().flatten()
}

fn string_in_list(s: &str, list: &[Value]) -> bool {
    list.iter().any(|el| el.as_str().is_some_and(|pattern| globbed_strings_match(pattern, s)))
}

/// One value against a list: strings by equality or an edge `*` glob, `null` only against `null`,
/// everything else by deep equality.
fn value_in_list(value: &Value, list: &[Value]) -> bool {
    list.iter().any(|el| match (el, value) {
        (Value::String(pattern), Value::String(s)) => globbed_strings_match(pattern, s),
        (Value::String(_), _) => false,
        (el, value) => el == value,
    })
}

/// `*foo*` = contains, `*foo` = suffix, `foo*` = prefix, otherwise equality; a lone `*` is literal.
pub(crate) fn globbed_strings_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => rest.strip_suffix('*').is_some_and(|middle| value.contains(middle)),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(globbed_strings_match("foo-*", "foo-bar"));
        assert!(!globbed_strings_match("foo-*", "bar-foo"));
        assert!(globbed_strings_match("*-foo", "bar-foo"));
        assert!(globbed_strings_match("*oo*", "zoom"));
        assert!(globbed_strings_match("**", "anything"));
        assert!(globbed_strings_match("*", "*"));
        assert!(!globbed_strings_match("*", "x"));
        assert!(globbed_strings_match("", ""));
        assert!(!globbed_strings_match("a*b", "axb"));
        assert!(globbed_strings_match("a*b", "a*b"));
        assert!(globbed_strings_match("é*", "éa"));
    }

    #[test]
    fn value_matching() {
        let list = [json!("a"), json!("b-*"), json!(5), json!(true), json!({"k": "v"})];
        assert!(value_in_list(&json!("b-x"), &list));
        assert!(value_in_list(&json!(5), &list));
        assert!(!value_in_list(&json!("5"), &list));
        assert!(value_in_list(&json!({"k": "v"}), &list));
        assert!(!value_in_list(&json!(null), &list));
        assert!(value_in_list(&json!(null), &[json!(null)]));
        assert!(value_in_allowed_list(&json!(["a", "b-1"]), &list));
        assert!(!value_in_allowed_list(&json!(["a", "c"]), &list));
        assert!(value_in_allowed_list(&json!("a, b-2"), &list));
        assert!(!value_in_allowed_list(&json!("a,c"), &list));
        assert!(value_in_allowed_list(&json!(""), &list));
        assert!(value_in_denied_list(&json!("c,a"), &list));
        assert!(value_in_denied_list(&json!(["c", "a"]), &list));
        assert!(!value_in_denied_list(&json!("c"), &list));
        assert!(value_in_denied_list(&json!("anything"), &[]));
    }
}
