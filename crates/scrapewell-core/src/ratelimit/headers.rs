//! What a server says about its rate limit, in any of the header generations in use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// A reset above this many seconds is an epoch time (`X-RateLimit-Reset: 1735689600`), below it
/// a delta (`X-RateLimit-Reset: 30`).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;
/// A reset above this is an epoch time in milliseconds (`1735689600000`), as some servers send
/// it: in seconds it would be past the year 33,000.
const EPOCH_MILLIS_THRESHOLD: u64 = 1_000_000_000_000;
/// Above this, a reset is no time at all, in seconds or milliseconds: malformed, and ignored.
const EPOCH_MILLIS_LIMIT: u64 = 1_000_000_000_000_000;

/// Resets come in whole seconds: one of a second or less may stand for any wait up to it (an
/// epoch time rounded down even for a wait of a few milliseconds past now).
pub(crate) const RESET_RESOLUTION: Duration = Duration::from_secs(1);

/// The most restrictive limit a response announced.
///
/// Read from, in order of preference:
/// - `RateLimit` / `RateLimit-Policy` as Structured Field lists (draft-ietf-httpapi-ratelimit-
///   headers-08 and later): `"default";r=50;t=30` and `"burst";q=100;w=60`;
/// - `RateLimit: limit=100, remaining=50, reset=30` (draft-03);
/// - `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (drafts 00 to 07);
/// - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (GitHub, Twitter,
///   Reddit and others; a reset above 10⁹ is an epoch time in seconds, above 10¹² in
///   milliseconds, else a delta; counts with a fraction are rounded down, resets up).
///
/// Malformed values are ignored, never fatal.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, HeaderValue};
/// use scrapewell_core::ratelimit::ServerLimit;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", HeaderValue::from_static("\"default\";r=0;t=12"));
/// headers.insert("ratelimit-policy", HeaderValue::from_static("\"default\";q=100;w=60"));
/// let limit = ServerLimit::from_headers(&headers, SystemTime::now()).unwrap();
/// assert_eq!(limit.remaining, Some(0));
/// assert_eq!(limit.reset, Some(Duration::from_secs(12)));
/// assert_eq!(limit.policy, Some((100, Duration::from_secs(60))));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimit {
    /// Requests (quota units) left in the current window.
    pub remaining: Option<u64>,
    /// When the window resets, from now.
    pub reset: Option<Duration>,
    /// The quota: this many units per window.
    pub policy: Option<(u64, Duration)>,
    /// The quota as the older forms name it (`limit=`, `RateLimit-Limit`, `X-RateLimit-Limit`),
    /// whose window they do not give.
    pub limit: Option<u64>,
}

impl ServerLimit {
    /// Whether any header names a rate limit: one pass over the names, cheaper than the six
    /// lookups of [`from_headers`](Self::from_headers) and its reading of the wall clock, on the
    /// responses (most of them) that carry none.
    pub(crate) fn announced(headers: &HeaderMap) -> bool {
        headers.keys().any(|name| {
            let name = name.as_str();
            name.starts_with("ratelimit") || name.starts_with("x-ratelimit")
        })
    }

