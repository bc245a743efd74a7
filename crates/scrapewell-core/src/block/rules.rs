//! Block rules as data: the line format, its parser, and the embedded default set.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;

use super::BlockKind;

/// The rules scrapewell ships with: Cloudflare, Akamai, PerimeterX / HUMAN, DataDome,
/// Imperva / Incapsula, AWS WAF, Kasada, F5 BIG-IP, Sucuri, DDoS-Guard, Google's "unusual
/// traffic" page, LinkedIn's 999, and soft blocks.
const DEFAULT_RULES: &str = include_str!("default.rules");

/// How much one matched rule says on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strength {
    /// Decides alone (`cf-mitigated: challenge`, `x-amzn-waf-action`).
    Strong,
    /// Needs company: another weak marker of the same vendor, or a hint.
    Weak,
    /// Only ever company (a status, a vendor's cookie, its `Server` header).
    Hint,
}

/// Where a rule looks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// The status is one of these.
    Status(Vec<u16>),
    /// A header's value contains the pattern (any case); `*` matches its presence.
    Header(HeaderName),
    /// A `Set-Cookie` name starts with the pattern.
    Cookie,
    /// A redirect's target contains the pattern.
    Location,
    /// The first bytes of the body contain the pattern, exactly.
    Body,
    /// A 200 with an empty body whose `Content-Type` contains the pattern.
    EmptyBody,
}

/// One rule: which vendor's block it points at, what kind of block, how strongly, and where
/// it looks for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The vendor (`cloudflare`, `datadome`, …); `None` for a hint that keeps any vendor
    /// company (`*` in a rule file).
    pub vendor: Option<Arc<str>>,
    /// The kind of block it points at; `None` for hints.
    pub kind: Option<BlockKind>,
    /// How much it says on its own.
    pub strength: Strength,
    /// Where it looks.
    pub target: Target,
    /// What it looks for.
    pub pattern: Arc<str>,
}

/// A malformed rule, with the line it is on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A line does not parse.
    #[error("{source_name}:{line}: {reason}")]
    Malformed {
        /// The file, or `<rules>` for text.
        source_name: String,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The rules are valid one by one but could not be compiled together.
    #[error("cannot compile the block rules: {reason}")]
    Compile {
        /// Why.
        reason: String,
    },
    /// The rule file could not be read.
    #[error("cannot read block rules from {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A set of block rules, kept as data: the embedded default, rules a caller adds, or a file.
///
/// The format is one rule per line, `vendor kind strength target pattern`; `#` starts a
/// comment. See `default.rules` in the crate for the full description and the shipped set.
///
/// # Example
///
/// ```
/// use scrapewell_core::block::RuleSet;
///
/// let mut rules = RuleSet::embedded();
/// rules.add("acme-shield denied strong header:x-acme-shield blocked")?;
/// rules.add("acme-shield captcha weak body <div id=\"acme-captcha\">")?;
/// assert!(rules.len() > 2);
///
/// let error = RuleSet::parse("acme captcha sometimes body x").unwrap_err();
/// assert!(error.to_string().contains(":1:"));
/// # Ok::<(), scrapewell_core::block::RuleError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// The rules scrapewell ships with.
    pub fn embedded() -> RuleSet {
        match RuleSet::parse_named(DEFAULT_RULES, "default.rules") {
            Ok(rules) => rules,
            // The embedded file is parsed by a unit test; this cannot happen in a release.
            Err(error) => panic!("scrapewell's embedded block rules are malformed: {error}"),
        }
    }

    /// No rules at all.
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// Rules from text in the rule format.
    pub fn parse(text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::parse_named(text, "<rules>")
    }

    /// Rules from a file in the rule format; an error names the file and the line.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RuleSet, RuleError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read {
            path: path.display().to_string(),
            source,
        })?;
        RuleSet::parse_named(&text, &path.display().to_string())
    }

    /// Adds one rule in the rule format.
    pub fn add(&mut self, line: &str) -> Result<&mut Self, RuleError> {
        let rule = parse_line(line).map_err(|reason| RuleError::Malformed {
            source_name: "<rule>".to_owned(),
            line: 1,
            reason,
        })?;
        self.rules.extend(rule);
        Ok(self)
    }

    /// Adds every rule of `other`, after these.
    pub fn extend(&mut self, other: RuleSet) -> &mut Self {
        self.rules.extend(other.rules);
        self
    }

    /// Keeps only the rules `keep` says yes to: the way to drop a rule that misfires on a site
    /// of yours, such as the soft block of an empty HTML 200 where a list's last fragment is
    /// empty.
    ///
    /// # Example
    ///
    /// ```
    /// use scrapewell_core::block::{RuleSet, Target};
    ///
    /// let mut rules = RuleSet::embedded();
    /// let before = rules.len();
    /// rules.retain(|rule| rule.target != Target::EmptyBody);
    /// assert_eq!(rules.len(), before - 1);
    /// ```
    pub fn retain(&mut self, keep: impl FnMut(&Rule) -> bool) -> &mut Self {
        self.rules.retain(keep);
        self
    }

    /// The rules, in order (a tie between vendors goes to the one listed first).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn parse_named(text: &str, source_name: &str) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let rule = parse_line(line).map_err(|reason| RuleError::Malformed {
                source_name: source_name.to_owned(),
                line: index + 1,
                reason,
            })?;
            rules.extend(rule);
        }
        Ok(RuleSet { rules })
    }
}

