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

/// Refuses a request whose `Transfer-Encoding` names a coding other than
/// `chunked` (e.g. `gzip, chunked`): hyper removes the chunked framing but
/// nothing here would undo the other codings, so the body would be stored
/// still encoded. Node and proxy check every request with it (RFC 9112
/// 6.1: 501 for a transfer coding the server does not understand).
pub fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text =
            value.to_str().map_err(|_| ApiError::InvalidHeader { name: "Transfer-Encoding", reason: "is not visible ASCII".into() })?;
        for coding in text.split(',') {
            // A coding may carry parameters (`name;param=value`).
            let name = coding.split(';').next().unwrap_or_default().trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("chunked") {
                return Err(ApiError::UnsupportedTransferCoding { coding: name.chars().take(64).collect() });
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_chunked_transfer_coding_is_accepted() {
        let mut h = HeaderMap::new();
        assert!(check_transfer_encoding(&h).is_ok());
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("Chunked"));
        assert!(check_transfer_encoding(&h).is_ok());
        for (value, named) in [("gzip, chunked", "gzip"), ("chunked, x-custom;a=1", "x-custom"), ("identity", "identity")] {
            h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static(value));
            let e = check_transfer_encoding(&h).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::NOT_IMPLEMENTED, "{value}");
            assert!(e.to_string().contains(&format!("{named:?}")) && e.to_string().contains("chunked"), "{value}: {e}");
        }
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("deflate"));
        assert!(matches!(check_transfer_encoding(&h), Err(ApiError::UnsupportedTransferCoding { coding }) if coding == "deflate"));
    }
}
