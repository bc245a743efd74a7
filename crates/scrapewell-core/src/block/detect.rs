//! The detector: a rule set compiled for one pass over a response.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::media;

use super::{BlockKind, BlockVerdict, Evidence, Rule, RuleError, RuleSet, Strength, Target};

/// The body prefix read from a response before it is classified (32 KiB).
pub const DEFAULT_PREFIX: usize = 32 << 10;
/// How far into a 2xx body markers are looked for (8 KiB): the interstitials a 200 can be
/// (a captcha page, a JavaScript challenge) are small and say what they are at the top, while
/// an ordinary page is long and dense with the markers' first bytes.
pub const DEFAULT_SUCCESS_WINDOW: usize = 8 << 10;

/// Body patterns up to which the markers are compiled to a DFA.
const MAX_DFA_PATTERNS: usize = 500;

/// What the detector looks at in a response.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ResponseFacts<'a> {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The first bytes of the body (all of it when `body_complete`).
    pub body: &'a [u8],
    /// Whether `body` is the whole body.
    pub body_complete: bool,
    /// Whether the request was a HEAD, whose response has no body by definition.
    pub head_request: bool,
    /// Where the request was redirected to, when the client followed redirects.
    pub redirected_to: Option<&'a str>,
}

impl<'a> ResponseFacts<'a> {
    /// The facts of `response`, with the body prefix read so far.
    pub fn of<B>(response: &'a http::Response<B>, body: &'a [u8], body_complete: bool) -> Self {
        ResponseFacts {
            status: response.status(),
            headers: response.headers(),
            body,
            body_complete,
            head_request: false,
            redirected_to: response
                .extensions()
                .get::<RedirectedTo>()
                .map(|to| to.0.as_str()),
        }
    }

    /// The same facts for a response to `method`.
    pub fn method(mut self, method: &Method) -> Self {
        self.head_request = method == Method::HEAD;
        self
    }
}

/// The URL a client's redirects ended at, in a response's extensions: a soft block is often a
/// redirect to a captcha or "sorry" page that the client followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectedTo(pub String);

/// A [`RuleSet`] compiled to classify responses: status, headers and cookies are looked up,
/// and the body's first bytes scanned once for every body marker at the same time.
///
/// What is scanned: the first [`prefix`](Self::prefix) bytes (32 KiB) of an error, redirect or
/// other non-2xx response that is text, HTML, JSON or untyped; only the first
/// [`success_window`](Self::success_window) bytes (8 KiB) of a 2xx HTML or untyped one; no
/// body of images, scripts and other media.
///
/// # Example
///
/// ```
/// use scrapewell_core::block::{Detector, ResponseFacts, RuleSet};
///
/// let mut rules = RuleSet::embedded();
/// rules.add("acme denied strong header:x-acme-shield blocked")?;
/// let detector = Detector::new(&rules)?;
///
/// let response = http::Response::builder()
///     .status(403)
///     .header("x-acme-shield", "blocked; id=42")
///     .body(())
///     .unwrap();
/// let verdict = detector.classify(&ResponseFacts::of(&response, b"", true)).unwrap();
/// assert_eq!(verdict.vendor(), "acme");
/// # Ok::<(), scrapewell_core::block::RuleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Detector {
    rules: Vec<Rule>,
    vendors: Vec<Arc<str>>,
    /// The vendor of each rule, as an index into `vendors`; `None` for any-vendor hints.
    rule_vendor: Vec<Option<usize>>,
    status_rules: Vec<usize>,
    header_rules: Vec<(HeaderName, Vec<usize>)>,
    /// A bit per header name the rules look at ([`name_bit`]): a response header whose bit is
    /// clear is passed over without comparing its name.
    header_filter: u64,
    cookie_rules: Vec<usize>,
    location_rules: Vec<usize>,
    empty_body_rules: Vec<usize>,
    body: Option<AhoCorasick>,
    /// The rule of each body pattern.
    body_rules: Vec<usize>,
    prefix: usize,
    success_window: usize,
}

