//! Reading a response body: whole as it arrived, the rest after a first piece, and streamed
//! after the block detector read its first bytes.

mod common;

use scrapewell_mock::MockServer;

use common::fast_client;

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
