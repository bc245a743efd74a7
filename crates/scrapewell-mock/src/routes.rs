//! The scenarios.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use sha2::{Digest, Sha256};

use crate::blocks::block_page;
use crate::documents::{Answer, DocsWrite};
use crate::state::{KeyEntry, State};

type Body = BoxBody<Bytes, io::Error>;

/// The largest request body the server reads.
const MAX_REQUEST_BODY: usize = 1 << 20;
/// The largest body `/bytes/{n}` serves.
const MAX_BYTES: usize = 256 << 20;
/// `/bytes/{n}` streams bodies above this in chunks of this size.
const CHUNK: usize = 64 << 10;
const PROBLEM_JSON: &str = "application/problem+json";

/// A failure the route was asked for: `status` (a bare 503 unless given), with the query's
/// `retry_after` if any, counted among the injected failures.
fn injected_failure(
    state: &State,
    status: Option<u64>,
    body: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    state
        .counters
        .injected_failures
        .fetch_add(1, Ordering::Relaxed);
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    with_retry_after(text(status, body), query.get("retry_after"))
}

pub(crate) async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Asked from outside the process (the binary's users), and not counted among the requests
    // it reports on.
    if segments == ["stats"] && request.method() == Method::GET {
        return Ok(stats(&state, query.get("path")));
    }
    // The benchmark route is not logged per path: it must stay cheap at any volume.
    let nth = state.record(&path, segments[0] != "bytes");
    // Absolute form (`GET http://host/path`) is how a client talks to a forward proxy: the mock
    // plays the proxy by answering such requests itself.
    if request.uri().authority().is_some() {
        state.counters.proxied.fetch_add(1, Ordering::Relaxed);
    }
    let param = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
    let response = match (segments.as_slice(), request.method()) {
        (["bytes", n], _) => match n.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => {
                if let Some(delay) = param("delay_ms").filter(|&ms| ms > 0) {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                bytes_body(n)
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "size must be a number up to 256 MiB",
            ),
        },
        (["page", id], _) => html_page(id),
        (["flaky", _], _) => {
            if nth <= param("fail").unwrap_or(0) {
                injected_failure(&state, param("status"), "injected failure", &query)
            } else {
                text(StatusCode::OK, &format!("ok after {nth} requests"))
            }
        }
        // Up for `after_ms` from the first request to the path, then down for `for_ms`, then up
        // again: a site that went away for a while and came back.
        (["outage", id], _) => {
            let since = state.since_first(&path);
            let down_from = Duration::from_millis(param("after_ms").unwrap_or(1000));
            let up_from = down_from + Duration::from_millis(param("for_ms").unwrap_or(5000));
            if since >= down_from && since < up_from {
                injected_failure(&state, param("status"), "down for a while", &query)
            } else {
                text(StatusCode::OK, &format!("{id} up"))
            }
        }
        (["orders"], &Method::POST) => create_order(&state, request, &query).await,
        (["conflict", id], _) => {
            state
                .counters
                .permanent_conflicts
                .fetch_add(1, Ordering::Relaxed);
            problem(
                StatusCode::CONFLICT,
                "https://scrapewell.dev/problems/duplicate",
                "Duplicate resource",
                &format!("resource {id} already exists"),
            )
        }
        (["lock", id], _) => {
            if nth <= param("times").unwrap_or(1) {
                state
                    .counters
                    .lock_conflicts
                    .fetch_add(1, Ordering::Relaxed);
                let locked = problem(
                    StatusCode::CONFLICT,
                    "https://scrapewell.dev/problems/locked",
                    "Resource locked",
                    &format!("resource {id} is locked by another writer"),
                );
                let retry_after = query.get("retry_after").map_or("1", String::as_str);
                with_retry_after(locked, Some(&retry_after.to_owned()))
            } else {
                text(StatusCode::OK, &format!("{id} unlocked"))
            }
        }
        (["reset", id], _) => {
            if nth <= param("times").unwrap_or(1) {
                state.counters.resets.fetch_add(1, Ordering::Relaxed);
                cut_mid_body()
            } else {
                text(StatusCode::OK, &format!("{id} whole"))
            }
        }
        (["stall", id], _) => {
            if param("times").is_none_or(|times| nth <= times) {
                state.counters.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(param("ms").unwrap_or(1000))).await;
            }
            text(StatusCode::OK, &format!("{id} answered"))
        }
        (["status", code, ..], _) => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => with_retry_after(custom(status, &query), query.get("retry_after")),
            None => text(StatusCode::BAD_REQUEST, "not a status code"),
        },
        (["redirect"], _) => redirect(&query),
        (["echo"], _) => echo(&request),
        (["limited", _], _) => limited(&state, &path, peer, &request, &query),
        (["blocked", vendor], _) => match block_page(vendor, nth) {
            Some(page) => {
                state.counters.blocks_served.fetch_add(1, Ordering::Relaxed);
                page.map(|body| full(Bytes::from(body)))
            }
            None => text(StatusCode::NOT_FOUND, "no such vendor"),
        },
        (["guarded", page], _) => guarded(&state, &request, &query, page, nth),
        (["docs", _], &Method::GET) => {
            let flag = |name: &str| query.get(name).is_some_and(|v| v == "1");
            let read = state
                .documents()
                .docs_read(&path, flag("weak"), flag("churn"));
            answer(read)
        }
        (["docs", _], &Method::PUT) => {
            let mode = DocsWrite {
                stale_as_conflict: query.get("stale").is_some_and(|v| v == "409"),
                require_precondition: query.get("require").is_some_and(|v| v == "1"),
            };
            let (parts, body) = request.into_parts();
            match json_object(body).await {
                Ok(body) => {
                    let written = state
                        .documents()
                        .docs_write(&path, &parts.headers, body, mode);
                    // Applied first, answered late: what a client that times out cannot see.
                    if written.status.is_success() {
                        let delay = Duration::from_millis(param("delay_ms").unwrap_or(0));
                        tokio::time::sleep(delay).await;
                    }
                    answer(written)
                }
                Err(refused) => refused,
            }
        }
        (["couch", _, id], &Method::GET) => answer(state.documents().couch_read(&path, id)),
        (["couch", _, id], &Method::PUT) => {
            let (parts, body) = request.into_parts();
            match json_object(body).await {
                Ok(body) => answer(state.documents().couch_write(
                    &path,
                    id,
                    query.get("rev").map(String::as_str),
                    &parts.headers,
                    body,
                )),
                Err(refused) => refused,
            }
        }
        (["docs", _] | ["couch", _, _], _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "documents take GET and PUT")
        }
        _ => text(StatusCode::NOT_FOUND, "no such scenario"),
    };
    Ok(response)
}

