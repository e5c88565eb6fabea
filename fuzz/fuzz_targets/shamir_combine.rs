//! Fuzz target: Shamir combine on arbitrary shares (wrong lengths, repeated x, zero x, too
//! few), and split-then-combine round trips of a secret taken from the input.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::shamir_combine::check(data));
