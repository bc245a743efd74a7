//! Rate limits shared by a fleet of clients through a real Redis (Debian's `redis-server`,
//! installed when missing), asserted at the mock server: its `/limited` route keeps one GCRA for
//! the whole fleet, which names itself in the `x-client` header, and counts what went past it.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue};
use scrapewell::{Client, QuotaStore, RedisQuotaStore, SharedQuota};
use scrapewell_mock::MockServer;

use common::{closed_port, fast_client, install_package, judge_pace, wait_until_listening};

const REDIS: &str = "/usr/bin/redis-server";

/// A Redis of the test's own, on a free loopback port, keeping nothing on disk; stopped when
/// dropped.
struct Redis {
    process: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(closed_port())
    }

    fn start_on(port: u16) -> Redis {
        install_package("redis-server", REDIS);
        let process = Command::new(REDIS)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        let redis = Redis { process, port };
        wait_until_listening(port, "redis-server");
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// How long `key` has left to live, by `redis-cli` (installed with the server): below zero
    /// for a key that does not expire or does not exist.
    fn milliseconds_left(&self, key: &str) -> i64 {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PTTL", key])
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("PTTL answers a number")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A worker of the fleet: limited to `per_second` at the mock, with the fleet's name on every
/// request, its limit shared through `store` when there is one; one attempt per request, so
/// that every refusal shows at the server as it happened.
fn worker(per_second: f64, store: Option<RedisQuotaStore>) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-client", HeaderValue::from_static("fleet"));
    let mut builder = fast_client()
        .default_headers(headers)
        .max_attempts(1)
        .host_rate_limit("127.0.0.1", per_second);
    if let Some(store) = store {
        builder = builder.shared_rate_limits(store);
    }
    builder.build().expect("client")
}

/// Each of `workers` sends `each` GETs to `url`, all at once; how many ended in a 200.
async fn run_fleet(workers: &[Client], url: &str, each: usize) -> usize {
    join_all(workers.iter().flat_map(|worker| {
        (0..each).map(move |_| async move {
            worker
                .get(url)
                .send()
                .await
                .is_ok_and(|response| response.status() == 200)
        })
    }))
    .await
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// The waits of four slots reserved one after the other.
async fn reserve_four(store: &RedisQuotaStore, host: &str, quota: SharedQuota) -> Vec<Duration> {
    let mut waits = Vec::new();
    for _ in 0..4 {
        waits.push(store.reserve(host, quota).await.expect("reserve"));
    }
    waits
}

#[tokio::test]
async fn the_script_hands_out_slots_one_interval_apart_after_the_burst() {
    let redis = Redis::start();
    let store = RedisQuotaStore::open(&redis.url()).expect("store");
    let every_100_ms = SharedQuota::new(Duration::from_millis(100), 1);
    let started = Instant::now();
    let waits = reserve_four(&store, "one.test:80", every_100_ms).await;
    // Each slot is 100 ms after the one before, less the time the questions took.
    let asked_in = started.elapsed();
    for (n, wait) in waits.iter().enumerate() {
        let slot = Duration::from_millis(100) * n as u32;
        assert!(
            *wait <= slot && *wait + asked_in >= slot,
            "slot {n}: waits {waits:?}, asked in {asked_in:?}"
        );
    }
    // A burst of three: three slots at once, the fourth an interval later.
    let burst = SharedQuota::new(Duration::from_millis(100), 3);
    let waits = reserve_four(&store, "three.test:80", burst).await;
    assert_eq!(waits[..3], [Duration::ZERO; 3], "{waits:?}");
    assert!(waits[3] > Duration::from_millis(50), "{waits:?}");
    // Hosts are kept apart, and so are the fleets of other prefixes.
    let other = RedisQuotaStore::open(&redis.url())
        .expect("store")
        .prefix("other-fleet:");
    assert_eq!(
        other
            .reserve("one.test:80", every_100_ms)
            .await
            .expect("reserve"),
        Duration::ZERO
    );
    // A host's key lasts a second past the last slot taken (400 ms ahead), then goes.
    let kept = redis.milliseconds_left("scrapewell:quota:one.test:80");
    assert!((1_000..=1_400).contains(&kept), "{kept} ms");
}

/// A free port on loopback for a mock server of the test's own.
const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

#[tokio::test]
async fn ten_workers_sharing_a_limit_through_redis_keep_to_it_at_the_server() {
    let redis = Redis::start();
    let store = RedisQuotaStore::open(&redis.url()).expect("store");
    let runs = AtomicUsize::new(0);
    judge_pace("ten workers sharing 20/s through Redis", || async {
        // A server of the run's own, on a thread of its own, stamps arrivals when they come.
        let mock = MockServer::start_dedicated(LOOPBACK).expect("mock server");
        let run = runs.fetch_add(1, Ordering::Relaxed);
        // The server allows the fleet 20 a second, tolerating one request early.
        let path = format!("/limited/fleet-{run}");
        let workers: Vec<Client> = (0..10).map(|_| worker(20.0, Some(store.clone()))).collect();
        let ok = run_fleet(&workers, &mock.url(&format!("{path}?rate=20&burst=2")), 6).await;
        let shared = mock.limits(&path);
        println!("ten workers sharing 20/s: {shared:?}");
        let rate = shared.rate.unwrap_or_default();
        if ok != 60 || shared.refused > 1 || !(15.0..=20.5).contains(&rate) {
            return Err(format!("{ok} of 60 answered, {shared:?}").into());
        }
        Ok(())
    })
    .await;
    // The same ten, each keeping to the limit alone, send ten times what it allows.
    let mock = MockServer::start_dedicated(LOOPBACK).expect("mock server");
    let workers: Vec<Client> = (0..10).map(|_| worker(20.0, None)).collect();
    run_fleet(&workers, &mock.url("/limited/alone?rate=20&burst=2"), 2).await;
    let alone = mock.limits("/limited/alone");
    println!("ten workers at 20/s each: {alone:?}");
    assert!(alone.refused >= 5, "{alone:?}");
}

#[tokio::test]
async fn workers_keep_to_their_own_limit_while_redis_is_away_and_share_it_again_once_back() {
    let redis = Redis::start();
    let (port, url) = (redis.port, redis.url());
    let mock = MockServer::start().await.expect("mock server");
    let store = || {
        RedisQuotaStore::open(&url)
            .expect("store")
            .timeout(Duration::from_millis(200))
    };
    let first = worker(50.0, Some(store()));
    let page = mock.url("/page/1");
    for _ in 0..3 {
        first.get(&page).send().await.expect("with Redis");
    }
    drop(redis);
    let away = Instant::now();
    for _ in 0..10 {
        first.get(&page).send().await.expect("without Redis");
    }
    // Each request asked a Redis that was not there and went on without waiting for it.
    let took = away.elapsed();
    println!("ten requests with Redis away: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Once Redis is back, the first worker shares its limit again with a second one: the
    // server sees the two keep to one limit between them.
    let _back = Redis::start_on(port);
    let runs = AtomicUsize::new(0);
    judge_pace("two workers sharing 50/s after Redis came back", || async {
        let mock = MockServer::start_dedicated(LOOPBACK).expect("mock server");
        let second = worker(50.0, Some(store()));
        let path = format!("/limited/after-{}", runs.fetch_add(1, Ordering::Relaxed));
        let limited = mock.url(&format!("{path}?rate=50&burst=2"));
        let ok = run_fleet(&[first.clone(), second], &limited, 15).await;
        let stats = mock.limits(&path);
        println!("two workers sharing 50/s after the outage: {stats:?}");
        if ok != 30 || stats.refused > 1 {
            return Err(format!("{ok} of 30 answered, {stats:?}").into());
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_never_answers_holds_a_request_back_no_longer_than_the_timeout() {
    // Takes connections and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("address").port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let mock = MockServer::start().await.expect("mock server");
    let store = RedisQuotaStore::open(&format!("redis://127.0.0.1:{port}/"))
        .expect("store")
        .timeout(Duration::from_millis(100));
    let client = worker(50.0, Some(store));
    let started = Instant::now();
    for _ in 0..3 {
        client.get(mock.url("/page/1")).send().await.expect("sent");
    }
    let took = started.elapsed();
    held.abort();
    // Three requests, each after at most the timeout: not the attempt timeout, not forever.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn a_store_url_that_is_not_redis_is_an_error_and_its_password_is_not_echoed() {
    for url in [
        "not a url",
        "http://127.0.0.1:6379/",
        "redis://:PASSWORD@127.0.0.1:notaport/",
    ] {
        let error = RedisQuotaStore::open(url).expect_err(url).to_string();
        assert!(!error.contains("PASSWORD"), "{error}");
    }
}
