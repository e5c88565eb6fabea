//! The engines Arcanum mounts: secret engines (`kv`, `cubbyhole`, `database`, `transit`) and
//! credential backends (`userpass`, `kubernetes`, `approle`, `jwt`).
//!
//! Each implements the contract's [`LogicalBackend`](arcanum_contract::LogicalBackend) and sees
//! only what the contract hands it: its relative path, its own storage view, its mount entry
//! and the caller's token view. Nothing here knows the core; which engine serves which mount
//! type is the program's catalog (`arcanum::catalog`).

pub mod approle;
pub mod cubbyhole;
pub mod database;
pub mod jwt;
pub mod kubernetes;
pub mod kv;
pub mod token_settings;
pub mod transit;
pub mod userpass;
