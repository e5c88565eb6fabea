//! The in-process ceiling for Transit over HTTP: one key's AEAD work (encrypt and decrypt of
//! a 100-byte plaintext in Vault's ciphertext layout) with no request path around it.
//! `scripts/bench-transit` runs it next to the HTTP figures.

use criterion::{criterion_group, criterion_main, Criterion};

use arcanum_engines::transit::{KeyPolicy, KeySpec, KeyType};

fn aead(c: &mut Criterion) {
    let plaintext = [7u8; 100];
    for kind in [KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305] {
        let key = KeyPolicy::create("bench", &KeySpec::new(kind), 1).expect("key");
        let ciphertext = key.encrypt(1, &plaintext, b"", b"", b"").expect("encrypt");
        c.bench_function(&format!("transit_encrypt_100B_{}", kind.name()), |b| {
            b.iter(|| key.encrypt(1, std::hint::black_box(&plaintext), b"", b"", b"").expect("encrypt"))
        });
        c.bench_function(&format!("transit_decrypt_100B_{}", kind.name()), |b| {
            b.iter(|| key.decrypt(std::hint::black_box(&ciphertext), b"", b"", b"").expect("decrypt"))
        });
    }
}

criterion_group!(benches, aead);
criterion_main!(benches);
