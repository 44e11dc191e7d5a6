//! Bearer-token access control for the data API (`/v1/...`). When
//! `node.data_token` (or `node.data_token_file`) is set, [`require_token`]
//! runs in front of every `/v1/` handler: a request without
//! `Authorization: Bearer <token>` gets 401 (with `WWW-Authenticate:
//! Bearer`), one with another token gets 403. `/healthz`, `/readyz`,
//! `/metrics` and `/openapi.json` stay open. The token is what proxies
//! present, so a node only serves its configured proxies.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use prometheus_client::metrics::counter::Counter;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The secret every `/v1/` request must present.
#[derive(Clone)]
pub struct DataToken(Arc<[u8]>);

impl std::fmt::Debug for DataToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataToken(<redacted>)")
    }
}

impl DataToken {
    /// Wraps a non-empty token (checked by `NodeConfig::validate`).
    pub fn new(token: &str) -> Self {
        DataToken(Arc::from(token.as_bytes()))
    }

    /// Accepts `headers` if they carry `Authorization: Bearer <this token>`.
    /// The comparison takes the same time wherever the tokens differ (only
    /// the length can be learned from timing).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized);
        };
        let presented = bearer_token(value.as_bytes()).ok_or(ApiError::Unauthorized)?;
        if bool::from(presented.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme name is
/// case-insensitive, RFC 7235), or `None` for another scheme.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// What [`require_token`] needs: the token (none: the API is open) and
/// the refusal counters of this node's registry.
#[derive(Clone)]
pub struct DataAuth {
    pub token: Option<DataToken>,
    pub unauthorized: Counter,
    pub forbidden: Counter,
}

/// Middleware: refuses `/v1/` requests that lack the data token; passes
/// everything else through untouched.
pub async fn require_token(State(auth): State<DataAuth>, request: Request, next: Next) -> Response {
    if let Some(token) = &auth.token
        && request.uri().path().starts_with("/v1/")
        && let Err(error) = token.check(request.headers())
    {
        match error {
            ApiError::Forbidden => auth.forbidden.inc(),
            _ => auth.unauthorized.inc(),
        };
        tracing::debug!(path = request.uri().path(), status = %error.status(), "refusing data request without a valid token");
        return error.into_response();
    }
    next.run(request).await
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
    fn bearer_scheme_is_parsed_case_insensitively() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn check_tells_missing_from_wrong() {
        let token = DataToken::new("s3cret");
        assert!(token.check(&headers("Bearer s3cret")).is_ok());
        assert!(matches!(
            token.check(&HeaderMap::new()),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            token.check(&headers("Basic s3cret")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            token.check(&headers("Bearer s3cre")),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            token.check(&headers("Bearer s3cret2")),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            token.check(&headers("Bearer S3CRET")),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn debug_does_not_print_the_token() {
        assert!(!format!("{:?}", DataToken::new("s3cret")).contains("s3cret"));
    }
}
