//! arcanum-policy: Vault's HCL ACL language and its evaluation (pure, no I/O).
//!
//! Empty for now: the sealed core serves only the root token. Parsing and
//! matching arrive with the ACL work (issue 3).
