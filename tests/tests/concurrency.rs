//! Optimistic concurrency end to end: read-modify-write against the mock server's ETag
//! documents and its CouchDB-shaped endpoint, create-only writes, and the errors a caller meets.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use scrapewell::{Client, Error, UpdateError, VersionAt};
use scrapewell_mock::MockServer;
use serde_json::{Value, json};

const EDITORS: u64 = 16;
const INCREMENTS: u64 = 25;

/// Adds one to the document's `value`.
fn increment(mut doc: Value) -> Result<Option<Value>, Infallible> {
    let value = doc["value"].as_u64().expect("a counter document");
    doc["value"] = json!(value + 1);
    Ok(Some(doc))
}

/// A mock server that holds `doc` at `path` (created by a plain PUT), and a client for it.
async fn serving(path: &str, doc: Value) -> (MockServer, Client) {
    let server = MockServer::start().await.expect("mock server");
    let client = common::fast_client().build().expect("client");
    client
        .put(server.url(path))
        .json(&doc)
        .send()
        .await
        .expect("the document is created");
    (server, client)
}

/// `EDITORS` tasks each increment the counter at `url` `INCREMENTS` times through the helper;
/// returns the rounds they took in all.
async fn edit_concurrently(client: &Client, url: &str, version: VersionAt) -> u64 {
    let tasks: Vec<_> = (0..EDITORS)
        .map(|editor| {
            let client = client.clone();
            let url = url.to_owned();
            let version = version.clone();
            tokio::spawn(async move {
                let mut rounds = 0;
                for increment_no in 0..INCREMENTS {
                    let updated = client
                        .update(&url)
                        .version_at(version.clone())
                        .max_rounds(200)
                        .jitter_seed(editor * 1000 + increment_no)
                        .apply_json(increment)
                        .await
                        .expect("every increment lands");
                    assert!(updated.written);
                    rounds += u64::from(updated.rounds);
                }
                rounds
            })
        })
        .collect();
    let mut rounds = 0;
    for task in tasks {
        rounds += task.await.expect("the editor finishes");
    }
    rounds
}

