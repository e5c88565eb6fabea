//! Vault's password policy language (`length` plus `rule "charset"` blocks) and generating passwords from it.
//!
//! A policy is checked when it is written exactly as Vault checks it: it must parse, ask for 4 to 100
//! characters, and admit at least one password. Generation draws every character uniformly from the
//! union of the rules' charsets and keeps the first candidate that satisfies every rule (rejection
//! sampling: each valid password is equally likely). Should a narrow policy reject
//! [`REJECTION_ATTEMPTS`] candidates in a row, the password is built instead — each rule's minimum
//! drawn from its own charset, the rest from the union, positions shuffled — so generation never
//! fails or spins for a policy that admits a password (Vault gives up after a time limit there).

use rand::distributions::{Distribution, Uniform};
use rand::seq::SliceRandom;
use rand::Rng;

/// Vault's bounds on a policy's `length`.
pub const MIN_PASSWORD_LENGTH: usize = 4;
pub const MAX_PASSWORD_LENGTH: usize = 100;
/// The union of all charsets may hold at most this many characters (Vault's limit).
pub const MAX_CHARSET_LEN: usize = 256;
/// Candidates drawn uniformly before a narrow policy's password is built instead.
pub const REJECTION_ATTEMPTS: usize = 1_000;

/// Why a password policy was refused. `Display` is the 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("invalid password policy: {0}")]
    Syntax(String),
    #[error("invalid password policy: {0}")]
    Invalid(String),
    #[error("passwords must be between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH} characters")]
    Length,
}

/// One `rule "charset"` block: at least `min_chars` of the password's characters come from `charset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharsetRule {
    charset: Vec<char>,
    min_chars: usize,
}

impl CharsetRule {
    pub fn charset(&self) -> &[char] {
        &self.charset
    }

    pub fn min_chars(&self) -> usize {
        self.min_chars
    }

    fn is_met_by(&self, password: &[char]) -> bool {
        password.iter().filter(|c| self.charset.contains(c)).count() >= self.min_chars
    }
}

/// A validated password policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    rules: Vec<CharsetRule>,
    /// Every rule's characters, deduplicated and sorted.
    union: Vec<char>,
}

impl PasswordPolicy {
    /// Parses and validates policy text (HCL) with Vault's rules and messages.
    pub fn parse(text: &str) -> Result<PasswordPolicy, PasswordPolicyError> {
        let body = hcl::parse(text).map_err(|e| PasswordPolicyError::Syntax(one_line(&e.to_string())))?;
        let mut length = None;
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for attribute in body.attributes() {
            // Vault's decoder ignores keys it does not know; so do we, except for a misspelt length.
            if attribute.key() == "length" {
                length = Some(count(attribute.expr(), "length")?);
            }
        }
        for block in body.blocks() {
            if block.identifier() != "rule" {
                continue;
            }
            let kind = match block.labels() {
                [label] => label.as_str(),
                _ => return Err(PasswordPolicyError::Invalid("a rule block needs exactly one label, its type".into())),
            };
            if kind != "charset" {
                return Err(PasswordPolicyError::Invalid(format!(
                    "unable to parse rules: unable to parse rule {kind}: unrecognized rule type {kind}"
                )));
            }
            let mut charset = None;
            let mut min_chars = 0;
            for attribute in block.body().attributes() {
                match attribute.key() {
                    "charset" => match attribute.expr() {
                        hcl::Expression::String(value) => charset = Some(value.chars().collect::<Vec<char>>()),
                        _ => return Err(PasswordPolicyError::Invalid("charset must be a string".into())),
                    },
                    "min-chars" | "min_chars" => min_chars = count(attribute.expr(), "min-chars")?,
                    _ => {}
                }
            }
            let charset = charset.unwrap_or_default();
            if charset.iter().any(|c| c.is_control()) {
                problems.push("non-printable character in charset".to_owned());
            }
            if charset.is_empty() {
                problems.push("a charset rule has an empty charset".to_owned());
            }
            rules.push(CharsetRule { charset, min_chars });
        }
        let length = match length {
            Some(length) if length > 0 => length,
            _ => return Err(PasswordPolicyError::Invalid("length must be > 0".into())),
        };
        let mut union: Vec<char> = rules.iter().flat_map(|rule| rule.charset.iter().copied()).collect();
        union.sort_unstable();
        union.dedup();
        if union.is_empty() {
            problems.push("no charset specified".to_owned());
        }
        if union.len() > MAX_CHARSET_LEN {
            problems.push(format!(
                "the charsets hold {} distinct characters; at most {MAX_CHARSET_LEN} are allowed",
                union.len()
            ));
        }
        let required: usize = rules.iter().map(|rule| rule.min_chars).sum();
        if required > length {
            problems.push(format!("specified rules require at least {required} characters but {length} is specified"));
        }
        if !problems.is_empty() {
            return Err(PasswordPolicyError::Invalid(problems.join("; ")));
        }
        if !(MIN_PASSWORD_LENGTH..=MAX_PASSWORD_LENGTH).contains(&length) {
            return Err(PasswordPolicyError::Length);
        }
        Ok(PasswordPolicy { length, rules, union })
    }

