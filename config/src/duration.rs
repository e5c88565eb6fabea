//! Vault-compatible duration parsing: Vault's `ParseDurationSecond` rules on top of Go's `time.ParseDuration`.

use std::time::Duration;

use serde_json::Value;

use crate::quote;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Go's `time.Duration` is an `i64` of nanoseconds, so no Vault config can hold a longer
/// duration; capping here also keeps the server's `Instant + Duration` arithmetic from
/// overflowing (which would panic).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration string the way Vault's `ParseDurationSecond` does.
///
/// * `""` is zero.
/// * Digits only (`"3600"`) are seconds.
/// * `"<int>d"` is days; days cannot be combined with other units (`"1d2h"` is an error).
/// * Anything else follows Go's `time.ParseDuration`: units `ns`, `us`, `µs`, `ms`, `s`, `m`,
///   `h`, decimal fractions and compounds (`"1h30m"`, `"1.5h"`, `"500ms"`).
///
/// Unlike Vault, a leading `-` is rejected: a negative lease TTL has no meaning.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("negative durations are not allowed, got {}", quote(s)));
    }
    // Go's strconv.ParseInt and time.ParseDuration both accept one leading '+'.
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return scaled(unsigned, NANOS_PER_SEC, s);
    }
    if let Some(days) = unsigned.strip_suffix('d') {
        if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) {
            return scaled(days, 86_400 * NANOS_PER_SEC, s);
        }
        return Err(format!(
            "invalid duration {}: a \"d\" suffix needs a whole number of days and cannot be combined with other units",
            quote(s)
        ));
    }
    go_parse_duration(unsigned, s).map(from_nanos)
}

/// Parses a duration from a decoded JSON/HCL value: numbers are seconds (fractions allowed,
/// negatives rejected), strings follow [`parse_duration`], and `null` is zero.
pub fn parse_duration_value(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Null => Ok(Duration::ZERO),
        Value::String(s) => parse_duration(s),
        Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                return checked(u128::from(secs) * NANOS_PER_SEC, &n.to_string());
            }
            if n.as_i64().is_some() {
                return Err(format!("negative durations are not allowed, got {n}"));
            }
            let secs = n.as_f64().unwrap_or(f64::NAN);
            if secs < 0.0 {
                return Err(format!("negative durations are not allowed, got {n}"));
            }
            let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {n} is out of range"))?;
            checked(d.as_nanos(), &n.to_string())
        }
        Value::Bool(b) => Err(format!("expected a number of seconds or a duration string, got {b}")),
        Value::Array(_) => Err("expected a number of seconds or a duration string, got a list".to_string()),
        Value::Object(_) => Err("expected a number of seconds or a duration string, got an object".to_string()),
    }
}

/// `digits` times `unit` nanoseconds, range-checked. `digits` must be ASCII digits.
fn scaled(digits: &str, unit: u128, orig: &str) -> Result<Duration, String> {
    let n = parse_digits(digits).ok_or_else(|| out_of_range(orig))?;
    let nanos = n.checked_mul(unit).ok_or_else(|| out_of_range(orig))?;
    checked(nanos, orig)
}

fn checked(nanos: u128, orig: &str) -> Result<Duration, String> {
    if nanos > MAX_NANOS {
        Err(out_of_range(orig))
    } else {
        Ok(from_nanos(nanos))
    }
}

fn out_of_range(orig: &str) -> String {
    format!("duration {} is out of range", quote(orig))
}

fn from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

/// Parses ASCII digits into a `u128`, `None` if it would not fit.
fn parse_digits(digits: &str) -> Option<u128> {
    // Leading zeros are harmless in Go, and stripping them keeps the length check honest.
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    significant.parse().ok()
}

