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
//! - refusals without any header cut the pace (once per round trip; requests waiting for slots
//!   in the old pace take new ones) and clean stretches let it creep back up, never above the
//!   configured quota (AIMD);
//! - a host that refuses everything whatever the pace (down for a while, a window's budget
//!   spent) is tried ever less often, and gets back the rate it delivered before as soon as it
//!   accepts a request again.
//!
//! A host starts with one request in flight and gets one more place for each accepted response,
//! up to the bound (slow start), so that a burst does not meet a host whose limit is unknown.
//! A retry (a request carrying [`RetryAttempt`], as the retry layer's attempts after the first
//! do) takes the next free place before the first attempts waiting for one, as TCP resends
//! before it sends anything new: it finishes a request already begun, and a host whose first
//! attempts all time out answers its retries and opens its window.
//!
//! A server that asks for a pause longer than a caller would wait (a `Retry-After` of a day) can
//! have the requests to its host fail at once instead, with [`HostPaused`]
//! ([`RateLimitLayer::fail_paused_longer_than`]).
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

mod clock;
mod future;
mod headers;
mod in_process_store;
mod layer;
#[cfg(feature = "redis")]
mod redis_store;
mod shared;
mod table;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::Lasting;

pub use future::ResponseFuture;
pub use governor::Quota;
pub use headers::ServerLimit;
pub use in_process_store::InProcessQuotaStore;
pub use layer::{InvalidPattern, KeyBy, KeyFn, RateLimitLayer};
#[cfg(feature = "redis")]
pub use redis_store::RedisQuotaStore;
pub use shared::{QuotaStore, QuotaStoreError, ReserveFuture, SharedQuota};
pub use table::{HostKey, HostStats, HostTable, TableSettings};

use layer::{Limiter, Shared};
use shared::SharedSlot;
use table::{Admission, Departure, Hold, Pause, nanos};

use crate::retry::RetryAttempt;

/// A request to a host its server paused for longer than the layer lets a request wait
/// ([`RateLimitLayer::fail_paused_longer_than`]); it was not sent.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::ratelimit::HostPaused;
///
/// fn advice(error: &HostPaused) -> String {
///     format!(
///         "the server asked for {} s; the next request goes in {} s",
///         error.remaining.as_secs(),
///         error.held.as_secs()
///     )
/// }
/// # let _ = advice;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "host paused by its server ({status}) for another {}, longer than the {} a request waits; \
     tried again in {}",
    Lasting(*remaining),
    Lasting(*longest),
    Lasting(*held)
)]
#[non_exhaustive]
pub struct HostPaused {
    /// The status of the answer that asked for the pause.
    pub status: http::StatusCode,
    /// What is left of the pause the server asked for.
    pub remaining: Duration,
    /// The longest a request waits for a pause.
    pub longest: Duration,
    /// What is left of the client's own hold on the host, at most
    /// [`TableSettings::max_pause`]: the first request after it is sent.
    pub held: Duration,
}

