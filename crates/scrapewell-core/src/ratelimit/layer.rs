use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use http::Uri;
use tower::Layer;

use super::shared::SharedSlot;
use super::table::{MARGIN, name_words, nanos, share_within, timer_credit};
use super::{HostKey, HostTable, Quota, QuotaStore, RateLimit, SharedQuota};

/// Applies [`RateLimit`] to a service: quotas per host pattern, on one shared [`HostTable`].
///
/// Without any quota, hosts are paced only by what they say (pauses, rate-limit headers,
/// refusals). A host matches the first pattern that fits it, in the order they were added.
/// Hosts are paced 2% below their quota, so that a server whose clock counts whole
/// milliseconds (nginx's `limit_req`) never sees a request early.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use scrapewell_core::ratelimit::{HostTable, KeyBy, Quota, RateLimitLayer, TableSettings};
///
/// let table = Arc::new(HostTable::new(TableSettings::default().max_in_flight(4)));
/// let layer = RateLimitLayer::new(table)
///     .host_quota("api.example.com:8443", Quota::per_second(NonZeroU32::new(20).unwrap()))
///     .unwrap()
///     .key_by(KeyBy::RegistrableDomain)
///     .jitter(0.0);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    table: Arc<HostTable>,
    rules: Vec<(HostPattern, Arc<Limiter>)>,
    default: Option<Arc<Limiter>>,
    key_by: KeyBy,
    jitter: f64,
    longest_wait: Option<Duration>,
    store: Option<Arc<dyn QuotaStore>>,
}

/// How requests are grouped into the hosts that share a budget.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use scrapewell_core::ratelimit::{HostTable, KeyBy, RateLimitLayer, TableSettings};
///
/// // One budget per API tenant, named by the first path segment; other paths go unlimited.
/// let by_tenant = KeyBy::Custom(Arc::new(|uri: &http::Uri| {
///     let host = uri.host()?;
///     let tenant = uri.path().trim_start_matches('/').split('/').next()?;
///     (!tenant.is_empty()).then(|| format!("{host}/{tenant}"))
/// }));
/// let table = Arc::new(HostTable::new(TableSettings::default()));
/// let layer = RateLimitLayer::new(table).key_by(by_tenant);
/// # let _ = layer;
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeyBy {
    /// Host and port (`example.com:443`): the default.
    #[default]
    HostAndPort,
    /// The registrable domain (`www.example.co.uk` and `img.example.co.uk` share
    /// `example.co.uk`), by the Public Suffix List.
    RegistrableDomain,
    /// A function of the URI; `None` leaves the request unlimited.
    Custom(Arc<KeyFn>),
}

/// A function that names the host a request belongs to.
pub type KeyFn = dyn Fn(&Uri) -> Option<String> + Send + Sync;

/// A host pattern that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {0:?}: expected host, host:port or *.domain")]
pub struct InvalidPattern(pub String);

/// What the services of one layer share.
pub(crate) struct Shared {
    pub(crate) table: Arc<HostTable>,
    rules: Vec<(HostPattern, Arc<Limiter>)>,
    default: Option<Arc<Limiter>>,
    key_by: KeyBy,
    pub(crate) jitter: f64,
    /// A request to a host paused by its server for longer fails at once.
    pub(crate) longest_wait: Option<Duration>,
    /// Where the quotas are shared with other clients.
    pub(crate) store: Option<Arc<dyn QuotaStore>>,
    /// Whether the store's last answer was a failure: a warning is given once per outage.
    pub(crate) store_down: AtomicBool,
}

/// One quota, checked by governor's GCRA against a host's state in the table.
pub(crate) struct Limiter {
    quota: Quota,
}

/// The host's GCRA state as governor sees it: its theoretical arrival time, which the table
/// keeps in nanoseconds since its epoch, plus one (0: no request yet). governor counts from the
/// reading its limiter was made at, which here is `now`; a time before it reads as `now`, which
/// GCRA treats alike.
struct ArrivalTime<'a> {
    stored: &'a Cell<u64>,
    now: u64,
}

