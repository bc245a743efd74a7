//! The response a scraper reads.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode, Version};
use scrapewell_core::retry::Attempts;
use serde::de::DeserializeOwned;
use url::Url;

use http_body_util::BodyExt;
use scrapewell_core::block::{BlockVerdict, PeekedBody};

use crate::body::{BodyData, ResponseBody};
use crate::error::decode_json;
use crate::{Error, TransportError};

/// A response, with what the client learned getting it.
///
/// By default the body has already arrived whole (up to the client's size cap) when `send()`
/// returns, so a connection that broke mid-body was retried like any transport error. A request
/// sent with [`stream_response`](crate::RequestBuilder::stream_response) gets the body as it
/// arrives instead, from [`chunk`](Self::chunk): nothing past the headers is retried then.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), scrapewell::Error> {
/// let response = scrapewell::Client::new().get("http://127.0.0.1:8080/page/1").send().await?;
/// println!("{} after {} attempts", response.status(), response.attempts().count());
/// let html = response.text().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    attempts: Attempts,
    verdict: Option<Box<BlockVerdict>>,
    /// The body, and the URL it came from.
    body: PeekedBody<ResponseBody>,
    received: u64,
    max_body: u64,
}

impl Response {
    pub(crate) fn from_http(
        response: http::Response<PeekedBody<ResponseBody>>,
        max_body: u64,
    ) -> Self {
        let (mut parts, body) = response.into_parts();
        let verdict = if parts.extensions.is_empty() {
            None
        } else {
            parts.extensions.remove::<BlockVerdict>().map(Box::new)
        };
        Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            attempts: Attempts::take(&mut parts.extensions),
            verdict,
            body,
            received: 0,
            max_body,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL the response came from, after redirects.
    pub fn url(&self) -> &Url {
        &self.body.get_ref().url
    }

    /// How many attempts the request took, and why each retry was made.
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// The verdict on a block page, for a request that asked to receive them
    /// ([`receive_blocked`](crate::RequestBuilder::receive_blocked)); `None` for a response that
    /// is not a block.
    pub fn block_verdict(&self) -> Option<&BlockVerdict> {
        self.verdict.as_deref()
    }

    /// Whether the body is still arriving (streaming mode) rather than already whole.
    pub fn is_streaming(&self) -> bool {
        matches!(self.body.get_ref().data, BodyData::Streaming(_))
    }

    /// An [`Error::Status`] for a 4xx or 5xx, else the response itself.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status.is_client_error() || self.status.is_server_error() {
            Err(Error::Status {
                status: self.status,
                attempts: self.attempts,
            })
        } else {
            Ok(self)
        }
    }

    /// The next piece of the body; `None` at its end. A whole body comes as one piece.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let streaming = self.is_streaming();
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| Error::Transport {
                source: TransportError::Body(e.without_url()),
                attempts: self.attempts.clone(),
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            if streaming {
                self.received += chunk.len() as u64;
                if self.received > self.max_body {
                    return Err(Error::BodyTooLarge {
                        limit: self.max_body,
                        attempts: self.attempts.clone(),
                    });
                }
            }
            return Ok(Some(chunk));
        }
        Ok(None)
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        // A body that arrived whole is handed over as it lies, not read back frame by frame.
        if let Some(ResponseBody {
            data: BodyData::Whole(whole),
            ..
        }) = self.body.unpeeked_mut()
        {
            return Ok(std::mem::take(whole));
        }
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        // A body that is one piece (a whole one always is) is handed on without a copy.
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut whole = bytes::BytesMut::from(first);
        whole.extend_from_slice(&second);
        while let Some(chunk) = self.chunk().await? {
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    }

    /// The body as text, decoded as a browser would: by a byte order mark, else the `charset`
    /// of its `Content-Type`, else, for HTML or XML, the encoding its first 1,024 bytes
    /// declare (an XML declaration's `encoding="..."`, as RSS feeds write it; a `<meta
    /// charset="windows-1251">`, or `http-equiv` with a `content="text/html; charset=..."`),
    /// else UTF-8. An unknown name counts as none; malformed sequences become U+FFFD.
    pub async fn text(self) -> Result<String, Error> {
        // Both read off the headers before the body takes the response.
        let content_type = self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let declared = content_type
            .and_then(charset)
            .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()));
        let markup = content_type.is_none_or(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("html") || ct.contains("xml")
        });
        let bytes = self.bytes().await?;
        let encoding = declared
            .or_else(|| markup.then(|| markup_charset(&bytes)).flatten())
            .unwrap_or(encoding_rs::UTF_8);
        // `decode` lets a byte order mark override the encoding, as browsers do.
        let (text, _, _) = encoding.decode(&bytes);
        Ok(text.into_owned())
    }

    /// The body parsed as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let attempts = self.attempts.clone();
        decode_json(self.bytes().await?, &attempts)
    }
}

