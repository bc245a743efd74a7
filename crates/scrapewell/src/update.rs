//! Read-modify-write with optimistic concurrency: read the resource and its version, let the
//! caller compute the new state from the current one, write it back on the condition that the
//! version did not change, and start again from a fresh read when it did.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use scrapewell_core::retry::{Attempts, Backoff, RetryReason};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;

use crate::error::decode_json;
use crate::request::{self, LoggedTarget};
use crate::{Client, Error};

/// Where a resource keeps the version a conditional write is checked against.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::convert::Infallible;
/// use scrapewell::VersionAt;
///
/// // CouchDB: the revision is the document's `_rev`, sent back in the body written.
/// let client = scrapewell::Client::new();
/// let updated = client
///     .update("http://127.0.0.1:5984/shop/cart-7")
///     .version_at(VersionAt::JsonMember("_rev".to_owned()))
///     .apply_json(|mut doc: serde_json::Value| {
///         doc["items"] = serde_json::json!(3);
///         Ok::<_, Infallible>(Some(doc))
///     })
///     .await?;
/// assert!(updated.written);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VersionAt {
    /// The strong `ETag` of the read, sent back as `If-Match`; the server answers 412 (or 409)
    /// when the resource changed. A weak `W/` ETag cannot be used: `If-Match` compares strongly.
    #[default]
    ETag,
    /// A string member of the JSON body, as CouchDB's `_rev`: the version read is written back
    /// in that member of the new body, whatever the edit left there, and a 409 or 412 means the
    /// resource changed.
    JsonMember(String),
}

/// A read-modify-write of one resource, from [`Client::update`]; run it with
/// [`apply_json`](Self::apply_json) or [`apply_bytes`](Self::apply_bytes).
///
/// Each round reads the resource (retried like any GET), hands the current state to the edit,
/// and writes the result (PUT by default) on the condition that the version is still the one
/// read. When another writer got there first (412, or 409 to the conditional write), the next
/// round reads again after a jittered backoff and re-applies the edit to the fresh state, up to
/// [`max_rounds`](Self::max_rounds); past it, the update fails with [`Error::StaleVersion`]
/// carrying the last state read. No update is lost, and none is applied twice: when an attempt
/// of a write may have been applied before it was answered as stale (it timed out or broke
/// after sending, and its retry met a newer version), the update fails with
/// [`Error::OutcomeUnknown`] instead of applying the edit a second time.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::convert::Infallible;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Counter {
///     value: u64,
/// }
///
/// let client = scrapewell::Client::new();
/// let updated = client
///     .update("http://127.0.0.1:8080/docs/visits")
///     .max_rounds(20)
///     .apply_json(|mut counter: Counter| {
///         counter.value += 1;
///         Ok::<_, Infallible>(Some(counter))
///     })
///     .await?;
/// println!("{} after {} rounds", updated.value.value, updated.rounds);
/// # Ok(()) }
/// ```
#[must_use = "an update does nothing until apply_json or apply_bytes is awaited"]
pub struct Update {
    client: Client,
    url: Result<Url, Error>,
    version: VersionAt,
    method: Method,
    headers: HeaderMap,
    max_rounds: u32,
    backoff: Backoff,
    error: Option<Error>,
}

/// What an update did (see [`Update`] for an example).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Updated<T> {
    /// The state written, or the current one when the edit left it as it was.
    pub value: T,
    /// Whether a write was made (`false` when the edit returned `None`).
    pub written: bool,
    /// The rounds taken: one, plus one for each write that met a newer version.
    pub rounds: u32,
    /// The version now: the write's `ETag`, or the one read when nothing was written.
    pub etag: Option<HeaderValue>,
    /// The attempts of the last request made (the write, or the read when nothing was written).
    pub attempts: Attempts,
}

/// Why an update failed: the edit's own error, or the client's.
///
/// # Example
///
/// ```no_run
/// # async fn run() {
/// use scrapewell::UpdateError;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Stock {
///     left: u32,
/// }
///
/// let client = scrapewell::Client::new();
/// let taken = client
///     .update("http://127.0.0.1:8080/docs/stock")
///     .apply_json(|mut stock: Stock| {
///         if stock.left == 0 {
///             return Err("sold out");
///         }
///         stock.left -= 1;
///         Ok(Some(stock))
///     })
///     .await;
/// match taken {
///     Ok(updated) => println!("{} left", updated.value.left),
///     Err(UpdateError::Edit(why)) => println!("nothing written: {why}"),
///     Err(UpdateError::Request(error)) => println!("read or write failed: {error}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The edit returned an error: the update stopped at once, before writing in that round.
    #[error("the edit failed: {0}")]
    Edit(E),
    /// Reading or writing failed; [`Error::StaleVersion`] when the rounds ran out.
    #[error(transparent)]
    Request(#[from] Error),
}

