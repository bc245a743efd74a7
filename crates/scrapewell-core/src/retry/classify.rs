//! The outcome table of DESIGN.md as a classifier the caller can swap.

use http::header::{IF_MATCH, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};

use super::{Outcome, RetryReason, TransientConflict};
use crate::block::BlockVerdict;
use crate::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
use crate::problem::body_says_transient;
use crate::timeout::Elapsed;
use crate::{InspectBody, ProblemDetails};

/// The result of one attempt, as the classifier sees it.
#[derive(Debug)]
pub enum AttemptResult<'a, B, E> {
    /// The server answered.
    Response(&'a Response<B>),
    /// The transport failed.
    Error(&'a E),
    /// The request's deadline passed during the attempt.
    TimedOut,
}

// By hand: a derive would ask `B` and `E` to be `Copy`, where only references are held.
impl<B, E> Clone for AttemptResult<'_, B, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B, E> Copy for AttemptResult<'_, B, E> {}

/// What the classifier needs to know about the request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestFacts {
    /// The request method.
    pub method: Method,
    /// Whether the request carries an idempotency key, so the server deduplicates it.
    pub has_idempotency_key: bool,
    /// Whether the request is conditional on the version it was computed from (`If-Match`,
    /// `If-Unmodified-Since`, or a version carried in the body: [`VersionInBody`]).
    pub conditional: bool,
    /// Whether the request may only create the resource (`If-None-Match: *`).
    pub create_only: bool,
    /// Whether the caller asked to receive block pages as responses ([`ReceiveBlocked`]).
    pub receive_blocked: bool,
    /// Whether an earlier attempt of this request went unanswered after it may have been sent
    /// (it timed out, or its connection broke): the server may still be processing it. Set by
    /// the retry layer between attempts.
    pub earlier_attempt_unanswered: bool,
}

/// In a request's extensions: hand a response recognised as a block page to the caller, with
/// its [`BlockVerdict`] in the extensions, instead of failing with
/// [`RetryError::Blocked`](super::RetryError::Blocked). It is not retried either way.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveBlocked;

/// In a request's extensions: the request writes back a version it read, carried in its body
/// (CouchDB's `_rev`) rather than in `If-Match`. A 409 or 412 to it then means a stale version,
/// as it does for `If-Match`, instead of a conflict.
///
/// # Example
///
/// ```
/// use scrapewell_core::retry::{RequestFacts, VersionInBody};
///
/// let mut request = http::Request::put("http://127.0.0.1/db/doc")
///     .body(r#"{"_rev":"3-abc","n":4}"#)
///     .unwrap();
/// request.extensions_mut().insert(VersionInBody);
/// assert!(RequestFacts::of(&request).conditional);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionInBody;

impl RequestFacts {
    /// Reads the facts off a request.
    pub fn of<B>(request: &Request<B>) -> Self {
        Self::with_key(request).0
    }

    /// The facts, and the request's idempotency key if it has one, in one pass.
    pub(crate) fn with_key<B>(request: &Request<B>) -> (Self, Option<IdempotencyKey>) {
        let extensions = request.extensions();
        let mut key = extensions.get::<IdempotencyKey>().cloned();
        let mut facts = RequestFacts {
            method: request.method().clone(),
            has_idempotency_key: key.is_some(),
            conditional: extensions.get::<VersionInBody>().is_some(),
            create_only: false,
            receive_blocked: extensions.get::<ReceiveBlocked>().is_some(),
            earlier_attempt_unanswered: false,
        };
        // One pass over the headers rather than a hashed lookup of each of four names: a
        // request has few headers, often none.
        for (name, value) in request.headers() {
            if name == IDEMPOTENCY_KEY {
                facts.has_idempotency_key = true;
                key.get_or_insert_with(|| IdempotencyKey(value.clone()));
            } else if name == IF_MATCH || name == IF_UNMODIFIED_SINCE {
                facts.conditional = true;
            } else if name == IF_NONE_MATCH && value.as_bytes().trim_ascii() == b"*" {
                facts.create_only = true;
            }
        }
        (facts, key)
    }