/// Waits for each request's turn at its host (see the [module docs](self)).
///
/// # Clone
///
/// Clones share the quotas and the [`HostTable`].
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use http::{Request, Response, Uri};
/// use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer, TableSettings};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let table = Arc::new(HostTable::new(TableSettings::default()));
/// let service = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(table).default_quota(Quota::per_second(NonZeroU32::new(2).unwrap())))
///     .service_fn(|_: Request<()>| async { Ok::<_, tower::BoxError>(Response::new(())) });
/// let page = |n: u32| Request::get(format!("http://127.0.0.1/page/{n}")).body(()).unwrap();
///
/// // Two requests a second (a burst of two): the third waits half a second, and the fifth a
/// // second, for its turn.
/// let start = tokio::time::Instant::now();
/// for n in 0..5 {
///     service.clone().oneshot(page(n)).await.unwrap();
/// }
/// assert!(start.elapsed() >= Duration::from_millis(1000));
/// let stats = service.host_stats(&Uri::from_static("http://127.0.0.1/")).unwrap();
/// assert_eq!((stats.refusals, stats.in_flight), (0, 0));
/// # }
/// ```
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
    S::Error: From<HostPaused> + Send + 'static,
    B: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some((name, limiter)) = self.shared.locate(request.uri()) else {
            return ResponseFuture::called(self.inner.call(request), None);
        };
        let key = name.key();
        let table = &self.shared.table;
        let quota = limiter.map(|l| &**l);
        // Whether this retry is counted among the host's waiting ones (`None`: a first attempt).
        let mut retry = request.extensions().get::<RetryAttempt>().map(|_| false);
        let start = match self.shared.shared_slot(name, limiter) {
            Some(slot) => Start::SharedSlot(slot),
            // The common case, a host with room now, is settled here with one reading of the
            // clock and one look at the host's state; only a request that has to wait gets a
            // task.
            None => match table.admit(&key, table.now(), quota, retry.as_mut()) {
                Admission::Admitted {
                    slot,
                    wait,
                    after_pause,
                } if wait.is_zero() => {
                    let turn = Turn::new(&self.shared, key, slot, after_pause, quota);
                    return ResponseFuture::called(self.inner.call(request), Some(turn));
                }
                first => Start::Looked(first),
            },
        };
        // The ready service stays for the next request; this one waits with a clone, readied
        // once its turn comes.
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        let limiter = limiter.cloned();
        let mut retry = retry.map(|waiting| RetryInLine {
            shared: Arc::clone(&shared),
            key,
            waiting,
        });
        ResponseFuture::waiting(async move {
            let started = tokio::time::Instant::now();
            let mut waited = Waited::default();
            let first = match start {
                Start::Looked(first) => first,
                Start::SharedSlot(slot) => {
                    // A pause is waited out (or fails the request) before a fleet slot is
                    // taken: the slot of a request that then waits, or fails, is lost.
                    while let Some(pause) = shared.table.pause(&key, shared.table.now()) {
                        waited.pause = Some(pause.status);
                        shared.wait_out(pause).await?;
                    }
                    // The fleet's slot comes next: a request waits for its turn here only once
                    // it may go as far as the fleet is concerned, so that the pace learned here
                    // reads when requests really leave.
                    waited.fleet = true;
                    shared.take_shared_slot(slot).await;
                    shared.table.admit(
                        &key,
                        shared.table.now(),
                        limiter.as_deref(),
                        RetryInLine::waiting(&mut retry),
                    )
                }
            };
            let mut turn = wait_for_turn(shared, key, limiter, first, retry, &mut waited).await?;
            tracing::debug!(
                waited_ms = started.elapsed().as_millis() as u64,
                waited_for = %waited,
                "had its turn at the host"
            );
            let result = inner.oneshot(request).await;
            turn.complete(result.as_ref().ok());
            result
        })
    }
}

/// What a request waited for before its turn at its host, for its log event: the answer to a
/// scraper's "why was this request slow to leave?".
#[derive(Debug, Default)]
struct Waited {
    /// The pace learned from the host's refusals, or spacing asked for by its headers.
    pace: bool,
    /// A pause its server asked for, with the status that asked.
    pause: Option<http::StatusCode>,
    /// The host's configured quota.
    quota: bool,
    /// A place under the host's bound on requests in flight.
    in_flight: bool,
    /// A slot of the fleet's shared quota.
    fleet: bool,
}

impl fmt::Display for Waited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        let mut reason = |f: &mut fmt::Formatter<'_>, what: fmt::Arguments<'_>| {
            let written = write!(f, "{separator}{what}");
            separator = ", ";
            written
        };
        if self.fleet {
            reason(f, format_args!("the fleet's quota"))?;
        }
        if let Some(status) = self.pause {
            reason(f, format_args!("a pause its server asked for ({status})"))?;
        }
        if self.quota {
            reason(f, format_args!("the quota"))?;
        }
        if self.in_flight {
            reason(f, format_args!("a place in flight"))?;
        }
        if self.pace {
            reason(f, format_args!("the pace learned from the host"))?;
        }
        if separator.is_empty() {
            f.write_str("nothing")?;
        }
        Ok(())
    }
}

/// Where a request that does not go at once starts.
enum Start {
    /// Its quota is shared: it takes a slot in the store first.
    SharedSlot(SharedSlot),
    /// Its first look at the host found this.
    Looked(Admission),
}

/// A retry on its way to its host's turn. Once it has found no place it is counted among the
/// host's waiting retries, which the places that free go to first, until it is admitted; dropped
/// before (a deadline, a cancelled task), it withdraws, so that its place goes to the next.
struct RetryInLine {
    shared: Arc<Shared>,
    key: HostKey,
    waiting: bool,
}

impl RetryInLine {
    /// What [`HostTable::admit`] keeps up to date for a retry; `None` for a first attempt.
    fn waiting(retry: &mut Option<RetryInLine>) -> Option<&mut bool> {
        retry.as_mut().map(|retry| &mut retry.waiting)
    }
}

impl Drop for RetryInLine {
    fn drop(&mut self) {
        if self.waiting {
            self.shared.table.withdraw_retry(&self.key);
        }
    }
}

