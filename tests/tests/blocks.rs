//! Block heuristics end to end: the fixture corpus through the detector, and the client against
//! the mock server's block pages and its identity-tracking wall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use scrapewell::{
    BlockKind, BlockVerdict, Client, CookieJar, Error, Identity, Rotate, RuleSet, Target,
};
use scrapewell_core::block::{Detector, ResponseFacts};
use scrapewell_mock::{BLOCK_VENDORS, MockServer};

/// One fixture: its name, what it should be judged, and the response.
struct Fixture {
    name: String,
    expect: Option<(String, String)>,
    response: http::Response<()>,
    body: String,
}

fn fixtures(text: &str) -> Vec<Fixture> {
    text.split("\n=== ")
        .skip(1)
        .map(|entry| {
            let (name, rest) = entry.split_once('\n').expect("a name line");
            let (expect, rest) = rest.split_once('\n').expect("an expect line");
            let expect = expect.strip_prefix("expect: ").expect("expect: …");
            let expect = (expect != "none").then(|| {
                let (vendor, kind) = expect.split_once(' ').expect("vendor kind");
                (vendor.to_owned(), kind.to_owned())
            });
            let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|line| line.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .expect("a status line");
            let mut response = http::Response::builder().status(status);
            for line in lines {
                let (header, value) = line.split_once(": ").expect("name: value");
                response = response.header(header, value);
            }
            Fixture {
                name: name.to_owned(),
                expect,
                response: response.body(()).expect("a valid response"),
                body: body.trim_end_matches('\n').to_owned(),
            }
        })
        .collect()
}

fn judge(detector: &Detector, fixture: &Fixture) -> Option<BlockVerdict> {
    detector.classify(&ResponseFacts::of(
        &fixture.response,
        fixture.body.as_bytes(),
        true,
    ))
}

#[test]
fn every_block_in_the_corpus_is_found_and_no_trap_is_flagged() {
    let detector = Detector::default();
    let blocks = fixtures(include_str!("../fixtures/blocks.txt"));
    let traps = fixtures(include_str!("../fixtures/traps.txt"));
    let vendors: std::collections::HashSet<&str> = blocks
        .iter()
        .filter_map(|f| f.expect.as_ref().map(|(vendor, _)| vendor.as_str()))
        .collect();
    assert!(blocks.len() >= 30 && vendors.len() >= 10 && traps.len() >= 30);

    let mut misses = Vec::new();
    for fixture in &blocks {
        let (vendor, kind) = fixture.expect.as_ref().unwrap();
        match judge(&detector, fixture) {
            Some(v) if v.vendor() == vendor && v.kind().as_str() == kind => {}
            other => misses.push(format!(
                "{}: expected {vendor} {kind}, got {other:?}",
                fixture.name
            )),
        }
    }
    let mut false_positives = Vec::new();
    for fixture in &traps {
        assert!(fixture.expect.is_none(), "{}", fixture.name);
        if let Some(verdict) = judge(&detector, fixture) {
            false_positives.push(format!("{}: {verdict}", fixture.name));
        }
    }
    println!(
        "block corpus: recall {}/{} across {} vendors; false positives {}/{}",
        blocks.len() - misses.len(),
        blocks.len(),
        vendors.len(),
        false_positives.len(),
        traps.len()
    );
    assert!(misses.is_empty(), "missed:\n{}", misses.join("\n"));
    assert!(
        false_positives.is_empty(),
        "flagged:\n{}",
        false_positives.join("\n")
    );
}

/// What the detector calls the vendors the mock server plays.
fn detector_vendor(mock_vendor: &str) -> &str {
    match mock_vendor {
        "captcha" | "empty" => "generic",
        other => other,
    }
}

#[tokio::test]
async fn every_vendor_page_of_the_mock_ends_in_a_blocked_error_after_one_attempt() {
    let server = MockServer::start().await.unwrap();
    let client = Client::builder()
        .block_cool_down(Duration::ZERO)
        .build()
        .unwrap();
    for vendor in BLOCK_VENDORS {
        let error = client
            .get(server.url(&format!("/blocked/{vendor}")))
            .send()
            .await
            .unwrap_err();
        let Error::Blocked {
            verdict,
            attempts,
            status,
            ..
        } = &error
        else {
            panic!("{vendor}: {error:?}");
        };
        assert_eq!(verdict.vendor(), detector_vendor(vendor), "{vendor}");
        assert_eq!(attempts.count(), 1, "{vendor} was retried");
        assert!(status.is_some());
    }
    assert_eq!(server.stats().blocks_served, BLOCK_VENDORS.len() as u64);
}

