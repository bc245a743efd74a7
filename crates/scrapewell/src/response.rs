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

    /// The body as text, decoded by the `charset` of its `Content-Type` (UTF-8 when none is
    /// named or the name is unknown); malformed sequences become U+FFFD.
    pub async fn text(self) -> Result<String, Error> {
        let encoding = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(charset)
            .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
            .unwrap_or(encoding_rs::UTF_8);
        let bytes = self.bytes().await?;
        let (text, _, _) = encoding.decode(&bytes);
        Ok(text.into_owned())
    }

    /// The body parsed as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let attempts = self.attempts.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { source, attempts })
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

#[cfg(test)]
mod tests {
    use super::charset;

    #[test]
    fn charset_is_read_from_the_parameters() {
        assert_eq!(charset("text/html; charset=Shift_JIS"), Some("Shift_JIS"));
        assert_eq!(charset("text/html;CHARSET=\"utf-8\""), Some("utf-8"));
        assert_eq!(charset("text/html"), None);
        assert_eq!(charset("text/html; boundary=x"), None);
    }
}
