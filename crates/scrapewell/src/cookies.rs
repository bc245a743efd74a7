//! The cookies a client keeps between requests.

use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::IntoUrl;

/// The cookies a client keeps between requests: what a server sets with `Set-Cookie` is sent
/// back to it, as a browser would (RFC 6265: domain, path, expiry, `Secure`). Sites behind
/// anti-bot walls set cookies that a client is expected to send back (a session, a consent, a
/// vendor's clearance). A client keeps one when built with
/// [`cookie_store(true)`](crate::ClientBuilder::cookie_store), or uses one of yours (say, a
/// logged-in session) with [`cookie_jar`](crate::ClientBuilder::cookie_jar).
///
/// When a request to a host is blocked and the client rotates to a fresh identity, the jar
/// forgets every cookie it would send to that host: the blocked identity's session, and the
/// wall's own cookies, stay with it. A request whose identity carries its own `Cookie` header
/// sends that instead of the jar's.
///
/// Cookie values are never logged: `Debug` shows how many cookies the jar holds.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use scrapewell::CookieJar;
///
/// let jar = Arc::new(CookieJar::new());
/// assert!(jar.add("session=abc; Path=/", "https://example.com/login"));
/// assert_eq!(jar.cookies("https://example.com/account").as_deref(), Some("session=abc"));
/// let client = scrapewell::Client::builder().cookie_jar(jar).build().unwrap();
/// ```
#[derive(Default)]
pub struct CookieJar(RwLock<cookie_store::CookieStore>);

impl CookieJar {
    /// An empty jar.
    pub fn new() -> CookieJar {
        CookieJar::default()
    }

    /// Stores `set_cookie` as if `url` had answered with it in a `Set-Cookie` header; `false`
    /// when it is not a cookie, not one `url` may set (another domain's, an expired one), or
    /// `url` is not an HTTP URL.
    pub fn add(&self, set_cookie: &str, url: impl IntoUrl) -> bool {
        url.into_url()
            .is_ok_and(|url| self.write().parse(set_cookie, &url).is_ok())
    }

    /// The `Cookie` header the jar would send with a request to `url`, if any.
    pub fn cookies(&self, url: impl IntoUrl) -> Option<String> {
        self.header_for(&url.into_url().ok()?)
    }

    fn header_for(&self, url: &Url) -> Option<String> {
        let header = self
            .read()
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        (!header.is_empty()).then_some(header)
    }

    /// Forgets every cookie the jar would send to `url`'s host, whatever its path.
    pub(crate) fn forget_host(&self, url: &Url) {
        let mut store = self.write();
        let sent_there: Vec<(String, String, String)> = store
            .iter_any()
            .filter(|cookie| cookie.domain.matches(url))
            .map(|cookie| {
                let name = cookie.name().to_owned();
                (
                    String::from(&cookie.domain),
                    String::from(&cookie.path),
                    name,
                )
            })
            .collect();
        for (domain, path, name) in sent_there {
            store.remove(&domain, &path, &name);
        }
    }

    /// Keeps the cookies of `headers`' `Set-Cookie` fields, received from `url`. One that does
    /// not parse, or that `url` may not set, is left out, as a browser leaves it.
    pub(crate) fn store(&self, headers: &HeaderMap, url: &Url) {
        let mut set = headers.get_all(SET_COOKIE).iter().peekable();
        if set.peek().is_none() {
            return;
        }
        let mut store = self.write();
        for value in set {
            if let Ok(text) = value.to_str() {
                let _ = store.parse(text, url);
            }
        }
    }

    /// The `Cookie` field for a request to `url`, marked sensitive; `None` when the jar has
    /// nothing for it.
    pub(crate) fn field_for(&self, url: &Url) -> Option<HeaderValue> {
        let mut value = HeaderValue::try_from(self.header_for(url)?).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    fn read(&self) -> RwLockReadGuard<'_, cookie_store::CookieStore> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, cookie_store::CookieStore> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the cookies, without their names or values.
impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("cookies", &self.read().iter_any().count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "https://shop.example.com/cart";

    #[test]
    fn cookies_go_back_where_they_belong() {
        let jar = CookieJar::new();
        assert!(jar.add("session=1; Path=/", SHOP));
        assert!(jar.add("wide=2; Domain=example.com; Path=/", SHOP));
        assert!(jar.add("secure=3; Secure; Path=/", SHOP));
        assert!(!jar.add("not a cookie", SHOP));
        assert!(!jar.add("other=4; Domain=another.org", SHOP));
        assert!(!jar.add("any=5", "not a url"));
        assert_eq!(
            sorted(jar.cookies(SHOP)),
            ["secure=3", "session=1", "wide=2"]
        );
        // Another host of the domain gets the domain's cookie only; plain HTTP no secure one.
        assert_eq!(
            jar.cookies("https://news.example.com/").as_deref(),
            Some("wide=2")
        );
        assert_eq!(
            sorted(jar.cookies("http://shop.example.com/")),
            ["session=1", "wide=2"]
        );
        assert_eq!(jar.cookies("https://another.org/"), None);
    }

    #[test]
    fn forgetting_a_host_forgets_what_it_would_have_been_sent_and_nothing_else() {
        let jar = CookieJar::new();
        jar.add("session=1; Path=/account", SHOP);
        jar.add("wide=2; Domain=example.com", SHOP);
        jar.add("news=3", "https://news.example.com/");
        jar.forget_host(&Url::parse(SHOP).unwrap());
        assert_eq!(jar.cookies("https://shop.example.com/account"), None);
        assert_eq!(
            jar.cookies("https://news.example.com/").as_deref(),
            Some("news=3")
        );
        assert_eq!(format!("{jar:?}"), "CookieJar { cookies: 1 }");
    }

    fn sorted(header: Option<String>) -> Vec<String> {
        let mut cookies: Vec<String> = header
            .unwrap_or_default()
            .split("; ")
            .map(str::to_owned)
            .collect();
        cookies.sort();
        cookies
    }
}