impl StateStore for ArrivalTime<'_> {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let previous = self
            .stored
            .get()
            .checked_sub(1)
            .map(|at| Nanos::from(at.saturating_sub(self.now)));
        let (outcome, next) = f(previous)?;
        self.stored.set(self.now + next.as_u64() + 1);
        Ok(outcome)
    }
}

/// The table's reading of the clock, taken once per request for every check it makes, so that
/// governor's check does not read the clock again (and paused-time tests drive it).
#[derive(Debug, Clone, Copy)]
struct Reading(u64);

impl Clock for Reading {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `host` or `host:port`.
    Exact { host: String, port: Option<u16> },
    /// `*.domain`: any subdomain of it.
    Suffix(String),
}

impl RateLimitLayer {
    /// No quota yet: hosts are paced by what they say.
    pub fn new(table: Arc<HostTable>) -> Self {
        RateLimitLayer {
            table,
            rules: Vec::new(),
            default: None,
            key_by: KeyBy::default(),
            jitter: 0.01,
            longest_wait: None,
            store: None,
        }
    }

    /// The quota of every host that no pattern matches.
    pub fn default_quota(mut self, quota: Quota) -> Self {
        self.default = Some(Arc::new(Limiter::new(quota)));
        self
    }

    /// The quota of the hosts that match `pattern`: `example.com`, `example.com:8080`,
    /// `127.0.0.2`, `[::1]:8080`, or `*.example.com` for its subdomains.
    pub fn host_quota(mut self, pattern: &str, quota: Quota) -> Result<Self, InvalidPattern> {
        let pattern = HostPattern::parse(pattern)?;
        self.rules.push((pattern, Arc::new(Limiter::new(quota))));
        Ok(self)
    }

    /// How requests are grouped into hosts.
    pub fn key_by(mut self, key_by: KeyBy) -> Self {
        self.key_by = key_by;
        self
    }

    /// The jitter added to each wait, as a share of the wait (0.01 by default; at most 1, and
    /// NaN is none).
    pub fn jitter(mut self, share: f64) -> Self {
        self.jitter = share_within(share, 0.0, 1.0);
        self
    }

    /// Fails a request to a host that its server paused for longer than `longest` (counting
    /// all it asked for, not only the part [`TableSettings::max_pause`] holds the host for) at
    /// once, unsent, with [`HostPaused`](super::HostPaused), instead of letting it wait: when
    /// the pause is over, the server would only say again to come back later than the caller
    /// waits. A request already waiting for its turn when such a pause begins fails too. By
    /// default every request waits.
    ///
    /// [`TableSettings::max_pause`]: super::TableSettings::max_pause
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use scrapewell_core::ratelimit::{HostTable, RateLimitLayer, TableSettings};
    ///
    /// let table = Arc::new(HostTable::new(TableSettings::default()));
    /// let layer = RateLimitLayer::new(table).fail_paused_longer_than(Duration::from_secs(60));
    /// # let _ = layer;
    /// ```
    pub fn fail_paused_longer_than(mut self, longest: Duration) -> Self {
        self.longest_wait = Some(longest);
        self
    }

    /// Keeps the quotas in `store` as well, shared with every client that uses the same store
    /// and names hosts alike (the workers of a fleet, on other machines): a request to a host
    /// with a quota first takes a slot of that quota in the store, then its turn here. Hosts
    /// without a quota are paced by what they say, client by client. While the store cannot
    /// answer, requests are paced by this client's quotas alone, and a warning says so.
    ///
    /// # Example
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::sync::Arc;
    /// # use scrapewell_core::ratelimit::{QuotaStore, ReserveFuture, SharedQuota};
    /// use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer};
    ///
    /// # #[derive(Debug)]
    /// # struct Fleet;
    /// # impl QuotaStore for Fleet {
    /// #     fn reserve(&self, _: &str, _: SharedQuota) -> ReserveFuture {
    /// #         Box::pin(std::future::ready(Ok(Default::default())))
    /// #     }
    /// # }
    /// // `Fleet` is a QuotaStore, such as RedisQuotaStore (feature `redis`).
    /// let layer = RateLimitLayer::new(Arc::new(HostTable::new(Default::default())))
    ///     .default_quota(Quota::per_second(NonZeroU32::new(10).unwrap()))
    ///     .shared_quotas(Arc::new(Fleet));
    /// # let _ = layer;
    /// ```
    pub fn shared_quotas(mut self, store: Arc<dyn QuotaStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The shared table.
    pub fn table(&self) -> &Arc<HostTable> {
        &self.table
    }
}

impl Limiter {
    fn new(quota: Quota) -> Limiter {
        // governor counts in u64 nanoseconds, burst included: a longer period (one request in
        // a thousand years) is held at the longest it can count.
        let burst = quota.burst_size();
        let longest = u64::MAX / (u64::from(burst.get()) + 1);
        let period = (quota.replenish_interval().as_secs_f64() * (1.0 + MARGIN))
            .min(Duration::from_nanos(longest).as_secs_f64());
        let paced = Quota::with_period(Duration::from_secs_f64(period))
            .map_or(quota, |paced| paced.allow_burst(burst));
        Limiter { quota: paced }
    }

