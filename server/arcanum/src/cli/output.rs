//! Printing answers the way Vault's CLI does: Key/Value tables, column tables, `-format=json`.
//!
//! Table cells use Go's `%v` rendering (`[a b]`, `map[k:v]`, `<nil>`) because scripts written
//! against `vault` parse that text; JSON output is the server's JSON unchanged.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Format;

pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// A Key/Value table; the key column is padded to its widest entry like Vault's columnize.
pub fn print_table<K: AsRef<str>>(rows: &[(K, String)]) {
    let width = rows.iter().map(|(key, _)| key.as_ref().chars().count()).max().unwrap_or(3).max(3);
    println!("{:width$}    Value\n{:width$}    -----", "Key", "---");
    for (key, value) in rows {
        println!("{:width$}    {}", key.as_ref(), or_na(value));
    }
}

/// A table with a header row, a dash row and one line per entry; the last column is not padded.
pub fn print_columns(headers: &[&str], rows: &[Vec<String>]) {
    let dashes: Vec<String> = headers.iter().map(|h| "-".repeat(h.chars().count())).collect();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let all: Vec<&Vec<String>> = [&header, &dashes].into_iter().chain(rows).collect();
    let columns = headers.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| all.iter().map(|row| row.get(c).map_or(0, |cell| cell.chars().count())).max().unwrap_or(0))
        .collect();
    for row in all {
        let mut line = String::new();
        for (c, width) in widths.iter().enumerate() {
            let cell = or_na(row.get(c).map_or("", String::as_str));
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:width$}    "));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Vault's tables (columnize with `Empty: "n/a"`) show empty cells as `n/a`.
fn or_na(cell: &str) -> &str {
    if cell.is_empty() {
        "n/a"
    } else {
        cell
    }
}

/// Go's `%v` of a JSON value decoded into `interface{}`.
pub fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::String(text) => text.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            let cells: Vec<String> = sorted.into_iter().map(|(k, v)| format!("{k}:{}", go_value(v))).collect();
            format!("map[{}]", cells.join(" "))
        }
    }
}

