//! The contract between Arcanum's core and its engines: what a request and an answer are, what
//! an engine must implement, and what an engine is handed to do its work.
//!
//! Both the core (`arcanum-core`) and the engines (`arcanum-engines`) depend on this crate, and
//! it depends on neither: nothing here names a concrete engine or the core's internals.
//!
//! # Layout
//! - [`logical`]: the request and the response (or [`ApiError`]) that flow between the HTTP
//!   layer, the core and the engines;
//! - [`backend`]: the [`LogicalBackend`] trait an engine implements, the requests it is given,
//!   the [`LeaseSpec`] it returns with a secret that must be revoked later, and the
//!   [`Catalog`] of engine types the program hands to the core;
//! - [`storage`]: [`StorageView`], the engine's private slice of the encrypted storage, over
//!   the [`LogicalStorage`] the core implements (the barrier);
//! - [`mount`]: a mount table row ([`MountEntry`]), which an engine sees read-only;
//! - [`token`]: [`TokenView`], what an engine and the audit log may see of the caller's token;
//! - [`password`]: the stored password policies, the one system-wide record an engine reads;
//! - [`clock`], [`fields`], [`glob`], [`path`]: the clock, Vault's request field types, its
//!   name globs and request path normalisation.

pub mod backend;
pub mod cidr;
pub mod clock;
pub mod fields;
pub mod glob;
pub mod logical;
pub mod mount;
pub mod password;
pub mod path;
pub mod storage;
pub mod token;

pub use backend::{BackendRequest, Catalog, LeaseRequest, LeaseSpec, LogicalBackend};
pub use logical::{ApiError, LogicalResponse, LoginAuth, Operation, Request, Response};
pub use mount::{MountConfig, MountEntry, MountTableKind};
pub use storage::{LogicalStorage, StorageOp, StorageView, ViewOp};
pub use token::TokenView;
