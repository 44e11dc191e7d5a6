//! [`ApiError`]: what a key-API request can fail with. Each maps to one HTTP
//! status and a JSON body `{"error": "..."}` naming the violated limit or
//! parameter; node and proxy answer with it alike.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::batch::BatchError;

/// Characters of client input (a query parameter's name, a header value)
/// an error message repeats.
pub const MAX_ECHO_CHARS: usize = 64;

/// `input` as an error message repeats it: its first [`MAX_ECHO_CHARS`]
/// characters, then "…" when it was longer.
pub fn echo(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_string(),
    }
}

/// A request of the key API that a node or a proxy will not or cannot
/// serve. Messages name the violated limit by its config key, with the
/// role that enforces it (`node.max_key_size`, `proxy.max_key_size`).
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
    /// A `%` in the key's segment not followed by two hex digits: 400.
    #[error(
        "key has invalid percent-encoding {escape:?} at byte {at} of its path segment: '%' must start an escape of two hex digits (encode '%' itself as %25)"
    )]
    InvalidPercentEncoding { at: usize, escape: String },
    /// In the URL of a single-key request: 414.
    #[error("key is {size} bytes; the limit {limit_name} is {limit} bytes")]
    KeyTooLong { size: usize, limit: usize, limit_name: String },
    #[error("value is {size} bytes; the limit {limit_name} is {limit} bytes")]
    ValueTooLarge { size: u64, limit: usize, limit_name: String },
    /// A body without (or with a lying) `Content-Length` grew past a limit.
    #[error("request body is larger than {limit_name} ({limit} bytes)")]
    BodyTooLarge { limit_name: String, limit: usize },
    #[error("query parameter ttl: {reason}")]
    InvalidTtl { reason: String },
    /// A known query parameter with a value it does not take, or a
    /// combination that does not go together: 400.
    #[error("query parameter {name}: {reason}")]
    InvalidQuery { name: &'static str, reason: String },
    /// `PATCH ?incr=` on a value that is not a decimal 64-bit integer: 409.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// `PATCH ?incr=` whose result does not fit 64 bits: 409.
    #[error("increment or decrement would overflow")]
    IncrementOverflow,
    #[error("unknown query parameter {:?}; this endpoint accepts {accepted}", echo(name))]
    UnknownQueryParameter { name: String, accepted: &'static str },
    #[error("header {name}: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    /// The body did not arrive within `<role>.body_read_timeout`: 408.
    #[error("request body not received within {limit_name} ({after})")]
    BodyTimeout { limit_name: String, after: String },
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// A `Transfer-Encoding` other than `chunked`: 501 (RFC 9112 6.1).
    #[error("Transfer-Encoding {coding:?} is not implemented; the only transfer coding supported is chunked")]
    UnsupportedTransferCoding { coding: String },
    /// A method the endpoint does not serve: 405 with `Allow`.
    #[error("method {method} not allowed; this endpoint accepts {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// `<role>.data_token` is set and the request has no bearer token: 401.
    #[error(
        "missing bearer token: this {role} requires `Authorization: Bearer <token>` \
         with the token configured as {role}.data_token"
    )]
    Unauthorized { role: &'static str },
    /// A bearer token other than `<role>.data_token`: 403.
    #[error("bearer token does not match {role}.data_token")]
    Forbidden { role: &'static str },
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
            | ApiError::InvalidPercentEncoding { .. }
            | ApiError::InvalidTtl { .. }
            | ApiError::UnknownQueryParameter { .. }
            | ApiError::InvalidHeader { .. }
            | ApiError::InvalidQuery { .. }
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAnInteger | ApiError::IncrementOverflow => StatusCode::CONFLICT,
            ApiError::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::ValueTooLarge { .. } | ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::UnsupportedTransferCoding { .. } => StatusCode::NOT_IMPLEMENTED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Batch(e) => e.status(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ApiError::MethodNotAllowed { allow, .. } = &self {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let ApiError::Unauthorized { role } = self {
            let challenge = format!("Bearer realm=\"shardgate-{role}\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}
