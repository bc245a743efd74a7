//! A retry budget shared by every request of a client, in the style of Finagle's.

use std::fmt;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// Caps retries at a share of recent traffic plus a small floor, so that a dead host does not
/// multiply the load on it.
///
/// Every logical request deposits one token; every retry withdraws `1 / retry_percent` tokens.
/// Deposits count for `ttl`; on top of them a reserve of `min_per_sec × ttl` retries is always
/// allowed. Over any window of `ttl`, retries are therefore at most
/// `retry_percent × requests + min_per_sec × ttl`.
///
/// The retry layer draws on it for every retry but two, where giving up would not spare a host
/// in trouble, only leave the caller without the outcome of a write: asking again after a 409
/// that says the request's idempotency key is still in flight (that server has the write and is
/// answering), and sending a write (PUT, DELETE, a keyed POST or PATCH) again after its attempt
/// timed out (the server may hold it; such retries pace themselves, one per attempt timeout).
/// Both stay bounded by the request's attempts and its deadline.
///
/// Built on tower's [`TpsBudget`]; it reads tokio's clock, so paused-time tests drive it.
///
/// # Clone
///
/// Share one budget between services by wrapping it in an `Arc` (the retry policy does).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::RetryBudget;
///
/// // 20% of the last 10 s of requests, plus 10 retries a second.
/// let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
/// budget.deposit();
/// assert!(budget.withdraw());
/// ```
pub struct RetryBudget {
    tokens: TpsBudget,
    ttl: Duration,
    min_per_sec: u32,
    retry_percent: f32,
}

/// A retry budget's settings are out of range.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::retry::{InvalidBudget, RetryBudget};
///
/// let error = RetryBudget::new(Duration::from_secs(3600), 10, 0.2).unwrap_err();
/// assert_eq!(error, InvalidBudget::Ttl(Duration::from_secs(3600)));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBudget {
    /// `ttl` must be between 1 and 60 seconds.
    #[error("retry budget ttl {0:?} is outside 1 s ..= 60 s")]
    Ttl(Duration),
    /// `retry_percent` must be between 0 and 1000.
    #[error("retry budget percent {0} is outside 0 ..= 1000")]
    Percent(f32),
    /// `min_per_sec` must be below `i32::MAX`.
    #[error("retry budget floor {0}/s is too large")]
    MinPerSec(u32),
}

impl RetryBudget {
    /// A budget that allows `retry_percent` (0.2 = 20%) of the requests deposited over the last
    /// `ttl` to be retried, plus `min_per_sec` retries a second.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Result<Self, InvalidBudget> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(InvalidBudget::Ttl(ttl));
        }
        if !(0.0..=1000.0).contains(&retry_percent) {
            return Err(InvalidBudget::Percent(retry_percent));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(InvalidBudget::MinPerSec(min_per_sec));
        }
        Ok(RetryBudget {
            tokens: TpsBudget::new(ttl, min_per_sec, retry_percent),
            ttl,
            min_per_sec,
            retry_percent,
        })
    }

    /// Records one logical request.
    pub fn deposit(&self) {
        self.tokens.deposit();
    }

    /// Takes the tokens for one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.tokens.withdraw()
    }
}

impl Default for RetryBudget {
    /// 20% of the last 10 s of requests plus 10 retries a second.
    fn default() -> Self {
        RetryBudget {
            tokens: TpsBudget::default(),
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_percent: 0.2,
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.ttl)
            .field("min_per_sec", &self.min_per_sec)
            .field("retry_percent", &self.retry_percent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_share_plus_the_floor() {
        let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.2).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..1000).take_while(|_| budget.withdraw()).count();
        // 20% of 100 requests, plus 1/s over 10 s.
        assert_eq!(granted, 20 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_refills_as_time_passes() {
        let budget = RetryBudget::new(Duration::from_secs(1), 5, 0.0).unwrap();
        assert_eq!((0..100).take_while(|_| budget.withdraw()).count(), 5);
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(budget.withdraw());
    }

    #[test]
    fn out_of_range_settings_are_errors_not_panics() {
        assert_eq!(
            RetryBudget::new(Duration::from_millis(10), 1, 0.2).err(),
            Some(InvalidBudget::Ttl(Duration::from_millis(10)))
        );
        assert!(RetryBudget::new(Duration::from_secs(1), 1, -1.0).is_err());
        assert!(RetryBudget::new(Duration::from_secs(1), 1, f32::NAN).is_err());
        assert!(RetryBudget::new(Duration::from_secs(1), u32::MAX, 0.1).is_err());
    }
}
