//! Per-host rate limiting that learns from the server.
//!
//! Every request to a host waits its turn rather than failing: while the host is paused (a
//! `Retry-After`, a budget at zero), while it has its most requests in flight, until its quota
//! allows (governor's GCRA, one quota per host pattern), and until its slot in the pace learned
//! from the server. What the server says is learned from every response, for every request to
//! the host, not only the one that got it:
//!
//! - 429 or 503 with `Retry-After` pauses the host until then;
//! - `RateLimit` / `RateLimit-Policy` (every draft generation) and `X-RateLimit-*` slow the pace
//!   before the server has to refuse;
//! - refusals without any header cut the pace in half (once per round trip) and clean stretches
//!   let it creep back up, never above the configured quota (AIMD).
//!
//! The state lives in a [`HostTable`] shared by every request of the client; its memory is
//! bounded. Waits for a pause or a learned pace get a jitter of up to 1%, so that clients
//! started together drift apart.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//! use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer, TableSettings};
//!
//! let table = Arc::new(HostTable::new(TableSettings::default()));
//! let layer = RateLimitLayer::new(table)
//!     .default_quota(Quota::per_second(NonZeroU32::new(5).unwrap()))
//!     .host_quota("*.example.com", Quota::per_second(NonZeroU32::new(1).unwrap()))
//!     .unwrap();
//! # let _ = layer;
//! ```

mod headers;
mod layer;
mod table;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt};

pub use governor::Quota;
pub use headers::ServerLimit;
pub use layer::{InvalidPattern, KeyBy, KeyFn, RateLimitLayer};
pub use table::{HostKey, HostStats, HostTable, TableSettings};

/// Response future of [`RateLimit`]: the wait for the host's turn, then the inner call.
pub use crate::BoxedResponseFuture as ResponseFuture;

use layer::{Limiter, Shared};
use table::Gate;

/// Waits for each request's turn at its host (see the [module docs](self)).
///
/// # Clone
///
/// Clones share the quotas and the [`HostTable`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The table this service records hosts in.
    pub fn table(&self) -> &Arc<HostTable> {
        &self.shared.table
    }

    /// What the table knows about the host `uri` belongs to.
    pub fn host_stats(&self, uri: &http::Uri) -> Option<HostStats> {
        let (key, _) = self.shared.route(uri)?;
        self.shared.table.stats(&key)
    }
}

impl<S, B, ResB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<ResB>, S::Error>;

    /// Always ready: the inner service's readiness is awaited once the request's turn comes.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        ResponseFuture::new(async move {
            let Some((key, limiter)) = shared.route(request.uri()) else {
                return inner.oneshot(request).await;
            };
            let quota_interval = limiter.map_or(0, Limiter::interval_nanos);
            let admitted = wait_for_turn(&shared, key, limiter).await;
            let mut turn = Turn {
                table: &shared.table,
                key,
                admitted,
                quota_interval,
                done: false,
            };
            let result = inner.oneshot(request).await;
            match &result {
                Ok(response) => turn.complete(Some((response.status(), response.headers()))),
                Err(_) => turn.complete(None),
            }
            result
        })
    }
}

/// Waits until the request may go; returns the slot it was admitted at.
async fn wait_for_turn(shared: &Shared, key: HostKey, limiter: Option<&Limiter>) -> u64 {
    let table = &shared.table;
    loop {
        match table.gate(&key) {
            Gate::Paused(wait) => {
                shared.sleep(wait).await;
                continue;
            }
            Gate::Busy => {
                // Listen before looking again, so that a release in between is not missed.
                let released = table.released(&key).notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if table.gate(&key) == Gate::Busy {
                    released.await;
                }
                continue;
            }
            Gate::Open => {}
        }
        if let Some(limiter) = limiter
            && let Some(wait) = limiter.check(&key)
        {
            // No jitter here: governor's slots already stagger the waiting requests, and a
            // jitter would only cost rate.
            tokio::time::sleep(wait).await;
            continue;
        }
        let (wait, slot) = table.admit(&key);
        if !wait.is_zero() {
            shared.sleep(wait).await;
        }
        // A pause that began while this request waited for its slot holds it too.
        while let Gate::Paused(wait) = table.gate_pause(&key) {
            shared.sleep(wait).await;
        }
        return slot;
    }
}

/// A request that holds a place in flight at its host; the place is given back when the
/// request completes or is dropped (a deadline, a cancelled task).
struct Turn<'a> {
    table: &'a HostTable,
    key: HostKey,
    admitted: u64,
    quota_interval: u64,
    done: bool,
}

impl Turn<'_> {
    fn complete(&mut self, response: Option<(http::StatusCode, &http::HeaderMap)>) {
        self.done = true;
        self.table
            .complete(&self.key, self.admitted, response, self.quota_interval);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.table
                .complete(&self.key, self.admitted, None, self.quota_interval);
        }
    }
}

impl Shared {
    /// Sleeps `wait` plus a jitter of up to the configured share of it.
    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + use<> {
        let jitter = wait.mul_f64(self.jitter * fastrand::f64());
        tokio::time::sleep(wait + jitter)
    }
}

#[cfg(test)]
mod tests;
