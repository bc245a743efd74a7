//! Response bodies that errors carry.

use std::fmt;

use bytes::Bytes;

/// A response body an error carries, whole. It derefs to its bytes; its `Debug` shows the
/// length and the first 64 bytes only, so that an error printed with `{:?}` (or by an
/// `unwrap()`) stays a line, not a page.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use scrapewell_core::ErrorBody;
///
/// let page = ErrorBody::from(Bytes::from(format!("<html>{}</html>", "x".repeat(100_000))));
/// assert_eq!(page.len(), 100_013);
/// assert_eq!(
///     format!("{page:?}"),
///     format!("100013 bytes: b\"<html>{}\"…", "x".repeat(58))
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ErrorBody(Bytes);

impl ErrorBody {
    /// The bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for ErrorBody {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = self.0.slice(..self.0.len().min(SHOWN));
        write!(f, "{} bytes: {shown:?}", self.0.len())?;
        if self.0.len() > SHOWN {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl From<Bytes> for ErrorBody {
    fn from(bytes: Bytes) -> Self {
        ErrorBody(bytes)
    }
}
