//! RFC 9457 problem details, and the words in them that mark a conflict as transient.

use std::fmt;

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::media;

/// An RFC 9457 problem details object (`application/problem+json`).
///
/// Members that are absent or of the wrong type are `None`; extension members are kept in
/// [`extensions`](Self::extensions).
///
/// # Example
///
/// ```
/// use scrapewell_core::ProblemDetails;
///
/// let body = br#"{"type":"https://example.com/dup","title":"Duplicate order","status":409}"#;
/// let problem = ProblemDetails::from_json(body).unwrap();
/// assert_eq!(problem.title.as_deref(), Some("Duplicate order"));
/// assert_eq!(problem.status, Some(409));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ProblemDetails {
    /// A URI reference that identifies the problem type (`type`).
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub type_uri: Option<String>,
    /// A short, human-readable summary of the problem type.
    #[serde(default, deserialize_with = "lenient")]
    pub title: Option<String>,
    /// The HTTP status code the server gave for this occurrence.
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<u16>,
    /// A human-readable explanation of this occurrence.
    #[serde(default, deserialize_with = "lenient")]
    pub detail: Option<String>,
    /// A URI reference that identifies this occurrence.
    #[serde(default, deserialize_with = "lenient")]
    pub instance: Option<String>,
    /// Any other members of the object (`code`, `error`, `errors`, ...).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// Phrases that say a conflict will clear by itself: a lock held, a request with the same
/// idempotency key still being processed. Matched ASCII-case-insensitively.
const TRANSIENT_MARKERS: &[&str] = &[
    "locked",
    "lock held",
    "in progress",
    "in-progress",
    "in_progress",
    "in flight",
    "in-flight",
    "in_flight",
    // The same run together, as codes in CamelCase are (`OperationInProgress`).
    "inprogress",
    "inflight",
    "being processed",
    "still processing",
    "idempotency_key_in_use",
    "try again later",
];

/// How far into a plain-text or XML body the transient markers are looked for.
const TEXT_SCAN_LIMIT: usize = 1024;

impl ProblemDetails {
    /// Parses a JSON object as problem details; `None` when the bytes are not a JSON object.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<ProblemDetails>(body).ok()
    }

    /// Parses the body of a response whose content type is JSON (`application/problem+json`,
    /// `application/json`, any `+json`), or that has no content type and looks like an object.
    pub fn from_response(headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        let json = match headers.get(CONTENT_TYPE) {
            Some(ct) => media::is_json(ct.as_bytes()),
            None => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        };
        if json { Self::from_json(body) } else { None }
    }

    /// Parses the body only when the response declares it a problem
    /// (`application/problem+json`): for a response whose body may instead be the resource
    /// itself, as a 412 that carries the current version.
    ///
    /// # Example
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
    /// use scrapewell_core::ProblemDetails;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    /// assert!(ProblemDetails::from_declared(&headers, br#"{"title":"n"}"#).is_none());
    /// headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    /// assert!(ProblemDetails::from_declared(&headers, br#"{"title":"n"}"#).is_some());
    /// ```
    pub fn from_declared(headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        let declared = headers.get(CONTENT_TYPE).is_some_and(|ct| {
            media::essence(ct.as_bytes()).eq_ignore_ascii_case(b"application/problem+json")
        });
        if declared {
            Self::from_json(body)
        } else {
            None
        }
    }

    /// Whether the problem says it will clear by itself ("locked", "in progress", ...), judged
    /// from `type`, `title`, `detail` and the extension members that hold a message (`code`,
    /// `error`, `message`, ...), also where a server nests its error in them: Stripe's
    /// `{"error": {"type": ..., "message": "...another in-progress request..."}}`, JSON:API's
    /// `{"errors": [{"code": ..., "title": ...}]}`.
    ///
    /// # Example
    ///
    /// ```
    /// use scrapewell_core::ProblemDetails;
    ///
    /// let nested = br#"{"error":{"type":"idempotency_error","message":"Another request is in progress"}}"#;
    /// assert!(ProblemDetails::from_json(nested).unwrap().says_transient());
    /// let permanent = br#"{"error":{"code":"resource_exists","message":"Already exists"}}"#;
    /// assert!(!ProblemDetails::from_json(permanent).unwrap().says_transient());
    /// ```
    pub fn says_transient(&self) -> bool {
        [&self.type_uri, &self.title, &self.detail]
            .into_iter()
            .filter_map(|member| member.as_deref())
            .any(|text| contains_transient_marker(text.as_bytes()))
            || members_say_transient(&self.extensions, 0)
    }
}

/// The members whose text says what went wrong, and those that hold a list of such texts or
/// objects.
const MESSAGE_MEMBERS: &[&str] = &[
    "code",
    "error",
    "errors",
    "message",
    "messages",
    "title",
    "detail",
    "details",
    "type",
    "reason",
    "description",
];

/// How deep into nested objects and arrays the markers are looked for, and how many members
/// or items of each are read: an error is nested a level or two, not a document.
const NESTING_LIMIT: usize = 4;
const MEMBERS_READ: usize = 32;

