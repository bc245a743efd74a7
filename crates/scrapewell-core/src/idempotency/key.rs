//! Generating idempotency keys.

use std::fmt;

use http::{HeaderValue, Method, Request, Uri};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ReplayBody;

/// How a key is chosen for a request that has none.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::Request;
/// use scrapewell_core::idempotency::{Idempotency, IdempotencyLayer, KeyStrategy};
/// use tower::Layer;
///
/// // Derived keys: the same create, sent again after a restart, carries the same key.
/// let keys = IdempotencyLayer::new().strategy(KeyStrategy::Derived).layer(());
/// let order = || {
///     Request::post("http://127.0.0.1/orders").body(Bytes::from_static(b"ref=7")).unwrap()
/// };
/// let (mut first, mut again) = (order(), order());
/// keys.add_key(&mut first);
/// keys.add_key(&mut again);
/// assert_eq!(first.headers()["idempotency-key"], again.headers()["idempotency-key"]);
/// # let _: &Idempotency<()> = &keys;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStrategy {
    /// A random UUID v4 per logical request.
    #[default]
    Random,
    /// A UUID v8 from the SHA-256 of method, URL and body, so that a scraper restarted after a
    /// crash sends the same key for the same request. A streaming body cannot be hashed: such a
    /// request gets a random key.
    Derived,
}

/// How the key is written in the header.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::Request;
/// use scrapewell_core::idempotency::{IdempotencyLayer, KeyFormat};
/// use tower::Layer;
///
/// // Stripe-style bare tokens instead of the draft's quoted string.
/// let keys = IdempotencyLayer::new().format(KeyFormat::Token).layer(());
/// let mut request = Request::post("http://127.0.0.1/charges").body(Bytes::new()).unwrap();
/// keys.add_key(&mut request);
/// let key = request.headers()["idempotency-key"].to_str().unwrap();
/// assert_eq!(key.len(), 36);
/// assert!(!key.starts_with('"'));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormat {
    /// A Structured Field string, quoted (`"8e0f…"`), as the IETF draft specifies.
    #[default]
    StructuredString,
    /// A bare token (`8e0f…`), as Stripe and most older APIs expect.
    Token,
}

/// The key a request was given, in its extensions, so that inner layers know the request is
/// deduplicated by the server even when the header has another name.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub(crate) HeaderValue);

impl IdempotencyKey {
    /// The header value as sent.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The key itself: the header value without a Structured Field string's quotes, as a
    /// request builder takes a key to send (`RequestBuilder::idempotency_key` in the client).
    /// `None` for a value that is not visible ASCII.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Request;
    /// use scrapewell_core::idempotency::{IdempotencyKey, IdempotencyLayer};
    /// use tower::Layer;
    ///
    /// let name = http::HeaderName::from_static("x-request-id");
    /// let keys = IdempotencyLayer::new().header_name(name).layer(());
    /// let mut request = Request::post("http://127.0.0.1/orders").body(Bytes::new()).unwrap();
    /// keys.add_key(&mut request);
    /// let key = request.extensions().get::<IdempotencyKey>().unwrap();
    /// assert_eq!(key.as_str().unwrap().len(), 36);
    /// assert_eq!(key.header_value(), &format!("\"{}\"", key.as_str().unwrap()));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        let text = self.0.to_str().ok()?;
        Some(
            text.strip_prefix('"')
                .and_then(|quoted| quoted.strip_suffix('"'))
                .unwrap_or(text),
        )
    }
}

/// Redacts the value: keys are credentials of a kind (they replay a stored response).
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdempotencyKey(<redacted>)")
    }
}

/// A key for `request` by `strategy`, written in `format`.
pub(crate) fn generate<B: ReplayBody>(
    request: &Request<B>,
    strategy: KeyStrategy,
    format: KeyFormat,
) -> HeaderValue {
    let uuid = match (strategy, request.body().buffered()) {
        (KeyStrategy::Derived, Some(body)) => derive(request.method(), request.uri(), body),
        _ => Uuid::new_v4(),
    };
    encode(uuid, format)
}

fn derive(method: &Method, uri: &Uri, body: &[u8]) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(uri.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

fn encode(uuid: Uuid, format: KeyFormat) -> HeaderValue {
    let mut buffer = [0u8; 38];
    let text: &[u8] = match format {
        KeyFormat::StructuredString => {
            buffer[0] = b'"';
            uuid.hyphenated().encode_lower(&mut buffer[1..37]);
            buffer[37] = b'"';
            &buffer
        }
        KeyFormat::Token => uuid.hyphenated().encode_lower(&mut buffer[..36]).as_bytes(),
    };
    HeaderValue::from_bytes(text)
        .expect("a hyphenated UUID, quoted or not, is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn post(uri: &str, body: &'static str) -> Request<Bytes> {
        Request::post(uri)
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap()
    }

    #[test]
    fn structured_string_is_a_quoted_uuid() {
        let value = generate(
            &post("http://h/x", ""),
            KeyStrategy::Random,
            KeyFormat::StructuredString,
        );
        let text = value.to_str().unwrap();
        assert_eq!(text.len(), 38);
        assert!(text.starts_with('"') && text.ends_with('"'));
        assert_eq!(Uuid::parse_str(&text[1..37]).unwrap().get_version_num(), 4);
    }

    #[test]
    fn token_form_is_bare() {
        let value = generate(
            &post("http://h/x", ""),
            KeyStrategy::Random,
            KeyFormat::Token,
        );
        assert!(Uuid::parse_str(value.to_str().unwrap()).is_ok());
    }

    #[test]
    fn random_keys_differ() {
        let a = generate(
            &post("http://h/x", "a"),
            KeyStrategy::Random,
            KeyFormat::Token,
        );
        let b = generate(
            &post("http://h/x", "a"),
            KeyStrategy::Random,
            KeyFormat::Token,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn derived_keys_follow_method_url_and_body() {
        let key = |r: &Request<Bytes>| generate(r, KeyStrategy::Derived, KeyFormat::Token);
        let base = key(&post("http://h/orders", "{\"ref\":1}"));
        assert_eq!(base, key(&post("http://h/orders", "{\"ref\":1}")));
        assert_ne!(base, key(&post("http://h/orders", "{\"ref\":2}")));
        assert_ne!(base, key(&post("http://h/orders?x=1", "{\"ref\":1}")));
        let patch = Request::patch("http://h/orders")
            .body(Bytes::from_static(b"{\"ref\":1}"))
            .unwrap();
        assert_ne!(base, key(&patch));
        assert_eq!(
            Uuid::parse_str(base.to_str().unwrap())
                .unwrap()
                .get_version_num(),
            8
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = IdempotencyKey(HeaderValue::from_static("secret-key"));
        assert!(!format!("{key:?}").contains("secret"));
    }
}
