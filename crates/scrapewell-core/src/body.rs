//! What the layers need to know about bodies: whether a request body can be sent again, and
//! whether a response body has already arrived whole so it can be inspected.

use bytes::Bytes;
use http::Request;

/// A request body that may be sent more than once.
///
/// The retry layer clones the body before each attempt; a body that cannot be cloned (a
/// stream) is sent once and never retried. Buffered bodies (`Bytes`, `String`, `Vec<u8>`,
/// `()`) are always replayable.
///
/// # Example
///
/// ```
/// use scrapewell_core::ReplayBody;
///
/// enum MyBody { Buffered(bytes::Bytes), Stream }
///
/// impl ReplayBody for MyBody {
///     fn try_clone(&self) -> Option<Self> {
///         match self {
///             MyBody::Buffered(b) => Some(MyBody::Buffered(b.clone())),
///             MyBody::Stream => None,
///         }
///     }
///     fn buffered(&self) -> Option<&[u8]> {
///         match self {
///             MyBody::Buffered(b) => Some(b),
///             MyBody::Stream => None,
///         }
///     }
/// }
/// ```
pub trait ReplayBody: Sized {
    /// A copy of the body for another attempt, or `None` when it can be sent only once.
    fn try_clone(&self) -> Option<Self>;

    /// The whole body when it is in memory (used to derive idempotency keys from content).
    fn buffered(&self) -> Option<&[u8]>;
}

/// A response body whose bytes may already be in memory.
///
/// The retry classifier reads the body of a 409 to tell a transient conflict ("locked",
/// "in progress") from a permanent one and to parse RFC 9457 problem details. A streaming body
/// returns `None` and is classified from status and headers alone.
///
/// # Example
///
/// ```
/// use scrapewell_core::InspectBody;
///
/// let body = bytes::Bytes::from_static(b"{\"title\":\"Locked\"}");
/// assert_eq!(body.inspect(), Some(&b"{\"title\":\"Locked\"}"[..]));
/// ```
pub trait InspectBody {
    /// The body's bytes, when it has arrived whole.
    fn inspect(&self) -> Option<&[u8]>;
}

impl ReplayBody for Bytes {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl ReplayBody for String {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl ReplayBody for Vec<u8> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl ReplayBody for () {
    fn try_clone(&self) -> Option<Self> {
        Some(())
    }
    fn buffered(&self) -> Option<&[u8]> {
        Some(&[])
    }
}

impl InspectBody for Bytes {
    fn inspect(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl InspectBody for String {
    fn inspect(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl InspectBody for Vec<u8> {
    fn inspect(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl InspectBody for () {
    fn inspect(&self) -> Option<&[u8]> {
        Some(&[])
    }
}

/// A copy of `request` for another attempt (method, URI, version, headers, extensions and
/// body), or `None` when its body can be sent only once.
///
/// # Example
///
/// ```
/// let request = http::Request::post("http://example.com/").body(bytes::Bytes::from("a=1")).unwrap();
/// let copy = scrapewell_core::try_clone_request(&request).unwrap();
/// assert_eq!(copy.uri(), request.uri());
/// assert_eq!(copy.body(), request.body());
/// ```
pub fn try_clone_request<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_clone()?;
    let mut clone = Request::new(body);
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    *clone.extensions_mut() = request.extensions().clone();
    Some(clone)
}
