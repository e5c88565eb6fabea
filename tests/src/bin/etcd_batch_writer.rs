//! The process `tests/tests/etcd.rs` kills mid-batch: writes generation after generation of
//! one 1,000-op batch (2 KiB values, more than one etcd transaction may carry) into the etcd at
//! `$ARCANUM_ETCD_ENDPOINTS`, printing `committed <n>` after each batch etcd acknowledged.

use std::io::Write as _;

use arcanum_storage::{Backend, EtcdBackend, EtcdOptions, Op};

/// The batch's keys, and the value every key holds after generation `generation`.
fn value(generation: u64, key: usize) -> Vec<u8> {
    let mut value = format!("{generation:012}:{key:04}:").into_bytes();
    value.resize(2048, b'.');
    value
}

#[tokio::main]
async fn main() {
    let endpoints: Vec<String> =
        std::env::var("ARCANUM_ETCD_ENDPOINTS").expect("ARCANUM_ETCD_ENDPOINTS").split(',').map(String::from).collect();
    let etcd = EtcdBackend::connect(EtcdOptions::new(endpoints, "/arcanum/")).await.expect("connect to etcd");
    for generation in 1u64.. {
        let ops =
            (0..1000).map(|key| Op::Put { key: format!("crash/k{key:04}"), value: value(generation, key) }).collect();
        etcd.batch(ops).await.expect("batch");
        println!("committed {generation}");
        std::io::stdout().flush().expect("stdout");
    }
}
