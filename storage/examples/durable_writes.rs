//! Measures durable (acknowledged = fsynced) writes per second of the sled backend, to see what group commit buys.
//!
//! Usage: `cargo run --release -p arcanum-storage --example durable_writes -- <writers> <total_writes> [single|kv2|kv2-atomic]`
//!
//! `single` (the default) writes one 100-byte value per write under keys that grow in order. `kv2` writes what a KV v2
//! write through the server stores: one in-order batch of two records, the new version (78 bytes once encrypted) and
//! the key's metadata (359 bytes), under random keys laid out as the engine lays them out. `kv2-atomic` writes the
//! same records as an atomic batch, as the engine did before it wrote them in order. Writes come from
//! `<writers>` concurrent tasks into a fresh database in a temporary directory (under `$ARCANUM_BENCH_DIR` if set, so
//! that a specific filesystem can be measured; tmpfs would make fsync free).

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use arcanum_storage::{Backend, Op, SledBackend};

// The server's allocator, so that this measures the storage layer as the server runs it: under
// glibc's malloc the writer thread spent 9% of the samples waking threads blocked on its locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VALUE_LEN: usize = 100;
/// A KV v2 version record `{"value":"<32 characters>"}` once encrypted: header, nonce, 45 bytes, tag.
const KV2_VERSION_LEN: usize = 78;
/// A KV v2 metadata record with one version, once encrypted.
const KV2_METADATA_LEN: usize = 359;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Single,
    KvV2,
    KvV2Atomic,
}

fn parse_args() -> Result<(usize, usize, Pattern), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (writers, total, pattern) = match args.as_slice() {
        [writers, total] => (writers, total, Pattern::Single),
        [writers, total, pattern] => (
            writers,
            total,
            match pattern.as_str() {
                "single" => Pattern::Single,
                "kv2" => Pattern::KvV2,
                "kv2-atomic" => Pattern::KvV2Atomic,
                other => return Err(format!("unknown pattern {other:?}: single, kv2 or kv2-atomic").into()),
            },
        ),
        _ => return Err("usage: durable_writes <writers> <total_writes> [single|kv2|kv2-atomic]".into()),
    };
    let writers: usize = writers.parse()?;
    let total: usize = total.parse()?;
    if writers == 0 {
        return Err("need at least one writer".into());
    }
    Ok((writers, total, pattern))
}

/// A xorshift generator: the keys need to be scattered, not unpredictable.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The two records of a KV v2 write of `secret/data/app/w<random>`, as the engine's barrier stores them.
fn kv2_write(random: u64, hashed: [u64; 4]) -> Vec<Op> {
    let view = "logical/0b0f2f5e-2a6c-4c1e-9d2f-6c1f3e5a7b9d";
    let digest: String = hashed.iter().map(|word| format!("{word:016x}")).collect();
    vec![
        Op::Put { key: format!("{view}/versions/{digest}/1"), value: vec![b'v'; KV2_VERSION_LEN] },
        Op::Put { key: format!("{view}/metadata/app/w{random}"), value: vec![b'm'; KV2_METADATA_LEN] },
    ]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (writers, total, pattern) = parse_args()?;
    let dir = match std::env::var_os("ARCANUM_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base)?,
        None => tempfile::tempdir()?,
    };
    let backend = Arc::new(SledBackend::open(dir.path())?);
    let rounds_before = backend.flush_rounds();

    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let backend = Arc::clone(&backend);
            // Spread the remainder so that exactly `total` writes happen.
            let count = total / writers + usize::from(w < total % writers);
            tokio::spawn(async move {
                let mut state = 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1);
                for i in 0..count {
                    match pattern {
                        Pattern::Single => backend.put(&format!("bench/w{w}/{i}"), vec![b'x'; VALUE_LEN]).await?,
                        Pattern::KvV2 | Pattern::KvV2Atomic => {
                            let random = next(&mut state);
                            let hashed = [next(&mut state), next(&mut state), next(&mut state), next(&mut state)];
                            let ops = kv2_write(random, hashed);
                            if pattern == Pattern::KvV2 {
                                backend.batch_in_order(ops).await?
                            } else {
                                backend.batch(ops).await?
                            }
                        }
                    }
                }
                Ok::<_, arcanum_storage::StorageError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let rounds = backend.flush_rounds() - rounds_before;

    println!(
        "writers={writers} writes={total} secs={secs:.3} writes_per_sec={:.0} flush_rounds={rounds}",
        total as f64 / secs
    );
    Ok(())
}
