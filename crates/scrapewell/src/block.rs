//! What the client does about blocks: cool the host down, and rotate the identity when the
//! caller supplies a fresh one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use http::header::COOKIE;
use scrapewell_core::block::{BlockVerdict, CoolDowns, CoolingDown};
use scrapewell_core::ratelimit::HostKey;
use url::Url;

use crate::CookieJar;
use crate::transport::{Outgoing, ProxyUrl};

/// Who the client appears to be to a host: headers (a `User-Agent`, a session `Cookie`, a
/// token) sent with every request to it, and the proxy the requests go through. A [`Rotate`]
/// hook hands out a fresh one after a block.
///
/// # Example
///
/// ```
/// use scrapewell::Identity;
///
/// let identity = Identity::new()
///     .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) scraper/2")?
///     .cookie("session=7f3a; theme=dark")?
///     .proxy("http://user:secret@127.0.0.1:3128")?;
/// assert_eq!(identity.headers().len(), 2);
/// assert_eq!(format!("{identity:?}"), r#"Identity { headers: ["user-agent", "cookie"], proxy: Some(http://127.0.0.1:3128) }"#);
/// # Ok::<(), scrapewell::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Identity {
    headers: HeaderMap,
    proxy: Option<ProxyUrl>,
}

impl Identity {
    /// An identity with no headers of its own.
    pub fn new() -> Identity {
        Identity::default()
    }

    /// Sends `name: value` (replacing the request's own).
    pub fn header(mut self, name: &str, value: &str) -> Result<Identity, crate::Error> {
        let (name, value) = crate::request::header(name, value)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sends these cookies (`name=value; other=value`), instead of those of the client's
    /// [`CookieJar`](crate::CookieJar) if it keeps one.
    pub fn cookie(self, cookies: &str) -> Result<Identity, crate::Error> {
        self.header(COOKIE.as_str(), cookies)
    }

    /// Sends the requests through the proxy at `url` (`http://`, `https://`, with
    /// `user:password@` when it needs them). The client keeps a connection pool per proxy.
    pub fn proxy(mut self, url: &str) -> Result<Identity, crate::Error> {
        let proxy = ProxyUrl::parse(url)
            .map_err(|_| crate::Error::invalid("invalid proxy URL for the identity"))?;
        self.proxy = Some(proxy);
        Ok(self)
    }

    /// The headers it sends.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether its requests go through a proxy.
    pub fn has_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    fn apply(&self, request: &mut http::Request<Outgoing>) {
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        request.body_mut().proxy = self.proxy.clone();
    }
}

/// Values are left out: identities are cookies and tokens, and proxies carry credentials.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// The hook that decides what to do after a block: hand out a fresh identity for the host, or
/// give up (`None`), in which case the request fails with [`Error::Blocked`](crate::Error).
///
/// It is called once per block of an identity: requests that were already on their way with
/// the blocked identity, and get blocked too, are sent again with the fresh one without asking
/// again. It must not block the thread for long: it runs on the request's task.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use scrapewell::{BlockVerdict, Identity, Rotate};
///
/// /// A new session cookie for each block, ten at most.
/// struct FreshSessions(AtomicU32);
///
/// impl Rotate for FreshSessions {
///     fn rotate(&self, host: &str, verdict: &BlockVerdict) -> Option<Identity> {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         (n < 10).then(|| Identity::new().cookie(&format!("session=s{n}")).ok()).flatten()
///     }
/// }
///
/// let client = scrapewell::Client::builder()
///     .rotate_identity(FreshSessions(AtomicU32::new(0)))
///     .build()?;
/// # let _ = client;
/// # Ok::<(), scrapewell::Error>(())
/// ```
pub trait Rotate: Send + Sync + 'static {
    /// A fresh identity for `host` (`host:port`) after `verdict`, or `None` to give up.
    fn rotate(&self, host: &str, verdict: &BlockVerdict) -> Option<Identity>;
}

impl fmt::Debug for dyn Rotate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rotate")
    }
}

/// What requests to a host do while it cools down after a block.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell::{Client, WhileCooling};
///
/// // A block page makes the host cool down for two minutes; requests to it wait that out.
/// let client = Client::builder()
///     .block_cool_down(Duration::from_secs(120))
///     .while_cooling(WhileCooling::Wait)
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhileCooling {
    /// Fail at once with [`Error::Blocked`](crate::Error::Blocked), sending nothing.
    #[default]
    FailFast,
    /// Wait until the cool-down ends, then go.
    Wait,
}

/// The most hosts the client keeps a rotated identity for, as it keeps cool-downs for.
const MAX_ROTATED_HOSTS: usize = 100_000;

/// The client's block handling: the cool-downs, the identities in use, and the hook.
pub(crate) struct Blocking {
    pub(crate) cool_down: Duration,
    pub(crate) while_cooling: WhileCooling,
    pub(crate) max_rotations: u32,
    cool_downs: CoolDowns,
    rotate: Option<Arc<dyn Rotate>>,
    identities: Mutex<HashMap<HostKey, CurrentIdentity>>,
    /// The client's cookie jar, which forgets a host's cookies when its identity rotates.
    cookies: Option<Arc<CookieJar>>,
}

