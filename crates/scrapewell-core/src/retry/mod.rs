//! Conflict-aware retry: retries what is transient, refuses to repeat what is not.
//!
//! Every attempt's result is turned into an [`Outcome`] by a [`Classify`] implementation
//! ([`ConflictAware`] by default, DESIGN.md's outcome table). A retry waits for the server's
//! `Retry-After` when it sent one (capped), else for the next delay of an exponential
//! schedule with jitter; it stops at the attempt limit, the deadline, or when the shared
//! [`RetryBudget`] refuses.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use scrapewell_core::retry::{Attempts, RetryLayer, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let mut service = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::default().backoff(Duration::ZERO, Duration::ZERO)))
//!     .service_fn(move |_: Request<Bytes>| {
//!         let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!             Ok::<_, tower::BoxError>(Response::builder().status(status).body(Bytes::new()).unwrap())
//!         }
//!     });
//! let request = Request::get("http://127.0.0.1/").body(Bytes::new()).unwrap();
//! let response = service.ready().await.unwrap().call(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(Attempts::of(&response).count(), 2);
//! # }
//! ```

mod backoff;
mod budget;
mod classify;
mod error;
mod future;
mod layer;
mod outcome;
mod policy;
mod retry_after;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

pub use backoff::Backoff;
pub use budget::{InvalidBudget, RetryBudget};
pub use classify::{
    AttemptResult, Classify, ClassifyError, ConflictAware, ReceiveBlocked, RequestFacts,
    TransportFailure, VersionInBody,
};
pub use error::RetryError;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use outcome::{Attempts, Outcome, RetryAttempt, RetryReason, RetryRecord, TransientConflict};
pub use policy::{RetryOverrides, RetryPolicy};
pub use retry_after::{RetryAfterError, parse_retry_after};

use crate::{InspectBody, ReplayBody};

/// Retries requests to the inner service by a [`RetryPolicy`].
///
/// A response that came through after retries carries the [`Attempts`] made in its extensions
/// (read them with [`Attempts::of`]); failures are a [`RetryError`] that carries them too.
///
/// # Clone
///
/// The policy (with its budget and jitter seed) sits behind an `Arc`: clones share it, so all
/// clones of one service draw on one retry budget.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use scrapewell_core::retry::{Attempts, RetryLayer, RetryPolicy, RetryReason};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A server that answers 503 once, then 200.
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = Arc::clone(&calls);
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryPolicy::default()))
///     .service_fn(move |_: Request<Bytes>| {
///         let status = match seen.fetch_add(1, Ordering::SeqCst) {
///             0 => StatusCode::SERVICE_UNAVAILABLE,
///             _ => StatusCode::OK,
///         };
///         async move {
///             let mut response = Response::new(Bytes::new());
///             *response.status_mut() = status;
///             Ok::<_, std::io::Error>(response)
///         }
///     });
/// let request = Request::get("http://127.0.0.1/page").body(Bytes::new()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// let attempts = Attempts::of(&response);
/// assert_eq!(attempts.count(), 2);
/// assert_eq!(attempts.retries()[0].reason, RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE));
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # }
/// ```
#[derive(Debug)]
pub struct Retry<S, C = ConflictAware> {
    inner: S,
    policy: Arc<RetryPolicy<C>>,
}

impl<S, C> Retry<S, C> {
    /// Wraps `inner` with retries by `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Self::from_shared(inner, Arc::new(policy))
    }

    pub(crate) fn from_shared(inner: S, policy: Arc<RetryPolicy<C>>) -> Self {
        Retry { inner, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy<C> {
        &self.policy
    }

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

    /// Starts a request as [`Service::call`] does, through a shared reference: the call
    /// changes nothing in the service (the future takes its own clone of the inner service and
    /// of the policy). A caller that keeps the service behind an `Arc` need not clone it first.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use scrapewell_core::retry::{Retry, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let echo = tower::service_fn(|request: Request<Bytes>| async move {
    ///     Ok::<_, tower::BoxError>(Response::new(request.into_body()))
    /// });
    /// let shared = Arc::new(Retry::new(echo, RetryPolicy::default()));
    /// let request = Request::get("http://127.0.0.1/").body(Bytes::from("page")).unwrap();
    /// let response = shared.call_shared(request).await.unwrap();
    /// assert_eq!(response.into_body(), "page");
    /// # }
    /// ```
    #[inline(always)]
    pub fn call_shared<ReqB, ResB>(
        &self,
        request: Request<ReqB>,
    ) -> ResponseFuture<S, S::Future, C, ReqB>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Send + 'static,
        C: Classify<ResB, S::Error>,
        ReqB: ReplayBody + Send + 'static,
        ResB: InspectBody + Send + 'static,
    {
        ResponseFuture::new(self.inner.clone(), Arc::clone(&self.policy), request)
    }
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S, C, ReqB, ResB> Service<Request<ReqB>> for Retry<S, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    C: Classify<ResB, S::Error>,
    ReqB: ReplayBody + Send + 'static,
    ResB: InspectBody + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = RetryError<S::Error>;
    type Future = ResponseFuture<S, S::Future, C, ReqB>;

    /// Always ready: the inner service's readiness is awaited before each attempt, inside the
    /// response future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        self.call_shared(request)
    }
}

#[cfg(test)]
mod tests;