impl Update {
    pub(crate) fn new(client: Client, url: Result<Url, Error>) -> Self {
        Update {
            client,
            url,
            version: VersionAt::ETag,
            method: Method::PUT,
            headers: HeaderMap::new(),
            max_rounds: 10,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            error: None,
        }
    }

    /// Where the version lives (the strong `ETag` by default).
    pub fn version_at(mut self, version: VersionAt) -> Self {
        self.version = version;
        self
    }

    /// The method of the write (PUT by default).
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header to every read and write (credentials, `Accept`, the write's
    /// `Content-Type`). An invalid name or value fails the update with
    /// [`Error::InvalidRequest`] before anything is sent.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match request::header(name, value) {
            Ok((name, value)) => {
                self.headers.append(name, value);
            }
            Err(error) => {
                self.error.get_or_insert(error);
            }
        }
        self
    }

    /// The most rounds (reads and writes) before giving up with [`Error::StaleVersion`]; at
    /// least 1, 10 by default.
    pub fn max_rounds(mut self, rounds: u32) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    /// The backoff between rounds: exponential from `min_delay` to `max_delay` (10 ms to 1 s by
    /// default), each delay plus a random jitter of up to itself, so that writers that met
    /// spread out.
    pub fn backoff(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        self.backoff = self.backoff.bounds(min_delay, max_delay);
        self
    }

    /// Seeds the jitter between rounds, so that a run can be repeated.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.backoff = self.backoff.jitter_seed(seed);
        self
    }

    /// Runs the update on the JSON state: `edit` gets the current state, decoded as `T`, and
    /// returns the new one, or `None` when there is nothing to write. It runs once per round,
    /// each time on the freshly read state; an `Err` stops the update at once.
    pub async fn apply_json<T, E, F>(self, mut edit: F) -> Result<Updated<T>, UpdateError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(T) -> Result<Option<T>, E>,
    {
        self.run(
            |current: &Bytes, attempts: &Attempts| {
                let state = decode_json(current.clone(), attempts).map_err(UpdateError::Request)?;
                match edit(state).map_err(UpdateError::Edit)? {
                    None => Ok(Edited::Kept(
                        decode_json(current.clone(), attempts).map_err(UpdateError::Request)?,
                    )),
                    Some(next) => {
                        let body = serde_json::to_vec(&next).map_err(|e| {
                            Error::invalid(format!("the edited state does not serialize: {e}"))
                        })?;
                        Ok(Edited::Write(next, Bytes::from(body)))
                    }
                }
            },
            Some(HeaderValue::from_static("application/json")),
        )
        .await
    }

    /// Runs the update on the raw body: `edit` gets the current body and returns the new one,
    /// or `None` when there is nothing to write. The write carries the read's `Content-Type`
    /// unless a `Content-Type` header was set on the update.
    pub async fn apply_bytes<E, F>(self, mut edit: F) -> Result<Updated<Bytes>, UpdateError<E>>
    where
        F: FnMut(Bytes) -> Result<Option<Bytes>, E>,
    {
        self.run(
            |current: &Bytes, _: &Attempts| match edit(current.clone())
                .map_err(UpdateError::Edit)?
            {
                None => Ok(Edited::Kept(current.clone())),
                Some(next) => Ok(Edited::Write(next.clone(), next)),
            },
            None,
        )
        .await
    }

    async fn run<T, E, F>(
        self,
        mut edit: F,
        content_type: Option<HeaderValue>,
    ) -> Result<Updated<T>, UpdateError<E>>
    where
        F: FnMut(&Bytes, &Attempts) -> Result<Edited<T>, UpdateError<E>>,
    {
        if let Some(error) = self.error {
            return Err(error.into());
        }
        let url = self.url?;
        let span = tracing::info_span!("update", method = %self.method, path = %LoggedTarget(&url));
        let rounds = Rounds {
            client: &self.client,
            url: &url,
            version: &self.version,
            method: &self.method,
            headers: &self.headers,
            content_type,
        };
        let mut delays = self.backoff.schedule();
        async move {
            let mut round = 0;
            loop {
                round += 1;
                let read = rounds.read().await?;
                let (value, body) = match edit(&read.body, &read.attempts)? {
                    Edited::Kept(value) => {
                        tracing::debug!(round, "nothing to write");
                        return Ok(Updated {
                            value,
                            written: false,
                            rounds: round,
                            etag: read.etag,
                            attempts: read.attempts,
                        });
                    }
                    Edited::Write(value, body) => (value, body),
                };
                let (status, problem, attempts) = match rounds.write(&read, body).await {
                    Ok((etag, attempts)) => {
                        tracing::debug!(round, "written");
                        return Ok(Updated {
                            value,
                            written: true,
                            rounds: round,
                            etag,
                            attempts,
                        });
                    }
                    Err(Error::StaleVersion { attempts, .. }) if may_have_been_applied(&attempts) => {
                        tracing::warn!(round, "a write attempt may have been applied before its retry met a newer version");
                        return Err(Error::OutcomeUnknown {
                            source: None,
                            attempts,
                        }
                        .into());
                    }
                    Err(Error::StaleVersion {
                        status,
                        problem,
                        attempts,
                        ..
                    }) => (status, problem, attempts),
                    Err(error) => return Err(error.into()),
                };
                if round >= self.max_rounds {
                    tracing::info!(round, %status, "stale version; no rounds left");
                    return Err(Error::StaleVersion {
                        status,
                        etag: read.etag,
                        current: Some(read.body.into()),
                        problem,
                        attempts,
                    }
                    .into());
                }
                let delay = delays.next().unwrap_or(Duration::ZERO);
                tracing::info!(round, %status, ?delay, "stale version; reading again");
                tokio::time::sleep(delay).await;
            }
        }
        .instrument(span)
        .await
    }
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field("url", &self.url.as_ref().ok().map(LoggedTarget))
            .field("version", &self.version)
            .field("method", &self.method)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

