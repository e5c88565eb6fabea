//! Fuzz target: the ACL policy parser (HCL and JSON), then the compiled ACL answering requests
//! on paths taken from the input. Neither may panic, whatever the text.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::policy::check(data));
