//! `cargo run --example demo`: a mixed scraping workload against the hostile mock server.
//!
//! 720 logical requests at concurrency 16: page GETs that fail transiently (5xx, 429, a reset in
//! the middle of the body), form POSTs into a slow idempotent create whose processing outlasts
//! the attempt timeout, orders sent once that time out and are sent again with the key their
//! error names, PUTs to locked documents, POSTs that meet a permanent conflict, and
//! listing pages on a second host that allows 20 requests a second and answers bare 429s past
//! that (the client is told nothing about it and learns the pace). Then a third host behind
//! anti-bot walls: one block page of each vendor the mock plays, and a crawl through a wall that
//! blocks each identity after 40 pages, with a hook that hands out fresh sessions.
//! Last, concurrent editors: 16 tasks edit three shared counters (one versioned by ETag, one
//! whose server answers stale writes with 409, one CouchDB-shaped with `_rev` in the body) by
//! read-modify-write, and ten race to create the same draft.
//! It prints what happened and exits non-zero when an invariant breaks: a duplicate create, a
//! request that did not end as its kind should, a permanent 409 that was retried, a block page
//! not recognised or retried, a page behind the wall that failed despite rotation, an edit lost
//! or applied twice, a create race with other than one winner.
//!
//! Set `RUST_LOG=scrapewell_core=info` to see each retry as it is decided.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use scrapewell::{BlockVerdict, Client, Error, Identity, Response, Rotate, VersionAt};
use scrapewell_mock::{BLOCK_VENDORS, MockServer};

const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Page,
    Create,
    Resend,
    Lock,
    Conflict,
    Limited,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Page => "pages (flaky GET)",
            Kind::Create => "creates (form POST)",
            Kind::Resend => "orders sent again",
            Kind::Lock => "locked docs (PUT)",
            Kind::Conflict => "duplicates (POST)",
            Kind::Limited => "listings (20/s host)",
        }
    }
}

struct Job {
    kind: Kind,
    path: String,
    reference: Option<String>,
    /// Where the job falls in the run, as a share of its kind's jobs (0 ..= 1,000,000).
    position: usize,
}

struct Finished {
    kind: Kind,
    path: String,
    result: Result<Response, Error>,
    /// Attempts of a first send that failed, before the one `result` is of.
    earlier_attempts: u32,
}

fn workload() -> Vec<Job> {
    // Server errors, not throttling: the 20/s host shows what the rate limiter learns.
    const STATUSES: [u16; 3] = [502, 500, 504];
    let page = |n: usize| {
        if n % 10 == 9 {
            format!("/reset/page-{n}?times=1")
        } else {
            format!(
                "/flaky/page-{n}?fail={}&status={}",
                n % 3,
                STATUSES[n % STATUSES.len()]
            )
        }
    };
    let mut jobs = Vec::new();
    jobs.extend(spread(Kind::Page, 300, |n| (page(n), None)));
    jobs.extend(spread(Kind::Create, 200, |n| {
        (
            "/orders?delay_ms=150&require_key=1".to_owned(),
            Some(format!("order-{n}")),
        )
    }));
    jobs.extend(spread(Kind::Resend, 20, |n| {
        (
            "/orders?delay_ms=150&require_key=1".to_owned(),
            Some(format!("resent-{n}")),
        )
    }));
    jobs.extend(spread(Kind::Lock, 60, |n| {
        (format!("/lock/doc-{n}?times=1&retry_after=1"), None)
    }));
    jobs.extend(spread(Kind::Conflict, 40, |n| {
        (format!("/conflict/sku-{n}"), None)
    }));
    jobs.extend(spread(Kind::Limited, 100, |_| {
        ("/limited/listing?rate=20".to_owned(), None)
    }));
    // Interleave the kinds evenly, as a crawl would.
    jobs.sort_by_key(|job| job.position);
    jobs
}

/// `count` jobs of one kind, spread evenly over the run; `make` gives each its path and client
/// reference.
fn spread(
    kind: Kind,
    count: usize,
    make: impl Fn(usize) -> (String, Option<String>),
) -> impl Iterator<Item = Job> {
    (0..count).map(move |n| {
        let (path, reference) = make(n);
        Job {
            kind,
            path,
            reference,
            position: n * 1_000_000 / count,
        }
    })
}

