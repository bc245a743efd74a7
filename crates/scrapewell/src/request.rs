//! Building and sending one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::percent_decode_str;
use scrapewell_core::idempotency::{KeyFormat, WithoutKey};
use scrapewell_core::retry::{Attempts, ReceiveBlocked, RetryError, RetryOverrides, VersionInBody};
use scrapewell_core::timeout::AttemptTimeoutOverride;
use scrapewell_core::try_clone_request;
use serde::Serialize;
use tracing::Instrument;
use url::Url;

use crate::block::{AfterBlock, WhileCooling, host_key};
use crate::client::StackFuture;
use crate::origins;
use crate::transport::{Outgoing, ReadMode};
use crate::{Body, Client, Error, Response};

/// A request being built; send it with [`send`](Self::send).
///
/// Errors in the building (a header value with CR/LF, a body that does not serialize) are kept
/// and returned by `send()`, as reqwest does.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), scrapewell::Error> {
/// use std::time::Duration;
///
/// let client = scrapewell::Client::new();
/// let response = client
///     .post("http://127.0.0.1:8080/orders")
///     .header("x-client", "docs")
///     .query(&[("dry_run", "0")])
///     .json(&serde_json::json!({ "ref": "A-1" }))
///     .attempt_timeout(Duration::from_secs(5))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
pub struct RequestBuilder {
    client: Client,
    method: Method,
    // The errors are boxed: a builder is moved by every method, and those errors are rare.
    url: Result<Url, Box<Error>>,
    headers: HeaderMap,
    body: Body,
    overrides: Option<RetryOverrides>,
    attempt_timeout: Option<Duration>,
    read: ReadMode,
    without_key: bool,
    receive_blocked: bool,
    version_in_body: bool,
    error: Option<Box<Error>>,
}

/// Something that can be turned into a URL: `&str`, `String` or [`Url`]. Only `http` and
/// `https` URLs with a host are accepted.
///
/// # Example
///
/// ```
/// use scrapewell::IntoUrl;
///
/// assert!("https://example.com/a?b=c".into_url().is_ok());
/// assert!(matches!(
///     "ftp://example.com/file".into_url(),
///     Err(scrapewell::Error::InvalidRequest { .. })
/// ));
/// ```
pub trait IntoUrl {
    /// The URL, or the reason it is not one.
    fn into_url(self) -> Result<Url, Error>;
}

impl IntoUrl for Url {
    fn into_url(self) -> Result<Url, Error> {
        match self.scheme() {
            "http" | "https" if self.has_host() => Ok(self),
            "http" | "https" => Err(Error::invalid("URL has no host")),
            other => Err(Error::invalid(format!("unsupported URL scheme {other:?}"))),
        }
    }
}

impl IntoUrl for &str {
    fn into_url(self) -> Result<Url, Error> {
        origins::parse(self)
            .map_err(|e| Error::invalid(format!("invalid URL: {e}")))?
            .into_url()
    }
}

impl IntoUrl for String {
    fn into_url(self) -> Result<Url, Error> {
        self.as_str().into_url()
    }
}

impl IntoUrl for &String {
    fn into_url(self) -> Result<Url, Error> {
        self.as_str().into_url()
    }
}

/// The credentials of a URL such as `http://user:pass@host/`, percent-decoded, taken out of
/// it: sent as Basic authorization, as reqwest does, and neither on the request line nor in
/// the response's URL.
#[cold]
fn take_credentials(url: &mut Url) -> (String, Option<String>) {
    let decoded = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let username = decoded(url.username());
    let password = url.password().map(decoded);
    // Both only fail for URLs that cannot carry credentials, which this one did.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (username, password)
}

/// The `Uri` the layers read for `url`, over the URL's own bytes: nothing is copied, and the
/// retry layer's copies of the request share them without first moving them to the heap, as a
/// `Uri` parsed from a `&str` would on its first copy.
pub(crate) fn uri_of(url: &Arc<Url>) -> Result<http::Uri, http::uri::InvalidUri> {
    struct Serialization(Arc<Url>);
    impl AsRef<[u8]> for Serialization {
        fn as_ref(&self) -> &[u8] {
            self.0.as_str().as_bytes()
        }
    }
    http::Uri::from_maybe_shared(Bytes::from_owner(Serialization(Arc::clone(url))))
}

