//! What the server counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::documents::Documents;

/// How many arrival times are kept per path; counts go on past it.
const ARRIVALS_KEPT: usize = 1024;

/// What the server has seen, for tests to assert on.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let server = scrapewell_mock::MockServer::start().await?;
/// let addr = server.url("").trim_start_matches("http://").to_owned();
/// // The same order sent twice without an idempotency key: the second create is a duplicate.
/// for _ in 0..2 {
///     let addr = addr.clone();
///     tokio::task::spawn_blocking(move || {
///         let mut stream = std::net::TcpStream::connect(&addr)?;
///         let body = r#"{"ref":"r-7"}"#;
///         write!(
///             stream,
///             "POST /orders HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
///              content-length: {}\r\nconnection: close\r\n\r\n{body}",
///             body.len()
///         )?;
///         stream.read_to_end(&mut Vec::new())
///     })
///     .await??;
/// }
/// let stats = server.stats();
/// assert_eq!((stats.creates, stats.distinct_refs, stats.duplicate_creates), (2, 1, 1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Requests received, on every route.
    pub requests: u64,
    /// Orders created by `POST /orders`.
    pub creates: u64,
    /// Distinct client references (`ref`) among the created orders.
    pub distinct_refs: u64,
    /// Orders created for a reference that already had one: writes that were duplicated.
    pub duplicate_creates: u64,
    /// 409s sent because a request's idempotency key was still in flight.
    pub in_flight_conflicts: u64,
    /// Stored responses replayed for a key that was already done.
    pub replays: u64,
    /// 422s sent for a key reused with another payload.
    pub key_mismatches: u64,
    /// 400s sent because a key was required and missing.
    pub missing_keys: u64,
    /// Permanent 409s sent by `/conflict`.
    pub permanent_conflicts: u64,
    /// Lock 409s sent by `/lock`.
    pub lock_conflicts: u64,
    /// Injected failure statuses sent by `/flaky`.
    pub injected_failures: u64,
    /// Connections cut in the middle of a body by `/reset`.
    pub resets: u64,
    /// Responses held back by `/stall`.
    pub stalls: u64,
    /// Block pages served by `/blocked` and `/guarded`.
    pub blocks_served: u64,
    /// Identities `/guarded` blocked.
    pub identities_blocked: u64,
    /// Requests `/guarded` received with an identity it had already blocked: what a client that
    /// retries blindly sends.
    pub blocked_identity_requests: u64,
    /// Requests that arrived in absolute form (`GET http://host/path`), as a client sends them
    /// to a forward proxy: the mock answers them itself, as if it were the proxy and the site.
    pub proxied_requests: u64,
    /// Writes to `/docs` and `/couch` documents that were applied (creates included).
    pub applied_writes: u64,
    /// Writes refused because their version was stale (412 or 409 to `If-Match`, 409 to a
    /// CouchDB revision that is not the current one).
    pub stale_writes: u64,
    /// Create-only writes (`If-None-Match: *`) refused with 412 because the document existed.
    pub already_exists: u64,
    /// Writes refused with 428 because they carried no precondition (`require=1`).
    pub preconditions_required: u64,
    /// Writes to `/docs` applied without any precondition: they may overwrite another's update.
    pub unconditional_writes: u64,
    /// Writes the server made itself after a read, under `churn=1`, as a competing client would.
    pub foreign_writes: u64,
}

/// What a rate-limited route accepted and refused.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LimitStats {
    /// Requests let through.
    pub accepted: u64,
    /// Requests refused with 429.
    pub refused: u64,
    /// Accepted and refused requests in each second since the first request.
    pub per_second: Vec<(u64, u64)>,
    /// The rate of accepted requests between the first and the last, per second.
    pub rate: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    requests: AtomicU64,
    pub(crate) counters: Counters,
    paths: Mutex<HashMap<String, PathLog>>,
    pub(crate) orders: Mutex<Orders>,
    limits: Mutex<HashMap<String, Limited>>,
    pub(crate) identities: Mutex<Identities>,
    documents: Mutex<Documents>,
}

/// One rate-limited route: a GCRA or a fixed window per client, and what it decided.
#[derive(Debug, Default)]
struct Limited {
    /// The theoretical arrival time of each client's next request.
    tat: HashMap<String, Instant>,
    /// Each client's current fixed window: its number since the Unix epoch, and the requests
    /// it accepted in it.
    windows: HashMap<String, (u64, u64)>,
    first: Option<Instant>,
    last_accepted: Option<Instant>,
    accepted: u64,
    refused: u64,
    per_second: Vec<(u64, u64)>,
}

