//! Errors: [`RequestError`] is what a client request through the proxy can
//! fail with (each maps to one HTTP status and a JSON body
//! `{"error": "..."}`, exactly like a node's; the node's own
//! [`ApiError`] is reused for bad input so that messages are identical);
//! [`ProxyError`] is what stops the role itself.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use shardgate_api::ApiError;

use crate::config::ConfigError;
use crate::routing::RouteError;
use crate::upstream::UpstreamError;

/// A request the proxy will not or cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Bad input: the same status and message a node would give.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("every owner of this key is ejected ({owners}); proxy.owner_down = \"fail_fast\"")]
    OwnersDown { owners: String },
    #[error("every owner of this key is ejected ({owners}) and no healthy node is left to take it")]
    NoHealthyNode { owners: String },
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error(
        "write acknowledged by {acked} of {owners} owners; proxy.write_ack = \"{policy}\" needs {needed} (the write may be stored on the owners that acknowledged it){detail}"
    )]
    WriteNotAcknowledged { acked: usize, owners: usize, needed: usize, policy: crate::config::WriteAck, detail: String },
    #[error("node {node} sent an unreadable batch answer: {reason}")]
    BadUpstreamBatch { node: String, reason: String },
    /// `proxy.data_token` is set and the request has no bearer token: 401.
    #[error("missing bearer token: this proxy requires `Authorization: Bearer <token>` with the token configured as proxy.data_token")]
    Unauthorized,
    /// A bearer token other than `proxy.data_token`: 403.
    #[error("bearer token does not match proxy.data_token")]
    Forbidden,
    /// The client's IP is over `proxy.rate_limit`: 429 with `Retry-After`.
    #[error(
        "too many requests from {client}: proxy.rate_limit allows {requests_per_second} requests per second with a burst of {burst}; retry in {}ms",
        retry_after.as_millis()
    )]
    RateLimited { client: std::net::IpAddr, requests_per_second: u32, burst: u32, retry_after: std::time::Duration },
    /// Writes are refused while the routing may be stale (`proxy.max_staleness`).
    #[error(
        "write refused: this proxy has not heard from a meta member with a leader for {}ms, more than proxy.max_staleness ({}ms); its routing (epoch {epoch}) may be stale. Reads are still served",
        staleness.as_millis(),
        limit.as_millis()
    )]
    Stale { staleness: std::time::Duration, limit: std::time::Duration, epoch: u64 },
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Api(e) => e.status(),
            RequestError::Route(RouteError::NoStrategy | RouteError::NoNodes { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Route(RouteError::Fault { .. }) => StatusCode::BAD_GATEWAY,
            RequestError::Route(RouteError::Strategy { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::OwnersDown { .. } | RequestError::NoHealthyNode { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Upstream(_) => StatusCode::BAD_GATEWAY,
            RequestError::WriteNotAcknowledged { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::BadUpstreamBatch { .. } => StatusCode::BAD_GATEWAY,
            RequestError::Unauthorized => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden => StatusCode::FORBIDDEN,
            RequestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::Stale { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        if let RequestError::Api(e) = self {
            return e.into_response();
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let RequestError::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up: never tell a client to retry at once.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let RequestError::Unauthorized = self {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"shardgate-proxy\""));
        }
        response
    }
}

/// Why the proxy role stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy config: {0}")]
    Config(#[from] ConfigError),
    #[error("listener address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("strategy sandbox: {0}")]
    Sandbox(String),
    #[error(transparent)]
    TokenFile(#[from] crate::config::TokenFileError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