    /// The limit the headers announce; `None` when they announce none.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<ServerLimit> {
        if !Self::announced(headers) {
            return None;
        }
        let mut limit = ServerLimit::default();
        structured(headers, &mut limit);
        if limit.remaining.is_none() && limit.policy.is_none() {
            draft_03(headers, now, &mut limit);
        }
        if limit.remaining.is_none() && limit.policy.is_none() {
            separate(headers, "ratelimit-", false, now, &mut limit);
        }
        if limit.remaining.is_none() && limit.policy.is_none() {
            separate(headers, "x-ratelimit-", true, now, &mut limit);
        }
        (limit != ServerLimit::default()).then_some(limit)
    }

    /// The spacing these figures ask for: the window over the quota, and the time to the reset
    /// spread over what remains, whichever is longer. `None` when they ask for none.
    pub fn interval(&self) -> Option<Duration> {
        self.declared_interval().max(self.spread_interval())
    }

    /// The spacing of the declared policy: the window over the quota.
    pub fn declared_interval(&self) -> Option<Duration> {
        self.policy
            .filter(|(q, _)| *q > 0)
            .map(|(q, w)| w / q.min(u32::MAX as u64) as u32)
    }

    /// How long a client should hold its requests back once none remain: until the reset. A
    /// reset of a second or less is the header's whole-second rounding of a wait that may be far
    /// shorter (a server that refills one request every 50 ms says `r=0;t=1` after each): then
    /// the spacing of the quota, when the headers give it (the policy's window over its quota,
    /// or a second over the limit). `None` while units remain or without a reset.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::{HeaderMap, HeaderValue};
    /// use scrapewell_core::ratelimit::ServerLimit;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("ratelimit-limit", HeaderValue::from_static("20"));
    /// headers.insert("ratelimit-remaining", HeaderValue::from_static("0"));
    /// headers.insert("ratelimit-reset", HeaderValue::from_static("1"));
    /// let limit = ServerLimit::from_headers(&headers, SystemTime::now()).unwrap();
    /// assert_eq!(limit.exhausted_wait(), Some(Duration::from_millis(50)));
    ///
    /// headers.insert("ratelimit-reset", HeaderValue::from_static("30"));
    /// let limit = ServerLimit::from_headers(&headers, SystemTime::now()).unwrap();
    /// assert_eq!(limit.exhausted_wait(), Some(Duration::from_secs(30)));
    /// ```
    pub fn exhausted_wait(&self) -> Option<Duration> {
        if self.remaining != Some(0) {
            return None;
        }
        let reset = self.reset?;
        if reset > RESET_RESOLUTION {
            return Some(reset);
        }
        Some(
            self.quota_spacing()
                .map_or(reset, |spacing| spacing.min(RESET_RESOLUTION)),
        )
    }

    /// The spacing of the quota: the policy's window over its quota, or a second over the
    /// limit of the older forms.
    pub(crate) fn quota_spacing(&self) -> Option<Duration> {
        self.declared_interval().or_else(|| {
            self.limit
                .filter(|limit| *limit > 0)
                .map(|limit| RESET_RESOLUTION / limit.min(u32::MAX as u64) as u32)
        })
    }

    /// The time to the reset spread evenly over the units that remain; `None` when none remain
    /// (the client should wait for the reset) or either figure is missing.
    pub fn spread_interval(&self) -> Option<Duration> {
        match (self.remaining, self.reset) {
            (Some(r), Some(reset)) if r > 0 => Some(reset / r.min(u32::MAX as u64) as u32),
            _ => None,
        }
    }
}

/// `RateLimit` and `RateLimit-Policy` as Structured Field lists; the most restrictive item wins.
fn structured(headers: &HeaderMap, limit: &mut ServerLimit) {
    for value in headers.get_all("ratelimit") {
        for params in sf_items(value.to_str().unwrap_or("")) {
            let (r, t) = (param(&params, "r"), param(&params, "t"));
            if let Some(r) = r {
                limit.remaining = Some(limit.remaining.map_or(r, |old| old.min(r)));
                if let Some(t) = t {
                    limit.reset = Some(limit.reset.map_or(secs(t), |old| old.max(secs(t))));
                }
            }
        }
    }
    for value in headers.get_all("ratelimit-policy") {
        for params in sf_items(value.to_str().unwrap_or("")) {
            if let (Some(q), Some(w)) = (param(&params, "q"), param(&params, "w"))
                && q > 0
            {
                // The slowest policy (longest window per unit) is the one to respect.
                let slower = limit.policy.is_none_or(|(oq, ow)| {
                    secs(w).as_secs_f64() / q as f64 > ow.as_secs_f64() / oq as f64
                });
                if slower {
                    limit.policy = Some((q, secs(w)));
                }
            }
        }
    }
}

/// `RateLimit: limit=100, remaining=50, reset=30`.
fn draft_03(headers: &HeaderMap, now: SystemTime, limit: &mut ServerLimit) {
    let Some(value) = headers.get("ratelimit").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let mut fields = (None, None, None);
    for part in value.split(',') {
        let Some((name, number)) = part.split_once('=') else {
            continue;
        };
        let Ok(number) = number.trim().parse::<u64>() else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "limit" => fields.0 = Some(number),
            "remaining" => fields.1 = Some(number),
            "reset" => fields.2 = Some(number),
            _ => {}
        }
    }
    apply_separate(fields, false, now, limit);
}

