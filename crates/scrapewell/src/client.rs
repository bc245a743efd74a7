//! The client and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use scrapewell_core::block::{BlockDetect, BlockDetectLayer, Detector, RuleSet};
use scrapewell_core::idempotency::{
    IDEMPOTENCY_KEY, Idempotency, IdempotencyLayer, KeyFormat, KeyStrategy,
};
use scrapewell_core::ratelimit::{
    HostStats, HostTable, KeyBy, Quota, QuotaStore, RateLimit, RateLimitLayer, TableSettings,
};
use scrapewell_core::retry::{Retry, RetryBudget, RetryLayer, RetryPolicy};
use scrapewell_core::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use tower::{Service, ServiceBuilder};

use crate::block::{Blocking, Rotate, WhileCooling};
use crate::request::uri_of;
use crate::transport::{HttpSettings, Outgoing, ProxyUrl, Transport, TransportConfig};
use crate::{CookieJar, Error, IntoUrl, RequestBuilder, Update};

/// The layers every request goes through, outermost first.
type Stack = Idempotency<Retry<RateLimit<AttemptTimeout<BlockDetect<Transport>>>>>;
pub(crate) type StackFuture = <Stack as Service<http::Request<Outgoing>>>::Future;

/// A scraping client: reqwest underneath, with conflict-aware retries, idempotency keys and a
/// shared retry budget on top.
///
/// # Clone
///
/// Clones share the connection pool, the settings and the retry budget: make one client and
/// clone it into each task.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), scrapewell::Error> {
/// use std::time::Duration;
///
/// let client = scrapewell::Client::builder()
///     .max_attempts(4)
///     .attempt_timeout(Duration::from_secs(10))
///     .deadline(Duration::from_secs(60))
///     .build()?;
/// let page = client.get("http://127.0.0.1:8080/page/1").send().await?.text().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    stack: Stack,
    keys: KeySettings,
    max_body_size: u64,
    blocking: Blocking,
    receive_blocked: bool,
}

/// How this client writes idempotency keys, for keys a caller passes per request.
#[derive(Debug, Clone)]
pub(crate) struct KeySettings {
    pub(crate) header: HeaderName,
    pub(crate) format: KeyFormat,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with the default settings.
    ///
    /// # Panics
    ///
    /// When the TLS backend cannot be initialised; use [`Client::builder`] to get that as an
    /// error instead.
    pub fn new() -> Self {
        match Self::builder().build() {
            Ok(client) => client,
            Err(error) => panic!("scrapewell::Client::new: {error}"),
        }
    }

