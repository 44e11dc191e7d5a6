//! Keys in URLs: a key is arbitrary bytes, sent as ONE percent-encoded path
//! segment after `/v1/keys/`. The node (and the proxy, which must accept
//! exactly the same URLs) decodes with [`decode_key_segment`]; clients and
//! the proxy forwarding to a node build URLs with [`key_path`].

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str};

use crate::error::ApiError;
use crate::limits::Limits;

/// Path prefix of the single-key endpoints.
pub const KEY_PATH_PREFIX: &str = "/v1/keys/";

/// Everything but RFC 3986 unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Decodes the raw (still percent-encoded) segment after `/v1/keys/` to the
/// key's bytes. Borrows when nothing was encoded. A `%` not followed by two
/// hex digits is refused ([`ApiError::InvalidPercentEncoding`]): taken
/// literally, `%zz` and `%25zz` would name the same key.
pub fn decode_key_segment<'a>(segment: &'a str, limits: &Limits) -> Result<Cow<'a, [u8]>, ApiError> {
    if segment.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if segment.contains('/') {
        return Err(ApiError::KeyNotOneSegment);
    }
    if let Some(at) = invalid_escape(segment.as_bytes()) {
        let escape = segment[at..].chars().take(3).collect();
        return Err(ApiError::InvalidPercentEncoding { at, escape });
    }
    // Decoding never grows a segment and shrinks it at most 3x: reject
    // hopeless sizes before allocating.
    if segment.len() / 3 > limits.max_key_size {
        return Err(ApiError::KeyTooLong { size: segment.len() / 3, limit: limits.max_key_size, limit_name: limits.name("max_key_size") });
    }
    let key: Cow<'a, [u8]> = percent_decode_str(segment).into();
    if key.len() > limits.max_key_size {
        return Err(ApiError::KeyTooLong { size: key.len(), limit: limits.max_key_size, limit_name: limits.name("max_key_size") });
    }
    Ok(key)
}

/// The byte offset of the first `%` in `segment` that is not followed by
/// two hex digits.
fn invalid_escape(segment: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = segment[from..].iter().position(|&b| b == b'%') {
        let at = from + n;
        match segment.get(at + 1..at + 3) {
            Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => from = at + 3,
            _ => return Some(at),
        }
    }
    None
}

/// The key's percent-encoded path segment.
pub fn encode_key_segment(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, SEGMENT).to_string()
}

/// `/v1/keys/<encoded key>`.
pub fn key_path(key: &[u8]) -> String {
    let mut path = String::with_capacity(KEY_PATH_PREFIX.len() + key.len());
    path.push_str(KEY_PATH_PREFIX);
    path.push_str(&encode_key_segment(key));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let key: Vec<u8> = (0..=255u8).collect();
        let seg = encode_key_segment(&key);
        assert!(!seg.contains('/'));
        let limits = Limits::default();
        assert_eq!(&*decode_key_segment(&seg, &limits).unwrap(), &key[..]);
    }

    #[test]
    fn plain_segment_borrows() {
        let limits = Limits::default();
        assert!(matches!(decode_key_segment("user-42", &limits).unwrap(), Cow::Borrowed(b"user-42")));
    }

    #[test]
    fn rejects_empty_slash_and_long() {
        let limits = Limits { max_key_size: 4, ..Limits::default() };
        assert!(matches!(decode_key_segment("", &limits), Err(ApiError::EmptyKey)));
        assert!(matches!(decode_key_segment("a/b", &limits), Err(ApiError::KeyNotOneSegment)));
        assert!(matches!(
            decode_key_segment("abcde", &limits),
            Err(ApiError::KeyTooLong { size: 5, limit: 4, ref limit_name }) if limit_name == "node.max_key_size"
        ));
        let proxy = Limits { role: "proxy", ..limits.clone() };
        let e = decode_key_segment("abcde", &proxy).unwrap_err().to_string();
        assert_eq!(e, "key is 5 bytes; the limit proxy.max_key_size is 4 bytes");
        assert!(decode_key_segment("%61%62%63%64", &limits).is_ok());
    }

    #[test]
    fn refuses_invalid_percent_encoding() {
        let limits = Limits::default();
        assert_eq!(&*decode_key_segment("%25zz", &limits).unwrap(), b"%zz");
        assert_eq!(&*decode_key_segment("a%2fB%2F", &limits).unwrap(), b"a/B/");
        for (segment, at, escape) in [("%zz", 0, "%zz"), ("ab%2", 2, "%2"), ("%", 0, "%"), ("%41%g1", 3, "%g1"), ("x%%41", 1, "%%4")] {
            let e = decode_key_segment(segment, &limits).unwrap_err();
            assert!(matches!(&e, ApiError::InvalidPercentEncoding { at: a, escape: s } if *a == at && s == escape), "{segment}: {e:?}");
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert!(e.to_string().contains("%25"), "{e}");
        }
    }
}