async fn create_order(
    state: &Arc<State>,
    request: Request<Incoming>,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let delay = Duration::from_millis(
        query
            .get("delay_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let require_key = query.get("require_key").is_some_and(|v| v == "1");
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let content_type = header_text(request.headers(), CONTENT_TYPE);
    let body = match request_body(request.into_body()).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let reference = client_reference(&content_type, &body);
    let fingerprint: [u8; 32] = Sha256::digest(&body).into();

    let Some(key) = key else {
        if require_key {
            state.orders().missing_keys += 1;
            return problem(
                StatusCode::BAD_REQUEST,
                "https://scrapewell.dev/problems/key-required",
                "Idempotency-Key required",
                "this endpoint requires an Idempotency-Key header",
            );
        }
        return process_order(Arc::clone(state), None, reference, delay).await;
    };
    {
        let mut orders = state.orders();
        match orders.keys.get(&key) {
            Some(entry) if entry.fingerprint() != &fingerprint => {
                orders.key_mismatches += 1;
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "https://scrapewell.dev/problems/key-reused",
                    "Idempotency-Key reused",
                    "this key was used with another payload",
                );
            }
            Some(KeyEntry::InFlight { .. }) => {
                orders.in_flight_conflicts += 1;
                return problem(
                    StatusCode::CONFLICT,
                    "https://scrapewell.dev/problems/request-in-progress",
                    "Request in progress",
                    "a request with this Idempotency-Key is still being processed",
                );
            }
            Some(KeyEntry::Done { response, .. }) => {
                let mut replay = created(response.clone());
                orders.replays += 1;
                replay
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return replay;
            }
            None => {
                orders
                    .keys
                    .insert(key.clone(), KeyEntry::InFlight { fingerprint });
            }
        }
    }
    process_order(
        Arc::clone(state),
        Some((key, fingerprint)),
        reference,
        delay,
    )
    .await
}

/// The request body, or the answer refusing it when it breaks off or is over 1 MiB.
async fn request_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body unreadable or over 1 MiB",
        )),
    }
}