/// Port of Go's `time.ParseDuration` for an unsigned input, returning nanoseconds.
fn go_parse_duration(mut s: &str, orig: &str) -> Result<u128, String> {
    let invalid = || format!("invalid duration {}", quote(orig));
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, s) = rest.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("missing unit in duration {}", quote(orig)));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => {
                let hint = if unit == "d" { " (days can only be used alone, as in \"7d\")" } else { "" };
                return Err(format!("unknown unit {} in duration {}{hint}", quote(unit), quote(orig)));
            }
        };
        let whole =
            parse_digits(int_digits).and_then(|n| n.checked_mul(unit_nanos)).ok_or_else(|| out_of_range(orig))?;
        // Digits past the 20th are far below a nanosecond even for hours, and dropping them
        // keeps `fraction * unit_nanos` inside u128.
        let frac_digits = frac_digits.get(..20).unwrap_or(frac_digits);
        let fraction = match parse_digits(frac_digits) {
            Some(f) if f > 0 => {
                let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(20));
                f * unit_nanos / scale
            }
            _ => 0,
        };
        total = total
            .checked_add(whole)
            .and_then(|t| t.checked_add(fraction))
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| out_of_range(orig))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: Value, expected: Result<Duration, &str>) {
        let got = parse_duration_value(&input);
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "input {input}"),
            (Err(g), Err(e)) => assert!(g.contains(e), "input {input}: error {g:?} should contain {e:?}"),
            _ => panic!("input {input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn duration_table() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases: Vec<(Value, Result<Duration, &str>)> = vec![
            (json!(""), Ok(Duration::ZERO)),
            (json!("0"), Ok(Duration::ZERO)),
            (json!("3600"), Ok(secs(3600))),
            (json!(3600), Ok(secs(3600))),
            (json!(1.5), Ok(ms(1500))),
            (json!(null), Ok(Duration::ZERO)),
            (json!("7d"), Ok(secs(7 * 86_400))),
            (json!("1d2h"), Err("unknown unit \"d\" in duration \"1d2h\" (days can only be used alone")),
            (json!("2h1d"), Err("a \"d\" suffix needs a whole number of days")),
            (json!("1.5d"), Err("whole number of days")),
            (json!("1h30m"), Ok(secs(5400))),
            (json!("1.5h"), Ok(secs(5400))),
            (json!("10s"), Ok(secs(10))),
            (json!("500ms"), Ok(ms(500))),
            (json!("2µs"), Ok(Duration::from_micros(2))),
            (json!("2μs"), Ok(Duration::from_micros(2))),
            (json!("1us"), Ok(Duration::from_micros(1))),
            (json!("3ns"), Ok(Duration::from_nanos(3))),
            (json!("768h"), Ok(secs(768 * 3600))),
            (json!("1h0.5m1.25s"), Ok(ms(3_600_000 + 30_000 + 1_250))),
            (json!(".5s"), Ok(ms(500))),
            (json!("5."), Err("missing unit")),
            (json!("+5s"), Ok(secs(5))),
            (json!("5"), Ok(secs(5))),
            (json!("-5s"), Err("negative durations are not allowed")),
            (json!("-5"), Err("negative durations are not allowed")),
            (json!(-5), Err("negative durations are not allowed")),
            (json!(-0.5), Err("negative durations are not allowed")),
            (json!("abc"), Err("invalid duration \"abc\"")),
            (json!("5x"), Err("unknown unit \"x\"")),
            (json!("5 s"), Err("unknown unit \" s\"")),
            (json!("1h30"), Err("missing unit")),
            (json!("."), Err("invalid duration")),
            (json!("+"), Err("invalid duration")),
            (json!("d"), Err("whole number of days")),
            (json!("99999999999999999999999999999999999999999"), Err("out of range")),
            (json!("2562048h"), Err("out of range")),
            (json!("2562047h"), Ok(secs(2_562_047 * 3600))),
            (json!(1e300), Err("out of range")),
            (json!(u64::MAX), Err("out of range")),
            (json!(true), Err("got true")),
            (json!([1]), Err("got a list")),
            (json!({}), Err("got an object")),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn long_fractions_do_not_overflow() {
        let got = parse_duration("1.99999999999999999999999999999999h").unwrap();
        assert!(got < Duration::from_secs(7200) && got > Duration::from_secs(7199));
    }
}