impl Default for Detector {
    /// The embedded rules.
    fn default() -> Self {
        match Detector::new(&RuleSet::embedded()) {
            Ok(detector) => detector,
            Err(error) => panic!("scrapewell's embedded block rules do not compile: {error}"),
        }
    }
}

impl Detector {
    /// Compiles `rules`.
    pub fn new(rules: &RuleSet) -> Result<Detector, RuleError> {
        let rules = rules.rules().to_vec();
        let mut vendors: Vec<Arc<str>> = Vec::new();
        let mut rule_vendor = Vec::with_capacity(rules.len());
        let mut detector = Detector {
            rules: Vec::new(),
            vendors: Vec::new(),
            rule_vendor: Vec::new(),
            status_rules: Vec::new(),
            header_rules: Vec::new(),
            header_filter: 0,
            cookie_rules: Vec::new(),
            location_rules: Vec::new(),
            empty_body_rules: Vec::new(),
            body: None,
            body_rules: Vec::new(),
            prefix: DEFAULT_PREFIX,
            success_window: DEFAULT_SUCCESS_WINDOW,
        };
        let mut body_patterns = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            rule_vendor.push(rule.vendor.as_ref().map(|vendor| {
                match vendors.iter().position(|v| v == vendor) {
                    Some(position) => position,
                    None => {
                        vendors.push(Arc::clone(vendor));
                        vendors.len() - 1
                    }
                }
            }));
            match &rule.target {
                Target::Status(_) => detector.status_rules.push(index),
                Target::Header(name) => {
                    detector.header_filter |= name_bit(name);
                    match detector.header_rules.iter_mut().find(|(n, _)| n == name) {
                        Some((_, indices)) => indices.push(index),
                        None => detector.header_rules.push((name.clone(), vec![index])),
                    }
                }
                Target::Cookie => detector.cookie_rules.push(index),
                Target::Location => detector.location_rules.push(index),
                Target::EmptyBody => detector.empty_body_rules.push(index),
                Target::Body => {
                    body_patterns.push(rule.pattern.as_bytes());
                    detector.body_rules.push(index);
                }
            }
        }
        if !body_patterns.is_empty() {
            // A DFA scans HTML about eight times faster than the default NFA here; past a few
            // hundred patterns its memory would outgrow the gain. Leftmost-first lets the
            // prefilter skip ahead: a marker nested in an earlier one is not reported twice.
            let kind = (body_patterns.len() <= MAX_DFA_PATTERNS).then_some(AhoCorasickKind::DFA);
            let automaton = AhoCorasick::builder()
                .kind(kind)
                .match_kind(MatchKind::LeftmostFirst)
                .build(&body_patterns)
                .map_err(|e| RuleError::Compile {
                    reason: e.to_string(),
                })?;
            detector.body = Some(automaton);
        }
        detector.vendors = vendors;
        detector.rule_vendor = rule_vendor;
        detector.rules = rules;
        Ok(detector)
    }

    /// How many bytes of a body are read before it is classified (32 KiB by default).
    pub fn prefix(&self) -> usize {
        self.prefix
    }

    /// Reads `bytes` of a body before classifying it.
    pub fn with_prefix(mut self, bytes: usize) -> Self {
        self.prefix = bytes;
        self
    }

    /// How far into a 2xx body markers are looked for (8 KiB by default).
    pub fn success_window(&self) -> usize {
        self.success_window
    }

    /// Looks `bytes` into 2xx bodies (at most the prefix).
    pub fn with_success_window(mut self, bytes: usize) -> Self {
        self.success_window = bytes;
        self
    }

    /// The verdict on a response, or `None` when it is not a block.
    pub fn classify(&self, facts: &ResponseFacts<'_>) -> Option<BlockVerdict> {
        // With detection turned off, the headers are not even walked.
        if self.rules.is_empty() {
            return None;
        }
        let mut matched = Matched::default();
        let status = facts.status.as_u16();
        for &index in &self.status_rules {
            if let Target::Status(codes) = &self.rules[index].target
                && codes.contains(&status)
            {
                matched.add(index);
            }
        }
        // One pass over the response's headers, however many rules there are: most names are
        // passed over by the filter.
        let mut content_type = None;
        for (name, value) in facts.headers {
            if *name == CONTENT_TYPE {
                content_type.get_or_insert(value.as_bytes());
            } else if *name == SET_COOKIE {
                self.match_cookie(value.as_bytes(), &mut matched);
            }
            if self.header_filter & name_bit(name) == 0 {
                continue;
            }
            let Some((_, indices)) = self.header_rules.iter().find(|(n, _)| n == name) else {
                continue;
            };
            for &index in indices {
                let pattern = self.rules[index].pattern.as_bytes();
                if pattern == b"*" || media::contains_ignore_case(value.as_bytes(), pattern) {
                    matched.add(index);
                }
            }
        }
        if !self.location_rules.is_empty() {
            let location = facts
                .status
                .is_redirection()
                .then(|| facts.headers.get(LOCATION))
                .flatten()
                .map(|value| value.as_bytes());
            for target in [location, facts.redirected_to.map(str::as_bytes)]
                .into_iter()
                .flatten()
            {
                for &index in &self.location_rules {
                    if media::contains_ignore_case(target, self.rules[index].pattern.as_bytes()) {
                        matched.add(index);
                    }
                }
            }
        }
        if facts.status == StatusCode::OK
            && facts.body.is_empty()
            && facts.body_complete
            && !facts.head_request
        {
            for &index in &self.empty_body_rules {
                if content_type.is_some_and(|ct| {
                    media::contains_ignore_case(ct, self.rules[index].pattern.as_bytes())
                }) {
                    matched.add(index);
                }
            }
        }
        // No body read (its window was found empty before, or there was none): nothing to scan,
        // and the window is not worked out again.
        if let Some(body) = &self.body
            && !facts.body.is_empty()
        {
            let window = self.body_window(facts.status, content_type);
            let scanned = &facts.body[..facts.body.len().min(window)];
            if !scanned.is_empty() {
                for found in body.find_iter(scanned) {
                    matched.add(self.body_rules[found.pattern().as_usize()]);
                }
            }
        }
        self.judge(&matched.0)
    }

    /// How much of the body of a response with `status` and `headers` to read before it is
    /// classified (0: none).
    pub(super) fn peek_limit(&self, status: StatusCode, headers: &HeaderMap) -> usize {
        if self.body.is_none() {
            return 0;
        }
        self.body_window(status, content_type(headers))
    }

    /// How much of the body to scan for a response of `status` and `content_type`: a 2xx can
    /// only be an interstitial (a captcha, a challenge) when it is a page a browser renders,
    /// while an error in any text may say who refused.
    fn body_window(&self, status: StatusCode, content_type: Option<&[u8]>) -> usize {
        let html_or_untyped = content_type.is_none_or(media::is_html);
        if status.is_success() {
            return if html_or_untyped {
                self.success_window.min(self.prefix)
            } else {
                0
            };
        }
        if html_or_untyped
            || content_type.is_some_and(|ct| media::is_text(ct) || media::is_json(ct))
        {
            self.prefix
        } else {
            0
        }
    }

    /// Matches the name of the cookie a `Set-Cookie` value sets against the cookie rules.
    fn match_cookie(&self, set_cookie: &[u8], matched: &mut Matched) {
        let name = set_cookie
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        for &index in &self.cookie_rules {
            if name.starts_with(self.rules[index].pattern.as_bytes()) {
                matched.add(index);
            }
        }
    }

    /// The verdict from the matched rules: the vendor with a strong marker, or two weak ones,
    /// or a weak one and a hint; ties go to the vendor listed first.
    fn judge(&self, matched: &[usize]) -> Option<BlockVerdict> {
        if matched.is_empty() {
            return None;
        }
        let mut best: Option<(usize, Tally)> = None;
        let any_vendor_hints = matched
            .iter()
            .filter(|&&index| self.rule_vendor[index].is_none())
            .count() as u32;
        for vendor in 0..self.vendors.len() {
            let mut tally = Tally::default();
            for &index in matched {
                if self.rule_vendor[index] == Some(vendor) {
                    tally.add(&self.rules[index]);
                }
            }
            tally.hint += any_vendor_hints;
            if !tally.decides() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, leader)| tally.rank() > leader.rank())
            {
                best = Some((vendor, tally));
            }
        }
        let (vendor, tally) = best?;
        let mut evidence: Vec<Evidence> = matched
            .iter()
            .filter(|&&index| {
                matches!(self.rule_vendor[index], Some(v) if v == vendor)
                    || self.rule_vendor[index].is_none()
            })
            .map(|&index| {
                let rule = &self.rules[index];
                Evidence {
                    strength: rule.strength,
                    target: rule.target.clone(),
                    marker: Arc::clone(&rule.pattern),
                }
            })
            .collect();
        evidence.sort_by_key(|e| e.strength);
        Some(BlockVerdict {
            vendor: Arc::clone(&self.vendors[vendor]),
            kind: tally.kind?,
            confidence: tally.confidence(),
            evidence,
        })
    }
}

