//! How many attempts, how long each may take, how long to wait between them.

use std::sync::Arc;
use std::time::Duration;

use super::{Backoff, ConflictAware, RetryBudget};

/// The retry layer's settings: the classifier, the attempt limit and deadline, the backoff
/// schedule, the cap on server-requested delays and the shared budget. The timeout of each
/// attempt is a layer of its own ([`timeout`](crate::timeout)), below any layer that holds
/// requests back on purpose.
///
/// Backoff is exponential with jitter ([`Backoff`]): the n-th retry waits a base of
/// `min_delay × factorⁿ⁻¹` (at most `max_delay`), plus a random jitter of up to that base
/// again, so each delay lies in `[base, 2 × base)`. A server's `Retry-After` replaces the
/// schedule for that retry; a value above [`max_retry_after`](Self::max_retry_after) fails at
/// once instead of parking the task.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .deadline(Duration::from_secs(60))
///     .backoff(Duration::from_millis(200), Duration::from_secs(5))
///     .max_retry_after(Duration::from_secs(120));
/// assert_eq!(policy.get_max_attempts(), 5);
/// ```
#[derive(Debug)]
pub struct RetryPolicy<C = ConflictAware> {
    pub(crate) classifier: C,
    max_attempts: u32,
    deadline: Option<Duration>,
    backoff: Backoff,
    max_retry_after: Duration,
    pub(crate) budget: Option<Arc<RetryBudget>>,
}

/// Per-request changes to the policy, put in the request's extensions.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::RetryOverrides;
///
/// let mut request = http::Request::get("http://127.0.0.1/").body(()).unwrap();
/// request.extensions_mut().insert(RetryOverrides::new().max_attempts(1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryOverrides {
    /// Attempts for this request (1 = no retry).
    pub max_attempts: Option<u32>,
    /// The total time budget of this request over all its attempts.
    pub deadline: Option<Duration>,
}

impl RetryOverrides {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts for this request (1 = no retry).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The total time budget of this request over all its attempts.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// The limits in force for one request: the policy's, changed by the request's overrides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, no overall deadline, backoff from 100 ms to 10 s,
    /// `Retry-After` honoured up to 60 s, and a [default budget](RetryBudget::default).
    fn default() -> Self {
        RetryPolicy::with_classifier(ConflictAware)
    }
}

impl<C> RetryPolicy<C> {
    /// The default settings with another classifier.
    pub fn with_classifier(classifier: C) -> Self {
        RetryPolicy {
            classifier,
            max_attempts: 3,
            deadline: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            max_retry_after: Duration::from_secs(60),
            budget: Some(Arc::new(RetryBudget::default())),
        }
    }

    /// Attempts per request, the first included; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The total time a request may take over all its attempts and delays.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The backoff schedule: the first delay and the largest base delay (before jitter).
    pub fn backoff(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        self.backoff = self.backoff.bounds(min_delay, max_delay);
        self
    }

    /// The growth factor of the backoff schedule (2.0 by default).
    pub fn backoff_factor(mut self, factor: f32) -> Self {
        self.backoff = self.backoff.factor(factor);
        self
    }

    /// Seeds the jitter so that a run can be repeated; each request still gets its own
    /// sequence (the seed plus the request's number).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.backoff = self.backoff.jitter_seed(seed);
        self
    }

    /// The longest `Retry-After` (or other server-requested delay) that is honoured; a longer
    /// one fails the request at once with an error naming the server's value.
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// The budget that caps retries; share one `Arc` between services to share the budget.
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No retry budget: every request may use all its attempts.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The configured attempts per request.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest `Retry-After` honoured.
    pub fn get_max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    pub(crate) fn limits(&self, overrides: Option<&RetryOverrides>) -> Limits {
        let overrides = overrides.copied().unwrap_or_default();
        Limits {
            max_attempts: overrides.max_attempts.unwrap_or(self.max_attempts).max(1),
            deadline: overrides.deadline.or(self.deadline),
            max_retry_after: self.max_retry_after,
        }
    }

    /// A fresh backoff schedule for one request.
    pub(crate) fn schedule(&self) -> backon::ExponentialBackoff {
        self.backoff.sequence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_within_base_and_twice_base() {
        let policy = RetryPolicy::default()
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .jitter_seed(7);
        for _ in 0..50 {
            let delays: Vec<Duration> = policy.schedule().take(6).collect();
            let bases = [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis);
            for (delay, base) in delays.iter().zip(bases) {
                assert!(
                    *delay >= base && *delay < base * 2,
                    "{delay:?} outside [{base:?}, 2×)"
                );
            }
        }
    }

    #[test]
    fn the_same_seed_repeats_the_same_schedules() {
        let a = RetryPolicy::default().jitter_seed(42);
        let b = RetryPolicy::default().jitter_seed(42);
        for _ in 0..3 {
            let first: Vec<_> = a.schedule().take(4).collect();
            let second: Vec<_> = b.schedule().take(4).collect();
            assert_eq!(first, second);
        }
        let next_request: Vec<_> = a.schedule().take(4).collect();
        let other_request: Vec<_> = RetryPolicy::default()
            .jitter_seed(42)
            .schedule()
            .take(4)
            .collect();
        assert_ne!(
            next_request, other_request,
            "each request gets its own jitter"
        );
    }

    #[test]
    fn overrides_replace_the_policy_per_request() {
        let policy = RetryPolicy::default()
            .max_attempts(4)
            .deadline(Duration::from_secs(9));
        let limits = policy.limits(Some(&RetryOverrides::new().max_attempts(0)));
        assert_eq!(limits.max_attempts, 1);
        assert_eq!(limits.deadline, Some(Duration::from_secs(9)));
        let limits = policy.limits(Some(
            &RetryOverrides::new().deadline(Duration::from_secs(1)),
        ));
        assert_eq!(limits.max_attempts, 4);
        assert_eq!(limits.deadline, Some(Duration::from_secs(1)));
    }
}