impl RequestBuilder {
    pub(crate) fn new(client: Client, method: Method, mut url: Result<Url, Error>) -> Self {
        let credentials = match &mut url {
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                Some(take_credentials(url))
            }
            _ => None,
        };
        let read = ReadMode {
            streaming: false,
            max_body: client.max_body_size(),
        };
        let mut builder = RequestBuilder {
            client,
            method,
            url: url.map_err(Box::new),
            headers: HeaderMap::new(),
            body: Body::empty(),
            overrides: None,
            attempt_timeout: None,
            read,
            without_key: false,
            receive_blocked: false,
            version_in_body: false,
            error: None,
        };
        if let Some((username, password)) = credentials {
            builder = builder.basic_auth(username, password);
        }
        builder
    }

    /// Adds a header. A name or value that is not valid HTTP (a value with CR or LF) makes
    /// `send()` fail with [`Error::InvalidRequest`]; the value is not repeated in the error.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match header(name, value) {
            Ok((name, value)) => {
                self.headers.append(name, value);
            }
            Err(error) => self.fail(error),
        }
        self
    }

    /// Adds every header of `headers`.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (name, value) in headers.iter() {
            self.headers.append(name.clone(), value.clone());
        }
        self
    }

    /// `Authorization: Bearer <token>`, marked sensitive.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.authorization("Bearer", format!("Bearer {token}"))
    }

    /// `Authorization: Basic <base64 of username:password>` (RFC 7617), marked sensitive; with
    /// no password, `username:`, as reqwest sends it.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), scrapewell::Error> {
    /// let client = scrapewell::Client::new();
    /// let page = client
    ///     .get("http://127.0.0.1:8080/admin")
    ///     .basic_auth("scraper", Some("s3cret"))
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn basic_auth(
        self,
        username: impl fmt::Display,
        password: Option<impl fmt::Display>,
    ) -> Self {
        let credentials = match password {
            Some(password) => format!("{username}:{password}"),
            None => format!("{username}:"),
        };
        let encoded = BASE64_STANDARD.encode(credentials);
        self.authorization("Basic", format!("Basic {encoded}"))
    }

    /// Sets `Authorization` to `value`, marked sensitive so that it is never logged; the error
    /// names only the scheme.
    fn authorization(mut self, scheme: &str, value: String) -> Self {
        match HeaderValue::try_from(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.headers.insert(http::header::AUTHORIZATION, value);
            }
            Err(_) => self.fail(Error::invalid(format!("invalid {scheme} credentials"))),
        }
        self
    }

    /// Appends `query` (anything serde_urlencoded takes: pairs, a map, a struct) to the URL's
    /// query string.
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        let encoded = match serde_urlencoded::to_string(query) {
            Ok(encoded) => encoded,
            Err(e) => {
                self.fail(Error::invalid(format!("query does not serialize: {e}")));
                return self;
            }
        };
        if let Ok(url) = &mut self.url
            && !encoded.is_empty()
        {
            let joined = match url.query() {
                Some(existing) if !existing.is_empty() => format!("{existing}&{encoded}"),
                _ => encoded,
            };
            url.set_query(Some(&joined));
        }
        self
    }

    /// A JSON body, with `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.set_body(bytes.into(), "application/json"),
            Err(e) => self.fail(Error::invalid(format!(
                "body does not serialize to JSON: {e}"
            ))),
        }
        self
    }

    /// A form body, with `Content-Type: application/x-www-form-urlencoded`.
    pub fn form<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(text) => self.set_body(text.into(), "application/x-www-form-urlencoded"),
            Err(e) => self.fail(Error::invalid(format!("form does not serialize: {e}"))),
        }
        self
    }

    /// The body as it is. A [`Body::wrap_stream`] body is sent once and never retried.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// The idempotency key for this request instead of a generated one; written in the
    /// client's key format and header. It must be printable ASCII without `"` or `\`.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        let printable = !key.is_empty()
            && key
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        let keys = self.client.keys();
        let text = match keys.format {
            KeyFormat::StructuredString => format!("\"{key}\""),
            _ => key.to_owned(),
        };
        match HeaderValue::try_from(text) {
            Ok(value) if printable => {
                self.headers.insert(keys.header.clone(), value);
            }
            _ => self.fail(Error::invalid(
                "idempotency key must be non-empty printable ASCII without '\"' or '\\'",
            )),
        }
        self
    }

    /// Creates the resource only if it does not exist yet (`If-None-Match: *`): when it does,
    /// the server answers 412 and `send()` fails with [`Error::AlreadyExists`], never retried.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), scrapewell::Error> {
    /// let client = scrapewell::Client::new();
    /// let sent = client
    ///     .put("http://127.0.0.1:8080/docs/report-7")
    ///     .json(&serde_json::json!({ "state": "draft" }))
    ///     .create_only()
    ///     .send()
    ///     .await;
    /// match sent {
    ///     Ok(_) => println!("created"),
    ///     Err(error) if error.is_already_exists() => println!("someone was first"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn create_only(self) -> Self {
        self.header(IF_NONE_MATCH, HeaderValue::from_static("*"))
    }

    /// Writes only if the resource is still at the version `etag` (`If-Match`): when it changed,
    /// `send()` fails with [`Error::StaleVersion`]. [`Client::update`] does the whole
    /// read-modify-write loop.
    pub fn if_match(self, etag: HeaderValue) -> Self {
        self.header(IF_MATCH, etag)
    }

    /// Marks this write as carrying, in its body, the version it was computed from (CouchDB's
    /// `_rev`): a 409 or 412 is then [`Error::StaleVersion`] rather than [`Error::Conflict`].
    pub fn version_in_body(mut self) -> Self {
        self.version_in_body = true;
        self
    }

    /// Sends this POST or PATCH without an idempotency key, for servers that reject unknown
    /// headers. It is then retried only where the server says it did not process it.
    pub fn without_idempotency_key(mut self) -> Self {
        self.without_key = true;
        self
    }

    /// Attempts for this request, the first included (1 = no retry).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.overrides = Some(self.overrides.unwrap_or_default().max_attempts(attempts));
        self
    }

    /// Sends the request once, whatever happens.
    pub fn no_retry(self) -> Self {
        self.max_attempts(1)
    }

    /// The timeout of each attempt of this request, reading the body included.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The total time this request may take over all its attempts.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.overrides = Some(self.overrides.unwrap_or_default().deadline(deadline));
        self
    }

    /// The largest body this request accepts.
    pub fn max_body_size(mut self, bytes: u64) -> Self {
        self.read.max_body = bytes;
        self
    }

    /// Streaming mode, for large downloads: `send()` returns once the headers arrived, and the
    /// body is read with [`Response::chunk`]. Retries cover the attempt up to the headers only;
    /// a body that breaks off later fails with [`Error::Transport`] and is not retried. Error
    /// responses (4xx, 5xx) are still read whole, so that they can be classified.
    pub fn stream_response(mut self) -> Self {
        self.read.streaming = true;
        self
    }

    /// Sends the request through the client's layers; the returned [`Pending`] resolves to
    /// the response. Building happens here, so the future is small and cheap to move.
    pub fn send(self) -> Pending {
        let inner = match self.into_http() {
            Ok((request, max_body, client)) => {
                let span = tracing::info_span!(
                    "request",
                    method = %request.method(),
                    host = %request.uri().host().unwrap_or_default(),
                    path = %LoggedTarget(&request.body().url),
                );
                if client.blocking().guards(&request.body().url) {
                    let send = guarded(client, request, max_body);
                    PendingState::Guarded(Box::pin(send.instrument(span)))
                } else {
                    let url = Arc::clone(&request.body().url);
                    PendingState::Sending {
                        future: Box::pin(client.call(request)),
                        span,
                        max_body,
                        client,
                        url,
                    }
                }
            }
            Err(error) => PendingState::Failed(Some(error)),
        };
        Pending { inner }
    }

    /// Hands a block page to the caller as a response, with its verdict, instead of failing
    /// with [`Error::Blocked`]. It is not retried either way.
    pub fn receive_blocked(mut self) -> Self {
        self.receive_blocked = true;
        self
    }

    /// The request as the layers take it, the body cap in force, and the client to send it on.
    fn into_http(self) -> Result<(http::Request<Outgoing>, u64, Client), Error> {
        let RequestBuilder {
            client,
            method,
            url,
            headers,
            body,
            overrides,
            attempt_timeout,
            read,
            without_key,
            receive_blocked,
            version_in_body,
            error,
        } = self;
        if let Some(error) = error {
            return Err(*error);
        }
        let url = Arc::new(url.map_err(|error| *error)?);
        let uri = uri_of(&url).map_err(|e| Error::invalid(format!("invalid URL: {e}")))?;
        let mut request = http::Request::new(Outgoing {
            body,
            url,
            proxy: None,
        });
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let extensions = request.extensions_mut();
        if let Some(overrides) = overrides {
            extensions.insert(overrides);
        }
        if let Some(timeout) = attempt_timeout {
            extensions.insert(AttemptTimeoutOverride(Some(timeout)));
        }
        if without_key {
            extensions.insert(WithoutKey);
        }
        if receive_blocked || client.receives_blocked() {
            extensions.insert(ReceiveBlocked);
        }
        if version_in_body {
            extensions.insert(VersionInBody);
        }
        if read.streaming || read.max_body != client.max_body_size() {
            extensions.insert(read);
        }
        Ok((request, read.max_body, client))
    }

    fn set_body(&mut self, body: Body, content_type: &'static str) {
        self.body = body;
        self.headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(content_type));
    }

    /// Keeps the first error: it is the one the caller should fix first.
    fn fail(&mut self, error: Error) {
        self.error.get_or_insert_with(|| Box::new(error));
    }
}

