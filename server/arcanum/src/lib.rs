//! Arcanum: a secrets server that speaks HashiCorp Vault's HTTP API.
//!
//! # Layout
//! - [`audit`]: the audit broker and file device (hash-chained, HMAC-redacted, fail-closed).
//! - [`backends`]: the engines mounted in the mount table (KV, cubbyhole, ...).
//! - [`core`]: seal state machine, barrier, token store: everything behind the seal.
//! - [`router`]: the order a request passes through the core (sealed gate, token, audit, handler).
//! - [`sys`]: the `sys/` endpoints.
//! - [`glob`]: Vault's `*` glob for names (role bindings, policy globs, allowed roles).
//! - [`logical`]: the request/response types shared by the HTTP layer and the core.
//! - [`http`]: Vault's `/v1/` wire protocol on axum.
//! - [`serve`]: listeners, TLS, graceful shutdown.
//! - [`cli`]: the `arcanum` command line (server and client commands).

pub mod catalog;
pub mod cli;
pub mod core;
pub mod hardening;
pub mod http;
pub mod router;
pub mod serve;
pub mod sys;
pub mod token_api;