fn members_say_transient(
    object: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
) -> bool {
    object.iter().take(MEMBERS_READ).any(|(name, value)| {
        value_says_transient(value, MESSAGE_MEMBERS.contains(&name.as_str()), depth + 1)
    })
}

/// Whether `value` holds a transient marker: in a string only when it is a message member's
/// (`message_member`), or an item of one's list.
fn value_says_transient(value: &serde_json::Value, message_member: bool, depth: usize) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => message_member && contains_transient_marker(text.as_bytes()),
        _ if depth > NESTING_LIMIT => false,
        Value::Object(object) => members_say_transient(object, depth),
        Value::Array(items) => items
            .iter()
            .take(MEMBERS_READ)
            .any(|item| value_says_transient(item, message_member, depth + 1)),
        _ => false,
    }
}

/// `title: detail`, or whichever of the two is present, each cut after 300 characters: a
/// server may put a whole page in them, and this ends up in error messages and logs. The
/// members themselves keep all of it.
impl fmt::Display for ProblemDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.title.as_deref(), self.detail.as_deref()) {
            (Some(title), Some(detail)) => write!(f, "{}: {}", Clipped(title), Clipped(detail)),
            (Some(text), None) | (None, Some(text)) => Clipped(text).fmt(f),
            (None, None) => Clipped(
                self.type_uri
                    .as_deref()
                    .unwrap_or("problem without a title"),
            )
            .fmt(f),
        }
    }
}

/// The most characters of a member that [`ProblemDetails`]' `Display` shows.
const SHOWN_CHARS: usize = 300;