    /// Whether sending the request twice does no more than sending it once: an idempotent
    /// method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or a request with an idempotency key.
    pub fn replay_safe(&self) -> bool {
        self.has_idempotency_key
            || matches!(
                self.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
    }
}

/// How far a transport failure got, which decides whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportFailure {
    /// Nothing reached the server (connection refused, DNS failure): always safe to retry.
    NotSent,
    /// The server turned the request away before processing any of it (an HTTP/2 stream reset
    /// with `REFUSED_STREAM`, or one a graceful `GOAWAY` left out): always safe to retry, and
    /// the first time at once, without the backoff.
    Refused,
    /// The request may have reached the server (timeout, reset, truncated response).
    AfterSend,
    /// The attempt took longer than its timeout: it may have reached the server.
    TimedOut,
    /// Retrying cannot help (an invalid request, a response over the size cap).
    Permanent,
    /// A layer below the retry layer held the request back, unsent (a host its server paused
    /// for longer than requests wait): not an attempt, and not retried.
    HeldBack,
}

/// A transport error that can say how far the request got.
///
/// # Example
///
/// ```
/// use scrapewell_core::retry::{ClassifyError, TransportFailure};
///
/// #[derive(Debug)]
/// enum MyError { Refused, Reset }
///
/// impl ClassifyError for MyError {
///     fn transport_failure(&self) -> TransportFailure {
///         match self {
///             MyError::Refused => TransportFailure::NotSent,
///             MyError::Reset => TransportFailure::AfterSend,
///         }
///     }
/// }
/// ```
pub trait ClassifyError {
    /// How far the failed attempt got.
    fn transport_failure(&self) -> TransportFailure;
}

/// A refused connection was not sent; any other I/O error may have been.
impl ClassifyError for std::io::Error {
    fn transport_failure(&self) -> TransportFailure {
        match self.kind() {
            std::io::ErrorKind::ConnectionRefused => TransportFailure::NotSent,
            _ => TransportFailure::AfterSend,
        }
    }
}

/// Boxed errors (`tower::BoxError`) are classified by the first [`Elapsed`] or I/O error in
/// their chain, and count as after-send when there is none.
impl ClassifyError for Box<dyn std::error::Error + Send + Sync> {
    fn transport_failure(&self) -> TransportFailure {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.as_ref());
        while let Some(err) = cause {
            if err.is::<Elapsed>() {
                return TransportFailure::TimedOut;
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return io.transport_failure();
            }
            cause = err.source();
        }
        TransportFailure::AfterSend
    }
}

/// Turns one attempt's result into an [`Outcome`].
///
/// [`ConflictAware`] implements DESIGN.md's outcome table; implement this trait to change it.
///
/// # Example
///
/// A classifier that never retries:
///
/// ```
/// use scrapewell_core::retry::{AttemptResult, Classify, Outcome, RequestFacts};
///
/// #[derive(Debug)]
/// struct Never;
///
/// impl<B, E> Classify<B, E> for Never {
///     fn classify(&self, _: &RequestFacts, _: AttemptResult<'_, B, E>) -> Outcome {
///         Outcome::Done
///     }
/// }
/// ```
pub trait Classify<B, E>: Send + Sync + 'static {
    /// The outcome of one attempt of `request`.
    fn classify(&self, request: &RequestFacts, result: AttemptResult<'_, B, E>) -> Outcome;
}

/// The default classifier: DESIGN.md's outcome table.
///
/// | result | replay-safe (idempotent method, or a key) | POST / PATCH without a key |
/// |---|---|---|
/// | connect failed, or refused unprocessed | retry | retry |
/// | attempt timeout, reset after sending, a response that is not HTTP | retry | outcome unknown |
/// | 408, 500, 502, 504 | retry | done |
/// | 429 | retry | retry |
/// | 503 | retry | retry with `Retry-After`, else done |
/// | 409 transient (Retry-After, key in flight, locked; to a keyed request, any 409 after an attempt that went unanswered) | retry | retry with `Retry-After`, else conflict |
/// | 409 / 412 to a conditional request (`If-Match`, [`VersionInBody`]) | stale version | stale version |
/// | 412 to a create-only request (`If-None-Match: *`) | already exists | already exists |
/// | 428 | precondition required | precondition required |
/// | other 409 | conflict | conflict |
/// | a block page ([`BlockVerdict`] in the extensions) | blocked | blocked |
/// | anything else | done | done |
///
/// # Example
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use scrapewell_core::retry::{AttemptResult, Classify, ConflictAware, Outcome, RequestFacts, RetryReason};
///
/// let request = Request::get("http://example.com/").body(()).unwrap();
/// let response = Response::builder().status(502).body(bytes::Bytes::new()).unwrap();
/// let outcome = <ConflictAware as Classify<_, std::io::Error>>::classify(
///     &ConflictAware,
///     &RequestFacts::of(&request),
///     AttemptResult::Response(&response),
/// );
/// assert_eq!(outcome, Outcome::Retry(RetryReason::Status(StatusCode::BAD_GATEWAY)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ConflictAware;

