//! What the rate limiter costs per request, and per host kept.
//!
//! ```text
//! cargo bench -p scrapewell-benches --bench ratelimit
//! scripts/callgrind.sh ratelimit            # instructions per request, one host
//! ```
//!
//! A no-op service with and without the RateLimit layer, side by side in one run; the layer has
//! a quota high enough that governor's check runs on every request but never waits. "Hot key"
//! sends every request to one host; "100,000 hosts" cycles through that many, so that every
//! lookup misses the CPU caches as it would in a wide crawl. Both arms read each request's host
//! before the call: a real request's URI was just parsed, so the layer should not be charged for
//! missing on the bytes of one parsed long before.
//!
//! The no-op service answers in two shapes. "Boxed" returns a boxed future, as the client's
//! transport (and reqwest, and hyper's client) does: the layer's future carries a pointer until
//! the response arrives. "Inline" returns the response inside its future (`std::future::Ready`),
//! so that every move of the layer's future also moves a 144-byte response: the difference
//! between the two columns is that cost of the layer's own future, not of its lookups.
//!
//! `--callgrind bare|limited --requests N` sends N requests to one host through the boxed no-op
//! alone or under the layer and exits, for `valgrind --tool=callgrind` to count.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use scrapewell_core::ratelimit::{
    HostPaused, HostTable, Quota, RateLimit, RateLimitLayer, TableSettings,
};
use tower::{Layer, Service};

/// Requests a batch; each round runs a batch without the layer, then one with it.
const BATCH: usize = 10_000;
const ROUNDS: usize = 101;

type Answer = Result<Response<Bytes>, HostPaused>;

/// A service that answers at once, its future built by `F`.
struct Noop<F>(fn(Answer) -> F);

impl<F> Clone for Noop<F> {
    fn clone(&self) -> Self {
        Noop(self.0)
    }
}

