//! The mock server as seen through the client: its idempotent create follows the draft, and it
//! answers settings out of range with a 400.

mod common;

use std::sync::Arc;
use std::time::Duration;

use scrapewell::KeyBy;
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
async fn what_the_server_counted_is_also_served_as_json_for_other_processes() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let conflict = client.delete(server.url("/conflict/c-1")).send().await;
    assert!(conflict.is_err());
    let stats: serde_json::Value = client
        .get(server.url("/stats?path=/conflict/c-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["permanent_conflicts"], 1);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["requests"], 1, "asking is not counted");
    assert_eq!(server.stats().requests, 1);
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
        "window=hourly",
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

#[tokio::test]
async fn a_fixed_window_lets_its_quota_go_at_once_and_counts_down_to_its_end() {
    let server = MockServer::start().await.unwrap();
    // Unlimited by the client, which would hold the fourth request until the window's end.
    let client = fast_client()
        .max_attempts(1)
        .key_hosts_by(KeyBy::Custom(Arc::new(|_| None)))
        .build()
        .unwrap();
    // Three requests in windows of 3,000 s on the clock: the chance that one ends during the
    // test is a few in a million.
    let url = server.url("/limited/fixed?rate=0.001&burst=3&window=fixed&headers=legacy");
    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = client.get(&url).send().await;
        let (status, headers) = match &response {
            Ok(response) => (response.status().as_u16(), response.headers().clone()),
            Err(scrapewell::Error::RateLimited { .. }) => (429, Default::default()),
            Err(error) => panic!("{error}"),
        };
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        answers.push((
            status,
            number("ratelimit-remaining"),
            number("ratelimit-reset"),
        ));
    }
    println!("{answers:?}");
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let accepted = &answers[..3];
    assert_eq!(
        accepted.iter().map(|a| a.1).collect::<Vec<_>>(),
        [Some(2), Some(1), Some(0)]
    );
    // The reset is the window's end, the same for every request in it (a GCRA's would grow
    // by 1,000 s with each).
    let resets: Vec<u64> = accepted.iter().filter_map(|a| a.2).collect();
    assert_eq!(resets.len(), 3);
    assert!(resets.iter().all(|r| *r <= 3000), "{resets:?}");
    assert!(
        resets.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1),
        "{resets:?}"
    );
    assert_eq!(server.limits("/limited/fixed").refused, 1);
}

#[tokio::test]
async fn bytes_with_a_delay_are_answered_no_sooner_than_that() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_attempts(1).build().unwrap();
    for (query, at_least) in [("?delay_ms=300", 300), ("", 0), ("?delay_ms=0", 0)] {
        let started = std::time::Instant::now();
        let body = client
            .get(server.url(&format!("/bytes/16{query}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), 16, "{query}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(at_least),
            "{query}: {elapsed:?}"
        );
    }
}
