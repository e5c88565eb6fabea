//! Field types of Vault's request framework, shared by every handler: how a JSON value
//! (or a query-string text) becomes a boolean, a duration, a count or a list of strings,
//! and the 400 that names the field when it does not.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::logical::ApiError;

/// Go's `strconv.ParseBool` set; an empty string counts as absent.
pub fn boolean(value: Option<&Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.as_str() {
            "" => Ok(None),
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(format!("{name} must be a boolean"))),
        },
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a boolean"))),
    }
}

/// Vault's duration syntax (seconds as a number or digits, `7d`, Go's `1h30m`), in seconds.
pub fn duration_secs(value: Option<&Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => arcanum_config::duration::parse_duration_value(value)
            .map(|d| Some(d.as_secs()))
            .map_err(|err| ApiError::bad_request(format!("invalid {name}: {err}"))),
    }
}

/// A count: a non-negative JSON integer or a string of digits.
pub fn non_negative(value: Option<&Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

/// A string; absent counts as empty.
pub fn string(value: Option<&Value>, name: &str) -> Result<String, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// A map of strings (mount and audit `options`). Numbers and booleans, which some clients
/// send (hvac sends `{"version": 2}`), are kept as their text, as Vault does.
pub fn string_map(value: Option<&Value>, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    _ => return Err(ApiError::bad_request(format!("option {key} must be a string"))),
                };
                out.insert(key.clone(), text);
            }
        }
        Some(_) => return Err(ApiError::bad_request(format!("{name} must be a map of strings"))),
    }
    Ok(out)
}

/// A list of strings: a JSON array of strings, or one comma-separated string.
pub fn string_list(value: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()))
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a list of strings"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_types() {
        assert_eq!(boolean(Some(&json!("T")), "b").unwrap(), Some(true));
        assert_eq!(boolean(Some(&json!(false)), "b").unwrap(), Some(false));
        assert_eq!(boolean(Some(&json!("")), "b").unwrap(), None);
        assert!(boolean(Some(&json!("maybe")), "b").unwrap_err().errors[0].contains("b must be a boolean"));
        assert_eq!(duration_secs(Some(&json!("1h30m")), "ttl").unwrap(), Some(5400));
        assert_eq!(duration_secs(Some(&json!(60)), "ttl").unwrap(), Some(60));
        assert!(duration_secs(Some(&json!("1d2h")), "ttl").unwrap_err().errors[0].contains("invalid ttl"));
        assert_eq!(non_negative(Some(&json!("7")), "n").unwrap(), Some(7));
        assert!(non_negative(Some(&json!(-1)), "n").is_err());
        assert_eq!(string_list(Some(&json!("a, b,,c")), "l").unwrap(), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(string_list(Some(&json!(["x"])), "l").unwrap(), Some(vec!["x".into()]));
        assert!(string_list(Some(&json!([1])), "l").is_err());
        assert_eq!(string_list(None, "l").unwrap(), None);
        assert_eq!(string(Some(&json!("x")), "s").unwrap(), "x");
        assert_eq!(string(None, "s").unwrap(), "");
        assert!(string(Some(&json!(1)), "s").unwrap_err().errors[0].contains("s must be a string"));
        let options =
            string_map(Some(&json!({ "version": 2, "on": true, "skip": null, "p": "x" })), "options").unwrap();
        assert_eq!(
            options.into_iter().collect::<Vec<_>>(),
            [("on".into(), "true".into()), ("p".into(), "x".into()), ("version".into(), "2".into())]
        );
        assert!(string_map(Some(&json!({ "a": [1] })), "options").is_err());
        assert!(string_map(Some(&json!("x")), "options").unwrap_err().errors[0].contains("options must be a map"));
    }
}
