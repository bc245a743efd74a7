//! What classifying a response costs: the block detector over an ordinary HTML page (the
//! common case) of 32 KiB and of 1 KiB, a 403 of the same 32 KiB page (scanned to the full
//! prefix), and a Cloudflare challenge page, measured in one run.
//!
//! ```text
//! cargo bench -p scrapewell-benches --bench block
//! ```

use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, Instant};

use http::Response;
use scrapewell_core::block::{Detector, ResponseFacts};

const ROUNDS: usize = 7;

/// An ordinary product listing, dense with tags, quotes, paths and inline JSON.
fn product_page(len: usize) -> String {
    let mut page = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Garden tools | Example Shop</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/assets/css/main.3f9a2c.css\">\
         <script src=\"/assets/js/vendor.81bd.js\" defer></script>\
         <script>window.__STATE__={\"cart\":{\"items\":[]},\"user\":null,\"flags\":{\"newCheckout\":true}};</script>\
         </head><body><header class=\"site-header\"><nav><a href=\"/\">Home</a> <a href=\"/garden\">Garden</a>\
         <a href=\"/account/login\">Sign in</a></nav></header><main id=\"content\"><ul class=\"products\">",
    );
    let mut id = 1000;
    while page.len() < len.saturating_sub(120) {
        let _ = write!(
            page,
            "<li class=\"product-card\" data-id=\"{id}\"><a href=\"/p/{id}/steel-rake-{id}\">\
             <img src=\"/img/p/{id}.webp\" alt=\"Steel rake {id}\" loading=\"lazy\" width=\"240\" height=\"240\"></a>\
             <h2 class=\"title\">Steel rake, 16 teeth</h2><p class=\"price\">&euro;{}.{:02}</p>\
             <button class=\"btn add\" data-sku=\"SKU-{id}\">Add to cart</button></li>",
            id % 90 + 9,
            id % 100
        );
        id += 1;
    }
    page.push_str("</ul></main><footer>&copy; Example Shop</footer></body></html>");
    page.truncate(len);
    page
}

/// A response head with `status` and `headers`.
fn head(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(*name, http::HeaderValue::from_static(value));
    }
    response
}

fn per_call(detector: &Detector, response: &Response<()>, body: &[u8]) -> Duration {
    let facts = ResponseFacts::of(response, body, true);
    let calls = (20_000_000 / body.len().max(64)).max(1000) as u32;
    let start = Instant::now();
    for _ in 0..calls {
        black_box(detector.classify(black_box(&facts)));
    }
    start.elapsed() / calls
}

fn main() {
    let detector = Detector::default();
    let page_32k = product_page(32 << 10);
    let page_1k = product_page(1 << 10);
    let challenge = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
        <script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8a1b\"></script>\
        </body></html>";
    let ok = head(
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("server", "cloudflare"),
            ("cf-ray", "8a1b2c3d4e5f6789-AMS"),
            ("cache-control", "max-age=60"),
            ("set-cookie", "session=abc; Path=/; HttpOnly"),
        ],
    );
    let forbidden = head(
        403,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("server", "nginx"),
        ],
    );
    let cases: [(&str, &Response<()>, &[u8]); 4] = [
        ("200 HTML, 32 KiB, not a block", &ok, page_32k.as_bytes()),
        ("200 HTML, 1 KiB, not a block", &ok, page_1k.as_bytes()),
        (
            "403 HTML, 32 KiB, not a block",
            &forbidden,
            page_32k.as_bytes(),
        ),
        ("503 Cloudflare challenge", &forbidden, challenge.as_bytes()),
    ];
    println!("block detector, median of {ROUNDS} rounds");
    for (name, response, body) in cases {
        let mut rounds: Vec<Duration> = (0..ROUNDS)
            .map(|_| per_call(&detector, response, body))
            .collect();
        rounds.sort();
        println!("  {name:<34} {:>9.0} ns", rounds[ROUNDS / 2].as_nanos());
    }
}
