//! `auth/token/*`: the token store's HTTP endpoints (create, lookup, renew, revoke, roles,
//! accessors, tidy), with Vault's rules for who may create what.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use arcanum_contract::fields;
use arcanum_contract::logical::{ApiError, LogicalResponse, Operation, Request, Response};
use arcanum_core::token::{TokenEntry, TokenRequest, TokenRole, SYSTEM_MAX_TTL};
use arcanum_core::Caller;
use arcanum_core::Unsealed;

pub async fn handle(
    unsealed: &Arc<Unsealed>,
    caller: &Caller,
    req: &Request,
    path: &str,
) -> Result<Response, ApiError> {
    use Operation::*;
    let path = path.trim_end_matches('/');
    match (path, req.operation) {
        ("create" | "create-orphan", Update) => create(unsealed, caller, req, None, path == "create-orphan").await,
        (p, Update) if p.starts_with("create/") => {
            create(unsealed, caller, req, Some(&p["create/".len()..]), false).await
        }
        ("lookup", Read) => lookup_response(&caller.token, Some(&caller.token_value)),
        ("lookup", Update) => {
            let token = string(req, "token")?.ok_or_else(|| ApiError::bad_request("missing token ID"))?;
            let entry = unsealed.tokens.lookup(&token).await?.ok_or_else(|| ApiError::new(403, "bad token"))?;
            lookup_response(&entry, Some(&token))
        }
        ("lookup-self", Read | Update) => lookup_response(&caller.token, Some(&caller.token_value)),
        ("lookup-accessor", Update) => {
            let entry = by_accessor(unsealed, req).await?;
            lookup_response(&entry, None)
        }
        ("renew", Update) => {
            let token = string(req, "token")?.ok_or_else(|| ApiError::bad_request("missing token ID"))?;
            let entry =
                unsealed.tokens.lookup(&token).await?.ok_or_else(|| ApiError::bad_request("token not found"))?;
            renew(unsealed, &entry, req, &token).await
        }
        ("renew-self", Update) => renew(unsealed, &caller.token, req, &caller.token_value).await,
        ("renew-accessor", Update) => {
            let entry = by_accessor(unsealed, req).await?;
            renew(unsealed, &entry, req, "").await
        }
        ("revoke", Update) => {
            let token = string(req, "token")?.ok_or_else(|| ApiError::bad_request("missing token ID"))?;
            if let Some(entry) = unsealed.tokens.lookup(&token).await? {
                unsealed.revoke_token_tree(&entry.id_hash).await?;
            }
            Ok(Response::NoContent)
        }
        ("revoke-self", Update) => {
            unsealed.revoke_token_tree(&caller.token.id_hash).await?;
            Ok(Response::NoContent)
        }
        ("revoke-accessor", Update) => {
            let entry = by_accessor(unsealed, req).await?;
            unsealed.revoke_token_tree(&entry.id_hash).await?;
            Ok(Response::NoContent)
        }
        ("revoke-orphan", Update) => {
            let token = string(req, "token")?.ok_or_else(|| ApiError::bad_request("missing token ID"))?;
            if let Some(entry) = unsealed.tokens.lookup(&token).await? {
                unsealed.revoke_token_orphan(&entry.id_hash).await?;
            }
            Ok(Response::NoContent)
        }
        ("accessors", List) => Response::list(unsealed.tokens.accessors().await?),
        ("roles", List) => Response::list(unsealed.tokens.roles().await?),
        (p, _) if p.starts_with("roles/") => role(unsealed, req, &p["roles/".len()..]).await,
        ("tidy", Update) => {
            let expired = unsealed.tokens.tidy().await?;
            for hash in &expired {
                unsealed.revoke_token_tree(hash).await?;
            }
            tracing::info!(removed = expired.len(), "token tidy finished");
            Ok(Response::Logical(Box::new(LogicalResponse {
                warnings: vec!["Tidy operation successfully started. Any information from the operation will be printed to Vault's server logs.".into()],
                ..Default::default()
            })))
        }
        (
            "create" | "create-orphan" | "lookup" | "lookup-self" | "lookup-accessor" | "renew" | "renew-self"
            | "renew-accessor" | "revoke" | "revoke-self" | "revoke-accessor" | "revoke-orphan" | "accessors" | "roles"
            | "tidy",
            _,
        ) => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::no_handler(&req.path)),
    }
}