impl Limited {
    /// Counts a verdict given at `now`.
    fn count(&mut self, now: Instant, accepted: bool) {
        let first = *self.first.get_or_insert(now);
        if accepted {
            self.accepted += 1;
            self.last_accepted = Some(now);
        } else {
            self.refused += 1;
        }
        let second = usize::try_from(now.duration_since(first).as_secs()).unwrap_or(usize::MAX);
        if self.per_second.len() <= second && second < 86_400 {
            self.per_second.resize(second + 1, (0, 0));
        }
        if let Some(slot) = self.per_second.get_mut(second) {
            if accepted { slot.0 += 1 } else { slot.1 += 1 }
        }
    }
}

/// A rate limit's verdict, with what the server announces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitVerdict {
    pub(crate) accepted: bool,
    /// Requests left in the burst (the window).
    pub(crate) remaining: u64,
    /// Until the burst is whole again (the window ends).
    pub(crate) reset: Duration,
    /// Until the next request would be accepted.
    pub(crate) retry_in: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) permanent_conflicts: AtomicU64,
    pub(crate) lock_conflicts: AtomicU64,
    pub(crate) injected_failures: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) blocks_served: AtomicU64,
    pub(crate) proxied: AtomicU64,
}

/// What `/guarded` knows of one identity.
#[derive(Debug, Default)]
pub(crate) struct IdentityLog {
    pub(crate) served: u64,
    pub(crate) blocked: bool,
}

/// The identities `/guarded` has seen.
#[derive(Debug, Default)]
pub(crate) struct Identities {
    pub(crate) by_name: HashMap<String, IdentityLog>,
    pub(crate) blocked_requests: u64,
}

#[derive(Debug, Default)]
struct PathLog {
    count: u64,
    first: Option<Instant>,
    arrivals: Vec<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Orders {
    pub(crate) keys: HashMap<String, KeyEntry>,
    refs: HashMap<String, u64>,
    creates: u64,
    pub(crate) in_flight_conflicts: u64,
    pub(crate) replays: u64,
    pub(crate) key_mismatches: u64,
    pub(crate) missing_keys: u64,
}

#[derive(Debug)]
pub(crate) enum KeyEntry {
    InFlight {
        fingerprint: [u8; 32],
    },
    Done {
        fingerprint: [u8; 32],
        response: Bytes,
    },
}

impl KeyEntry {
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        match self {
            KeyEntry::InFlight { fingerprint } | KeyEntry::Done { fingerprint, .. } => fingerprint,
        }
    }
}

impl Orders {
    /// Records one created order; returns its id.
    pub(crate) fn create(&mut self, reference: Option<&str>) -> u64 {
        self.creates += 1;
        if let Some(reference) = reference {
            *self.refs.entry(reference.to_owned()).or_default() += 1;
        }
        self.creates
    }
}

