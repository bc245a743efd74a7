use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_test::mock;

use super::*;
use crate::idempotency::IdempotencyLayer;
use crate::timeout::{AttemptTimeoutLayer, Elapsed};

type Mock = mock::Mock<Request<Bytes>, Response<Bytes>>;
type Handle = mock::Handle<Request<Bytes>, Response<Bytes>>;
type Outcome = Result<Response<Bytes>, RetryError<BoxError>>;

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .jitter_seed(1)
        .no_budget()
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .unwrap()
}

fn get() -> Request<Bytes> {
    Request::get("http://127.0.0.1/page")
        .body(Bytes::new())
        .unwrap()
}

fn post() -> Request<Bytes> {
    Request::post("http://127.0.0.1/orders")
        .body(Bytes::from_static(b"{\"ref\":1}"))
        .unwrap()
}

/// Sends `request` through `layer(mock)` on a spawned task; the test answers through the handle.
fn spawn_call<L>(layer: L, request: Request<Bytes>) -> (Handle, tokio::task::JoinHandle<Outcome>)
where
    L: Layer<Mock>,
    L::Service: Service<Request<Bytes>, Response = Response<Bytes>, Error = RetryError<BoxError>>
        + Send
        + 'static,
    <L::Service as Service<Request<Bytes>>>::Future: Send,
{
    let (service, handle) = mock::pair::<Request<Bytes>, Response<Bytes>>();
    let service = layer.layer(service);
    (handle, tokio::spawn(service.oneshot(request)))
}

/// Answers the next attempts in order; returns the instants they arrived at.
async fn answer(handle: &mut Handle, answers: Vec<Response<Bytes>>) -> Vec<Instant> {
    let mut arrivals = Vec::new();
    for answer in answers {
        let (_, send) = handle.next_request().await.expect("another attempt");
        arrivals.push(Instant::now());
        send.send_response(answer);
    }
    arrivals
}

fn refused() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "refused",
    ))
}

fn reset() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ))
}