    /// The quota as a store shares it.
    pub(crate) fn shared(&self) -> SharedQuota {
        SharedQuota::new(
            self.quota.replenish_interval(),
            self.quota.burst_size().get(),
        )
    }

    /// The spacing of the quota in nanoseconds.
    pub(crate) fn interval_nanos(&self) -> u64 {
        nanos(self.quota.replenish_interval())
    }

    /// Takes a cell of the quota at `now` for a host whose arrival time is `tat`: `None` when
    /// the quota allows the request, else how long until it does (and `tat` is unchanged).
    pub(crate) fn check(&self, tat: &mut u64, now: u64) -> Option<Duration> {
        // A request checked after its theoretical arrival time (stored plus one) is taken as
        // having come up to `timer_credit` earlier, no earlier than that time.
        let now = match tat.checked_sub(1) {
            Some(theoretical) if now > theoretical => now
                .saturating_sub(timer_credit(self.interval_nanos()))
                .max(theoretical),
            _ => now,
        };
        // A limiter over one host's state, read at `now`: governor's arithmetic with no lookup
        // and no clock reading of its own, under the lock the table already holds.
        let store = ArrivalTime {
            stored: Cell::from_mut(tat),
            now,
        };
        let gcra = RateLimiter::<NotKeyed, _, _, NoOpMiddleware<Nanos>>::new(
            self.quota,
            store,
            Reading(now),
        );
        gcra.check()
            .err()
            .map(|not_until| not_until.wait_time_from(Nanos::from(now)))
    }
}

/// The host a request belongs to, as the layer groups hosts: a host and port stay apart, so that
/// the common case is keyed without building a string.
pub(crate) enum HostName<'a> {
    HostAndPort(&'a str, u16),
    Named(String),
}

impl HostName<'_> {
    /// The host's key in the table.
    pub(crate) fn key(&self) -> HostKey {
        match self {
            HostName::HostAndPort(host, port) => HostKey::of(host, *port),
            HostName::Named(name) => HostKey::new(name),
        }
    }

    /// The name spelled out, as a shared store keeps the host's quota under it.
    fn spelled(self) -> String {
        match self {
            HostName::HostAndPort(host, port) => format!("{}:{port}", host.to_ascii_lowercase()),
            HostName::Named(name) => name,
        }
    }
}

impl Shared {
    /// The host a request belongs to and the quota that applies; `None` for a URI without a
    /// host, or one the key function leaves out.
    pub(crate) fn locate<'u>(&self, uri: &'u Uri) -> Option<(HostName<'u>, Option<&Arc<Limiter>>)> {
        let (host, port) = host_and_port(uri)?;
        let name = match &self.key_by {
            KeyBy::HostAndPort => HostName::HostAndPort(host, port),
            KeyBy::RegistrableDomain => HostName::Named(registrable_domain(host)),
            KeyBy::Custom(key_of) => HostName::Named(key_of(uri)?),
        };
        let limiter = self
            .rules
            .iter()
            .find(|(pattern, _)| pattern.matches(host, port))
            .map(|(_, limiter)| limiter)
            .or(self.default.as_ref());
        Some((name, limiter))
    }

    /// The key of the host a request belongs to and the quota that applies (see
    /// [`Shared::locate`]).
    pub(crate) fn route(&self, uri: &Uri) -> Option<(HostKey, Option<&Arc<Limiter>>)> {
        self.locate(uri)
            .map(|(name, limiter)| (name.key(), limiter))
    }

    /// Where the quota of the host `name` is shared, when it is.
    pub(crate) fn shared_slot(
        &self,
        name: HostName<'_>,
        limiter: Option<&Arc<Limiter>>,
    ) -> Option<SharedSlot> {
        let limiter = limiter.filter(|_| self.store.is_some())?;
        Some(SharedSlot {
            quota: limiter.shared(),
            host: name.spelled(),
        })
    }
}

