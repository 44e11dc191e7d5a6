//! String commands: `GET`, `SET` (`EX`, `PX`, `EXAT`, `PXAT`, `NX`, `XX`,
//! `GET`, `KEEPTTL`), `SETEX`, `PSETEX`, `SETNX`, `GETDEL`, `GETEX`, and
//! `INCR`/`INCRBY`/`DECR`/`DECRBY`.
//!
//! Where it sits in the request flow: called by [`super::run_data`] with
//! the command's epoch; reads go through [`crate::keys::read_key`] (owner,
//! replicas, migration window), writes through [`crate::keys::write_key`]
//! and [`crate::keys::remove_key`] (write-ack policy, condition decided by
//! the first owner), TTL changes and increments through
//! [`crate::keys::update_key`] (an increment is atomic on the key's first
//! owner).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use shardgate_api::etag::ReadCondition;
use shardgate_api::ttl::PatchQuery;

use super::{Ctx, ExpiryUnit, expiry, integer, node_error, request_error, syntax_error};
use crate::keys::{read_key, remove_key, update_key, write_key};
use crate::resp::frame::Reply;

/// `GET key`.
pub async fn get(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    read_value(ctx, &args[1]).await
}

/// The value under `key` as a bulk string, or nil.
pub async fn read_value(ctx: &Ctx<'_>, key: &[u8]) -> Reply {
    match read_key(ctx.shared, ctx.epoch, key, Method::GET, &ReadCondition::Always, &[]).await {
        Ok(r) if r.status == StatusCode::OK => Reply::Bulk(r.body),
        Ok(r) if r.status == StatusCode::NOT_FOUND => Reply::Null,
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}

/// The options of one `SET`.
#[derive(Default)]
struct SetOptions {
    /// `Some(None)`: an absolute time already past.
    ttl: Option<Option<std::time::Duration>>,
    keep_ttl: bool,
    nx: bool,
    xx: bool,
    get: bool,
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`.
pub async fn set(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut o = SetOptions::default();
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let unit = match &opt[..] {
            b"EX" => Some(ExpiryUnit::Seconds),
            b"PX" => Some(ExpiryUnit::Millis),
            b"EXAT" => Some(ExpiryUnit::UnixSeconds),
            b"PXAT" => Some(ExpiryUnit::UnixMillis),
            _ => None,
        };
        match (&opt[..], unit) {
            (_, Some(unit)) => {
                if o.ttl.is_some() || o.keep_ttl || i + 1 >= args.len() {
                    return syntax_error();
                }
                match expiry(ctx.shared, unit, &args[i + 1], "set") {
                    Ok(ttl) => o.ttl = Some(ttl),
                    Err(reply) => return reply,
                }
                i += 1;
            }
            (b"KEEPTTL", _) if o.ttl.is_none() => o.keep_ttl = true,
            (b"NX", _) if !o.xx => o.nx = true,
            (b"XX", _) if !o.nx => o.xx = true,
            (b"GET", _) => o.get = true,
            _ => return syntax_error(),
        }
        i += 1;
    }
    store(ctx, &args[1], args[2].clone(), o).await
}

/// Writes one `SET` and answers as Redis does.
async fn store(ctx: &Ctx<'_>, key: &[u8], value: Bytes, o: SetOptions) -> Reply {
    let mut query = Vec::new();
    match o.ttl {
        // Already past: the key would expire at once; it lives 1 ms.
        Some(ttl) => query.push(format!("ttl_ms={}", ttl.map_or(1, |t| t.as_millis().max(1)))),
        None if o.keep_ttl => query.push("keep_ttl=true".to_string()),
        None => {}
    }
    if o.get {
        query.push("get=true".to_string());
    }
    let query = query.join("&");
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if o.nx {
        headers.push((header::IF_NONE_MATCH, HeaderValue::from_static("*")));
    }
    if o.xx {
        headers.push((header::IF_MATCH, HeaderValue::from_static("*")));
    }
    let conditional = o.nx || o.xx;
    let r = match write_key(ctx.shared, ctx.epoch, key, Some(&query), headers, conditional, value).await {
        Ok(r) => r,
        Err(e) => return request_error(e),
    };
    match r.status {
        StatusCode::OK if o.get => Reply::Bulk(r.body),
        StatusCode::CREATED if o.get => Reply::Null,
        StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Reply::Ok,
        // NX on an existing key with GET: the value that stayed.
        StatusCode::PRECONDITION_FAILED if o.get && o.nx => read_value(ctx, key).await,
        StatusCode::PRECONDITION_FAILED => Reply::Null,
        _ => node_error(&r),
    }
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`.
pub async fn setex(ctx: &Ctx<'_>, args: &[Bytes], unit: ExpiryUnit) -> Reply {
    let name = if unit == ExpiryUnit::Seconds { "setex" } else { "psetex" };
    let ttl = match expiry(ctx.shared, unit, &args[2], name) {
        Ok(Some(ttl)) => ttl,
        Ok(None) => return Reply::err(format!("invalid expire time in '{name}' command")),
        Err(reply) => return reply,
    };
    store(ctx, &args[1], args[3].clone(), SetOptions { ttl: Some(Some(ttl)), ..SetOptions::default() }).await
}

/// `SETNX key value`: 1 when set, 0 when the key existed.
pub async fn setnx(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match store(ctx, &args[1], args[2].clone(), SetOptions { nx: true, ..SetOptions::default() }).await {
        Reply::Ok => Reply::Int(1),
        Reply::Null => Reply::Int(0),
        other => other,
    }
}

/// `GETDEL key`.
pub async fn getdel(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match remove_key(ctx.shared, ctx.epoch, &args[1], true, Vec::new(), false).await {
        Ok(r) if r.status == StatusCode::OK => Reply::Bulk(r.body),
        Ok(r) if r.status == StatusCode::NOT_FOUND || r.status == StatusCode::NO_CONTENT => Reply::Null,
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}

/// `GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]`.
pub async fn getex(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let ttl = match &args[2..] {
        [] => return read_value(ctx, &args[1]).await,
        [opt] if opt.eq_ignore_ascii_case(b"PERSIST") => Some(ctx.shared.limits.max_ttl),
        [opt, value] => {
            let unit = match &opt.to_ascii_uppercase()[..] {
                b"EX" => ExpiryUnit::Seconds,
                b"PX" => ExpiryUnit::Millis,
                b"EXAT" => ExpiryUnit::UnixSeconds,
                b"PXAT" => ExpiryUnit::UnixMillis,
                _ => return syntax_error(),
            };
            match expiry(ctx.shared, unit, value, "getex") {
                Ok(ttl) => ttl,
                Err(reply) => return reply,
            }
        }
        _ => return syntax_error(),
    };
    let Some(ttl) = ttl else {
        // An absolute time already past: the key goes, its value is the answer.
        return getdel(ctx, args).await;
    };
    match update_key(ctx.shared, ctx.epoch, &args[1], PatchQuery::Expire { ttl, get: true }).await {
        Ok(r) if r.status == StatusCode::OK => Reply::Bulk(r.body),
        Ok(r) if r.status == StatusCode::NOT_FOUND => Reply::Null,
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: `by` is the parsed increment.
pub async fn incr_by(ctx: &Ctx<'_>, key: &[u8], by: Result<i64, Reply>) -> Reply {
    let by = match by {
        Ok(by) => by,
        Err(reply) => return reply,
    };
    match update_key(ctx.shared, ctx.epoch, key, PatchQuery::Incr(by)).await {
        Ok(r) if r.status == StatusCode::OK => match integer(&r.body) {
            Ok(n) => Reply::Int(n),
            Err(_) => Reply::err("the node answered an increment with a value that is not an integer"),
        },
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}