#[derive(Clone)]
pub(crate) struct CurrentIdentity {
    /// Bumped at every rotation, so a request can tell whether the identity it was blocked with
    /// is still the current one.
    pub(crate) generation: u64,
    pub(crate) identity: Arc<Identity>,
}

/// What to do with a request that was blocked.
pub(crate) enum AfterBlock {
    /// Send it again with this identity.
    Retry(CurrentIdentity),
    /// Fail with the block.
    GiveUp,
}

impl Blocking {
    pub(crate) fn new(
        cool_down: Duration,
        while_cooling: WhileCooling,
        max_rotations: u32,
        rotate: Option<Arc<dyn Rotate>>,
        cookies: Option<Arc<CookieJar>>,
    ) -> Blocking {
        Blocking {
            cool_down,
            while_cooling,
            max_rotations,
            cool_downs: CoolDowns::new(MAX_ROTATED_HOSTS),
            rotate,
            identities: Mutex::default(),
            cookies,
        }
    }

    /// The hook that hands out fresh identities, when the client has one.
    pub(crate) fn rotator(&self) -> Option<&dyn Rotate> {
        self.rotate.as_deref()
    }

    /// Whether `host` is cooling down.
    pub(crate) fn cooling(&self, host: &HostKey) -> Option<CoolingDown> {
        self.cool_downs.check(host)
    }

    /// Whether a request to `url` must go the guarded way: its host is cooling down, or the
    /// client rotates identities. The host's key is worked out only when some host is cooling.
    pub(crate) fn guards(&self, url: &Url) -> bool {
        self.rotate.is_some()
            || (!self.cool_downs.is_empty() && self.cooling(&host_key(url)).is_some())
    }

    /// The identity requests to `host` go with now, if one was handed out; it is applied to
    /// `request`.
    pub(crate) fn apply_current(
        &self,
        host: &HostKey,
        request: &mut http::Request<Outgoing>,
    ) -> u64 {
        if self.rotate.is_none() {
            return 0;
        }
        let current = self.lock().get(host).cloned();
        match current {
            Some(current) => {
                current.apply(request);
                current.generation
            }
            None => 0,
        }
    }

    /// A request to `url` (of `host`) sent with identity `generation` was blocked with
    /// `verdict`; `rotate` is the client's hook.
    pub(crate) fn after_block(
        &self,
        rotate: &dyn Rotate,
        host: &HostKey,
        url: &Url,
        generation: u64,
        verdict: &BlockVerdict,
    ) -> AfterBlock {
        let mut identities = self.lock();
        if let Some(current) = identities.get(host)
            && current.generation != generation
        {
            // Another request already rotated the identity this one was blocked with.
            return AfterBlock::Retry(current.clone());
        }
        let host_name = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        match rotate.rotate(&host_name, verdict) {
            Some(identity) => {
                let current = CurrentIdentity {
                    generation: generation + 1,
                    identity: Arc::new(identity),
                };
                if identities.len() >= MAX_ROTATED_HOSTS && !identities.contains_key(host) {
                    // Bounded like the cool-downs: a host that loses its identity here goes
                    // back to the client's own and rotates again if it is still blocked.
                    if let Some(evicted) = identities.keys().next().copied() {
                        identities.remove(&evicted);
                    }
                }
                identities.insert(*host, current.clone());
                drop(identities);
                // The block was the old identity's; the fresh one starts clean, without the
                // cookies the old one was given.
                self.cool_downs.lift(host);
                if let Some(jar) = &self.cookies {
                    jar.forget_host(url);
                }
                tracing::info!(vendor = verdict.vendor(), kind = %verdict.kind(), generation = current.generation, "identity rotated after a block");
                AfterBlock::Retry(current)
            }
            None => {
                drop(identities);
                self.give_up(host, verdict);
                AfterBlock::GiveUp
            }
        }
    }

    /// A request to `host` ends blocked: the host cools down.
    pub(crate) fn give_up(&self, host: &HostKey, verdict: &BlockVerdict) {
        if !self.cool_down.is_zero() {
            tracing::info!(vendor = verdict.vendor(), kind = %verdict.kind(), cool_down_ms = self.cool_down.as_millis() as u64, "host cooling down after a block");
            self.cool_downs
                .cool(*host, self.cool_down, Arc::new(verdict.clone()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostKey, CurrentIdentity>> {
        self.identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl CurrentIdentity {
    pub(crate) fn apply(&self, request: &mut http::Request<Outgoing>) {
        self.identity.apply(request);
    }
}

impl fmt::Debug for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocking")
            .field("cool_down", &self.cool_down)
            .field("while_cooling", &self.while_cooling)
            .field("max_rotations", &self.max_rotations)
            .field("rotates", &self.rotate.is_some())
            .finish_non_exhaustive()
    }
}

/// The key a host cools down under: its host and port, as the rate limiter keys it.
pub(crate) fn host_key(url: &Url) -> HostKey {
    HostKey::of(
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
    )
}
