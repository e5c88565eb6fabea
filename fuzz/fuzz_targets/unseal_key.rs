//! Fuzz target: decoding an unseal key share as an operator types it (hex or base64, spaces
//! around it), then combining it with itself and with a genuine share.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::unseal_key::check(data));