#[tokio::test]
async fn a_caller_that_asks_receives_the_block_page_with_its_verdict() {
    let server = MockServer::start().await.unwrap();
    let client = Client::new();
    let response = client
        .get(server.url("/blocked/cloudflare"))
        .receive_blocked()
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let verdict = response.block_verdict().unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("cloudflare", BlockKind::Challenge)
    );
    assert!(response.text().await.unwrap().contains("Just a moment..."));
    // An ordinary page has no verdict.
    let page = client.get(server.url("/page/1")).send().await.unwrap();
    assert!(page.block_verdict().is_none());
}

#[tokio::test]
async fn with_detection_off_a_block_page_is_judged_by_its_status_alone() {
    let server = MockServer::start().await.unwrap();
    let client = Client::builder()
        .block_detection(false)
        .max_attempts(1)
        .build()
        .unwrap();
    let mut attempts = 0;
    for vendor in BLOCK_VENDORS {
        // Twice: a block would have cooled the host down and failed the second unsent.
        for _ in 0..2 {
            let result = client
                .get(server.url(&format!("/blocked/{vendor}")))
                .send()
                .await;
            // A 403 page is handed over, and a 429 one ends in `Error::RateLimited` as any
            // 429 would (after one attempt here, or the host's learned pace would slow the
            // test down).
            let (count, verdict) = match &result {
                Ok(response) => (response.attempts().count(), response.block_verdict()),
                Err(error) => {
                    assert!(error.status().is_some(), "{vendor}: {error:?}");
                    (error.attempts().unwrap().count(), error.block_verdict())
                }
            };
            assert!(verdict.is_none(), "{vendor}: {verdict:?}");
            attempts += u64::from(count);
        }
    }
    assert_eq!(server.stats().blocks_served, attempts);
}

#[tokio::test]
async fn a_rule_that_misfires_on_a_site_can_be_dropped() {
    let server = MockServer::start().await.unwrap();
    // The last fragment of a list, empty: the shipped rules read it as a soft block.
    let last_fragment = server.url("/status/200/comments?body=&content_type=text/html");
    let error = Client::new().get(&last_fragment).send().await.unwrap_err();
    match &error {
        Error::Blocked { verdict, .. } => assert_eq!(verdict.kind(), BlockKind::SoftBlock),
        other => panic!("expected a soft block, got {other:?}"),
    }

    let mut rules = RuleSet::embedded();
    rules.retain(|rule| rule.target != Target::EmptyBody);
    let client = Client::builder().block_rules(rules).build().unwrap();
    for _ in 0..2 {
        let response = client.get(&last_fragment).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.block_verdict().is_none());
    }
}

/// Hands out `session=s1`, `session=s2`, … and counts the calls.
#[derive(Clone, Default)]
struct FreshSessions {
    calls: Arc<AtomicU32>,
}

impl Rotate for FreshSessions {
    fn rotate(&self, _host: &str, verdict: &BlockVerdict) -> Option<Identity> {
        assert_eq!(verdict.vendor(), "datadome");
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Identity::new().cookie(&format!("session=s{n}")).ok()
    }
}

/// A mock server, and a client whose hook hands out fresh sessions.
async fn rotating() -> (MockServer, FreshSessions, Client) {
    let server = MockServer::start().await.expect("mock server");
    let hook = FreshSessions::default();
    let client = Client::builder()
        .rotate_identity(hook.clone())
        .build()
        .expect("client");
    (server, hook, client)
}

