//! The delays between attempts: exponential, with jitter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// An exponential backoff schedule with jitter, from [`backon`]: the n-th delay is a base of
/// `min_delay × factorⁿ⁻¹` (at most `max_delay`) plus a random jitter of up to that base again,
/// so each delay lies in `[base, 2 × base)` and callers that failed together spread out.
///
/// Each [`schedule`](Self::schedule) is a fresh sequence. With a [`jitter_seed`](Self::jitter_seed)
/// the sequences repeat from run to run, and each schedule still gets its own (the seed plus
/// the schedule's number).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter_seed(7);
/// let delays: Vec<Duration> = backoff.schedule().take(3).collect();
/// assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(200));
/// assert!(delays[2] >= Duration::from_millis(400) && delays[2] < Duration::from_millis(800));
/// ```
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    jitter_seed: Option<AtomicU64>,
}

impl Backoff {
    /// Delays from `min_delay` doubling up to `max_delay`, before jitter.
    pub fn new(min_delay: Duration, max_delay: Duration) -> Self {
        Backoff {
            builder: ExponentialBuilder::new()
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
            jitter_seed: None,
        }
        .bounds(min_delay, max_delay)
    }

    /// The first delay and the largest base delay (before jitter).
    pub fn bounds(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        self.builder = self
            .builder
            .with_min_delay(min_delay)
            .with_max_delay(max_delay.max(min_delay));
        self
    }

    /// The growth factor (2.0 by default; at least 1.0).
    pub fn factor(mut self, factor: f32) -> Self {
        self.builder = self.builder.with_factor(factor.max(1.0));
        self
    }

    /// Seeds the jitter so that a run can be repeated.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(AtomicU64::new(seed));
        self
    }

    /// A fresh sequence of delays, without end.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.sequence()
    }

    /// [`schedule`](Self::schedule) by its type, which the retry future keeps.
    pub(crate) fn sequence(&self) -> ExponentialBackoff {
        let builder = match &self.jitter_seed {
            Some(seed) => self
                .builder
                .with_jitter_seed(seed.fetch_add(1, Ordering::Relaxed)),
            None => self.builder,
        };
        builder.build()
    }
}