/// The request body as a JSON object, or the answer refusing it.
async fn json_object(
    body: Incoming,
) -> Result<serde_json::Map<String, serde_json::Value>, Response<Body>> {
    let body = request_body(body).await?;
    match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        _ => Err(text(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
    }
}

fn answer(answer: Answer) -> Response<Body> {
    let content_type = if answer.problem {
        PROBLEM_JSON
    } else {
        "application/json"
    };
    let body = match answer.body {
        serde_json::Value::Null => Bytes::new(),
        body => Bytes::from(body.to_string()),
    };
    let mut response = respond(answer.status, content_type, body);
    if let Some(etag) = answer.etag.and_then(|e| HeaderValue::try_from(e).ok()) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

/// Creates the order in a task of its own, as a real server would finish the work even when
/// the client has given up on the response.
async fn process_order(
    state: Arc<State>,
    key: Option<(String, [u8; 32])>,
    reference: Option<String>,
    delay: Duration,
) -> Response<Body> {
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut orders = state.orders();
        let id = orders.create(reference.as_deref());
        let body = Bytes::from(serde_json::json!({ "id": id, "ref": reference }).to_string());
        if let Some((key, fingerprint)) = key {
            orders.keys.insert(
                key,
                KeyEntry::Done {
                    fingerprint,
                    response: body.clone(),
                },
            );
        }
        body
    });
    match task.await {
        Ok(body) => created(body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the order task failed"),
    }
}

/// The client's reference: `ref` in a JSON object or a form body.
fn client_reference(content_type: &str, body: &[u8]) -> Option<String> {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).ok()?;
        return form.get("ref").cloned();
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("ref")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn created(body: Bytes) -> Response<Body> {
    respond(StatusCode::CREATED, "application/json", body)
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(message.to_owned()),
    )
}

fn problem(status: StatusCode, type_uri: &str, title: &str, detail: &str) -> Response<Body> {
    let body = serde_json::json!({ "type": type_uri, "title": title, "status": status.as_u16(), "detail": detail });
    respond(status, PROBLEM_JSON, Bytes::from(body.to_string()))
}

fn full(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn with_retry_after(mut response: Response<Body>, value: Option<&String>) -> Response<Body> {
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// The bounds of `/limited`'s rate and burst.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: u64 = 10_000;

/// A GCRA limit per client (or a fixed window, `window=fixed`), announced in the header form the
/// query asks for.
fn limited(
    state: &State,
    path: &str,
    peer: SocketAddr,
    request: &Request<Incoming>,
    query: &HashMap<String, String>,
) -> Response<Body> {
    // Bounded so that the limiter's arithmetic (an interval of 1/rate, a tolerance of burst
    // intervals) stays far from overflowing.
    let rate = match query.get("rate").map(|v| v.parse::<f64>()) {
        None => 10.0,
        Some(Ok(rate)) if (MIN_RATE..=MAX_RATE).contains(&rate) => rate,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "rate must be a number of requests a second from 0.001 to 1000000",
            );
        }
    };
    let burst = match query.get("burst").map(|v| v.parse::<u64>()) {
        None => 1,
        Some(Ok(burst)) if (1..=MAX_BURST).contains(&burst) => burst,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "burst must be a number of requests from 1 to 10000",
            );
        }
    };
    let client = request
        .headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| peer.ip().to_string(), str::to_owned);
    let whole_seconds = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    // The policy as a whole-second window: `burst` requests at `rate` take `burst / rate` s.
    let window = whole_seconds(Duration::from_secs_f64(burst as f64 / rate)).max(1);
    let quota = (rate * window as f64).floor().max(1.0) as u64;
    let verdict = match query.get("window").map(String::as_str) {
        None | Some("sliding") => state.limit(path, &client, rate, burst),
        Some("fixed") => {
            state.limit_fixed_window(path, &client, quota, Duration::from_secs(window))
        }
        Some(_) => return text(StatusCode::BAD_REQUEST, "window must be sliding or fixed"),
    };
    let mut response = if verdict.accepted {
        text(StatusCode::OK, "within the limit")
    } else {
        text(StatusCode::TOO_MANY_REQUESTS, "rate limited")
    };
    let headers = response.headers_mut();
    let (remaining, reset) = (verdict.remaining, whole_seconds(verdict.reset));
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    match query.get("headers").map(String::as_str) {
        Some("draft") => {
            put(
                "ratelimit-policy",
                format!("\"default\";q={quota};w={window}"),
            );
            put("ratelimit", format!("\"default\";r={remaining};t={reset}"));
        }
        Some("legacy") => {
            put("ratelimit-limit", quota.to_string());
            put("ratelimit-remaining", remaining.to_string());
            put("ratelimit-reset", reset.to_string());
        }
        Some("x") => {
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            put("x-ratelimit-limit", quota.to_string());
            put("x-ratelimit-remaining", remaining.to_string());
            put("x-ratelimit-reset", (epoch + reset).to_string());
        }
        _ => {}
    }
    if !verdict.accepted && query.get("retry_after").is_some_and(|v| v == "1") {
        put(
            "retry-after",
            whole_seconds(verdict.retry_in).max(1).to_string(),
        );
    }
    response
}

