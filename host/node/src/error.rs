//! Errors: [`ApiError`] is what a request can fail with (each maps to one
//! HTTP status and a JSON body `{"error": "..."}` that names the violated
//! limit or parameter); [`NodeError`] is what stops the role itself.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::batch::BatchError;
use crate::config::ConfigError;

/// A request the node will not or cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("key not found")]
    NotFound,
    #[error("no such endpoint")]
    NoRoute,
    #[error("key must not be empty")]
    EmptyKey,
    #[error("key must be one percent-encoded path segment (encode '/' as %2F)")]
    KeyNotOneSegment,
    /// In the URL of a single-key request: 414.
    #[error("key is {size} bytes; the limit {limit_name} is {limit} bytes")]
    KeyTooLong { size: usize, limit: usize, limit_name: String },
    #[error("value is {size} bytes; the limit {limit_name} is {limit} bytes")]
    ValueTooLarge { size: u64, limit: usize, limit_name: String },
    /// A body without (or with a lying) `Content-Length` grew past a limit.
    #[error("request body is larger than {limit_name} ({limit} bytes)")]
    BodyTooLarge {
        limit_name: String,
        limit: usize,
    },
    #[error("query parameter ttl: {reason}")]
    InvalidTtl { reason: String },
    #[error("unknown query parameter {name:?}; this endpoint accepts {accepted}")]
    UnknownQueryParameter {
        name: String,
        accepted: &'static str,
    },
    #[error("header {name}: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    #[error("request body not received within node.body_read_timeout ({0})")]
    BodyTimeout(String),
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// `node.data_token` is set and the request has no bearer token: 401.
    #[error(
        "missing bearer token: this node requires `Authorization: Bearer <token>` \
         with the token configured as node.data_token"
    )]
    Unauthorized,
    /// A bearer token other than `node.data_token`: 403.
    #[error("bearer token does not match node.data_token")]
    Forbidden,
    #[error(transparent)]
    Batch(#[from] BatchError),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::EmptyKey
            | ApiError::KeyNotOneSegment
            | ApiError::InvalidTtl { .. }
            | ApiError::UnknownQueryParameter { .. }
            | ApiError::InvalidHeader { .. }
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::ValueTooLarge { .. } | ApiError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Batch(e) => e.status(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shardgate-node\""),
            );
        }
        response
    }
}

/// Why the node role stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node config: {0}")]
    Config(#[from] ConfigError),
    /// `node.data_token_file` could not be read.
    #[error("node.data_token_file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listener address: {0}")]
    Listener(#[source] std::io::Error),
}
