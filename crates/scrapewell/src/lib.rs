//! A scraping client that keeps working against real sites: it retries what is transient,
//! refuses to repeat what is not, and never duplicates a write.
//!
//! Shaped like reqwest (`Client::builder()…build()`, `client.get(url).send().await?`), built on
//! reqwest, with the layers of [`scrapewell_core`] in between:
//!
//! ```text
//! Client::send
//!  └ trace span (one per logical request; an event per attempt)
//!    └ IdempotencyLayer — one key per logical POST / PATCH, reused by every attempt
//!      └ RetryLayer     — conflict-aware classification, backoff, deadline, retry budget
//!        └ RateLimitLayer — per-host pace: quotas, pauses, what the server says, in flight
//!          └ attempt timeout
//!            └ BlockDetectLayer — block pages recognised from status, headers, body prefix
//!              └ transport  — reqwest; redirects followed; the body read whole, within a cap
//! ```
//!
//! Around the stack, a host that blocked the client cools down (requests to it fail fast, or
//! wait), and a [`Rotate`] hook can hand out a fresh [`Identity`] to retry with.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), scrapewell::Error> {
//! let client = scrapewell::Client::new();
//!
//! // A page: 5xx, 429, timeouts and resets are retried; Retry-After is honoured.
//! let html = client.get("http://127.0.0.1:8080/page/1").send().await?.text().await?;
//!
//! // A write: it gets an Idempotency-Key, so it is retried safely and created once.
//! let created = client
//!     .post("http://127.0.0.1:8080/orders")
//!     .json(&serde_json::json!({ "ref": "A-1" }))
//!     .send()
//!     .await?;
//! println!("{} after {} attempts", created.status(), created.attempts().count());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod block;
mod body;
mod client;
mod cookies;
mod error;
mod origins;
mod request;
mod response;
mod transport;
mod update;

pub use block::{Identity, Rotate, WhileCooling};
pub use body::Body;
pub use client::{Client, ClientBuilder};
pub use cookies::CookieJar;
pub use error::Error;
pub use request::{IntoUrl, Pending, RequestBuilder};
pub use response::Response;
pub use transport::TransportError;
pub use update::{Update, UpdateError, Updated, VersionAt};

pub use scrapewell_core::block::{
    BlockKind, BlockVerdict, Detector, Evidence, Rule, RuleError, RuleSet, Strength, Target,
};
pub use scrapewell_core::idempotency::{KeyFormat, KeyStrategy};
#[cfg(feature = "redis")]
pub use scrapewell_core::ratelimit::RedisQuotaStore;
pub use scrapewell_core::ratelimit::{
    HostStats, InProcessQuotaStore, KeyBy, Quota, QuotaStore, QuotaStoreError, ReserveFuture,
    SharedQuota,
};
pub use scrapewell_core::retry::{Attempts, RetryReason, RetryRecord, TransientConflict};
pub use scrapewell_core::{ErrorBody, ProblemDetails};