async fn run(client: &Client, servers: &Servers, job: Job) -> Finished {
    let server = if job.kind == Kind::Limited {
        &servers.limited
    } else {
        &servers.site
    };
    let url = server.url(&job.path);
    let path = job.path.split('?').next().unwrap_or_default().to_owned();
    if job.kind == Kind::Resend {
        return resend(client, &url, job.reference.unwrap_or_default(), path).await;
    }
    let request = match job.kind {
        Kind::Page | Kind::Limited => client.get(url),
        Kind::Create => client
            .post(url)
            .form(&[
                ("ref", job.reference.as_deref().unwrap_or_default()),
                ("qty", "1"),
            ])
            .attempt_timeout(Duration::from_millis(50)),
        Kind::Resend => unreachable!("sent by `resend`"),
        Kind::Lock => client.put(url).body("{\"title\":\"edited\"}"),
        Kind::Conflict => client
            .post(url)
            .json(&serde_json::json!({ "sku": job.path })),
    };
    let result = request.send().await;
    Finished {
        kind: job.kind,
        path,
        result,
        earlier_attempts: 0,
    }
}

/// An order sent with a single short attempt, which times out while the server works on it;
/// then, as a scraper would after such a failure, sent again with the key its error names. The
/// second send is answered with what the server did for the first: the order exists once.
async fn resend(client: &Client, url: &str, reference: String, path: String) -> Finished {
    let order = [("ref", reference.as_str()), ("qty", "1")];
    let first = client
        .post(url)
        .form(&order)
        .attempt_timeout(Duration::from_millis(50))
        .max_attempts(1)
        .send()
        .await;
    let earlier = first.as_ref().err().and_then(Error::attempts);
    let earlier_attempts = earlier.map_or(0, |attempts| attempts.count());
    let key = earlier
        .and_then(|attempts| attempts.idempotency_key())
        .and_then(|key| key.as_str())
        .map(str::to_owned);
    let result = match key {
        Some(key) => {
            client
                .post(url)
                .form(&order)
                .idempotency_key(&key)
                .max_attempts(10)
                .send()
                .await
        }
        // Answered in time, or failed without a key to send it again with: that is the result.
        None => first,
    };
    Finished {
        kind: Kind::Resend,
        path,
        result,
        earlier_attempts,
    }
}

/// The site under test, and a second host that rate-limits.
struct Servers {
    site: MockServer,
    limited: MockServer,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let servers = match (MockServer::start().await, MockServer::start().await) {
        (Ok(site), Ok(limited)) => Servers { site, limited },
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("cannot start the mock servers: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The mock fails on purpose far more often than a healthy site: allow up to three retries
    // per request in the budget instead of the default 20%.
    let client = match Client::builder()
        .max_attempts(8)
        .max_in_flight_per_host(CONCURRENCY as u32)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .jitter_seed(2026)
        .retry_budget(Duration::from_secs(10), 10, 3.0)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("cannot build the client: {error}");
            return ExitCode::FAILURE;
        }
    };

    let jobs = workload();
    let total = jobs.len();
    println!(
        "scrapewell demo: {total} logical requests at concurrency {CONCURRENCY} against {}\n",
        servers.site.base_url()
    );
    let started = Instant::now();
    use futures_util::StreamExt;
    let finished: Vec<Finished> = futures_util::stream::iter(jobs)
        .map(|job| run(&client, &servers, job))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let (report, mut violations) = summarize(&finished, &client, &servers);
    print!("{report}");
    match blocked_host().await {
        Ok((report, broken)) => {
            print!("{report}");
            violations.extend(broken);
        }
        Err(error) => violations.push(format!("the blocked host could not run: {error}")),
    }
    match concurrent_editors().await {
        Ok((report, broken)) => {
            print!("{report}");
            violations.extend(broken);
        }
        Err(error) => violations.push(format!("the editors could not run: {error}")),
    }
    println!("\n{total} requests in {:.2} s", elapsed.as_secs_f64());
    if violations.is_empty() {
        println!("all invariants hold");
        ExitCode::SUCCESS
    } else {
        for violation in &violations {
            eprintln!("INVARIANT BROKEN: {violation}");
        }
        ExitCode::FAILURE
    }
}