/// A header from a caller's name and value; the error does not repeat the value, which may be a
/// credential.
pub(crate) fn header<K, V>(name: K, value: V) -> Result<(HeaderName, HeaderValue), Error>
where
    K: TryInto<HeaderName>,
    V: TryInto<HeaderValue>,
{
    match (name.try_into(), value.try_into()) {
        (Ok(name), Ok(value)) => Ok((name, value)),
        (Err(_), _) => Err(Error::invalid("invalid header name")),
        (Ok(name), Err(_)) => Err(Error::invalid(format!("invalid value for header {name}"))),
    }
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().ok().map(LoggedTarget))
            .finish_non_exhaustive()
    }
}

/// A request on its way: resolves to the [`Response`] or the [`Error`].
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), scrapewell::Error> {
/// let client = scrapewell::Client::new();
/// let pending: scrapewell::Pending = client.get("http://127.0.0.1:8080/page/1").send();
/// // Nothing is sent until the future is awaited (or polled by a task it was spawned on).
/// let response = pending.await?;
/// println!("{} after {}", response.status(), response.attempts());
/// # Ok(()) }
/// ```
#[must_use = "a request is sent only when its future is awaited"]
pub struct Pending {
    inner: PendingState,
}

enum PendingState {
    Failed(Option<Error>),
    /// The common case: straight through the layers.
    Sending {
        /// Boxed once here: the layers' futures are written by hand and kept inline.
        future: Pin<Box<StackFuture>>,
        /// Entered while the future is polled. Kept beside it rather than wrapped around it
        /// (`Instrumented`), which would copy the future once more on its way into the box.
        span: tracing::Span,
        max_body: u64,
        client: Client,
        /// Where it goes: the host cools down under this URL's key if the request is blocked.
        url: Arc<Url>,
    },
    /// A host cooling down, or a client that rotates identities after blocks.
    Guarded(BoxFuture<'static, Result<Response, Error>>),
}

/// Sends a request to a host that is cooling down (failing fast or waiting, as configured),
/// or on a client that rotates identities: a blocked attempt is sent again with the fresh
/// identity its hook hands out, never with the one that was blocked.
async fn guarded(
    client: Client,
    mut request: http::Request<Outgoing>,
    max_body: u64,
) -> Result<Response, Error> {
    let blocking = client.blocking();
    let host = host_key(&request.body().url);
    while let Some(cooling) = blocking.cooling(&host) {
        match blocking.while_cooling {
            WhileCooling::FailFast => {
                return Err(Error::Blocked {
                    status: None,
                    verdict: Box::new((*cooling.verdict).clone()),
                    cooling_for: Some(cooling.remaining),
                    attempts: Attempts::default(),
                });
            }
            WhileCooling::Wait => tokio::time::sleep(cooling.remaining).await,
        }
    }
    let mut generation = blocking.apply_current(&host, &mut request);
    let mut rotations = 0;
    loop {
        // The spare is kept only while a rotation may need it.
        let rotation = blocking
            .rotator()
            .filter(|_| rotations < blocking.max_rotations)
            .and_then(|rotate| Some((rotate, try_clone_request(&request)?)));
        let error = match client.call(request).await {
            Ok(response) => return Ok(Response::from_http(response, max_body)),
            Err(error) => error,
        };
        let RetryError::Blocked { verdict, .. } = &error else {
            return Err(error.into());
        };
        let Some((rotate, mut next)) = rotation else {
            blocking.give_up(&host, verdict);
            return Err(error.into());
        };
        let url = Arc::clone(&next.body().url);
        match blocking.after_block(rotate, &host, &url, generation, verdict) {
            AfterBlock::Retry(current) => {
                current.apply(&mut next);
                generation = current.generation;
                rotations += 1;
                request = next;
            }
            AfterBlock::GiveUp => return Err(error.into()),
        }
    }
}

impl Future for Pending {
    type Output = Result<Response, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            PendingState::Failed(error) => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("Pending polled after it completed"),
            },
            PendingState::Sending {
                future,
                span,
                max_body,
                client,
                url,
            } => match span.in_scope(|| future.as_mut().poll(cx)) {
                Poll::Ready(Ok(response)) => {
                    Poll::Ready(Ok(Response::from_http(response, *max_body)))
                }
                Poll::Ready(Err(error)) => {
                    if let RetryError::Blocked { verdict, .. } = &error {
                        client.blocking().give_up(&host_key(url), verdict);
                    }
                    Poll::Ready(Err(error.into()))
                }
                Poll::Pending => Poll::Pending,
            },
            PendingState::Guarded(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// The path and query names of a URL, for logs: query values (tokens, session ids, search
/// terms) are left out.
pub(crate) struct LoggedTarget<'a>(pub(crate) &'a Url);

impl fmt::Display for LoggedTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.path())?;
        let mut separator = '?';
        for (name, _) in self.0.query_pairs() {
            write!(f, "{separator}{name}=…")?;
            separator = '&';
        }
        Ok(())
    }
}