/// A text shown up to [`SHOWN_CHARS`] characters, then `…`.
struct Clipped<'a>(&'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            Some((end, _)) => write!(f, "{}…", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

/// Whether a conflict response's body says the conflict is transient: the problem details when
/// the body is JSON, else the beginning of a `text/plain` body, or the text of an XML one (S3's
/// `<Error><Code>OperationAborted</Code><Message>A conflicting conditional operation is
/// currently in progress...`), its markup left out; a body without a content type is read as
/// one of those two by its looks.
pub(crate) fn body_says_transient(
    headers: &HeaderMap,
    body: &[u8],
    problem: Option<&ProblemDetails>,
) -> bool {
    if let Some(problem) = problem {
        return problem.says_transient();
    }
    let start = &body[..body.len().min(TEXT_SCAN_LIMIT)];
    let Some(content_type) = headers.get(CONTENT_TYPE).map(|ct| ct.as_bytes()) else {
        return undeclared_says_transient(start);
    };
    if media::essence(content_type).eq_ignore_ascii_case(b"text/plain") {
        contains_transient_marker(start)
    } else if media::is_xml(content_type) {
        contains_transient_marker(&text_of_markup(start))
    } else {
        false
    }
}

/// A body sent without a `Content-Type` (a bare `res.end("Row is locked")`) is read as what it
/// looks like: markup as XML, other text as plain text. An HTML page is not read, as when it
/// is declared: its scripts and navigation say too much.
fn undeclared_says_transient(start: &[u8]) -> bool {
    let trimmed = start.trim_ascii_start();
    if trimmed.first() == Some(&b'<') {
        let html = [b"<!doctype html".as_slice(), b"<html"]
            .iter()
            .any(|opening| media::contains_ignore_case(trimmed, opening));
        !html && contains_transient_marker(&text_of_markup(trimmed))
    } else {
        contains_transient_marker(start)
    }
}

/// The text of an XML fragment: every tag (`<...>`) becomes a space, so that an element's name
/// (`<Locked>false</Locked>`) is not read as what it says.
fn text_of_markup(xml: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(xml.len());
    let mut in_tag = false;
    for &byte in xml {
        match byte {
            b'<' => in_tag = true,
            b'>' if in_tag => {
                in_tag = false;
                text.push(b' ');
            }
            _ if !in_tag => text.push(byte),
            _ => {}
        }
    }
    text
}

fn contains_transient_marker(text: &[u8]) -> bool {
    TRANSIENT_MARKERS
        .iter()
        .any(|marker| media::contains_ignore_case(text, marker.as_bytes()))
}

/// Accepts a member of the wrong type as absent rather than rejecting the whole object.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn display_shows_a_long_member_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let body = format!(r#"{{"title":"Locked","detail":"{long}"}}"#);
        let problem = ProblemDetails::from_json(body.as_bytes()).unwrap();
        assert_eq!(problem.detail.as_deref(), Some(long.as_str()));
        let shown = problem.to_string();
        assert_eq!(shown, format!("Locked: {}…", "é".repeat(SHOWN_CHARS)));
        let short = ProblemDetails::from_json(br#"{"title":"Locked"}"#).unwrap();
        assert_eq!(short.to_string(), "Locked");
    }

    #[test]
    fn parses_problem_json_with_extensions() {
        let body =
            br#"{"type":"about:blank","title":"Conflict","detail":"order exists","code":"dup"}"#;
        let p = ProblemDetails::from_response(&headers("application/problem+json"), body).unwrap();
        assert_eq!(p.type_uri.as_deref(), Some("about:blank"));
        assert_eq!(p.detail.as_deref(), Some("order exists"));
        assert_eq!(
            p.extensions.get("code").and_then(|v| v.as_str()),
            Some("dup")
        );
        assert!(!p.says_transient());
    }

    #[test]
    fn wrong_member_types_are_absent_not_fatal() {
        let p = ProblemDetails::from_json(br#"{"title":42,"status":"409","detail":"x"}"#).unwrap();
        assert_eq!(p.title, None);
        assert_eq!(p.status, None);
        assert_eq!(p.detail.as_deref(), Some("x"));
    }

    #[test]
    fn body_that_is_not_json_is_no_problem() {
        assert_eq!(
            ProblemDetails::from_response(&headers("application/json"), b"<html>"),
            None
        );
        assert_eq!(
            ProblemDetails::from_response(&headers("text/html"), b"{}"),
            None
        );
        assert_eq!(ProblemDetails::from_json(b"[1,2]"), None);
        assert_eq!(ProblemDetails::from_json(b""), None);
    }

    #[test]
    fn recognises_transient_wording() {
        for title in [
            "Resource Locked",
            "Request in progress",
            "IN_FLIGHT",
            "idempotency_key_in_use",
        ] {
            let p = ProblemDetails {
                title: Some(title.into()),
                ..Default::default()
            };
            assert!(p.says_transient(), "{title}");
        }
        let by_code = ProblemDetails::from_json(br#"{"code":"request_in_progress"}"#).unwrap();
        assert!(by_code.says_transient());
        let camel_case = br#"{"error":{"code":"AnotherOperationInProgress"}}"#;
        assert!(
            ProblemDetails::from_json(camel_case)
                .unwrap()
                .says_transient()
        );
        let permanent = ProblemDetails::from_json(br#"{"title":"Email already in use"}"#).unwrap();
        assert!(!permanent.says_transient());
    }

    #[test]
    fn transient_wording_is_found_where_servers_nest_their_errors() {
        let says = |body: &str| {
            ProblemDetails::from_json(body.as_bytes())
                .unwrap()
                .says_transient()
        };
        // Stripe's answer to a request whose key is still in use.
        assert!(says(
            r#"{"error":{"type":"idempotency_error","message":"There is currently another in-progress request using this Idempotent Key. Please try again later."}}"#
        ));
        assert!(says(
            r#"{"errors":[{"status":"409","code":"conflict","title":"Resource locked"}]}"#
        ));
        assert!(says(
            r#"{"message":"Conflict","errors":["Document is being processed"]}"#
        ));
        assert!(!says(
            r#"{"error":{"code":"resource_already_exists","message":"Customer already exists"}}"#
        ));
        // A marker in a member that holds no message is not a message.
        assert!(!says(
            r#"{"meta":{"note":"locked"},"data":{"state":"in progress"}}"#
        ));
        // Nested deeper than an error is, it is not looked for.
        assert!(!says(
            r#"{"error":{"error":{"error":{"error":{"error":{"message":"locked"}}}}}}"#
        ));
        assert!(says(r#"{"error":{"error":{"message":"locked"}}}"#));
    }

    #[test]
    fn plain_text_bodies_are_scanned_but_html_is_not() {
        assert!(body_says_transient(
            &headers("text/plain; charset=utf-8"),
            b"Row is locked",
            None
        ));
        assert!(!body_says_transient(
            &headers("text/html"),
            b"Row is locked",
            None
        ));
    }

    #[test]
    fn a_body_without_a_content_type_is_read_as_what_it_looks_like() {
        let undeclared = |body: &[u8]| body_says_transient(&HeaderMap::new(), body, None);
        assert!(undeclared(b"Row is locked, try again"));
        assert!(undeclared(
            b"\n <Error><Message>Operation in progress</Message></Error>"
        ));
        assert!(!undeclared(b"<Error><Locked>false</Locked></Error>"));
        assert!(!undeclared(b"<!DOCTYPE html><p>Row is locked</p>"));
        assert!(!undeclared(b"<html><body>in progress</body></html>"));
        assert!(!undeclared(b"Order already exists"));
        assert!(!undeclared(b""));
    }

    #[test]
    fn the_text_of_an_xml_body_is_scanned_and_its_markup_is_not() {
        let s3 =
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>OperationAborted</Code>\
            <Message>A conflicting conditional operation is currently in progress against this \
            resource. Please try again.</Message></Error>";
        assert!(body_says_transient(&headers("application/xml"), s3, None));
        assert!(body_says_transient(
            &headers("application/problem+xml"),
            b"<problem><title>Row locked</title></problem>",
            None
        ));
        assert!(!body_says_transient(
            &headers("text/xml"),
            b"<Error><Locked>false</Locked><Message>Bucket already exists</Message></Error>",
            None
        ));
        assert!(!body_says_transient(
            &headers("application/xhtml+xml"),
            b"<p>Row is locked</p>",
            None
        ));
    }
}