/// The summary table, and the invariants that broke.
fn summarize(finished: &[Finished], client: &Client, servers: &Servers) -> (String, Vec<String>) {
    let server = &servers.site;
    #[derive(Default)]
    struct Row {
        requests: u64,
        attempts: u64,
        ok: u64,
        errors: u64,
    }
    let mut rows: BTreeMap<Kind, Row> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for done in finished {
        let attempts = match &done.result {
            Ok(response) => Some(response.attempts()),
            Err(error) => error.attempts(),
        };
        let row = rows.entry(done.kind).or_default();
        row.requests += 1;
        row.attempts +=
            attempts.map_or(0, |a| u64::from(a.count())) + u64::from(done.earlier_attempts);
        for retry in attempts.map(|a| a.retries()).unwrap_or_default() {
            *reasons.entry(retry.reason.to_string()).or_default() += 1;
        }
        let outcome = match &done.result {
            Ok(response) if response.status().is_success() => "success",
            Ok(_) => "error status",
            Err(Error::Conflict { .. }) => "conflict (409, not retried)",
            Err(Error::OutcomeUnknown { .. }) => "outcome unknown",
            Err(Error::BudgetExhausted { .. }) => "retry budget exhausted",
            Err(error) if error.is_timeout() => "timeout",
            Err(_) => "other error",
        };
        *outcomes.entry(outcome).or_default() += 1;
        if done.result.is_ok() {
            row.ok += 1;
        } else {
            row.errors += 1;
        }
        let expected = match done.kind {
            Kind::Page | Kind::Create | Kind::Lock | Kind::Limited => outcome == "success",
            // Sent again only after a failure that named its key: a success is the replay.
            Kind::Resend => outcome == "success" && done.earlier_attempts > 0,
            Kind::Conflict => outcome.starts_with("conflict"),
        };
        if !expected {
            violations.push(format!(
                "{} {} ended as {outcome}: {:?}",
                done.kind.label(),
                done.path,
                done.result.as_ref().err()
            ));
        }
        if done.kind == Kind::Conflict {
            let hits = server.hits(&done.path);
            if attempts.map_or(0, |a| a.count()) != 1 || hits != 1 {
                violations.push(format!(
                    "permanent 409 at {} was retried ({hits} requests at the server)",
                    done.path
                ));
            }
        }
    }
    let stats = server.stats();
    let creates_asked = [Kind::Create, Kind::Resend]
        .iter()
        .map(|kind| rows.get(kind).map_or(0, |r| r.requests))
        .sum::<u64>();
    if stats.duplicate_creates > 0 {
        violations.push(format!(
            "{} duplicate creates at the server",
            stats.duplicate_creates
        ));
    }
    if stats.creates != creates_asked || stats.distinct_refs != creates_asked {
        violations.push(format!(
            "{creates_asked} creates asked for, {} made for {} references",
            stats.creates, stats.distinct_refs
        ));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>9} {:>13}",
        "workload", "requests", "attempts", "ok", "typed errors"
    );
    let mut totals = Row::default();
    for (kind, row) in &rows {
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9} {:>9} {:>13}",
            kind.label(),
            row.requests,
            row.attempts,
            row.ok,
            row.errors
        );
        totals.requests += row.requests;
        totals.attempts += row.attempts;
        totals.ok += row.ok;
        totals.errors += row.errors;
    }
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>9} {:>13}",
        "total", totals.requests, totals.attempts, totals.ok, totals.errors
    );
    let _ = writeln!(out, "\nretries by reason");
    for (reason, count) in &reasons {
        let _ = writeln!(out, "  {reason:<28} {count:>6}");
    }
    let _ = writeln!(out, "\noutcomes by kind");
    for (outcome, count) in &outcomes {
        let _ = writeln!(out, "  {outcome:<28} {count:>6}");
    }
    let _ = writeln!(out, "\nat the server");
    for (label, value) in [
        ("requests received", stats.requests),
        ("orders created", stats.creates),
        ("distinct references", stats.distinct_refs),
        ("duplicate creates", stats.duplicate_creates),
        ("409 key in flight", stats.in_flight_conflicts),
        ("stored responses replayed", stats.replays),
        ("409 locked", stats.lock_conflicts),
        ("409 permanent", stats.permanent_conflicts),
        ("injected 5xx / 429", stats.injected_failures),
        ("connections cut mid-body", stats.resets),
    ] {
        let _ = writeln!(out, "  {label:<28} {value:>6}");
    }
    let limits = servers.limited.limits("/limited/listing");
    let learned = client.host_stats(servers.limited.base_url());
    let _ = writeln!(
        out,
        "\nrate-limited host (20/s, bare 429s; the client was told nothing)"
    );
    let _ = writeln!(out, "  {:<28} {:>6}", "accepted", limits.accepted);
    let _ = writeln!(out, "  {:<28} {:>6}", "refused (429)", limits.refused);
    let _ = writeln!(
        out,
        "  {:<28} {:>8.2}",
        "rate reached, per second",
        limits.rate.unwrap_or(0.0)
    );
    let pace = learned
        .and_then(|stats| stats.interval)
        .map_or("none".to_owned(), |i| {
            format!("{:.1}/s", 1.0 / i.as_secs_f64())
        });
    let _ = writeln!(out, "  {:<28} {:>8}", "pace learned", pace);
    (out, violations)
}

