//! Measures durable (acknowledged = fsynced) writes per second of the sled backend, to see what group commit buys.
//!
//! Usage: `cargo run --release -p arcanum-storage --example durable_writes -- <writers> <total_writes>`
//!
//! Writes 100-byte values from `<writers>` concurrent tasks into a fresh database in a temporary directory (under
//! `$ARCANUM_BENCH_DIR` if set, so that a specific filesystem can be measured; tmpfs would make fsync free).

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use arcanum_storage::{Backend, SledBackend};

const VALUE_LEN: usize = 100;

fn parse_args() -> Result<(usize, usize), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [writers, total] = args.as_slice() else {
        return Err("usage: durable_writes <writers> <total_writes>".into());
    };
    let writers: usize = writers.parse()?;
    let total: usize = total.parse()?;
    if writers == 0 {
        return Err("need at least one writer".into());
    }
    Ok((writers, total))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (writers, total) = parse_args()?;
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
                for i in 0..count {
                    backend.put(&format!("bench/w{w}/{i}"), vec![b'x'; VALUE_LEN]).await?;
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