    pub fn length(&self) -> usize {
        self.length
    }

    pub fn rules(&self) -> &[CharsetRule] {
        &self.rules
    }

    /// Whether `password` has the policy's length and meets every rule.
    pub fn admits(&self, password: &str) -> bool {
        let chars: Vec<char> = password.chars().collect();
        chars.len() == self.length
            && chars.iter().all(|c| self.union.binary_search(c).is_ok())
            && self.rules.iter().all(|rule| rule.is_met_by(&chars))
    }

    /// A new password; never fails for a validated policy. Pass a cryptographic RNG (`OsRng`).
    /// The caller owns the result and should keep it in a zeroising container.
    pub fn generate<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        let any = Uniform::from(0..self.union.len());
        let mut candidate = vec!['\0'; self.length];
        for _ in 0..REJECTION_ATTEMPTS {
            for slot in candidate.iter_mut() {
                *slot = self.union[any.sample(rng)];
            }
            if self.rules.iter().all(|rule| rule.is_met_by(&candidate)) {
                return finish(candidate);
            }
        }
        candidate.clear();
        for rule in &self.rules {
            let own = Uniform::from(0..rule.charset.len());
            candidate.extend((0..rule.min_chars).map(|_| rule.charset[own.sample(rng)]));
        }
        while candidate.len() < self.length {
            candidate.push(self.union[any.sample(rng)]);
        }
        candidate.shuffle(rng);
        finish(candidate)
    }
}

/// The characters as a string; the scratch buffer is wiped so no copy of the password outlives it.
fn finish(mut chars: Vec<char>) -> String {
    let password = chars.iter().collect();
    chars.iter_mut().for_each(|c| *c = '\0');
    std::hint::black_box(&chars);
    password
}

