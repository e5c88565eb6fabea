//! Crate-level tests: the decision table, parse errors and properties.

mod decisions;
mod parsing;
mod properties;
