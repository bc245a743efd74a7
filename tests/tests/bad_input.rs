//! Bad input ends in a typed error, never a panic, and loses nothing.

mod common;

use std::time::Duration;

use scrapewell::{Error, TransportError};
use scrapewell_mock::MockServer;

use common::{RawServer, closed_port, fast_client, ok_with};

#[tokio::test]
async fn an_invalid_url_is_an_invalid_request() {
    let client = fast_client().build().unwrap();
    for url in [
        "not a url",
        "http://",
        "ftp://127.0.0.1/file",
        "mailto:someone@example.com",
        "http://[::1",
    ] {
        let error = client.get(url).send().await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidRequest { .. }),
            "{url}: {error:?}"
        );
        assert!(error.attempts().is_none(), "nothing was sent");
    }
}

#[tokio::test]
async fn a_header_value_with_cr_lf_is_an_invalid_request_that_does_not_echo_the_value() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let error = client
        .get(server.url("/echo"))
        .header("x-injected", "a\r\nSet-Cookie: evil=1")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    assert!(error.to_string().contains("x-injected"));
    assert!(!error.to_string().contains("evil"));
    assert_eq!(server.stats().requests, 0);

    let error = client
        .get(server.url("/echo"))
        .header("bad name", "v")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }));
    let error = client
        .post(server.url("/echo"))
        .idempotency_key("with\"quote")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }));
}

#[tokio::test]
async fn a_response_over_the_size_cap_is_body_too_large_and_not_retried() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_body_size(1 << 20).build().unwrap();
    let error = client
        .get(server.url("/bytes/104857600"))
        .send()
        .await
        .unwrap_err();
    match &error {
        Error::BodyTooLarge { limit, attempts } => {
            assert_eq!(*limit, 1 << 20);
            assert_eq!(
                attempts.count(),
                1,
                "a size cap is permanent: retrying cannot help"
            );
        }
        other => panic!("expected BodyTooLarge, got {other:?}"),
    }
    // Within the cap, and with a larger cap for one request, the body arrives whole.
    let body = client
        .get(server.url("/bytes/1048576"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 1 << 20);
    let body = client
        .get(server.url("/bytes/3000000"))
        .max_body_size(4 << 20)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 3_000_000);
}

#[tokio::test]
async fn a_streamed_body_is_capped_too() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_body_size(200_000).build().unwrap();
    let mut response = client
        .get(server.url("/bytes/104857600"))
        .stream_response()
        .send()
        .await
        .unwrap();
    assert!(response.is_streaming());
    let mut received = 0;
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => panic!("the cap should have stopped the stream"),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, Error::BodyTooLarge { limit: 200_000, .. }),
        "{error:?}"
    );
    assert!(received <= 200_000);
}