/// The rules that matched, each once.
#[derive(Default)]
struct Matched(Vec<usize>);

impl Matched {
    fn add(&mut self, index: usize) {
        if !self.0.contains(&index) {
            self.0.push(index);
        }
    }
}

/// What one vendor's matched rules add up to.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    strong: u32,
    weak: u32,
    hint: u32,
    /// The kind of the first strong rule, else of the first weak one.
    kind: Option<BlockKind>,
    kind_from_strong: bool,
}

impl Tally {
    fn add(&mut self, rule: &Rule) {
        match rule.strength {
            Strength::Strong => {
                self.strong += 1;
                if !self.kind_from_strong {
                    self.kind = rule.kind;
                    self.kind_from_strong = true;
                }
            }
            Strength::Weak => {
                self.weak += 1;
                if self.kind.is_none() {
                    self.kind = rule.kind;
                }
            }
            Strength::Hint => self.hint += 1,
        }
    }

    fn decides(&self) -> bool {
        self.strong > 0 || self.weak >= 2 || (self.weak >= 1 && self.hint >= 1)
    }

    fn rank(&self) -> (u32, u32, u32) {
        (self.strong, self.weak, self.hint)
    }

    fn confidence(&self) -> f32 {
        let extra = |n: u32| n as f32 * 0.03;
        if self.strong > 0 {
            (0.9 + extra(self.strong - 1 + self.weak + self.hint)).min(0.99)
        } else if self.weak >= 2 {
            (0.75 + extra(self.weak - 2 + self.hint)).min(0.89)
        } else {
            (0.6 + extra(self.hint - 1)).min(0.7)
        }
    }
}

/// The first `Content-Type`, found by a walk over the headers: a response has a few dozen at
/// most, and comparing a standard name costs less than hashing it for a lookup.
fn content_type(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .iter()
        .find(|(name, _)| **name == CONTENT_TYPE)
        .map(|(_, value)| value.as_bytes())
}

/// The bit of `name` in a header filter: from its length and last byte, which tell most of the
/// names a response carries from the few the rules look at.
fn name_bit(name: &HeaderName) -> u64 {
    let name = name.as_str().as_bytes();
    let last = name.last().copied().unwrap_or(0) as usize;
    1 << ((name.len() * 7 + last) % 64)
}