fn count(expr: &hcl::Expression, key: &str) -> Result<usize, PasswordPolicyError> {
    let number = match expr {
        hcl::Expression::Number(number) => number.as_i64(),
        // HCL v1 (Vault's parser) also takes a quoted number.
        hcl::Expression::String(text) => text.trim().parse::<i64>().ok(),
        _ => None,
    };
    match number {
        Some(n) => Ok(usize::try_from(n).unwrap_or(0)),
        None => Err(PasswordPolicyError::Invalid(format!("{key} must be an integer"))),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    const ALNUM: &str = r#"
        length = 24
        rule "charset" {
          charset = "abcdefghijklmnopqrstuvwxyz"
          min-chars = 1
        }
        rule "charset" {
          charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
          min-chars = 1
        }
        rule "charset" {
          charset = "0123456789"
          min-chars = 2
        }
    "#;

    fn invalid(text: &str) -> String {
        PasswordPolicy::parse(text).expect_err("should be refused").to_string()
    }

    #[test]
    fn generated_passwords_follow_every_rule() {
        let policy = PasswordPolicy::parse(ALNUM).expect("valid");
        assert_eq!(policy.length(), 24);
        assert_eq!(policy.rules().len(), 3);
        for _ in 0..500 {
            let password = policy.generate(&mut OsRng);
            assert!(policy.admits(&password), "{password} breaks the policy");
            assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn a_narrow_policy_still_yields_valid_passwords() {
        // Uniform draws almost never put 60 'x' among 100 characters from 27: the fallback builds them.
        let policy = PasswordPolicy::parse(
            r#"
            length = 100
            rule "charset" {
              charset = "x"
              min-chars = 60
            }
            rule "charset" {
              charset = "abcdefghijklmnopqrstuvwxyz"
              min-chars = 40
            }
            "#,
        )
        .expect("valid");
        for _ in 0..20 {
            let password = policy.generate(&mut OsRng);
            assert!(policy.admits(&password), "{password} breaks the policy");
        }
    }

    #[test]
    fn non_ascii_charsets_count_characters_not_bytes() {
        let policy = PasswordPolicy::parse("length = 8\nrule \"charset\" {\n charset = \"äöü€\"\n min-chars = 8\n}\n")
            .expect("ok");
        let password = policy.generate(&mut OsRng);
        assert_eq!(password.chars().count(), 8);
        assert!(password.chars().all(|c| "äöü€".contains(c)));
    }

    #[test]
    fn policies_vault_refuses_are_refused_with_its_messages() {
        let rule = "rule \"charset\" {\n charset = \"abc\"\n}\n";
        assert_eq!(invalid(&format!("length = 3\n{rule}")), "passwords must be between 4 and 100 characters");
        assert_eq!(invalid(&format!("length = 101\n{rule}")), "passwords must be between 4 and 100 characters");
        assert_eq!(invalid(rule), "invalid password policy: length must be > 0");
        assert_eq!(invalid("length = 10\n"), "invalid password policy: no charset specified");
        assert!(invalid("length = 4\nrule \"charset\" {\n charset = \"ab\"\n min-chars = 5\n}\n")
            .contains("specified rules require at least 5 characters but 4 is specified"));
        assert!(
            invalid("length = 8\nrule \"alnum\" {\n charset = \"ab\"\n}\n").contains("unrecognized rule type alnum")
        );
        assert!(invalid("length = 8\nrule \"charset\" {\n charset = \"a\\tb\"\n}\n")
            .contains("non-printable character in charset"));
        // An empty charset beside a usable one panics Vault's test generation; here it is refused.
        assert!(invalid(&format!("length = 8\n{rule}rule \"charset\" {{\n charset = \"\"\n min-chars = 1\n}}\n"))
            .contains("empty charset"));
        assert!(invalid("length = \"many\"\n").contains("length must be an integer"));
        assert!(invalid("length = 8\nrule \"charset\" {").starts_with("invalid password policy: "));
        let wide: String = ('\u{100}'..'\u{300}').collect();
        assert!(
            invalid(&format!("length = 8\nrule \"charset\" {{\n charset = \"{wide}\"\n}}\n")).contains("at most 256")
        );
    }

    #[test]
    fn quoted_numbers_and_unknown_keys_are_accepted_as_in_vault() {
        let policy = PasswordPolicy::parse(
            "length = \"12\"\ncomment = \"x\"\nrule \"charset\" {\n charset = \"ab\"\n min-chars = \"3\"\n}\n",
        )
        .expect("valid");
        assert_eq!(policy.length(), 12);
        assert_eq!(policy.rules()[0].min_chars(), 3);
    }

    #[test]
    fn admits_checks_length_membership_and_rules() {
        let policy = PasswordPolicy::parse(ALNUM).expect("valid");
        assert!(policy.admits("aB34567890123456789012ab"));
        assert!(!policy.admits("aB3456789012345678901ab"), "too short");
        assert!(!policy.admits("aB34567890123456789012a-"), "'-' is in no charset");
        assert!(!policy.admits("ab34567890123456789012ab"), "no upper-case letter");
    }
}