/// The `charset` parameter of a media type.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// The encoding a page declares among its first 1,024 bytes: in an XML declaration
/// (`<?xml version="1.0" encoding="windows-1251"?>`), else in a `<meta>` tag, as the HTML
/// standard's prescan finds it (simplified: the first `charset=` inside a `<meta` tag). A page
/// that claims UTF-16 in ASCII bytes is not UTF-16: that reads as UTF-8, as in browsers.
fn markup_charset(page: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = &page[..page.len().min(1024)];
    let lower = head.to_ascii_lowercase();
    let label = xml_declared(&lower).or_else(|| meta_declared(&lower))?;
    let encoding = encoding_rs::Encoding::for_label(label)?;
    Some(
        if encoding == encoding_rs::UTF_16BE || encoding == encoding_rs::UTF_16LE {
            encoding_rs::UTF_8
        } else {
            encoding
        },
    )
}

/// The `encoding` of an XML declaration that opens `head` (lowercase).
fn xml_declared(head: &[u8]) -> Option<&[u8]> {
    let declaration = head.trim_ascii_start().strip_prefix(b"<?xml")?;
    let declaration = &declaration[..find(declaration, b"?>")?];
    value_after(declaration, b"encoding=")
}

/// The `charset` of the first `<meta>` tag in `head` (lowercase) that names one.
fn meta_declared(head: &[u8]) -> Option<&[u8]> {
    let mut rest = head;
    while let Some(start) = find(rest, b"<meta") {
        let tag = &rest[start..];
        let tag = &tag[..find(tag, b">").unwrap_or(tag.len())];
        if let Some(label) = value_after(tag, b"charset=") {
            return Some(label);
        }
        rest = &rest[start + b"<meta".len()..];
    }
    None
}

/// The value that follows `key` in `text`, quoted or not.
fn value_after<'t>(text: &'t [u8], key: &[u8]) -> Option<&'t [u8]> {
    let value = text[find(text, key)? + key.len()..].trim_ascii_start();
    let value = value
        .strip_prefix(b"\"")
        .or(value.strip_prefix(b"'"))
        .unwrap_or(value);
    let end = value
        .iter()
        .position(|b| {
            matches!(b, b'"' | b'\'' | b';' | b'/' | b'>' | b'?') || b.is_ascii_whitespace()
        })
        .unwrap_or(value.len());
    Some(&value[..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::{charset, markup_charset};

    #[test]
    fn a_page_declares_its_charset_in_a_meta_tag() {
        let name = |page: &str| markup_charset(page.as_bytes()).map(|e| e.name());
        assert_eq!(
            name(r#"<html><head><meta charset="windows-1251">"#),
            Some("windows-1251")
        );
        assert_eq!(
            name(r#"<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=Shift_JIS">"#),
            Some("Shift_JIS")
        );
        assert_eq!(name("<meta charset=gbk><title>"), Some("GBK"));
        assert_eq!(name(r#"<meta charset="utf-16">"#), Some("UTF-8"));
        assert_eq!(name(r#"<meta charset="no-such-thing">"#), None);
        assert_eq!(
            name(r#"<meta name="viewport" content="width=device-width">"#),
            None
        );
        assert_eq!(name("<p>charset=koi8-r is not in a meta tag</p>"), None);
        let late = format!("{}<meta charset=\"koi8-r\">", " ".repeat(1024));
        assert_eq!(name(&late), None, "past the first 1,024 bytes");
    }

    #[test]
    fn a_feed_declares_its_encoding_in_the_xml_declaration() {
        let name = |page: &str| markup_charset(page.as_bytes()).map(|e| e.name());
        assert_eq!(
            name("<?xml version=\"1.0\" encoding=\"windows-1251\"?><rss>"),
            Some("windows-1251")
        );
        assert_eq!(
            name("\n<?xml version='1.0' encoding='ISO-8859-1' ?>"),
            Some("windows-1252")
        );
        assert_eq!(name("<?xml version=\"1.0\"?><rss>"), None);
        assert_eq!(
            name("<rss><?xml encoding=\"koi8-r\"?>"),
            None,
            "not opening the page"
        );
    }

    #[test]
    fn charset_is_read_from_the_parameters() {
        assert_eq!(charset("text/html; charset=Shift_JIS"), Some("Shift_JIS"));
        assert_eq!(charset("text/html;CHARSET=\"utf-8\""), Some("utf-8"));
        assert_eq!(charset("text/html"), None);
        assert_eq!(charset("text/html; boundary=x"), None);
    }
}
