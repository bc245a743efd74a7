//! Conflict-aware retries against the hostile mock server, asserted at the server.

mod common;

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use scrapewell::{Error, RetryReason, TransientConflict, TransportError};
use scrapewell_mock::MockServer;

use common::{RawServer, closed_port, echo_of, fast_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_created_exactly_once_when_attempts_time_out() {
    let server = MockServer::start().await.unwrap();
    // The default retry policy (3 attempts, backoff from 100 ms, the default budget), with all
    // 200 in flight at once: every first attempt times out, and its retry, which draws nothing
    // from the budget, meets the key in flight or the stored response.
    let client = scrapewell::Client::builder()
        .attempt_timeout(Duration::from_millis(100))
        .max_in_flight_per_host(256)
        .build()
        .unwrap();
    let url = server.url("/orders?delay_ms=300&require_key=1");
    let results = stream::iter(0..200)
        .map(|n| {
            let request = client
                .post(&url)
                .json(&serde_json::json!({ "ref": format!("order-{n}") }));
            async move { request.send().await }
        })
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await;

    let mut key_in_flight_retries = 0;
    for result in &results {
        let response = result.as_ref().expect("every create succeeds");
        assert_eq!(response.status(), 201);
        key_in_flight_retries += response
            .attempts()
            .retries()
            .iter()
            .filter(|r| r.reason == RetryReason::Conflict(TransientConflict::KeyInFlight))
            .count();
    }
    let stats = server.stats();
    assert_eq!(stats.creates, 200);
    assert_eq!(stats.distinct_refs, 200);
    assert_eq!(stats.duplicate_creates, 0);
    assert_eq!(stats.missing_keys, 0);
    assert_eq!(stats.key_mismatches, 0);
    assert!(
        stats.in_flight_conflicts > 0,
        "the in-flight 409s happened at the server"
    );
    assert!(key_in_flight_retries > 0, "and the client retried them");
    assert!(
        stats.replays > 0,
        "finished keys were answered from the stored response"
    );
}

#[tokio::test]
async fn a_write_that_timed_out_is_sent_again_safely_with_the_key_its_error_names() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let url = server.url("/orders?delay_ms=300&require_key=1");
    let order = serde_json::json!({ "ref": "order-1" });
    let error = client
        .post(&url)
        .json(&order)
        .attempt_timeout(Duration::from_millis(50))
        .max_attempts(1)
        .send()
        .await
        .expect_err("the attempt times out");
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let key = error
        .attempts()
        .and_then(|attempts| attempts.idempotency_key())
        .and_then(|key| key.as_str())
        .expect("the key the write was sent with")
        .to_owned();

    // Sent again with that key (while the first is still being processed, then after), the
    // write is answered with what the server did the first time: one order.
    let response = client
        .post(&url)
        .json(&order)
        .idempotency_key(&key)
        .max_attempts(20)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let stats = server.stats();
    assert_eq!(stats.creates, 1);
    assert_eq!(stats.duplicate_creates, 0);
    assert_eq!(stats.replays, 1);
}

#[tokio::test]
async fn keyless_post_meeting_502_is_attempted_once() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let response = client
        .post(server.url("/status/502/keyless"))
        .without_idempotency_key()
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.attempts().count(), 1);
    assert_eq!(server.hits("/status/502/keyless"), 1);

    // The same POST with its key is retried.
    let response = client
        .post(server.url("/status/502/keyed"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts().count(), 3);
    assert_eq!(server.hits("/status/502/keyed"), 3);
}

#[tokio::test]
async fn get_on_503_does_not_try_again_before_retry_after() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let response = client
        .get(server.url("/flaky/ra?fail=1&retry_after=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let arrivals = server.arrivals("/flaky/ra");
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(2),
        "retried after {:?}",
        arrivals[1] - arrivals[0]
    );
    let retry = response.attempts().retries()[0];
    assert!(retry.server_asked);
    assert_eq!(retry.delay, Duration::from_secs(2));
}