fn string(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match req.field(name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn boolean(req: &Request, name: &str, default: bool) -> Result<bool, ApiError> {
    Ok(fields::boolean(req.field(name), name)?.unwrap_or(default))
}

fn duration(req: &Request, name: &str) -> Result<u64, ApiError> {
    Ok(fields::duration_secs(req.field(name), name)?.unwrap_or(0))
}

async fn by_accessor(unsealed: &Unsealed, req: &Request) -> Result<TokenEntry, ApiError> {
    let accessor = string(req, "accessor")?.ok_or_else(|| ApiError::bad_request("missing accessor"))?;
    unsealed.tokens.lookup_accessor(&accessor).await?.ok_or_else(|| ApiError::bad_request("invalid accessor"))
}

fn lookup_response(entry: &TokenEntry, token: Option<&str>) -> Result<Response, ApiError> {
    Ok(Response::data(entry.lookup_data(token)))
}

async fn renew(unsealed: &Unsealed, entry: &TokenEntry, req: &Request, token: &str) -> Result<Response, ApiError> {
    let increment = duration(req, "increment")?;
    let (renewed, warning) = unsealed.tokens.renew(&entry.id_hash, increment).await?;
    Ok(Response::Logical(Box::new(LogicalResponse {
        auth: Some(renewed.auth_block(token)),
        warnings: warning.into_iter().collect(),
        ..Default::default()
    })))
}

/// Vault's display name rule: `token` alone, else `token-<name>` with unsafe characters dropped.
fn display_name(name: Option<String>) -> String {
    match name {
        Some(name) if !name.is_empty() => {
            let cleaned: String =
                name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
            if cleaned.starts_with("token") {
                cleaned
            } else {
                format!("token-{cleaned}")
            }
        }
        _ => "token".into(),
    }
}

async fn create(
    unsealed: &Unsealed,
    caller: &Caller,
    req: &Request,
    role_name: Option<&str>,
    orphan_endpoint: bool,
) -> Result<Response, ApiError> {
    let privileged = caller.token.is_root() || caller.sudo;
    let role = match role_name {
        Some(name) => Some(
            unsealed.tokens.role(name).await?.ok_or_else(|| ApiError::bad_request(format!("unknown role {name}")))?,
        ),
        None => None,
    };
    if caller.token.num_uses > 0 {
        return Err(ApiError::bad_request("a limited-use token cannot create child tokens"));
    }
    if let Some(kind) = string(req, "type")? {
        if kind != "service" && kind != "default" {
            return Err(ApiError::bad_request(format!(
                "token type {kind:?} is not supported: Arcanum issues service tokens only"
            )));
        }
    }
    let num_uses = match req.field("num_uses") {
        None => role.as_ref().map_or(0, |r| r.token_num_uses),
        Some(value) => {
            let n = value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ApiError::bad_request("num_uses must be an integer"))?;
            u64::try_from(n).map_err(|_| ApiError::bad_request("number of uses cannot be negative"))?
        }
    };
    let no_parent = boolean(req, "no_parent", false)?;
    if no_parent && !privileged {
        return Err(ApiError::bad_request("root or sudo privileges required to create orphan token"));
    }
    let orphan = orphan_endpoint || no_parent || role.as_ref().is_some_and(|r| r.orphan);
    let id = string(req, "id")?;
    if id.is_some() && !privileged {
        return Err(ApiError::bad_request("root or sudo privileges required to specify token id"));
    }
    if let Some(id) = &id {
        if id.contains('.') && !id.starts_with(arcanum_core::token::TOKEN_PREFIX) {
            return Err(ApiError::bad_request("token IDs cannot contain a period"));
        }
    }
    let mut period = duration(req, "period")?;
    if period > 0 && !privileged && role.is_none() {
        return Err(ApiError::bad_request("root or sudo privileges required to create periodic token"));
    }
    if let Some(role) = &role {
        if role.token_period > 0 {
            period = role.token_period;
        }
    }
    let explicit_max_ttl = match duration(req, "explicit_max_ttl")? {
        0 => role.as_ref().map_or(0, |r| r.token_explicit_max_ttl),
        ttl => ttl,
    };
    let ttl = match duration(req, "ttl")? {
        0 => duration(req, "lease")?,
        ttl => ttl,
    };
    let ttl = if ttl == 0 { role.as_ref().map_or(0, |r| r.token_ttl) } else { ttl };

    // Policies: the caller's unless given; a non-root caller may only hand out a subset.
    let requested = fields::string_list(req.field("policies"), "policies")?;
    let no_default_policy =
        boolean(req, "no_default_policy", role.as_ref().is_some_and(|r| r.token_no_default_policy))?;
    let mut policies: Vec<String> = match &requested {
        Some(list) => list.iter().map(|p| arcanum_policy::normalize_name(p)).collect(),
        None => match &role {
            Some(role) if !role.allowed_policies.is_empty() => role.allowed_policies.clone(),
            _ => caller.token.policies.iter().filter(|p| !(no_default_policy && *p == "default")).cloned().collect(),
        },
    };
    // Only the server makes wrapping tokens: a token with this policy could pass off an answer of
    // its holder's choosing as a wrapped one.
    if policies.iter().any(|p| p == arcanum_core::wrapping::RESPONSE_WRAPPING_POLICY) {
        return Err(ApiError::bad_request("the \"response-wrapping\" policy cannot be assigned to a token"));
    }
    if let Some(role) = &role {
        let matches_any = |policy: &str, exact: &[String], globs: &[String]| {
            exact.iter().any(|p| p == policy) || globs.iter().any(|g| arcanum_contract::glob::matches(g, policy))
        };
        if let Some(denied) =
            policies.iter().find(|p| matches_any(p, &role.disallowed_policies, &role.disallowed_policies_glob))
        {
            return Err(ApiError::bad_request(format!(
                "token policies ({denied}) must not be in the role's disallowed_policies"
            )));
        }
        let restricted = !role.allowed_policies.is_empty() || !role.allowed_policies_glob.is_empty();
        if restricted {
            if let Some(outside) = policies
                .iter()
                .find(|p| *p != "default" && !matches_any(p, &role.allowed_policies, &role.allowed_policies_glob))
            {
                return Err(ApiError::bad_request(format!(
                    "token policies ({outside}) must be subset of the role's allowed policies"
                )));
            }
        }
    } else if !caller.token.is_root() {
        if let Some(outside) = policies.iter().find(|p| *p != "default" && !caller.token.policies.contains(p)) {
            return Err(ApiError::bad_request(format!(
                "child policies must be subset of parent: {outside:?} is not held by the parent"
            )));
        }
    }
    if policies.iter().any(|p| p == "root") && !caller.token.is_root() {
        return Err(ApiError::bad_request("root tokens may not be created by a non-root token"));
    }
    if !no_default_policy && !policies.iter().any(|p| p == "root") && !policies.iter().any(|p| p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    let warnings: Vec<String> = policies
        .iter()
        .filter(|p| !unsealed.policies.exists(p))
        .map(|p| format!("Policy {p:?} does not exist"))
        .collect();

    let meta: BTreeMap<String, String> = match req.field("meta") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad_request("meta must be a map of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("meta must be a map of strings")),
    };
    let path = match role_name {
        Some(name) => format!("auth/token/create/{name}"),
        None if orphan_endpoint => "auth/token/create-orphan".into(),
        None => "auth/token/create".into(),
    };
    let max_ttl = role.as_ref().map_or(0, |r| r.token_max_ttl).min(SYSTEM_MAX_TTL);
    let request = TokenRequest {
        parent: if orphan { None } else { Some(caller.token.id_hash.clone()) },
        policies,
        meta,
        display_name: display_name(string(req, "display_name")?),
        path,
        num_uses,
        ttl,
        explicit_max_ttl,
        period,
        renewable: boolean(req, "renewable", role.as_ref().is_none_or(|r| r.renewable))?,
        role: role_name.map(String::from),
        id: id.map(Zeroizing::new),
        max_ttl,
        // A child acts for the same entity as its creator, as in Vault.
        entity_id: caller.token.entity_id.clone(),
        // A token role's CIDR bounds bind the tokens made against it, as in Vault.
        bound_cidrs: role.as_ref().map(|r| r.token_bound_cidrs.clone()).unwrap_or_default(),
    };
    let (token, entry) = unsealed.tokens.create(request).await?;
    Ok(Response::Logical(Box::new(LogicalResponse {
        auth: Some(entry.auth_block(&token)),
        warnings,
        ..Default::default()
    })))
}

async fn role(unsealed: &Unsealed, req: &Request, name: &str) -> Result<Response, ApiError> {
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::bad_request("invalid role name"));
    }
    match req.operation {
        Operation::Read => {
            let role = unsealed.tokens.role(name).await?.ok_or_else(ApiError::not_found)?;
            let Value::Object(mut data) = serde_json::to_value(&role).map_err(|_| ApiError::internal())? else {
                return Err(ApiError::internal());
            };
            data.insert(
                "token_type".into(),
                json!(if role.token_type.is_empty() { "default-service" } else { &role.token_type }),
            );
            // Vault reports the legacy names too.
            data.insert("period".into(), json!(role.token_period));
            data.insert("explicit_max_ttl".into(), json!(role.token_explicit_max_ttl));
            Ok(Response::data(data))
        }
        Operation::Delete => {
            unsealed.tokens.delete_role(name).await?;
            Ok(Response::NoContent)
        }
        Operation::Update => {
            let mut role = unsealed.tokens.role(name).await?.unwrap_or(TokenRole {
                name: name.into(),
                renewable: true,
                ..TokenRole::default()
            });
            let lists: [(&str, &mut Vec<String>); 6] = [
                ("allowed_policies", &mut role.allowed_policies),
                ("disallowed_policies", &mut role.disallowed_policies),
                ("allowed_policies_glob", &mut role.allowed_policies_glob),
                ("disallowed_policies_glob", &mut role.disallowed_policies_glob),
                ("allowed_entity_aliases", &mut role.allowed_entity_aliases),
                ("token_bound_cidrs", &mut role.token_bound_cidrs),
            ];
            for (field, slot) in lists {
                if let Some(list) = fields::string_list(req.field(field), field)? {
                    *slot = list.iter().map(|p| arcanum_policy::normalize_name(p)).collect();
                }
            }
            if req.field("orphan").is_some() {
                role.orphan = boolean(req, "orphan", false)?;
            }
            if req.field("renewable").is_some() {
                role.renewable = boolean(req, "renewable", true)?;
            }
            if req.field("token_no_default_policy").is_some() {
                role.token_no_default_policy = boolean(req, "token_no_default_policy", false)?;
            }
            if let Some(suffix) = string(req, "path_suffix")? {
                role.path_suffix = suffix;
            }
            for (field, legacy, slot) in [
                ("token_period", "period", &mut role.token_period),
                ("token_explicit_max_ttl", "explicit_max_ttl", &mut role.token_explicit_max_ttl),
                ("token_ttl", "", &mut role.token_ttl),
                ("token_max_ttl", "", &mut role.token_max_ttl),
            ] {
                if req.field(field).is_some() {
                    *slot = duration(req, field)?;
                } else if !legacy.is_empty() && req.field(legacy).is_some() {
                    *slot = duration(req, legacy)?;
                }
            }
            if let Some(uses) = req.field("token_num_uses") {
                role.token_num_uses = uses
                    .as_u64()
                    .or_else(|| uses.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| ApiError::bad_request("token_num_uses must be a non-negative integer"))?;
            }
            if let Some(kind) = string(req, "token_type")? {
                if !matches!(kind.as_str(), "service" | "default-service" | "default") {
                    return Err(ApiError::bad_request(format!(
                        "token_type {kind:?} is not supported: Arcanum issues service tokens only"
                    )));
                }
                role.token_type = kind;
            }
            unsealed.tokens.put_role(&role).await?;
            Ok(Response::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
