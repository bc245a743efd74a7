//! What the detector concluded about a response.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Strength, Target};

/// The kind of block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockKind {
    /// A JavaScript or proof-of-work challenge ("Just a moment...").
    Challenge,
    /// A captcha to solve.
    Captcha,
    /// Access denied outright.
    AccessDenied,
    /// Refused for the request rate (Cloudflare's 1015).
    RateLimited,
    /// No block page, but no content either: an empty page, a redirect to a captcha.
    SoftBlock,
}

impl BlockKind {
    /// The name used in rule files (`challenge`, `captcha`, `denied`, `rate-limited`,
    /// `soft-block`).
    pub fn as_str(self) -> &'static str {
        match self {
            BlockKind::Challenge => "challenge",
            BlockKind::Captcha => "captcha",
            BlockKind::AccessDenied => "denied",
            BlockKind::RateLimited => "rate-limited",
            BlockKind::SoftBlock => "soft-block",
        }
    }
}

impl FromStr for BlockKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "challenge" => BlockKind::Challenge,
            "captcha" => BlockKind::Captcha,
            "denied" => BlockKind::AccessDenied,
            "rate-limited" => BlockKind::RateLimited,
            "soft-block" => BlockKind::SoftBlock,
            other => {
                return Err(format!(
                    "unknown kind {other:?} (challenge, captcha, denied, rate-limited, soft-block)"
                ));
            }
        })
    }
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One marker that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evidence {
    /// How much it says on its own.
    pub strength: Strength,
    /// Where it was found.
    pub target: Target,
    /// What matched: the rule's pattern (never a header's or cookie's value).
    pub marker: Arc<str>,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Status(_) => write!(f, "{} status {}", self.strength, self.marker),
            Target::Header(name) => write!(f, "{} header {name}: {}", self.strength, self.marker),
            Target::Cookie => write!(f, "{} cookie {}", self.strength, self.marker),
            Target::Location => write!(f, "{} redirect to {}", self.strength, self.marker),
            Target::Body => write!(f, "{} body {:?}", self.strength, self.marker),
            Target::EmptyBody => write!(f, "{} empty {} body", self.strength, self.marker),
        }
    }
}

/// A response recognised as a block: who blocked, how, on what evidence, and how sure.
///
/// The [`BlockDetect`](super::BlockDetect) service puts it in the extensions of a response it
/// recognises.
///
/// # Example
///
/// ```
/// use scrapewell_core::block::{BlockKind, Detector, ResponseFacts};
///
/// let detector = Detector::default();
/// let response = http::Response::builder()
///     .status(403)
///     .header("cf-mitigated", "challenge")
///     .body(())
///     .unwrap();
/// let verdict = detector.classify(&ResponseFacts::of(&response, b"", true)).unwrap();
/// assert_eq!(verdict.vendor(), "cloudflare");
/// assert_eq!(verdict.kind(), BlockKind::Challenge);
/// assert!(verdict.confidence() >= 0.9);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BlockVerdict {
    pub(super) vendor: Arc<str>,
    pub(super) kind: BlockKind,
    pub(super) evidence: Vec<Evidence>,
    pub(super) confidence: f32,
}

impl BlockVerdict {
    /// The vendor whose block it is (`generic` for soft blocks).
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// The kind of block.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    /// The markers that matched, strongest first.
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    /// How sure the detector is, from 0 to 1: at least 0.9 with a strong marker, about 0.75
    /// with two weak ones, 0.6 with a weak one and a hint.
    pub fn confidence(&self) -> f32 {
        self.confidence
    }
}

impl fmt::Display for BlockVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (confidence {:.2}; ",
            self.vendor, self.kind, self.confidence
        )?;
        for (index, evidence) in self.evidence.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{evidence}")?;
        }
        f.write_str(")")
    }
}
