//! Client access control for the proxy's data API (`/v1/...`). When
//! `proxy.data_token` (or `proxy.data_token_file`) is set, [`ClientToken`]
//! is checked in `server::dispatch` before any routing: a request without
//! `Authorization: Bearer <token>` gets 401 (with `WWW-Authenticate:
//! Bearer`), one with another token gets 403, exactly like a node with
//! `node.data_token`. `/healthz`, `/readyz`, `/status`, `/metrics` and
//! `/openapi.json` stay open. The client's `Authorization` header is never
//! forwarded; nodes see the proxy's own `proxy.node_token`.

use http::HeaderMap;
use shardgate_auth::{BearerToken, Refusal};

use crate::error::RequestError;

/// The secret every client `/v1/` request must present (`proxy.data_token`).
#[derive(Clone, Debug)]
pub struct ClientToken(BearerToken);

impl ClientToken {
    /// Wraps a token already checked by `ProxyConfig::validate` (or read
    /// and checked from `proxy.data_token_file`).
    pub fn new(token: &str) -> Self {
        ClientToken(BearerToken::new(token))
    }

    /// Accepts `headers` if they carry `Authorization: Bearer <this token>`
    /// (constant-time comparison): 401 when missing, 403 when another.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        self.0.check(headers).map_err(|r| match r {
            Refusal::Missing => RequestError::Unauthorized,
            Refusal::Wrong => RequestError::Forbidden,
        })
    }
}

/// True for the paths `proxy.data_token` protects.
pub fn is_data_path(path: &str) -> bool {
    path.starts_with("/v1/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn check_tells_missing_from_wrong() {
        let token = ClientToken::new("s3cret");
        assert!(token.check(&headers("Bearer s3cret")).is_ok());
        assert!(token.check(&headers("bearer s3cret")).is_ok());
        for missing in [HeaderMap::new(), headers("Basic s3cret"), headers("Bearer ")] {
            assert!(matches!(token.check(&missing), Err(RequestError::Unauthorized)), "{missing:?}");
        }
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET"] {
            assert!(matches!(token.check(&headers(wrong)), Err(RequestError::Forbidden)), "{wrong}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(is_data_path("/v1/keys/a") && is_data_path("/v1/owners/a") && !is_data_path("/status") && !is_data_path("/v1"));
    }
}
