//! The layer that puts a [`BlockDetect`] around a service.

use std::sync::Arc;

use tower::Layer;

use super::{BlockDetect, Detector};

/// Classifies every response of the wrapped service against block rules (see
/// [`BlockDetect`]).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use scrapewell_core::block::{BlockDetectLayer, BlockVerdict, Detector};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut service = ServiceBuilder::new()
///     .layer(BlockDetectLayer::new(Detector::default()))
///     .service_fn(|_: Request<()>| async {
///         let page = Response::builder()
///             .status(403)
///             .header("content-type", "text/html")
///             .header("set-cookie", "datadome=abc; Path=/")
///             .body(http_body_util::Full::new(Bytes::from_static(
///                 b"<script src=\"https://ct.captcha-delivery.com/c.js\"></script>",
///             )))
///             .unwrap();
///         Ok::<_, std::convert::Infallible>(page)
///     });
/// let response = service.ready().await.unwrap().call(Request::new(())).await.unwrap();
/// let verdict = response.extensions().get::<BlockVerdict>().unwrap();
/// assert_eq!(verdict.vendor(), "datadome");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BlockDetectLayer {
    detector: Arc<Detector>,
}

impl BlockDetectLayer {
    /// Classifies with `detector`.
    pub fn new(detector: Detector) -> Self {
        BlockDetectLayer {
            detector: Arc::new(detector),
        }
    }

    /// Classifies with a shared detector.
    pub fn shared(detector: Arc<Detector>) -> Self {
        BlockDetectLayer { detector }
    }
}

impl<S> Layer<S> for BlockDetectLayer {
    type Service = BlockDetect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BlockDetect {
            inner,
            detector: Arc::clone(&self.detector),
        }
    }
}
