//! Bearer tokens, shared by every role that can require one (the node's
//! `node.data_token`, meta's `meta.admin_token`, the proxy's
//! `proxy.data_token` and `proxy.node_token`). Each role wraps
//! [`BearerToken`] and maps a [`Refusal`] to its own HTTP error; the
//! parsing, the constant-time comparison and the rules a configured token
//! must follow live here once.

use std::sync::Arc;

use http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Longest accepted token, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a request was refused: no usable `Authorization: Bearer` header
/// (answer 401), or another token (answer 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Wrong,
}

/// A configured secret. Its `Debug` output never shows it.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Wraps a token already checked by [`validate`].
    pub fn new(token: &str) -> Self {
        BearerToken(Arc::from(token))
    }

    /// The `Authorization` header value that carries this token.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Accepts `headers` carrying `Authorization: Bearer <this token>`. The
    /// comparison takes the same time wherever the tokens differ (only the
    /// length can be learned from timing).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes())).ok_or(Refusal::Missing)?;
        if bool::from(presented.ct_eq(self.0.as_bytes())) { Ok(()) } else { Err(Refusal::Wrong) }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme name
/// case-insensitive), or `None`.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// What a configured token must be to be sendable as an `Authorization:
/// Bearer` value: 1 to [`MAX_TOKEN_LEN`] visible ASCII characters, no
/// spaces. The error is the reason, for the caller to prefix with its key.
pub fn validate(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(format!("must be 1 to {MAX_TOKEN_LEN} bytes, got {}", token.len()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters without spaces (it is sent as `Authorization: Bearer <token>`)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn check_tells_missing_from_wrong() {
        let t = BearerToken::new("s3cret");
        assert_eq!(t.check(&headers("Bearer s3cret")), Ok(()));
        assert_eq!(t.check(&headers("bearer s3cret")), Ok(()));
        assert_eq!(t.check(&HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(t.check(&headers("Basic s3cret")), Err(Refusal::Missing));
        assert_eq!(t.check(&headers("Bearer s3cre")), Err(Refusal::Wrong));
        assert_eq!(t.check(&headers("Bearer S3CRET")), Err(Refusal::Wrong));
        assert_eq!(t.header_value(), "Bearer s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn validation_names_the_rule() {
        assert!(validate("ok-token_1").is_ok());
        assert!(validate("").unwrap_err().contains("1 to 4096 bytes"));
        assert!(validate(&"x".repeat(4097)).unwrap_err().contains("got 4097"));
        assert!(validate("has space").unwrap_err().contains("visible ASCII"));
    }
}
