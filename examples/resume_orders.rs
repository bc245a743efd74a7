//! `cargo run --example resume_orders`: writes that survive a restart.
//!
//! A scraper submits 40 orders to a slow API (300 ms of work each) and is cut off before any
//! answer comes: its one attempt at each times out after 50 ms, as a process killed mid-run
//! would leave them. The API went on and created them. Restarted, the scraper sends the same
//! 40 orders again. With keys derived from each request (method, URL and body), the second
//! run carries the keys of the first: the API answers from what it stored, or says the order
//! is still being worked on and the client asks again, and every order exists once. The same
//! two runs with random keys, a fresh one per request, show what the derived keys prevent:
//! the API cannot tell the second run's orders from new ones and creates each one twice.
//!
//! Exits non-zero when the run with derived keys created an order twice or lost one.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use scrapewell::{Client, Error, KeyStrategy};
use scrapewell_mock::MockServer;

const ORDERS: usize = 40;

/// What the two runs of one key strategy came to.
struct Outcome {
    cut_off: usize,
    resent_ok: usize,
    created: u64,
    duplicated: u64,
    answered_from_store: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let server = match MockServer::start().await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("cannot start the mock server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{ORDERS} orders, 300 ms of work each; the first run gives up after 50 ms\n");
    println!(
        "{:<14} {:>12} {:>14} {:>9} {:>12} {:>20}",
        "keys", "cut off", "resent, ok", "created", "duplicated", "answered from store"
    );
    let mut failed = false;
    for (label, strategy) in [
        ("derived", KeyStrategy::Derived),
        ("random", KeyStrategy::Random),
    ] {
        let outcome = match run(&server, label, strategy).await {
            Ok(outcome) => outcome,
            Err(error) => {
                eprintln!("{label}: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "{label:<14} {:>12} {:>14} {:>9} {:>12} {:>20}",
            outcome.cut_off,
            outcome.resent_ok,
            outcome.created,
            outcome.duplicated,
            outcome.answered_from_store
        );
        if strategy == KeyStrategy::Derived
            && (outcome.created != ORDERS as u64
                || outcome.duplicated != 0
                || outcome.resent_ok != ORDERS)
        {
            failed = true;
        }
    }
    if failed {
        eprintln!("\nderived keys did not keep every order to one create");
        return ExitCode::FAILURE;
    }
    println!("\nwith derived keys every order was created once");
    ExitCode::SUCCESS
}

/// Both runs with `strategy`: the one cut off, then the one after the restart, each with a
/// client of its own as a restarted process would have.
async fn run(server: &MockServer, label: &str, strategy: KeyStrategy) -> Result<Outcome, Error> {
    let before = server.stats();
    let cut_off_client = Client::builder()
        .idempotency_key_strategy(strategy)
        .attempt_timeout(Duration::from_millis(50))
        .max_attempts(1)
        .max_in_flight_per_host(ORDERS as u32)
        .build()?;
    let first = submit(&cut_off_client, server, label).await;
    let cut_off = first
        .iter()
        .filter(|result| matches!(result, Err(Error::Timeout { .. })))
        .count();
    drop(cut_off_client);

    let restarted = Client::builder()
        .idempotency_key_strategy(strategy)
        .max_attempts(10)
        .max_in_flight_per_host(ORDERS as u32)
        .build()?;
    let second = submit(&restarted, server, label).await;
    let resent_ok = second
        .iter()
        .filter(|result| result.as_ref().is_ok_and(|r| r.status() == 201))
        .count();
    // The run with random keys leaves orders still being created when the second run ends.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = server.stats();
    Ok(Outcome {
        cut_off,
        resent_ok,
        created: after.creates - before.creates,
        duplicated: after.duplicate_creates - before.duplicate_creates,
        answered_from_store: after.replays - before.replays,
    })
}

/// Sends every order at once, each with the same body in every run.
async fn submit(
    client: &Client,
    server: &MockServer,
    label: &str,
) -> Vec<Result<scrapewell::Response, Error>> {
    let url = server.url("/orders?delay_ms=300&require_key=1");
    stream::iter(0..ORDERS)
        .map(|n| {
            let order = serde_json::json!({ "ref": format!("{label}-{n}"), "sku": n % 7 });
            let request = client.post(&url).json(&order);
            async move { request.send().await }
        })
        .buffer_unordered(ORDERS)
        .collect()
        .await
}