/// What the edit made of the current state.
enum Edited<T> {
    /// Nothing to write; the current state.
    Kept(T),
    /// The new state, and the body that carries it.
    Write(T, Bytes),
}

/// One read: the body, its version, and what the write needs of it.
struct Read {
    body: Bytes,
    etag: Option<HeaderValue>,
    version: Version,
    content_type: Option<HeaderValue>,
    attempts: Attempts,
}

enum Version {
    /// Sent back as `If-Match`.
    ETag(HeaderValue),
    /// Written back into the member of that name.
    Member(String, serde_json::Value),
}

/// The parts of an update that each round's read and write use.
struct Rounds<'a> {
    client: &'a Client,
    url: &'a Url,
    version: &'a VersionAt,
    method: &'a Method,
    headers: &'a HeaderMap,
    content_type: Option<HeaderValue>,
}

impl Rounds<'_> {
    async fn read(&self) -> Result<Read, Error> {
        let response = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await?
            .error_for_status()?;
        let attempts = response.attempts().clone();
        let etag = response.headers().get(ETAG).cloned();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response.bytes().await?;
        let version = match self.version {
            VersionAt::ETag => match &etag {
                Some(etag) if is_strong_etag(etag) => Version::ETag(etag.clone()),
                Some(_) => return Err(unversioned("the ETag is weak (W/)", attempts)),
                None => return Err(unversioned("the response has no ETag", attempts)),
            },
            VersionAt::JsonMember(name) => {
                let member = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|mut doc| doc.get_mut(name).map(serde_json::Value::take));
                match member {
                    Some(value @ serde_json::Value::String(_)) => {
                        Version::Member(name.clone(), value)
                    }
                    _ => {
                        let reason = format!("the body has no string member {name:?}");
                        return Err(unversioned(&reason, attempts));
                    }
                }
            }
        };
        Ok(Read {
            body,
            etag,
            version,
            content_type,
            attempts,
        })
    }

    /// Writes `body` on the condition that the resource is still at the version read; returns
    /// the new `ETag` and the attempts made.
    async fn write(
        &self,
        read: &Read,
        body: Bytes,
    ) -> Result<(Option<HeaderValue>, Attempts), Error> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if !self.headers.contains_key(CONTENT_TYPE)
            && let Some(content_type) = self.content_type.as_ref().or(read.content_type.as_ref())
        {
            request = request.header(CONTENT_TYPE, content_type.clone());
        }
        request = match &read.version {
            Version::ETag(etag) => request.if_match(etag.clone()).body(body),
            Version::Member(name, value) => {
                let mut doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    Error::invalid(format!("the edited body is not a JSON object: {e}"))
                })?;
                let Some(object) = doc.as_object_mut() else {
                    return Err(Error::invalid("the edited body is not a JSON object"));
                };
                object.insert(name.clone(), value.clone());
                request.version_in_body().json(&doc)
            }
        };
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(Error::Status {
                status: response.status(),
                attempts: response.attempts().clone(),
            });
        }
        Ok((
            response.headers().get(ETAG).cloned(),
            response.attempts().clone(),
        ))
    }
}

/// Whether an earlier attempt of a write may have reached the server and been applied before
/// the retry was answered: it timed out, broke after sending, or met a server error. A 429,
/// 503 or 408 says the server did not process it; a connect failure sent nothing.
fn may_have_been_applied(attempts: &Attempts) -> bool {
    attempts.retries().iter().any(|retry| match retry.reason {
        RetryReason::Timeout | RetryReason::Transport => true,
        RetryReason::Status(status) => status.is_server_error() && status.as_u16() != 503,
        _ => false,
    })
}

fn is_strong_etag(etag: &HeaderValue) -> bool {
    let bytes = etag.as_bytes();
    bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"'
}

fn unversioned(reason: &str, attempts: Attempts) -> Error {
    Error::Unversioned {
        reason: reason.to_owned(),
        attempts,
    }
}