/// The registrable domain of `host` (itself when it has none, as an address), lowercase.
fn registrable_domain(host: &str) -> String {
    psl::domain_str(host).unwrap_or(host).to_ascii_lowercase()
}

/// The host (IPv6 addresses keep their brackets) and port of a URI, the port defaulted by the
/// scheme. One pass back from the end of the authority, where http's `host()` and `port_u16()`
/// would each search it whole: on every request's path, that was most of the limiter's cost.
fn host_and_port(uri: &Uri) -> Option<(&str, u16)> {
    let authority = uri.authority()?.as_str();
    let bytes = authority.as_bytes();
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    // Most authorities are a bare name: no port, no user info, no IPv6 address.
    if !has_delimiter(bytes) {
        return (!bytes.is_empty()).then_some((authority, default));
    }
    let (mut start, mut end) = (0, bytes.len());
    // A ':' met before any ']' (the end of an IPv6 address) starts the port; the host begins
    // after the '@' that ends the user info, if any.
    let mut port_may_follow = true;
    for (at, &byte) in bytes.iter().enumerate().rev() {
        // Most of a host's bytes are letters, digits, '.' and '-', outside ':'..=']'.
        if !(b':'..=b']').contains(&byte) {
            continue;
        }
        match byte {
            b':' if port_may_follow => {
                end = at;
                port_may_follow = false;
            }
            b']' => port_may_follow = false,
            b'@' => {
                start = at + 1;
                break;
            }
            _ => {}
        }
    }
    let host = &authority[start..end];
    if host.is_empty() {
        return None;
    }
    let port = authority[end..]
        .strip_prefix(':')
        .and_then(|port| port.parse().ok());
    Some((host, port.unwrap_or(default)))
}

/// Whether any byte is ':', '@' or ']', eight at a time: a byte-wise loop over the name cost
/// more than the rest of the lookup.
fn has_delimiter(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The top bit of each byte of `word` that is zero, exactly (no borrow between bytes).
    let zero_bytes = |word: u64| !(((word & LOW7) + LOW7) | word | LOW7);
    let any = |word: u64| {
        zero_bytes(word ^ (ONES * u64::from(b':')))
            | zero_bytes(word ^ (ONES * u64::from(b'@')))
            | zero_bytes(word ^ (ONES * u64::from(b']')))
            != 0
    };
    name_words(bytes).any(any)
}

