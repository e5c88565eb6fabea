//! [`TokenView`]: what an engine and the audit log may see of the token behind a request.
//!
//! The token store's own record stays in the core; a view borrows from it for the length of
//! one request, so building one costs nothing and an engine can neither keep nor change it.

use std::collections::BTreeMap;

/// The caller's token, read-only.
#[derive(Debug, Clone, Copy)]
pub struct TokenView<'a> {
    /// HMAC of the token value: how the token is named in storage (never the token itself).
    /// Per-token data (the cubbyhole) is keyed by it.
    pub id_hash: &'a str,
    pub accessor: &'a str,
    pub display_name: &'a str,
    /// Sorted and normalised.
    pub policies: &'a [String],
    pub meta: &'a BTreeMap<String, String>,
    /// Empty when the token has no entity.
    pub entity_id: &'a str,
    /// Unix seconds.
    pub creation_time: i64,
    /// Seconds; 0 when the token does not expire.
    pub creation_ttl: u64,
}
