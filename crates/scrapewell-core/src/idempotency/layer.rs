use std::sync::Arc;

use http::HeaderName;
use tower::Layer;

use super::{Idempotency, KeyConfig, KeyFormat, KeyStrategy};

/// Gives POST and PATCH requests an idempotency key (see [`Idempotency`]).
///
/// # Example
///
/// ```
/// use scrapewell_core::idempotency::{IdempotencyLayer, KeyFormat, KeyStrategy};
///
/// // Stripe-style bare keys, derived from the request so a restarted scraper reuses them.
/// let layer = IdempotencyLayer::new()
///     .format(KeyFormat::Token)
///     .strategy(KeyStrategy::Derived);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct IdempotencyLayer {
    config: KeyConfig,
}

impl IdempotencyLayer {
    /// Random UUID v4 keys in the draft's Structured Field string form, in `Idempotency-Key`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether keys are added at all (on by default).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.config.enabled = enabled;
        self
    }

    /// How keys are chosen.
    pub fn strategy(mut self, strategy: KeyStrategy) -> Self {
        self.config.strategy = strategy;
        self
    }

    /// How keys are written.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.config.format = format;
        self
    }

    /// The header that carries the key, for servers that use another name
    /// (`X-Idempotency-Key`).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.config.header = name;
        self
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::from_shared(inner, Arc::new(self.config.clone()))
    }
}