impl State {
    /// Counts a request to `path`; returns its 1-based number among the requests to that path.
    pub(crate) fn record(&self, path: &str, keep_arrival: bool) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !keep_arrival {
            return 0;
        }
        let mut paths = lock(&self.paths);
        let log = paths.entry(path.to_owned()).or_default();
        log.count += 1;
        let now = Instant::now();
        log.first.get_or_insert(now);
        if log.arrivals.len() < ARRIVALS_KEPT {
            log.arrivals.push(now);
        }
        log.count
    }

    /// How long ago the first request to `path` arrived (zero for none yet).
    pub(crate) fn since_first(&self, path: &str) -> Duration {
        lock(&self.paths)
            .get(path)
            .and_then(|log| log.first)
            .map_or(Duration::ZERO, |first| first.elapsed())
    }

    pub(crate) fn hits(&self, path: &str) -> u64 {
        lock(&self.paths).get(path).map_or(0, |log| log.count)
    }

    pub(crate) fn arrivals(&self, path: &str) -> Vec<Instant> {
        lock(&self.paths)
            .get(path)
            .map(|log| log.arrivals.clone())
            .unwrap_or_default()
    }

    /// One request from `client` to the limited route `path`: `rate` a second, `burst` at once.
    pub(crate) fn limit(&self, path: &str, client: &str, rate: f64, burst: u64) -> LimitVerdict {
        let now = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tolerance = interval * (burst.max(1) - 1) as u32;
        let mut limits = lock(&self.limits);
        let limited = limits.entry(path.to_owned()).or_default();
        let tat = limited.tat.get(client).copied().unwrap_or(now).max(now);
        let accepted = tat.duration_since(now) <= tolerance;
        let next_tat = if accepted { tat + interval } else { tat };
        if accepted {
            limited.tat.insert(client.to_owned(), next_tat);
        }
        limited.count(now, accepted);
        let backlog = next_tat.duration_since(now);
        LimitVerdict {
            accepted,
            remaining: ((tolerance + interval).saturating_sub(backlog).as_secs_f64()
                / interval.as_secs_f64()) as u64,
            reset: backlog,
            retry_in: tat.duration_since(now).saturating_sub(tolerance),
        }
    }

    /// `quota` requests per `window` for each client, counted in windows that start on whole
    /// multiples of `window` since the Unix epoch (as Kong's and Envoy's limits do): a client may
    /// spend a window's quota at once, and then waits for the next window.
    pub(crate) fn limit_fixed_window(
        &self,
        path: &str,
        client: &str,
        quota: u64,
        window: Duration,
    ) -> LimitVerdict {
        let now = Instant::now();
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let window_nanos = window.as_nanos().max(1);
        let number = u64::try_from(since_epoch.as_nanos() / window_nanos).unwrap_or(u64::MAX);
        let into_window =
            Duration::from_nanos(u64::try_from(since_epoch.as_nanos() % window_nanos).unwrap_or(0));
        let mut limits = lock(&self.limits);
        let limited = limits.entry(path.to_owned()).or_default();
        let used = limited
            .windows
            .get(client)
            .filter(|(current, _)| *current == number)
            .map_or(0, |(_, used)| *used);
        let accepted = used < quota;
        let used = used + u64::from(accepted);
        limited.windows.insert(client.to_owned(), (number, used));
        limited.count(now, accepted);
        let reset = window.saturating_sub(into_window);
        LimitVerdict {
            accepted,
            remaining: quota - used,
            reset,
            retry_in: if accepted { Duration::ZERO } else { reset },
        }
    }

    pub(crate) fn limit_stats(&self, path: &str) -> LimitStats {
        let limits = lock(&self.limits);
        let Some(limited) = limits.get(path) else {
            return LimitStats::default();
        };
        let rate = match (limited.first, limited.last_accepted) {
            (Some(first), Some(last)) if limited.accepted > 1 && last > first => {
                Some((limited.accepted - 1) as f64 / last.duration_since(first).as_secs_f64())
            }
            _ => None,
        };
        LimitStats {
            accepted: limited.accepted,
            refused: limited.refused,
            per_second: limited.per_second.clone(),
            rate,
        }
    }

    pub(crate) fn orders(&self) -> MutexGuard<'_, Orders> {
        lock(&self.orders)
    }

    pub(crate) fn documents(&self) -> MutexGuard<'_, Documents> {
        lock(&self.documents)
    }

    pub(crate) fn identities(&self) -> MutexGuard<'_, Identities> {
        lock(&self.identities)
    }

    pub(crate) fn stats(&self) -> Stats {
        let (identities_blocked, blocked_identity_requests) = {
            let identities = self.identities();
            let blocked = identities.by_name.values().filter(|i| i.blocked).count() as u64;
            (blocked, identities.blocked_requests)
        };
        let documents = self.documents();
        let orders = self.orders();
        let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: counter(&self.requests),
            creates: orders.creates,
            distinct_refs: orders.refs.len() as u64,
            duplicate_creates: orders.refs.values().map(|n| n - 1).sum(),
            in_flight_conflicts: orders.in_flight_conflicts,
            replays: orders.replays,
            key_mismatches: orders.key_mismatches,
            missing_keys: orders.missing_keys,
            permanent_conflicts: counter(&self.counters.permanent_conflicts),
            lock_conflicts: counter(&self.counters.lock_conflicts),
            injected_failures: counter(&self.counters.injected_failures),
            resets: counter(&self.counters.resets),
            stalls: counter(&self.counters.stalls),
            blocks_served: counter(&self.counters.blocks_served),
            identities_blocked,
            blocked_identity_requests,
            proxied_requests: counter(&self.counters.proxied),
            applied_writes: documents.applied_writes,
            stale_writes: documents.stale_writes,
            already_exists: documents.already_exists,
            preconditions_required: documents.preconditions_required,
            unconditional_writes: documents.unconditional_writes,
            foreign_writes: documents.foreign_writes,
        }
    }
}

/// A panic while holding a lock leaves counts that are still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
