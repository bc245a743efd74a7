//! The one error type of the client.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use scrapewell_core::block::BlockVerdict;
use scrapewell_core::retry::{Attempts, RetryError, RetryReason};
use scrapewell_core::{ErrorBody, Lasting, ProblemDetails};

use crate::TransportError;

/// Why a request failed. Every variant of a request that was sent carries the [`Attempts`]
/// made; match on the variants, or ask with [`is_conflict`](Self::is_conflict),
/// [`is_timeout`](Self::is_timeout) and friends.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), scrapewell::Error> {
/// let client = scrapewell::Client::new();
/// match client.post("http://127.0.0.1:8080/orders").json(&serde_json::json!({"ref": 1})).send().await {
///     Ok(response) => println!("created: {}", response.status()),
///     Err(scrapewell::Error::Conflict { problem, .. }) => {
///         println!("already exists: {}", problem.and_then(|p| p.title).unwrap_or_default())
///     }
///     Err(scrapewell::Error::OutcomeUnknown { .. }) => println!("check before sending again"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be built (an invalid URL, a header with CR/LF, a body that does
    /// not serialize); nothing was sent.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The client could not be built.
    #[error("invalid client configuration: {reason}")]
    Config {
        /// What is wrong with it.
        reason: String,
    },
    /// A permanent 409 Conflict (duplicate create, state conflict), or a transient one that
    /// outlasted the attempts. Never retried blindly.
    #[error("conflict ({status}){}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Conflict {
        /// The status (409).
        status: StatusCode,
        /// The server's RFC 9457 problem details, when the body had them.
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// A conditional write (`If-Match`, or a version in the body) met a newer version (409 or
    /// 412). From [`Client::update`](crate::Client::update), it means the rounds ran out under
    /// contention, and `etag` and `current` are the last state read.
    #[error("stale version ({status}): the resource changed since it was read")]
    StaleVersion {
        /// The status (409 or 412).
        status: StatusCode,
        /// The current version's ETag, when known.
        etag: Option<HeaderValue>,
        /// The current state, when known: the server's answer, or the last state read.
        current: Option<ErrorBody>,
        /// The server's problem details, when it sent a problem document.
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made by the last write.
        attempts: Attempts,
    },
    /// A create-only request ([`create_only`](crate::RequestBuilder::create_only),
    /// `If-None-Match: *`) found the resource already there (412). Never retried.
    #[error("already exists ({status})")]
    AlreadyExists {
        /// The status (412).
        status: StatusCode,
        /// The existing version's ETag, when the server sent it.
        etag: Option<HeaderValue>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The server accepts only conditional writes (428 Precondition Required): write with
    /// [`Client::update`](crate::Client::update), which reads the version and sends `If-Match`.
    #[error(
        "precondition required ({status}): the server accepts only conditional writes; use Client::update"
    )]
    PreconditionRequired {
        /// The status (428).
        status: StatusCode,
        /// The server's problem details, when it sent a problem document.
        problem: Option<Box<ProblemDetails>>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// [`Client::update`](crate::Client::update) read a resource without a version it can write
    /// back: no strong ETag (a weak `W/` one cannot be used with `If-Match`), or no version
    /// member in the body. Nothing was written.
    #[error("cannot write conditionally: {reason}")]
    Unversioned {
        /// What was missing.
        reason: String,
        /// The attempts made by the read.
        attempts: Attempts,
    },
    /// The site answered with a block page (a challenge, a captcha, access denied), or the
    /// host is cooling down after one. Never retried blindly: only with a fresh identity from
    /// the client's [`Rotate`](crate::Rotate) hook, when it has one.
    #[error("blocked{}: {verdict}", status.map(|s| format!(" ({s})")).unwrap_or_else(|| format!(" (host cooling down for {})", Lasting(cooling_for.unwrap_or_default()))))]
    Blocked {
        /// The status of the block page; `None` when nothing was sent because the host is
        /// cooling down.
        status: Option<StatusCode>,
        /// Who blocked, how, and on what evidence.
        verdict: Box<BlockVerdict>,
        /// The cool-down left, when the request failed fast because of it.
        cooling_for: Option<Duration>,
        /// The attempts made (none when it failed fast).
        attempts: Attempts,
    },
    /// The server kept refusing for load (429, 503 with `Retry-After`) until the attempts ran
    /// out.
    #[error("rate limited ({status}) after {attempts}")]
    RateLimited {
        /// The last status.
        status: StatusCode,
        /// The delay the server last asked for.
        retry_after: Option<Duration>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The server asked to wait longer than the configured cap.
    #[error("server asked to retry after {value:?} ({}), over the cap of {}", Lasting(*requested), Lasting(*cap))]
    RetryAfterTooLong {
        /// The status of the response that asked.
        status: StatusCode,
        /// The server's `Retry-After` value.
        value: String,
        /// The delay it asked for.
        requested: Duration,
        /// The configured cap.
        cap: Duration,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The host is paused: its server asked (with `Retry-After`, or a rate-limit budget at
    /// zero) to be left alone for longer than the `Retry-After` cap, so the request failed at
    /// once instead of waiting, and its last attempt was not sent. A pause within the cap is
    /// waited out.
    #[error(
        "host paused by its server ({status}) for another {}, over the cap of {}; tried \
         again in {}",
        Lasting(*remaining),
        Lasting(*cap),
        Lasting(*held)
    )]
    HostPaused {
        /// The status of the answer that asked for the pause.
        status: StatusCode,
        /// What is left of the pause the server asked for.
        remaining: Duration,
        /// The configured cap on `Retry-After`.
        cap: Duration,
        /// What is left of the client's own hold on the host (at most the rate limiter's
        /// `max_pause`, a minute by default): the first request after it is sent.
        held: Duration,
        /// The attempts made; the last one was not sent.
        attempts: Attempts,
    },
    /// The last attempt took longer than the attempt timeout.
    #[error("timed out: attempt {} exceeded {timeout:?}", attempts.count())]
    Timeout {
        /// The per-attempt timeout.
        timeout: Duration,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The request's total deadline passed.
    #[error("deadline of {deadline:?} exceeded after {attempts}")]
    Deadline {
        /// The deadline.
        deadline: Duration,
        /// The attempts made.
        attempts: Attempts,
    },
    /// A POST or PATCH without an idempotency key timed out or broke after it was sent: it may
    /// have been processed, and sending it again could duplicate it. From
    /// [`Client::update`](crate::Client::update): a write attempt may have been applied before
    /// its retry met a newer version, so applying the edit again could apply it twice.
    #[error("outcome unknown: the request may have been processed, and repeating it is not safe")]
    OutcomeUnknown {
        /// The transport error, or `None` when the attempt timed out.
        #[source]
        source: Option<TransportError>,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The client's retry budget refused a retry.
    #[error("retry budget exhausted; last attempt: {reason}")]
    BudgetExhausted {
        /// Why the refused retry was wanted.
        reason: RetryReason,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The response body is larger than the configured maximum.
    #[error("response body over the cap of {limit} bytes")]
    BodyTooLarge {
        /// The cap.
        limit: u64,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The request failed in a way that would have been retried, but its body is a stream that
    /// can be sent only once.
    #[error("not retried: the request body is a stream and cannot be sent again")]
    NotReplayable {
        /// The failure of the only attempt.
        #[source]
        source: TransportError,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The transport failed on the last attempt (or, in streaming mode, while the body was
    /// being read: nothing past the headers is retried).
    #[error("transport error after {attempts}")]
    Transport {
        /// The transport error.
        #[source]
        source: TransportError,
        /// The attempts made.
        attempts: Attempts,
    },
    /// [`Response::error_for_status`](crate::Response::error_for_status) met a 4xx or 5xx.
    #[error("HTTP status {status}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The attempts made.
        attempts: Attempts,
    },
    /// The response body is not the JSON that was asked for.
    #[error("response body is not the expected JSON")]
    Decode {
        /// The decoding error.
        #[source]
        source: serde_json::Error,
        /// The body as it came, whole: an HTML page where JSON was expected (a challenge, a
        /// login form) is not lost with the error.
        body: ErrorBody,
        /// The attempts made.
        attempts: Attempts,
    },
}

/// `body` read as JSON, or the error that keeps it.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    body: Bytes,
    attempts: &Attempts,
) -> Result<T, Error> {
    serde_json::from_slice(&body).map_err(|source| Error::Decode {
        source,
        body: ErrorBody::from(body),
        attempts: attempts.clone(),
    })
}

impl Error {
    /// The attempts made; `None` when the request was never sent.
    pub fn attempts(&self) -> Option<&Attempts> {
        match self {
            Error::InvalidRequest { .. } | Error::Config { .. } => None,
            Error::Conflict { attempts, .. }
            | Error::StaleVersion { attempts, .. }
            | Error::AlreadyExists { attempts, .. }
            | Error::PreconditionRequired { attempts, .. }
            | Error::Unversioned { attempts, .. }
            | Error::Blocked { attempts, .. }
            | Error::RateLimited { attempts, .. }
            | Error::RetryAfterTooLong { attempts, .. }
            | Error::HostPaused { attempts, .. }
            | Error::Timeout { attempts, .. }
            | Error::Deadline { attempts, .. }
            | Error::OutcomeUnknown { attempts, .. }
            | Error::BudgetExhausted { attempts, .. }
            | Error::BodyTooLarge { attempts, .. }
            | Error::NotReplayable { attempts, .. }
            | Error::Transport { attempts, .. }
            | Error::Status { attempts, .. }
            | Error::Decode { attempts, .. } => Some(attempts),
        }
    }

    /// The HTTP status behind the error, when a response caused it.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Conflict { status, .. }
            | Error::StaleVersion { status, .. }
            | Error::AlreadyExists { status, .. }
            | Error::PreconditionRequired { status, .. }
            | Error::RateLimited { status, .. }
            | Error::RetryAfterTooLong { status, .. }
            | Error::Status { status, .. } => Some(*status),
            Error::Blocked { status, .. } => *status,
            _ => None,
        }
    }

    /// A 409 that was not retried, or outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// A create-only request found the resource already there.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// A conditional write met a newer version (or [`Client::update`](crate::Client::update)
    /// ran out of rounds).
    pub fn is_stale_version(&self) -> bool {
        matches!(self, Error::StaleVersion { .. })
    }

    /// A block page, or a host cooling down after one; the verdict says who blocked and how.
    pub fn block_verdict(&self) -> Option<&BlockVerdict> {
        match self {
            Error::Blocked { verdict, .. } => Some(verdict),
            _ => None,
        }
    }

    /// An attempt timeout or the deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Deadline { .. })
    }

    /// A failure to connect on the last attempt.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                source: TransportError::Connect(_),
                ..
            }
        )
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            reason: reason.into(),
        }
    }
}

