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
    if weak || inner.len() != 16 {
        return Ok(None);
    }
    Ok(u64::from_str_radix(inner, 16).ok())
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

fn parse_etag_list(value: &str, name: &'static str) -> Result<Vec<u64>, ApiError> {
    let mut versions = Vec::new();
    for tag in value.split(',') {
        match parse_etag(tag) {
            Ok(Some(v)) => versions.push(v),
            Ok(None) => {}
            Err(reason) => return Err(ApiError::InvalidHeader { name, reason }),
        }
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
}