    /// A builder for a configured client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Starts a GET request.
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a POST request (it gets an idempotency key).
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a PUT request.
    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// Starts a PATCH request (it gets an idempotency key).
    pub fn patch(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// Starts a DELETE request.
    pub fn delete(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// Starts a HEAD request.
    pub fn head(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// A read-modify-write of the resource at `url` that never loses an update: see
    /// [`Update`].
    pub fn update(&self, url: impl IntoUrl) -> Update {
        Update::new(self.clone(), url.into_url())
    }

    /// Starts a request with any method.
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, url.into_url())
    }

    /// Starts `request` through the layers. The stack is not cloned for it: the idempotency
    /// layer writes its key, and the retry future takes its own clone of the layers within.
    /// Inlined, so that the future is built where it is boxed rather than copied there.
    #[inline(always)]
    pub(crate) fn call(&self, mut request: http::Request<Outgoing>) -> StackFuture {
        let stack = &self.inner.stack;
        stack.add_key(&mut request);
        stack.get_ref().call_shared(request)
    }

    pub(crate) fn keys(&self) -> &KeySettings {
        &self.inner.keys
    }

    pub(crate) fn max_body_size(&self) -> u64 {
        self.inner.max_body_size
    }

    pub(crate) fn blocking(&self) -> &Blocking {
        &self.inner.blocking
    }

    pub(crate) fn receives_blocked(&self) -> bool {
        self.inner.receive_blocked
    }

    /// What the client has learned about the host of `url`: refusals, the pace it keeps, a
    /// pause in force, requests in flight. `None` for a host it has not seen (or forgot).
    pub fn host_stats(&self, url: impl IntoUrl) -> Option<HostStats> {
        let uri = uri_of(&Arc::new(url.into_url().ok()?)).ok()?;
        self.inner.stack.get_ref().get_ref().host_stats(&uri)
    }
}

/// Configures a [`Client`].
///
/// | setting | default |
/// |---|---|
/// | attempts | 3 |
/// | attempt timeout (connect, send, read the whole body) | 30 s |
/// | deadline over all attempts | none |
/// | backoff | 100 ms doubling to 10 s, with jitter |
/// | longest `Retry-After` honoured | 60 s |
/// | retry budget | 20% of the last 10 s of requests, plus 10/s |
/// | idempotency keys | random UUID v4, quoted, in `Idempotency-Key` |
/// | largest response body | 16 MiB |
/// | redirects followed | 10 |
/// | rate limit | none configured: hosts are paced by what they say (429, `Retry-After`, rate-limit headers) |
/// | requests in flight per host | 8 |
/// | block detection | the embedded rules ([`RuleSet::embedded`]) |
/// | after a block | the host cools down for 60 s: requests to it fail fast |
/// | identity rotation | none: a blocked request fails with [`Error::Blocked`] |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell::{Client, KeyFormat, KeyStrategy};
///
/// let client = Client::builder()
///     .user_agent("my-scraper/1.0")
///     .max_attempts(5)
///     .backoff(Duration::from_millis(250), Duration::from_secs(30))
///     .max_retry_after(Duration::from_secs(300))
///     .retry_budget(Duration::from_secs(10), 5, 0.1)
///     .idempotency_key_format(KeyFormat::Token)
///     .idempotency_key_strategy(KeyStrategy::Derived)
///     .max_body_size(64 << 20)
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    http: HttpSettings,
    policy: RetryPolicy,
    attempt_timeout: Option<Duration>,
    key_strategy: KeyStrategy,
    keys_enabled: bool,
    keys: KeySettings,
    max_body_size: u64,
    max_redirects: usize,
    default_quota: Option<Quota>,
    host_quotas: Vec<(String, Quota)>,
    hosts: TableSettings,
    key_hosts_by: KeyBy,
    rate_limit_jitter: Option<f64>,
    quota_store: Option<Arc<dyn QuotaStore>>,
    block_rules: Option<RuleSet>,
    cool_down: Duration,
    while_cooling: WhileCooling,
    rotate: Option<Arc<dyn Rotate>>,
    max_rotations: u32,
    receive_blocked: bool,
    error: Option<Error>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            http: HttpSettings {
                user_agent: Some(HeaderValue::from_static(concat!(
                    "scrapewell/",
                    env!("CARGO_PKG_VERSION")
                ))),
                default_headers: HeaderMap::new(),
                connect_timeout: None,
                http2_prior_knowledge: false,
                proxy: None,
                decompress: true,
                cookies: None,
                root_certificates: Vec::new(),
                accept_invalid_certs: false,
            },
            policy: RetryPolicy::default(),
            attempt_timeout: Some(Duration::from_secs(30)),
            key_strategy: KeyStrategy::Random,
            keys_enabled: true,
            keys: KeySettings {
                header: IDEMPOTENCY_KEY,
                format: KeyFormat::StructuredString,
            },
            max_body_size: 16 << 20,
            max_redirects: 10,
            default_quota: None,
            host_quotas: Vec::new(),
            hosts: TableSettings::default(),
            key_hosts_by: KeyBy::default(),
            rate_limit_jitter: None,
            quota_store: None,
            block_rules: None,
            cool_down: Duration::from_secs(60),
            while_cooling: WhileCooling::FailFast,
            rotate: None,
            max_rotations: 3,
            receive_blocked: false,
            error: None,
        }
    }
}

impl ClientBuilder {
    /// The `User-Agent` header.
    pub fn user_agent(mut self, value: impl TryInto<HeaderValue>) -> Self {
        match value.try_into() {
            Ok(value) => self.http.user_agent = Some(value),
            Err(_) => self.fail("invalid User-Agent value"),
        }
        self
    }