impl<B, E> Classify<B, E> for ConflictAware
where
    B: InspectBody,
    E: ClassifyError,
{
    fn classify(&self, request: &RequestFacts, result: AttemptResult<'_, B, E>) -> Outcome {
        let replay_safe = request.replay_safe();
        let response = match result {
            AttemptResult::Response(response) => response,
            AttemptResult::Error(error) => {
                return match error.transport_failure() {
                    TransportFailure::NotSent => Outcome::Retry(RetryReason::Connect),
                    TransportFailure::Refused => Outcome::Retry(RetryReason::Refused),
                    TransportFailure::AfterSend if replay_safe => {
                        Outcome::Retry(RetryReason::Transport)
                    }
                    TransportFailure::AfterSend => Outcome::OutcomeUnknown,
                    TransportFailure::TimedOut if replay_safe => {
                        Outcome::Retry(RetryReason::Timeout)
                    }
                    TransportFailure::TimedOut => Outcome::OutcomeUnknown,
                    TransportFailure::Permanent => Outcome::Done,
                    TransportFailure::HeldBack => Outcome::HeldBack,
                };
            }
            AttemptResult::TimedOut if replay_safe => return Outcome::Retry(RetryReason::Timeout),
            AttemptResult::TimedOut => return Outcome::OutcomeUnknown,
        };
        if let Some(verdict) = response.extensions().get::<BlockVerdict>() {
            return if request.receive_blocked {
                Outcome::Done
            } else {
                Outcome::Blocked(Box::new(verdict.clone()))
            };
        }
        let status = response.status();
        // Looked up only for the statuses it decides: most responses are not one of them.
        let has_retry_after = || response.headers().contains_key(RETRY_AFTER);
        match status {
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED if request.conditional => {
                Outcome::StaleVersion(declared_problem(response))
            }
            StatusCode::PRECONDITION_FAILED if request.create_only => Outcome::AlreadyExists,
            StatusCode::PRECONDITION_REQUIRED => {
                Outcome::PreconditionRequired(declared_problem(response))
            }
            StatusCode::CONFLICT => classify_conflict(request, response, has_retry_after()),
            StatusCode::TOO_MANY_REQUESTS => Outcome::Retry(RetryReason::Status(status)),
            StatusCode::SERVICE_UNAVAILABLE if replay_safe || has_retry_after() => {
                Outcome::Retry(RetryReason::Status(status))
            }
            StatusCode::REQUEST_TIMEOUT
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
                if replay_safe =>
            {
                Outcome::Retry(RetryReason::Status(status))
            }
            _ => Outcome::Done,
        }
    }
}

fn declared_problem<B: InspectBody>(response: &Response<B>) -> Option<Box<ProblemDetails>> {
    let body = response.body().inspect().unwrap_or_default();
    ProblemDetails::from_declared(response.headers(), body).map(Box::new)
}

fn classify_conflict<B: InspectBody>(
    request: &RequestFacts,
    response: &Response<B>,
    has_retry_after: bool,
) -> Outcome {
    let body = response.body().inspect().unwrap_or_default();
    let problem = ProblemDetails::from_response(response.headers(), body);
    let signal = if has_retry_after {
        Some(TransientConflict::RetryAfter)
    } else if body_says_transient(response.headers(), body, problem.as_ref()) {
        Some(if request.has_idempotency_key {
            TransientConflict::KeyInFlight
        } else {
            TransientConflict::Locked
        })
    } else if request.has_idempotency_key && request.earlier_attempt_unanswered {
        // The idempotency-key draft answers a request whose key is still being processed with
        // a 409, in words of the server's own: an earlier attempt that went unanswered may be
        // that request, whatever this body says.
        Some(TransientConflict::KeyInFlight)
    } else {
        None
    };
    match signal {
        Some(signal) if request.replay_safe() || signal == TransientConflict::RetryAfter => {
            Outcome::Retry(RetryReason::Conflict(signal))
        }
        _ => Outcome::Conflict(problem.map(Box::new)),
    }
}
