//! URL parsing that reuses the origins a thread parsed last.
//!
//! A scraper sends most of its requests to a few sites, and reading the scheme and the host is
//! most of what `Url::parse` does: for an address such as `127.0.0.1`, two thirds, since the host
//! goes through IDNA before it is read as one. A URL that starts with an origin parsed lately
//! (`http://127.0.0.1:8080` then `/` and a path that does not start with another slash) has only
//! its path, query and fragment parsed, against that origin, by the url crate's own parsing of
//! relative references. The URL Standard defines that to give the URL parsing the whole string
//! gives; `the_same_urls_as_url_parse` checks it on inputs made to tell them apart.
//!
//! An origin is kept the second time it is met among a thread's last few new ones: a crawler
//! that spreads its requests over many sites would otherwise pay for keeping an origin on every
//! request, and never reuse it.

use std::cell::RefCell;

use scrapewell_core::ratelimit::HostKey;
use url::{Position, Url};

/// How many origins a thread keeps; a request's URL is compared with each.
const KEPT: usize = 4;

/// The longest URL parsed against a kept origin: longer ones are parsed whole, so that the
/// string a thread keeps for padding (see `parse`) stays small.
const LONGEST: usize = 2048;

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            origins: [const { None }; KEPT],
            next: 0,
            met: [None; KEPT],
            next_met: 0,
            padded: String::new(),
        })
    };
}

/// The origins a thread parsed last, oldest replaced first, and the hosts of the last new ones
/// it met.
struct Recent {
    origins: [Option<Origin>; KEPT],
    next: usize,
    met: [Option<HostKey>; KEPT],
    next_met: usize,
    /// A path being parsed, padded (see `parse`): kept to be written over, not allocated anew,
    /// and emptied once parsed.
    padded: String,
}

impl Recent {
    /// Keeps the origin of `url` (what `input` parsed to) if it was met lately; otherwise notes
    /// that it was met. Origins are told apart by host and port alone, which costs a fraction of
    /// hashing the whole origin: a scheme that collides only has its origin kept one meeting
    /// early. A kept origin meets a URL here too, when its path cannot be parsed alone (`//`),
    /// and is not kept twice.
    fn meet(&mut self, input: &str, url: &Url) {
        let Some((host, port)) = keepable(input, url) else {
            return;
        };
        let prefix = &url[..Position::BeforePath];
        if self.origins.iter().flatten().any(|o| o.prefix() == prefix) {
            return;
        }
        let key = Some(HostKey::of(host, port));
        if !self.met.contains(&key) {
            self.met[self.next_met] = key;
            self.next_met = (self.next_met + 1) % KEPT;
            return;
        }
        let mut origin = url.clone();
        origin.set_query(None);
        origin.set_fragment(None);
        origin.set_path("/");
        let len = prefix.len();
        self.origins[self.next] = Some(Origin { url: origin, len });
        self.next = (self.next + 1) % KEPT;
    }
}

/// The host and port of `url` when its origin can be kept: `input` (what parsed to it) spells
/// the origin as the URL serializes it, and it has no user name or password, which would stay
/// in memory after the request that carried them is gone.
fn keepable<'u>(input: &str, url: &'u Url) -> Option<(&'u str, u16)> {
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let rest = input.strip_prefix(&url[..Position::BeforePath])?;
    rest.starts_with('/')
        .then_some((url.host_str()?, url.port_or_known_default()?))
}

/// An origin, as a URL whose path is `/`, and the length of what comes before that path.
struct Origin {
    url: Url,
    len: usize,
}

impl Origin {
    fn prefix(&self) -> &str {
        &self.url.as_str()[..self.len]
    }
}

/// The rest of `input` after `prefix`, when that rest is a path that can be parsed alone: it
/// starts with exactly one slash, and it has no tab or newline, which the parser removes and
/// which could otherwise join two slashes into the start of another host.
fn path_after<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = input.strip_prefix(prefix)?;
    let bytes = rest.as_bytes();
    let one_slash = bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\'));
    let unbroken = !bytes.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r'));
    (one_slash && unbroken).then_some(rest)
}