/// One line: a rule, or `None` for a blank line or a comment.
fn parse_line(line: &str) -> Result<Option<Rule>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut rest = line;
    let mut field = |name: &str| -> Result<&str, String> {
        let (value, tail) = rest.split_once(char::is_whitespace).ok_or_else(|| {
            format!("missing {name} (a rule is: vendor kind strength target pattern)")
        })?;
        rest = tail.trim_start();
        Ok(value)
    };
    let vendor = field("kind")?;
    let kind = field("strength")?;
    let strength = field("target")?;
    let target = field("pattern")?;
    let pattern = rest.trim();
    if pattern.is_empty() {
        return Err("missing pattern".to_owned());
    }
    let strength = match strength {
        "strong" => Strength::Strong,
        "weak" => Strength::Weak,
        "hint" => Strength::Hint,
        other => return Err(format!("unknown strength {other:?} (strong, weak or hint)")),
    };
    let kind = match kind {
        "-" if strength == Strength::Hint => None,
        "-" => return Err("only hints may leave the kind out (-)".to_owned()),
        other => Some(other.parse::<BlockKind>()?),
    };
    let vendor = match vendor {
        "*" if strength == Strength::Hint => None,
        "*" => return Err("only hints may name any vendor (*)".to_owned()),
        name => Some(Arc::from(name)),
    };
    let target = parse_target(target, pattern)?;
    Ok(Some(Rule {
        vendor,
        kind,
        strength,
        target,
        pattern: Arc::from(pattern),
    }))
}

fn parse_target(target: &str, pattern: &str) -> Result<Target, String> {
    if let Some(name) = target.strip_prefix("header:") {
        let name =
            HeaderName::try_from(name).map_err(|_| format!("invalid header name {name:?}"))?;
        if matches!(
            name.as_str(),
            "content-security-policy" | "content-security-policy-report-only"
        ) {
            // A policy naming recaptcha or a challenge host is how ordinary pages allow them.
            return Err("CSP headers are not scanned".to_owned());
        }
        return Ok(Target::Header(name));
    }
    match target {
        "status" => pattern
            .split_whitespace()
            .map(|code| match code.parse::<u16>() {
                Ok(code) if (100..=999).contains(&code) => Ok(code),
                _ => Err(format!("invalid status {code:?}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Target::Status),
        "cookie" => Ok(Target::Cookie),
        "location" => Ok(Target::Location),
        "body" => Ok(Target::Body),
        "empty-body" => Ok(Target::EmptyBody),
        other => Err(format!(
            "unknown target {other:?} (status, header:<name>, cookie, location, body, empty-body)"
        )),
    }
}

impl fmt::Display for Strength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strength::Strong => "strong",
            Strength::Weak => "weak",
            Strength::Hint => "hint",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_rules_parse_and_cover_every_vendor_the_design_names() {
        let rules = RuleSet::embedded();
        let vendors: std::collections::HashSet<&str> = rules
            .rules()
            .iter()
            .filter_map(|r| r.vendor.as_deref())
            .collect();
        for vendor in [
            "cloudflare",
            "akamai",
            "perimeterx",
            "datadome",
            "imperva",
            "aws-waf",
            "kasada",
            "f5",
            "sucuri",
            "ddos-guard",
            "google",
            "linkedin",
            "generic",
        ] {
            assert!(vendors.contains(vendor), "{vendor}");
        }
    }

    #[test]
    fn a_malformed_rule_names_its_line() {
        let text = "# comment\n\ncloudflare challenge strong body x\nacme captcha often body y\n";
        let error = RuleSet::parse(text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "<rules>:4: unknown strength \"often\" (strong, weak or hint)"
        );
        for (line, reason) in [
            ("acme", "missing kind"),
            ("acme captcha strong body", "missing pattern"),
            ("acme sneaky strong body x", "unknown kind"),
            ("acme - strong body x", "only hints"),
            ("* captcha weak body x", "only hints"),
            ("acme captcha strong status 20x", "invalid status"),
            (
                "acme captcha strong header:content-security-policy x",
                "CSP",
            ),
            (
                "acme captcha strong header:bad\u{1}name x",
                "invalid header name",
            ),
            ("acme captcha strong footer x", "unknown target"),
        ] {
            let error = RuleSet::parse(line).unwrap_err().to_string();
            assert!(error.contains(reason), "{line}: {error}");
        }
    }

    #[test]
    fn a_rule_file_that_cannot_be_read_is_an_error_naming_it() {
        let error = RuleSet::from_file("/nonexistent/blocks.rules").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/blocks.rules"));
    }

    #[test]
    fn patterns_keep_their_inner_spaces() {
        let rules =
            RuleSet::parse("f5 denied strong body The requested URL  was rejected").unwrap();
        assert_eq!(
            &*rules.rules()[0].pattern,
            "The requested URL  was rejected"
        );
        assert_eq!(rules.rules()[0].kind, Some(BlockKind::AccessDenied));
    }
}
