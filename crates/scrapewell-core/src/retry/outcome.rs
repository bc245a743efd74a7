//! What one attempt's result means, and the record of the attempts a request made.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::ProblemDetails;
use crate::block::BlockVerdict;
use crate::idempotency::IdempotencyKey;

/// What the retry layer does with one attempt's result: the verdict of a
/// [`Classify`](super::Classify) implementation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Hand the response (or the transport error) to the caller as it is.
    Done,
    /// Try again after a delay, for the given reason.
    Retry(RetryReason),
    /// A permanent conflict (duplicate create, state conflict): fail without retrying.
    Conflict(Option<Box<ProblemDetails>>),
    /// A conditional request (`If-Match`) met a newer version: fail with the current state, for a
    /// resolver to re-read and re-apply. Carries the problem details when the server declared
    /// its body one (`application/problem+json`).
    StaleVersion(Option<Box<ProblemDetails>>),
    /// A create-only request (`If-None-Match: *`) found the resource already there (412): never
    /// retried.
    AlreadyExists,
    /// The server requires a conditional write (428 Precondition Required): sending the same
    /// request again cannot help.
    PreconditionRequired(Option<Box<ProblemDetails>>),
    /// The response is a block page ([`BlockVerdict`]): sending the same request again would
    /// confirm the site's suspicion, so it is never retried blindly.
    Blocked(Box<BlockVerdict>),
    /// The request may or may not have been processed and cannot safely be sent again (a POST
    /// without an idempotency key that timed out or was reset after it was sent).
    OutcomeUnknown,
    /// The request was held back below the retry layer and never sent
    /// ([`TransportFailure::HeldBack`](super::TransportFailure::HeldBack)): the error goes to the
    /// caller, and the try is not counted as an attempt.
    HeldBack,
}

/// Why an attempt was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The connection failed before anything was sent.
    Connect,
    /// The server turned the request away unprocessed ([`TransportFailure::Refused`]).
    ///
    /// [`TransportFailure::Refused`]: super::TransportFailure::Refused
    Refused,
    /// The attempt timed out.
    Timeout,
    /// The connection broke after the request was sent (a reset, a truncated body), or the
    /// response was not HTTP.
    Transport,
    /// A status that is retryable for this request (408, 429, 500, 502, 503, 504).
    Status(StatusCode),
    /// A 409 Conflict that will clear by itself.
    Conflict(TransientConflict),
}

/// What marked a 409 Conflict as transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransientConflict {
    /// The server sent `Retry-After`.
    RetryAfter,
    /// The request's idempotency key is still being processed by an earlier attempt.
    KeyInFlight,
    /// The problem body says the resource is locked or the operation in progress.
    Locked,
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryReason::Connect => f.write_str("connect failed"),
            RetryReason::Refused => f.write_str("refused unprocessed"),
            RetryReason::Timeout => f.write_str("timeout"),
            RetryReason::Transport => f.write_str("connection broken"),
            RetryReason::Status(status) => write!(f, "status {}", status.as_u16()),
            RetryReason::Conflict(TransientConflict::RetryAfter) => {
                f.write_str("409 with Retry-After")
            }
            RetryReason::Conflict(TransientConflict::KeyInFlight) => {
                f.write_str("409 key in flight")
            }
            RetryReason::Conflict(TransientConflict::Locked) => f.write_str("409 locked"),
        }
    }
}

/// What happened to one logical request: how many attempts it took and why each retry was made.
///
/// Carried by every [`RetryError`](super::RetryError). On a response, the retry layer puts it in
/// the extensions only when the request was retried: a response answered on its first attempt
/// has none, which spares an allocation on the common path. [`Attempts::of`] and
/// [`Attempts::take`] read it either way.
///
/// # Example
///
/// ```
/// use scrapewell_core::retry::Attempts;
///
/// let response = http::Response::new(());
/// let attempts = Attempts::of(&response);
/// assert_eq!(attempts.count(), 1);
/// assert!(attempts.retries().is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    count: u32,
    /// Boxed, and only once there is something to keep: the record moves with every response
    /// and error, and most requests are answered at once and carry no key.
    kept: Option<Box<Kept>>,
}

/// What a record keeps beyond the count; never empty.
#[derive(Clone, Default, PartialEq, Eq)]
struct Kept {
    retries: Vec<RetryRecord>,
    key: Option<IdempotencyKey>,
}