impl fmt::Debug for LoggedTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_target_keeps_query_names_and_drops_values() {
        let url = Url::parse("http://h/search?q=secret&token=abc&page=2").unwrap();
        assert_eq!(LoggedTarget(&url).to_string(), "/search?q=…&token=…&page=…");
        assert_eq!(
            LoggedTarget(&Url::parse("http://h/a/b").unwrap()).to_string(),
            "/a/b"
        );
    }

    #[test]
    fn basic_auth_is_base64_of_the_pair_and_sensitive() {
        let client = Client::new();
        let authorization = |builder: RequestBuilder| {
            let (request, _, _) = builder.into_http().unwrap();
            request.headers()[http::header::AUTHORIZATION].clone()
        };
        let value = authorization(client.get("http://h/").basic_auth("user", Some("pass")));
        assert_eq!(value, "Basic dXNlcjpwYXNz");
        assert!(value.is_sensitive());
        let value = authorization(client.get("http://h/").basic_auth("user", None::<&str>));
        assert_eq!(value, "Basic dXNlcjo=");
        // A bearer token with a line break is refused, and the error does not repeat it.
        let refused = client.get("http://h/").bearer_auth("a\nb").into_http();
        match refused {
            Err(Error::InvalidRequest { reason, .. }) => {
                assert_eq!(reason, "invalid Bearer credentials")
            }
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn credentials_in_the_url_are_sent_as_basic_auth_and_taken_out_of_it() {
        let client = Client::new();
        let (request, _, _) = client
            .get("http://scraper:s3cr%40t@h/admin?page=2")
            .into_http()
            .unwrap();
        let value = &request.headers()[http::header::AUTHORIZATION];
        assert_eq!(
            value, "Basic c2NyYXBlcjpzM2NyQHQ=",
            "scraper:s3cr@t, decoded"
        );
        assert!(value.is_sensitive());
        assert_eq!(request.uri(), "http://h/admin?page=2");
        assert_eq!(request.body().url.as_str(), "http://h/admin?page=2");

        let (request, _, _) = client.get("http://scraper@h/").into_http().unwrap();
        assert_eq!(
            request.headers()[http::header::AUTHORIZATION],
            "Basic c2NyYXBlcjo="
        );
        // Credentials set on the request win over the URL's, as with reqwest.
        let (request, _, _) = client
            .get("http://scraper:old@h/")
            .basic_auth("scraper", Some("new"))
            .into_http()
            .unwrap();
        assert_eq!(
            request.headers()[http::header::AUTHORIZATION],
            "Basic c2NyYXBlcjpuZXc="
        );
        let (request, _, _) = client.get("http://h/").into_http().unwrap();
        assert!(!request.headers().contains_key(http::header::AUTHORIZATION));
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!("http://127.0.0.1/".into_url().is_ok());
        assert!(matches!(
            "not a url".into_url(),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(
            "ftp://h/x".into_url(),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(
            "file:///etc/passwd".into_url(),
            Err(Error::InvalidRequest { .. })
        ));
    }
}
