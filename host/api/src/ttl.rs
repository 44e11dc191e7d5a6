//! TTL of a write: `?ttl=SECONDS` on `PUT /v1/keys/{key}` (a decimal
//! integer from 1 to `node.max_ttl`); without it the write gets
//! `node.default_ttl`. The query string accepts nothing else, so a typo
//! (`?tll=5`) is a 400 rather than a silently default TTL.
//!
//! The options of the Redis-style single-key operations are query
//! parameters too, parsed here so node and proxy refuse the same ones:
//! [`write_query`] (`PUT`: `ttl`, `ttl_ms`, `keep_ttl=true`, `get=true`),
//! [`delete_query`] (`DELETE`: `get=true`) and [`patch_query`] (`PATCH`:
//! a new TTL with `ttl`, `ttl_ms` or `persist=true`, optionally
//! `get=true`; or `incr=N`).

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

/// Header of a node's answers carrying a value (`GET`, `HEAD`, `PATCH`):
/// the milliseconds it has left to live (`TTL`, `PTTL`).
pub const TTL_MS_HEADER: &str = "shardgate-ttl-ms";

/// How long a single-key write lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteTtl {
    /// This long.
    After(Duration),
    /// What the replaced value had left (`keep_ttl=true`); the default TTL
    /// when there is none.
    Keep,
}

/// The query of `PUT /v1/keys/{key}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteQuery {
    pub ttl: WriteTtl,
    /// `get=true`: answer the value the write replaced (`SET ... GET`).
    pub get: bool,
}

/// The query of `PATCH /v1/keys/{key}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchQuery {
    /// A new TTL for the stored value (`ttl`, `ttl_ms`, or `persist=true`:
    /// `<role>.max_ttl`); `get`: answer the value too (`GETEX`).
    Expire { ttl: Duration, get: bool },
    /// `incr=N`: add N to the stored decimal integer (absent: 0).
    Incr(i64),
}

/// The query parameters of `query` as (name, value) pairs, each name
/// given at most once and listed in `accepted`.
fn pairs<'a>(query: Option<&'a str>, accepted: &'static str) -> Result<Vec<(&'a str, &'a str)>, ApiError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !accepted.split(", ").any(|a| a == name) {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().into_owned();
            return Err(ApiError::UnknownQueryParameter { name, accepted });
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(match name {
                "ttl" => ApiError::InvalidTtl { reason: "given more than once".into() },
                _ => ApiError::InvalidQuery { name: static_name(name), reason: "given more than once".into() },
            });
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The accepted parameter names, as `&'static str` for error messages.
fn static_name(name: &str) -> &'static str {
    ["ttl", "ttl_ms", "keep_ttl", "get", "persist", "incr"].into_iter().find(|n| *n == name).unwrap_or("?")
}

/// A flag parameter: only `true` is accepted.
fn flag(name: &'static str, value: &str) -> Result<bool, ApiError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(ApiError::InvalidQuery {
            name,
            reason: format!("{:?} is not `true` (leave the parameter out for false)", crate::error::echo(value)),
        })
    }
}

/// Parses a TTL in milliseconds, checked against `<role>.max_ttl`.
pub fn parse_ttl_millis(value: &str, limits: &Limits) -> Result<Duration, ApiError> {
    let shown = crate::error::echo(value);
    let ms: u64 = value
        .parse()
        .map_err(|_| ApiError::InvalidQuery { name: "ttl_ms", reason: format!("{shown:?} is not a whole number of milliseconds") })?;
    let max = limits.max_ttl.as_millis() as u64;
    if ms == 0 || ms > max {
        return Err(ApiError::InvalidQuery {
            name: "ttl_ms",
            reason: format!(
                "{ms} is outside 1..={max} milliseconds (the limit {} is {}s)",
                limits.name("max_ttl"),
                limits.max_ttl.as_secs()
            ),
        });
    }
    Ok(Duration::from_millis(ms))
}

/// One TTL from `ttl` or `ttl_ms` (at most one of them).
fn one_ttl(pairs: &[(&str, &str)], limits: &Limits) -> Result<Option<Duration>, ApiError> {
    let mut ttl = None;
    for (name, value) in pairs {
        let parsed = match *name {
            "ttl" => parse_ttl_seconds(value, limits)?,
            "ttl_ms" => parse_ttl_millis(value, limits)?,
            _ => continue,
        };
        if ttl.is_some() {
            return Err(ApiError::InvalidQuery { name: "ttl_ms", reason: "give ttl or ttl_ms, not both".into() });
        }
        ttl = Some(parsed);
    }
    Ok(ttl)
}

/// Parses the query of `PUT /v1/keys/{key}`: `ttl` or `ttl_ms` (else
/// `<role>.default_ttl`), or `keep_ttl=true`; `get=true`.
pub fn write_query(query: Option<&str>, limits: &Limits) -> Result<WriteQuery, ApiError> {
    let pairs = pairs(query, "ttl, ttl_ms, keep_ttl, get")?;
    let ttl = one_ttl(&pairs, limits)?;
    let mut out = WriteQuery { ttl: WriteTtl::After(ttl.unwrap_or(limits.default_ttl)), get: false };
    for (name, value) in &pairs {
        match *name {
            "keep_ttl" => {
                flag("keep_ttl", value)?;
                if ttl.is_some() {
                    return Err(ApiError::InvalidQuery { name: "keep_ttl", reason: "cannot be combined with ttl or ttl_ms".into() });
                }
                out.ttl = WriteTtl::Keep;
            }
            "get" => out.get = flag("get", value)?,
            _ => {}
        }
    }
    Ok(out)
}

/// Parses the query of `DELETE /v1/keys/{key}`: `get=true` answers the
/// deleted value (`GETDEL`).
pub fn delete_query(query: Option<&str>) -> Result<bool, ApiError> {
    let pairs = pairs(query, "get")?;
    match pairs.first() {
        Some((_, value)) => flag("get", value),
        None => Ok(false),
    }
}

/// Parses the query of `PATCH /v1/keys/{key}`.
pub fn patch_query(query: Option<&str>, limits: &Limits) -> Result<PatchQuery, ApiError> {
    let pairs = pairs(query, "ttl, ttl_ms, persist, get, incr")?;
    if let Some((_, value)) = pairs.iter().find(|(n, _)| *n == "incr") {
        if pairs.len() > 1 {
            return Err(ApiError::InvalidQuery { name: "incr", reason: "cannot be combined with other parameters".into() });
        }
        let by = value.parse::<i64>().map_err(|_| ApiError::InvalidQuery {
            name: "incr",
            reason: format!("{:?} is not a signed 64-bit integer", crate::error::echo(value)),
        })?;
        return Ok(PatchQuery::Incr(by));
    }
    let mut ttl = one_ttl(&pairs, limits)?;
    let mut get = false;
    for (name, value) in &pairs {
        match *name {
            "persist" => {
                flag("persist", value)?;
                if ttl.is_some() {
                    return Err(ApiError::InvalidQuery { name: "persist", reason: "cannot be combined with ttl or ttl_ms".into() });
                }
                ttl = Some(limits.max_ttl);
            }
            "get" => get = flag("get", value)?,
            _ => {}
        }
    }
    let ttl = ttl.ok_or(ApiError::InvalidQuery { name: "ttl", reason: "PATCH needs ttl, ttl_ms, persist=true or incr".into() })?;
    Ok(PatchQuery::Expire { ttl, get })
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