/// Hands out a fresh session cookie after each block, and counts them.
#[derive(Clone, Default)]
struct FreshSessions(Arc<AtomicU32>);

impl Rotate for FreshSessions {
    fn rotate(&self, _host: &str, _verdict: &BlockVerdict) -> Option<Identity> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Identity::new().cookie(&format!("session=demo-{n}")).ok()
    }
}

/// A host behind anti-bot walls: one page of every vendor the mock plays, then a crawl through
/// a wall that blocks each identity after 40 pages, with a hook that rotates the session.
async fn blocked_host() -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let walled = MockServer::start().await?;
    let mut violations = Vec::new();
    let mut by_vendor: BTreeMap<String, u32> = BTreeMap::new();
    let plain = Client::builder().block_cool_down(Duration::ZERO).build()?;
    for vendor in BLOCK_VENDORS {
        let expected = match *vendor {
            "captcha" | "empty" => "generic",
            other => other,
        };
        match plain
            .get(walled.url(&format!("/blocked/{vendor}")))
            .send()
            .await
        {
            Err(Error::Blocked {
                verdict, attempts, ..
            }) => {
                *by_vendor
                    .entry(format!("{} {}", verdict.vendor(), verdict.kind()))
                    .or_default() += 1;
                if verdict.vendor() != expected {
                    violations.push(format!("{vendor}'s page was judged {verdict}"));
                }
                if attempts.count() != 1 {
                    violations.push(format!("{vendor}'s block page was retried"));
                }
            }
            other => violations.push(format!(
                "{vendor}'s block page was not recognised: {other:?}"
            )),
        }
    }

    let hook = FreshSessions::default();
    let rotating = Client::builder().rotate_identity(hook.clone()).build()?;
    use futures_util::StreamExt;
    let pages = 160;
    let errors = futures_util::stream::iter(0..pages)
        .map(|page| {
            let request = rotating.get(walled.url(&format!("/guarded/{page}?after=40")));
            async move { request.send().await.is_err() }
        })
        .buffer_unordered(4)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let stats = walled.stats();
    let rotations = hook.0.load(Ordering::Relaxed);
    if errors > 0 {
        violations.push(format!(
            "{errors} pages behind the wall failed despite rotation"
        ));
    }
    if u64::from(rotations) != stats.identities_blocked {
        violations.push(format!(
            "{rotations} rotations for {} blocked identities",
            stats.identities_blocked
        ));
    }

    let mut out = String::new();
    let _ = writeln!(out, "\nblocked host: one block page per vendor, verdicts");
    for (verdict, count) in &by_vendor {
        let _ = writeln!(out, "  {verdict:<28} {count:>6}");
    }
    let _ = writeln!(
        out,
        "\nwall blocking each identity after 40 pages ({pages} pages, concurrency 4)"
    );
    for (label, value) in [
        ("pages that failed", errors as u64),
        ("identities blocked", stats.identities_blocked),
        ("fresh identities (rotations)", u64::from(rotations)),
        (
            "requests with a blocked one",
            stats.blocked_identity_requests,
        ),
    ] {
        let _ = writeln!(out, "  {label:<28} {value:>6}");
    }
    Ok((out, violations))
}