impl<F: Future<Output = Answer>> Service<Request<Bytes>> for Noop<F> {
    type Response = Response<Bytes>;
    type Error = HostPaused;
    type Future = F;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HostPaused>> {
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

/// Sends `requests` requests to the hosts from `first` on (cycling), and how long it took.
async fn run<S>(service: &mut S, uris: &[Uri], first: usize, requests: usize) -> Duration
where
    S: Service<Request<Bytes>, Response = Response<Bytes>>,
{
    let started = Instant::now();
    for i in first..first + requests {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = uris[i % uris.len()].clone();
        touch_host(request.uri());
        let _ = black_box(service.call(request).await);
    }
    started.elapsed()
}

/// Reads the bytes of a URI's authority, as the client's parse of a request's URL just did:
/// the URIs here were parsed long before, and a layer that reads its host would otherwise be
/// charged a cache miss that no real request pays.
fn touch_host(uri: &Uri) {
    if let Some(authority) = uri.authority() {
        black_box(authority.as_str().bytes().fold(0u8, u8::wrapping_add));
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The layer's cost per request over `noop` alone: the median of the rounds' differences.
/// Short batches of the two, side by side, see the same load on a shared machine; whole runs
/// still differ by up to a tenth.
fn cost<F: Future<Output = Answer> + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    table: &Arc<HostTable>,
    noop: Noop<F>,
    uris: &[Uri],
) -> f64 {
    let mut limited = limited(table, noop.clone());
    let mut bare = noop;
    runtime.block_on(async {
        // Every host in the table before measuring.
        run(&mut limited, uris, 0, uris.len().max(BATCH)).await;
        let mut costs = Vec::new();
        for round in 0..ROUNDS {
            // Each batch goes on through the hosts where the last of its kind stopped; the two
            // kinds half the hosts apart, so that neither finds the URIs the other just read
            // in the cache.
            let first = round * BATCH;
            let without = run(&mut bare, uris, first, BATCH).await;
            let with = run(&mut limited, uris, first + uris.len() / 2, BATCH).await;
            costs.push((with.as_nanos() as f64 - without.as_nanos() as f64) / BATCH as f64);
        }
        median(costs)
    })
}

/// As [`cost`], with `threads` threads at once, each on its own runtime and its own hosts, all
/// on one table: what the threads cost one another (a shard's lock, its cache lines). Each
/// round's time is the slowest thread's.
fn parallel_cost(table: &Arc<HostTable>, threads: usize, hosts_each: usize) -> f64 {
    let barrier = Barrier::new(threads);
    let per_thread: Vec<Vec<(Duration, Duration)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (table, barrier) = (Arc::clone(table), &barrier);
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    let uris: Vec<Uri> = (0..hosts_each)
                        .map(|n| format!("http://t{thread}-host-{n}.test/page").parse())
                        .collect::<Result<_, _>>()
                        .expect("uri");
                    let mut limited = limited(&table, Noop(boxed));
                    let mut bare = Noop(boxed);
                    runtime.block_on(run(&mut limited, &uris, 0, uris.len().max(BATCH)));
                    (0..ROUNDS)
                        .map(|round| {
                            let first = round * BATCH;
                            barrier.wait();
                            let without = runtime.block_on(run(&mut bare, &uris, first, BATCH));
                            barrier.wait();
                            let with = runtime.block_on(run(&mut limited, &uris, first, BATCH));
                            (without, with)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("bench thread"))
            .collect()
    });
    let slowest = |round: usize, pick: fn(&(Duration, Duration)) -> Duration| {
        per_thread
            .iter()
            .map(|rounds| pick(&rounds[round]).as_nanos() as f64)
            .fold(0.0, f64::max)
    };
    median(
        (0..ROUNDS)
            .map(|round| (slowest(round, |r| r.1) - slowest(round, |r| r.0)) / BATCH as f64)
            .collect(),
    )
}

/// The layer as the bench builds it: a quota checked on every request that never waits.
fn limited<F: Future<Output = Answer>>(
    table: &Arc<HostTable>,
    noop: Noop<F>,
) -> RateLimit<Noop<F>> {
    RateLimitLayer::new(Arc::clone(table))
        .default_quota(Quota::per_second(NonZeroU32::MAX))
        .jitter(0.0)
        .layer(noop)
}

/// `--callgrind bare|limited --requests N`: N requests to one host, for callgrind to count.
fn count_instructions(runtime: &tokio::runtime::Runtime, args: &[String]) -> Option<()> {
    let value = |name: &str| args.get(args.iter().position(|a| a == name)? + 1);
    let requests: usize = value("--requests")?.parse().ok()?;
    let uris = ["http://host-1.test/page".parse().expect("uri")];
    // Made outside the count: its clock calibrates for as long as that takes.
    let table = Arc::new(HostTable::new(TableSettings::default()));
    counted(runtime, &table, &uris, value("--callgrind")?, requests)
}

/// The run `scripts/callgrind.sh ratelimit` counts (`--toggle-collect=ratelimit::counted`).
/// Not inlined, so that its name is in the binary.
#[inline(never)]
fn counted(
    runtime: &tokio::runtime::Runtime,
    table: &Arc<HostTable>,
    uris: &[Uri],
    client: &str,
    requests: usize,
) -> Option<()> {
    runtime.block_on(async {
        match client {
            "bare" => run(&mut Noop(boxed), uris, 0, requests).await,
            "limited" => run(&mut limited(table, Noop(boxed)), uris, 0, requests).await,
            _ => return None,
        };
        Some(())
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--callgrind") {
        count_instructions(&runtime, &args).expect("--callgrind bare|limited --requests N");
        return;
    }
    println!("{BATCH} requests a batch, median of {ROUNDS} rounds; ns per request\n");
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
    let table = Arc::new(HostTable::new(TableSettings::default()));
    println!(
        "\n2 threads, 1,000 hosts each, one table: {:.1} ns per request",
        parallel_cost(&table, 2, 1_000)
    );
}
