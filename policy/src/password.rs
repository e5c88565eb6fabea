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
/// Bounds that keep parsing and generation cheap whatever a policy says.
const MAX_RULES: usize = 64;
const MAX_RAW_CHARSET: usize = 4_096;

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
    /// Deduplicated and sorted.
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
        password.iter().filter(|c| self.charset.binary_search(c).is_ok()).count() >= self.min_chars
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
            if rules.len() == MAX_RULES {
                return Err(PasswordPolicyError::Invalid(format!("at most {MAX_RULES} rules are allowed")));
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
                        hcl::Expression::String(value) if value.chars().count() > MAX_RAW_CHARSET => {
                            return Err(PasswordPolicyError::Invalid(format!(
                                "a charset may be at most {MAX_RAW_CHARSET} characters long"
                            )))
                        }
                        hcl::Expression::String(value) => charset = Some(value.chars().collect::<Vec<char>>()),
                        _ => return Err(PasswordPolicyError::Invalid("charset must be a string".into())),
                    },
                    "min-chars" => min_chars = count(attribute.expr(), "min-chars")?,
                    _ => {}
                }
            }
            let mut charset = charset.unwrap_or_default();
            charset.sort_unstable();
            charset.dedup();
            if charset.iter().any(|&c| !is_printable(c)) {
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
        let required = rules.iter().fold(0usize, |sum, rule| sum.saturating_add(rule.min_chars));
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

/// A whole number; negative counts as 0 (Vault: "no minimum"), and anything above 1,000 is refused
/// so that no later arithmetic can overflow.
fn count(expr: &hcl::Expression, key: &str) -> Result<usize, PasswordPolicyError> {
    match expr {
        hcl::Expression::Number(number) => match number.as_i64() {
            Some(n) if n > 1_000 => Err(PasswordPolicyError::Invalid(format!("{key} {n} is too large"))),
            Some(n) => Ok(usize::try_from(n).unwrap_or(0)),
            None => Err(PasswordPolicyError::Invalid(format!("{key} must be an integer"))),
        },
        _ => Err(PasswordPolicyError::Invalid(format!("{key} must be an integer"))),
    }
}

/// Go's `unicode.IsPrint` as far as passwords care: no control or format characters, no
/// whitespace but the ASCII space, no private-use characters — nothing invisible in a password.
fn is_printable(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
        || ('\u{e000}'..='\u{f8ff}').contains(&c))
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
        // Vault's decoder refuses quoted numbers too.
        assert!(invalid("length = \"12\"\nrule \"charset\" {\n charset = \"ab\"\n}\n")
            .contains("length must be an integer"));
        // Counts large enough to overflow a sum are refused, not wrapped into a valid policy.
        let huge = "rule \"charset\" {\n charset = \"ab\"\n min-chars = 9223372036854775807\n}\n";
        assert!(invalid(&format!("length = 10\n{huge}{huge}")).contains("too large"));
        assert!(invalid("length = 8\nrule \"charset\" {\n charset = \"a\u{200b}b\"\n}\n").contains("non-printable"));
        assert!(invalid("length = 8\nrule \"charset\" {").starts_with("invalid password policy: "));
        let wide: String = ('\u{100}'..'\u{300}').collect();
        assert!(
            invalid(&format!("length = 8\nrule \"charset\" {{\n charset = \"{wide}\"\n}}\n")).contains("at most 256")
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_charsets_deduplicated_as_in_vault() {
        let policy = PasswordPolicy::parse(
            "length = 12\ncomment = \"x\"\nrule \"charset\" {\n charset = \"abba\"\n min-chars = 3\n}\n",
        )
        .expect("valid");
        assert_eq!(policy.length(), 12);
        assert_eq!(policy.rules()[0].charset(), &['a', 'b']);
        assert_eq!(policy.rules()[0].min_chars(), 3);
    }

    #[test]
    fn uniform_draws_serve_ordinary_policies_without_the_fallback() {
        // Both paths give valid passwords, so check what only the uniform sampler gives: the
        // fallback forces each rule's minimum on top of uniform fill, over-representing digits.
        let policy = PasswordPolicy::parse(ALNUM).expect("valid");
        let digits: usize =
            (0..400).map(|_| policy.generate(&mut OsRng).chars().filter(char::is_ascii_digit).count()).sum();
        // Uniform: 24 × 10/62 ≈ 3.9 digits per password; built: 2 + 20 × 10/62 ≈ 5.2 (σ of the mean ≈ 0.09).
        let mean = digits as f64 / 400.0;
        assert!((3.5..4.9).contains(&mean), "mean digits per password {mean}");
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
