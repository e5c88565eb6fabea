//! Runs the stand-in Kubernetes API server on its own, for the hvac login test and
//! `scripts/bench-k8s-login`: prints one JSON line `{host, ca_pem, jwt, reviewer}` (the JWT is a
//! projected service-account token for `prod/app-sa`), then once a second a line
//! `{reviews, review_seconds}` with the TokenReviews answered so far and the time spent on them.
//! It stops when its standard input closes.

#[path = "../tests/kubernetes/standin.rs"]
mod standin;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use serde_json::json;

fn main() {
    let api = standin::FakeApi::start();
    api.state().record = false;
    let hello = json!({
        "host": api.host(),
        "ca_pem": api.ca_pem,
        "jwt": standin::sa_jwt("prod", "app-sa"),
        "reviewer": standin::REVIEWER,
    });
    println!("{hello}");
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let (reviews, seconds) = {
            let state = api.state();
            (state.reviews, state.review_time.as_secs_f64())
        };
        println!("{}", json!({"reviews": reviews, "review_seconds": seconds}));
        let _ = std::io::stdout().flush();
    }
}
