//! Hosts cooling down after a block.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::BlockVerdict;
use crate::ratelimit::HostKey;

/// The hosts that blocked the client recently, each until its cool-down ends: while a host
/// cools down, requests to it should fail fast (or wait) instead of confirming the site's
/// suspicion.
///
/// Only blocked hosts are kept, each until its cool-down ends, and never more than
/// `max_hosts` (the ones ending soonest go first). A client with no host cooling down pays
/// one atomic load per request to ask.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use scrapewell_core::block::{CoolDowns, Detector, ResponseFacts};
/// use scrapewell_core::ratelimit::HostKey;
///
/// let blocked = http::Response::builder().status(999).body(()).unwrap();
/// let verdict = Detector::default().classify(&ResponseFacts::of(&blocked, b"", true)).unwrap();
///
/// let cool_downs = CoolDowns::new(1000);
/// let host = HostKey::of("www.linkedin.com", 443);
/// cool_downs.cool(host, Duration::from_secs(60), Arc::new(verdict));
/// let cooling = cool_downs.check(&host).unwrap();
/// assert_eq!(cooling.verdict.vendor(), "linkedin");
/// assert!(cooling.remaining <= Duration::from_secs(60));
/// # }
/// ```
#[derive(Debug)]
pub struct CoolDowns {
    hosts: Mutex<HashMap<HostKey, CoolDown>>,
    cooling: AtomicUsize,
    max_hosts: usize,
}

#[derive(Debug, Clone)]
struct CoolDown {
    until: Instant,
    verdict: Arc<BlockVerdict>,
}

/// A host that is cooling down: for how much longer, and the block that started it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoolingDown {
    /// The time left.
    pub remaining: Duration,
    /// The verdict on the response that blocked.
    pub verdict: Arc<BlockVerdict>,
}

impl CoolDowns {
    /// Room for `max_hosts` hosts cooling down at once.
    pub fn new(max_hosts: usize) -> CoolDowns {
        CoolDowns {
            hosts: Mutex::default(),
            cooling: AtomicUsize::new(0),
            max_hosts: max_hosts.max(1),
        }
    }

    /// Cools `host` down for `duration` after `verdict` (a longer cool-down already running
    /// stays).
    pub fn cool(&self, host: HostKey, duration: Duration, verdict: Arc<BlockVerdict>) {
        let now = Instant::now();
        // A cool-down past what the clock can count lasts a century.
        let until = now
            .checked_add(duration)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut hosts = self.lock();
        if hosts.len() >= self.max_hosts && !hosts.contains_key(&host) {
            hosts.retain(|_, c| c.until > now);
            if hosts.len() >= self.max_hosts
                && let Some(soonest) = hosts.iter().min_by_key(|(_, c)| c.until).map(|(k, _)| *k)
            {
                hosts.remove(&soonest);
            }
        }
        let entry = hosts.entry(host).or_insert(CoolDown {
            until,
            verdict: Arc::clone(&verdict),
        });
        if until >= entry.until {
            *entry = CoolDown { until, verdict };
        }
        self.cooling.store(hosts.len(), Ordering::Release);
    }

    /// Whether `host` is cooling down, and why.
    pub fn check(&self, host: &HostKey) -> Option<CoolingDown> {
        if self.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut hosts = self.lock();
        let cooling = hosts.get(host).map(|c| CoolingDown {
            remaining: c.until.saturating_duration_since(now),
            verdict: Arc::clone(&c.verdict),
        });
        match cooling {
            Some(cooling) if cooling.remaining.is_zero() => {
                hosts.remove(host);
                self.cooling.store(hosts.len(), Ordering::Release);
                None
            }
            other => other,
        }
    }

    /// Ends `host`'s cool-down (a fresh identity is not the one that was blocked).
    pub fn lift(&self, host: &HostKey) {
        let mut hosts = self.lock();
        hosts.remove(host);
        self.cooling.store(hosts.len(), Ordering::Release);
    }

    /// Hosts kept (some may have finished cooling down and not been asked about since). Read
    /// without the lock: every request asks whether any host is kept.
    pub fn len(&self) -> usize {
        self.cooling.load(Ordering::Acquire)
    }

    /// Whether no host is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostKey, CoolDown>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
