//! Arcanum: a secrets server that speaks HashiCorp Vault's HTTP API.
//!
//! The top of the program: this crate wires the layers below it (`arcanum-core`, the engines
//! of `arcanum-engines`, `arcanum-audit`, `arcanum-quotas`, over the `arcanum-contract`) into
//! a server and speaks Vault's HTTP API and command line.
//!
//! # Layout
//! - [`catalog`]: the engine types this program offers; the core builds mounts through it.
//! - [`http`]: Vault's `/v1/` wire protocol on axum; [`forward`]: an HA standby passes requests
//!   to the active node.
//! - [`router`]: the order a request passes through the core (sealed gate, token, audit, handler).
//! - [`sys`]: the `sys/` endpoints; [`token_api`]: `auth/token/*`.
//! - [`serve`]: listeners, TLS, graceful shutdown; [`hardening`]: process hardening at start.
//! - [`service_registration`]: a node's labels on its own Kubernetes pod.
//! - [`transit_seal`]: `seal "transit"`, the client that wraps the root key with another
//!   server's Transit key.
//! - [`cli`]: the `arcanum` command line (server and client commands).
//!
//! Inside this crate the arrows run one way too: `cli -> serve -> http -> {forward, router}`, `router -> sys,
//! token_api`; `sys` and `token_api` import neither the router nor `http` (what they share
//! with them, such as [`arcanum_core::Caller`], lives below).

pub mod catalog;
pub mod cli;
pub mod connections;
pub mod forward;
pub mod hardening;
pub mod http;
pub mod router;
pub mod serve;
pub mod service_registration;
pub mod sys;
pub mod token_api;
pub mod transit_seal;
