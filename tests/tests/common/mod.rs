//! Helpers shared by the end-to-end suites.

// Each suite compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use scrapewell::ClientBuilder;

/// A client whose backoff is short enough for tests on loopback, with seeded jitter.
pub(crate) fn fast_client() -> ClientBuilder {
    scrapewell::Client::builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .jitter_seed(2)
}

/// A loopback port with nothing listening on it.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Sends `count` GETs to `url`, `concurrency` at a time; every one must end in a 200.
pub(crate) async fn crawl(
    client: &scrapewell::Client,
    url: &str,
    count: usize,
    concurrency: usize,
) {
    use futures_util::{StreamExt, stream};
    let results = stream::iter(0..count)
        .map(|_| client.get(url).send())
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    for result in results {
        assert_eq!(result.expect("every request completes").status(), 200);
    }
}