#[tokio::test]
async fn malformed_retry_after_values_fall_back_to_the_backoff_schedule() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    for (id, value) in [("negative", "-5"), ("word", "soon"), ("fraction", "1.5")] {
        let response = client
            .get(server.url(&format!("/flaky/{id}?fail=1&retry_after={value}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value}");
        let retry = response.attempts().retries()[0];
        assert!(!retry.server_asked, "{value} was not taken as a delay");
        assert!(retry.delay < Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_problem_body_that_is_not_json_is_a_conflict_without_details() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server
        .url("/status/409/garbled?content_type=application/problem%2Bjson&body=%7Bnot%20json");
    let error = client.post(url).body("x").send().await.unwrap_err();
    match error {
        Error::Conflict {
            problem, attempts, ..
        } => {
            assert_eq!(problem, None);
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_streaming_upload_is_sent_once_and_the_error_says_why() {
    let client = fast_client().build().unwrap();
    let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::from_static(b"part"),
    )]);
    let url = format!("http://127.0.0.1:{}/upload", closed_port());
    let error = client
        .put(url)
        .body(scrapewell::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotReplayable { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot be sent again"));
    assert_eq!(error.attempts().unwrap().count(), 1);
}

#[tokio::test]
async fn streaming_mode_does_not_retry_a_body_that_breaks_off() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let mut response = client
        .get(server.url("/reset/stream?times=1"))
        .stream_response()
        .send()
        .await
        .unwrap();
    let mut error = None;
    while error.is_none() {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the body should have broken off"),
            Err(e) => error = Some(e),
        }
    }
    assert!(matches!(error, Some(Error::Transport { .. })), "{error:?}");
    assert_eq!(
        server.hits("/reset/stream"),
        1,
        "nothing past the headers is retried"
    );
}

#[tokio::test]
async fn a_body_that_is_not_the_json_asked_for_stays_with_the_error() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let page = server.url(
        "/status/200/challenge?content_type=text/html&body=%3Ch1%3EJust%20a%20moment%3C%2Fh1%3E",
    );
    match client
        .get(page)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
    {
        Err(Error::Decode { body, attempts, .. }) => {
            assert_eq!(&body[..], b"<h1>Just a moment</h1>");
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A large body is kept whole, and printing the error shows only its start.
    let error = client
        .get(server.url("/bytes/100000"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    let Error::Decode { body, .. } = &error else {
        panic!("expected a decode error, got {error:?}");
    };
    assert_eq!(body.len(), 100_000);
    let printed = format!("{error:?}");
    assert!(printed.len() < 1_000, "{} characters", printed.len());
    assert!(printed.contains("100000 bytes"), "{printed}");
}

#[tokio::test]
async fn text_is_decoded_by_the_declared_charset() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    // The UTF-8 bytes of "é" (C3 A9) read as ISO-8859-1 are two characters, "Ã©".
    let body = "body=caf%C3%A9";
    let latin1 = server.url(&format!(
        "/status/200/latin1?content_type=text/plain;%20charset=iso-8859-1&{body}"
    ));
    let text_of = async |url: String| client.get(url).send().await.unwrap().text().await.unwrap();
    assert_eq!(text_of(latin1).await, "cafÃ©");
    let utf8 = server.url(&format!(
        "/status/200/utf8?content_type=text/plain;%20charset=utf-8&{body}"
    ));
    assert_eq!(text_of(utf8).await, "café");
    // A page that names its charset only in a <meta> tag: "Привет" in windows-1251.
    let body = [
        &b"<meta charset=\"windows-1251\"><p>"[..],
        &[0xCF, 0xF0, 0xE8, 0xE2, 0xE5, 0xF2],
        b"</p>",
    ]
    .concat();
    let cyrillic = RawServer::start(ok_with("Content-Type: text/html\r\n", &body)).await;
    assert_eq!(
        text_of(cyrillic.url.clone()).await,
        r#"<meta charset="windows-1251"><p>Привет</p>"#
    );
}

#[tokio::test]
async fn a_response_that_is_not_http_is_a_malformed_response_retried_only_when_safe() {
    for response in [
        &b"HTTP/1.1 200 OK\r\na header line without a colon\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
        b"SMTP ready\r\n\r\n",
    ] {
        let server = RawServer::start(response).await;
        let client = fast_client().build().unwrap();
        let shown = String::from_utf8_lossy(response);
        match client.get(&server.url).send().await {
            Err(Error::Transport {
                source: TransportError::MalformedResponse(_),
                attempts,
            }) => assert_eq!(attempts.count(), 3, "{shown}"),
            other => panic!("{shown}: expected a malformed response, got {other:?}"),
        }
        assert_eq!(server.take_heads().len(), 3, "{shown}");
        // A keyless POST may have been processed before the garbage came back.
        match client
            .post(&server.url)
            .body("order=1")
            .without_idempotency_key()
            .send()
            .await
        {
            Err(Error::OutcomeUnknown {
                source: Some(TransportError::MalformedResponse(_)),
                attempts,
            }) => assert_eq!(attempts.count(), 1, "{shown}"),
            other => panic!("{shown}: expected outcome unknown, got {other:?}"),
        }
        assert_eq!(server.take_heads().len(), 1, "{shown}");
    }
}

#[tokio::test]
async fn a_redirect_that_cannot_be_followed_is_a_redirect_error_not_retried() {
    // The loop's target is the server itself: the first request and ten followed redirects.
    for (response, sent, says) in [
        (
            &b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n"[..],
            11,
            "more than 10 redirects",
        ),
        (
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n",
            1,
            "not a URL",
        ),
        (
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ftp://127.0.0.1/file\r\nContent-Length: 0\r\n\r\n",
            1,
            "unsupported scheme \"ftp\"",
        ),
    ] {
        let server = RawServer::start(response).await;
        let client = fast_client().build().unwrap();
        match client.get(&server.url).send().await {
            Err(Error::Transport {
                source: TransportError::Redirect(reason),
                attempts,
            }) => {
                assert!(reason.contains(says), "{reason}");
                assert_eq!(attempts.count(), 1, "{reason}");
            }
            other => panic!("{says}: expected a redirect error, got {other:?}"),
        }
        assert_eq!(server.take_heads().len(), sent, "{says}");
    }
}
