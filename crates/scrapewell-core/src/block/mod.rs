//! Block heuristics: recognising when a site has decided the client is a bot.
//!
//! A response is classified from its status, headers, cookies and the first bytes of its body
//! against a [`RuleSet`] kept as data (an embedded default covers Cloudflare, Akamai,
//! PerimeterX / HUMAN, DataDome, Imperva / Incapsula, AWS WAF, Kasada, F5 BIG-IP, Sucuri,
//! DDoS-Guard, Google's "unusual traffic" page, LinkedIn's 999 and soft blocks). Every body
//! marker is looked for in one pass (aho-corasick). A [`BlockVerdict`] names the vendor, the
//! kind of block, the evidence and a confidence.
//!
//! Strong markers (`cf-mitigated: challenge`, `x-amzn-waf-action`) decide alone; weak ones (a
//! vendor's "Access Denied" title) need a second one or a hint (a block status, the vendor's
//! cookie). Serving infrastructure alone (`cf-ray`, `server: cloudflare`) is never a block, and
//! `Content-Security-Policy` headers, which name captcha hosts on ordinary pages, are never
//! scanned.
//!
//! The [`BlockDetect`] service reads at most a bounded prefix of a body (32 KiB) and hands the
//! body on intact and still streaming, as a [`PeekedBody`]. A verdict goes in the response's
//! extensions; what to do about it (no blind retry, a cool-down, a fresh identity) is the retry
//! layer's and the client's business.

mod body;
mod cooldown;
mod detect;
mod future;
mod layer;
mod rules;
mod verdict;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use tower::Service;

pub use body::PeekedBody;
pub use cooldown::{CoolDowns, CoolingDown};
pub use detect::{DEFAULT_PREFIX, DEFAULT_SUCCESS_WINDOW, Detector, RedirectedTo, ResponseFacts};
pub use future::ResponseFuture;
pub use layer::BlockDetectLayer;
pub use rules::{Rule, RuleError, RuleSet, Strength, Target};
pub use verdict::{BlockKind, BlockVerdict, Evidence};

/// Classifies the responses of the inner service (see the [module docs](self)); made by
/// [`BlockDetectLayer`], whose docs show it recognising a DataDome page.
///
/// # Clone
///
/// Clones share the detector.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use scrapewell_core::block::{BlockDetectLayer, BlockVerdict, Detector, PeekedBody};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // An ordinary page: no verdict, and the body passes through whole.
/// let service = ServiceBuilder::new()
///     .layer(BlockDetectLayer::new(Detector::default()))
///     .service_fn(|_: Request<()>| async {
///         let page = Response::builder()
///             .header("content-type", "text/html")
///             .body(http_body_util::Full::new(Bytes::from_static(b"<h1>Results</h1>")))
///             .unwrap();
///         Ok::<_, std::convert::Infallible>(page)
///     });
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert!(response.extensions().get::<BlockVerdict>().is_none());
/// let body: PeekedBody<_> = response.into_body();
/// let bytes = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
/// assert_eq!(&bytes[..], b"<h1>Results</h1>");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BlockDetect<S> {
    inner: S,
    detector: Arc<Detector>,
}

impl<S> BlockDetect<S> {
    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The detector.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for BlockDetect<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = bytes::Bytes> + Unpin,
{
    type Response = Response<PeekedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let head_request = request.method() == Method::HEAD;
        ResponseFuture::new(
            self.inner.call(request),
            Arc::clone(&self.detector),
            head_request,
        )
    }
}

#[cfg(test)]
mod tests;