/// The shared documents the editors work on: where each lives and where it keeps its version.
const DOCUMENTS: [(&str, &str, &str); 3] = [
    ("page views (ETag, 412)", "/docs/page-views", ""),
    ("stock (ETag, 409 problem)", "/docs/stock", "?stale=409"),
    ("cart (CouchDB _rev)", "/couch/shop/cart", ""),
];
const EDITORS: usize = 16;
const EDITS_EACH: usize = 30;

/// Editors that increment shared counters concurrently, and a race to create one draft.
async fn concurrent_editors() -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    use futures_util::StreamExt;
    let server = MockServer::start().await?;
    let client = Client::builder().jitter_seed(7).build()?;
    for (_, path, _) in DOCUMENTS {
        client
            .put(server.url(path))
            .json(&serde_json::json!({ "value": 0 }))
            .send()
            .await?;
    }
    let edits = (0..EDITORS).flat_map(|editor| (0..EDITS_EACH).map(move |n| (editor, n)));
    let results: Vec<_> = futures_util::stream::iter(edits)
        .map(|(editor, n)| {
            let document = (editor + n) % DOCUMENTS.len();
            let (_, path, query) = DOCUMENTS[document];
            let version = if path.starts_with("/couch") {
                VersionAt::JsonMember("_rev".to_owned())
            } else {
                VersionAt::ETag
            };
            let update = client
                .update(server.url(&format!("{path}{query}")))
                .version_at(version)
                .max_rounds(100)
                .jitter_seed((editor * EDITS_EACH + n) as u64);
            async move {
                let updated = update
                    .apply_json(|mut doc: serde_json::Value| {
                        let value = doc["value"].as_u64().ok_or("not a counter")?;
                        doc["value"] = serde_json::json!(value + 1);
                        Ok::<_, &str>(Some(doc))
                    })
                    .await;
                (document, updated.map(|updated| updated.rounds))
            }
        })
        .buffer_unordered(EDITORS)
        .collect()
        .await;

    let mut violations = Vec::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nconcurrent editors: {EDITORS} tasks, {EDITS_EACH} increments each, over {} shared documents",
        DOCUMENTS.len()
    );
    let _ = writeln!(
        out,
        "  {:<28} {:>8} {:>8} {:>8} {:>8}",
        "document", "edits", "final", "rounds", "failed"
    );
    for (index, (label, path, _)) in DOCUMENTS.iter().enumerate() {
        let mine: Vec<_> = results.iter().filter(|(d, _)| *d == index).collect();
        let rounds: u32 = mine.iter().filter_map(|(_, r)| r.as_ref().ok()).sum();
        let failed = mine.iter().filter(|(_, r)| r.is_err()).count();
        let final_value = server
            .document(path)
            .and_then(|doc| doc["value"].as_u64())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {label:<28} {:>8} {final_value:>8} {rounds:>8} {failed:>8}",
            mine.len()
        );
        if final_value != mine.len() as u64 || failed > 0 {
            violations.push(format!(
                "{label}: {} edits made, final value {final_value}, {failed} failed",
                mine.len()
            ));
        }
    }

    let creates = futures_util::stream::iter(0..10)
        .map(|owner| {
            client
                .put(server.url("/docs/draft"))
                .json(&serde_json::json!({ "owner": owner }))
                .create_only()
                .send()
        })
        .buffer_unordered(10)
        .collect::<Vec<_>>()
        .await;
    let created = creates.iter().filter(|r| r.is_ok()).count();
    let exists = creates
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_already_exists()))
        .count();
    if (created, exists) != (1, 9) {
        violations.push(format!(
            "create race: {created} created, {exists} already exists (want 1 and 9)"
        ));
    }
    let stats = server.stats();
    for (label, value) in [
        ("writes applied", stats.applied_writes),
        ("stale writes re-read", stats.stale_writes),
        ("create race: created", created as u64),
        ("create race: already exists", exists as u64),
    ] {
        let _ = writeln!(out, "  {label:<28} {value:>8}");
    }
    Ok((out, violations))
}
