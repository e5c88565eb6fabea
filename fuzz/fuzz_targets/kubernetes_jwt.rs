//! Fuzz target: the local checks of a Kubernetes service-account JWT before any TokenReview
//! (shape, base64url segments, JSON claims, times, issuer/audience, signature against a PEM
//! key). Every input must be refused or accepted without a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::kubernetes_jwt::check(data));
