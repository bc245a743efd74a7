//! The innermost service: one attempt over reqwest, redirects followed, the body read whole.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION, PROXY_AUTHORIZATION, REFERER,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use scrapewell_core::ReplayBody;
use scrapewell_core::block::RedirectedTo;
use scrapewell_core::ratelimit::HostPaused;
use scrapewell_core::retry::{ClassifyError, TransportFailure};
use scrapewell_core::timeout::Elapsed;
use tower::Service;
use url::Url;

use crate::CookieJar;
use crate::body::{Body, BodyData, ResponseBody};

/// What failed in one attempt, below the retry layer.
///
/// # Example
///
/// ```no_run
/// use scrapewell::{Client, Error, TransportError};
///
/// # async fn run() {
/// let client = Client::new();
/// match client.get("http://127.0.0.1:9/").send().await {
///     Err(Error::Transport { source: TransportError::Connect(_), attempts }) => {
///         eprintln!("nothing listens there; gave up after {attempts}");
///     }
///     Err(Error::OutcomeUnknown { source: Some(TransportError::Body(_)), .. }) => {
///         eprintln!("the body broke off after the request was sent");
///     }
///     other => drop(other),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be made; nothing was sent.
    #[error("connect failed")]
    Connect(#[source] reqwest::Error),
    /// The TLS handshake failed in a way that does not clear by itself: the server's
    /// certificate is not one the client trusts for it (self-signed, expired, issued for
    /// another name), or the two share no protocol version or cipher. Nothing was sent, and
    /// it is not retried.
    #[error("TLS handshake failed")]
    Tls(#[source] reqwest::Error),
    /// The request failed after it may have reached the server.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// The server turned the request away before processing any of it: an HTTP/2 stream reset
    /// with `REFUSED_STREAM`, or one a graceful `GOAWAY` left out (RFC 9113, 8.7).
    #[error("refused unprocessed")]
    Refused(#[source] reqwest::Error),
    /// The response's head was not HTTP: a bad status line, a malformed header line, a header
    /// section over the parser's limits. Sent, so the server may have processed the request.
    #[error("malformed response")]
    MalformedResponse(#[source] reqwest::Error),
    /// The response body broke off (a reset, a truncated body).
    #[error("response body broke off")]
    Body(#[source] reqwest::Error),
    /// The response body is larger than the configured cap.
    #[error("response body over the cap of {limit} bytes")]
    BodyTooLarge {
        /// The configured cap.
        limit: u64,
    },
    /// The attempt took longer than its timeout.
    #[error(transparent)]
    TimedOut(#[from] Elapsed),
    /// The host's server asked for a pause longer than the client waits; nothing was sent.
    #[error(transparent)]
    HostPaused(#[from] HostPaused),
    /// A redirect pointed somewhere the client cannot follow.
    #[error("bad redirect: {0}")]
    Redirect(String),
    /// No HTTP client could be made for an identity's proxy.
    #[error("cannot use the identity's proxy")]
    Proxy(#[source] reqwest::Error),
}

impl TransportError {
    /// The error of an attempt whose request or response head failed.
    fn of_send(error: reqwest::Error) -> Self {
        if cause::<rustls::Error>(&error).is_some_and(refused_for_good) {
            TransportError::Tls(error.without_url())
        } else if error.is_connect() {
            TransportError::Connect(error.without_url())
        } else if cause::<h2::Error>(&error).is_some_and(refused_unprocessed) {
            TransportError::Refused(error.without_url())
        } else if cause::<hyper::Error>(&error).is_some_and(hyper::Error::is_parse) {
            TransportError::MalformedResponse(error.without_url())
        } else {
            TransportError::Request(error.without_url())
        }
    }
}

/// The first error of type `T` in the chain of `error`'s sources, looking into what each
/// `io::Error` wraps as well: its `source()` skips its payload (hyper-rustls hands rustls's
/// errors on inside one).
fn cause<T: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&T> {
    let mut cause = error.source();
    while let Some(error) = cause {
        if let Some(found) = of_type::<T>(error) {
            return Some(found);
        }
        cause = error.source();
    }
    None
}

/// `error` as a `T`, or the `T` inside it when it is an `io::Error` (at any depth).
fn of_type<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    if let Some(found) = error.downcast_ref::<T>() {
        return Some(found);
    }
    let payload: &(dyn std::error::Error + 'static) =
        error.downcast_ref::<std::io::Error>()?.get_ref()?;
    of_type(payload)
}

/// Whether a TLS handshake failed for a reason that another attempt would meet again.
fn refused_for_good(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    )
}

/// Whether an HTTP/2 server said it did not process the request: it reset the stream with
/// `REFUSED_STREAM`, or its graceful `GOAWAY` (`NO_ERROR`) came before it took the stream up.
fn refused_unprocessed(error: &h2::Error) -> bool {
    let reason = error.reason();
    error.is_remote()
        && ((error.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM))
            || (error.is_go_away() && reason == Some(h2::Reason::NO_ERROR)))
}

impl ClassifyError for TransportError {
    fn transport_failure(&self) -> TransportFailure {
        match self {
            TransportError::Connect(_) => TransportFailure::NotSent,
            TransportError::Refused(_) => TransportFailure::Refused,
            TransportError::Request(_)
            | TransportError::MalformedResponse(_)
            | TransportError::Body(_) => TransportFailure::AfterSend,
            TransportError::TimedOut(_) => TransportFailure::TimedOut,
            TransportError::HostPaused(_) => TransportFailure::HeldBack,
            TransportError::BodyTooLarge { .. }
            | TransportError::Tls(_)
            | TransportError::Redirect(_)
            | TransportError::Proxy(_) => TransportFailure::Permanent,
        }
    }
}

/// What the transport sends: the body, and the URL the request builder parsed. The request's
/// URI says the same, but turning it back into a `Url` would parse it a second time (about 6k
/// instructions); carrying it beside the body rather than in the extensions keeps the
/// extensions empty, so the retry layer's copy of the request allocates nothing for them. The
/// URL is shared: the retry layer's copies, and the response when there was no redirect, hold
/// the same one.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) body: Body,
    pub(crate) url: Arc<Url>,
    /// The proxy of the identity the request goes with, when it has one.
    pub(crate) proxy: Option<ProxyUrl>,
}

impl ReplayBody for Outgoing {
    fn try_clone(&self) -> Option<Self> {
        Some(Outgoing {
            body: self.body.try_clone()?,
            url: Arc::clone(&self.url),
            proxy: self.proxy.clone(),
        })
    }

    fn buffered(&self) -> Option<&[u8]> {
        self.body.buffered()
    }
}

/// Per-request transport settings, in the extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadMode {
    /// Hand 2xx/3xx bodies over as a stream instead of reading them whole.
    pub(crate) streaming: bool,
    /// The cap on a buffered body.
    pub(crate) max_body: u64,
}

/// A proxy's URL, checked by reqwest when the identity was made. It may carry credentials, so
/// its `Debug` shows only the scheme, host and port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProxyUrl(Arc<str>);

impl ProxyUrl {
    pub(crate) fn parse(url: &str) -> Result<ProxyUrl, reqwest::Error> {
        reqwest::Proxy::all(url)?;
        Ok(ProxyUrl(url.into()))
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(url) => write!(
                f,
                "{}://{}:{}",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or_default()
            ),
            Err(_) => f.write_str("proxy"),
        }
    }
}

/// What every reqwest client of one scrapewell client is built with: the one without a proxy,
/// and one per identity proxy (reqwest fixes the proxy per client).
#[derive(Clone)]
pub(crate) struct HttpSettings {
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) connect_timeout: Option<Duration>,
    /// Speak HTTP/2 over plain TCP from the first byte (h2c with prior knowledge).
    pub(crate) http2_prior_knowledge: bool,
    /// The proxy every request goes through unless its identity names another.
    pub(crate) proxy: Option<ProxyUrl>,
    /// Ask for gzip, brotli and deflate bodies, and decompress them.
    pub(crate) decompress: bool,
    /// The jar the client keeps its cookies in, when it keeps them: read and filled by the
    /// transport for each request it sends, redirects included, whatever the proxy.
    pub(crate) cookies: Option<Arc<CookieJar>>,
    /// Certificate authorities trusted besides the system's.
    pub(crate) root_certificates: Vec<reqwest::Certificate>,
    /// Whether any certificate is accepted, however invalid.
    pub(crate) accept_invalid_certs: bool,
}

impl HttpSettings {
    pub(crate) fn build(
        &self,
        proxy: Option<&ProxyUrl>,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // The retry layer is the one place retries are decided: reqwest's own (HTTP/2
            // refusals) would resend under each attempt, unseen by the budget, the attempt
            // count and the logs, and copies every request for it. Its refusals are classified
            // instead (`TransportError::Refused`) and retried by the layer.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .default_headers(self.default_headers.clone())
            .gzip(self.decompress)
            .brotli(self.decompress)
            .deflate(self.decompress);
        if let Some(user_agent) = &self.user_agent {
            builder = builder.user_agent(user_agent.clone());
        }
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(proxy) = proxy.or(self.proxy.as_ref()) {
            builder = builder.proxy(reqwest::Proxy::all(&*proxy.0)?);
        }
        if self.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        if !self.root_certificates.is_empty() {
            builder = builder.tls_certs_merge(self.root_certificates.iter().cloned());
        }
        if self.accept_invalid_certs {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        builder.build()
    }
}

/// Header values are left out: default headers may carry credentials.
impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("user_agent", &self.user_agent)
            .field(
                "default_headers",
                &self.default_headers.keys().collect::<Vec<_>>(),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .field("proxy", &self.proxy)
            .field("decompress", &self.decompress)
            .field("cookies", &self.cookies)
            .field("root_certificates", &self.root_certificates.len())
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

/// The most proxies a client keeps a reqwest client (and its connection pool) for; past it the
/// pool is emptied and rebuilt as requests need.
const MAX_PROXY_CLIENTS: usize = 256;

#[derive(Debug)]
pub(crate) struct TransportConfig {
    pub(crate) max_redirects: usize,
    pub(crate) max_body: u64,
    /// The idempotency key's header: it never follows a redirect to another origin, nor onto
    /// the GET that a 303 turns a write into.
    pub(crate) idempotency_key: HeaderName,
    pub(crate) settings: HttpSettings,
}

/// Clones share one allocation: the retry layer clones its inner layers into each request's
/// future, and a clone here is then one reference count, not three.
#[derive(Debug, Clone)]
pub(crate) struct Transport(Arc<TransportShared>);

#[derive(Debug)]
struct TransportShared {
    http: reqwest::Client,
    config: TransportConfig,
    via_proxy: Mutex<HashMap<ProxyUrl, reqwest::Client>>,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Result<Self, reqwest::Error> {
        Ok(Transport(Arc::new(TransportShared {
            http: config.settings.build(None)?,
            config,
            via_proxy: Mutex::default(),
        })))
    }

    /// The reqwest client for `proxy`, made on first use.
    fn client_via(&self, proxy: &ProxyUrl) -> Result<reqwest::Client, TransportError> {
        let mut clients = self
            .0
            .via_proxy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(proxy) {
            return Ok(client.clone());
        }
        let client = self
            .0
            .config
            .settings
            .build(Some(proxy))
            .map_err(TransportError::Proxy)?;
        if clients.len() >= MAX_PROXY_CLIENTS {
            clients.clear();
        }
        clients.insert(proxy.clone(), client.clone());
        Ok(client)
    }
}

impl Service<http::Request<Outgoing>> for Transport {
    type Response = http::Response<ResponseBody>;
    type Error = TransportError;
    type Future = BoxFuture<'static, Result<Self::Response, TransportError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Outgoing>) -> Self::Future {
        let via_proxy = match &request.body().proxy {
            None => None,
            Some(proxy) => match self.client_via(proxy) {
                Ok(http) => Some(http),
                Err(error) => return Box::pin(std::future::ready(Err(error))),
            },
        };
        Box::pin(exchange(Arc::clone(&self.0), via_proxy, request))
    }
}

/// One attempt over the client's reqwest client, or over `via_proxy` for a proxied request.
async fn exchange(
    shared: Arc<TransportShared>,
    via_proxy: Option<reqwest::Client>,
    request: http::Request<Outgoing>,
) -> Result<http::Response<ResponseBody>, TransportError> {
    let http = via_proxy.as_ref().unwrap_or(&shared.http);
    let config = &shared.config;
    // Only these outlive the first await: the rest of the request (its `Uri`, its extensions)
    // is dropped here rather than carried in the future's state. That state is boxed on every
    // attempt; at 856 bytes (it was 1,304) the allocator serves it from its per-thread cache.
    let (mut method, mut headers, mode, body, mut url) = {
        let (parts, Outgoing { body, url, .. }) = request.into_parts();
        let mode = parts
            .extensions
            .get::<ReadMode>()
            .copied()
            .unwrap_or(ReadMode {
                streaming: false,
                max_body: config.max_body,
            });
        (parts.method, parts.headers, mode, body, url)
    };
    // A buffered body can follow a 307 / 308; a stream cannot be sent twice.
    let mut replay = body.buffered_bytes();
    let mut body = body.into_reqwest();
    let mut redirects = 0;
    let cookies = config.settings.cookies.as_deref();
    let mut response = loop {
        let sent = http.execute(reqwest_request(
            &method,
            &url,
            &headers,
            body.take(),
            cookies,
        ));
        let response = sent.await.map_err(TransportError::of_send)?;
        if let Some(jar) = cookies {
            // Each response of a redirect chain sets its cookies for its own URL: a login
            // that answers with a session and a redirect gets the session on the next hop.
            jar.store(response.headers(), &url);
        }
        let Some(next) = redirect_target(&response, redirects, config.max_redirects)? else {
            break response;
        };
        redirects += 1;
        let next_request = NextRequest {
            method: &mut method,
            headers: &mut headers,
            replay: &mut replay,
            body: &mut body,
        };
        if !next_request.follow(&response, &next, config) {
            break response;
        }
        url = Arc::new(next);
    };
    // Error bodies are small and the retry classifier reads them: buffer them even when
    // streaming. The body is read through a borrow of the response, which a nested future
    // would have taken by value and copied into its state.
    let status = response.status();
    let whole = if mode.streaming && !(status.is_client_error() || status.is_server_error()) {
        None
    } else {
        Some(read_capped(&mut response, mode.max_body).await?)
    };
    Ok(into_http(response, whole, url, redirects > 0))
}

/// One attempt's request (or one hop of its redirects), with the jar's cookies for `url`
/// unless the caller or its identity set a `Cookie` field. Built outside `exchange`, so that
/// its future does not keep room for a request that was borrowed while it was filled in.
fn reqwest_request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Option<reqwest::Body>,
    cookies: Option<&CookieJar>,
) -> reqwest::Request {
    let mut request = reqwest::Request::new(method.clone(), url.clone());
    *request.headers_mut() = headers.clone();
    *request.body_mut() = body;
    if let Some(field) = cookies
        .filter(|_| !headers.contains_key(COOKIE))
        .and_then(|jar| jar.field_for(url))
    {
        request.headers_mut().insert(COOKIE, field);
    }
    request
}

/// What of the request changes when it follows a redirect.
struct NextRequest<'a> {
    method: &'a mut Method,
    headers: &'a mut HeaderMap,
    replay: &'a mut Option<Bytes>,
    body: &'a mut Option<reqwest::Body>,
}

