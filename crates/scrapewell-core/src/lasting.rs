//! Durations in error messages, written for the person who reads them.

use std::fmt;
use std::time::Duration;

/// A [`Duration`] displayed for people, in at most two units (`250 ms`, `1.5 s`, `5 min 30 s`,
/// `2 h 5 min`, `365 days`, `3 years`), cut down rather than rounded up: a cool-down with
/// 59.9998 s left reads `59.9 s`. A server's `Retry-After` can ask for anything up to the
/// largest `Duration`; a year reads `365 days`, not `31536000s`, and anything from 500 years up
/// reads `over 500 years`: past that, a figure says more about where a count saturated (584
/// years of nanoseconds, the largest `Duration`) than about what the server meant.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::Lasting;
///
/// assert_eq!(Lasting(Duration::from_millis(1500)).to_string(), "1.5 s");
/// assert_eq!(Lasting(Duration::from_secs(2 * 3600 + 5 * 60)).to_string(), "2 h 5 min");
/// assert_eq!(Lasting(Duration::from_secs(365 * 24 * 3600)).to_string(), "365 days");
/// assert_eq!(Lasting(Duration::MAX).to_string(), "over 500 years");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lasting(pub Duration);

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// The Julian year, as astronomers count one: 365.25 days.
const YEAR: u64 = DAY * 1461 / 4;

impl fmt::Display for Lasting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        match seconds {
            0 => match self.0.as_millis() {
                0 => write!(f, "{} µs", self.0.as_micros()),
                millis => write!(f, "{millis} ms"),
            },
            _ if seconds < 60 => match self.0.subsec_millis() / 100 {
                0 => write!(f, "{seconds} s"),
                tenths => write!(f, "{seconds}.{tenths} s"),
            },
            _ if seconds < HOUR => match (seconds / 60, seconds % 60) {
                (minutes, 0) => write!(f, "{minutes} min"),
                (minutes, seconds) => write!(f, "{minutes} min {seconds} s"),
            },
            _ if seconds < 2 * DAY => match (seconds / HOUR, seconds % HOUR / 60) {
                (hours, 0) => write!(f, "{hours} h"),
                (hours, minutes) => write!(f, "{hours} h {minutes} min"),
            },
            _ if seconds < 2 * YEAR => write!(f, "{} days", seconds / DAY),
            _ if seconds < 500 * YEAR => write!(f, "{} years", seconds / YEAR),
            _ => f.write_str("over 500 years"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(seconds: u64) -> String {
        Lasting(Duration::from_secs(seconds)).to_string()
    }

    #[test]
    fn each_scale_from_milliseconds_to_years() {
        assert_eq!(shown(0), "0 µs");
        assert_eq!(Lasting(Duration::from_nanos(1_999)).to_string(), "1 µs");
        assert_eq!(
            Lasting(Duration::from_micros(250_900)).to_string(),
            "250 ms"
        );
        assert_eq!(shown(1), "1 s");
        assert_eq!(
            Lasting(Duration::from_nanos(59_999_843_005)).to_string(),
            "59.9 s"
        );
        assert_eq!(shown(60), "1 min");
        assert_eq!(shown(59 * 60 + 59), "59 min 59 s");
        assert_eq!(shown(HOUR), "1 h");
        assert_eq!(shown(HOUR + 60), "1 h 1 min");
        assert_eq!(shown(2 * DAY - 1), "47 h 59 min");
        assert_eq!(shown(2 * DAY), "2 days");
        assert_eq!(shown(2 * YEAR - 1), "730 days");
        assert_eq!(shown(2 * YEAR), "2 years");
        assert_eq!(shown(500 * YEAR - 1), "499 years");
        assert_eq!(shown(500 * YEAR), "over 500 years");
        assert_eq!(
            Lasting(Duration::from_nanos(u64::MAX)).to_string(),
            "over 500 years"
        );
        assert_eq!(shown(u64::MAX), "over 500 years");
    }
}
