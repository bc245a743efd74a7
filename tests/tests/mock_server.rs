//! The mock server as seen through the client: its idempotent create follows the draft, and it
//! answers settings out of range with a 400.

mod common;

use scrapewell_mock::MockServer;

use common::fast_client;

#[tokio::test]
async fn a_finished_key_replays_the_stored_response_and_creates_once() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server.url("/orders");
    let body = serde_json::json!({ "ref": "r-1" });
    let first = client
        .post(&url)
        .idempotency_key("k-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = client
        .post(&url)
        .idempotency_key("k-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(replayed.status(), 201);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(first.text().await.unwrap(), replayed.text().await.unwrap());
    let stats = server.stats();
    assert_eq!(
        (stats.creates, stats.replays, stats.duplicate_creates),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_key_reused_with_another_payload_is_422_and_not_retried() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server.url("/orders");
    client
        .post(&url)
        .idempotency_key("k-2")
        .json(&serde_json::json!({"ref": "a"}))
        .send()
        .await
        .unwrap();
    let reused = client
        .post(&url)
        .idempotency_key("k-2")
        .json(&serde_json::json!({"ref": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(reused.attempts().count(), 1);
    assert_eq!(server.stats().key_mismatches, 1);
    assert_eq!(server.stats().creates, 1);
}

#[tokio::test]
async fn a_missing_key_is_400_where_one_is_required_and_each_keyless_post_creates() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let refused = client
        .post(server.url("/orders?require_key=1"))
        .without_idempotency_key()
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(server.stats().missing_keys, 1);

    let body = serde_json::json!({ "ref": "same" });
    for _ in 0..2 {
        client
            .post(server.url("/orders"))
            .without_idempotency_key()
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        server.stats().duplicate_creates,
        1,
        "without keys the server cannot tell"
    );
}

#[tokio::test]
async fn a_limit_out_of_range_is_400_and_the_server_keeps_serving() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_attempts(1).build().unwrap();
    for query in [
        "rate=1e-300",
        "rate=0",
        "rate=NaN",
        "rate=inf",
        "rate=5000000",
        "burst=0",
        "burst=18446744073709551615",
    ] {
        let response = client
            .get(server.url(&format!("/limited/bad?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    let within = client
        .get(server.url("/limited/good?rate=0.001&burst=10000"))
        .send()
        .await
        .unwrap();
    assert_eq!(within.status(), 200);
}
