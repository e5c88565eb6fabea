//! Criterion benchmark: the barrier's encrypt+decrypt of a 1 KiB record next to raw
//! AES-256-GCM (one cipher instance, fixed nonce) on the same buffer.
//!
//! `cargo bench -p arcanum-core --bench barrier`; the ratio goes to docs/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use arcanum_core::barrier::Barrier;
use arcanum_crypto::keyring::Keyring;
use arcanum_storage::{Backend, InmemBackend};
use criterion::{criterion_group, criterion_main, Criterion};

const PATH: &str = "logical/0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/app/db-password";

fn bench_barrier(c: &mut Criterion) {
    let plaintext = vec![0x5au8; 1024];
    let keyring = Keyring::generate(0);
    let raw = Aes256Gcm::new(keyring.active_key().as_bytes().into());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let backend: Arc<dyn Backend> = Arc::new(InmemBackend::new());
    let barrier = runtime.block_on(Barrier::open(backend, keyring, u64::MAX)).expect("barrier");

    let mut group = c.benchmark_group("encrypt_decrypt_1KiB");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    group.bench_function("raw_aes_gcm", |b| {
        let nonce = Nonce::from([7u8; 12]);
        b.iter(|| {
            let sealed =
                raw.encrypt(&nonce, Payload { msg: black_box(&plaintext), aad: PATH.as_bytes() }).expect("encrypt");
            black_box(raw.decrypt(&nonce, Payload { msg: &sealed, aad: PATH.as_bytes() }).expect("decrypt"))
        })
    });
    group.bench_function("barrier", |b| {
        b.iter(|| {
            let (entry, _) = barrier.encrypt(PATH, black_box(&plaintext));
            black_box(barrier.decrypt(PATH, &entry).expect("decrypt"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_barrier);
criterion_main!(benches);
