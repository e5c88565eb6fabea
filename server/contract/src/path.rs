//! Request path normalisation, done once before anything (policy, routing) looks at a path.

use crate::logical::ApiError;

/// Percent-decodes and normalises a request path. Empty segments collapse (`a//b` is `a/b`),
/// a trailing slash is kept, and `.`/`..` segments are refused after decoding so that no
/// encoding trick can step outside a policy's path.
pub fn normalize_path(raw: &str) -> Result<String, ApiError> {
    if is_normal(raw) {
        return Ok(raw.to_owned());
    }
    normalize_in_full(raw)
}

fn normalize_in_full(raw: &str) -> Result<String, ApiError> {
    let decoded = percent_decode(raw).ok_or_else(|| ApiError::bad_request("invalid path: bad percent-encoding"))?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("invalid path: control characters are not allowed"));
    }
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(ApiError::bad_request("invalid path: '.' and '..' segments are not allowed"));
    }
    let mut path = segments.join("/");
    if decoded.ends_with('/') && !path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Whether `raw` is already what [`normalize_path`] makes of it (most paths are): no escapes,
/// no control characters, no empty, `.` or `..` segment, at most one trailing `/`.
fn is_normal(raw: &str) -> bool {
    let body = raw.strip_suffix('/').unwrap_or(raw);
    !body.is_empty()
        && !raw.contains(|c: char| c == '%' || c.is_control())
        && body.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_path_table() {
        let ok = [
            ("sys/seal-status", "sys/seal-status"),
            ("sys//seal-status", "sys/seal-status"),
            ("secret/foo/", "secret/foo/"),
            ("secret/a%20b", "secret/a b"),
            ("/sys/health", "sys/health"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        }
        let bad =
            ["a/../b", "a/./b", "..", "a/%2e%2e/b", "a/%2E%2E", "a/%2e/b", "a/%zz", "a/%00b", "a/%2", "a/b/..", "a\tb"];
        for raw in bad {
            assert_eq!(normalize_path(raw).unwrap_err().status, 400, "{raw} was accepted");
        }
    }

    /// The shortcut for paths that are already normal never answers differently from the full
    /// normalisation, over every path of up to three segments drawn from awkward pieces.
    #[test]
    fn the_shortcut_agrees_with_full_normalisation() {
        let pieces = ["a", "", ".", "..", "...", "%41", "%2e", "b c", "x\u{7f}", "é"];
        let mut paths = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> =
                paths.iter().flat_map(|p| pieces.iter().map(move |s| format!("{p}/{s}"))).collect();
            paths.extend(longer);
        }
        let with_ends: Vec<String> =
            paths.iter().flat_map(|p| [p.clone(), format!("{p}/"), p.trim_start_matches('/').to_owned()]).collect();
        for raw in &with_ends {
            let full = normalize_in_full(raw).map_err(|e| e.status);
            assert_eq!(normalize_path(raw).map_err(|e| e.status), full, "{raw:?}");
            if is_normal(raw) {
                assert_eq!(full.as_deref(), Ok(raw.as_str()), "{raw:?} is not normal");
            }
        }
    }
}
