//! The clock as Arcanum counts time: whole seconds since the Unix epoch, and Vault's RFC 3339
//! rendering of them.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `unix` as RFC 3339 (`2026-12-04T15:02:42Z`), the way Vault renders times in its answers;
/// empty for a time that cannot be represented.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "");
        assert!(unix_now() > 1_700_000_000);
    }
}
