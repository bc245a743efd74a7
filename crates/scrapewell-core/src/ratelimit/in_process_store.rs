//! A quota store kept in this process's memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::shared::{QuotaStore, ReserveFuture, SharedQuota};

/// Quotas shared by the clients of one process, kept in memory: several clients that each
/// have an identity of their own (a proxy, a session) but must together keep to a site's
/// limit; or a test of a fleet's pacing without a Redis server. Clones share the quotas.
///
/// Each host's quota is a GCRA: one instant per host, when its next request would be on time,
/// on tokio's clock (so that tests with paused time see it move). Hosts whose quota has come
/// back whole are forgotten as the map grows, so that a crawl over many hosts does not keep
/// them all; a host forgotten is answered as one kept would be.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use scrapewell_core::ratelimit::{HostTable, InProcessQuotaStore, Quota, RateLimitLayer};
///
/// let quotas = InProcessQuotaStore::new();
/// let worker = |quotas: InProcessQuotaStore| {
///     RateLimitLayer::new(Arc::new(HostTable::new(Default::default())))
///         .default_quota(Quota::per_second(NonZeroU32::new(10).unwrap()))
///         .shared_quotas(Arc::new(quotas))
/// };
/// // Ten requests a second between the two, not ten each.
/// let (first, second) = (worker(quotas.clone()), worker(quotas));
/// # let _ = (first, second);
/// ```
#[derive(Clone, Default)]
pub struct InProcessQuotaStore {
    hosts: Arc<Mutex<OnTime>>,
}

/// When each host's next request would be on time.
#[derive(Debug, Default)]
struct OnTime {
    at: HashMap<String, Instant>,
    /// The size of `at` at which hosts whose quota came back whole are next forgotten.
    forget_at: usize,
}

/// The fewest hosts kept before any is forgotten.
const KEPT_AT_LEAST: usize = 1024;

/// The longest interval a quota is kept at. A quota slower than this is none any site sets;
/// bounding it keeps the sums in `OnTime::reserve` far from the end of the clock.
const SLOWEST_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

impl InProcessQuotaStore {
    /// An empty store.
    pub fn new() -> InProcessQuotaStore {
        InProcessQuotaStore::default()
    }

    /// The hosts' instants; a panic elsewhere while they were held leaves them as they were.
    fn on_time(&self) -> MutexGuard<'_, OnTime> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for InProcessQuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // How many hosts, not which: a crawl may keep many thousands.
        f.debug_struct("InProcessQuotaStore")
            .field("hosts", &self.on_time().at.len())
            .finish()
    }
}

impl QuotaStore for InProcessQuotaStore {
    fn reserve(&self, host: &str, quota: SharedQuota) -> ReserveFuture {
        let now = Instant::now();
        let wait = self.on_time().reserve(host, quota, now);
        Box::pin(std::future::ready(Ok(wait)))
    }
}

impl OnTime {
    /// Takes the host's next slot: how long until it comes. The slot is the host's on-time
    /// instant, brought forward by the burst's tolerance; the instant moves one interval on.
    fn reserve(&mut self, host: &str, quota: SharedQuota, now: Instant) -> Duration {
        let interval = quota.interval.min(SLOWEST_INTERVAL);
        let due = match self.at.get_mut(host) {
            Some(at) => {
                let due = (*at).max(now);
                *at = due + interval;
                due
            }
            None => {
                self.at.insert(host.to_owned(), now + interval);
                if self.at.len() >= self.forget_at {
                    self.forget_whole(now);
                }
                now
            }
        };
        let tolerance = interval.checked_mul(quota.burst.saturating_sub(1));
        match tolerance.and_then(|tolerance| now.checked_add(tolerance)) {
            Some(earliest_free) => due.saturating_duration_since(earliest_free),
            None => Duration::ZERO,
        }
    }

    /// Forgets the hosts whose next request would be on time now: such an instant reserves
    /// as no instant does. Run when the map has doubled since the last time, so that it
    /// costs each request a constant share.
    fn forget_whole(&mut self, now: Instant) {
        self.at.retain(|_, at| *at > now);
        self.forget_at = (self.at.len() * 2).max(KEPT_AT_LEAST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(interval_ms: u64, burst: u32) -> SharedQuota {
        SharedQuota::new(Duration::from_millis(interval_ms), burst)
    }

    #[tokio::test(start_paused = true)]
    async fn slots_come_one_interval_apart_after_the_burst_and_clones_share_them() {
        let store = InProcessQuotaStore::new();
        let other = store.clone();
        let mut waits = Vec::new();
        for at in 0..5 {
            let asked = if at % 2 == 0 { &store } else { &other };
            waits.push(asked.reserve("a.test:80", quota(100, 3)).await.unwrap());
        }
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(100), ms(200)]);
        // Another host has a quota of its own.
        assert_eq!(
            store.reserve("b.test:80", quota(100, 1)).await.unwrap(),
            ms(0)
        );
        // Once its slots are past, a host's burst is whole again.
        tokio::time::advance(ms(500)).await;
        for _ in 0..3 {
            assert_eq!(
                store.reserve("a.test:80", quota(100, 3)).await.unwrap(),
                ms(0)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_whose_quota_came_back_whole_are_forgotten_as_the_map_grows() {
        let store = InProcessQuotaStore::new();
        let one_a_second = quota(1000, 1);
        store.reserve("busy.test:80", one_a_second).await.unwrap();
        store.reserve("busy.test:80", one_a_second).await.unwrap();
        for host in 0..KEPT_AT_LEAST - 2 {
            let host = format!("h{host}.test:80");
            store.reserve(&host, one_a_second).await.unwrap();
        }
        assert_eq!(
            format!("{store:?}"),
            format!("InProcessQuotaStore {{ hosts: {} }}", KEPT_AT_LEAST - 1)
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        // The map is full: the hosts whose quota came back whole go, busy.test is still owed
        // its second slot.
        store.reserve("new.test:80", one_a_second).await.unwrap();
        assert_eq!(format!("{store:?}"), "InProcessQuotaStore { hosts: 2 }");
        assert_eq!(
            store.reserve("busy.test:80", one_a_second).await.unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            store.reserve("h0.test:80", one_a_second).await.unwrap(),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_at_the_ends_of_its_range_does_not_overflow() {
        let store = InProcessQuotaStore::new();
        let slowest = SharedQuota::new(Duration::MAX, u32::MAX);
        assert_eq!(
            store.reserve("a.test:80", slowest).await.unwrap(),
            Duration::ZERO
        );
        let once = SharedQuota::new(Duration::MAX, 1);
        store.reserve("b.test:80", once).await.unwrap();
        let wait = store.reserve("b.test:80", once).await.unwrap();
        assert_eq!(wait, Duration::from_secs(365 * 24 * 3600));
    }
}
