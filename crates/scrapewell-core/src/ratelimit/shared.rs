//! Quotas kept outside the process, so that the clients of a fleet share one budget per host.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::layer::Shared;

/// Where the quotas of a fleet of clients are kept, so that ten workers on ten machines share
/// one budget per host instead of taking ten ([`RateLimitLayer::shared_quotas`]).
///
/// A store keeps a GCRA per host and hands out slots: each request reserves the next one, in
/// one call, and waits until it comes. A request that took a slot but never went (a deadline
/// passed, its task was cancelled, its worker stopped) leaves it unused: the fleet goes slower,
/// never faster.
///
/// `RedisQuotaStore` (feature `redis`) keeps them in Redis, [`InProcessQuotaStore`] in this
/// process's memory; an implementation of your own can keep them anywhere that answers
/// atomically.
///
/// [`RateLimitLayer::shared_quotas`]: super::RateLimitLayer::shared_quotas
/// [`InProcessQuotaStore`]: super::InProcessQuotaStore
///
/// # Example
///
/// A store that counts what it is asked, over the in-process one:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use scrapewell_core::ratelimit::{InProcessQuotaStore, QuotaStore, ReserveFuture, SharedQuota};
///
/// #[derive(Debug, Default)]
/// struct Counted {
///     asked: AtomicUsize,
///     quotas: InProcessQuotaStore,
/// }
///
/// impl QuotaStore for Counted {
///     fn reserve(&self, host: &str, quota: SharedQuota) -> ReserveFuture {
///         self.asked.fetch_add(1, Ordering::Relaxed);
///         self.quotas.reserve(host, quota)
///     }
/// }
/// ```
pub trait QuotaStore: fmt::Debug + Send + Sync + 'static {
    /// Reserves the next slot of `quota` for `host` (the name the layer keys hosts by): how
    /// long until it comes.
    fn reserve(&self, host: &str, quota: SharedQuota) -> ReserveFuture;
}

/// The future of [`QuotaStore::reserve`].
pub type ReserveFuture =
    Pin<Box<dyn Future<Output = Result<Duration, QuotaStoreError>> + Send + 'static>>;

/// A host's quota as a store keeps it: one request every `interval`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedQuota {
    /// The spacing of the quota (its period, 2% slower as every quota here is paced).
    pub interval: Duration,
    /// How many requests may go at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl SharedQuota {
    /// One request every `interval`, up to `burst` at once (at least 1).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use scrapewell_core::ratelimit::SharedQuota;
    ///
    /// let ten_a_second = SharedQuota::new(Duration::from_millis(100), 1);
    /// assert_eq!(ten_a_second.burst, 1);
    /// ```
    pub fn new(interval: Duration, burst: u32) -> SharedQuota {
        SharedQuota {
            interval,
            burst: burst.max(1),
        }
    }
}

/// Why a store gave no answer. The request is then paced by its client's quota alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaStoreError {
    /// The store could not be reached, or did not answer in time.
    #[error("quota store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered something that is not a reservation.
    #[error("quota store answered {0}")]
    Malformed(String),
}

/// A request's place in a shared quota: the host's name in the layer's store, and the quota.
pub(crate) struct SharedSlot {
    pub(crate) host: String,
    pub(crate) quota: SharedQuota,
}

impl Shared {
    /// Waits for a slot of the host's quota in the store. A store that fails lets the request
    /// go on, paced by this client's quota alone: the first failure after an answer is a
    /// warning, the next ones are not repeated.
    pub(crate) async fn take_shared_slot(&self, slot: SharedSlot) {
        // A slot is only made for a layer with a store (`Shared::shared_slot`).
        let Some(store) = &self.store else {
            return;
        };
        let SharedSlot { host, quota } = slot;
        let host = host.as_str();
        match store.reserve(host, quota).await {
            Ok(wait) => {
                if self.store_down.swap(false, Ordering::Relaxed) {
                    tracing::info!(host, "quota store answers again");
                }
                // No jitter: the store's slots already stagger the fleet.
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            Err(error) => {
                if self.store_down.swap(true, Ordering::Relaxed) {
                    tracing::debug!(host, %error, "quota store still unavailable");
                } else {
                    tracing::warn!(host, %error, "quota store unavailable: pacing by this client's quota alone");
                }
            }
        }
    }
}
