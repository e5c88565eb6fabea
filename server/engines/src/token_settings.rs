//! The `token_*` parameters every credential backend's roles share (Vault's `tokenutil`):
//! parsed from a request with their legacy aliases, shown on read, and turned into the
//! [`LoginAuth`] a login returns. Stored under the same names, so a role that embeds this
//! struct with `#[serde(flatten)]` keeps its stored shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LoginAuth};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenSettings {
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_period: u64,
    pub token_num_uses: u64,
    pub token_bound_cidrs: Vec<String>,
    pub token_type: String,
    pub token_no_default_policy: bool,
}

impl TokenSettings {
    /// Applies `key` if it is a token parameter (or a legacy alias: `policies`, `ttl`,
    /// `max_ttl`, `period`, `num_uses`, `bound_cidrs`); `Ok(false)` when it is not one.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<bool, ApiError> {
        let secs = |value: &Value| Ok::<u64, ApiError>(fields::duration_secs(Some(value), key)?.unwrap_or(0));
        let list = |value: &Value| Ok::<_, ApiError>(fields::string_list(Some(value), key)?.unwrap_or_default());
        match key {
            "policies" | "token_policies" => {
                self.token_policies = list(value)?.iter().map(|p| arcanum_policy::normalize_name(p)).collect()
            }
            "ttl" | "token_ttl" => self.token_ttl = secs(value)?,
            "max_ttl" | "token_max_ttl" => self.token_max_ttl = secs(value)?,
            "token_explicit_max_ttl" => self.token_explicit_max_ttl = secs(value)?,
            "period" | "token_period" => self.token_period = secs(value)?,
            "num_uses" | "token_num_uses" => self.token_num_uses = fields::non_negative(Some(value), key)?.unwrap_or(0),
            "bound_cidrs" | "token_bound_cidrs" => self.token_bound_cidrs = parse_cidrs(&list(value)?, key)?,
            "token_no_default_policy" => {
                self.token_no_default_policy = fields::boolean(Some(value), key)?.unwrap_or(false)
            }
            "token_type" => {
                let kind = fields::string(Some(value), key)?;
                if !matches!(kind.as_str(), "" | "service" | "default" | "default-service") {
                    return Err(ApiError::bad_request(format!(
                        "token_type {kind:?} is not supported by Arcanum: service tokens only"
                    )));
                }
                self.token_type = kind;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(ApiError::bad_request("token_ttl cannot be greater than token_max_ttl"));
        }
        Ok(())
    }

    /// The read shape, legacy names included.
    pub fn write_json(&self, data: &mut Map<String, Value>) {
        data.insert("token_policies".into(), json!(self.token_policies));
        data.insert("policies".into(), json!(self.token_policies));
        data.insert("token_ttl".into(), json!(self.token_ttl));
        data.insert("token_max_ttl".into(), json!(self.token_max_ttl));
        data.insert("token_explicit_max_ttl".into(), json!(self.token_explicit_max_ttl));
        data.insert("token_period".into(), json!(self.token_period));
        data.insert("period".into(), json!(self.token_period));
        data.insert("token_num_uses".into(), json!(self.token_num_uses));
        data.insert("token_bound_cidrs".into(), json!(self.token_bound_cidrs));
        data.insert("token_type".into(), json!(if self.token_type.is_empty() { "default" } else { &self.token_type }));
        data.insert("token_no_default_policy".into(), json!(self.token_no_default_policy));
    }

    /// What a successful login with these settings hands the core to mint its token.
    pub fn login(
        &self,
        metadata: BTreeMap<String, String>,
        display_name: String,
        mount_path: &str,
        login_path: &str,
        alias_name: String,
    ) -> LoginAuth {
        // An explicit maximum caps renewals like a max TTL does.
        let max_ttl = match (self.token_max_ttl, self.token_explicit_max_ttl) {
            (0, explicit) => explicit,
            (max, 0) => max,
            (max, explicit) => max.min(explicit),
        };
        LoginAuth {
            policies: self.token_policies.clone(),
            metadata,
            display_name,
            ttl: self.token_ttl,
            max_ttl,
            period: self.token_period,
            num_uses: self.token_num_uses,
            no_default_policy: self.token_no_default_policy,
            bound_cidrs: self.token_bound_cidrs.clone(),
            renewable: true,
            mount_path: mount_path.to_owned(),
            login_path: login_path.to_owned(),
            alias_name,
        }
    }
}

/// CIDR blocks (`10.0.0.0/8`, or a bare address meaning itself), normalised; a bad one is
/// refused naming the field.
pub fn parse_cidrs(values: &[String], field: &str) -> Result<Vec<String>, ApiError> {
    values
        .iter()
        .map(|text| text.trim())
        .filter(|text| !text.is_empty())
        .map(|text| {
            arcanum_contract::cidr::parse(text)
                .map(|net| net.to_string())
                .ok_or_else(|| ApiError::bad_request(format!("invalid CIDR block {text:?} in {field}")))
        })
        .collect()
}

/// Whether `addr` falls in one of `cidrs` (stored by [`parse_cidrs`]); an empty list allows all.
pub fn cidrs_allow(cidrs: &[String], addr: Option<std::net::IpAddr>) -> bool {
    arcanum_contract::cidr::allows(cidrs, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_normalise_and_match() {
        let cidrs = parse_cidrs(&["10.1.2.3/8".into(), "192.168.0.7".into(), " ".into()], "cidr_list").unwrap();
        assert_eq!(cidrs, ["10.0.0.0/8", "192.168.0.7/32"]);
        assert!(cidrs_allow(&cidrs, Some("10.200.0.1".parse().unwrap())));
        assert!(cidrs_allow(&cidrs, Some("192.168.0.7".parse().unwrap())));
        assert!(!cidrs_allow(&cidrs, Some("192.168.0.8".parse().unwrap())));
        assert!(!cidrs_allow(&cidrs, None));
        assert!(cidrs_allow(&[], None));
        assert!(parse_cidrs(&["10.0.0.0/33".into()], "cidr_list").is_err());
        assert!(parse_cidrs(&["not-an-ip".into()], "cidr_list").is_err());
    }
}
