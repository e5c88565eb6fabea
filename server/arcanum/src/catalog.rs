//! The engine catalog: every engine type this program offers, by mount type and table. The
//! core builds each mount's backend through it and never names an engine itself; adding an
//! engine adds its code to `arcanum-engines` and one line here.

use std::sync::Arc;

use arcanum_contract::Catalog;
use arcanum_engines::{approle, cubbyhole, database, jwt, kubernetes, kv, transit, userpass};

/// The catalog handed to the core. It must offer `cubbyhole`, the type of the per-token mount
/// every server has.
pub fn catalog() -> Catalog {
    Catalog::new()
        .secret("cubbyhole", |_| Ok(Arc::new(cubbyhole::Cubbyhole)))
        .secret("kv", kv::build)
        .secret("database", |_| Ok(Arc::new(database::Database::default())))
        .secret("transit", |_| Ok(Arc::new(transit::Transit::default())))
        .auth("userpass", |_| Ok(Arc::new(userpass::Userpass)))
        .auth("approle", |_| Ok(Arc::new(approle::AppRole::default())))
        .auth("jwt", |_| Ok(Arc::new(jwt::Jwt::default())))
        .auth("oidc", |_| Ok(Arc::new(jwt::Jwt::default())))
        .auth("kubernetes", |_| Ok(Arc::new(kubernetes::Kubernetes::from_env())))
}