#[tokio::test(start_paused = true)]
async fn get_on_503_waits_for_retry_after_then_succeeds() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), get());
    let times = answer(
        &mut handle,
        vec![
            response(503, &[("retry-after", "2")], ""),
            response(200, &[], "ok"),
        ],
    )
    .await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(times[1] - times[0], Duration::from_secs(2));
    let attempts = Attempts::of(&response);
    assert_eq!(attempts.count(), 2);
    assert_eq!(
        attempts.retries()[0].reason,
        RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(attempts.retries()[0].server_asked);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    let at = std::time::SystemTime::now() + Duration::from_secs(5);
    let date = httpdate::fmt_http_date(at);
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), get());
    let times = answer(
        &mut handle,
        vec![
            response(429, &[("retry-after", &date)], ""),
            response(200, &[], ""),
        ],
    )
    .await;
    call.await.unwrap().unwrap();
    let waited = times[1] - times[0];
    // The date has whole-second precision and SystemTime is not paused: 4 to 5 seconds.
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_retry_after_falls_back_to_the_schedule() {
    for value in ["-5", "soon", "1.5", "in a while"] {
        let (mut handle, call) = spawn_call(RetryLayer::new(policy()), get());
        let times = answer(
            &mut handle,
            vec![
                response(503, &[("retry-after", value)], ""),
                response(200, &[], ""),
            ],
        )
        .await;
        let response = call.await.unwrap().unwrap();
        let waited = times[1] - times[0];
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(200),
            "{value:?}: {waited:?}"
        );
        assert!(!Attempts::of(&response).retries()[0].server_asked);
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_over_the_cap_fails_at_once_naming_the_value() {
    let layer = RetryLayer::new(policy().max_retry_after(Duration::from_secs(60)));
    let (mut handle, call) = spawn_call(layer, get());
    answer(
        &mut handle,
        vec![response(503, &[("retry-after", "31536000")], "")],
    )
    .await;
    let error = call.await.unwrap().unwrap_err();
    match &error {
        RetryError::RetryAfterTooLong {
            value,
            requested,
            cap,
            attempts,
            ..
        } => {
            assert_eq!(value, "31536000");
            assert_eq!(*requested, Duration::from_secs(31_536_000));
            assert_eq!(*cap, Duration::from_secs(60));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected RetryAfterTooLong, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "server asked to retry after \"31536000\" (365 days), over the cap of 1 min"
    );
    assert_eq!(
        Instant::now().elapsed(),
        Duration::ZERO,
        "no time was spent waiting"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_what_a_duration_holds_is_named_as_sent() {
    let layer = RetryLayer::new(policy());
    let (mut handle, call) = spawn_call(layer, get());
    let huge = "99999999999999999999999";
    answer(
        &mut handle,
        vec![response(429, &[("retry-after", huge)], "")],
    )
    .await;
    let error = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, RetryError::RetryAfterTooLong { value, .. } if value == huge),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&format!(
            "server asked to retry after \"{huge}\" (over 500 years)"
        )),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_grow_within_their_jitter_bounds() {
    let layer = RetryLayer::new(policy().max_attempts(5));
    let (mut handle, call) = spawn_call(layer, get());
    let times = answer(
        &mut handle,
        (0..5).map(|_| response(502, &[], "")).collect(),
    )
    .await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_GATEWAY,
        "exhausted 5xx is handed over"
    );
    for (i, pair) in times.windows(2).enumerate() {
        let base = Duration::from_millis(100) * 2u32.pow(i as u32);
        let waited = pair[1] - pair[0];
        assert!(
            waited >= base && waited < base * 2,
            "retry {i}: {waited:?} not in [{base:?}, 2×)"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_conflict_fails_after_one_attempt_with_the_problem() {
    let body = r#"{"type":"https://example.com/duplicate","title":"Duplicate order","detail":"ref 1 exists"}"#;
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    answer(
        &mut handle,
        vec![response(
            409,
            &[("content-type", "application/problem+json")],
            body,
        )],
    )
    .await;
    match call.await.unwrap().unwrap_err() {
        RetryError::Conflict {
            status,
            problem,
            attempts,
        } => {
            assert_eq!(status, StatusCode::CONFLICT);
            let problem = problem.unwrap();
            assert_eq!(problem.title.as_deref(), Some("Duplicate order"));
            assert_eq!(
                problem.type_uri.as_deref(),
                Some("https://example.com/duplicate")
            );
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn conflict_with_a_body_that_is_not_json_has_no_problem() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), get());
    answer(
        &mut handle,
        vec![response(
            409,
            &[("content-type", "application/problem+json")],
            "{oops",
        )],
    )
    .await;
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::Conflict { problem: None, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn locked_conflict_is_retried_until_it_clears() {
    let locked = response(
        409,
        &[("content-type", "application/problem+json")],
        r#"{"title":"Resource locked"}"#,
    );
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), get());
    answer(&mut handle, vec![locked, response(200, &[], "")]).await;
    let response = call.await.unwrap().unwrap();
    let retries = Attempts::of(&response).retries().to_vec();
    assert_eq!(
        retries[0].reason,
        RetryReason::Conflict(TransientConflict::Locked)
    );
}

#[tokio::test(start_paused = true)]
async fn keyless_post_retries_a_conflict_only_with_retry_after() {
    let in_progress = r#"{"title":"Request in progress"}"#;
    let ct = ("content-type", "application/problem+json");
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    answer(&mut handle, vec![response(409, &[ct], in_progress)]).await;
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::Conflict { .. })
    ));

    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    answer(
        &mut handle,
        vec![
            response(409, &[ct, ("retry-after", "1")], in_progress),
            response(201, &[], ""),
        ],
    )
    .await;
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn keyed_post_retries_a_key_in_flight_with_the_same_key() {
    let layer = tower::layer::util::Stack::new(RetryLayer::new(policy()), IdempotencyLayer::new());
    let (mut handle, call) = spawn_call(layer, post());
    let in_flight = response(
        409,
        &[("content-type", "application/problem+json")],
        r#"{"title":"Request in progress"}"#,
    );
    let (first, send) = handle.next_request().await.unwrap();
    send.send_response(in_flight);
    let (second, send) = handle.next_request().await.unwrap();
    send.send_response(response(201, &[], ""));
    let response = call.await.unwrap().unwrap();
    let key = first.headers().get("idempotency-key").unwrap();
    assert_eq!(Some(key), second.headers().get("idempotency-key"));
    let reason = Attempts::of(&response).retries()[0].reason;
    assert_eq!(
        reason,
        RetryReason::Conflict(TransientConflict::KeyInFlight)
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_after_the_first_carries_its_number() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy().max_attempts(3)), get());
    let mut numbers = Vec::new();
    for status in [503, 503, 200] {
        let (request, send) = handle.next_request().await.expect("another attempt");
        numbers.push(request.extensions().get::<RetryAttempt>().copied());
        send.send_response(response(status, &[], ""));
    }
    call.await.unwrap().unwrap();
    // The last attempt sends the request itself rather than a copy: it is numbered all the same.
    assert_eq!(
        numbers,
        [None, Some(RetryAttempt(2)), Some(RetryAttempt(3))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_record_keeps_the_key_a_failed_write_can_be_sent_again_with() {
    let keyed =
        || tower::layer::util::Stack::new(RetryLayer::new(policy()), IdempotencyLayer::new());
    let (mut handle, call) = spawn_call(keyed(), post());
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (request, send) = handle.next_request().await.expect("another attempt");
        sent.push(request.headers()["idempotency-key"].clone());
        send.send_error(reset());
    }
    let error = call.await.unwrap().unwrap_err();
    let key = error.attempts().idempotency_key().expect("the key").clone();
    assert!(sent.iter().all(|value| value == key.header_value()));
    assert!(
        !format!("{error:?}").contains(key.as_str().unwrap()),
        "redacted"
    );
    assert_eq!(
        key.header_value(),
        &format!("\"{}\"", key.as_str().unwrap())
    );

    // An answered write's response records it too, after a single attempt; a GET has none.
    let (mut handle, call) = spawn_call(keyed(), post());
    answer(&mut handle, vec![response(201, &[], "")]).await;
    let created = call.await.unwrap().unwrap();
    assert!(Attempts::of(&created).idempotency_key().is_some());
    let (mut handle, call) = spawn_call(keyed(), get());
    answer(&mut handle, vec![response(503, &[], ""); 3]).await;
    let unavailable = call.await.unwrap().unwrap();
    assert_eq!(Attempts::of(&unavailable).count(), 3);
    assert_eq!(Attempts::of(&unavailable).idempotency_key(), None);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_flight_is_recognised_in_stripes_nested_error() {
    let layer = tower::layer::util::Stack::new(RetryLayer::new(policy()), IdempotencyLayer::new());
    let (mut handle, call) = spawn_call(layer, post());
    let in_use = r#"{"error":{"type":"idempotency_error","message":"There is currently another in-progress request using this Idempotent Key. Please try again later."}}"#;
    answer(
        &mut handle,
        vec![
            response(409, &[("content-type", "application/json")], in_use),
            response(201, &[], ""),
        ],
    )
    .await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        Attempts::of(&response).retries()[0].reason,
        RetryReason::Conflict(TransientConflict::KeyInFlight)
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_conflict_after_an_unanswered_attempt_is_taken_for_the_key_in_flight() {
    // The body says nothing of the key; the attempt before it was cut after it was sent.
    let plain_conflict = || {
        response(
            409,
            &[("content-type", "application/problem+json")],
            r#"{"title":"Conflict"}"#,
        )
    };
    let layer = tower::layer::util::Stack::new(RetryLayer::new(policy()), IdempotencyLayer::new());
    let (mut handle, call) = spawn_call(layer, post());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(reset());
    answer(&mut handle, vec![plain_conflict(), response(201, &[], "")]).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let reasons: Vec<_> = Attempts::of(&response)
        .retries()
        .iter()
        .map(|retry| retry.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            RetryReason::Transport,
            RetryReason::Conflict(TransientConflict::KeyInFlight)
        ]
    );

    // The same conflict to a first attempt is the server's last word.
    let layer = tower::layer::util::Stack::new(RetryLayer::new(policy()), IdempotencyLayer::new());
    let (mut handle, call) = spawn_call(layer, post());
    answer(&mut handle, vec![plain_conflict()]).await;
    match call.await.unwrap() {
        Err(RetryError::Conflict { attempts, .. }) => assert_eq!(attempts.count(), 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn keyless_post_on_502_is_attempted_once() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    answer(&mut handle, vec![response(502, &[], "")]).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(Attempts::of(&response).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn keyless_post_reset_after_sending_is_outcome_unknown() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(reset());
    match call.await.unwrap() {
        Err(RetryError::OutcomeUnknown {
            source: Some(_),
            attempts,
        }) => assert_eq!(attempts.count(), 1),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn keyless_post_whose_connection_was_refused_is_retried() {
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), post());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(refused());
    answer(&mut handle, vec![response(201, &[], "")]).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(
        Attempts::of(&response).retries()[0].reason,
        RetryReason::Connect
    );
}

/// A transport error that says how far its request got.
#[derive(Debug)]
struct Failed(TransportFailure);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Failed {}

impl ClassifyError for Failed {
    fn transport_failure(&self) -> TransportFailure {
        self.0
    }
}

#[test]
fn a_request_refused_unprocessed_is_retried_whatever_its_method() {
    let classify = |request: &Request<Bytes>, failure| {
        <ConflictAware as Classify<Bytes, Failed>>::classify(
            &ConflictAware,
            &RequestFacts::of(request),
            AttemptResult::Error(&Failed(failure)),
        )
    };
    for request in [get(), post()] {
        assert_eq!(
            classify(&request, TransportFailure::Refused),
            super::Outcome::Retry(RetryReason::Refused),
            "{}",
            request.method()
        );
    }
    assert_eq!(RetryReason::Refused.to_string(), "refused unprocessed");
}

#[tokio::test(start_paused = true)]
async fn a_request_held_back_unsent_fails_at_once_and_is_no_attempt() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let service = tower::service_fn(move |_: Request<Bytes>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Err::<Response<Bytes>, _>(Failed(TransportFailure::HeldBack)) }
    });
    let error = RetryLayer::new(policy())
        .layer(service)
        .oneshot(post())
        .await
        .unwrap_err();
    assert!(matches!(error, RetryError::Transport { .. }), "{error:?}");
    assert_eq!(error.attempts().count(), 0);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_refusal_is_retried_at_once_and_a_second_one_backs_off() {
    // Each attempt fails as `failures` says, in order, and succeeds once they run out.
    async fn arrivals(failures: &'static [TransportFailure]) -> (Vec<Duration>, Attempts) {
        let start = Instant::now();
        let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut answers = failures.iter().copied();
        let service = tower::service_fn({
            let arrived = Arc::clone(&arrived);
            move |_: Request<Bytes>| {
                arrived.lock().unwrap().push(Instant::now() - start);
                let failure = answers.next();
                async move {
                    match failure {
                        Some(failure) => Err(Failed(failure)),
                        None => Ok(response(200, &[], "")),
                    }
                }
            }
        });
        let response = RetryLayer::new(policy().max_attempts(4))
            .layer(service)
            .oneshot(get())
            .await
            .unwrap();
        let arrived = arrived.lock().unwrap().clone();
        (arrived, Attempts::of(&response))
    }
    use TransportFailure::{NotSent, Refused};

    let (at, attempts) = arrivals(&[Refused, Refused]).await;
    assert_eq!(at[1], at[0], "the first refusal is retried at once");
    assert!(at[2] - at[1] >= Duration::from_millis(100), "{at:?}");
    let delays: Vec<_> = attempts.retries().iter().map(|retry| retry.delay).collect();
    assert_eq!(delays[0], Duration::ZERO);
    // The timer rounds up to its millisecond ticks.
    assert!(delays[1] >= Duration::from_millis(100) && at[2] - at[1] >= delays[1]);

    // Only a refusal goes at once, and only the first, wherever it comes.
    let (at, _) = arrivals(&[NotSent, Refused, Refused]).await;
    assert!(at[1] - at[0] >= Duration::from_millis(100), "{at:?}");
    assert_eq!(at[2], at[1]);
    assert!(at[3] - at[2] >= Duration::from_millis(100), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_retries_a_get_and_is_outcome_unknown_for_a_keyless_post() {
    let layer = tower::layer::util::Stack::new(
        AttemptTimeoutLayer::new(Duration::from_millis(100)),
        RetryLayer::new(policy()),
    );
    let (mut handle, call) = spawn_call(layer.clone(), get());
    let (_, stalled) = handle.next_request().await.unwrap();
    let times = answer(&mut handle, vec![response(200, &[], "")]).await;
    drop(stalled);
    let response = call.await.unwrap().unwrap();
    assert_eq!(
        Attempts::of(&response).retries()[0].reason,
        RetryReason::Timeout
    );
    assert!(times[0].elapsed() == Duration::ZERO);

    let (mut handle, call) = spawn_call(layer, post());
    let (_, _stalled) = handle.next_request().await.unwrap();
    match call.await.unwrap() {
        Err(RetryError::OutcomeUnknown {
            source: Some(elapsed),
            attempts,
        }) => {
            assert!(elapsed.is::<Elapsed>());
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_the_request_before_a_retry_that_would_pass_it() {
    let layer = RetryLayer::new(policy().deadline(Duration::from_secs(3)).max_attempts(10));
    let (mut handle, call) = spawn_call(layer, get());
    let started = Instant::now();
    answer(
        &mut handle,
        vec![
            response(503, &[("retry-after", "2")], ""),
            response(503, &[("retry-after", "2")], ""),
        ],
    )
    .await;
    match call.await.unwrap() {
        Err(RetryError::DeadlineExceeded { deadline, attempts }) => {
            assert_eq!(deadline, Duration::from_secs(3));
            assert_eq!(attempts.count(), 2);
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "it did not sleep past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn limits_past_what_the_clock_can_count_are_no_limits() {
    let layer = RetryLayer::new(
        policy()
            .deadline(Duration::MAX)
            .max_retry_after(Duration::MAX),
    );
    let (mut handle, call) = spawn_call(layer, get());
    let started = Instant::now();
    answer(
        &mut handle,
        vec![
            response(503, &[("retry-after", "99999999999999999999")], ""),
            response(200, &[], "ok"),
        ],
    )
    .await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() > Duration::from_secs(365 * 24 * 3600),
        "it waited as the server asked: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_a_slow_attempt() {
    let layer = RetryLayer::new(policy().deadline(Duration::from_millis(500)));
    let (mut handle, call) = spawn_call(layer, get());
    let (_, _stalled) = handle.next_request().await.unwrap();
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::DeadlineExceeded { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn exhausted_429_is_a_rate_limited_error() {
    let layer = RetryLayer::new(policy().max_attempts(2));
    let (mut handle, call) = spawn_call(layer, get());
    answer(
        &mut handle,
        vec![
            response(429, &[("retry-after", "1")], ""),
            response(429, &[("retry-after", "1")], ""),
        ],
    )
    .await;
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(
        error.to_string(),
        "rate limited (429 Too Many Requests) after 2 attempts"
    );
    match error {
        RetryError::RateLimited {
            status,
            retry_after,
            attempts,
        } => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
            assert_eq!(attempts.count(), 2);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_retries_across_requests() {
    // No deposits count for much at 0%: only the floor of 1/s × 1 s = 1 retry is allowed.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(1), 1, 0.0).unwrap());
    let layer = RetryLayer::new(policy().budget(budget).max_attempts(5));
    let (mut handle, call) = spawn_call(layer.clone(), get());
    answer(
        &mut handle,
        vec![response(503, &[], ""), response(200, &[], "")],
    )
    .await;
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);

    let (mut handle, call) = spawn_call(layer, get());
    answer(&mut handle, vec![response(503, &[], "")]).await;
    match call.await.unwrap() {
        Err(RetryError::BudgetExhausted { reason, attempts }) => {
            assert_eq!(reason, RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn asking_again_after_a_key_in_flight_draws_nothing_from_the_budget() {
    // A budget that allows no retry at all: 0% of requests and no floor.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap());
    let layer = tower::layer::util::Stack::new(
        RetryLayer::new(policy().budget(budget).max_attempts(4)),
        IdempotencyLayer::new(),
    );
    let in_flight = || {
        response(
            409,
            &[("content-type", "application/problem+json")],
            r#"{"title":"Request in progress"}"#,
        )
    };
    // The server answered that it has the write and is doing it: asking again is how the
    // caller learns its outcome, not more load on a host in trouble.
    let (mut handle, call) = spawn_call(layer.clone(), post());
    answer(
        &mut handle,
        vec![in_flight(), in_flight(), response(201, &[], "")],
    )
    .await;
    let created = call.await.unwrap().unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(Attempts::of(&created).count(), 3);

    // Anything else still draws from it.
    let (mut handle, call) = spawn_call(layer, post());
    answer(&mut handle, vec![response(503, &[], "")]).await;
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::BudgetExhausted { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_write_that_timed_out_is_sent_again_without_drawing_from_the_budget() {
    // A budget that allows no retry at all: 0% of requests and no floor.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap());
    let layer = tower::layer::util::Stack::new(
        AttemptTimeoutLayer::new(Duration::from_millis(100)),
        tower::layer::util::Stack::new(
            RetryLayer::new(policy().budget(budget)),
            IdempotencyLayer::new(),
        ),
    );
    let put = || {
        Request::put("http://127.0.0.1/orders/1")
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    };
    // The server may hold each of these writes: giving up would leave the caller to send it
    // again itself.
    for write in [post(), put()] {
        let method = write.method().clone();
        let (mut handle, call) = spawn_call(layer.clone(), write);
        let (_, _stalled) = handle.next_request().await.unwrap();
        answer(&mut handle, vec![response(201, &[], "")]).await;
        let written = call.await.unwrap().unwrap();
        let retries = Attempts::of(&written).retries().to_vec();
        assert_eq!(retries.len(), 1, "{method}");
        assert_eq!(retries[0].reason, RetryReason::Timeout, "{method}");
    }

    // A GET that timed out still draws from it, as does a write whose connection broke.
    let (mut handle, call) = spawn_call(layer.clone(), get());
    let (_, _stalled) = handle.next_request().await.unwrap();
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::BudgetExhausted {
            reason: RetryReason::Timeout,
            ..
        })
    ));
    let (mut handle, call) = spawn_call(layer, put());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(reset());
    assert!(matches!(
        call.await.unwrap(),
        Err(RetryError::BudgetExhausted {
            reason: RetryReason::Transport,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_cloned_is_sent_once() {
    #[derive(Debug)]
    struct OneShot;
    impl crate::ReplayBody for OneShot {
        fn try_clone(&self) -> Option<Self> {
            None
        }
        fn buffered(&self) -> Option<&[u8]> {
            None
        }
    }
    let (service, mut handle) = mock::pair::<Request<OneShot>, Response<Bytes>>();
    let service = RetryLayer::new(policy()).layer(service);
    let call = tokio::spawn(
        service.oneshot(
            Request::put("http://127.0.0.1/upload")
                .body(OneShot)
                .unwrap(),
        ),
    );
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(reset());
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, RetryError::NotReplayable { .. }));
    assert!(error.to_string().contains("cannot be sent again"));

    let (service, mut handle) = mock::pair::<Request<OneShot>, Response<Bytes>>();
    let service = RetryLayer::new(policy())
        .layer(AttemptTimeoutLayer::new(Duration::from_millis(100)).layer(service));
    let call = tokio::spawn(
        service.oneshot(
            Request::put("http://127.0.0.1/upload")
                .body(OneShot)
                .unwrap(),
        ),
    );
    let (_, _stalled) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    match &error {
        RetryError::NotReplayable { source, .. } => assert!(source.is::<Elapsed>()),
        other => panic!("expected NotReplayable, got {other:?}"),
    }
    assert_eq!(error.attempts().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn conditional_request_conflict_is_a_stale_version_with_the_current_state() {
    let request = Request::put("http://127.0.0.1/doc")
        .header("if-match", "\"v1\"")
        .body(Bytes::new())
        .unwrap();
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
    answer(
        &mut handle,
        vec![response(412, &[("etag", "\"v2\"")], "{\"n\":2}")],
    )
    .await;
    match call.await.unwrap() {
        Err(RetryError::StaleVersion {
            status,
            etag,
            current,
            problem,
            attempts,
        }) => {
            assert!(problem.is_none());
            assert_eq!(status, StatusCode::PRECONDITION_FAILED);
            assert_eq!(etag.unwrap(), "\"v2\"");
            assert_eq!(*current.unwrap(), "{\"n\":2}");
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected StaleVersion, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn stale_version_in_a_problem_body_carries_the_problem_not_a_state() {
    let mut request = Request::put("http://127.0.0.1/db/doc")
        .body(Bytes::from_static(b"{\"_rev\":\"1-a\"}"))
        .unwrap();
    request.extensions_mut().insert(VersionInBody);
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
    let ct = ("content-type", "application/problem+json");
    answer(
        &mut handle,
        vec![response(409, &[ct], "{\"title\":\"Edit conflict\"}")],
    )
    .await;
    match call.await.unwrap() {
        Err(RetryError::StaleVersion {
            status,
            current,
            problem,
            attempts,
            ..
        }) => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert!(current.is_none(), "a problem document is not the state");
            assert_eq!(problem.unwrap().title.as_deref(), Some("Edit conflict"));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected StaleVersion, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn create_only_412_is_already_exists_after_one_attempt() {
    for method in [http::Method::PUT, http::Method::POST] {
        let request = Request::builder()
            .method(method)
            .uri("http://127.0.0.1/doc")
            .header("if-none-match", "*")
            .body(Bytes::new())
            .unwrap();
        let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
        answer(&mut handle, vec![response(412, &[("etag", "\"v7\"")], "")]).await;
        match call.await.unwrap() {
            Err(RetryError::AlreadyExists {
                status,
                etag,
                attempts,
            }) => {
                assert_eq!(status, StatusCode::PRECONDITION_FAILED);
                assert_eq!(etag.unwrap(), "\"v7\"");
                assert_eq!(attempts.count(), 1);
            }
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_412_to_a_revalidating_get_is_neither_stale_nor_already_exists() {
    let request = Request::get("http://127.0.0.1/doc")
        .header("if-none-match", "\"v1\"")
        .body(Bytes::new())
        .unwrap();
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
    answer(&mut handle, vec![response(412, &[], "")]).await;
    let response = call.await.unwrap().expect("handed over as it is");
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test(start_paused = true)]
async fn precondition_required_fails_at_once_with_the_problem() {
    let request = Request::put("http://127.0.0.1/doc")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
    let ct = ("content-type", "application/problem+json");
    answer(
        &mut handle,
        vec![response(428, &[ct], "{\"title\":\"If-Match required\"}")],
    )
    .await;
    match call.await.unwrap() {
        Err(RetryError::PreconditionRequired {
            status,
            problem,
            attempts,
        }) => {
            assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
            assert_eq!(problem.unwrap().title.as_deref(), Some("If-Match required"));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected PreconditionRequired, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn per_request_override_disables_retries() {
    let mut request = get();
    request
        .extensions_mut()
        .insert(RetryOverrides::new().max_attempts(1));
    let (mut handle, call) = spawn_call(RetryLayer::new(policy()), request);
    answer(&mut handle, vec![response(503, &[], "")]).await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(Attempts::of(&response).count(), 1);
}

#[test]
fn request_facts_come_from_headers_and_extensions() {
    let facts = |headers: &[(&str, &str)]| {
        let mut builder = Request::post("http://127.0.0.1/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        RequestFacts::of(&builder.body(()).unwrap())
    };
    let none = facts(&[]);
    assert!(!none.has_idempotency_key && !none.conditional && !none.create_only);
    assert!(!none.replay_safe());
    assert!(facts(&[("Idempotency-Key", "\"k\"")]).replay_safe());
    assert!(facts(&[("accept", "*/*"), ("If-Match", "\"v1\"")]).conditional);
    assert!(facts(&[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]).conditional);
    // `*` among several If-None-Match values makes it create-only; a list of tags does not.
    assert!(facts(&[("if-none-match", "\"a\""), ("if-none-match", " * ")]).create_only);
    assert!(!facts(&[("if-none-match", "\"a\", \"b\"")]).create_only);
    let mut request = Request::put("http://127.0.0.1/db/doc").body(()).unwrap();
    request.extensions_mut().insert(VersionInBody);
    request.extensions_mut().insert(ReceiveBlocked);
    let facts = RequestFacts::of(&request);
    assert!(facts.conditional && facts.receive_blocked && !facts.create_only);
}
