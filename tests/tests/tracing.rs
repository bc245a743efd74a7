//! Logs: a span per logical request, an event per attempt, and no secret in them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use scrapewell_mock::MockServer;

use common::fast_client;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event and span of this thread, at every level, written to the returned buffer until the
/// guard is dropped.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn credentials_keys_and_query_values_never_reach_the_logs() {
    let (captured, _guard) = capture_logs();

    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let response = client
        .post(server.url("/flaky/logged?fail=1&token=QUERY-SECRET"))
        .header("authorization", "Bearer AUTH-SECRET")
        .header("cookie", "session=COOKIE-SECRET")
        .header("proxy-authorization", "Basic PROXY-SECRET")
        .idempotency_key("KEY-SECRET")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts().count(), 2);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request{method=POST host=127.0.0.1 path=/flaky/logged?fail=…&token=…}"),
        "{logs}"
    );
    assert!(
        logs.contains("retrying")
            && logs.contains("reason=status 503")
            && logs.contains("delay_ms="),
        "{logs}"
    );
    assert!(logs.contains("attempt finished"), "{logs}");
    for secret in [
        "QUERY-SECRET",
        "AUTH-SECRET",
        "COOKIE-SECRET",
        "PROXY-SECRET",
        "KEY-SECRET",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_quota_store_that_is_away_is_warned_of_once_and_its_password_never_logged() {
    let (captured, _guard) = capture_logs();

    let server = MockServer::start().await.unwrap();
    let away = format!("redis://:REDIS-SECRET@127.0.0.1:{}/", common::closed_port());
    let store = scrapewell::RedisQuotaStore::open(&away).unwrap();
    let client = fast_client()
        .rate_limit(100.0)
        .shared_rate_limits(store.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        client.get(server.url("/page/1")).send().await.unwrap();
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings = logs
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("quota store unavailable"))
        .count();
    assert_eq!(warnings, 1, "{logs}");
    assert_eq!(
        logs.matches("quota store still unavailable").count(),
        2,
        "{logs}"
    );
    let described = format!("{store:?}");
    assert!(
        !logs.contains("REDIS-SECRET") && !described.contains("REDIS-SECRET"),
        "{described}\n{logs}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_held_back_at_its_host_says_how_long_and_for_what() {
    let (captured, _guard) = capture_logs();
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_in_flight_per_host(1).build().unwrap();

    // One place in flight: the second of two requests at once waits for the first.
    let slow = server.url("/bytes/10?delay_ms=100");
    let (first, second) = tokio::join!(client.get(&slow).send(), client.get(&slow).send());
    assert!(first.is_ok() && second.is_ok());
    // A 503 asking for a second pauses the host: the next request waits it out.
    let paused = client
        .get(server.url("/status/503/paused?retry_after=1"))
        .no_retry()
        .send()
        .await;
    assert!(paused.is_err(), "{paused:?}");
    client.get(server.url("/page/1")).send().await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let waits: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("had its turn at the host"))
        .collect();
    assert_eq!(waits.len(), 2, "{logs}");
    assert!(
        waits[0].contains("waited_for=a place in flight"),
        "{}",
        waits[0]
    );
    assert!(
        waits[1].contains("path=/page/1")
            && waits[1]
                .contains("waited_for=a pause its server asked for (503 Service Unavailable)"),
        "{}",
        waits[1]
    );
    let waited_ms = |line: &str| -> u64 {
        line.split("waited_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_default()
    };
    assert!(waited_ms(waits[0]) >= 90, "{}", waits[0]);
    assert!(waited_ms(waits[1]) >= 900, "{}", waits[1]);
}