impl From<RetryError<TransportError>> for Error {
    fn from(error: RetryError<TransportError>) -> Self {
        match error {
            RetryError::Conflict {
                status,
                problem,
                attempts,
            } => Error::Conflict {
                status,
                problem,
                attempts,
            },
            RetryError::StaleVersion {
                status,
                etag,
                current,
                problem,
                attempts,
            } => Error::StaleVersion {
                status,
                etag,
                current,
                problem,
                attempts,
            },
            RetryError::AlreadyExists {
                status,
                etag,
                attempts,
            } => Error::AlreadyExists {
                status,
                etag,
                attempts,
            },
            RetryError::PreconditionRequired {
                status,
                problem,
                attempts,
            } => Error::PreconditionRequired {
                status,
                problem,
                attempts,
            },
            RetryError::Blocked {
                status,
                verdict,
                attempts,
            } => Error::Blocked {
                status: Some(status),
                verdict,
                cooling_for: None,
                attempts,
            },
            RetryError::RateLimited {
                status,
                retry_after,
                attempts,
            } => Error::RateLimited {
                status,
                retry_after,
                attempts,
            },
            RetryError::RetryAfterTooLong {
                status,
                value,
                requested,
                cap,
                attempts,
            } => Error::RetryAfterTooLong {
                status,
                value,
                requested,
                cap,
                attempts,
            },
            RetryError::DeadlineExceeded { deadline, attempts } => {
                Error::Deadline { deadline, attempts }
            }
            RetryError::OutcomeUnknown { source, attempts } => {
                Error::OutcomeUnknown { source, attempts }
            }
            RetryError::BudgetExhausted { reason, attempts } => {
                Error::BudgetExhausted { reason, attempts }
            }
            RetryError::NotReplayable { source, attempts } => {
                Error::NotReplayable { source, attempts }
            }
            RetryError::Transport {
                source: TransportError::BodyTooLarge { limit },
                attempts,
            } => Error::BodyTooLarge { limit, attempts },
            RetryError::Transport {
                source: TransportError::TimedOut(elapsed),
                attempts,
            } => Error::Timeout {
                timeout: elapsed.after(),
                attempts,
            },
            RetryError::Transport {
                source: TransportError::HostPaused(paused),
                attempts,
            } => Error::HostPaused {
                status: paused.status,
                remaining: paused.remaining,
                cap: paused.longest,
                held: paused.held,
                attempts,
            },
            RetryError::Transport { source, attempts } => Error::Transport { source, attempts },
        }
    }
}
