//! An open-loop latency probe: GETs one URL at a fixed rate and prints the latency percentiles.
//!
//! `latency_probe URL TOKEN RATE_PER_SEC [SECONDS]` sends a request every 1/RATE seconds whether or
//! not earlier ones have answered (unlike wrk's closed loop, a slow answer does not slow the probe
//! down), and measures each latency from the moment the request is sent (tokio's timer wakes up to
//! a millisecond late, so the due time would add its jitter to every sample). It stops after SECONDS (default
//! 600) or at SIGINT, whichever comes first, and prints
//! `probe requests N errors E p50_us .. p90_us .. p99_us .. max_us ..`. This is what an API client
//! at a moderate rate sees; wrk's saturating load measures what is left of the server's capacity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: latency_probe URL TOKEN RATE_PER_SEC [SECONDS]".into());
    }
    let (url, token) = (args[1].clone(), args[2].clone());
    let rate: f64 = args[3].parse()?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err("RATE_PER_SEC must be a positive number".into());
    }
    let seconds: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(600);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut interrupted = Box::pin(tokio::signal::ctrl_c());
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start;
    while next < end {
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = &mut interrupted => break,
        }
        next += period;
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        let (latencies, errors) = (Arc::clone(&latencies), Arc::clone(&errors));
        tasks.spawn(async move {
            let sent = Instant::now();
            let answer = client.get(&url).header("X-Vault-Token", token).send().await;
            let ok = match answer {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies.lock().await.push(micros);
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut latencies = latencies.lock().await.clone();
    latencies.sort_unstable();
    let pick = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index]
    };
    println!(
        "probe requests {} errors {} p50_us {} p90_us {} p99_us {} max_us {}",
        latencies.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    Ok(())
}
