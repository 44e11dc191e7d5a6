//! Versions and conditional requests. Every stored value gets a version
//! (a u64, unique per node run) sent as a strong `ETag: "<16 hex digits>"`.
//! Writes can be made conditional with `If-None-Match: *` (store only if
//! absent, memcached `add`), `If-Match: *` (only if present, memcached
//! `replace`) or `If-Match: "<etag>"[, ...]` (compare-and-set, memcached
//! `cas`); reads with `If-None-Match: "<etag>"` get 304 when unchanged.
//! The proxy parses the same headers with the same functions.

use http::{HeaderMap, HeaderValue, header};

pub use crate::condition::{ReadCondition, WriteCondition};
use crate::error::ApiError;

/// The version's `ETag` header value.
pub fn format_etag(version: u64) -> HeaderValue {
    let text = format!("\"{version:016x}\"");
    HeaderValue::from_str(&text).expect("hex digits and quotes are a valid header value")
}

/// Parses one entity tag as sent by a client: `Some(version)` for one of ours,
/// `None` for a well-formed tag that cannot be ours (weak or foreign: it never
/// matches), an error when it is not an entity tag at all.
pub fn parse_etag(tag: &str) -> Result<Option<u64>, String> {
    let tag = tag.trim();
    let (weak, quoted) = match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("{:?} is not a quoted entity tag", crate::error::echo(tag)))?;
    Ok(our_version(weak, inner))
}

/// The version an entity tag's opaque part names when the tag is one of
/// ours: strong, 16 lowercase hex digits (compared octet by octet, as
/// strong comparison requires).
fn our_version(weak: bool, inner: &str) -> Option<u64> {
    if weak || inner.len() != 16 || !inner.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(inner, 16).ok()
}

impl WriteCondition {
    /// Reads `If-Match` / `If-None-Match` of a write request.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let if_match = single_header(headers, header::IF_MATCH, "If-Match")?;
        let if_none_match = single_header(headers, header::IF_NONE_MATCH, "If-None-Match")?;
        match (if_match, if_none_match) {
            (None, None) => Ok(WriteCondition::Always),
            (Some(_), Some(_)) => {
                Err(ApiError::InvalidHeader { name: "If-Match", reason: "cannot be combined with If-None-Match on a write".into() })
            }
            (None, Some(v)) if v.trim() == "*" => Ok(WriteCondition::IfAbsent),
            (None, Some(_)) => Err(ApiError::InvalidHeader {
                name: "If-None-Match",
                reason: "on a write only \"*\" (store if absent) is supported".into(),
            }),
            (Some(v), None) if v.trim() == "*" => Ok(WriteCondition::IfPresent),
            (Some(v), None) => Ok(WriteCondition::IfVersionIn(parse_etag_list(v, "If-Match")?)),
        }
    }
}

impl ReadCondition {
    /// Reads `If-None-Match` of a GET/HEAD.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        match single_header(headers, header::IF_NONE_MATCH, "If-None-Match")? {
            None => Ok(ReadCondition::Always),
            Some(v) if v.trim() == "*" => Ok(ReadCondition::IfNoneMatchAny),
            Some(v) => Ok(ReadCondition::IfNoneMatch(parse_etag_list(v, "If-None-Match")?)),
        }
    }
}

fn single_header<'a>(headers: &'a HeaderMap, name: header::HeaderName, display: &'static str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidHeader { name: display, reason: "given more than once".into() });
    }
    first.to_str().map(Some).map_err(|_| ApiError::InvalidHeader { name: display, reason: "is not visible ASCII".into() })
}

