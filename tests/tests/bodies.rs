//! Reading a response body: whole as it arrived, the rest after a first piece, streamed after
//! the block detector read its first bytes, and decompressed.

mod common;

use std::io::Write;

use scrapewell::Error;
use scrapewell_mock::MockServer;

use common::{RawServer, echo_of, fast_client, ok_with};

#[tokio::test]
async fn a_whole_body_is_read_whole_or_in_pieces() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server.url("/bytes/100000");
    let whole = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(whole.len(), 100_000);
    // A whole body comes as one piece: nothing is left after it.
    let mut response = client.get(&url).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(first, whole);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_streamed_page_keeps_the_bytes_the_detector_read() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server.url("/guarded/catalogue?after=100");
    let whole = client.get(&url).send().await.unwrap();
    assert!(!whole.is_streaming());
    let whole = whole.text().await.unwrap();
    assert!(whole.contains("<html"), "{whole}");
    let streamed = client.get(&url).stream_response().send().await.unwrap();
    assert!(streamed.is_streaming());
    assert_eq!(streamed.text().await.unwrap(), whole);
    let streamed = client
        .get(server.url("/bytes/300000"))
        .stream_response()
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.bytes().await.unwrap().len(), 300_000);
}

/// `body` compressed as `Content-Encoding: encoding` names it.
fn compressed(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            encoder.write_all(body).expect("compress");
            encoder.finish().expect("compress")
        }
        // HTTP's deflate is the zlib format (RFC 9110, 8.4.1.2).
        "deflate" => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
            encoder.write_all(body).expect("compress");
            encoder.finish().expect("compress")
        }
        "br" => {
            let mut compressed = Vec::new();
            let mut encoder = brotli::CompressorWriter::new(&mut compressed, 4096, 5, 22);
            encoder.write_all(body).expect("compress");
            drop(encoder);
            compressed
        }
        other => panic!("no encoder for {other}"),
    }
}

/// A response whose body is `body` compressed as `encoding`.
fn compressed_response(encoding: &str, body: &[u8]) -> Vec<u8> {
    let headers = format!("Content-Type: text/plain\r\nContent-Encoding: {encoding}\r\n");
    ok_with(&headers, &compressed(encoding, body))
}

#[tokio::test]
async fn compressed_bodies_are_asked_for_and_read_decompressed() {
    let page = "<p>the same page, compressed three ways</p>".repeat(50);
    for encoding in ["gzip", "br", "deflate"] {
        let server = RawServer::start(compressed_response(encoding, page.as_bytes())).await;
        let client = fast_client().build().unwrap();
        let response = client.get(&server.url).send().await.unwrap();
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{encoding}: the body is handed over decompressed"
        );
        assert_eq!(response.text().await.unwrap(), page, "{encoding}");
        let head = server.take_heads().remove(0).to_ascii_lowercase();
        let asked = head
            .lines()
            .find_map(|line| line.strip_prefix("accept-encoding:"))
            .unwrap_or_else(|| panic!("no Accept-Encoding in {head:?}"));
        for name in ["gzip", "br", "deflate"] {
            assert!(asked.contains(name), "{asked}");
        }
    }
}

#[tokio::test]
async fn a_body_that_inflates_past_the_cap_is_too_large_however_small_it_came() {
    let bomb = compressed_response("gzip", &vec![0; 4 << 20]);
    assert!(bomb.len() < 8 << 10, "{} bytes on the wire", bomb.len());
    let server = RawServer::start(bomb).await;
    let client = fast_client().max_body_size(1 << 20).build().unwrap();
    match client.get(&server.url).send().await {
        Err(Error::BodyTooLarge { limit, attempts }) => {
            assert_eq!(limit, 1 << 20);
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected the body to be too large, got {other:?}"),
    }
}

#[tokio::test]
async fn with_decompression_off_nothing_is_asked_for_and_the_body_comes_as_sent() {
    let sent = compressed("gzip", b"as the server sent it");
    let server = RawServer::start(compressed_response("gzip", b"as the server sent it")).await;
    let client = fast_client().decompress(false).build().unwrap();
    let response = client.get(&server.url).send().await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.bytes().await.unwrap(), sent);
    let head = server.take_heads().remove(0).to_ascii_lowercase();
    assert!(!head.contains("accept-encoding"), "{head}");
}

#[tokio::test]
async fn a_client_that_keeps_cookies_sends_back_what_the_server_set() {
    let answer = "HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\n\
        Set-Cookie: theme=dark; Path=/; Max-Age=0\r\nContent-Length: 2\r\n\r\nok";
    for keep in [true, false] {
        let server = RawServer::start(answer).await;
        let client = fast_client().cookie_store(keep).build().unwrap();
        for _ in 0..2 {
            client.get(&server.url).send().await.unwrap();
        }
        let heads = server.take_heads();
        let sent = |head: &str| {
            head.to_ascii_lowercase()
                .lines()
                .find_map(|line| line.strip_prefix("cookie:").map(|v| v.trim().to_owned()))
        };
        assert_eq!(sent(&heads[0]), None, "nothing before the server set it");
        // The cookie that expired as it was set is not sent back.
        let expected = keep.then(|| "session=abc".to_owned());
        assert_eq!(sent(&heads[1]), expected, "keep: {keep}");
    }
}

#[tokio::test]
async fn a_cookie_set_by_a_redirect_goes_with_the_request_that_follows_it() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().cookie_store(true).build().unwrap();
    // A login that answers with a session and a redirect to the account page.
    let login = server.url("/redirect?to=/echo&set_cookie=session%3Dabc%3B%20Path%3D%2F");
    let echoed = echo_of(client.get(login)).await;
    assert_eq!(echoed["path"], "/echo");
    assert_eq!(echoed["headers"]["cookie"], "session=abc");
    // A cookie the caller sets itself goes instead of the jar's.
    let echoed = echo_of(client.get(server.url("/echo")).header("cookie", "mine=1")).await;
    assert_eq!(echoed["headers"]["cookie"], "mine=1");
}
