use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest, Sha256};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::*;

fn verdict_of(status: u16, headers: &[(&str, &str)], body: &str) -> Option<BlockVerdict> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = builder.body(()).unwrap();
    Detector::default().classify(&ResponseFacts::of(&response, body.as_bytes(), true))
}

#[test]
fn a_strong_marker_decides_alone() {
    let verdict = verdict_of(405, &[("x-amzn-waf-action", "captcha")], "").unwrap();
    assert_eq!(verdict.vendor(), "aws-waf");
    assert_eq!(verdict.kind(), BlockKind::Captcha);
    assert!(verdict.confidence() >= 0.9);
    assert!(verdict.to_string().contains("x-amzn-waf-action"));
}

#[test]
fn a_weak_marker_needs_company() {
    let page = "<html><head><TITLE>Access Denied</TITLE></head><body>nope</body></html>";
    assert_eq!(
        verdict_of(200, &[("content-type", "text/html")], page),
        None
    );
    let verdict = verdict_of(403, &[("content-type", "text/html")], page).unwrap();
    assert_eq!(verdict.vendor(), "akamai");
    assert_eq!(verdict.kind(), BlockKind::AccessDenied);
    assert!(verdict.confidence() < 0.75);
    let with_server = verdict_of(
        403,
        &[("content-type", "text/html"), ("server", "AkamaiGHost")],
        page,
    )
    .unwrap();
    assert!(with_server.confidence() > verdict.confidence());
}

#[test]
fn serving_infrastructure_alone_is_not_a_block() {
    let headers = [
        ("server", "cloudflare"),
        ("cf-ray", "8a1b2c3d4e5f6789-AMS"),
        ("set-cookie", "__cf_bm=abc; Path=/"),
        ("content-type", "application/json"),
    ];
    assert_eq!(verdict_of(403, &headers, r#"{"error":"forbidden"}"#), None);
    assert_eq!(verdict_of(200, &headers, "{}"), None);
}

#[test]
fn csp_headers_are_not_scanned() {
    let csp = "script-src https://www.google.com/recaptcha/ https://challenges.cloudflare.com \
               https://geo.captcha-delivery.com";
    let headers = [
        ("content-security-policy", csp),
        ("content-type", "text/html"),
    ];
    assert_eq!(verdict_of(200, &headers, "<title>Shop</title>"), None);
}

#[test]
fn an_empty_page_where_html_was_expected_is_a_soft_block_but_not_for_head() {
    let verdict = verdict_of(200, &[("content-type", "text/html; charset=utf-8")], "").unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("generic", BlockKind::SoftBlock)
    );
    let response = Response::builder()
        .status(200)
        .header("content-type", "text/html")
        .body(())
        .unwrap();
    let head = ResponseFacts::of(&response, b"", true).method(&http::Method::HEAD);
    assert_eq!(Detector::default().classify(&head), None);
    assert_eq!(verdict_of(204, &[("content-type", "text/html")], ""), None);
}

#[test]
fn a_redirect_to_a_captcha_is_a_soft_block() {
    let verdict = verdict_of(
        302,
        &[("location", "https://shop.example/captcha?return=/p/1")],
        "",
    )
    .unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("generic", BlockKind::SoftBlock)
    );
    let response = Response::builder().status(200).body(()).unwrap();
    let mut facts = ResponseFacts::of(&response, b"<p>hi</p>", true);
    facts.redirected_to = Some("https://www.google.com/sorry/index?continue=https://x");
    assert_eq!(
        Detector::default().classify(&facts).unwrap().vendor(),
        "google"
    );
}

#[test]
fn a_2xx_body_is_scanned_only_as_far_as_the_success_window() {
    let filler = "<p>ordinary content</p>".repeat(1000);
    let late = format!("{filler}<div id=\"px-captcha\"></div>");
    let html = [("content-type", "text/html")];
    assert_eq!(verdict_of(200, &html, &late), None);
    assert_eq!(
        verdict_of(403, &html, &late).unwrap().vendor(),
        "perimeterx"
    );
    let early = "<div id=\"px-captcha\"></div>";
    assert_eq!(
        verdict_of(200, &html, early).unwrap().vendor(),
        "perimeterx"
    );
    // Media is never scanned.
    assert_eq!(
        verdict_of(403, &[("content-type", "image/png")], early),
        None
    );
}

#[test]
fn ties_go_to_the_vendor_listed_first() {
    let verdict = verdict_of(
        302,
        &[(
            "location",
            "https://geo.captcha-delivery.com/captcha/?initialCid=x",
        )],
        "",
    )
    .unwrap();
    assert_eq!(verdict.vendor(), "datadome");
}

#[test]
fn rules_a_caller_adds_are_used() {
    let mut rules = RuleSet::embedded();
    rules
        .add("acme captcha weak body <div class=\"acme-wall\">")
        .unwrap()
        .add("acme - hint cookie acme_sid")
        .unwrap();
    let detector = Detector::new(&rules).unwrap();
    let response = Response::builder()
        .status(200)
        .header("set-cookie", "acme_sid=1; HttpOnly")
        .body(())
        .unwrap();
    let verdict = detector
        .classify(&ResponseFacts::of(
            &response,
            b"<div class=\"acme-wall\">",
            true,
        ))
        .unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("acme", BlockKind::Captcha)
    );
    assert_eq!(verdict.evidence().len(), 2);
}

