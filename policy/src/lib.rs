//! arcanum-policy: Vault's ACL policy language (HCL or JSON) and its evaluation, and its password
//! policy language (`password`); pure, no I/O.
//!
//! [`Policy::parse`] validates policy text as Vault does; [`Acl::new`] merges a token's policies into a
//! structure that answers [`Acl::check`] quickly (the server caches one per policy set).
//!
//! Semantics follow Vault (not the looser reading of some docs): exact rules beat globs; among glob and
//! `+` rules Vault's priority order picks one winner, whose capabilities alone apply; identical paths in
//! several policies merge; `deny` beats everything on the rule it is merged into. Identity-templated
//! paths (`{{identity.entity.id}}`) are parsed and kept but never match until templating is implemented.

mod acl;
mod capability;
mod default_policy;
mod duration;
mod params;
mod parse;
mod password;
mod scan;
#[cfg(test)]
mod tests;

pub use acl::{Acl, AclRequest, Decision, Operation};
pub use capability::{Capabilities, Capability};
pub use default_policy::default_policy_text;
pub use parse::{ParameterMap, PathRule, PatternKind, Policy, PolicyError};
pub use password::{CharsetRule, PasswordPolicy, PasswordPolicyError, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH};

/// The built-in policy that allows everything; only root tokens carry it.
pub const ROOT_POLICY: &str = "root";
/// The built-in policy attached to every token unless it opts out.
pub const DEFAULT_POLICY: &str = "default";

/// Canonical form of a policy name: trimmed and lower-cased. Every comparison of names must go through
/// this, or `"Root "` / `"ROOT"` could be told apart from `"root"` (the CVE-2024-9180 class of bug).
pub fn normalize_name(name: &str) -> String {
    name.trim().to_lowercase()
}
