use std::sync::Arc;

use tower::Layer;

use super::{ConflictAware, Retry, RetryPolicy};

/// Applies conflict-aware [`Retry`] to a service.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::{RetryLayer, RetryPolicy};
///
/// let layer = RetryLayer::new(RetryPolicy::default().max_attempts(4));
/// let service = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_: http::Request<bytes::Bytes>| async {
///         Ok::<_, tower::BoxError>(http::Response::new(bytes::Bytes::new()))
///     });
/// # let _ = service;
/// ```
#[derive(Debug)]
pub struct RetryLayer<C = ConflictAware> {
    policy: Arc<RetryPolicy<C>>,
}

impl<C> RetryLayer<C> {
    /// A layer that retries by `policy`.
    pub fn new(policy: RetryPolicy<C>) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.policy))
    }
}