/// One retry: after which attempt, why, and how long the layer waited before the next one.
///
/// # Example
///
/// ```
/// use scrapewell_core::retry::{Attempts, RetryReason, TransientConflict};
///
/// // What a scraper might log after each request.
/// fn report(attempts: &Attempts) {
///     for retry in attempts.retries() {
///         let why = match retry.reason {
///             RetryReason::Status(status) => format!("status {status}"),
///             RetryReason::Conflict(TransientConflict::RetryAfter) => "409 with Retry-After".into(),
///             RetryReason::Conflict(_) => "a transient 409".into(),
///             other => format!("{other}"),
///         };
///         let by = if retry.server_asked { "as the server asked" } else { "by backoff" };
///         println!("attempt {} retried ({why}) after {:?}, {by}", retry.attempt, retry.delay);
///     }
/// }
/// report(&Attempts::of(&http::Response::new(())));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryRecord {
    /// The attempt (1-based) whose result was retried.
    pub attempt: u32,
    /// Why it was retried.
    pub reason: RetryReason,
    /// The delay chosen before the next attempt.
    pub delay: Duration,
    /// Whether the delay came from the server (`Retry-After`) rather than the backoff schedule.
    pub server_asked: bool,
}

impl Attempts {
    /// The attempts recorded on a response that came through the retry layer: one attempt
    /// when the layer recorded none.
    pub fn of<B>(response: &http::Response<B>) -> Attempts {
        response
            .extensions()
            .get::<Attempts>()
            .cloned()
            .unwrap_or_else(Attempts::first)
    }

    /// Like [`of`](Self::of), taking the record out of the extensions instead of copying it.
    pub fn take(extensions: &mut http::Extensions) -> Attempts {
        extensions
            .remove::<Attempts>()
            .unwrap_or_else(Attempts::first)
    }

    fn first() -> Attempts {
        Attempts {
            count: 1,
            kept: None,
        }
    }

    /// A record for a request that carries `key`, before its first attempt.
    pub(crate) fn keyed(key: Option<IdempotencyKey>) -> Attempts {
        Attempts {
            count: 0,
            kept: key.map(|key| {
                Box::new(Kept {
                    retries: Vec::new(),
                    key: Some(key),
                })
            }),
        }
    }

    /// The number of attempts sent (at least 1 once a request was tried).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The retries, in order; `count() - 1` of them when the request was retried to the end.
    pub fn retries(&self) -> &[RetryRecord] {
        self.kept.as_ref().map_or(&[], |kept| &kept.retries)
    }

    /// The idempotency key every attempt carried, for a request that had one (recorded on its
    /// response, and on the error it failed with). After a failure that leaves a write's outcome
    /// unknown (a timeout, a deadline, a budget that ran out), sending it again with this key
    /// is safe: a server that keeps keys answers with what it did the first time.
    ///
    /// # Example
    ///
    /// ```
    /// use scrapewell_core::retry::RetryError;
    ///
    /// /// The key to send a failed write again with, if it had one.
    /// fn key_to_resend<E>(error: &RetryError<E>) -> Option<String> {
    ///     let key = error.attempts().idempotency_key()?;
    ///     key.as_str().map(str::to_owned)
    /// }
    /// # let _ = key_to_resend::<()>;
    /// ```
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.kept.as_ref().and_then(|kept| kept.key.as_ref())
    }

    pub(crate) fn begin_attempt(&mut self) -> u32 {
        self.count += 1;
        self.count
    }

    /// Uncounts the last attempt, which was never sent.
    pub(crate) fn held_back(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    pub(crate) fn record_retry(&mut self, record: RetryRecord) {
        self.kept.get_or_insert_default().retries.push(record);
    }
}

/// The number of an attempt after the first (2 or more), in the extensions of the request
/// [`RetryLayer`](super::RetryLayer) sends for it; a first attempt carries none. The rate
/// limiter lets such a request take a busy host's next free place before first attempts that
/// wait there: it finishes what a request already started. A retry layer of one's own can set
/// it too.
///
/// # Example
///
/// ```
/// use scrapewell_core::retry::RetryAttempt;
///
/// let mut request = http::Request::post("http://127.0.0.1/orders").body(()).unwrap();
/// request.extensions_mut().insert(RetryAttempt(2));
/// assert_eq!(request.extensions().get::<RetryAttempt>(), Some(&RetryAttempt(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAttempt(pub u32);

/// The key is shown redacted, as [`IdempotencyKey`]'s own `Debug` shows it.
impl fmt::Debug for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempts")
            .field("count", &self.count)
            .field("retries", &self.retries())
            .field("idempotency_key", &self.idempotency_key())
            .finish()
    }
}

/// The count with its noun, for messages: `1 attempt`, `3 attempts`.
///
/// ```
/// use scrapewell_core::retry::Attempts;
///
/// let attempts = Attempts::of(&http::Response::new(()));
/// assert_eq!(format!("after {attempts}"), "after 1 attempt");
/// ```
impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.count == 1 {
            "attempt"
        } else {
            "attempts"
        };
        write!(f, "{} {noun}", self.count)
    }
}
