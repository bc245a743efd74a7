//! The ways a request can fail in the retry layer.

use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::{Attempts, RetryReason};
use crate::block::BlockVerdict;
use crate::{ErrorBody, Lasting, ProblemDetails};

/// Why a request failed after the retry layer was done with it. Every variant carries the
/// [`Attempts`] made.
///
/// Deliberately exhaustive: a client that maps these to its own errors should fail to build
/// when a failure is added, not map it to a wrong one.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use scrapewell_core::retry::{RetryError, RetryLayer, RetryPolicy};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A duplicate create: a permanent 409 with problem details.
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryPolicy::default()))
///     .service_fn(|_: Request<Bytes>| async {
///         let body = r#"{"title":"Order already exists","detail":"ref 7 was created before"}"#;
///         let response = Response::builder()
///             .status(StatusCode::CONFLICT)
///             .header("content-type", "application/problem+json")
///             .body(Bytes::from_static(body.as_bytes()))
///             .unwrap();
///         Ok::<_, std::io::Error>(response)
///     });
/// let request = Request::post("http://127.0.0.1/orders").body(Bytes::new()).unwrap();
/// match service.oneshot(request).await {
///     Err(RetryError::Conflict { problem: Some(problem), attempts, .. }) => {
///         assert_eq!(problem.title.as_deref(), Some("Order already exists"));
///         assert_eq!(attempts.count(), 1);
///     }
///     other => panic!("expected the conflict, got {other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// A permanent conflict (or a transient one that outlasted the attempts): never retried
    /// blindly. Carries the server's problem details when the body had them.
    #[error("conflict ({status}){}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Conflict {
        /// The response status (409).
        status: StatusCode,
        /// The parsed RFC 9457 problem details, when the body had them.
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// A conditional request met a newer version of the resource (409 or 412 to `If-Match`).
    #[error("stale version ({status}): the resource changed since it was read")]
    StaleVersion {
        /// The response status (409 or 412).
        status: StatusCode,
        /// The current version's ETag, when the server sent it.
        etag: Option<HeaderValue>,
        /// The response body: the current state, when the server sent it (and not a problem
        /// document).
        current: Option<ErrorBody>,
        /// The problem details, when the server declared its body one
        /// (`application/problem+json`).
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// A create-only request (`If-None-Match: *`) found the resource already there (412).
    /// Never retried: it will not go away.
    #[error("already exists ({status}): the create-only request found the resource there")]
    AlreadyExists {
        /// The response status (412).
        status: StatusCode,
        /// The existing version's ETag, when the server sent it.
        etag: Option<HeaderValue>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The server requires the write to be conditional (428 Precondition Required): send it
    /// with `If-Match` and the version it was computed from.
    #[error(
        "precondition required ({status}): the server only accepts conditional writes (If-Match)"
    )]
    PreconditionRequired {
        /// The response status (428).
        status: StatusCode,
        /// The server's problem details, when it declared its body one.
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The response is a block page: never retried blindly with the same request.
    #[error("blocked ({status}): {verdict}")]
    Blocked {
        /// The response status.
        status: StatusCode,
        /// Who blocked, how, and on what evidence.
        verdict: Box<BlockVerdict>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The server kept refusing for load (429, or 503 with `Retry-After`) until the attempts ran
    /// out.
    #[error("rate limited ({status}) after {attempts}")]
    RateLimited {
        /// The last status (429 or 503).
        status: StatusCode,
        /// The delay the server last asked for, when it said.
        retry_after: Option<Duration>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The server asked for a longer wait than the configured cap.
    #[error("server asked to retry after {value:?} ({}), over the cap of {}", Lasting(*requested), Lasting(*cap))]
    RetryAfterTooLong {
        /// The status of the response that asked.
        status: StatusCode,
        /// The header value as the server sent it.
        value: String,
        /// The delay it asked for.
        requested: Duration,
        /// The configured cap.
        cap: Duration,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The total time budget ran out, during an attempt or before a retry could be made.
    #[error("deadline of {deadline:?} exceeded after {attempts}")]
    DeadlineExceeded {
        /// The configured deadline.
        deadline: Duration,
        /// The attempts made.
        attempts: Attempts,
    },
    /// A request that is not safe to repeat (POST / PATCH without an idempotency key) timed
    /// out or broke after it was sent: the server may or may not have processed it.
    #[error("outcome unknown: the request may have been processed, and repeating it is not safe")]
    OutcomeUnknown {
        /// The transport error, or `None` when the deadline cut the attempt short.
        #[source]
        source: Option<E>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The client's retry budget refused the retry (too many retries for the recent traffic).
    #[error("retry budget exhausted; last attempt: {reason}")]
    BudgetExhausted {
        /// Why the refused retry was wanted.
        reason: RetryReason,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The attempt failed in a retryable way, but the request body is a stream that can only
    /// be sent once.
    #[error("not retried: the request body is a stream and cannot be sent again")]
    NotReplayable {
        /// The transport error of the only attempt.
        #[source]
        source: E,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The transport failed on the last attempt.
    #[error("transport error after {attempts}")]
    Transport {
        /// The transport error.
        #[source]
        source: E,
        /// The attempts made.
        attempts: Attempts,
    },
}

impl<E> RetryError<E> {
    /// The attempts made before the request failed.
    pub fn attempts(&self) -> &Attempts {
        match self {
            RetryError::Conflict { attempts, .. }
            | RetryError::StaleVersion { attempts, .. }
            | RetryError::AlreadyExists { attempts, .. }
            | RetryError::PreconditionRequired { attempts, .. }
            | RetryError::Blocked { attempts, .. }
            | RetryError::RateLimited { attempts, .. }
            | RetryError::RetryAfterTooLong { attempts, .. }
            | RetryError::DeadlineExceeded { attempts, .. }
            | RetryError::OutcomeUnknown { attempts, .. }
            | RetryError::BudgetExhausted { attempts, .. }
            | RetryError::NotReplayable { attempts, .. }
            | RetryError::Transport { attempts, .. } => attempts,
        }
    }
}