/// `<prefix>Limit`, `<prefix>Remaining`, `<prefix>Reset`.
fn separate(
    headers: &HeaderMap,
    prefix: &str,
    reset_may_be_epoch: bool,
    now: SystemTime,
    limit: &mut ServerLimit,
) {
    let field = |suffix: &str| {
        headers
            .get(format!("{prefix}{suffix}"))
            .and_then(|v| v.to_str().ok())
            // `X-RateLimit-Limit: 60, 60;window=60` and similar: the first number counts.
            .and_then(|v| v.split([',', ';']).next())
            .map(str::trim)
    };
    // Counts are rounded down (Reddit's `X-Ratelimit-Remaining: 599.0`), the reset up: the
    // client errs on the slow side.
    apply_separate(
        (
            field("limit").and_then(|v| whole(v, Round::Down)),
            field("remaining").and_then(|v| whole(v, Round::Down)),
            field("reset").and_then(|v| whole(v, Round::Up)),
        ),
        reset_may_be_epoch,
        now,
        limit,
    );
}

fn apply_separate(
    (quota, remaining, reset): (Option<u64>, Option<u64>, Option<u64>),
    reset_may_be_epoch: bool,
    now: SystemTime,
    limit: &mut ServerLimit,
) {
    // An epoch time past what the clock can represent is malformed, and ignored.
    let reset = reset.and_then(|reset| {
        let at = match reset {
            _ if !reset_may_be_epoch || reset <= EPOCH_THRESHOLD => return Some(secs(reset)),
            _ if reset <= EPOCH_MILLIS_THRESHOLD => UNIX_EPOCH.checked_add(secs(reset))?,
            _ if reset <= EPOCH_MILLIS_LIMIT => {
                UNIX_EPOCH.checked_add(Duration::from_millis(reset))?
            }
            _ => return None,
        };
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    });
    if remaining.is_some() || quota.is_some() {
        limit.remaining = remaining;
        limit.reset = reset;
        limit.limit = quota;
        // Older generations give the quota but not its window; the reset of a full window is
        // the best estimate there is.
        if let (Some(q), Some(r), Some(reset)) = (quota, remaining, reset)
            && q > 0
            && r == q
            && !reset.is_zero()
        {
            limit.policy = Some((q, reset));
        }
    }
}

enum Round {
    Down,
    Up,
}

/// A number written whole (`30`) or with a fraction (`599.0`, `1470173023.25`, as Reddit and
/// Discord send theirs), as a whole one rounded as `round` says.
fn whole(text: &str, round: Round) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = whole.parse::<u64>().ok()?;
    match round {
        Round::Up if fraction.bytes().any(|b| b != b'0') => whole.checked_add(1),
        _ => Some(whole),
    }
}

/// The parameters of each item of a Structured Field list, loosely parsed: items whose
/// parameters are not integers are skipped.
fn sf_items(list: &str) -> impl Iterator<Item = Vec<(&str, Option<u64>)>> {
    split_outside_quotes(list, ',').into_iter().map(|item| {
        split_outside_quotes(item, ';')
            .into_iter()
            .skip(1)
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                Some((name.trim(), value.trim().parse::<u64>().ok()))
            })
            .collect()
    })
}

