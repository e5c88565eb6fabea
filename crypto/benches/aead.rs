//! Criterion benchmark: cost of sealing and opening a 1 KiB record, raw AES-GCM versus this crate's framing.

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use arcanum_crypto::{aead, Key256};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LEN: usize = 1024;
const AAD: &[u8] = b"logical/0b1c2d3e/secret/data/app";

fn bench_aead(c: &mut Criterion) {
    let key = Key256::generate();
    let plaintext = vec![0x5au8; LEN];
    let mut group = c.benchmark_group("aead_1KiB_seal_open");
    group
        .throughput(Throughput::Bytes(LEN as u64))
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);

    // Baseline: the cipher's key schedule is built once and the nonce is fixed (benchmark only;
    // never reuse a nonce in real code), so this is the floor for AES-GCM itself.
    let raw = Aes256Gcm::new(key.as_bytes().into());
    let nonce = Nonce::from([7u8; aead::NONCE_LEN]);
    group.bench_function("raw_aes_gcm_fixed_cipher", |b| {
        b.iter(|| {
            let payload = Payload { msg: black_box(&plaintext), aad: AAD };
            let ct = raw.encrypt(&nonce, payload).expect("encrypt");
            let payload = Payload { msg: &ct, aad: AAD };
            black_box(raw.decrypt(&nonce, payload).expect("decrypt"))
        })
    });

    // The free functions: key schedule per call, random nonce, framing.
    group.bench_function("aead_seal_open", |b| {
        b.iter(|| {
            let sealed = aead::seal(&key, black_box(&plaintext), AAD);
            black_box(aead::open(&key, &sealed, AAD).expect("open"))
        })
    });

    // A cached Cipher, as the keyring provides per term: random nonce and framing, no key schedule.
    let cipher = aead::Cipher::new(&key);
    group.bench_function("cipher_seal_open", |b| {
        b.iter(|| {
            let sealed = cipher.seal(black_box(&plaintext), AAD);
            black_box(cipher.open(&sealed, AAD).expect("open"))
        })
    });

    group.finish();
}

criterion_group!(benches, bench_aead);
criterion_main!(benches);
