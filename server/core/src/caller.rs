//! [`Caller`]: who is asking, once the router has looked up the token and checked the ACL.
//! Shared by the router, which makes it, and the handlers of `sys/` and `auth/token/`.

use std::sync::Arc;

use arcanum_policy::Acl;

use crate::token::TokenEntry;

/// Who is asking, once the token and the ACL check have passed.
#[derive(Clone)]
pub struct Caller {
    pub token: Arc<TokenEntry>,
    /// The token value as presented (needed by lookup-self, which echoes it as `id`).
    pub token_value: String,
    pub acl: Arc<Acl>,
    /// Whether the token holds `sudo` on the request path (root always does).
    pub sudo: bool,
}

// By hand, so that the token value never reaches a log line through `{:?}`.
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.token)
            .field("token_value", &"<redacted>")
            .field("sudo", &self.sudo)
            .finish()
    }
}