impl HostPattern {
    fn parse(pattern: &str) -> Result<HostPattern, InvalidPattern> {
        let invalid = || InvalidPattern(pattern.to_owned());
        let text = pattern.trim().to_ascii_lowercase();
        if text.is_empty() || text.contains(['/', ' ', '@', '?', '#']) {
            return Err(invalid());
        }
        if let Some(domain) = text.strip_prefix("*.") {
            if domain.is_empty() || domain.contains(['*', ':']) {
                return Err(invalid());
            }
            return Ok(HostPattern::Suffix(format!(".{domain}")));
        }
        if text.contains('*') {
            return Err(invalid());
        }
        let (host, port) = match text.rsplit_once(':') {
            // `[::1]:8080`, `example.com:8080`; a bare IPv6 address has more than one colon.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => (
                host.to_owned(),
                Some(port.parse::<u16>().map_err(|_| invalid())?),
            ),
            _ => (text.clone(), None),
        };
        Ok(HostPattern::Exact {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            HostPattern::Exact { host: h, port: p } => {
                h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port)
            }
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = Shared {
            table: Arc::clone(&self.table),
            rules: self.rules.clone(),
            default: self.default.clone(),
            key_by: self.key_by.clone(),
            jitter: self.jitter,
            longest_wait: self.longest_wait,
            store: self.store.clone(),
            store_down: AtomicBool::new(false),
        };
        RateLimit {
            inner,
            shared: Arc::new(shared),
        }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field(
                "patterns",
                &self
                    .rules
                    .iter()
                    .map(|(p, l)| (p, l.quota))
                    .collect::<Vec<_>>(),
            )
            .field("default", &self.default.as_ref().map(|l| l.quota))
            .field("key_by", &self.key_by)
            .field("jitter", &self.jitter)
            .field("longest_wait", &self.longest_wait)
            .field("store", &self.store)
            .finish()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("table", &self.table)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::HostAndPort => f.write_str("HostAndPort"),
            KeyBy::RegistrableDomain => f.write_str("RegistrableDomain"),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_come_from_the_authority() {
        for (uri, host, port) in [
            ("http://example.com/a", "example.com", 80),
            ("https://example.com/a", "example.com", 443),
            ("https://Example.com:8443/a?b=c", "Example.com", 8443),
            ("http://user:pw@example.com:81/", "example.com", 81),
            ("http://user:pw@example.com/", "example.com", 80),
            ("http://user@[::1]:8080/", "[::1]", 8080),
            ("http://EXAMPLE.com:81/", "EXAMPLE.com", 81),
            ("http://[::1]/", "[::1]", 80),
            ("http://[::1]:8080/", "[::1]", 8080),
            ("http://127.0.0.2:9/", "127.0.0.2", 9),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(host_and_port(&uri), Some((host, port)), "{uri}");
            assert_eq!(uri.host(), Some(host), "agrees with http: {uri}");
        }
        assert_eq!(host_and_port(&Uri::from_static("/relative")), None);
    }

    #[test]
    fn routes_key_every_form_of_a_host_alike() {
        let table = Arc::new(super::super::HostTable::new(Default::default()));
        let service = RateLimitLayer::new(table).layer(());
        let key = |uri: &str| {
            service
                .shared
                .route(&uri.parse().unwrap())
                .map(|(key, _)| key)
        };
        let plain = key("https://www.example.com/a");
        assert_eq!(plain, Some(HostKey::of("www.example.com", 443)));
        for same in [
            "https://WWW.Example.com/b",
            "https://www.example.com:443/c",
            "https://user:pw@www.example.com/d",
        ] {
            assert_eq!(key(same), plain, "{same}");
        }
        assert_ne!(key("http://www.example.com/"), plain);
        assert_eq!(key("/relative"), None);
    }

    #[test]
    fn delimiters_are_found_at_every_place() {
        for len in 0..20 {
            let name = "a".repeat(len);
            assert!(!has_delimiter(name.as_bytes()), "{name}");
            for at in 0..len {
                for delimiter in [b':', b'@', b']'] {
                    let mut bytes = name.clone().into_bytes();
                    bytes[at] = delimiter;
                    assert!(has_delimiter(&bytes), "{bytes:?}");
                }
            }
        }
        // Bytes next to the three in value, and the bytes of a name with bit 7 set.
        assert!(!has_delimiter("9;?A\\^z-.[_~\u{e9}\u{7f}".as_bytes()));
    }

    #[test]
    fn patterns_parse_and_match() {
        let exact = HostPattern::parse("Example.com").unwrap();
        assert!(exact.matches("example.com", 443) && exact.matches("EXAMPLE.COM", 80));
        assert!(!exact.matches("www.example.com", 443));
        let with_port = HostPattern::parse("127.0.0.2:8080").unwrap();
        assert!(with_port.matches("127.0.0.2", 8080) && !with_port.matches("127.0.0.2", 8081));
        let suffix = HostPattern::parse("*.example.com").unwrap();
        assert!(suffix.matches("a.example.com", 443) && suffix.matches("a.b.example.com", 1));
        assert!(!suffix.matches("example.com", 443) && !suffix.matches("badexample.com", 443));
        let v6 = HostPattern::parse("[::1]:8080").unwrap();
        assert!(v6.matches("[::1]", 8080));
        assert!(HostPattern::parse("::1").unwrap().matches("[::1]", 80));
        for bad in [
            "", "*", "*.", "a*.com", "http://x", "x:port", "*.a:80", "a b",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
