//! Arcanum's text for the built-in `default` policy, attached to every token unless it opts out.
//!
//! Written for Arcanum; it grants the same paths and capabilities as Vault's default policy so that
//! clients relying on those self-service endpoints keep working.

/// HCL text of the `default` policy (stored under that name at first unseal; operators may edit it).
pub fn default_policy_text() -> &'static str {
    DEFAULT_POLICY_TEXT
}

const DEFAULT_POLICY_TEXT: &str = r#"# Built-in default policy: what every token may do with itself.

# Inspect, renew and revoke the calling token.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# Ask which capabilities the calling token has on given paths.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# Read the identity entity behind the token (templated: matches only the caller's own entity).
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}

path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

# The UI's view of the token's merged policies.
path "sys/internal/ui/resultant-acl" {
  capabilities = ["read"]
}

# Renew and look up leases; a lease ID must already be known to the caller.
path "sys/renew" {
  capabilities = ["update"]
}

path "sys/leases/renew" {
  capabilities = ["update"]
}

path "sys/leases/lookup" {
  capabilities = ["update"]
}

# The token's private cubbyhole.
path "cubbyhole/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "cubbyhole" {
  capabilities = ["read", "list"]
}

# Response wrapping.
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}

path "sys/wrapping/lookup" {
  capabilities = ["update"]
}

path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}

# Hashing helpers.
path "sys/tools/hash" {
  capabilities = ["update"]
}

path "sys/tools/hash/*" {
  capabilities = ["update"]
}

# Status of a control-group request whose accessor the caller holds.
path "sys/control-group/request" {
  capabilities = ["update"]
}

# Completing an MFA challenge for the caller's own login.
path "sys/mfa/challenge" {
  capabilities = ["update"]
}

# OIDC provider authorization endpoint.
path "identity/oidc/provider/+/authorize" {
  capabilities = ["read", "update"]
}
"#;
