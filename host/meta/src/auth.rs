//! Bearer-token access control for the meta cluster. When `meta.admin_token`
//! is set, [`require_admin`] runs in front of every route (before a follower
//! forwards to the leader) and demands `Authorization: Bearer <token>` on:
//! - every write of the JSON API: POST/PATCH/DELETE under `/v1/` (node
//!   changes, uploads, activation, rollback, Raft learners and members),
//!   except `POST /v1/preview` and `POST /v1/lookup`, which only read, and
//!   `POST /v1/proxies/report`, a proxy's soft-state report that changes
//!   no cluster state ([`crate::proxies`]; proxies hold no admin token);
//! - every Raft RPC (`/raft/*`): members send the token to each other
//!   ([`crate::raft::PeerClient`]), so a stranger cannot vote or append.
//!
//! Reads (`GET`), `/v1/watch`, `/metrics`, `/openapi.json` and the console
//! (`/ui`, whose writes send the token like any client) stay open. A
//! missing token answers 401 (`WWW-Authenticate: Bearer`, kind
//! `unauthorized`), another token 403 (kind `forbidden`); nothing is
//! forwarded, proposed or applied for a refused request.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shardgate_auth::{BearerToken, Refusal};
use tracing::debug;

use crate::error::ApiError;
use crate::metrics::OutcomeLabel;

/// The admin secret (`meta.admin_token`).
#[derive(Clone, Debug)]
pub struct AdminToken(BearerToken);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        AdminToken(BearerToken::new(token))
    }

    /// The `Authorization` header value that carries this token.
    pub fn header_value(&self) -> String {
        self.0.header_value()
    }

    /// Accepts `headers` carrying `Authorization: Bearer <this token>`
    /// (constant-time comparison): 401 when missing, 403 when another.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.0.check(headers).map_err(|r| match r {
            Refusal::Missing => ApiError::Unauthorized,
            Refusal::Wrong => ApiError::Forbidden,
        })
    }
}

/// Whether a request to `path` with `method` needs the admin token.
pub fn needs_admin(method: &Method, path: &str) -> bool {
    if path.starts_with("/raft/") {
        return true;
    }
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    path.starts_with("/v1/") && !read && !matches!(path, "/v1/preview" | "/v1/lookup" | "/v1/proxies/report")
}

/// What [`require_admin`] needs: the token (none: everything is open) and
/// the refusal counter of this member's registry.
#[derive(Clone)]
pub struct AdminAuth {
    pub token: Option<AdminToken>,
    pub refused: Family<OutcomeLabel, Counter>,
}

/// Middleware over the whole member router: refuses admin requests without
/// the token, passes everything else through.
pub async fn require_admin(State(auth): State<AdminAuth>, request: Request, next: Next) -> Response {
    if let Some(token) = &auth.token
        && needs_admin(request.method(), request.uri().path())
        && let Err(error) = token.check(request.headers())
    {
        auth.refused.get_or_create(&OutcomeLabel { outcome: error.kind().into() }).inc();
        debug!(method = %request.method(), path = request.uri().path(), kind = error.kind(), "refusing admin request");
        return error.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    #[test]
    fn writes_and_raft_rpcs_need_the_token_reads_and_preview_do_not() {
        for (method, path) in [
            (Method::POST, "/v1/nodes"),
            (Method::PATCH, "/v1/nodes/a"),
            (Method::DELETE, "/v1/nodes/a"),
            (Method::POST, "/v1/changes"),
            (Method::POST, "/v1/strategies"),
            (Method::POST, "/v1/strategies/ab/activate"),
            (Method::POST, "/v1/routing/rollback"),
            (Method::POST, "/v1/raft/learners"),
            (Method::POST, "/v1/raft/members/2/promote"),
            (Method::DELETE, "/v1/raft/members/2"),
            (Method::POST, "/raft/append"),
            (Method::POST, "/raft/vote"),
            (Method::POST, "/raft/snapshot"),
        ] {
            assert!(needs_admin(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/nodes"),
            (Method::GET, "/v1/watch"),
            (Method::GET, "/v1/raft/status"),
            (Method::POST, "/v1/preview"),
            (Method::POST, "/v1/lookup"),
            (Method::POST, "/v1/proxies/report"),
            (Method::GET, "/v1/proxies"),
            (Method::GET, "/ui"),
            (Method::GET, "/metrics"),
            (Method::GET, "/openapi.json"),
        ] {
            assert!(!needs_admin(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn check_tells_missing_from_wrong() {
        let token = AdminToken::new("adm1n");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(token.check(&with(&token.header_value())).is_ok());
        assert!(matches!(token.check(&HeaderMap::new()), Err(ApiError::Unauthorized)));
        assert!(matches!(token.check(&with("Basic adm1n")), Err(ApiError::Unauthorized)));
        assert!(matches!(token.check(&with("Bearer adm1")), Err(ApiError::Forbidden)));
        assert!(!format!("{token:?}").contains("adm1n"));
    }
}
