//! `cargo run --example crawl`: one crawl over three sites, one of them slow and one flaky.
//!
//! 40 pages on each of three sites (three mock servers, so three hosts): a healthy one, one
//! whose every page fails once with a 502 before it loads, and a slow one whose every page
//! first stalls past the attempt timeout. One client crawls the three at once, each site from
//! its own queue, eight pages at a time. The client holds each host to 4 requests at once and
//! 50 a second, so the crawl is polite to each, and a slow host holds back only its own pages:
//! the healthy and the flaky sites are done long before the slow one. Each page is read whole,
//! its title taken out where it has one.
//!
//! Exits non-zero when a page could not be fetched.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use scrapewell::{Client, Error};
use scrapewell_mock::MockServer;

const PAGES_PER_SITE: usize = 40;
/// Pages of one site in flight at once, in the crawler's queue for it.
const PER_SITE: usize = 8;

/// One site of the crawl and what became of its pages.
struct Site {
    name: &'static str,
    server: MockServer,
    /// The path of page `n`.
    page: fn(usize) -> String,
    fetched: usize,
    titled: usize,
    attempts: u32,
    retries: BTreeMap<String, u32>,
    last_done: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let sites = match start_sites().await {
        Ok(sites) => sites,
        Err(error) => {
            eprintln!("cannot start the mock servers: {error}");
            return ExitCode::FAILURE;
        }
    };
    match crawl(sites).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn start_sites() -> std::io::Result<Vec<Site>> {
    let site = |name, server, page| Site {
        name,
        server,
        page,
        fetched: 0,
        titled: 0,
        attempts: 0,
        retries: BTreeMap::new(),
        last_done: Duration::ZERO,
    };
    Ok(vec![
        site("healthy", MockServer::start().await?, |n| {
            format!("/page/h{n}")
        }),
        site("flaky", MockServer::start().await?, |n| {
            format!("/flaky/f{n}?fail=1&status=502")
        }),
        site("slow", MockServer::start().await?, |n| {
            format!("/stall/s{n}?ms=800&times=1")
        }),
    ])
}

async fn crawl(mut sites: Vec<Site>) -> Result<bool, Error> {
    let client = Client::builder()
        .max_in_flight_per_host(4)
        .rate_limit(50.0)
        .attempt_timeout(Duration::from_millis(500))
        .max_attempts(3)
        .build()?;
    let started = Instant::now();
    let crawls = sites
        .iter_mut()
        .map(|site| crawl_site(&client, site, started));
    let failed: usize = futures_util::future::join_all(crawls)
        .await
        .into_iter()
        .sum();
    println!(
        "{} pages from {} sites in {:.2} s, 4 at once and 50/s per host\n",
        PAGES_PER_SITE * sites.len(),
        sites.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<9} {:>8} {:>7} {:>9} {:>10}  retries",
        "site", "fetched", "titled", "attempts", "done after"
    );
    for site in &sites {
        let retries: Vec<String> = site
            .retries
            .iter()
            .map(|(reason, count)| format!("{count} × {reason}"))
            .collect();
        println!(
            "{:<9} {:>8} {:>7} {:>9} {:>8.2} s  {}",
            site.name,
            site.fetched,
            site.titled,
            site.attempts,
            site.last_done.as_secs_f64(),
            if retries.is_empty() {
                "none".to_owned()
            } else {
                retries.join(", ")
            }
        );
    }
    Ok(failed == 0)
}

/// Crawls one site's pages, [`PER_SITE`] at a time, noting what became of each in `site`;
/// how many could not be fetched.
async fn crawl_site(client: &Client, site: &mut Site, started: Instant) -> usize {
    let urls: Vec<String> = (0..PAGES_PER_SITE)
        .map(|n| site.server.url(&(site.page)(n)))
        .collect();
    let mut pages = stream::iter(urls)
        .map(|url| {
            let request = client.get(&url);
            async move {
                let fetched = match request.send().await {
                    Ok(response) => {
                        let attempts = response.attempts().clone();
                        response.text().await.map(|text| (attempts, text))
                    }
                    Err(error) => Err(error),
                };
                (url, fetched)
            }
        })
        .buffer_unordered(PER_SITE);
    let mut failed = 0;
    while let Some((url, fetched)) = pages.next().await {
        match fetched {
            Ok((attempts, text)) => {
                site.fetched += 1;
                site.titled += usize::from(title(&text).is_some());
                site.attempts += attempts.count();
                for retry in attempts.retries() {
                    *site.retries.entry(retry.reason.to_string()).or_default() += 1;
                }
                site.last_done = started.elapsed();
            }
            Err(error) => {
                failed += 1;
                eprintln!("{url}: {error}");
            }
        }
    }
    failed
}

/// The text of a page's `<title>`, if it has one.
fn title(html: &str) -> Option<&str> {
    let start = html.find("<title>")? + "<title>".len();
    let end = html[start..].find("</title>")?;
    Some(html[start..start + end].trim())
}
