//! What the scrapewell stack costs over bare reqwest, measured side by side in one run.
//!
//! ```text
//! cargo bench -p scrapewell-benches --bench overhead                       # the ratio table
//! cargo bench -p scrapewell-benches --bench overhead -- --requests 50000   # longer rounds
//! scripts/callgrind.sh                                             # instructions per request
//! scripts/callgrind.sh footprint                                   # lines of code per request
//! C=64 scripts/callgrind.sh cache                                  # cache misses per request
//! ```
//!
//! Beside bare reqwest, scrapewell and reqwest-middleware + reqwest-retry, `http-round-trip` is
//! bare reqwest behind the seam any stack of tower layers over it needs: the request built as an
//! `http::Request`, turned into a `reqwest::Request`, the answer turned back into an
//! `http::Response` and its body collected. It tells what the seam costs from what the layers
//! cost.
//!
//! The server (the mock's `/bytes/1024`: 1 KiB bodies, so no retry is ever triggered) runs in a
//! child process of this binary, so its work is not counted. The clients run on a
//! current-thread tokio runtime; CPU time is read from `/proc/self/task/*/schedstat`
//! (nanoseconds, every thread of this process). Each round runs every client once, in an order
//! that turns from round to round, and each client's cost is taken against bare reqwest's in the
//! same round: the table shows the median of those differences and ratios over the rounds, and
//! the range of the throughput ratio, so that drift on a shared machine cancels out and what is
//! left of the noise shows.
//!
//! `--callgrind CLIENT --requests N` runs N requests at concurrency 1 with one client and exits,
//! for `valgrind --tool=callgrind` to count (or `perf record` to sample; `--concurrency C` for
//! another concurrency). There the server answers each request 5 ms after it arrives
//! (`--server-delay-ms M`): under valgrind the client runs some fifty times slower, and a reply
//! that is sometimes already waiting when the client first looks at the socket and sometimes not
//! made the count swing by a thousand instructions a request (a runtime that finds nothing to do
//! parks in the driver, which costs that much). With the delay, every request parks once, as
//! against any real server, and the count is the same from run to run. `--heap-layout K` sets
//! what the heap holds before the client is built (see `scripts/callgrind.sh`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// The clients compared; every ratio is against the first.
const CLIENTS: [&str; 4] = [
    "reqwest",
    "scrapewell",
    "reqwest-middleware",
    "http-round-trip",
];
/// Every client sends the same User-Agent (scrapewell sets one by default), so that the
/// comparison counts the layers, not a header.
const USER_AGENT: &str = concat!("scrapewell/", env!("CARGO_PKG_VERSION"));
const ROUNDS: usize = 7;

enum Client {
    Bare(reqwest::Client),
    Scrapewell(scrapewell::Client),
    Middleware(reqwest_middleware::ClientWithMiddleware),
    HttpRoundTrip(reqwest::Client),
}

impl Client {
    fn new(name: &str) -> Self {
        match name {
            "reqwest" => Client::Bare(reqwest_client()),
            // The per-host bound on requests in flight (8 by default, for politeness) would cap
            // the concurrency-64 rounds; the comparison is of the layers' cost at equal concurrency.
            "scrapewell" => Client::Scrapewell(
                scrapewell::Client::builder()
                    .user_agent(USER_AGENT)
                    .max_in_flight_per_host(64)
                    .build()
                    .expect("client"),
            ),
            "http-round-trip" => Client::HttpRoundTrip(reqwest_client()),
            _ => {
                let policy = reqwest_retry::policies::ExponentialBackoff::builder()
                    .build_with_max_retries(3);
                Client::Middleware(
                    reqwest_middleware::ClientBuilder::new(reqwest_client())
                        .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(
                            policy,
                        ))
                        .build(),
                )
            }
        }
    }

    async fn fetch(&self, url: &str) -> usize {
        let body = match self {
            Client::Bare(client) => client
                .get(url)
                .send()
                .await
                .expect("reqwest")
                .bytes()
                .await
                .expect("body"),
            Client::Scrapewell(client) => client
                .get(url)
                .send()
                .await
                .expect("scrapewell")
                .bytes()
                .await
                .expect("body"),
            Client::Middleware(client) => client
                .get(url)
                .send()
                .await
                .expect("middleware")
                .bytes()
                .await
                .expect("body"),
            Client::HttpRoundTrip(client) => {
                let request = http::Request::get(url)
                    .body(bytes::Bytes::new())
                    .expect("request");
                let request = reqwest::Request::try_from(request).expect("reqwest request");
                let response = client.execute(request).await.expect("http round trip");
                let response = http::Response::<reqwest::Body>::from(response);
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .expect("body")
                    .to_bytes()
            }
        };
        body.len()
    }
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .build()
        .expect("reqwest client")
}

