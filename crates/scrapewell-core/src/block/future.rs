//! The response future of [`BlockDetect`](super::BlockDetect).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::Prefix;
use super::{Detector, PeekedBody, RedirectedTo, ResponseFacts};

pin_project! {
    /// The response of the inner service, classified: the verdict, if any, is in its
    /// extensions, and its body is a [`PeekedBody`].
    pub struct ResponseFuture<F, B: Body> {
        #[pin]
        call: F,
        // Boxed: only a body that arrives in pieces leaves a peek half done, and inline it
        // would make every request's future (and each move of it) hundreds of bytes larger.
        peek: Option<Box<Peek<B>>>,
        detector: Arc<Detector>,
        head_request: bool,
    }
}

/// A response whose body prefix is being read.
struct Peek<B: Body> {
    parts: http::response::Parts,
    body: B,
    prefix: Prefix,
    limit: usize,
    ended: bool,
    error: Option<B::Error>,
    trailers: Option<HeaderMap>,
}

impl<B> Peek<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads until the prefix is full, the body ends, or it fails.
    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.ended && self.prefix.len() < self.limit {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.ended = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.prefix.push(data),
                    Err(frame) => {
                        // Trailers end a body.
                        self.trailers = frame.into_trailers().ok();
                        self.ended = true;
                    }
                },
                Some(Err(error)) => {
                    self.error = Some(error);
                    break;
                }
            }
            self.ended = self.ended || self.body.is_end_stream();
        }
        Poll::Ready(())
    }

    /// The classified response.
    fn finish(self, detector: &Detector, head_request: bool) -> Response<PeekedBody<B>> {
        let mut parts = self.parts;
        let facts = ResponseFacts {
            status: parts.status,
            headers: &parts.headers,
            body: self.prefix.as_slice(),
            body_complete: self.ended && self.error.is_none(),
            head_request,
            redirected_to: parts
                .extensions
                .get::<RedirectedTo>()
                .map(|to| to.0.as_str()),
        };
        let verdict = detector.classify(&facts);
        record(&mut parts.extensions, verdict);
        let body = self
            .prefix
            .into_body(self.body, self.ended, self.error, self.trailers);
        Response::from_parts(parts, body)
    }
}

impl<F, B: Body> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("peeking", &self.peek.is_some())
            .field("head_request", &self.head_request)
            .finish_non_exhaustive()
    }
}

impl<F, B: Body> ResponseFuture<F, B> {
    pub(super) fn new(call: F, detector: Arc<Detector>, head_request: bool) -> Self {
        ResponseFuture {
            call,
            peek: None,
            detector,
            head_request,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<Response<PeekedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let detector = &**this.detector;
        let head_request = *this.head_request;
        let mut peek = match this.peek.take() {
            Some(peek) => *peek,
            None => {
                let mut response = ready!(this.call.poll(cx))?;
                let limit = detector.peek_limit(response.status(), response.headers());
                if limit == 0 || response.body().is_end_stream() {
                    // Nothing to read: classified from status and headers, the body untouched.
                    let mut facts =
                        ResponseFacts::of(&response, &[], response.body().is_end_stream());
                    facts.head_request = head_request;
                    let verdict = detector.classify(&facts);
                    record(response.extensions_mut(), verdict);
                    return Poll::Ready(Ok(response.map(PeekedBody::new)));
                }
                let (parts, body) = response.into_parts();
                Peek {
                    ended: body.is_end_stream(),
                    parts,
                    body,
                    prefix: Prefix::default(),
                    limit,
                    error: None,
                    trailers: None,
                }
            }
        };
        match peek.poll_prefix(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(peek.finish(detector, head_request))),
            Poll::Pending => {
                *this.peek = Some(Box::new(peek));
                Poll::Pending
            }
        }
    }
}

fn record(extensions: &mut http::Extensions, verdict: Option<super::BlockVerdict>) {
    if let Some(verdict) = verdict {
        tracing::info!(
            vendor = verdict.vendor(),
            kind = %verdict.kind(),
            confidence = verdict.confidence(),
            "block detected"
        );
        extensions.insert(verdict);
    }
}
