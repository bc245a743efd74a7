use std::time::Duration;

use tower::Layer;

use super::AttemptTimeout;

/// Applies [`AttemptTimeout`] to a service.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::timeout::AttemptTimeoutLayer;
///
/// let layer = AttemptTimeoutLayer::new(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Option<Duration>,
}

impl AttemptTimeoutLayer {
    /// Each attempt may take `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        AttemptTimeoutLayer {
            timeout: Some(timeout),
        }
    }

    /// No timeout but the ones requests carry ([`AttemptTimeoutOverride`](super::AttemptTimeoutOverride)).
    pub const fn none() -> Self {
        AttemptTimeoutLayer { timeout: None }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout::new(inner, self.timeout)
    }
}