    /// Headers sent with every request.
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        self.http.default_headers = headers;
        self
    }

    /// The time to establish a connection, within the attempt timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.http.connect_timeout = Some(timeout);
        self
    }

    /// Asks for compressed bodies (`Accept-Encoding: gzip, br, deflate`, as browsers and Scrapy
    /// do) and decompresses them, unless a request sets `Accept-Encoding` or `Range` itself (on
    /// by default). The body size cap applies to the decompressed body, so a small body that
    /// inflates past it fails with [`Error::BodyTooLarge`]; block detection reads the
    /// decompressed page. Off, a body comes as the server sent it.
    pub fn decompress(mut self, decompress: bool) -> Self {
        self.http.decompress = decompress;
        self
    }

    /// Keeps cookies between requests, in a jar of the client's own ([`CookieJar`]): what a
    /// server sets is sent back to it (off by default, as in reqwest). A block that rotates the
    /// identity makes the jar forget the host's cookies.
    pub fn cookie_store(mut self, keep: bool) -> Self {
        self.http.cookies = keep.then(|| Arc::new(CookieJar::new()));
        self
    }

    /// Keeps cookies between requests in `jar`, which the caller may fill beforehand (a
    /// logged-in session) and read afterwards, or share between clients.
    pub fn cookie_jar(mut self, jar: Arc<CookieJar>) -> Self {
        self.http.cookies = Some(jar);
        self
    }

    /// Sends every request through the proxy at `url` (`http://`, `https://`, with
    /// `user:password@` when it needs them), except those of an identity that names its own
    /// ([`Identity::proxy`](crate::Identity::proxy)). Without it, reqwest's default holds: the
    /// proxy of the `HTTP_PROXY` / `HTTPS_PROXY` environment variables, if any. A URL that is
    /// not a proxy's makes `build()` fail with [`Error::Config`], which does not repeat it (it
    /// may carry a password).
    pub fn proxy(mut self, url: &str) -> Self {
        match ProxyUrl::parse(url) {
            Ok(proxy) => self.http.proxy = Some(proxy),
            Err(_) => self.fail("invalid proxy URL"),
        }
        self
    }

    /// Trusts the certificate authorities of `pem` (one or more PEM certificates) besides the
    /// system's: a staging site's, a company's, a test server's. Certificates that do not
    /// parse make `build()` fail with [`Error::Config`].
    ///
    /// ```no_run
    /// let ca = std::fs::read("ca.pem").unwrap();
    /// let client = scrapewell::Client::builder()
    ///     .add_root_certificates(&ca)
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Self {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certificates) if !certificates.is_empty() => {
                self.http.root_certificates.extend(certificates)
            }
            _ => self.fail("no PEM certificate to trust"),
        }
        self
    }

    /// Accepts any certificate, expired, self-signed or for another name: the connection is
    /// encrypted but the server is not known to be who it says. For a site whose certificate
    /// is broken and whose content is public; never with credentials.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.http.accept_invalid_certs = accept;
        self
    }

    /// Speaks HTTP/2 from the first byte, without TLS (h2c with prior knowledge), to servers
    /// known to accept it: internal APIs, gRPC gateways, a test server. Every server the client
    /// reaches must then speak HTTP/2: over TLS it offers only `h2` as well. A stream such a
    /// server refuses unprocessed (`REFUSED_STREAM`, or one its `GOAWAY` left out) is sent
    /// again at once, the first time in a request.
    ///
    /// ```
    /// let client = scrapewell::Client::builder()
    ///     .http2_prior_knowledge()
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.http.http2_prior_knowledge = true;
        self
    }

    /// Attempts per request, the first included (1 = no retry).
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with_policy(|p| p.max_attempts(attempts))
    }

    /// The time one attempt may take: connecting, sending, and reading the whole body.
    /// Time spent waiting for a host's rate budget does not count.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// The time a request may take over all its attempts and the delays between them.
    pub fn deadline(self, deadline: Duration) -> Self {
        self.with_policy(|p| p.deadline(deadline))
    }

    /// The backoff schedule: the first delay and the largest (before jitter).
    pub fn backoff(self, min_delay: Duration, max_delay: Duration) -> Self {
        self.with_policy(|p| p.backoff(min_delay, max_delay))
    }

    /// Seeds the backoff jitter, so a run can be repeated.
    pub fn jitter_seed(self, seed: u64) -> Self {
        self.with_policy(|p| p.jitter_seed(seed))
    }

    /// The longest server-requested delay (`Retry-After`) that is honoured; a longer one fails
    /// the request at once with [`Error::RetryAfterTooLong`], and the requests to its host
    /// fail at once with [`Error::HostPaused`] while the rate limiter holds the host paused.
    pub fn max_retry_after(self, cap: Duration) -> Self {
        self.with_policy(|p| p.max_retry_after(cap))
    }

    /// The retry budget shared by every request of the client (and its clones): retries are
    /// capped at `retry_percent` of the requests of the last `ttl`, plus `min_per_sec`. Two
    /// retries draw nothing from it: asking again after a 409 that says the request's key is
    /// still in flight, and sending a write (PUT, DELETE, a keyed POST or PATCH) again after its
    /// attempt timed out, as giving up on either would leave the outcome of a write unknown.
    pub fn retry_budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        match RetryBudget::new(ttl, min_per_sec, retry_percent) {
            Ok(budget) => self.with_policy(|p| p.budget(Arc::new(budget))),
            Err(error) => {
                self.fail(&error.to_string());
                self
            }
        }
    }

    /// No retry budget: every request may use all its attempts.
    pub fn no_retry_budget(self) -> Self {
        self.with_policy(RetryPolicy::no_budget)
    }

    /// Whether POST and PATCH requests get an idempotency key (on by default). Without keys,
    /// a POST that times out or breaks after sending fails with [`Error::OutcomeUnknown`].
    pub fn idempotency_keys(mut self, enabled: bool) -> Self {
        self.keys_enabled = enabled;
        self
    }

    /// How idempotency keys are written (quoted Structured Field string, or bare token).
    pub fn idempotency_key_format(mut self, format: KeyFormat) -> Self {
        self.keys.format = format;
        self
    }

    /// How idempotency keys are chosen (random, or derived from the request).
    pub fn idempotency_key_strategy(mut self, strategy: KeyStrategy) -> Self {
        self.key_strategy = strategy;
        self
    }

    /// The header that carries idempotency keys.
    pub fn idempotency_key_header(mut self, name: HeaderName) -> Self {
        self.keys.header = name;
        self
    }

    /// The largest response body read whole; a larger one fails with [`Error::BodyTooLarge`].
    pub fn max_body_size(mut self, bytes: u64) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Redirects followed per attempt (0: hand 3xx responses to the caller). A 303, and a
    /// POST's 301 or 302, are followed with a GET that has no body and no idempotency key; a
    /// 307 or 308 sends the request again as it was (a streamed body cannot be: that redirect
    /// is handed to the caller).
    pub fn max_redirects(mut self, redirects: usize) -> Self {
        self.max_redirects = redirects;
        self
    }

    /// At most `per_second` requests a second to each host no pattern matches, evenly spaced
    /// (2% below it, so that servers counting whole milliseconds never see one early).
    pub fn rate_limit(mut self, per_second: f64) -> Self {
        match even_quota(per_second) {
            Some(quota) => self.default_quota = Some(quota),
            None => self.fail("rate limit must be a positive number of requests a second"),
        }
        self
    }

    /// At most `per_second` requests a second to each host matching `pattern` (`example.com`,
    /// `example.com:8080`, `127.0.0.2`, `*.example.com`); the first matching pattern applies.
    pub fn host_rate_limit(mut self, pattern: &str, per_second: f64) -> Self {
        match even_quota(per_second) {
            Some(quota) => self.host_quotas.push((pattern.to_owned(), quota)),
            None => self.fail("host rate limit must be a positive number of requests a second"),
        }
        self
    }

    /// A governor [`Quota`] (with a burst) for the hosts matching `pattern`, or for every other
    /// host when `pattern` is `None`.
    pub fn quota(mut self, pattern: Option<&str>, quota: Quota) -> Self {
        match pattern {
            Some(pattern) => self.host_quotas.push((pattern.to_owned(), quota)),
            None => self.default_quota = Some(quota),
        }
        self
    }

    /// Requests in flight at once per host (8 by default, as Scrapy's). A host starts with one
    /// and gets one more place for each accepted response, up to this bound.
    ///
    /// The bound is on requests, not connections: reqwest's pool starts a new connection for
    /// a request that finds none idle, even while a finished request's connection is on its way
    /// back to it, and reqwest has no bound on connections per host. While the window opens,
    /// a host can see more connections than this bound (measured on loopback, 1,000 requests
    /// with 200 waiting: 9 to 12 for a bound of 8, 65 to 109 for a bound of 64).
    pub fn max_in_flight_per_host(mut self, requests: u32) -> Self {
        self.hosts = self.hosts.max_in_flight(requests);
        self
    }

    /// How requests are grouped into the hosts that share a budget (host and port by default).
    pub fn key_hosts_by(mut self, key_by: KeyBy) -> Self {
        self.key_hosts_by = key_by;
        self
    }

    /// The host table: idle TTL, size cap, longest pause, and how the pace adapts.
    pub fn host_table(mut self, settings: TableSettings) -> Self {
        self.hosts = settings;
        self
    }

    /// The jitter added to waits for a pause or a learned pace, as a share of the wait (1% by
    /// default).
    pub fn rate_limit_jitter(mut self, share: f64) -> Self {
        self.rate_limit_jitter = Some(share);
        self
    }

    /// Shares the rate limits with every client that uses the same `store` (the workers of a
    /// fleet, on other machines): each request to a host with a limit takes a slot of that limit
    /// in the store before it goes, so that ten workers limited to 10 requests a second send 10
    /// between them, not 100. While the store cannot answer, each client keeps to the limits
    /// alone, and a warning says so. See `RedisQuotaStore` (feature `redis`) for a fleet, and
    /// [`InProcessQuotaStore`](crate::InProcessQuotaStore) for the clients of one process.
    ///
    /// # Example
    ///
    /// ```
    /// use scrapewell::{Client, InProcessQuotaStore};
    ///
    /// // Two identities, one budget: 10 requests a second to example.com between them.
    /// let quotas = InProcessQuotaStore::new();
    /// let client = |user_agent: &str| {
    ///     Client::builder()
    ///         .user_agent(user_agent)
    ///         .host_rate_limit("example.com", 10.0)
    ///         .shared_rate_limits(quotas.clone())
    ///         .build()
    /// };
    /// let (first, second) = (client("crawler-a/1.0")?, client("crawler-b/1.0")?);
    /// # let _ = (first, second);
    /// # Ok::<(), scrapewell::Error>(())
    /// ```
    ///
    /// ```
    /// # #[cfg(feature = "redis")]
    /// # fn fleet() -> Result<scrapewell::Client, Box<dyn std::error::Error>> {
    /// use scrapewell::{Client, RedisQuotaStore};
    ///
    /// let client = Client::builder()
    ///     .host_rate_limit("example.com", 10.0)
    ///     .shared_rate_limits(RedisQuotaStore::open("redis://127.0.0.1:6379/")?)
    ///     .build()?;
    /// # Ok(client)
    /// # }
    /// ```
    pub fn shared_rate_limits(mut self, store: impl QuotaStore) -> Self {
        self.quota_store = Some(Arc::new(store));
        self
    }

    /// The block rules responses are classified by (the embedded ones by default); see
    /// [`RuleSet`] to add rules or load them from a file.
    pub fn block_rules(mut self, rules: RuleSet) -> Self {
        self.block_rules = Some(rules);
        self
    }

    /// Whether responses are checked for block pages at all (on by default). Off, a block page
    /// is judged by its status alone, as any other response, no host cools down, and the check
    /// costs nothing: the response's headers are not even walked.
    pub fn block_detection(mut self, enabled: bool) -> Self {
        if !enabled {
            self.block_rules = Some(RuleSet::empty());
        }
        self
    }

    /// How long a host cools down after a block that no fresh identity answered (60 s; zero:
    /// no cool-down).
    pub fn block_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// What requests to a cooling host do: fail fast (the default) or wait.
    pub fn while_cooling(mut self, mode: WhileCooling) -> Self {
        self.while_cooling = mode;
        self
    }

    /// The hook that hands out a fresh identity after a block; a blocked request is sent again
    /// with it, up to [`max_rotations`](Self::max_rotations) times.
    pub fn rotate_identity(mut self, rotate: impl Rotate) -> Self {
        self.rotate = Some(Arc::new(rotate));
        self
    }

    /// Fresh identities one request may go through (3).
    pub fn max_rotations(mut self, rotations: u32) -> Self {
        self.max_rotations = rotations;
        self
    }

    /// Hand block pages to the caller as responses, with
    /// [`Response::block_verdict`](crate::Response::block_verdict) set, instead of failing
    /// with [`Error::Blocked`]. They are not retried either way.
    pub fn receive_blocked(mut self, receive: bool) -> Self {
        self.receive_blocked = receive;
        self
    }

    /// The client.
    ///
    /// Its rate limiter keeps time on the CPU's counter, except in a client built while tokio's
    /// clock is paused, which follows tokio's clock: in a paused-time test, build the client
    /// after pausing (as `#[tokio::test(start_paused = true)]` does), not before.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let cookies = self.http.cookies.clone();
        let transport = Transport::new(TransportConfig {
            max_redirects: self.max_redirects,
            max_body: self.max_body_size,
            idempotency_key: self.keys.header.clone(),
            settings: self.http,
        })
        .map_err(|e| Error::Config {
            reason: e.to_string(),
        })?;
        let keys = IdempotencyLayer::new()
            .enabled(self.keys_enabled)
            .strategy(self.key_strategy)
            .format(self.keys.format)
            .header_name(self.keys.header.clone());
        let mut rate_limit = RateLimitLayer::new(Arc::new(HostTable::new(self.hosts)))
            .key_by(self.key_hosts_by)
            .jitter(self.rate_limit_jitter.unwrap_or(0.01))
            .fail_paused_longer_than(self.policy.get_max_retry_after());
        for (pattern, quota) in self.host_quotas {
            rate_limit = rate_limit
                .host_quota(&pattern, quota)
                .map_err(|e| Error::Config {
                    reason: e.to_string(),
                })?;
        }
        if let Some(quota) = self.default_quota {
            rate_limit = rate_limit.default_quota(quota);
        }
        if let Some(store) = self.quota_store {
            rate_limit = rate_limit.shared_quotas(store);
        }
        let timeout = match self.attempt_timeout {
            Some(timeout) => AttemptTimeoutLayer::new(timeout),
            None => AttemptTimeoutLayer::none(),
        };
        let detector = match &self.block_rules {
            Some(rules) => Detector::new(rules).map_err(|e| Error::Config {
                reason: e.to_string(),
            })?,
            None => Detector::default(),
        };
        let stack = ServiceBuilder::new()
            .layer(keys)
            .layer(RetryLayer::new(self.policy))
            .layer(rate_limit)
            .layer(timeout)
            .layer(BlockDetectLayer::new(detector))
            .service(transport);
        Ok(Client {
            inner: Arc::new(ClientInner {
                stack,
                keys: self.keys,
                max_body_size: self.max_body_size,
                blocking: Blocking::new(
                    self.cool_down,
                    self.while_cooling,
                    self.max_rotations,
                    self.rotate,
                    cookies,
                ),
                receive_blocked: self.receive_blocked,
            }),
        })
    }

    fn with_policy(mut self, change: impl FnOnce(RetryPolicy) -> RetryPolicy) -> Self {
        self.policy = change(self.policy);
        self
    }

    fn fail(&mut self, reason: &str) {
        self.error.get_or_insert(Error::Config {
            reason: reason.to_owned(),
        });
    }
}

/// `per_second` requests a second, one at a time.
fn even_quota(per_second: f64) -> Option<Quota> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    Quota::with_period(Duration::try_from_secs_f64(1.0 / per_second).ok()?)
}
