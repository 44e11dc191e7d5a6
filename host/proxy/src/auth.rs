//! Client access control for the proxy's data API (`/v1/...`). When
//! `proxy.data_token` (or `proxy.data_token_file`) is set, [`ClientToken`]
//! is checked in `server::dispatch` before any routing: a request without
//! `Authorization: Bearer <token>` gets 401 (with `WWW-Authenticate:
//! Bearer`), one with another token gets 403, exactly like a node with
//! `node.data_token`. `/healthz`, `/readyz`, `/status`, `/metrics` and
//! `/openapi.json` stay open. The client's `Authorization` header is never
//! forwarded; nodes see the proxy's own `proxy.node_token`.

use std::sync::Arc;

use http::{HeaderMap, header};
use shardgate_node::auth::bearer_token;
use subtle::ConstantTimeEq;

use crate::error::RequestError;

/// The secret every client `/v1/` request must present.
#[derive(Clone)]
pub struct ClientToken(Arc<[u8]>);

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientToken(<redacted>)")
    }
}

impl ClientToken {
    /// Wraps a token already checked by `ProxyConfig::validate` (or read
    /// and checked from `proxy.data_token_file`).
    pub fn new(token: &str) -> Self {
        ClientToken(Arc::from(token.as_bytes()))
    }

    /// Accepts `headers` if they carry `Authorization: Bearer <this token>`.
    /// The comparison takes the same time wherever the tokens differ (only
    /// the length can be learned from timing).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        let value = headers.get(header::AUTHORIZATION).ok_or(RequestError::Unauthorized)?;
        let presented = bearer_token(value.as_bytes()).ok_or(RequestError::Unauthorized)?;
        if bool::from(presented.ct_eq(&self.0)) { Ok(()) } else { Err(RequestError::Forbidden) }
    }
}

/// True for the paths `proxy.data_token` protects.
pub fn is_data_path(path: &str) -> bool {
    path.starts_with("/v1/")
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
