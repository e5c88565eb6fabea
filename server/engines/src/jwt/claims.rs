//! The claim checks of a JWT login, once the signature holds: issuer, subject, time claims with
//! Vault's leeways, audience, user and groups claims, bound claims, and the claim mappings that
//! become token metadata. Every refusal names the check that failed and never the token.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use arcanum_contract::logical::ApiError;

use super::Role;

const DEFAULT_CLOCK_SKEW: i64 = 60;
const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;

/// 0 means the default, a negative value means none.
fn effective(leeway: i64, default: i64) -> i64 {
    match leeway {
        0 => default,
        n if n < 0 => 0,
        n => n,
    }
}

/// A claim by name, or by JSON pointer when the name starts with `/`
/// (`/kubernetes.io/namespace` reaches into Kubernetes' nested claims).
pub fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|t| Some(t as i64))
            .ok_or_else(|| format!("error validating token: the {name} claim is not a number")),
        Some(_) => Err(format!("error validating token: the {name} claim is not a number")),
    }
}

/// The audiences a token names: a string or a list of strings.
fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Every check except the signature and the user claim; the token metadata on success.
pub fn validate(claims: &Value, role: &Role, bound_issuer: &str, now: i64) -> Result<BTreeMap<String, String>, String> {
    if !bound_issuer.is_empty() {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
        if iss != bound_issuer {
            return Err(format!(
                "error validating token: invalid issuer (iss) claim: {iss:?} is not the configured bound_issuer {bound_issuer:?}"
            ));
        }
    }
    if !role.bound_subject.is_empty() {
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
        if sub != role.bound_subject {
            return Err(format!(
                "error validating token: sub claim {sub:?} does not match the role's bound_subject {:?}",
                role.bound_subject
            ));
        }
    }
    check_times(claims, role, now)?;
    let token_audiences = audiences(claims);
    if role.bound_audiences.is_empty() {
        if !token_audiences.is_empty() {
            return Err("error validating token: audience claim found in JWT but no audiences bound to the role".into());
        }
    } else if !token_audiences.iter().any(|aud| role.bound_audiences.contains(aud)) {
        return Err(format!(
            "error validating token: invalid audience (aud) claim: {token_audiences:?} matches none of the role's bound_audiences {:?}",
            role.bound_audiences
        ));
    }
    if !role.groups_claim.is_empty() {
        match claim(claims, &role.groups_claim) {
            Some(Value::String(_)) => {}
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(format!(
                    "error validating token: {:?} claim is not a string or a list of strings",
                    role.groups_claim
                ))
            }
            None => return Err(format!("error validating token: {:?} claim not found in token", role.groups_claim)),
        }
    }
    check_bound_claims(claims, &role.bound_claims, role.bound_claims_type == "glob")?;
    let mut metadata = BTreeMap::new();
    for (source, target) in &role.claim_mappings {
        if let Some(value) = claim(claims, source).and_then(as_text) {
            metadata.insert(target.clone(), value);
        }
    }
    Ok(metadata)
}

/// Vault's rule: at least one of `iat`, `nbf`, `exp`; a missing `exp` is the latest start plus
/// the expiration leeway, a missing `nbf` the earliest moment minus the not-before leeway;
/// then the clock skew applies to all three.
fn check_times(claims: &Value, role: &Role, now: i64) -> Result<(), String> {
    let (iat, nbf, exp) = (time_claim(claims, "iat")?, time_claim(claims, "nbf")?, time_claim(claims, "exp")?);
    if iat.is_none() && nbf.is_none() && exp.is_none() {
        return Err("error validating token: no issue time, notbefore, or expiration time encoded in token".into());
    }
    let skew = effective(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW);
    let exp = exp.or_else(|| {
        let start = iat.into_iter().chain(nbf).max()?;
        Some(start.saturating_add(effective(role.expiration_leeway, DEFAULT_EXPIRATION_LEEWAY)))
    });
    let nbf = nbf.or_else(|| {
        let earliest = iat.or(exp)?;
        Some(earliest.saturating_sub(effective(role.not_before_leeway, DEFAULT_NOT_BEFORE_LEEWAY)))
    });
    if exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
        return Err("error validating token: token is expired (exp)".into());
    }
    if nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err("error validating token: token not valid yet (nbf)".into());
    }
    if iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
        return Err("error validating token: token issued in the future (iat)".into());
    }
    Ok(())
}

/// The user claim's value: the token's display name and its entity alias.
pub fn user_claim(claims: &Value, role: &Role) -> Result<String, String> {
    let found =
        if role.user_claim_json_pointer { claims.pointer(&role.user_claim) } else { claims.get(&role.user_claim) };
    match found {
        Some(Value::String(user)) if !user.is_empty() => Ok(user.clone()),
        Some(_) => Err(format!("error validating token: claim {:?} could not be converted to string", role.user_claim)),
        None => Err(format!("error validating token: claim {:?} not found in token", role.user_claim)),
    }
}

fn expected_values(expected: &Value) -> Vec<&Value> {
    match expected {
        Value::Array(list) => list.iter().collect(),
        single => vec![single],
    }
}

