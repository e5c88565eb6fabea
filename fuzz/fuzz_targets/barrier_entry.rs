//! Fuzz target: decoding a barrier entry read from storage (version, term, nonce, ciphertext,
//! tag). Any bytes must give an error or, for a genuine entry, its plaintext — never a panic,
//! and never a plaintext for an entry that was not sealed under this keyring and path.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::barrier_entry::check(data));
