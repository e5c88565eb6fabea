//! Vault's duration syntax for `min_wrapping_ttl` / `max_wrapping_ttl` (api spec §1.6): bare numbers are
//! seconds, `"7d"` is days, anything else is a Go duration (`"90s"`, `"1h30m"`, `"1.5h"`).

use serde_json::Value;
use std::time::Duration;

/// Go's `time.Duration` is an i64 of nanoseconds; values Vault could not hold are refused rather than
/// silently wrapped.
const MAX_NANOS: u128 = i64::MAX as u128;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a policy duration. `null` and `""` mean "not set" (zero), as in Vault.
pub(crate) fn parse_duration_value(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Null => Ok(Duration::ZERO),
        Value::String(s) => parse_duration_str(s),
        Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                from_nanos(u128::from(secs) * NANOS_PER_SEC)
            } else if n.as_i64().is_some() {
                Err(format!("negative duration {n}"))
            } else {
                let secs = n.as_f64().unwrap_or(f64::NAN);
                if !secs.is_finite() || secs < 0.0 {
                    return Err(format!("invalid duration {n}"));
                }
                Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("duration {n} out of range"))
                    .and_then(|d| from_nanos(d.as_nanos()))
            }
        }
        Value::Bool(_) => Err("cannot parse a duration from a boolean".to_owned()),
        Value::Array(_) | Value::Object(_) => Err("a duration must be a string or a number".to_owned()),
    }
}

pub(crate) fn parse_duration_str(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Some(secs) = parse_go_int(s) {
        return scaled(secs, NANOS_PER_SEC, s);
    }
    if let Some(days) = s.strip_suffix('d') {
        return match parse_go_int(days) {
            Some(days) => scaled(days, 86_400 * NANOS_PER_SEC, s),
            None => Err(format!("invalid duration {s:?}")),
        };
    }
    parse_go_duration(s)
}

fn scaled(value: i128, unit: u128, original: &str) -> Result<Duration, String> {
    if value < 0 {
        return Err(format!("negative duration {original:?}"));
    }
    let nanos = value.unsigned_abs().checked_mul(unit).ok_or_else(|| format!("duration {original:?} out of range"))?;
    from_nanos(nanos)
}

fn from_nanos(nanos: u128) -> Result<Duration, String> {
    if nanos > MAX_NANOS {
        return Err("duration out of range".to_owned());
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| "duration out of range".to_owned())?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| "duration out of range".to_owned())?;
    Ok(Duration::new(secs, sub))
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, no spaces, must fit an i64.
fn parse_go_int(s: &str) -> Option<i128> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i128 = digits.parse().ok()?;
    let value = if negative { -magnitude } else { magnitude };
    (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&value).then_some(value)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers, each with an optional fraction and a
/// mandatory unit (`"300ms"`, `"1.5h"`, `"2h45m"`). Negative durations are refused.
fn parse_go_duration(original: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {original:?}");
    let mut s = original;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        return Err(format!("negative duration {original:?}"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            (frac_part, s) = rest.split_at(frac_len);
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(format!("missing unit in duration {original:?}"));
        }
        let unit = unit_nanos(unit).ok_or_else(|| format!("unknown unit {unit:?} in duration {original:?}"))?;

        let whole = if int_part.is_empty() {
            0
        } else {
            // Anything longer than 39 digits overflows u128 and is far beyond Go's range anyway.
            int_part.parse::<u128>().map_err(|_| format!("duration {original:?} out of range"))?
        };
        let mut nanos = whole.checked_mul(unit).ok_or_else(|| format!("duration {original:?} out of range"))?;
        if !frac_part.is_empty() {
            // Go keeps only as many fraction digits as it can scale exactly; 30 is well past nanosecond
            // precision for every unit, so the rest cannot change the result.
            let digits = &frac_part[..frac_part.len().min(30)];
            let numerator: u128 = digits.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(u32::try_from(digits.len()).map_err(|_| invalid())?);
            let extra = numerator.checked_mul(unit).map(|v| v / scale).ok_or_else(invalid)?;
            nanos = nanos.checked_add(extra).ok_or_else(invalid)?;
        }
        total = total.checked_add(nanos).ok_or_else(|| format!("duration {original:?} out of range"))?;
        if total > MAX_NANOS {
            return Err(format!("duration {original:?} out of range"));
        }
    }
    from_nanos(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: &str) -> Result<f64, String> {
        parse_duration_str(s).map(|d| d.as_secs_f64())
    }

    #[test]
    fn vault_duration_forms() {
        assert_eq!(secs("1s"), Ok(1.0));
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(secs("1h"), Ok(3600.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("300ms"), Ok(0.3));
        assert_eq!(secs("3600"), Ok(3600.0));
        assert_eq!(secs("7d"), Ok(7.0 * 86400.0));
        assert_eq!(secs(""), Ok(0.0));
        assert_eq!(secs("0"), Ok(0.0));
        assert_eq!(secs(".5s"), Ok(0.5));
        assert_eq!(secs("1\u{00b5}s"), Ok(0.000_001));
    }

    #[test]
    fn bad_durations_are_errors() {
        for bad in [
            "1d2h",
            "abc",
            "1x",
            "s",
            ".s",
            "-5s",
            "-3",
            "1.",
            "99999999999999999999h",
            "9223372037s",
            " 1s",
            "1s ",
            "d",
            "+",
            "1e3s",
        ] {
            let result = parse_duration_str(bad);
            assert!(result.is_err(), "{bad:?} parsed as {result:?}");
        }
        assert_eq!(secs("9223372036s"), Ok(9_223_372_036.0));
    }

    #[test]
    fn json_values() {
        assert_eq!(parse_duration_value(&json!(30)), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration_value(&json!(1.5)), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration_value(&json!(null)), Ok(Duration::ZERO));
        assert!(parse_duration_value(&json!(-1)).is_err());
        assert!(parse_duration_value(&json!(true)).is_err());
        assert!(parse_duration_value(&json!(["1s"])).is_err());
        assert!(parse_duration_value(&json!(u64::MAX)).is_err());
    }
}