/// CPU time of every thread of this process.
fn cpu_time() -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

struct Round {
    cpu_per_request: Duration,
    requests_per_sec: f64,
}

async fn round(client: &Client, url: &str, requests: usize, concurrency: usize) -> Round {
    let cpu = cpu_time();
    let wall = Instant::now();
    let bytes: usize = futures_util::stream::iter(0..requests)
        .map(|_| client.fetch(url))
        .buffer_unordered(concurrency)
        .fold(0, |sum, n| async move { sum + n })
        .await;
    assert_eq!(bytes, requests * 1024);
    let wall = wall.elapsed();
    Round {
        cpu_per_request: (cpu_time() - cpu) / requests as u32,
        requests_per_sec: requests as f64 / wall.as_secs_f64(),
    }
}

/// The run `scripts/callgrind.sh` counts (`--toggle-collect=overhead::counted`): one request
/// to open the connection, then `requests` more. Not inlined, so that its name is in the binary.
#[inline(never)]
fn counted(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> Round {
    runtime.block_on(async {
        client.fetch(url).await;
        round(client, url, requests, concurrency).await
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn start_server() -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    (child, format!("{}/bytes/1024", line.trim()))
}

fn serve() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = scrapewell_mock::MockServer::start().await.expect("bind");
        println!("{}", server.base_url());
        // The parent kills this process when it is done.
        std::future::pending::<()>().await;
    });
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let requests: usize = value("--requests")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut server, url) = start_server();

    if let Some(name) = value("--callgrind") {
        let concurrency = value("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let delay_ms: u64 = value("--server-delay-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let url = format!("{url}?delay_ms={delay_ms}");
        let layout: usize = value("--heap-layout")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // On a thread of its own, the client's stack and heap (a fresh malloc arena) lie where
        // they would for any path and environment, which on the main thread shift the stack and
        // moved the count of the same binary by some 300 instructions.
        std::thread::spawn(move || {
            // Where malloc finds room for each request depends on what the heap held before;
            // `--heap-layout K` holds K blocks of assorted sizes, so that a count can be taken
            // over several layouts (see scripts/callgrind.sh).
            let _held: Vec<Vec<u8>> = (0..layout).map(|i| vec![1; 24 << (i % 9)]).collect();
            let client = Client::new(&name);
            counted(&runtime, &client, &url, requests, concurrency)
        })
        .join()
        .expect("the counted run");
        let _ = server.kill();
        let _ = server.wait();
        return ExitCode::SUCCESS;
    }

    println!(
        "{requests} GETs of 1 KiB per round, {ROUNDS} rounds; medians, each round against reqwest's\n"
    );
    println!(
        "{:<20} {:>5} {:>14} {:>12} {:>14} {:>12} {:>16}",
        "client",
        "conc.",
        "CPU/request",
        "vs reqwest",
        "requests/s",
        "vs reqwest",
        "range over rounds"
    );
    for concurrency in [1, 64] {
        let clients: Vec<Client> = CLIENTS.iter().map(|name| Client::new(name)).collect();
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); CLIENTS.len()];
        let mut rate: Vec<Vec<f64>> = vec![Vec::new(); CLIENTS.len()];
        runtime.block_on(async {
            for client in &clients {
                round(client, &url, requests / 10, concurrency).await; // warm the pools
            }
            for r in 0..ROUNDS {
                for i in 0..clients.len() {
                    let i = (i + r) % clients.len();
                    let result = round(&clients[i], &url, requests, concurrency).await;
                    cpu[i].push(result.cpu_per_request.as_nanos() as f64);
                    rate[i].push(result.requests_per_sec);
                }
            }
        });
        for (i, name) in CLIENTS.iter().enumerate() {
            let extra_cpu: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(c, b)| c - b).collect();
            let ratios: Vec<f64> = rate[i].iter().zip(&rate[0]).map(|(q, b)| q / b).collect();
            let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "{name:<20} {concurrency:>5} {:>11.2} µs {:>+9.2} µs {:>14.0} {:>11.3}× {:>7.3}–{:.3}×",
                median(cpu[i].clone()) / 1000.0,
                median(extra_cpu) / 1000.0,
                median(rate[i].clone()),
                median(ratios),
                lowest,
                highest
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    ExitCode::SUCCESS
}