/// Waits until the request may go, from what its first look at the host found; gives up on a
/// host paused for longer than the layer lets a request wait.
async fn wait_for_turn(
    shared: Arc<Shared>,
    key: HostKey,
    limiter: Option<Arc<Limiter>>,
    mut admission: Admission,
    mut retry: Option<RetryInLine>,
    waited: &mut Waited,
) -> Result<Turn, HostPaused> {
    let table = &shared.table;
    loop {
        match admission {
            Admission::Admitted {
                slot,
                wait,
                after_pause,
            } => {
                let mut turn = Turn::new(&shared, key, slot, after_pause, limiter.as_deref());
                turn.departure.paced_at = slot - nanos(wait);
                if !wait.is_zero() {
                    waited.pace = true;
                    shared.sleep_for_slot(&key, wait).await;
                }
                loop {
                    match table.leave(&key, turn.quota_interval, &mut turn.departure) {
                        Ok(()) => return Ok(turn),
                        Err(Hold::Paced(wait)) => {
                            waited.pace = true;
                            shared.sleep_for_slot(&key, wait).await;
                        }
                        Err(Hold::Paused(pause)) => {
                            waited.pause = Some(pause.status);
                            shared.wait_out(pause).await?;
                        }
                    }
                }
            }
            Admission::Paused(pause) => {
                waited.pause = Some(pause.status);
                shared.wait_out(pause).await?;
            }
            // No jitter here: governor's slots already stagger the waiting requests, and a
            // jitter would only cost rate.
            Admission::Quota(wait) => {
                waited.quota = true;
                tokio::time::sleep(wait).await;
            }
            // A completion between the look and this wait leaves a permit: it is not missed.
            Admission::Busy(waiters, line) => {
                waited.in_flight = true;
                waiters.wait(line).await;
            }
        }
        admission = table.admit(
            &key,
            table.now(),
            limiter.as_deref(),
            RetryInLine::waiting(&mut retry),
        );
    }
}

/// A request that holds a place in flight at its host; the place is given back when the
/// request completes or is dropped (a deadline, a cancelled task).
#[derive(Debug)]
pub(crate) struct Turn {
    shared: Arc<Shared>,
    key: HostKey,
    departure: Departure,
    quota_interval: u64,
    done: bool,
}

impl Turn {
    fn new(
        shared: &Arc<Shared>,
        key: HostKey,
        slot: u64,
        after_pause: bool,
        limiter: Option<&Limiter>,
    ) -> Turn {
        Turn {
            shared: Arc::clone(shared),
            key,
            departure: Departure {
                at: slot,
                paced_at: slot,
                after_pause,
            },
            quota_interval: limiter.map_or(0, Limiter::interval_nanos),
            done: false,
        }
    }

    /// The request is done; `response` is what it got, if anything. Only the first call
    /// counts. In place, so that a future need not move its turn out to complete it.
    pub(crate) fn complete<B>(&mut self, response: Option<&Response<B>>) {
        if self.done {
            return;
        }
        self.done = true;
        let response = response.map(|r| (r.status(), r.headers()));
        self.shared
            .table
            .complete(&self.key, &self.departure, response, self.quota_interval);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .table
                .complete(&self.key, &self.departure, None, self.quota_interval);
        }
    }
}

impl Shared {
    /// Waits for the end of a pause, or fails when the server asked for longer than a request
    /// waits.
    async fn wait_out(&self, pause: Pause) -> Result<(), HostPaused> {
        match self.longest_wait {
            Some(longest) if pause.asked > longest => Err(HostPaused {
                status: pause.status,
                remaining: pause.asked,
                longest,
                held: pause.wait,
            }),
            _ => {
                self.sleep(pause.wait).await;
                Ok(())
            }
        }
    }

    /// Sleeps until a slot `wait` from now at the host of `key` (plus the jitter), or until the
    /// host's pace quickens first: the request then looks again, and takes a slot in the new
    /// pace.
    async fn sleep_for_slot(&self, key: &HostKey, wait: Duration) {
        let waiters = self.table.waiters(key);
        let quickened = waiters.pace_quickened();
        tokio::select! {
            () = self.sleep(wait) => {}
            () = quickened => {}
        }
    }

    /// Sleeps `wait` plus a jitter of up to the configured share of it.
    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + use<> {
        let jitter = wait.mul_f64(self.jitter * fastrand::f64());
        tokio::time::sleep(wait.saturating_add(jitter))
    }
}

#[cfg(test)]
mod tests;
