//! A hostile HTTP server for testing scrapers: it fails on purpose, in the ways real sites do,
//! and counts what it saw so that tests assert outcomes at the server.
//!
//! It depends on neither `scrapewell-core` nor `scrapewell`: a test server that shares code with
//! what it tests hides the bugs they share.
//!
//! Every scenario is keyed by an id in its path, so concurrent tests never share state.
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /bytes/{n}?delay_ms=M` | `n` bytes of text (at most 256 MiB), M ms after the request (none when absent) |
//! | `GET /page/{id}` | a small HTML page |
//! | `ANY /flaky/{id}?fail=N&status=503&retry_after=V` | `status` (with `Retry-After: V`) N times, then 200 |
//! | `ANY /outage/{id}?after_ms=A&for_ms=D&status=503&retry_after=V` | 200 for A ms from the first request, then `status` (a bare 503 unless given) for D ms, then 200 again |
//! | `POST /orders?delay_ms=300&require_key=1` | idempotent create (see [`Stats`]) |
//! | `ANY /conflict/{id}` | a permanent 409 with problem details |
//! | `ANY /lock/{id}?times=N&retry_after=V` | 409 "Resource locked" with `Retry-After: V`, N times, then 200 |
//! | `ANY /reset/{id}?times=N` | N times: headers, half the body, then the connection is cut; then 200 |
//! | `ANY /stall/{id}?ms=M&times=N` | N times (all when absent): wait M ms before answering; then 200 |
//! | `ANY /status/{code}/{id}?retry_after=V&body=B&content_type=T` | always that status, with that body |
//! | `ANY /redirect?to=URL&status=302&set_cookie=C` | a redirect to `to`, setting cookie `C` (a `Set-Cookie` value) when given |
//! | `ANY /echo` | the request's method, path and headers as JSON |
//! | `ANY /limited/{id}?rate=R&burst=B&headers=H&retry_after=1&window=fixed` | a GCRA limit of R requests a second (0.001 to 10⁶, default 10; burst B from 1 to 10⁴, default 1) per client, or a fixed window; 429 past it; 400 for R or B out of range |
//! | `GET /docs/{id}?weak=1&churn=1` | a JSON document with a strong ETag (`W/` with `weak=1`); 404 when missing |
//! | `PUT /docs/{id}?stale=409&require=1&delay_ms=M` | writes a JSON object under `If-Match` / `If-None-Match: *` (see below), answering M ms after it is applied |
//! | `GET, PUT /couch/{db}/{id}?rev=R` | a CouchDB-shaped document: the version is `_rev` in the body |
//! | `GET /stats?path=P` | [`Stats`] as JSON (field names as in the struct), with `hits` of path `P` when given; for a test in another process, against the binary. Not itself counted |
//!
//! The idempotent create follows draft-ietf-httpapi-idempotency-key-header: the first request
//! with a key is processed (`delay_ms`, in a task of its own so that a client that gives up does
//! not cancel it); another request with the same key gets 409 problem+json while the first is in
//! flight, the stored response (`Idempotent-Replayed: true`) once it is done, or 422 when its
//! payload differs. A request without a key is processed every time, or refused with 400 when
//! `require_key=1`. Each create counts against the client's reference (`ref` in a JSON or form
//! body), so duplicates show in [`Stats::duplicate_creates`].
//!
//! `/limited/{id}` keeps one GCRA per client (the `x-client` header, else the peer address), on
//! a microsecond clock with no slack: a request early by a microsecond is refused. It announces
//! its limit in the `headers` form asked for: `draft` (`RateLimit` / `RateLimit-Policy` as
//! Structured Field lists), `legacy` (`RateLimit-Limit`, `-Remaining`, `-Reset`), `x`
//! (`X-RateLimit-*`, the reset as an epoch time) or `none` (bare 429s, as nginx's `limit_req`);
//! `retry_after=1` adds `Retry-After` to refusals. With `window=fixed` it counts instead in fixed
//! windows of the announced policy (B / R seconds rounded up to whole seconds, R requests a second
//! of it), aligned on the Unix clock as Kong's and Envoy's are: the whole quota may go at once,
//! and then nothing until the window ends. [`MockServer::limits`] counts what it accepted and
//! refused, second by second.
//!
//! `/docs/{id}` versions each document with a strong ETag (`"v3"`). A write with `If-Match`
//! naming another version is refused with 412 (with the current ETag), or with 409 and problem
//! details under `stale=409`; `If-None-Match: *` creates the document, or gets 412 when it
//! exists; a write with neither is applied blindly, or refused with 428 under `require=1`. With
//! `churn=1`, a read is followed at once by another writer's change, so that every write based on
//! it is stale. `/couch/{db}/{id}` answers as CouchDB does, without its ETag: the revision is the
//! body's `_rev` (`3-9f2c…`), taken on a write from the body, `rev` or `If-Match`; a stale or
//! missing one is a 409 `{"error":"conflict"}`, and a write without one creates the document.
//! [`Stats`] counts applied, stale, already-existing and refused writes, and
//! [`MockServer::document`] shows the final state.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let server = scrapewell_mock::MockServer::start().await?;
//! let url = server.url("/flaky/a?fail=2");
//! assert!(url.starts_with("http://127.0.0.1:"));
//! assert_eq!(server.stats().requests, 0);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod blocks;
mod documents;
mod routes;
mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use blocks::BLOCK_VENDORS;
use state::State;
pub use state::{LimitStats, Stats};

/// A running mock server on a loopback port. Dropping it stops the server and every
/// connection it holds.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let server = scrapewell_mock::MockServer::start().await?;
/// // Each scenario is keyed by an id: concurrent tests each use their own.
/// let flaky = server.url("/flaky/my-test?fail=2&status=503&retry_after=1");
/// assert!(flaky.starts_with(&server.base_url()));
/// assert_eq!(server.hits("/flaky/my-test"), 0);
/// drop(server);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
    /// The server's own thread, when it has one: told to stop when the server is dropped.
    dedicated: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` on a free port.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr` (port 0 for a free one).
    pub async fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(MockServer {
            addr,
            state,
            accept,
            dedicated: None,
        })
    }

    /// Starts a server on `addr` on a thread and runtime of its own, so that the client under
    /// test does not share a scheduler with it: a test that measures pace at the server wants
    /// arrivals stamped when they arrive, not when a busy runtime gets to them.
    pub fn start_dedicated(addr: SocketAddr) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("scrapewell-mock".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let started = MockServer::start_on(addr).await;
                    let ok = started.is_ok();
                    let _ = ready_tx.send(started);
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
            })?;
        let mut server = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the mock server's thread ended before it started"))??;
        server.dedicated = Some((stop_tx, thread));
        Ok(server)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL joined with `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// How many requests reached `path` (without the query).
    pub fn hits(&self, path: &str) -> u64 {
        self.state.hits(path)
    }

    /// When the first requests to `path` (up to 1,024 of them) arrived.
    pub fn arrivals(&self, path: &str) -> Vec<Instant> {
        self.state.arrivals(path)
    }

    /// What the rate-limited route at `path` (`/limited/{id}`) accepted and refused.
    pub fn limits(&self, path: &str) -> LimitStats {
        self.state.limit_stats(path)
    }

    /// The document at `path` (`/docs/{id}` or `/couch/{db}/{id}`) as the server holds it,
    /// without CouchDB's `_id` and `_rev`.
    pub fn document(&self, path: &str) -> Option<serde_json::Value> {
        self.state.documents().get(path)
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(self) {}
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some((stop, thread)) = self.dedicated.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Dropping the set (when the accept task is aborted) aborts every connection task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        routes::handle(Arc::clone(&state), peer, request)
                    });
                    // A connection that a client resets, or that a scenario cuts, ends here.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