#[tokio::test]
async fn a_crawl_through_an_identity_blocked_every_50_requests_finishes_with_a_rotation_hook() {
    let (server, hook, client) = rotating().await;
    let mut errors = 0;
    for page in 0..200 {
        let url = server.url(&format!("/guarded/{page}?after=50"));
        match client.get(url).send().await {
            Ok(response) => assert_eq!(response.status(), 200),
            Err(error) => {
                errors += 1;
                eprintln!("page {page}: {error}");
            }
        }
    }
    let stats = server.stats();
    assert_eq!(errors, 0);
    // Identities 0, 1 and 2 served 50 pages each and were blocked on the 51st; 3 finished.
    assert_eq!(stats.identities_blocked, 3);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats.blocks_served, 3);
    // No request ever went out again with an identity that had been blocked.
    assert_eq!(stats.blocked_identity_requests, 0);
}

#[tokio::test]
async fn concurrent_requests_blocked_together_rotate_once_per_identity() {
    let (server, hook, client) = rotating().await;
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let client = client.clone();
            let base = server.url("/guarded");
            tokio::spawn(async move {
                let mut errors = 0;
                for page in (worker..200).step_by(8) {
                    if client
                        .get(format!("{base}/{page}?after=50"))
                        .send()
                        .await
                        .is_err()
                    {
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap();
    }
    let stats = server.stats();
    assert_eq!(errors, 0);
    // Each blocked identity was rotated once, however many requests it had in flight.
    assert_eq!(
        u64::from(hook.calls.load(Ordering::SeqCst)),
        stats.identities_blocked
    );
    // Only requests already on their way when their identity was blocked can arrive with it.
    assert!(stats.blocked_identity_requests <= 8 * stats.identities_blocked);
}

#[tokio::test]
async fn without_a_hook_the_block_ends_the_request_and_the_host_cools_down() {
    let server = MockServer::start().await.unwrap();
    let client = Client::builder()
        .block_cool_down(Duration::from_secs(600))
        .build()
        .unwrap();
    crawl_guarded(&client, &server, 5, 5).await;
    let error = client
        .get(server.url("/guarded/5?after=5"))
        .send()
        .await
        .unwrap_err();
    let verdict = error.block_verdict().unwrap();
    assert_eq!(
        (verdict.vendor(), verdict.kind()),
        ("datadome", BlockKind::Captcha)
    );
    assert_eq!(error.status().map(|s| s.as_u16()), Some(403));
    assert_eq!(error.attempts().unwrap().count(), 1);

    // The host cools down: the next requests fail at once, and nothing reaches the server.
    let requests_before = server.stats().requests;
    for page in 6..20 {
        let error = client
            .get(server.url(&format!("/guarded/{page}?after=5")))
            .send()
            .await
            .unwrap_err();
        let Error::Blocked {
            status,
            cooling_for,
            ..
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(status, None);
        assert!(cooling_for.unwrap() > Duration::from_secs(500));
    }
    let stats = server.stats();
    assert_eq!(stats.requests, requests_before);
    assert_eq!(stats.blocked_identity_requests, 0);
}

#[tokio::test]
async fn a_hook_that_gives_up_ends_in_the_blocked_error() {
    struct GiveUp;
    impl Rotate for GiveUp {
        fn rotate(&self, _: &str, _: &BlockVerdict) -> Option<Identity> {
            None
        }
    }
    let server = MockServer::start().await.unwrap();
    let client = Client::builder().rotate_identity(GiveUp).build().unwrap();
    let error = client
        .get(server.url("/guarded/1?after=0&vendor=akamai"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.block_verdict().unwrap().vendor(), "akamai");
    assert_eq!(server.stats().blocked_identity_requests, 0);
}

/// The first block hands out an identity that goes through the proxy at `proxy`.
#[derive(Clone)]
struct ThroughProxy {
    proxy: String,
    calls: Arc<AtomicU32>,
}

impl ThroughProxy {
    fn to(proxy: String) -> Self {
        ThroughProxy {
            proxy,
            calls: Arc::default(),
        }
    }
}

/// Fetches pages `0..pages` behind the site's wall, which blocks an identity after `after`
/// requests; every one must arrive.
async fn crawl_guarded(client: &Client, site: &MockServer, pages: u32, after: u32) {
    for page in 0..pages {
        let url = site.url(&format!("/guarded/{page}?after={after}"));
        let response = client.get(url).send().await.expect("every page arrives");
        assert_eq!(response.status(), 200);
    }
}

impl Rotate for ThroughProxy {
    fn rotate(&self, _host: &str, _verdict: &BlockVerdict) -> Option<Identity> {
        (self.calls.fetch_add(1, Ordering::SeqCst) == 0).then(|| {
            Identity::new()
                .proxy(&self.proxy)
                .and_then(|identity| identity.header("x-identity", "via-proxy"))
                .expect("a valid identity")
        })
    }
}

#[tokio::test]
async fn a_fresh_identity_can_send_the_requests_through_a_proxy() {
    let site = MockServer::start().await.unwrap();
    let proxy = MockServer::start().await.unwrap();
    let hook = ThroughProxy::to(proxy.base_url().replace("http://", "http://user:secret@"));
    let client = Client::builder()
        .rotate_identity(hook.clone())
        .build()
        .unwrap();
    crawl_guarded(&client, &site, 10, 5).await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    // Five pages direct, the sixth blocked; it and the rest went through the proxy.
    let (site, proxy) = (site.stats(), proxy.stats());
    assert_eq!(
        (site.requests, site.blocks_served, site.proxied_requests),
        (6, 1, 0)
    );
    assert_eq!((proxy.requests, proxy.proxied_requests), (5, 5));
}

#[tokio::test]
async fn a_client_proxy_carries_every_request_and_an_identity_proxy_replaces_it() {
    let site = MockServer::start().await.unwrap();
    let client_proxy = MockServer::start().await.unwrap();
    let identity_proxy = MockServer::start().await.unwrap();
    let hook = ThroughProxy::to(identity_proxy.base_url());
    let client = Client::builder()
        .proxy(
            &client_proxy
                .base_url()
                .replace("http://", "http://user:secret@"),
        )
        .rotate_identity(hook.clone())
        .build()
        .unwrap();
    crawl_guarded(&client, &site, 6, 3).await;
    // Three pages through the client's proxy, the fourth blocked there; it and the rest went
    // through the identity's. None went to the site directly.
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    let (site, client_proxy, identity_proxy) =
        (site.stats(), client_proxy.stats(), identity_proxy.stats());
    assert_eq!(site.requests, 0);
    assert_eq!(
        (client_proxy.proxied_requests, client_proxy.blocks_served),
        (4, 1)
    );
    assert_eq!(identity_proxy.proxied_requests, 3);
}

/// Hands out one fresh identity, known to the wall by its `x-identity` header, without cookies
/// of its own.
struct FreshHeader(Arc<AtomicU32>);

impl Rotate for FreshHeader {
    fn rotate(&self, _host: &str, _verdict: &BlockVerdict) -> Option<Identity> {
        (self.0.fetch_add(1, Ordering::SeqCst) == 0).then(|| {
            Identity::new()
                .header("x-identity", "fresh")
                .expect("a valid identity")
        })
    }
}

#[tokio::test]
async fn a_rotation_forgets_the_cookies_the_blocked_identity_was_given() {
    let site = MockServer::start().await.unwrap();
    let jar = Arc::new(CookieJar::new());
    assert!(jar.add("session=logged-in; Path=/", site.url("/login")));
    let calls = Arc::new(AtomicU32::new(0));
    let client = Client::builder()
        .cookie_jar(Arc::clone(&jar))
        .rotate_identity(FreshHeader(Arc::clone(&calls)))
        .build()
        .unwrap();
    crawl_guarded(&client, &site, 6, 3).await;
    // The logged-in session served three pages and was blocked on the fourth, whose DataDome
    // page set a cookie of its own; the fresh identity got that page and the rest, sent with
    // neither cookie: the wall never saw the blocked session again.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(jar.cookies(site.url("/")), None);
    let stats = site.stats();
    assert_eq!(stats.identities_blocked, 1);
    assert_eq!(stats.blocked_identity_requests, 0);
}

#[test]
fn a_client_proxy_that_is_not_a_url_fails_the_build_without_echoing_it() {
    let error = Client::builder()
        .proxy("http://user:secret@[bad")
        .build()
        .expect_err("not a URL");
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[test]
fn an_identity_with_a_proxy_that_is_not_a_url_is_refused_without_echoing_it() {
    let error = Identity::new()
        .proxy("http://user:secret@[bad")
        .expect_err("not a URL");
    assert!(matches!(error, Error::InvalidRequest { .. }));
    assert!(!error.to_string().contains("secret"), "{error}");
}
