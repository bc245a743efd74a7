//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date in any of its three formats.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

/// Why a `Retry-After` value was not used.
///
/// # Example
///
/// ```
/// use std::time::SystemTime;
/// use http::HeaderValue;
/// use scrapewell_core::retry::{parse_retry_after, RetryAfterError};
///
/// let soon = parse_retry_after(&HeaderValue::from_static("soon"), SystemTime::now());
/// assert_eq!(soon, Err(RetryAfterError::Malformed("soon".to_owned())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryAfterError {
    /// The value is neither delta-seconds nor an HTTP-date (`-5`, `soon`, `1.5`).
    #[error("Retry-After {0:?} is neither delta-seconds nor an HTTP-date")]
    Malformed(String),
}

/// Parses a `Retry-After` value into the delay it asks for, measured from `now`.
///
/// Accepts delta-seconds (`120`) and HTTP-dates in IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`)
/// form. A date in the past asks for no delay. Negative, fractional or non-numeric values are
/// [`RetryAfterError::Malformed`]. Delta-seconds too large for a `Duration` saturate, so that a
/// cap on the delay rejects them instead of an overflow.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use scrapewell_core::retry::parse_retry_after;
///
/// let now = SystemTime::now();
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("2"), now), Ok(Duration::from_secs(2)));
/// assert!(parse_retry_after(&HeaderValue::from_static("soon"), now).is_err());
/// ```
pub fn parse_retry_after(
    value: &HeaderValue,
    now: SystemTime,
) -> Result<Duration, RetryAfterError> {
    let malformed =
        || RetryAfterError::Malformed(String::from_utf8_lossy(value.as_bytes()).into_owned());
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Ok(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).map_err(|_| malformed())?;
    Ok(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str, now: SystemTime) -> Result<Duration, RetryAfterError> {
        parse_retry_after(&HeaderValue::from_str(v).unwrap(), now)
    }

    /// 1994-11-06 08:49:00 UTC, 37 seconds before the dates in RFC 9110's examples.
    fn rfc_now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_740)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("0", rfc_now()), Ok(Duration::ZERO));
        assert_eq!(parse("120", rfc_now()), Ok(Duration::from_secs(120)));
        assert_eq!(parse(" 7 ", rfc_now()), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn all_three_date_formats() {
        let expected = Ok(Duration::from_secs(37));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", rfc_now()), expected);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", rfc_now()), expected);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", rfc_now()), expected);
    }

    #[test]
    fn a_date_in_the_past_asks_for_no_delay() {
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:00:00 GMT", rfc_now()),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        for v in [
            "-5",
            "soon",
            "1.5",
            "",
            "5s",
            "+5",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(
                parse(v, rfc_now()),
                Err(RetryAfterError::Malformed(v.trim().to_owned())),
                "{v:?}"
            );
        }
        let binary = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        assert!(parse_retry_after(&binary, rfc_now()).is_err());
    }

    #[test]
    fn huge_delta_saturates_instead_of_overflowing() {
        assert_eq!(
            parse("99999999999999999999999", rfc_now()),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse("31536000", rfc_now()),
            Ok(Duration::from_secs(365 * 24 * 3600))
        );
    }
}
