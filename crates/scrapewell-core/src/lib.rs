//! Tower middleware for scrapers that must keep working against real sites.
//!
//! - [`retry`]: conflict-aware retry. Tells a transient 409 (a lock, a request in flight) from
//!   a permanent one, honours `Retry-After` within a cap, never repeats a write that is not
//!   safe to repeat, and draws on a shared retry budget.
//! - [`idempotency`]: one `Idempotency-Key` per logical POST / PATCH, reused by every attempt.
//! - [`ratelimit`]: per-host pacing on governor's GCRA, learning from 429s, `Retry-After` and
//!   every generation of rate-limit headers, in one bounded table shared by all requests.
//! - [`block`]: recognises block pages (Cloudflare, DataDome, Akamai, … and soft blocks) from
//!   a bounded prefix of the body, passing the body on intact.
//! - [`timeout`]: a time limit on each attempt, below the layers that hold requests back.
//!
//! The layers are generic over `http::Request<B>` / `http::Response<B>` and never name a
//! particular client: the request body must be [`ReplayBody`] (so it can be sent again) and the
//! response body [`InspectBody`] (so a 409's problem details can be read).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use scrapewell_core::{idempotency::IdempotencyLayer, retry::{RetryLayer, RetryPolicy}};
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new())
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .service_fn(|_: Request<Bytes>| async {
//!         Ok::<_, tower::BoxError>(Response::new(Bytes::new()))
//!     });
//! # let _ = service;
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod block;
mod body;
mod error_body;
pub mod idempotency;
mod lasting;
mod media;
mod problem;
pub mod ratelimit;
pub mod retry;
pub mod timeout;

pub use body::{InspectBody, ReplayBody, try_clone_request};
pub use error_body::ErrorBody;
pub use lasting::Lasting;
pub use problem::ProblemDetails;