/// Parses an RFC 9110 list of entity tags (`#entity-tag`): quoted strings
/// are read whole before commas separate elements, so a comma inside a tag
/// (`"a,b"`) is part of it; empty list elements are skipped. Returns the
/// versions among the tags that are ours; an error names the first thing
/// that is not an entity tag.
fn parse_etag_list(value: &str, name: &'static str) -> Result<Vec<u64>, ApiError> {
    let invalid = |reason: String| ApiError::InvalidHeader { name, reason };
    let b = value.as_bytes();
    let is_ows = |c: u8| c == b' ' || c == b'\t';
    let (mut i, mut tags, mut versions) = (0, 0usize, Vec::new());
    loop {
        while i < b.len() && (is_ows(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        // The element as the client wrote it (up to the next comma), for errors.
        let element = || {
            let end = b[start..].iter().position(|&c| c == b',').map_or(b.len(), |n| start + n);
            value[start..end].trim().chars().take(64).collect::<String>()
        };
        let weak = b[i..].starts_with(b"W/");
        if weak {
            i += 2;
        }
        if b.get(i) != Some(&b'"') {
            return Err(invalid(format!("{:?} is not a quoted entity tag", element())));
        }
        i += 1;
        let open = i;
        // etagc: %x21 / %x23-7E (and obs-text, which `to_str` already refused).
        while i < b.len() && b[i] != b'"' {
            if !(b[i] == 0x21 || (0x23..=0x7e).contains(&b[i])) {
                return Err(invalid(format!("{:?}: an entity tag cannot contain {:?}", element(), b[i] as char)));
            }
            i += 1;
        }
        if i == b.len() {
            return Err(invalid(format!("{:?}: the entity tag's closing quote is missing", element())));
        }
        let inner = &value[open..i];
        i += 1;
        while i < b.len() && is_ows(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(invalid(format!("{:?} is not a quoted entity tag (entity tags are separated by commas)", element())));
        }
        tags += 1;
        versions.extend(our_version(weak, inner));
    }
    if tags == 0 {
        return Err(invalid("names no entity tag".into()));
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_round_trip() {
        let v = 0x0123_4567_89ab_cdef;
        let tag = format_etag(v);
        assert_eq!(tag.to_str().unwrap(), "\"0123456789abcdef\"");
        assert_eq!(parse_etag(tag.to_str().unwrap()), Ok(Some(v)));
        assert_eq!(parse_etag("W/\"0123456789abcdef\""), Ok(None));
        assert_eq!(parse_etag("\"xyz\""), Ok(None));
        assert!(parse_etag("0123456789abcdef").is_err());
        // A long non-tag is repeated as its first 64 characters.
        let err = parse_etag(&"x".repeat(60_000)).unwrap_err();
        assert_eq!(err, format!("\"{}…\" is not a quoted entity tag", "x".repeat(64)));
    }

    #[test]
    fn conditions_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(WriteCondition::from_headers(&h).unwrap(), WriteCondition::Always);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(WriteCondition::from_headers(&h).unwrap(), WriteCondition::IfAbsent);
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(WriteCondition::from_headers(&h).is_err());
        h.remove(header::IF_NONE_MATCH);
        assert_eq!(WriteCondition::from_headers(&h).unwrap(), WriteCondition::IfPresent);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"000000000000000a\", \"foreign\""));
        let c = WriteCondition::from_headers(&h).unwrap();
        assert_eq!(c, WriteCondition::IfVersionIn(vec![10]));
        assert!(c.allows(Some(10)) && !c.allows(Some(11)) && !c.allows(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("garbage"));
        assert!(WriteCondition::from_headers(&h).is_err());
    }

    fn list(value: &'static str) -> Result<Vec<u64>, String> {
        parse_etag_list(value, "If-None-Match").map_err(|e| e.to_string())
    }

    #[test]
    fn lists_read_quoted_strings_before_commas() {
        // RFC 9110: a comma is an etagc, so `"a,b"` is one (foreign) tag.
        assert_eq!(list("\"a,b\""), Ok(vec![]));
        assert_eq!(list("\"a,b\", \"000000000000000a\""), Ok(vec![10]));
        assert_eq!(list("W/\"x,y\" ,\"000000000000000b\",W/\"000000000000000c\""), Ok(vec![11]));
        // Empty list elements are ignored, OWS around elements too.
        assert_eq!(list(" , \"000000000000000a\" ,, "), Ok(vec![10]));
        // Strong comparison is octet by octet: uppercase hex or a sign is not ours.
        assert_eq!(list("\"000000000000000A\", \"+00000000000000a\""), Ok(vec![]));
        for (bad, says) in [
            ("", "names no entity tag"),
            (",", "names no entity tag"),
            ("garbage", "\"garbage\" is not a quoted entity tag"),
            ("\"a\"b", "separated by commas"),
            ("\"a,\"b", "separated by commas"),
            ("\"open", "closing quote is missing"),
            ("\"a b\"", "cannot contain ' '"),
            ("W/x", "is not a quoted entity tag"),
        ] {
            let e = list(bad).unwrap_err();
            assert!(e.starts_with("header If-None-Match: ") && e.contains(says), "{bad:?}: {e}");
        }
    }
}