impl NextRequest<'_> {
    /// Readies the request to follow `response` to `next`; `false` when the redirect goes to
    /// the caller instead. Out of line and cold, as redirects are the rarer: the path of a
    /// request answered at once then spans fewer cache lines.
    #[cold]
    #[inline(never)]
    fn follow(self, response: &reqwest::Response, next: &Url, config: &TransportConfig) -> bool {
        let status = response.status();
        if status == StatusCode::SEE_OTHER
            || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && *self.method == Method::POST)
        {
            // A 303 is followed with a GET (a HEAD stays one: RFC 9110, 15.4.4), and so is a
            // POST's 301 or 302, as browsers do. What follows is a read: no body, which a later
            // redirect can send again, and no idempotency key, which a GET never carries.
            if *self.method != Method::HEAD {
                *self.method = Method::GET;
            }
            *self.replay = Some(Bytes::new());
            for name in [&CONTENT_TYPE, &CONTENT_LENGTH, &config.idempotency_key] {
                self.headers.remove(name);
            }
        } else if let Some(bytes) = &self.replay {
            *self.body = (!bytes.is_empty()).then(|| bytes.clone().into());
        } else {
            // A 307 / 308 would need the stream again: hand the redirect to the caller.
            return false;
        }
        if next.origin() != response.url().origin() {
            for name in [
                &AUTHORIZATION,
                &COOKIE,
                &PROXY_AUTHORIZATION,
                &config.idempotency_key,
            ] {
                self.headers.remove(name);
            }
        }
        match referer(response.url(), next) {
            Some(referer) => self.headers.insert(REFERER, referer),
            None => self.headers.remove(REFERER),
        };
        true
    }
}