/// A host that answers 503 with `Retry-After: 1` four times is tried again each second, as it
/// asked: the retries' pauses are not taken for a slow pace and stretched (it once took 4 s,
/// 16 s, then 60 s), and the next request goes at once.
#[tokio::test]
async fn a_host_that_asks_each_time_to_come_back_in_a_second_is_tried_each_second() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_attempts(5).build().unwrap();
    let response = client
        .get(server.url("/flaky/down?fail=4&retry_after=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts().count(), 5);
    let arrivals = server.arrivals("/flaky/down");
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        // Late by at most a stall of the machine; a stretched pace is seconds late.
        assert!(
            gap >= Duration::from_secs(1) && gap < Duration::from_millis(1_900),
            "{gap:?} between attempts, asked 1 s: {arrivals:?}"
        );
    }
    let started = std::time::Instant::now();
    let next = client.get(server.url("/page/1")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn permanent_conflict_fails_after_one_attempt_with_the_problem_title() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let error = client
        .post(server.url("/conflict/sku-1"))
        .json(&serde_json::json!({"sku": 1}))
        .send()
        .await
        .unwrap_err();
    match &error {
        Error::Conflict {
            status,
            problem,
            attempts,
        } => {
            assert_eq!(*status, 409);
            let problem = problem.as_ref().expect("problem details parsed");
            assert_eq!(problem.title.as_deref(), Some("Duplicate resource"));
            assert_eq!(
                problem.type_uri.as_deref(),
                Some("https://scrapewell.dev/problems/duplicate")
            );
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(error.to_string().contains("Duplicate resource"));
    assert_eq!(server.hits("/conflict/sku-1"), 1, "never retried");
}

#[tokio::test]
async fn lock_conflict_with_retry_after_succeeds_on_a_later_attempt() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().max_attempts(4).build().unwrap();
    let response = client
        .put(server.url("/lock/doc-7?times=2&retry_after=1"))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts().count(), 3);
    let reasons: Vec<_> = response
        .attempts()
        .retries()
        .iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(
        reasons,
        vec![RetryReason::Conflict(TransientConflict::RetryAfter); 2]
    );
    assert_eq!(server.stats().lock_conflicts, 2);
}

#[tokio::test]
async fn a_lock_said_in_a_body_without_a_content_type_is_retried() {
    // As a bare `res.writeHead(409); res.end("...")` answers: no Content-Type.
    let locked = "Row is locked by another transaction";
    let server = RawServer::start(format!(
        "HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\n\r\n{locked}",
        locked.len()
    ))
    .await;
    let client = fast_client().build().unwrap();
    let error = client
        .put(format!("{}/rows/7", server.url))
        .body("v2")
        .send()
        .await
        .unwrap_err();
    let Error::Conflict { attempts, .. } = &error else {
        panic!("expected a conflict once the attempts ran out, got {error:?}");
    };
    assert_eq!(attempts.count(), 3);
    assert!(
        attempts
            .retries()
            .iter()
            .all(|r| r.reason == RetryReason::Conflict(TransientConflict::Locked)),
        "{attempts:?}"
    );
    assert_eq!(server.take_heads().len(), 3);
}

#[tokio::test]
async fn retry_after_above_the_cap_fails_at_once_naming_the_value() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client()
        .max_retry_after(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client
        .get(server.url("/status/503/year?retry_after=31536000"))
        .send()
        .await
        .unwrap_err();
    match &error {
        Error::RetryAfterTooLong {
            value,
            requested,
            cap,
            attempts,
            ..
        } => {
            assert_eq!(value, "31536000");
            assert_eq!(*requested, Duration::from_secs(31_536_000));
            assert_eq!(*cap, Duration::from_secs(120));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected RetryAfterTooLong, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("\"31536000\" (365 days), over the cap of 2 min"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait"
    );
    assert_eq!(server.hits("/status/503/year"), 1);

    // The server asked for a year for its whole host: the next request to it fails at once
    // too, unsent, instead of waiting out the minute the host is held for and hearing the same.
    let error = client
        .get(server.url("/bytes/10"))
        .send()
        .await
        .unwrap_err();
    match &error {
        Error::HostPaused {
            status,
            remaining,
            cap,
            held,
            ..
        } => {
            assert_eq!(*status, 503);
            assert!(
                *remaining > Duration::from_secs(31_535_000),
                "{remaining:?}"
            );
            assert_eq!(*cap, Duration::from_secs(120));
            // Held for the rate limiter's `max_pause`, a minute, not the year asked for.
            assert!(
                (Duration::from_secs(50)..=Duration::from_secs(60)).contains(held),
                "{held:?}"
            );
        }
        other => panic!("expected HostPaused, got {other:?}"),
    }
    assert_eq!(server.hits("/bytes/10"), 0);
    assert_eq!(
        error.attempts().map(|a| a.count()),
        Some(0),
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_closed_port_stay_within_the_retry_budget() {
    const REQUESTS: u32 = 1000;
    const MAX_ATTEMPTS: u32 = 5;
    // A 60 s window (longer than this test) at 20% plus a floor of 1/s: at most
    // 0.2 × 1000 + 1 × 60 = 260 retries, so at most 1260 attempts. Without the budget,
    // 5 attempts each would make 5000.
    const BOUND: u32 = REQUESTS + REQUESTS / 5 + 60;
    let client = fast_client()
        .max_attempts(MAX_ATTEMPTS)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .retry_budget(Duration::from_secs(60), 1, 0.2)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/page", closed_port());
    let errors = stream::iter(0..REQUESTS)
        .map(|_| client.get(&url).send())
        .buffer_unordered(50)
        .map(|result| result.expect_err("nothing listens"))
        .collect::<Vec<_>>()
        .await;
    let attempts: u32 = errors
        .iter()
        .map(|e| e.attempts().expect("sent").count())
        .sum();
    let refused = errors
        .iter()
        .filter(|e| matches!(e, Error::BudgetExhausted { .. }))
        .count();
    println!(
        "{REQUESTS} requests to a closed port: {attempts} attempts (bound {BOUND}), {refused} stopped by the budget"
    );
    assert!(
        attempts <= BOUND,
        "{attempts} attempts exceed the budget's bound of {BOUND}"
    );
    assert!(
        attempts > REQUESTS,
        "connect failures were retried while the budget allowed"
    );
    assert!(refused > 0);
    assert!(errors.iter().all(|e| e.is_connect()
        || matches!(
            e,
            Error::BudgetExhausted {
                reason: RetryReason::Connect,
                ..
            }
        )));
}

#[tokio::test]
async fn reset_mid_body_retries_a_get_and_is_outcome_unknown_for_a_keyless_post() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();

    let response = client
        .get(server.url("/reset/page?times=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.attempts().retries()[0].reason,
        RetryReason::Transport
    );
    assert_eq!(response.text().await.unwrap(), "page whole");
    assert_eq!(server.hits("/reset/page"), 2);

    let error = client
        .post(server.url("/reset/write?times=1"))
        .without_idempotency_key()
        .body("x")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::OutcomeUnknown {
                source: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.attempts().unwrap().count(), 1);
    assert_eq!(server.hits("/reset/write"), 1, "not sent again");

    // With its key, the same POST is safe to repeat.
    let response = client
        .post(server.url("/reset/keyed?times=1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.hits("/reset/keyed"), 2);
}

#[tokio::test]
async fn a_stall_longer_than_the_attempt_timeout_is_retried_for_a_get() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client()
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let response = client
        .get(server.url("/stall/slow?ms=2000&times=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.attempts().retries()[0].reason,
        RetryReason::Timeout
    );

    let error = client
        .get(server.url("/stall/always?ms=2000"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(error.attempts().unwrap().count(), 3);

    let error = client
        .post(server.url("/stall/write?ms=2000"))
        .without_idempotency_key()
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::OutcomeUnknown {
                source: Some(TransportError::TimedOut(_)),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_deadline_bounds_all_attempts() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client()
        .max_attempts(10)
        .deadline(Duration::from_millis(1500))
        .build()
        .unwrap();
    let error = client
        .get(server.url("/flaky/dl?fail=10&retry_after=1"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Deadline { .. }), "{error:?}");
    assert_eq!(
        server.hits("/flaky/dl"),
        2,
        "the third attempt would have passed the deadline"
    );
}

#[tokio::test]
async fn key_is_the_same_on_every_attempt_and_absent_on_get() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let response = client.get(server.url("/echo")).send().await.unwrap();
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert!(echoed["headers"].get("idempotency-key").is_none());

    // A derived key is the same for the same request, so a restarted scraper reuses it.
    let derived = fast_client()
        .idempotency_key_strategy(scrapewell::KeyStrategy::Derived)
        .build()
        .unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let echoed = echo_of(derived.post(server.url("/echo")).body("same")).await;
        keys.push(
            echoed["headers"]["idempotency-key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(keys[0], keys[1]);
    assert!(keys[0].starts_with('"') && keys[0].ends_with('"'));
}

#[tokio::test]
async fn a_write_answered_with_303_is_read_with_a_get_through_further_redirects() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    // 303 to a 302 to /echo; the second redirect is the first one's encoded `to`.
    let see_other = server.url("/redirect?status=303&to=/redirect%3Fstatus%3D302%26to%3D/echo");
    let response = client
        .post(see_other)
        .header("content-type", "text/plain")
        .body("a form")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the 302 after the 303 is followed too"
    );
    assert_eq!(response.url().path(), "/echo");
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "GET");
    let headers = &echoed["headers"];
    assert!(
        headers.get("idempotency-key").is_none(),
        "a GET carries no key"
    );
    assert!(headers.get("content-type").is_none());
}

#[tokio::test]
async fn a_response_has_the_url_it_came_from_without_a_fragment() {
    let server = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    // The fragment is not sent, and the response's URL has none, redirected or not.
    for (asked, answered) in [
        ("/echo?a=1", "/echo?a=1"),
        ("/echo?a=1#part", "/echo?a=1"),
        ("/redirect?status=302&to=/echo%3Fb%3D2%23there", "/echo?b=2"),
    ] {
        let response = client.get(server.url(asked)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asked}");
        assert_eq!(response.url().as_str(), server.url(answered), "{asked}");
    }
}

#[tokio::test]
async fn the_key_never_follows_a_redirect_to_another_origin() {
    let origin = MockServer::start().await.unwrap();
    let other = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let cross = origin.url(&format!("/redirect?status=307&to={}", other.url("/echo")));
    let echoed = echo_of(client.post(cross).bearer_auth("token").body("x")).await;
    assert_eq!(echoed["method"], "POST", "307 keeps the method");
    assert!(echoed["headers"].get("idempotency-key").is_none());
    assert!(echoed["headers"].get("authorization").is_none());

    let same = origin.url(&format!("/redirect?status=307&to={}", origin.url("/echo")));
    let response = client.post(same).body("x").send().await.unwrap();
    assert_eq!(response.url().path(), "/echo");
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert!(
        echoed["headers"].get("idempotency-key").is_some(),
        "same origin keeps the key"
    );
}

#[tokio::test]
async fn a_followed_redirect_sends_the_referer_a_browser_would() {
    let origin = MockServer::start().await.unwrap();
    let other = MockServer::start().await.unwrap();
    let client = fast_client().build().unwrap();
    let within = origin.url("/redirect?to=/echo");
    let echoed = echo_of(client.get(&within)).await;
    assert_eq!(echoed["headers"]["referer"], within.as_str());
    // To another origin, only the origin goes.
    let across = origin.url(&format!("/redirect?to={}", other.url("/echo")));
    let echoed = echo_of(client.get(&across)).await;
    assert_eq!(echoed["headers"]["referer"], origin.url("/"));
}
