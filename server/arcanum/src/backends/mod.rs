//! The engines mounted in the mount table (secret engines and credential backends), and the
//! catalog that offers them to the core.

use std::sync::Arc;

use arcanum_contract::Catalog;

pub mod cubbyhole;
pub mod database;
pub mod kubernetes;
pub mod kv;
pub mod userpass;

/// Every engine type this program offers. Adding an engine adds one line here.
pub fn catalog() -> Catalog {
    Catalog::new()
        .secret("cubbyhole", |_| Ok(Arc::new(cubbyhole::Cubbyhole)))
        .secret("kv", kv::build)
        .secret("database", |_| Ok(Arc::new(database::Database::default())))
        .auth("userpass", |_| Ok(Arc::new(userpass::Userpass)))
        .auth("kubernetes", |_| Ok(Arc::new(kubernetes::Kubernetes::from_env())))
}
