//! Fuzz target: an HTTP request, from raw method, path, query, headers and body, through the
//! whole server (path normalisation, query and body decoding, router, ACL, handlers) on an
//! in-memory core. It must never panic, and every error must be Vault's `{"errors": [...]}`.
//!
//! The token holds every capability except on paths that would let the fuzzer write files
//! (audit devices), reach the network (new mounts or auth methods), block itself (quotas)
//! or seal the server; half the inputs carry no token at all.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_request::check(data));