/// `status` with the `body` and `content_type` the query names.
fn custom(status: StatusCode, query: &HashMap<String, String>) -> Response<Body> {
    let body = query.get("body").map_or("as requested", String::as_str);
    let mut response = text(status, body);
    if let Some(content_type) = query
        .get("content_type")
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

/// A redirect (`status`, 302 by default) to `to`, setting the cookie `set_cookie` (a
/// `Set-Cookie` value) when asked, as a login that answers with a session and a redirect does.
fn redirect(query: &HashMap<String, String>) -> Response<Body> {
    let status = query
        .get("status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(StatusCode::is_redirection)
        .unwrap_or(StatusCode::FOUND);
    let Some(location) = query
        .get("to")
        .and_then(|to| HeaderValue::from_str(to).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "redirect needs ?to=URL");
    };
    let mut response = text(status, "redirecting");
    let headers = response.headers_mut();
    headers.insert(http::header::LOCATION, location);
    if let Some(cookie) = query
        .get("set_cookie")
        .and_then(|cookie| HeaderValue::from_str(cookie).ok())
    {
        headers.insert(http::header::SET_COOKIE, cookie);
    }
    response
}

fn html_page(id: &str) -> Response<Body> {
    let id: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let paragraph = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n".repeat(12);
    let html = format!(
        "<!doctype html>\n<html><head><title>Page {id}</title></head>\n<body><h1>Page {id}</h1>\n{paragraph}</body></html>\n"
    );
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(html),
    )
}

fn bytes_body(n: usize) -> Response<Body> {
    static FILL: [u8; CHUNK] = [b'x'; CHUNK];
    let body: Body = if n <= CHUNK {
        Full::new(Bytes::from_static(&FILL[..n]))
            .map_err(|never| match never {})
            .boxed()
    } else {
        let chunks = (0..n.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(n - i * CHUNK);
            Ok::<_, io::Error>(Frame::data(Bytes::from_static(&FILL[..len])))
        });
        StreamBody::new(stream::iter(chunks)).boxed()
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    response
}

/// Announces 2 KiB, sends 1 KiB, waits for it to reach the client, then fails the body so that
/// the server aborts the connection.
fn cut_mid_body() -> Response<Body> {
    let half = Bytes::from(vec![b'y'; 1024]);
    let frames = stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(Frame::data(half)), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "cut by the scenario",
                        )),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(2048u32));
    response
}

/// What [`State::stats`] counts, as JSON, with the hits of `path` when one is named.
fn stats(state: &State, path: Option<&String>) -> Response<Body> {
    let mut body = serde_json::to_value(state.stats()).unwrap_or_default();
    if let (Some(path), Some(fields)) = (path, body.as_object_mut()) {
        fields.insert("hits".into(), state.hits(path).into());
    }
    respond(
        StatusCode::OK,
        "application/json",
        Bytes::from(body.to_string()),
    )
}

fn echo(request: &Request<Incoming>) -> Response<Body> {
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    });
    respond(
        StatusCode::OK,
        "application/json",
        Bytes::from(body.to_string()),
    )
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A page behind an anti-bot wall that tracks identities (the `session` cookie, else the
/// `x-identity` header, else the peer's address): after `after` pages (50) an identity is
/// blocked for good with `vendor`'s block page (DataDome's by default); a fresh identity gets
/// through.
fn guarded(
    state: &State,
    request: &Request<Incoming>,
    query: &HashMap<String, String>,
    page: &str,
    nth: u64,
) -> Response<Body> {
    let after = query
        .get("after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50u64);
    let vendor = query.get("vendor").map_or("datadome", String::as_str);
    let identity = cookie(request.headers(), "session")
        .or_else(|| {
            let value = request.headers().get("x-identity")?;
            value.to_str().ok().map(str::to_owned)
        })
        .unwrap_or_else(|| "anonymous".to_owned());
    let blocked = {
        let mut identities = state.identities();
        let log = identities.by_name.entry(identity).or_default();
        let repeat = log.blocked;
        log.blocked = log.blocked || log.served >= after;
        if !log.blocked {
            log.served += 1;
        }
        let blocked = log.blocked;
        if repeat {
            identities.blocked_requests += 1;
        }
        blocked
    };
    if !blocked {
        return html_page(page);
    }
    match block_page(vendor, nth) {
        Some(page) => {
            state.counters.blocks_served.fetch_add(1, Ordering::Relaxed);
            page.map(|body| full(Bytes::from(body)))
        }
        None => text(StatusCode::NOT_FOUND, "no such vendor"),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}
