//! Fuzz target: the server config parser, HCL or JSON (chosen by the first byte). It may
//! refuse anything, but never panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config::check(data));