/// Appends `count` spaces, a slice at a time rather than a `char` at a time.
fn pad(string: &mut String, mut count: usize) {
    const SPACES: &str = "                                                                ";
    while count > 0 {
        let spaces = &SPACES[..count.min(SPACES.len())];
        string.push_str(spaces);
        count -= spaces.len();
    }
}

/// `Url::parse(input)`, reading an origin this thread parsed lately only once.
pub(crate) fn parse(input: &str) -> Result<Url, url::ParseError> {
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        let Recent {
            origins, padded, ..
        } = &mut *recent;
        for origin in origins.iter().flatten().filter(|_| input.len() <= LONGEST) {
            if let Some(path) = path_after(input, origin.prefix()) {
                // The parser gives the URL it writes room for as many bytes as it was handed: a
                // path alone, it would grow twice to fit the origin in front (two reallocations,
                // about 1k instructions). Trailing spaces, which the URL Standard strips from
                // every input, make the room.
                padded.clear();
                padded.push_str(path);
                pad(padded, origin.len);
                // A path parsed against its origin does not fail; if it ever did, the whole
                // string is parsed, for the error `Url::parse` gives.
                let parsed = Url::options().base_url(Some(&origin.url)).parse(padded);
                padded.clear();
                if let Ok(url) = parsed {
                    return Ok(url);
                }
            }
        }
        let url = Url::parse(input)?;
        recent.meet(input, &url);
        Ok(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs where parsing a path alone could differ from parsing the whole URL.
    const TRICKY: &[&str] = &[
        "/",
        "/a/b?c=d#e",
        "//evil.example/x",
        "/\\evil.example/x",
        "/\t/evil.example/x",
        "/\n/evil.example/x",
        "/a\r\nb",
        "/../../etc/passwd",
        "/a/./b/../../c",
        "/%2e%2e/x",
        "/.%2E/x",
        "/a b?c d#e f",
        "/ä?ö=ü#ß",
        "/%zz/%",
        "/x?a=1&b=%20&c=\u{1F600}",
        "/x ",
        "/x?q \u{0}",
        "/#",
        "/?",
        "/a\\b\\..\\c",
        "/C:/windows",
        "/@evil.example",
        "/:80",
    ];

    const ORIGINS: &[&str] = &[
        "http://127.0.0.1:8080",
        "https://www.example.com",
        "http://[::1]:3000",
        "https://xn--bcher-kva.example",
        "http://example.com",
    ];

    /// Another spelling of an origin: parsed whole every time, and never kept.
    const SPELLED_OTHERWISE: &[&str] = &[
        "HTTP://WWW.Example.com/a",
        "http://example.com:80/a",
        "https://bücher.example/a",
        "http://user:secret@example.com/a",
        "http:example.com/a",
        "  http://example.com/a",
        "http://example.com?only=query",
        "http://example.com#only-fragment",
        "http://example.com",
        "mailto:someone@example.com",
        "http://",
        "not a url",
    ];

    /// Compared by `Debug`, which shows every part the URL reads from its serialization, where
    /// `==` compares the serialization alone.
    fn assert_as_url_parse(input: &str) {
        assert_eq!(
            format!("{:?}", parse(input)),
            format!("{:?}", Url::parse(input)),
            "{input:?} parsed otherwise than by Url::parse"
        );
    }

    fn every_input() -> Vec<String> {
        let mut inputs: Vec<String> = SPELLED_OTHERWISE.iter().map(|s| s.to_string()).collect();
        for origin in ORIGINS {
            inputs.extend(TRICKY.iter().map(|rest| format!("{origin}{rest}")));
        }
        inputs
    }

    #[test]
    fn the_same_urls_as_url_parse() {
        // Twice: first with no origin kept, then with each one kept.
        for _ in 0..2 {
            for input in every_input() {
                assert_as_url_parse(&input);
            }
        }
    }

    #[test]
    fn the_same_urls_as_url_parse_for_random_paths() {
        const PIECES: &[&str] = &[
            "/",
            "//",
            "\\",
            ".",
            "..",
            "%",
            "%2e",
            "%2F",
            "?",
            "#",
            "&",
            "=",
            " ",
            "\t",
            "\n",
            "@",
            ":",
            "a",
            "Z",
            "ä",
            "\u{1F600}",
            "[",
            "]",
            "|",
            "^",
            "`",
            "{",
            "}",
            "\u{0}",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let origin = ORIGINS[rng.usize(..ORIGINS.len())];
            let mut input = format!("{origin}/");
            for _ in 0..rng.usize(0..8) {
                input.push_str(PIECES[rng.usize(..PIECES.len())]);
            }
            assert_as_url_parse(&input);
        }
    }

    #[test]
    fn an_origin_spelled_otherwise_is_not_kept() {
        for input in SPELLED_OTHERWISE {
            if let Ok(url) = Url::parse(input) {
                assert!(keepable(input, &url).is_none(), "{input:?} would be kept");
            }
        }
    }

    #[test]
    fn an_origin_is_kept_without_its_path_or_query() {
        let input = "https://www.example.com/private/page?token=secret#part";
        parse(input).unwrap();
        parse(input).unwrap();
        RECENT.with(|recent| {
            let recent = recent.borrow();
            let origin = recent.origins.iter().flatten().next().expect("kept");
            assert_eq!(origin.url.as_str(), "https://www.example.com/");
            assert_eq!(origin.prefix(), "https://www.example.com");
        });
    }

    fn kept() -> Vec<String> {
        RECENT.with(|recent| {
            let recent = recent.borrow();
            recent
                .origins
                .iter()
                .flatten()
                .map(|o| o.prefix().to_owned())
                .collect()
        })
    }

    #[test]
    fn an_origin_is_kept_when_met_again_among_the_last_new_ones() {
        let origin = |i: usize| format!("http://host{i}.example");
        let meet = |i: usize| parse(&format!("{}/page", origin(i))).unwrap();
        meet(0);
        assert!(kept().is_empty(), "kept the first time: {:?}", kept());
        meet(0);
        assert_eq!(kept(), [origin(0)]);
        // Met again only after as many other new ones as are remembered: not kept.
        for i in 1..=KEPT + 1 {
            meet(i);
        }
        meet(1);
        assert_eq!(kept(), [origin(0)]);
    }

    #[test]
    fn pad_appends_as_many_spaces_as_asked() {
        for count in [0, 1, 63, 64, 65, 200] {
            let mut string = String::from("/a");
            pad(&mut string, count);
            assert_eq!(string, format!("/a{}", " ".repeat(count)));
        }
    }

    #[test]
    fn a_long_url_is_parsed_whole_and_nothing_of_a_path_stays() {
        let long = format!("http://example.com/{}?token=secret", "a".repeat(LONGEST));
        for input in [
            "http://example.com/a",
            "http://example.com/a",
            &long,
            "http://example.com/b?token=secret",
        ] {
            assert_as_url_parse(input);
        }
        RECENT.with(|recent| {
            let recent = recent.borrow();
            assert!(recent.padded.is_empty());
            assert!(
                recent.padded.capacity() <= LONGEST + 64,
                "{}",
                recent.padded.capacity()
            );
        });
    }

    #[test]
    fn an_origin_is_kept_once() {
        for _ in 0..3 {
            parse("http://example.com/a").unwrap();
            // Its path starts like another host's: parsed whole, and it meets the origin again.
            parse("http://example.com//a").unwrap();
        }
        assert_eq!(kept(), ["http://example.com"]);
    }

    #[test]
    fn origins_are_replaced_oldest_first() {
        let origin = |i: usize| format!("http://host{i}.example");
        for i in 0..=KEPT {
            parse(&format!("{}/page", origin(i))).unwrap();
            parse(&format!("{}/page", origin(i))).unwrap();
        }
        let kept = kept();
        assert_eq!(kept.len(), KEPT);
        assert!((1..=KEPT).all(|i| kept.contains(&origin(i))), "{kept:?}");
    }
}