fn param(params: &[(&str, Option<u64>)], name: &str) -> Option<u64> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| *v)
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limit(pairs: &[(&str, &str)]) -> Option<ServerLimit> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        ServerLimit::from_headers(&headers, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn current_draft_lists_take_the_most_restrictive_item() {
        let l = limit(&[
            ("ratelimit", "\"default\";r=50;t=30, \"burst\";r=3;t=1"),
            (
                "ratelimit-policy",
                "\"default\";q=100;w=60, \"burst\";q=10;w=1",
            ),
        ])
        .unwrap();
        assert_eq!(l.remaining, Some(3));
        assert_eq!(l.reset, Some(secs(30)));
        assert_eq!(
            l.policy,
            Some((100, secs(60))),
            "100 per minute is slower than 10 per second"
        );
        assert_eq!(
            l.interval(),
            Some(Duration::from_secs(10)),
            "30 s spread over 3 requests"
        );
    }

    #[test]
    fn draft_03_combined_form() {
        let l = limit(&[("ratelimit", "limit=100, remaining=0, reset=7")]).unwrap();
        assert_eq!((l.remaining, l.reset), (Some(0), Some(secs(7))));
    }

    #[test]
    fn separate_headers_of_the_older_drafts() {
        let l = limit(&[
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "4"),
            ("ratelimit-reset", "2"),
        ])
        .unwrap();
        assert_eq!((l.remaining, l.reset), (Some(4), Some(secs(2))));
        assert_eq!(l.interval(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn x_ratelimit_reset_is_an_epoch_above_a_billion_and_a_delta_below() {
        let epoch = limit(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000042"),
        ])
        .unwrap();
        assert_eq!(epoch.reset, Some(secs(42)));
        let delta = limit(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "42")]).unwrap();
        assert_eq!(delta.reset, Some(secs(42)));
        let past = limit(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1600000000"),
        ])
        .unwrap();
        assert_eq!(past.reset, Some(Duration::ZERO));
    }

    #[test]
    fn a_full_window_gives_the_quota() {
        let l = limit(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "60"),
            ("x-ratelimit-reset", "60"),
        ])
        .unwrap();
        assert_eq!(l.policy, Some((60, secs(60))));
        assert_eq!(l.interval(), Some(secs(1)));
    }

    #[test]
    fn a_spent_budget_is_waited_for_until_the_reset_or_by_the_quota_within_a_second() {
        let wait = |pairs: &[(&str, &str)]| limit(pairs).unwrap().exhausted_wait();
        let policy = ("ratelimit-policy", "\"default\";q=20;w=1");
        assert_eq!(
            wait(&[("ratelimit", "\"default\";r=0;t=1"), policy]),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            wait(&[("ratelimit", "\"default\";r=0;t=0"), policy]),
            Some(Duration::from_millis(50)),
            "a reset rounded down to 0"
        );
        assert_eq!(
            wait(&[("ratelimit", "\"default\";r=0;t=2"), policy]),
            Some(secs(2))
        );
        assert_eq!(
            wait(&[("ratelimit", "limit=4, remaining=0, reset=1")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            wait(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]),
            Some(secs(1)),
            "no quota to estimate by"
        );
        assert_eq!(
            wait(&[
                ("ratelimit", "\"default\";r=0;t=1"),
                ("ratelimit-policy", "\"d\";q=1;w=60")
            ]),
            Some(secs(1)),
            "never longer than the reset's rounding"
        );
        assert_eq!(wait(&[("ratelimit", "\"default\";r=1;t=1"), policy]), None);
        assert_eq!(wait(&[("x-ratelimit-remaining", "0")]), None);
    }

    #[test]
    fn malformed_values_are_ignored() {
        assert_eq!(limit(&[("ratelimit", "\"default\";r=soon;t=-1")]), None);
        assert_eq!(limit(&[("ratelimit-policy", "\"x\";q=0;w=10")]), None);
        assert_eq!(limit(&[("x-ratelimit-remaining", "many")]), None);
        assert_eq!(limit(&[("ratelimit", "garbage")]), None);
        assert_eq!(limit(&[]), None);
        let partial = limit(&[("ratelimit", "\"a\";r=x;t=5, \"b\";r=2;t=4")]).unwrap();
        assert_eq!(partial.remaining, Some(2));
    }

    #[test]
    fn an_epoch_reset_may_come_in_milliseconds_or_with_a_fraction() {
        let reset = |value: &str| {
            limit(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", value)])
                .unwrap()
                .reset
        };
        assert_eq!(reset("1700000042000"), Some(secs(42)));
        assert_eq!(reset("1700000042500"), Some(Duration::from_millis(42_500)));
        assert_eq!(reset("1700000041.25"), Some(secs(42)));
        assert_eq!(reset("41.0"), Some(secs(41)));
        assert_eq!(reset("41.5"), Some(secs(42)));
        assert_eq!(reset("41."), Some(secs(41)));
        for malformed in ["4x", "-3", ".5", "4.x", "1e3", ""] {
            assert_eq!(reset(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn counts_with_a_fraction_are_rounded_down() {
        let l = limit(&[
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-remaining", "599.0"),
            ("x-ratelimit-reset", "30"),
        ])
        .unwrap();
        assert_eq!((l.remaining, l.reset), (Some(599), Some(secs(30))));
        let l = limit(&[
            ("x-ratelimit-limit", "10.9"),
            ("x-ratelimit-remaining", "0.5"),
        ])
        .unwrap();
        assert_eq!((l.limit, l.remaining), (Some(10), Some(0)));
    }

    #[test]
    fn an_epoch_reset_past_the_clock_is_ignored() {
        let l = limit(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "18446744073709551615"),
        ])
        .unwrap();
        assert_eq!((l.remaining, l.reset), (Some(0), None));
    }
}
