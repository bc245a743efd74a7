//! What an idempotency key costs: the idempotency layer over a no-op service, POST (a key is
//! generated, written and recorded) against GET (nothing is added), measured in one run.
//!
//! ```text
//! cargo bench -p scrapewell-benches --bench keys
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request};
use scrapewell_core::idempotency::{Idempotency, IdempotencyLayer, KeyStrategy};
use tower::{Layer, Service};

const N: u32 = 1_000_000;
const ROUNDS: usize = 7;

#[derive(Clone)]
struct Noop;

impl Service<Request<Bytes>> for Noop {
    type Response = usize;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<usize, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(request.headers().len()))
    }
}

fn time(service: &mut Idempotency<Noop>, method: &Method, body: &Bytes) -> Duration {
    let started = Instant::now();
    for _ in 0..N {
        let mut request = Request::new(body.clone());
        *request.method_mut() = method.clone();
        // A JSON POST carries its content type, so the header map is already allocated.
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let _ = black_box(service.call(request).into_inner());
    }
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let body = Bytes::from_static(br#"{"ref":"order-1","qty":1}"#);
    println!("{N} requests through IdempotencyLayer per round, median of {ROUNDS} rounds\n");
    println!("{:<28} {:>12}", "key", "ns per key");
    for (name, strategy) in [
        ("random UUID v4 (default)", KeyStrategy::Random),
        ("derived (SHA-256, v8)", KeyStrategy::Derived),
    ] {
        let mut service = IdempotencyLayer::new().strategy(strategy).layer(Noop);
        let mut per_key = Vec::new();
        for _ in 0..ROUNDS {
            let without = time(&mut service, &Method::GET, &body);
            let with = time(&mut service, &Method::POST, &body);
            per_key.push((with.as_nanos() as f64 - without.as_nanos() as f64) / f64::from(N));
        }
        println!("{name:<28} {:>12.1}", median(per_key));
    }
}