/// The `Referer` a browser sends when it follows a redirect from `from` to `to`, under its
/// default policy (`strict-origin-when-cross-origin`): the whole URL within one origin, the
/// origin alone to another, nothing from HTTPS down to HTTP. Credentials and the fragment are
/// never part of it.
fn referer(from: &Url, to: &Url) -> Option<HeaderValue> {
    if from.scheme() == "https" && to.scheme() == "http" {
        return None;
    }
    let mut shown = from.clone();
    shown.set_fragment(None);
    // Cannot fail for an http(s) URL, which has a host.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if from.origin() != to.origin() {
        shown.set_path("/");
        shown.set_query(None);
    }
    HeaderValue::from_str(shown.as_str()).ok()
}

/// Where a redirect leads, when it should be followed; `None` for a response that is final.
fn redirect_target(
    response: &reqwest::Response,
    followed: usize,
    max: usize,
) -> Result<Option<Url>, TransportError> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) || max == 0 {
        return Ok(None);
    }
    redirect_location(response, followed, max)
}

/// The target of a redirect response (see [`redirect_target`]). Out of line and cold, as
/// [`NextRequest::follow`].
#[cold]
#[inline(never)]
fn redirect_location(
    response: &reqwest::Response,
    followed: usize,
    max: usize,
) -> Result<Option<Url>, TransportError> {
    let Some(location) = response.headers().get(LOCATION) else {
        return Ok(None);
    };
    if followed >= max {
        return Err(TransportError::Redirect(format!(
            "more than {max} redirects"
        )));
    }
    let location = location
        .to_str()
        .map_err(|_| TransportError::Redirect("Location is not visible ASCII".to_owned()))?;
    let next = response
        .url()
        .join(location)
        .map_err(|e| TransportError::Redirect(format!("Location is not a URL: {e}")))?;
    match next.scheme() {
        "http" | "https" => Ok(Some(next)),
        other => Err(TransportError::Redirect(format!(
            "redirect to unsupported scheme {other:?}"
        ))),
    }
}

