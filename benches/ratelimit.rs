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
//!
//! The no-op service answers in two shapes. "Boxed" returns a boxed future, as the client's
//! transport (and reqwest, and hyper's client) does: the layer's future carries a pointer until
//! the response arrives. "Inline" returns the response inside its future (`std::future::Ready`),
//! so that every move of the layer's future also moves a 144-byte response: the difference
//! between the two columns is that cost of the layer's own future, not of its lookups.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer, TableSettings};
use tower::{Layer, Service};

const REQUESTS: usize = 1_000_000;
const ROUNDS: usize = 5;

type Answer = Result<Response<Bytes>, Infallible>;

/// A service that answers at once, its future built by `F`.
struct Noop<F>(fn(Answer) -> F);

impl<F> Clone for Noop<F> {
    fn clone(&self) -> Self {
        Noop(self.0)
    }
}

impl<F: Future<Output = Answer>> Service<Request<Bytes>> for Noop<F> {
    type Response = Response<Bytes>;
    type Error = Infallible;
    type Future = F;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Bytes>) -> F {
        (self.0)(Ok(Response::new(Bytes::new())))
    }
}

fn boxed(answer: Answer) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
    Box::pin(std::future::ready(answer))
}

fn inline(answer: Answer) -> std::future::Ready<Answer> {
    std::future::ready(answer)
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

/// The layer's cost per request over `noop` alone: the median of the rounds' differences.
fn cost<F: Future<Output = Answer> + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    table: &Arc<HostTable>,
    noop: Noop<F>,
    uris: &[Uri],
) -> f64 {
    let mut limited = RateLimitLayer::new(Arc::clone(table))
        .default_quota(Quota::per_second(NonZeroU32::MAX))
        .jitter(0.0)
        .layer(noop.clone());
    let mut bare = noop;
    runtime.block_on(async {
        run(&mut limited, uris).await; // every host in the table before measuring
        let mut costs = Vec::new();
        for _ in 0..ROUNDS {
            let without = run(&mut bare, uris).await;
            let with = run(&mut limited, uris).await;
            costs.push((with.as_nanos() as f64 - without.as_nanos() as f64) / REQUESTS as f64);
        }
        median(costs)
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{REQUESTS} requests a round, median of {ROUNDS} rounds; ns per request\n");
    println!(
        "{:<16} {:>14} {:>14} {:>12}",
        "hosts", "boxed inner", "inline inner", "hosts kept"
    );
    for hosts in [1usize, 100_000] {
        let uris: Vec<Uri> = (0..hosts)
            .map(|n| format!("http://host-{n}.test/page").parse().expect("uri"))
            .collect();
        let table = Arc::new(HostTable::new(TableSettings::default().max_hosts(200_000)));
        let with_boxed = cost(&runtime, &table, Noop(boxed), &uris);
        let with_inline = cost(&runtime, &table, Noop(inline), &uris);
        let label = if hosts == 1 {
            "1 (hot key)".to_owned()
        } else {
            format!("{hosts}")
        };
        println!(
            "{label:<16} {with_boxed:>14.1} {with_inline:>14.1} {:>12}",
            table.len()
        );
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
