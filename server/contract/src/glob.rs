//! Vault's glob for names (`go-glob`): `*` matches any run of characters, anywhere in the
//! pattern. Token role policy globs, Kubernetes role bindings and database `allowed_roles` all
//! use it. (ACL parameter constraints use a different rule, in arcanum-policy.)

/// Whether `value` matches `pattern`.
pub fn matches(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*", "anything"));
        assert!(matches("app-*", "app-web"));
        assert!(!matches("app-*", "db-web"));
        assert!(matches("*-prod", "team-prod"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxc"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    #[test]
    fn policy_globs() {
        for (pattern, value, expected) in [
            ("dev-*", "dev-app", true),
            ("dev-*", "prod-app", false),
            ("*-ro", "kv-ro", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "anything", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(matches(pattern, value), expected, "{pattern} vs {value}");
        }
    }
}