/// The response as the layers take it: `whole` is its body when it was read, else the body is
/// handed on as a stream.
fn into_http(
    mut response: reqwest::Response,
    whole: Option<Bytes>,
    mut url: Arc<Url>,
    redirected: bool,
) -> http::Response<ResponseBody> {
    let status = response.status();
    let version = response.version();
    let headers = std::mem::take(response.headers_mut());
    if url.fragment().is_some() {
        // The fragment is not sent, and a response's URL has none, as reqwest's has not.
        Arc::make_mut(&mut url).set_fragment(None);
    }
    let data = match whole {
        Some(bytes) => BodyData::Whole(bytes),
        None => BodyData::Streaming(reqwest::Body::from(response)),
    };
    let redirected_to = redirected.then(|| RedirectedTo(url.as_str().to_owned()));
    let body = ResponseBody { data, url };
    let mut http_response = http::Response::new(body);
    if let Some(redirected_to) = redirected_to {
        // Only followed redirects pay for this: a soft block is often one to a captcha page.
        http_response.extensions_mut().insert(redirected_to);
    }
    *http_response.status_mut() = status;
    *http_response.version_mut() = version;
    *http_response.headers_mut() = headers;
    http_response
}

/// Reads a whole body, failing as soon as it is known to exceed `limit`.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: u64,
) -> Result<Bytes, TransportError> {
    let announced = response.content_length();
    if announced.is_some_and(|announced| announced > limit) {
        return Err(TransportError::BodyTooLarge { limit });
    }
    // A body that arrives in one chunk, as most do, is handed on as it came: the buffer is
    // made only when a second chunk follows.
    let mut first: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    let mut read = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TransportError::Body(e.without_url()))?
    {
        read += chunk.len() as u64;
        if read > limit {
            return Err(TransportError::BodyTooLarge { limit });
        }
        if let Some(first) = first.take() {
            let capacity = announced.unwrap_or(read).min(limit);
            buffer.reserve(usize::try_from(capacity).unwrap_or(0));
            buffer.extend_from_slice(&first);
        }
        if buffer.is_empty() {
            first = Some(chunk);
        } else {
            buffer.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| buffer.freeze()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn config() -> TransportConfig {
        TransportConfig {
            max_redirects: 10,
            max_body: 1 << 20,
            idempotency_key: HeaderName::from_static("idempotency-key"),
            settings: HttpSettings {
                user_agent: None,
                default_headers: HeaderMap::new(),
                connect_timeout: None,
                http2_prior_knowledge: false,
                proxy: None,
                decompress: true,
                cookies: None,
                root_certificates: Vec::new(),
                accept_invalid_certs: false,
            },
        }
    }

    fn get(url: &str) -> http::Request<Outgoing> {
        http::Request::new(Outgoing {
            body: Body::empty(),
            url: Arc::new(Url::parse(url).unwrap()),
            proxy: None,
        })
    }

    #[test]
    fn a_redirect_refers_as_a_browser_does() {
        let referer = |from: &str, to: &str| {
            referer(&Url::parse(from).unwrap(), &Url::parse(to).unwrap())
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let from = "https://user:secret@shop.example/cart?id=7#top";
        assert_eq!(
            referer(from, "https://shop.example/login").as_deref(),
            Some("https://shop.example/cart?id=7")
        );
        assert_eq!(
            referer(from, "https://auth.example/login").as_deref(),
            Some("https://shop.example/")
        );
        assert_eq!(referer(from, "http://shop.example/cart"), None);
        assert_eq!(
            referer("http://shop.example/a", "https://shop.example/a").as_deref(),
            Some("http://shop.example/")
        );
    }

    /// An HTTP/2 frame (RFC 9113, 4.1).
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const NO_ERROR: u32 = 0x0;
    const INTERNAL_ERROR: u32 = 0x2;
    const REFUSED_STREAM: u32 = 0x7;

    /// What the raw HTTP/2 server does with a connection after an answer.
    enum Then {
        Close,
        Serve,
    }

    /// A loopback server that speaks just enough HTTP/2 without TLS: it acknowledges SETTINGS
    /// and answers each request's HEADERS frame with the frames `answer` makes of its stream
    /// id. Every connection is served, so that a resend on a new one is seen rather than left
    /// hanging.
    async fn serve_h2(listener: TcpListener, mut answer: impl FnMut(u32) -> (Vec<u8>, Then)) {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut preface = [0; 24];
            socket.read_exact(&mut preface).await.unwrap();
            socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
            let mut head = [0; 9];
            while socket.read_exact(&mut head).await.is_ok() {
                let length = u32::from_be_bytes([0, head[0], head[1], head[2]]);
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                let mut payload = vec![0; length as usize];
                socket.read_exact(&mut payload).await.unwrap();
                match head[3] {
                    SETTINGS if head[4] & 1 == 0 => {
                        socket.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
                    }
                    HEADERS => {
                        let (frames, then) = answer(stream);
                        socket.write_all(&frames).await.unwrap();
                        if let Then::Close = then {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// One attempt of a GET, by the transport's own reqwest client (speaking HTTP/2 without
    /// TLS), to a loopback server that answers the request's HEADERS frame with the frames
    /// `answer` makes of its stream id and then closes. Returns the attempt's error and the
    /// number of requests the server saw.
    async fn refusal(answer: fn(u32) -> Vec<u8>) -> (TransportError, usize) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let server = tokio::spawn(serve_h2(listener, move |stream| {
            seen.fetch_add(1, Ordering::SeqCst);
            (answer(stream), Then::Close)
        }));
        let mut config = config();
        config.settings.http2_prior_knowledge = true;
        let transport = Transport::new(config).unwrap();
        let attempt = exchange(transport.0, None, get(&url));
        let error = attempt.await.unwrap_err();
        server.abort();
        (error, requests.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_stream_the_server_refused_is_an_unprocessed_refusal_sent_once() {
        let (error, requests) =
            refusal(|stream| frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes())).await;
        assert!(matches!(error, TransportError::Refused(_)), "{error:?}");
        assert_eq!(error.transport_failure(), TransportFailure::Refused);
        // reqwest's own retry of refusals is off: the retry layer decides, and counts.
        assert_eq!(requests, 1);
    }

    #[tokio::test]
    async fn a_stream_a_graceful_goaway_left_out_is_an_unprocessed_refusal() {
        let (error, requests) = refusal(|stream| {
            let last_taken_up = stream.saturating_sub(2);
            let payload = [last_taken_up.to_be_bytes(), NO_ERROR.to_be_bytes()].concat();
            frame(GOAWAY, 0, 0, &payload)
        })
        .await;
        assert!(matches!(error, TransportError::Refused(_)), "{error:?}");
        assert_eq!(requests, 1);
    }

    #[tokio::test]
    async fn a_stream_reset_for_another_reason_or_taken_up_may_have_been_processed() {
        let reset = |stream| frame(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes());
        let taken_up = |stream: u32| {
            let payload = [stream.to_be_bytes(), NO_ERROR.to_be_bytes()].concat();
            frame(GOAWAY, 0, 0, &payload)
        };
        for answer in [reset as fn(u32) -> Vec<u8>, taken_up] {
            let (error, _) = refusal(answer).await;
            assert!(matches!(error, TransportError::Request(_)), "{error:?}");
            assert_eq!(error.transport_failure(), TransportFailure::AfterSend);
        }
    }

    #[tokio::test]
    async fn a_client_sends_a_refused_request_again_at_once_on_the_same_connection() {
        // Through the whole client: the first request's stream is refused, and every later one
        // answered 200 with no body, on one connection the server keeps open.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/page", listener.local_addr().unwrap());
        let streams = Arc::new(Mutex::new(Vec::new()));
        let seen = streams.clone();
        let server = tokio::spawn(serve_h2(listener, move |stream| {
            let mut seen = seen.lock().unwrap();
            seen.push(stream);
            let answer = if seen.len() == 1 {
                frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes())
            } else {
                // END_STREAM | END_HEADERS; `:status: 200` is entry 8 of HPACK's static table.
                frame(HEADERS, 0x5, stream, &[0x80 | 8])
            };
            (answer, Then::Serve)
        }));
        let client = crate::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.attempts().count(), 2);
        let retry = &response.attempts().retries()[0];
        assert_eq!(retry.reason, scrapewell_core::retry::RetryReason::Refused);
        assert_eq!(retry.delay, Duration::ZERO);
        server.abort();
        let streams = streams.lock().unwrap();
        assert_eq!(streams.len(), 2, "{streams:?}");
        assert!(
            streams[1] > streams[0],
            "a new stream on the same connection"
        );
    }

    #[test]
    fn an_attempts_future_fits_the_allocators_thread_cache() {
        // glibc serves allocations of up to 1,032 bytes from a per-thread cache; a larger box,
        // made on every attempt, takes its slow path (about 400 instructions more).
        let transport = Transport::new(config()).unwrap();
        let attempt = exchange(transport.0, None, get("http://127.0.0.1/"));
        assert!(
            std::mem::size_of_val(&attempt) <= 1032,
            "{} bytes",
            std::mem::size_of_val(&attempt)
        );
    }
}