/// `response` as it comes out of a `BlockDetect` with the default rules.
async fn detect<B>(response: Response<B>) -> Response<PeekedBody<B>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut response = Some(response);
    let mut service = ServiceBuilder::new()
        .layer(BlockDetectLayer::new(Detector::default()))
        .service_fn(move |_: Request<()>| {
            let response = response.take().expect("called once");
            async move { Ok::<_, Infallible>(response) }
        });
    let ready = service.ready().await.unwrap();
    ready.call(Request::new(())).await.unwrap()
}

const CHUNK: usize = 64 << 10;

/// A body of `len` bytes made on demand in chunks, counting the bytes pulled from it.
fn lazy_body(
    len: usize,
    pulled: Arc<AtomicUsize>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin> {
    let chunks = futures_util::stream::iter((0..len.div_ceil(CHUNK)).map(move |index| {
        let size = CHUNK.min(len - index * CHUNK);
        let chunk: Vec<u8> = (0..size)
            .map(|i| ((index * CHUNK + i) % 251) as u8)
            .collect();
        pulled.fetch_add(size, Ordering::SeqCst);
        Ok(Frame::data(Bytes::from(chunk)))
    }));
    StreamBody::new(chunks)
}

#[tokio::test]
async fn a_large_body_passes_through_unchanged_and_only_the_prefix_is_read_first() {
    const LEN: usize = 10 << 20;
    let mut expected = Sha256::new();
    let mut reference = lazy_body(LEN, Arc::default());
    while let Some(frame) = reference.frame().await {
        expected.update(frame.unwrap().into_data().unwrap());
    }

    let pulled = Arc::new(AtomicUsize::new(0));
    let response = Response::builder()
        .status(403)
        .header("content-type", "text/html")
        .body(lazy_body(LEN, Arc::clone(&pulled)))
        .unwrap();
    let response = detect(response).await;
    // Before the caller reads anything, the layer has read the prefix (in whole chunks) and
    // nothing more: that is all it holds.
    let read_by_layer = pulled.load(Ordering::SeqCst);
    assert!((DEFAULT_PREFIX..=DEFAULT_PREFIX + CHUNK).contains(&read_by_layer));
    assert!(response.extensions().get::<BlockVerdict>().is_none());

    let mut body = response.into_body();
    assert!(body.is_peeked());
    let mut actual = Sha256::new();
    let mut frames = 0;
    let mut largest = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        largest = largest.max(data.len());
        actual.update(&data);
        frames += 1;
    }
    assert_eq!(actual.finalize(), expected.finalize());
    assert_eq!(pulled.load(Ordering::SeqCst), LEN);
    // The prefix comes as one frame, then the original frames as they were.
    assert_eq!(frames, LEN / CHUNK);
    assert!(largest <= DEFAULT_PREFIX + CHUNK);
}

#[tokio::test]
async fn a_body_that_fails_while_peeked_yields_the_prefix_then_the_error() {
    let frames = futures_util::stream::iter(vec![
        Ok(Frame::data(Bytes::from_static(
            b"<title>Just a moment...</title>",
        ))),
        Err("reset"),
    ]);
    let response = Response::builder()
        .status(503)
        .body(StreamBody::new(frames))
        .unwrap();
    let response = detect(response).await;
    let verdict = response.extensions().get::<BlockVerdict>().unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("cloudflare", BlockKind::Challenge)
    );
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"<title>Just a moment...</title>");
    assert_eq!(body.frame().await.unwrap().unwrap_err(), "reset");
}

#[tokio::test]
async fn trailers_met_while_peeked_still_reach_the_caller() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter(vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"<html>fine</html>"))),
        Ok(Frame::trailers(trailers.clone())),
    ]);
    let response = Response::builder()
        .status(403)
        .header("content-type", "text/html")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = detect(response).await;
    assert!(response.body().is_peeked());
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(&collected.to_bytes()[..], b"<html>fine</html>");
}

#[tokio::test]
async fn a_body_the_detector_does_not_need_is_not_read() {
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(b"binary")))
        .unwrap();
    let response = detect(response).await;
    assert!(!response.body().is_peeked());
}

#[tokio::test(start_paused = true)]
async fn a_cool_down_past_what_the_clock_can_count_lasts_and_can_be_lifted() {
    let verdict = verdict_of(999, &[], "").unwrap();
    let cool_downs = CoolDowns::new(10);
    let host = crate::ratelimit::HostKey::of("www.linkedin.com", 443);
    cool_downs.cool(host, std::time::Duration::MAX, Arc::new(verdict));
    let cooling = cool_downs.check(&host).unwrap();
    assert!(cooling.remaining > std::time::Duration::from_secs(50 * 365 * 24 * 3600));
    cool_downs.lift(&host);
    assert!(cool_downs.check(&host).is_none());
}
