//! Helpers shared by the end-to-end suites.

// Each suite compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use scrapewell::ClientBuilder;

/// A client whose backoff is short enough for tests on loopback, with seeded jitter.
pub(crate) fn fast_client() -> ClientBuilder {
    scrapewell::Client::builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .jitter_seed(2)
}

/// A `200 OK` with `headers` (each line ending in CRLF), `body` and its length, as raw bytes for
/// a [`RawServer`].
pub(crate) fn ok_with(headers: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// A loopback server that answers every request with the same bytes, whatever they are, and
/// closes the connection. It keeps the head of each request it read; dropped, it stops.
pub(crate) struct RawServer {
    /// Its base URL.
    pub(crate) url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub(crate) async fn start(response: impl Into<Vec<u8>>) -> RawServer {
        use tokio::io::AsyncWriteExt;
        let response = response.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let seen = std::sync::Arc::clone(&heads);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let head = read_head(&mut socket).await;
                lock(&seen).push(String::from_utf8_lossy(&head).into_owned());
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            }
        });
        RawServer { url, heads, task }
    }

    /// The heads of the requests read so far, which are then forgotten.
    pub(crate) fn take_heads(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.heads))
    }
}

/// Reads a request's head (up to the blank line, with whatever came with it), or what arrived
/// before the connection closed.
pub(crate) async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buffer = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    head
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the mock's `/echo` saw of `request`: its method, path, query and headers.
pub(crate) async fn echo_of(request: scrapewell::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("the echo answers")
        .json()
        .await
        .expect("the echo's JSON")
}

/// A loopback port with nothing listening on it.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until a server the test started (`what`) listens on loopback's `port`, for 10 s at most.
pub(crate) fn wait_until_listening(port: u16, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Installs Debian's `package` when `binary` is missing, without letting the package start a
/// service of its own (that would be a process no test stops). Root is needed, as CI runs.
pub(crate) fn install_package(package: &str, binary: &str) {
    use std::path::Path;
    use std::process::Command;
    // One installation at a time: apt-get holds a lock, and tests run in parallel.
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _apt = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if Path::new(binary).exists() {
        return;
    }
    let guard = Path::new("/usr/sbin/policy-rc.d");
    let had_guard = guard.exists();
    if !had_guard {
        std::fs::write(guard, "#!/bin/sh\nexit 101\n").unwrap_or_else(|e| {
            panic!("write policy-rc.d (root is needed to install {package}): {e}")
        });
        let _ = Command::new("chmod")
            .args(["+x", "/usr/sbin/policy-rc.d"])
            .status();
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    if !had_guard {
        let _ = std::fs::remove_file(guard);
    }
    assert!(
        installed && Path::new(binary).exists(),
        "could not install {package} with apt-get"
    );
}

/// Sends `count` GETs to `url`, `concurrency` at a time; every one must end in a 200.
pub(crate) async fn crawl(
    client: &scrapewell::Client,
    url: &str,
    count: usize,
    concurrency: usize,
) {
    use futures_util::{StreamExt, stream};
    let results = stream::iter(0..count)
        .map(|_| client.get(url).send())
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    for result in results {
        assert_eq!(result.expect("every request completes").status(), 200);
    }
}

/// How late a wake-up of [`StallWatch`]'s thread must be to count as a stall of the machine: two
/// fifths of an interval at 20/s, the limit most pace tests judge against. On these machines a
/// 2 ms nap mostly ends within a millisecond, now and then 10-19 ms late, and two busy loops on
/// both cores change little (the scheduler shares them fairly); wake-ups later than this come
/// from the host taking the machine's cores away, or a process stopped (`kill -STOP` for 200 ms
/// shows as 204 ms).
const STALL: Duration = Duration::from_millis(20);

/// A thread that watches for stalls of the machine while a pace is measured: it sleeps 2 ms at a
/// time and keeps the longest it overslept. Stopped when dropped.
struct StallWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

impl StallWatch {
    fn start() -> StallWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let nap = Duration::from_millis(2);
            let mut longest = Duration::ZERO;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let before = std::time::Instant::now();
                std::thread::sleep(nap);
                longest = longest.max(before.elapsed().saturating_sub(nap));
            }
            longest
        });
        StallWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the watch: the longest it overslept.
    fn longest(mut self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why a run of a pace measurement fell short.
pub(crate) struct Shortfall {
    pub(crate) why: String,
    /// The run's own record shows a stall that explains it (a server's log, say), finer than
    /// [`StallWatch`] can tell.
    pub(crate) after_stall: bool,
}

impl From<String> for Shortfall {
    fn from(why: String) -> Shortfall {
        Shortfall {
            why,
            after_stall: false,
        }
    }
}

/// How many runs [`judge_pace`] makes at most. On a noisy day here nginx refused the client
/// told its limit after a stall in about two runs of five (a stall of 2 ms is enough there):
/// three runs would still fail one test in sixteen, five one in a hundred.
const RUNS: u32 = 5;

/// Runs a measurement of pace that `run` judges, at most [`RUNS`] times. A shared machine now
/// and then stalls the client or the server for milliseconds or more, which no pace can make
/// up: a request waits, the next looks early, a rate falls short. So a run that falls short
/// after a stall (one [`StallWatch`] saw, or one the run's record shows) is run again; one that
/// falls short with no stall, or a shortfall in every run, fails the test. A pass is always one
/// whole run that met every judgement.
pub(crate) async fn judge_pace<Run>(what: &str, run: impl Fn() -> Run)
where
    Run: std::future::Future<Output = Result<(), Shortfall>>,
{
    for attempt in 1..=RUNS {
        let watch = StallWatch::start();
        let verdict = run().await;
        let stalled = watch.longest();
        match verdict {
            Ok(()) => return,
            Err(shortfall) if shortfall.after_stall || stalled >= STALL => println!(
                "{what}, run {attempt}: {}, after a stall of the machine (the watch overslept \
                 {stalled:?} at most): again",
                shortfall.why
            ),
            Err(shortfall) => panic!(
                "{what}: {}, with no stall of the machine (the watch overslept {stalled:?} at \
                 most)",
                shortfall.why
            ),
        }
    }
    panic!("{what}: fell short after a stall of the machine in each of {RUNS} runs");
}
