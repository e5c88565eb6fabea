//! Nothing to build: this script exists so that cargo counts the protoc-bin-vendored build
//! dependency, and so unpacks its protoc before etcd-client's build script asks for one
//! (scripts/protoc, .cargo/config.toml).

fn main() {}
