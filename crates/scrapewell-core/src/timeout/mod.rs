//! A time limit on each attempt: connecting, sending, and reading the response.
//!
//! Put it below the layers that may hold a request back on purpose (the rate limiter), so that
//! waiting for a host's budget does not count against the attempt, and below the retry layer,
//! so that a timed-out attempt is retried (or, for a write that is not safe to repeat, ends as
//! outcome unknown). The elapsed timeout joins the inner service's own error type through
//! `From<Elapsed>`, so the stack keeps one typed error.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use scrapewell_core::timeout::AttemptTimeoutLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let mut service = ServiceBuilder::new()
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(1)))
//!     .service_fn(|_: Request<Bytes>| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, tower::BoxError>(Response::new(Bytes::new()))
//!     });
//! let request = Request::get("http://127.0.0.1/").body(Bytes::new()).unwrap();
//! let error = service.ready().await.unwrap().call(request).await.unwrap_err();
//! assert!(error.is::<scrapewell_core::timeout::Elapsed>());
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::Service;

pub use future::ResponseFuture;
pub use layer::AttemptTimeoutLayer;

/// An attempt took longer than its timeout (see [`AttemptTimeout`] for an example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attempt timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

/// A per-request timeout, in the request's extensions, instead of the layer's.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::timeout::AttemptTimeoutOverride;
///
/// let mut request = http::Request::get("http://127.0.0.1/slow").body(()).unwrap();
/// request.extensions_mut().insert(AttemptTimeoutOverride(Some(Duration::from_secs(120))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeoutOverride(pub Option<Duration>);

/// Fails an attempt that takes longer than its timeout with [`Elapsed`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::{Request, Response};
/// use scrapewell_core::timeout::{AttemptTimeoutLayer, Elapsed};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A server that stalls for a minute.
/// let service = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_secs(5)))
///     .service_fn(|_: Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(60)).await;
///         Ok::<_, tower::BoxError>(Response::new(()))
///     });
/// let error = service.oneshot(Request::new(())).await.unwrap_err();
/// let elapsed = error.downcast_ref::<Elapsed>().unwrap();
/// assert_eq!(elapsed.after(), Duration::from_secs(5));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> AttemptTimeout<S> {
    /// Wraps `inner` with a timeout per call (`None`: only per-request overrides apply).
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        AttemptTimeout { inner, timeout }
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
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: From<Elapsed>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let timeout = match request.extensions().get::<AttemptTimeoutOverride>() {
            Some(AttemptTimeoutOverride(timeout)) => *timeout,
            None => self.timeout,
        };
        ResponseFuture::new(self.inner.call(request), timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Response;
    use tower::{BoxError, ServiceExt};

    fn slow(
        delay: Duration,
    ) -> impl Service<Request<Bytes>, Response = Response<Bytes>, Error = BoxError> + Clone {
        tower::service_fn(move |_: Request<Bytes>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(Response::new(Bytes::new()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_fails_with_elapsed_naming_the_timeout() {
        let service =
            AttemptTimeout::new(slow(Duration::from_secs(5)), Some(Duration::from_secs(1)));
        let error = service
            .oneshot(Request::new(Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(
            error.downcast_ref::<Elapsed>().unwrap().after(),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_attempt_passes_and_overrides_apply_per_request() {
        let service =
            AttemptTimeout::new(slow(Duration::from_secs(5)), Some(Duration::from_secs(10)));
        assert!(
            service
                .clone()
                .oneshot(Request::new(Bytes::new()))
                .await
                .is_ok()
        );

        let mut request = Request::new(Bytes::new());
        request
            .extensions_mut()
            .insert(AttemptTimeoutOverride(Some(Duration::from_secs(2))));
        assert!(service.clone().oneshot(request).await.is_err());

        let mut request = Request::new(Bytes::new());
        request
            .extensions_mut()
            .insert(AttemptTimeoutOverride(None));
        let service =
            AttemptTimeout::new(slow(Duration::from_secs(500)), Some(Duration::from_secs(1)));
        assert!(
            service.oneshot(request).await.is_ok(),
            "None lifts the timeout"
        );
    }
}
