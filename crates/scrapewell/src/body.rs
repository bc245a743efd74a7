//! Request and response bodies.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use scrapewell_core::{InspectBody, ReplayBody};

/// A request body: buffered (re-sent on every attempt) or a stream (sent once, never retried).
///
/// # Example
///
/// ```
/// use scrapewell::Body;
///
/// let body = Body::from("name=value");
/// assert!(body.as_bytes().is_some());
/// ```
pub struct Body {
    kind: BodyKind,
}

enum BodyKind {
    Buffered(Bytes),
    Stream(reqwest::Body),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body {
            kind: BodyKind::Buffered(Bytes::new()),
        }
    }

    /// A body read from a stream of chunks. It can be sent only once: a request with a stream
    /// body is never retried, and an error that would have been retried says so.
    pub fn wrap_stream<S>(stream: S) -> Self
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        Body {
            kind: BodyKind::Stream(reqwest::Body::wrap_stream(stream)),
        }
    }

    /// The bytes of a buffered body; `None` for a stream.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.kind {
            BodyKind::Buffered(bytes) => Some(bytes),
            BodyKind::Stream(_) => None,
        }
    }

    /// A cheap copy of a buffered body's bytes.
    pub(crate) fn buffered_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            BodyKind::Buffered(bytes) => Some(bytes.clone()),
            BodyKind::Stream(_) => None,
        }
    }

    pub(crate) fn into_reqwest(self) -> Option<reqwest::Body> {
        match self.kind {
            BodyKind::Buffered(bytes) if bytes.is_empty() => None,
            BodyKind::Buffered(bytes) => Some(bytes.into()),
            BodyKind::Stream(stream) => Some(stream),
        }
    }
}

impl ReplayBody for Body {
    fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            BodyKind::Buffered(bytes) => Some(Body {
                kind: BodyKind::Buffered(bytes.clone()),
            }),
            BodyKind::Stream(_) => None,
        }
    }

    fn buffered(&self) -> Option<&[u8]> {
        self.as_bytes()
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body {
            kind: BodyKind::Buffered(bytes),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Bytes::from(text).into()
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Bytes::from_static(text.as_bytes()).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Buffered(bytes) => write!(f, "Body::Buffered({} bytes)", bytes.len()),
            BodyKind::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

/// A response body as it leaves the transport, with the URL it came from after redirects
/// (carried here rather than in the extensions, which would cost an allocation per response).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    pub(crate) data: BodyData,
    pub(crate) url: std::sync::Arc<url::Url>,
}

/// Whole, or (in streaming mode) still arriving.
pub(crate) enum BodyData {
    Whole(Bytes),
    Streaming(reqwest::Body),
}

impl InspectBody for ResponseBody {
    fn inspect(&self) -> Option<&[u8]> {
        match &self.data {
            BodyData::Whole(bytes) => Some(bytes),
            BodyData::Streaming(_) => None,
        }
    }
}

/// A whole body is one frame; a streaming one is reqwest's.
impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        match &mut self.get_mut().data {
            BodyData::Whole(bytes) if bytes.is_empty() => Poll::Ready(None),
            BodyData::Whole(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            BodyData::Streaming(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.data {
            BodyData::Whole(bytes) => bytes.is_empty(),
            BodyData::Streaming(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.data {
            BodyData::Whole(bytes) => SizeHint::with_exact(bytes.len() as u64),
            BodyData::Streaming(stream) => stream.size_hint(),
        }
    }
}

impl fmt::Debug for BodyData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyData::Whole(bytes) => write!(f, "Whole({} bytes)", bytes.len()),
            BodyData::Streaming(_) => f.write_str("Streaming"),
        }
    }
}
