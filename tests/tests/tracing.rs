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
