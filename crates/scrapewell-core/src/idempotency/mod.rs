//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header).
//!
//! POST and PATCH requests get an `Idempotency-Key` unless the caller set one; safe and
//! idempotent methods never do. The key is generated once per logical request: put this layer
//! outside the retry layer, and every attempt carries the same key.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use scrapewell_core::idempotency::IdempotencyLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut service = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new())
//!     .service_fn(|request: Request<Bytes>| async move {
//!         let key = request.headers().get("idempotency-key").cloned();
//!         Ok::<_, std::convert::Infallible>(Response::new(key))
//!     });
//! let post = Request::post("http://127.0.0.1/orders").body(Bytes::from("{}")).unwrap();
//! let key = service.ready().await.unwrap().call(post).await.unwrap().into_body();
//! assert_eq!(key.unwrap().len(), 38); // "<uuid>", quoted
//! # }
//! ```

mod key;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Method, Request};
use tower::Service;

pub use key::{IdempotencyKey, KeyFormat, KeyStrategy};
pub use layer::IdempotencyLayer;

use crate::ReplayBody;

/// The standard header name, `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Put in a request's extensions to send it without an idempotency key.
///
/// # Example
///
/// ```
/// use scrapewell_core::idempotency::WithoutKey;
///
/// let mut request = http::Request::post("http://127.0.0.1/legacy").body(()).unwrap();
/// request.extensions_mut().insert(WithoutKey);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WithoutKey;

/// Adds an idempotency key to POST and PATCH requests that have none.
///
/// A key the caller set is kept as it is; a request carrying [`WithoutKey`] gets none. When the
/// key travels under another header name, it is also put in the request's extensions as an
/// [`IdempotencyKey`], which tells the retry layer the request is safe to repeat.
///
/// # Clone
///
/// The key settings sit behind an `Arc` shared by clones.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use scrapewell_core::idempotency::IdempotencyLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // The inner service answers with the key it was sent, if any.
/// let service = ServiceBuilder::new()
///     .layer(IdempotencyLayer::new())
///     .service_fn(|request: Request<Bytes>| async move {
///         let key = request.headers().get("idempotency-key").cloned();
///         Ok::<_, std::convert::Infallible>(Response::new(key))
///     });
/// let post = Request::post("http://127.0.0.1/orders").body(Bytes::new()).unwrap();
/// let key = service.clone().oneshot(post).await.unwrap().into_body().unwrap();
/// // A Structured Field string: a UUID v4 in quotes.
/// assert_eq!(key.len(), 38);
/// assert!(key.to_str().unwrap().starts_with('"'));
///
/// let get = Request::get("http://127.0.0.1/orders").body(Bytes::new()).unwrap();
/// assert!(service.oneshot(get).await.unwrap().into_body().is_none());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Idempotency<S> {
    inner: S,
    config: Arc<KeyConfig>,
}

#[derive(Debug, Clone)]
struct KeyConfig {
    enabled: bool,
    strategy: KeyStrategy,
    format: KeyFormat,
    header: HeaderName,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            enabled: true,
            strategy: KeyStrategy::Random,
            format: KeyFormat::StructuredString,
            header: IDEMPOTENCY_KEY,
        }
    }
}

impl<S> Idempotency<S> {
    /// Wraps `inner` with the default settings of [`IdempotencyLayer::new`].
    pub fn new(inner: S) -> Self {
        Self::from_shared(inner, Arc::new(KeyConfig::default()))
    }

    fn from_shared(inner: S, config: Arc<KeyConfig>) -> Self {
        Idempotency { inner, config }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Gives `request` the key [`Service::call`] would, without calling the inner service:
    /// for a caller that calls it through another way, such as
    /// [`Retry::call_shared`](crate::retry::Retry::call_shared).
    ///
    /// ```
    /// use scrapewell_core::idempotency::Idempotency;
    ///
    /// let layer = Idempotency::new(());
    /// let mut post = http::Request::post("http://127.0.0.1/orders").body(bytes::Bytes::new()).unwrap();
    /// layer.add_key(&mut post);
    /// assert!(post.headers().contains_key("idempotency-key"));
    /// ```
    #[inline(always)]
    pub fn add_key<B: ReplayBody>(&self, request: &mut Request<B>) {
        let config = &*self.config;
        if config.enabled
            && matches!(*request.method(), Method::POST | Method::PATCH)
            && request.extensions().get::<WithoutKey>().is_none()
        {
            if !request.headers().contains_key(&config.header) {
                let generated = key::generate(request, config.strategy, config.format);
                request
                    .headers_mut()
                    .insert(config.header.clone(), generated);
            }
            // Inner layers recognise the standard header by itself; a key under another name is
            // recorded so that they know the request is deduplicated too.
            if config.header != IDEMPOTENCY_KEY
                && let Some(value) = request.headers().get(&config.header).cloned()
            {
                request.extensions_mut().insert(IdempotencyKey(value));
            }
        }
    }
}

impl<S, B> Service<Request<B>> for Idempotency<S>
where
    S: Service<Request<B>>,
    B: ReplayBody,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.add_key(&mut request);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderValue, Response};
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    async fn key_seen(layer: IdempotencyLayer, request: Request<Bytes>) -> Option<HeaderValue> {
        let (service, mut handle) = mock::pair::<Request<Bytes>, Response<()>>();
        let call = tokio::spawn(layer.layer(service).oneshot(request));
        let (seen, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(()));
        call.await.unwrap().unwrap();
        seen.headers().get(IDEMPOTENCY_KEY).cloned()
    }

    #[tokio::test]
    async fn post_and_patch_get_a_key_safe_methods_do_not() {
        for method in [Method::POST, Method::PATCH] {
            let request = Request::builder()
                .method(method.clone())
                .uri("http://h/")
                .body(Bytes::new())
                .unwrap();
            assert!(
                key_seen(IdempotencyLayer::new(), request).await.is_some(),
                "{method}"
            );
        }
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri("http://h/")
                .body(Bytes::new())
                .unwrap();
            assert!(
                key_seen(IdempotencyLayer::new(), request).await.is_none(),
                "{method}"
            );
        }
    }

    #[tokio::test]
    async fn without_key_and_a_disabled_layer_send_no_key() {
        let mut request = Request::post("http://h/").body(Bytes::new()).unwrap();
        request.extensions_mut().insert(WithoutKey);
        assert!(key_seen(IdempotencyLayer::new(), request).await.is_none());
        let request = Request::post("http://h/").body(Bytes::new()).unwrap();
        assert!(
            key_seen(IdempotencyLayer::new().enabled(false), request)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_key_the_caller_set_is_kept() {
        let request = Request::post("http://h/")
            .header("idempotency-key", "\"mine\"")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(
            key_seen(IdempotencyLayer::new(), request).await.unwrap(),
            "\"mine\""
        );
    }

    #[tokio::test]
    async fn a_custom_header_name_is_used_and_recorded() {
        let layer =
            IdempotencyLayer::new().header_name(HeaderName::from_static("x-idempotency-key"));
        let (service, mut handle) = mock::pair::<Request<Bytes>, Response<()>>();
        let call = tokio::spawn(
            layer
                .layer(service)
                .oneshot(Request::post("http://h/").body(Bytes::new()).unwrap()),
        );
        let (seen, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(()));
        call.await.unwrap().unwrap();
        let value = seen.headers().get("x-idempotency-key").unwrap();
        assert!(!seen.headers().contains_key(IDEMPOTENCY_KEY));
        assert_eq!(
            seen.extensions()
                .get::<IdempotencyKey>()
                .unwrap()
                .header_value(),
            value
        );
    }
}