/// Go's `%q` of a string list (`["default" "dev"]`), used for the policy rows of an auth block.
fn go_quoted_list(value: &Value) -> String {
    let items: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

/// Vault's `humanDuration`: Go's `Duration.String()` without the zero minutes and seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let sign = if seconds < 0 { "-" } else { "" };
    let total = seconds.unsigned_abs();
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// `humanDurationInt`: numbers (and numeric strings) as durations, anything else unchanged.
fn duration_cell(value: &Value) -> String {
    let seconds = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    seconds.map_or_else(|| go_value(value), human_duration)
}

/// Vault prints fields that look like TTLs as durations rather than seconds.
fn looks_like_duration(key: &str) -> bool {
    ["period", "ttl", "duration"].iter().any(|word| key == *word || key.ends_with(&format!("_{word}")))
        || key == "lease_max"
        || key == "ttl_max"
}

/// The rows of `data` (sorted keys, Go `%v` values, TTL-like keys as durations).
pub fn data_rows(data: &Value) -> Vec<(String, String)> {
    let Some(map) = data.as_object() else { return Vec::new() };
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    sorted
        .into_iter()
        .map(|(key, value)| {
            let cell = if looks_like_duration(key) { duration_cell(value) } else { go_value(value) };
            (key.clone(), cell)
        })
        .collect()
}

/// Vault's `OutputSecret` in table form: lease fields, the auth block, then the data keys.
pub fn secret_rows(secret: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(wrap) = secret["wrap_info"].as_object() {
        let text = |key: &str| wrap.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        rows.push(("wrapping_token:".to_owned(), text("token")));
        rows.push(("wrapping_accessor:".to_owned(), text("accessor")));
        let ttl = wrap.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        rows.push(("wrapping_token_ttl:".to_owned(), human_duration(ttl)));
        rows.push(("wrapping_token_creation_time:".to_owned(), text("creation_time")));
        rows.push(("wrapping_token_creation_path:".to_owned(), text("creation_path")));
        if !text("wrapped_accessor").is_empty() {
            rows.push(("wrapped_accessor:".to_owned(), text("wrapped_accessor")));
        }
        return rows;
    }
    let lease_duration = secret["lease_duration"].as_i64().unwrap_or(0);
    if lease_duration > 0 {
        let lease_id = secret["lease_id"].as_str().unwrap_or_default();
        if lease_id.is_empty() {
            // KV leases are advisory, so Vault calls them a refresh interval.
            rows.push(("refresh_interval".to_owned(), human_duration(lease_duration)));
        } else {
            rows.push(("lease_id".to_owned(), lease_id.to_owned()));
            rows.push(("lease_duration".to_owned(), human_duration(lease_duration)));
            rows.push(("lease_renewable".to_owned(), go_value(&secret["renewable"])));
        }
    }
    let auth = &secret["auth"];
    if auth.is_object() {
        rows.push(("token".to_owned(), auth["client_token"].as_str().unwrap_or_default().to_owned()));
        rows.push(("token_accessor".to_owned(), auth["accessor"].as_str().unwrap_or_default().to_owned()));
        let duration = auth["lease_duration"].as_i64().unwrap_or(0);
        // A zero duration is a root-like token that never expires.
        let duration = if duration == 0 { "∞".to_owned() } else { human_duration(duration) };
        rows.push(("token_duration".to_owned(), duration));
        rows.push(("token_renewable".to_owned(), auth["renewable"].as_bool().unwrap_or(false).to_string()));
        rows.push(("token_policies".to_owned(), go_quoted_list(&auth["token_policies"])));
        rows.push(("identity_policies".to_owned(), go_quoted_list(&auth["identity_policies"])));
        rows.push(("policies".to_owned(), go_quoted_list(&auth["policies"])));
        if let Some(meta) = auth["metadata"].as_object() {
            let sorted: BTreeMap<&String, &Value> = meta.iter().collect();
            for (key, value) in sorted {
                rows.push((format!("token_meta_{key}"), go_value(value)));
            }
        }
    }
    rows.extend(data_rows(&secret["data"]));
    rows
}

/// Warnings go to stderr like Vault's `ui.Warn`, so table output stays parseable.
pub fn print_warnings(secret: &Value) {
    let warnings: Vec<&str> = secret["warnings"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !warnings.is_empty() {
        eprintln!("WARNING! The following warnings were returned from Arcanum:\n");
        for warning in warnings {
            eprintln!("  * {warning}");
        }
        eprintln!();
    }
}

/// A whole response in the chosen format.
pub fn print_secret(format: Format, secret: &Value) {
    match format {
        Format::Json => print_json(secret),
        Format::Table => {
            print_warnings(secret);
            let rows = secret_rows(secret);
            if !rows.is_empty() {
                print_table(&rows);
            }
        }
    }
}

/// The `keys` of a LIST answer: a `Keys` column in table form, the bare array in JSON.
pub fn print_keys(format: Format, secret: &Value) {
    let keys = &secret["data"]["keys"];
    match format {
        Format::Json => print_json(keys),
        Format::Table => {
            print_warnings(secret);
            let rows: Vec<Vec<String>> = keys.as_array().into_iter().flatten().map(|k| vec![go_value(k)]).collect();
            print_columns(&["Keys"], &rows);
        }
    }
}

/// Vault's `padEqualSigns`: `== Title ==` centred over `total` columns.
pub fn pad_equal_signs(title: &str, total: usize) -> String {
    let mut signs = total.saturating_sub(title.chars().count() + 2);
    if signs == 0 {
        signs = 4;
    }
    if !signs.is_multiple_of(2) {
        signs += 1;
    }
    let side = "=".repeat(signs / 2);
    format!("{side} {title} {side}")
}

/// Vault's `getHeaderForMap`: a header as wide as the Key/Value table printed below it.
pub fn header_for_map(title: &str, data: &Value) -> String {
    let widest = data.as_object().into_iter().flatten().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pad_equal_signs(title, widest + 4 + 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_render_like_go() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(2_764_800), "768h");
        assert_eq!(human_duration(90), "1m30s");
        assert_eq!(human_duration(3660), "1h1m");
        assert_eq!(human_duration(3601), "1h1s");
    }

    #[test]
    fn values_render_like_go_percent_v() {
        assert_eq!(go_value(&json!(["a", "b"])), "[a b]");
        assert_eq!(go_value(&json!({"b": 1, "a": null})), "map[a:<nil> b:1]");
        assert_eq!(go_quoted_list(&json!(["default", "dev"])), r#"["default" "dev"]"#);
    }

    #[test]
    fn secret_rows_show_refresh_interval_and_durations() {
        let secret = json!({"lease_id": "", "lease_duration": 3600, "data": {"foo": "bar", "ttl": 60}});
        let rows = secret_rows(&secret);
        assert_eq!(rows[0], ("refresh_interval".to_owned(), "1h".to_owned()));
        assert!(rows.contains(&("ttl".to_owned(), "1m".to_owned())));
        assert_eq!(pad_equal_signs("Secret Path", "secret/data/creds".len()), "== Secret Path ==");
        assert_eq!(pad_equal_signs("Metadata", 3), "== Metadata ==");
    }
}
