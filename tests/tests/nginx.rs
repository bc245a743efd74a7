//! Against a real nginx with `limit_req rate=10r/s`, with no burst or a burst of 20, refusing
//! with `limit_req_status 429` or with nginx's default, a bare 503, asserted from nginx's own
//! access log. nginx is installed
//! from Debian's packages when it is missing.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Shortfall, closed_port, crawl, fast_client, install_package, judge_pace, wait_until_listening,
};

const NGINX: &str = "/usr/sbin/nginx";

/// The tests measure pace at the server: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An nginx of the test's own, stopped and cleaned up when dropped.
struct Nginx {
    process: Child,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    /// An nginx that refuses with `refusal`, and lets `burst` requests more through at once
    /// (`limit_req`'s `burst` with `nodelay`: a token bucket) when it is not 0.
    fn start(name: &str, refusal: u16, burst: u32) -> Nginx {
        install_package("nginx-light", NGINX);
        let prefix =
            std::env::temp_dir().join(format!("scrapewell-nginx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("html")).expect("nginx prefix");
        std::fs::write(prefix.join("html/index.html"), "ok\n").expect("index.html");
        let port = closed_port();
        let template = include_str!("../nginx/limit_req.conf");
        let config = template
            .replace("{{prefix}}", &prefix.display().to_string())
            .replace("{{port}}", &port.to_string())
            .replace("{{status}}", &refusal.to_string())
            .replace(
                "{{burst}}",
                &if burst > 0 {
                    format!(" burst={burst} nodelay")
                } else {
                    String::new()
                },
            );
        std::fs::write(prefix.join("nginx.conf"), config).expect("nginx.conf");
        let process = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            process,
            prefix,
            port,
        };
        wait_until_listening(port, "nginx");
        nginx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `(time, status)` of every request nginx logged, once it has logged the `answered` 200s
    /// the client received (or after 5 s): nginx writes a request's line after it has sent the
    /// answer, so the last one may not be there yet when the client has it.
    fn log(&self, answered: usize) -> Vec<(f64, u16)> {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default();
            let entries: Vec<(f64, u16)> = log
                .lines()
                .filter_map(|line| {
                    let (time, status) = line.split_once(' ')?;
                    Some((time.parse().ok()?, status.trim().parse().ok()?))
                })
                .collect();
            let logged = entries.iter().filter(|(_, s)| *s == 200).count();
            if logged >= answered || started.elapsed() > Duration::from_secs(5) {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// The number of 200s and of refusals (every other status) nginx logged, and the rate of the
/// 200s.
fn tally(log: &[(f64, u16)]) -> (usize, usize, f64) {
    let accepted: Vec<f64> = log
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(t, _)| *t)
        .collect();
    let refused = log.iter().filter(|(_, s)| *s != 200).count();
    let rate = (accepted.len() - 1) as f64 / (accepted[accepted.len() - 1] - accepted[0]);
    (accepted.len(), refused, rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_10_per_second_is_never_refused_by_nginx() {
    let _turn = ONE_AT_A_TIME.lock().await;
    judge_pace("nginx, client told 10/s", told_10_per_second).await;
}

/// 100 requests, one at a time, from a client told nginx's limit. nginx refuses a request that
/// comes a millisecond early, so a stall of a few milliseconds, below what the watch can tell
/// from noise, is enough for a refusal: the request that waited is counted late, and the next
/// one, on time, looks early. A run refused only right after such a stall, as nginx's log shows
/// it, is run again; a refusal the client's own pace explains fails, at once when the watch saw
/// no stall either.
async fn told_10_per_second() -> Result<(), Shortfall> {
    let nginx = Nginx::start("told", 429, 0);
    let client = fast_client().rate_limit(10.0).build().expect("a client");
    // One at a time: with several in flight one delayed on its way out (a new connection, a
    // preemption) can land within 2 ms of the next.
    crawl(&client, &nginx.url(), 100, 1).await;
    let log = nginx.log(100);
    let (accepted, refused, rate) = tally(&log);
    let closest = log
        .windows(2)
        .map(|pair| pair[1].0 - pair[0].0)
        .fold(f64::INFINITY, f64::min);
    println!(
        "nginx 10r/s, client told 10/s: {accepted} accepted, {refused} refused, {rate:.2}/s, \
         closest {:.0} ms apart",
        closest * 1000.0
    );
    assert_eq!(accepted, 100);
    if refused == 0 {
        return Ok(());
    }
    let spans = refusal_spans(&log);
    Err(Shortfall {
        // Milliseconds as nginx logs them: two intervals, and one more for the rounding.
        after_stall: spans.iter().all(|span| span.is_some_and(|s| s >= 0.201)),
        why: format!(
            "{refused} refused, each this long after the second accepted request before it: \
             {spans:?}"
        ),
    })
}

/// For each refusal in nginx's log, how long after the second accepted request before it it
/// came, in seconds (`None` when fewer came before it). The client paces those two intervals
/// apart; farther apart, the request between was counted late: the machine stalled. A client
/// pacing too fast leaves them closer.
fn refusal_spans(log: &[(f64, u16)]) -> Vec<Option<f64>> {
    log.iter()
        .enumerate()
        .filter(|(_, (_, status))| *status != 200)
        .map(|(at, (time, _))| {
            let mut accepted_before = log[..at].iter().rev().filter(|(_, s)| *s == 200);
            accepted_before.nth(1).map(|(before, _)| time - before)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_nothing_adapts_to_nginx_one_or_eight_at_a_time() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // Eight at a time is the default bound per host: the host gets one request, then one more
    // for each answer, and requests queued behind a refusal take slots in the pace it cut. A
    // bare 503 may come from a backend failing at any pace, which the client must tell apart.
    for refusal in [429, 503] {
        for concurrency in [1, 8] {
            judge_pace(
                &format!("nginx refusing with {refusal}, {concurrency} at a time"),
                || told_nothing(concurrency, refusal, 0),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_nothing_adapts_to_nginx_with_a_burst_refusing_with_bare_503s() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // `limit_req zone=… burst=20 nodelay` with nginx's default status, a common set-up: the
    // burst's answers, counted with the refusals that followed it, made those look like a
    // host failing now and then at any pace, and the client was let run unpaced.
    for concurrency in [1, 8] {
        judge_pace(
            &format!("nginx with a burst of 20 refusing with 503, {concurrency} at a time"),
            || told_nothing(concurrency, 503, 20),
        )
        .await;
    }
}

/// Requests a client told nothing sends: enough that the rate measures the pace it keeps, not
/// only how it learned it. Over 100, telling nginx's bare 503s from a host failing at any pace
/// (a stage held at half the rate) took eight at a time to 6.98/s once in seven runs.
const UNTOLD_REQUESTS: usize = 200;

/// [`UNTOLD_REQUESTS`] requests, `concurrency` at a time, from a client that knows nothing of
/// nginx's limit, which refuses with `refusal` and lets `burst` more through at once. With a
/// burst, the refusals are judged over the later half of nginx's log: the client meets the
/// limit only once the burst is spent, far above it, and learning it there costs some 30
/// refusals, with 429s as with 503s.
async fn told_nothing(concurrency: usize, refusal: u16, burst: u32) -> Result<(), Shortfall> {
    let nginx = Nginx::start(
        &format!("untold-{concurrency}-{refusal}-{burst}"),
        refusal,
        burst,
    );
    let client = fast_client().max_attempts(10).build().expect("a client");
    crawl(&client, &nginx.url(), UNTOLD_REQUESTS, concurrency).await;
    let log = nginx.log(UNTOLD_REQUESTS);
    let (accepted, refused, rate) = tally(&log);
    let judged = if burst > 0 {
        &log[log.len() / 2..]
    } else {
        &log[..]
    };
    let refused_judged = judged.iter().filter(|(_, status)| *status != 200).count();
    println!(
        "nginx 10r/s, burst {burst}, refusing with {refusal}, client told nothing, \
         {concurrency} at a time: {accepted} accepted, {refused} refused ({refused_judged} of \
         the {} judged), {rate:.2}/s",
        judged.len()
    );
    assert_eq!(accepted, UNTOLD_REQUESTS, "all complete");
    if refused_judged * 10 > judged.len() {
        return Err(format!("{refused_judged} of {} refused", judged.len()).into());
    }
    if rate < 7.0 {
        return Err(format!("{rate:.2}/s is below 70% of nginx's 10/s").into());
    }
    Ok(())
}
