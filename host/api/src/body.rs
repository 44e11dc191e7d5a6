//! Request bodies of the key API: the `Content-Length` check and the bounded,
//! timed read that node and proxy both apply before a body reaches a handler,
//! so both refuse alike (naming their own `<role>.max_*` and
//! `<role>.body_read_timeout`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};

use crate::error::ApiError;
use crate::limits::Limits;

/// The request's `Content-Length`, if any.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    // hyper has already rejected malformed or conflicting Content-Length.
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::InvalidHeader { name: "Content-Length", reason: "is not a number".into() })
        })
        .transpose()
}

/// Reads a whole body of at most `limit` bytes (the limit `field` of
/// `limits`, named in the error) within `timeout` (named as
/// `<role>.body_read_timeout`).
pub async fn read_body<B>(body: B, limit: usize, limits: &Limits, field: &'static str, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ApiError::BodyTimeout {
            limit_name: limits.name("body_read_timeout"),
            after: humantime::format_duration(timeout).to_string(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => {
            if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::BodyTooLarge { limit_name: limits.name(field), limit })
            } else {
                Err(ApiError::BodyRead(error.to_string()))
            }
        }
    }
}
