//! Media types and case-blind byte search, for the layers that read response bodies.

/// The media type without its parameters (`application/json` of
/// `application/json; charset=utf-8`), trimmed.
pub(crate) fn essence(content_type: &[u8]) -> &[u8] {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    content_type[..end].trim_ascii()
}

/// Whether `content_type` is JSON: `application/json` or any `+json` type.
pub(crate) fn is_json(content_type: &[u8]) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// Whether `content_type` is XML that is not HTML: `application/xml`, `text/xml` or any `+xml`
/// type but `application/xhtml+xml`.
pub(crate) fn is_xml(content_type: &[u8]) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case(b"application/xml")
        || essence.eq_ignore_ascii_case(b"text/xml")
        || essence.len() > 4
            && essence[essence.len() - 4..].eq_ignore_ascii_case(b"+xml")
            && !is_html(content_type)
}

/// Whether `content_type` is HTML (`text/html`, `application/xhtml+xml`).
pub(crate) fn is_html(content_type: &[u8]) -> bool {
    contains_ignore_case(essence(content_type), b"html")
}

/// Whether `content_type` is a `text/` type.
pub(crate) fn is_text(content_type: &[u8]) -> bool {
    essence(content_type)
        .get(..5)
        .is_some_and(|top| top.eq_ignore_ascii_case(b"text/"))
}

/// Whether `haystack` contains `needle`, ASCII case ignored.
pub(crate) fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_read_without_parameters_or_case() {
        assert_eq!(essence(b" Text/HTML ; charset=utf-8"), b"Text/HTML");
        assert_eq!(essence(b""), b"");
        assert!(is_json(b"application/problem+json; charset=utf-8"));
        assert!(is_json(b"Application/JSON"));
        assert!(!is_json(b"text/plain; profile=json") && !is_json(b"+json"));
        assert!(is_html(b"text/html") && is_html(b"application/xhtml+xml"));
        assert!(!is_html(b"text/plain; note=html"));
        assert!(is_text(b"TEXT/plain") && !is_text(b"text") && !is_text(b"application/text"));
        assert!(is_xml(b"application/xml; charset=utf-8") && is_xml(b"Text/XML"));
        assert!(is_xml(b"application/problem+xml") && !is_xml(b"application/xhtml+xml"));
        assert!(!is_xml(b"+xml") && !is_xml(b"text/html"));
        assert!(contains_ignore_case(b"Access DENIED", b"denied"));
        assert!(!contains_ignore_case(b"den", b"denied"));
    }
}
