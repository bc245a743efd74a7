//! The body a response leaves the detector with: the peeked prefix, then the rest.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::InspectBody;

/// A response body whose first bytes the detector read: it yields them first, then the rest
/// of the original body as it arrives, so the caller gets the body intact and still streaming.
/// A body the detector did not need to read (one already whole, a kind it does not scan) passes
/// through untouched.
///
/// An error the original body raised while it was peeked comes after the prefix, where the
/// caller would have met it.
///
/// # Example
///
/// ```
/// use http_body_util::BodyExt;
/// use scrapewell_core::block::PeekedBody;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body = PeekedBody::new(http_body_util::Full::new(bytes::Bytes::from("hello")));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// # }
/// ```
pub struct PeekedBody<B: Body> {
    prefix: Bytes,
    peeked: bool,
    // Boxed so the body is Unpin whatever its error type.
    error: Option<Box<B::Error>>,
    // Boxed: trailers are rare, and the body moves with its response through every layer
    // (inline, their 96 bytes cost some 50 data-cache misses a request at concurrency 64).
    trailers: Option<Box<HeaderMap>>,
    /// The original body ended while it was peeked.
    ended: bool,
    inner: B,
}

impl<B: Body> PeekedBody<B> {
    /// A body passed through without peeking.
    pub fn new(inner: B) -> Self {
        PeekedBody {
            prefix: Bytes::new(),
            peeked: false,
            error: None,
            trailers: None,
            ended: false,
            inner,
        }
    }

    /// Whether the detector read the first bytes of the original body.
    pub fn is_peeked(&self) -> bool {
        self.peeked
    }

    /// The original body (less any prefix already yielded).
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The original body whole, when none of it was peeked: a caller that holds a buffered
    /// body can take it as it lies, without reading it frame by frame.
    pub fn unpeeked_mut(&mut self) -> Option<&mut B> {
        (!self.peeked).then_some(&mut self.inner)
    }
}

impl<B: Body + fmt::Debug> fmt::Debug for PeekedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeekedBody")
            .field("prefix", &self.prefix.len())
            .field("peeked", &self.peeked)
            .field("failed", &self.error.is_some())
            .field("ended", &self.ended)
            .field("inner", &self.inner)
            .finish()
    }
}

/// The prefix as it is read: the first chunk kept as it came (no copy when one chunk holds it),
/// later ones appended.
#[derive(Debug, Default)]
pub(super) struct Prefix {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Prefix {
    pub(super) fn push(&mut self, chunk: Bytes) {
        if let Some(more) = &mut self.more {
            more.extend_from_slice(&chunk);
        } else if self.first.is_empty() {
            self.first = chunk;
        } else {
            let mut more = BytesMut::with_capacity(self.first.len() + chunk.len());
            more.extend_from_slice(&self.first);
            more.extend_from_slice(&chunk);
            self.first = Bytes::new();
            self.more = Some(more);
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match &self.more {
            Some(more) => more,
            None => &self.first,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The peeked body: this prefix, then what is left of `inner`.
    pub(super) fn into_body<B: Body>(
        self,
        inner: B,
        ended: bool,
        error: Option<B::Error>,
        trailers: Option<HeaderMap>,
    ) -> PeekedBody<B> {
        PeekedBody {
            error: error.map(Box::new),
            prefix: match self.more {
                Some(more) => more.freeze(),
                None => self.first,
            },
            peeked: true,
            trailers: trailers.map(Box::new),
            ended,
            inner,
        }
    }
}

impl<B> Body for PeekedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.prefix)))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(*error)));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.error.is_none()
            && self.trailers.is_none()
            && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.len() as u64;
        if self.ended {
            return SizeHint::with_exact(prefix);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// A body that was not peeked is whatever the original says; a peeked one is inspectable
/// when it arrived whole within the prefix.
impl<B: Body + InspectBody> InspectBody for PeekedBody<B> {
    fn inspect(&self) -> Option<&[u8]> {
        if !self.peeked {
            self.inner.inspect()
        } else if self.ended && self.error.is_none() {
            Some(&self.prefix)
        } else {
            None
        }
    }
}
