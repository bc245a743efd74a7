//! What the rate limiter costs per request, and per host kept.
//!
//! ```text
//! cargo bench -p scrapewell-benches --bench ratelimit
//! ```
//!
//! A no-op service with and without the RateLimit layer, side by side in one run; the layer has
//! a quota high enough that governor's check runs on every request but never waits. "Hot key"
//! sends every request to one host; "100,000 hosts" cycles through that many, so that every
//! lookup misses the CPU caches as it would in a wide crawl.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer, TableSettings};
use tower::{Layer, Service};

const REQUESTS: usize = 1_000_000;
const ROUNDS: usize = 5;

#[derive(Clone)]
struct Noop;

impl Service<Request<Bytes>> for Noop {
    type Response = Response<Bytes>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<Bytes>, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(Response::new(Bytes::new())))
    }
}

async fn run<S>(service: &mut S, uris: &[Uri]) -> Duration
where
    S: Service<Request<Bytes>, Response = Response<Bytes>>,
{
    let started = Instant::now();
    for i in 0..REQUESTS {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = uris[i % uris.len()].clone();
        let _ = black_box(service.call(request).await);
    }
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{REQUESTS} requests a round, median of {ROUNDS} rounds\n");
    println!(
        "{:<16} {:>16} {:>12}",
        "hosts", "ns per request", "hosts kept"
    );
    for hosts in [1usize, 100_000] {
        let uris: Vec<Uri> = (0..hosts)
            .map(|n| format!("http://host-{n}.test/page").parse().expect("uri"))
            .collect();
        let table = Arc::new(HostTable::new(TableSettings::default().max_hosts(200_000)));
        let quota = Quota::per_second(NonZeroU32::MAX);
        let mut limited = RateLimitLayer::new(Arc::clone(&table))
            .default_quota(quota)
            .jitter(0.0)
            .layer(Noop);
        let mut bare = Noop;
        let per_request = runtime.block_on(async {
            run(&mut limited, &uris).await; // every host in the table before measuring
            let mut costs = Vec::new();
            for _ in 0..ROUNDS {
                let without = run(&mut bare, &uris).await;
                let with = run(&mut limited, &uris).await;
                costs.push((with.as_nanos() as f64 - without.as_nanos() as f64) / REQUESTS as f64);
            }
            median(costs)
        });
        let label = if hosts == 1 {
            "1 (hot key)".to_owned()
        } else {
            format!("{hosts}")
        };
        println!("{label:<16} {per_request:>16.1} {:>12}", table.len());
        if hosts > 1 {
            let bytes = table.memory_bytes();
            println!(
                "\nmemory: {bytes} bytes for {} hosts = {:.0} bytes per host ({} per entry at the map's fullest)",
                table.len(),
                bytes as f64 / table.len() as f64,
                HostTable::BYTES_PER_HOST
            );
        }
    }
}
