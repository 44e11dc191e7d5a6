//! TTL of a write: `?ttl=SECONDS` on `PUT /v1/keys/{key}` (a decimal
//! integer from 1 to `node.max_ttl`); without it the write gets
//! `node.default_ttl`. The query string accepts nothing else, so a typo
//! (`?tll=5`) is a 400 rather than a silently default TTL.

use std::time::Duration;

use crate::error::ApiError;
use crate::limits::Limits;

/// Parses the query string of a write (`None` when the URL has none).
pub fn ttl_from_query(query: Option<&str>, limits: &Limits) -> Result<Duration, ApiError> {
    let mut ttl = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "ttl" {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().into_owned();
            return Err(ApiError::UnknownQueryParameter { name, accepted: "ttl" });
        }
        if ttl.is_some() {
            return Err(ApiError::InvalidTtl { reason: "given more than once".into() });
        }
        ttl = Some(parse_ttl_seconds(value, limits)?);
    }
    Ok(ttl.unwrap_or(limits.default_ttl))
}

/// Parses a TTL in whole seconds, checked against `node.max_ttl`.
pub fn parse_ttl_seconds(value: &str, limits: &Limits) -> Result<Duration, ApiError> {
    let shown: String = value.chars().take(32).collect();
    let secs: u64 = value.parse().map_err(|_| ApiError::InvalidTtl { reason: format!("{shown:?} is not a whole number of seconds") })?;
    check_ttl_seconds(secs, limits)?;
    Ok(Duration::from_secs(secs))
}

/// Checks a TTL in seconds against `1..=node.max_ttl`.
pub fn check_ttl_seconds(secs: u64, limits: &Limits) -> Result<(), ApiError> {
    let max = limits.max_ttl.as_secs();
    if secs == 0 || secs > max {
        return Err(ApiError::InvalidTtl {
            reason: format!("{secs} is outside 1..={max} seconds (the limit {} is {max}s)", limits.name("max_ttl")),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let l = Limits { max_ttl: Duration::from_secs(100), default_ttl: Duration::from_secs(7), ..Limits::default() };
        assert_eq!(ttl_from_query(None, &l).unwrap(), Duration::from_secs(7));
        assert_eq!(ttl_from_query(Some(""), &l).unwrap(), Duration::from_secs(7));
        assert_eq!(ttl_from_query(Some("ttl=100"), &l).unwrap(), Duration::from_secs(100));
        for bad in ["ttl=0", "ttl=101", "ttl=-1", "ttl=1.5", "ttl=", "ttl=1&ttl=2", "tll=5"] {
            let err = ttl_from_query(Some(bad), &l).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let msg = ttl_from_query(Some("ttl=101"), &l).unwrap_err().to_string();
        assert!(msg.contains("ttl") && msg.contains("node.max_ttl"), "{msg}");
        // A long unknown parameter name is repeated as its first 64 characters.
        let msg = ttl_from_query(Some(&format!("{}=1", "n".repeat(100_000))), &l).unwrap_err().to_string();
        assert_eq!(msg, format!("unknown query parameter \"{}…\"; this endpoint accepts ttl", "n".repeat(64)));
    }
}