/// Every bound claim must be present, and one of the token's values for it (a string, or each
/// item of a list) must equal one of the role's (or match it as a `*` glob).
fn check_bound_claims(claims: &Value, bound: &Map<String, Value>, glob: bool) -> Result<(), String> {
    for (name, expected) in bound {
        let Some(actual) = claim(claims, name) else {
            return Err(format!("error validating claims: claim {name:?} is missing"));
        };
        let actual_values: Vec<&Value> = match actual {
            Value::Array(list) => list.iter().collect(),
            single => vec![single],
        };
        let matched = actual_values.iter().any(|actual| {
            expected_values(expected).iter().any(|expected| match (glob, expected, actual) {
                (true, Value::String(pattern), Value::String(text)) => arcanum_contract::glob::matches(pattern, text),
                (false, expected, actual) => expected == actual,
                _ => false,
            })
        });
        if !matched {
            return Err(format!(
                "error validating claims: claim {name:?} does not match any associated bound claim values"
            ));
        }
    }
    Ok(())
}

/// A role's `bound_claims` must hold strings (or lists of them) when they are globs, and
/// scalars or lists of scalars otherwise.
pub fn check_bound_claims_shape(bound: &Map<String, Value>, kind: &str) -> Result<(), ApiError> {
    if !matches!(kind, "string" | "glob") {
        return Err(ApiError::bad_request(format!("invalid 'bound_claims_type': {kind:?}")));
    }
    for (name, value) in bound {
        let ok = expected_values(value).iter().all(|v| match kind {
            "glob" => v.is_string(),
            _ => v.is_string() || v.is_number() || v.is_boolean(),
        });
        if !ok {
            return Err(ApiError::bad_request(format!(
                "claim {name:?} in bound_claims must be a {} or a list of them",
                if kind == "glob" { "string" } else { "string, number or boolean" }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(extra: Value) -> Role {
        let mut role: Role = serde_json::from_value(json!({"role_type": "jwt", "user_claim": "sub"})).unwrap();
        super::super::apply_role(&mut role, json!({"bound_audiences": "vault"}).as_object().unwrap()).unwrap();
        super::super::apply_role(&mut role, extra.as_object().unwrap()).unwrap();
        role
    }

    #[test]
    fn time_claims_follow_vaults_leeways() {
        let now = 1_000_000;
        let r = role(json!({}));
        let check = |claims: Value| check_times(&claims, &r, now);
        assert!(check(json!({})).unwrap_err().contains("no issue time"));
        assert!(check(json!({"exp": now - 61})).unwrap_err().contains("expired"));
        assert!(check(json!({"exp": now - 59})).is_ok(), "60 s of clock skew");
        // No exp: iat plus the 150 s expiration leeway, plus skew.
        assert!(check(json!({"iat": now - 200})).is_ok());
        assert!(check(json!({"iat": now - 211})).unwrap_err().contains("expired"));
        assert!(check(json!({"nbf": now + 61, "exp": now + 600})).unwrap_err().contains("not valid yet"));
        assert!(check(json!({"iat": now + 61, "exp": now + 600})).unwrap_err().contains("future"));
        let strict = role(json!({"clock_skew_leeway": -1, "expiration_leeway": -1}));
        assert!(check_times(&json!({"exp": now - 1}), &strict, now).is_err());
        assert!(check_times(&json!({"iat": now - 1}), &strict, now).is_err(), "no exp and no leeway: already expired");
    }

    #[test]
    fn audience_subject_issuer_and_bound_claims() {
        let now = 1_000_000;
        let base = json!({"sub": "system:serviceaccount:prod:app", "aud": ["vault"], "exp": now + 60,
            "iss": "https://a", "kubernetes.io": {"namespace": "prod"}, "groups": ["dev", "ops"]});
        let r = role(json!({"bound_claims": {"/kubernetes.io/namespace": ["prod", "stage"], "groups": "ops"},
            "claim_mappings": {"/kubernetes.io/namespace": "namespace"}}));
        let metadata = validate(&base, &r, "https://a", now).unwrap();
        assert_eq!(metadata.get("namespace").map(String::as_str), Some("prod"));
        assert!(validate(&base, &r, "https://b", now).unwrap_err().contains("bound_issuer"));

        let mut other = base.clone();
        other["kubernetes.io"]["namespace"] = json!("dev");
        assert!(validate(&other, &r, "", now).unwrap_err().contains("/kubernetes.io/namespace"));
        other = base.clone();
        other["aud"] = json!("api");
        assert!(validate(&other, &r, "", now).unwrap_err().contains("audience"));

        let globbed =
            role(json!({"bound_claims_type": "glob", "bound_claims": {"sub": "system:serviceaccount:prod:*"}}));
        assert!(validate(&base, &globbed, "", now).is_ok());
        let subject = role(json!({"bound_subject": "system:serviceaccount:prod:other"}));
        assert!(validate(&base, &subject, "", now).unwrap_err().contains("bound_subject"));

        let mut unbound = role(json!({"bound_subject": "system:serviceaccount:prod:app"}));
        unbound.bound_audiences.clear();
        assert!(validate(&base, &unbound, "", now).unwrap_err().contains("no audiences bound"));
    }
}