async fn counter_reaches_400(path: &str, query: &str, version: VersionAt) {
    let (server, client) = serving(path, json!({ "value": 0 })).await;
    let rounds = edit_concurrently(&client, &server.url(&format!("{path}{query}")), version).await;

    let stats = server.stats();
    let expected = EDITORS * INCREMENTS;
    let final_value = server.document(path).expect("the counter")["value"].clone();
    println!(
        "{path}{query}: final value {final_value}, writes applied {}, stale writes {}, rounds {rounds}",
        stats.applied_writes - 1,
        stats.stale_writes
    );
    assert_eq!(final_value, json!(expected), "no increment lost or doubled");
    assert_eq!(
        stats.applied_writes,
        expected + 1,
        "the create and one write per increment"
    );
    assert!(stats.stale_writes > 0, "conflicts really happened");
    assert!(
        stats.applied_writes - 1 + stats.stale_writes > expected,
        "more writes attempted than increments"
    );
    assert_eq!(
        rounds,
        expected + stats.stale_writes,
        "each stale write cost one round"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_editors_of_one_etag_counter_reach_400() {
    counter_reaches_400("/docs/counter", "", VersionAt::ETag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_editors_reach_400_when_stale_writes_are_409_problems() {
    counter_reaches_400("/docs/counter", "?stale=409", VersionAt::ETag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_editors_of_one_couchdb_counter_reach_400() {
    let rev = VersionAt::JsonMember("_rev".to_owned());
    counter_reaches_400("/couch/db/counter", "", rev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_racing_creates_give_one_created_and_nine_already_exists() {
    let server = MockServer::start().await.expect("mock server");
    let client = common::fast_client().build().expect("client");
    let url = server.url("/docs/report");
    let tasks: Vec<_> = (0..10)
        .map(|owner| {
            let create = client
                .put(&url)
                .json(&json!({ "owner": owner }))
                .create_only()
                .send();
            tokio::spawn(create)
        })
        .collect();
    let (mut created, mut already_exists) = (0, 0);
    for task in tasks {
        match task.await.expect("the task finishes") {
            Ok(response) => {
                assert_eq!(response.status(), 201);
                assert_eq!(response.attempts().count(), 1);
                created += 1;
            }
            Err(Error::AlreadyExists {
                status,
                etag,
                attempts,
            }) => {
                assert_eq!(status, 412);
                assert_eq!(etag.expect("the existing version"), "\"v1\"");
                assert_eq!(attempts.count(), 1, "never retried");
                already_exists += 1;
            }
            Err(other) => panic!("expected created or already exists, got {other:?}"),
        }
    }
    assert_eq!((created, already_exists), (1, 9));
    let stats = server.stats();
    assert_eq!((stats.applied_writes, stats.already_exists), (1, 9));
    assert_eq!(server.hits("/docs/report"), 10, "one request each");
}

#[tokio::test]
async fn a_failing_edit_stops_the_update_at_once_with_its_error() {
    let (server, client) = serving("/docs/guarded", json!({ "value": 1 })).await;
    let url = server.url("/docs/guarded");
    let calls = AtomicU32::new(0);
    let result = client
        .update(&url)
        .apply_json(|doc: Value| {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<Option<Value>, _>(format!("refusing to edit {doc}"))
        })
        .await;
    match result {
        Err(UpdateError::Edit(message)) => assert_eq!(message, "refusing to edit {\"value\":1}"),
        other => panic!("expected the edit's error, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        server.hits("/docs/guarded"),
        2,
        "the create and one read; no write"
    );
    assert_eq!(server.stats().applied_writes, 1);
}

#[tokio::test]
async fn a_failing_edit_in_a_later_round_stops_there() {
    let (server, client) = serving("/docs/later", json!({ "value": 1 })).await;
    let calls = AtomicU32::new(0);
    let result = client
        .update(server.url("/docs/later?churn=1"))
        .jitter_seed(3)
        .apply_json(|doc: Value| match calls.fetch_add(1, Ordering::Relaxed) {
            0 => increment(doc).map_err(|never| match never {}),
            _ => Err("changed my mind"),
        })
        .await;
    assert!(matches!(result, Err(UpdateError::Edit("changed my mind"))));
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    let stats = server.stats();
    assert_eq!((stats.applied_writes, stats.stale_writes), (1, 1));
}

#[tokio::test]
async fn constant_contention_exhausts_the_bound_with_the_last_state() {
    let (server, client) = serving("/docs/hot", json!({ "value": 7 })).await;
    let calls = AtomicU32::new(0);
    let result = client
        .update(server.url("/docs/hot?churn=1"))
        .max_rounds(4)
        .jitter_seed(4)
        .apply_json(|doc: Value| {
            calls.fetch_add(1, Ordering::Relaxed);
            increment(doc)
        })
        .await;
    match result {
        Err(UpdateError::Request(Error::StaleVersion {
            status,
            etag,
            current,
            attempts,
            ..
        })) => {
            assert_eq!(status, 412);
            assert_eq!(etag.expect("the last version read"), "\"v4\"");
            let current: Value =
                serde_json::from_slice(&current.expect("the last state read")).expect("JSON");
            assert_eq!(current, json!({ "value": 7 }));
            assert_eq!(attempts.count(), 1, "a stale write is not retried blindly");
        }
        other => panic!("expected a stale version, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        4,
        "one edit per round, on a fresh read"
    );
    let stats = server.stats();
    assert_eq!((stats.applied_writes, stats.stale_writes), (1, 4));
}

#[tokio::test]
async fn a_server_that_requires_preconditions_says_so_and_the_helper_satisfies_it() {
    let server = MockServer::start().await.expect("mock server");
    let client = common::fast_client().build().expect("client");
    let url = server.url("/docs/strict?require=1");
    client
        .put(&url)
        .json(&json!({ "value": 1 }))
        .create_only()
        .send()
        .await
        .expect("a create-only write carries a precondition");

    let blind = client.put(&url).json(&json!({ "value": 5 })).send().await;
    match &blind {
        Err(Error::PreconditionRequired {
            status,
            problem,
            attempts,
        }) => {
            assert_eq!(*status, 428);
            let problem = problem.as_ref().expect("problem details");
            assert_eq!(problem.title.as_deref(), Some("Precondition required"));
            assert_eq!(attempts.count(), 1);
        }
        other => panic!("expected precondition required, got {other:?}"),
    }
    let message = blind.expect_err("refused").to_string();
    assert!(message.contains("Client::update"), "{message}");

    let updated = client
        .update(&url)
        .apply_json(increment)
        .await
        .expect("the helper writes with If-Match");
    assert_eq!(updated.value, json!({ "value": 2 }));
    assert_eq!(updated.etag.expect("the new version"), "\"v2\"");
    assert_eq!(server.stats().preconditions_required, 1);
}

#[tokio::test]
async fn a_resource_without_a_strong_version_is_never_written() {
    let (server, client) = serving("/docs/weak", json!({ "value": 1 })).await;
    let weak = client
        .update(server.url("/docs/weak?weak=1"))
        .apply_json(increment)
        .await;
    assert!(
        matches!(&weak, Err(UpdateError::Request(Error::Unversioned { reason, .. })) if reason.contains("weak")),
        "{weak:?}"
    );
    let missing_member = client
        .update(server.url("/docs/weak"))
        .version_at(VersionAt::JsonMember("_rev".to_owned()))
        .apply_json(increment)
        .await;
    assert!(
        matches!(&missing_member, Err(UpdateError::Request(Error::Unversioned { reason, .. })) if reason.contains("_rev")),
        "{missing_member:?}"
    );
    assert_eq!(server.stats().applied_writes, 1, "only the create");
}

#[tokio::test]
async fn an_edit_with_nothing_to_change_writes_nothing() {
    let (server, client) = serving("/docs/settled", json!({ "value": 3 })).await;
    let url = server.url("/docs/settled");
    let updated = client
        .update(&url)
        .apply_json(|_: Value| Ok::<_, Infallible>(None))
        .await
        .expect("nothing to do is a success");
    assert!(!updated.written);
    assert_eq!(updated.value, json!({ "value": 3 }));
    assert_eq!(updated.etag.expect("the version read"), "\"v1\"");
    assert_eq!(server.stats().applied_writes, 1);
}

#[tokio::test]
async fn a_write_that_may_have_landed_is_never_applied_twice() {
    let (server, _) = serving("/docs/slow", json!({ "value": 10 })).await;
    let client = common::fast_client()
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    // The first attempt is applied and answered after the attempt timeout; its retry is stale.
    let result = client
        .update(server.url("/docs/slow?delay_ms=400"))
        .jitter_seed(5)
        .apply_json(increment)
        .await;
    match result {
        Err(UpdateError::Request(Error::OutcomeUnknown { attempts, .. })) => {
            assert_eq!(attempts.count(), 2);
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert_eq!(
        server.document("/docs/slow").expect("the document")["value"],
        json!(11),
        "applied once, not re-applied on the fresh read"
    );
}

#[tokio::test]
async fn an_update_of_a_missing_resource_is_a_404() {
    let server = MockServer::start().await.expect("mock server");
    let client = common::fast_client().build().expect("client");
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let missing = client
        .update(server.url("/docs/nowhere"))
        .apply_json(move |doc: Value| {
            counted.fetch_add(1, Ordering::Relaxed);
            increment(doc)
        })
        .await;
    assert!(
        matches!(&missing, Err(UpdateError::Request(Error::Status { status, .. })) if *status == 404),
        "{missing:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}
