//! Bearer-token access control for the data API (`/v1/...`). When
//! `node.data_token` (or `node.data_token_file`) is set, [`DataAuth::refuse`]
//! runs in front of every `/v1/` handler (the node's service checks it
//! before routing): a request without
//! `Authorization: Bearer <token>` gets 401 (with `WWW-Authenticate:
//! Bearer`), one with another token gets 403. `/healthz`, `/readyz`,
//! `/metrics` and `/openapi.json` stay open. The token is what proxies
//! present, so a node only serves its configured proxies.

use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use shardgate_auth::{BearerToken, Refusal};

use shardgate_api::ApiError;

/// The secret every `/v1/` request must present (`node.data_token`).
#[derive(Clone, Debug)]
pub struct DataToken(BearerToken);

impl DataToken {
    /// Wraps a token checked by `NodeConfig::validate`.
    pub fn new(token: &str) -> Self {
        DataToken(BearerToken::new(token))
    }

    /// Accepts `headers` if they carry `Authorization: Bearer <this token>`
    /// (constant-time comparison): 401 when missing, 403 when another.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.0.check(headers).map_err(|r| match r {
            Refusal::Missing => ApiError::Unauthorized { role: "node" },
            Refusal::Wrong => ApiError::Forbidden { role: "node" },
        })
    }
}

pub use shardgate_auth::bearer_token;

/// What [`DataAuth::refuse`] needs: the token (none: the API is open) and
/// the refusal counters of this node's registry.
#[derive(Clone)]
pub struct DataAuth {
    pub token: Option<DataToken>,
    pub unauthorized: Counter,
    pub forbidden: Counter,
}

impl DataAuth {
    /// The refusal of a `/v1/` request without the token (401) or with
    /// another one (403), counted; `None`: it may go on.
    pub fn refuse(&self, path: &str, headers: &HeaderMap) -> Option<Response> {
        let token = self.token.as_ref()?;
        if !path.starts_with("/v1/") {
            return None;
        }
        let error = token.check(headers).err()?;
        match error {
            ApiError::Forbidden { .. } => self.forbidden.inc(),
            _ => self.unauthorized.inc(),
        };
        tracing::debug!(path, status = %error.status(), "refusing data request without a valid token");
        Some(error.into_response())
    }
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
        assert!(matches!(token.check(&HeaderMap::new()), Err(ApiError::Unauthorized { role: "node" })));
        assert!(matches!(token.check(&headers("Basic s3cret")), Err(ApiError::Unauthorized { role: "node" })));
        assert!(matches!(token.check(&headers("Bearer s3cre")), Err(ApiError::Forbidden { role: "node" })));
        assert!(matches!(token.check(&headers("Bearer s3cret2")), Err(ApiError::Forbidden { role: "node" })));
        assert!(matches!(token.check(&headers("Bearer S3CRET")), Err(ApiError::Forbidden { role: "node" })));
    }

    #[test]
    fn debug_does_not_print_the_token() {
        assert!(!format!("{:?}", DataToken::new("s3cret")).contains("s3cret"));
    }
}
