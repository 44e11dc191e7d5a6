//! Keyspace commands: `DEL`/`UNLINK` and `EXISTS` of many keys, `EXPIRE`,
//! `PEXPIRE`, `TTL`, `PTTL`, `PERSIST`.
//!
//! Where it sits in the request flow: called by [`super::run_data`]; each
//! key of a multi-key `DEL` or `EXISTS` is deleted or read on its own
//! owners, all keys in parallel (a node's reads share its pipelined
//! connections, so the reads to one node leave in one write); TTL changes
//! go to every owner through [`crate::keys::update_key`].

use bytes::Bytes;
use http::{Method, StatusCode};
use shardgate_api::etag::ReadCondition;
use shardgate_api::ttl::{PatchQuery, TTL_MS_HEADER};

use super::{Ctx, ExpiryUnit, expiry, node_error, request_error};
use crate::keys::{read_key, remove_key, update_key};
use crate::resp::frame::Reply;

/// `DEL key...` / `UNLINK key...`: how many keys were there.
pub async fn del(ctx: &Ctx<'_>, keys: &[Bytes]) -> Reply {
    let deletes = keys.iter().map(|k| remove_key(ctx.shared, ctx.epoch, k, false, Vec::new(), false));
    let mut n = 0;
    for r in futures::future::join_all(deletes).await {
        match r {
            Ok(r) if r.status.is_success() => n += 1,
            Ok(r) if r.status == StatusCode::NOT_FOUND => {}
            Ok(r) => return node_error(&r),
            Err(e) => return request_error(e),
        }
    }
    Reply::Int(n)
}

/// `EXISTS key...`: how many of the keys exist (a key named twice counts
/// twice).
pub async fn exists(ctx: &Ctx<'_>, keys: &[Bytes]) -> Reply {
    let reads = keys.iter().map(|k| read_key(ctx.shared, ctx.epoch, k, Method::HEAD, &ReadCondition::Always, &[]));
    let mut n = 0;
    for r in futures::future::join_all(reads).await {
        match r {
            Ok(r) if r.status == StatusCode::OK => n += 1,
            Ok(r) if r.status == StatusCode::NOT_FOUND => {}
            Ok(r) => return node_error(&r),
            Err(e) => return request_error(e),
        }
    }
    Reply::Int(n)
}

/// `EXPIRE key seconds` / `PEXPIRE key milliseconds`: 1 when the key
/// exists (a time of 0 or less deletes it), 0 when not.
pub async fn expire(ctx: &Ctx<'_>, args: &[Bytes], unit: ExpiryUnit) -> Reply {
    let name = if unit == ExpiryUnit::Seconds { "expire" } else { "pexpire" };
    if let Some(option) = args.get(3) {
        let known = [&b"NX"[..], b"XX", b"GT", b"LT"].iter().any(|o| option.eq_ignore_ascii_case(o));
        return if known && args.len() == 4 {
            Reply::err(format!("{} option is not supported by this proxy", String::from_utf8_lossy(option).to_uppercase()))
        } else {
            Reply::err(format!("Unsupported option {}", String::from_utf8_lossy(option)))
        };
    }
    let ttl = match super::integer(&args[2]) {
        Ok(n) if n <= 0 => None,
        Ok(_) => match expiry(ctx.shared, unit, &args[2], name) {
            Ok(ttl) => ttl,
            Err(reply) => return reply,
        },
        Err(reply) => return reply,
    };
    let Some(ttl) = ttl else {
        // Redis deletes a key given a time in the past.
        return match del(ctx, &args[1..2]).await {
            Reply::Int(n) => Reply::Int(n.min(1)),
            other => other,
        };
    };
    touch(ctx, &args[1], ttl).await
}

/// A new TTL for `key`: 1 when it exists, 0 when not.
async fn touch(ctx: &Ctx<'_>, key: &[u8], ttl: std::time::Duration) -> Reply {
    match update_key(ctx.shared, ctx.epoch, key, PatchQuery::Expire { ttl, get: false }).await {
        Ok(r) if r.status.is_success() => Reply::Int(1),
        Ok(r) if r.status == StatusCode::NOT_FOUND => Reply::Int(0),
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}

/// `TTL key` (seconds, rounded) / `PTTL key` (milliseconds): -2 when the
/// key does not exist; -1 when the answer carried no TTL (a value just
/// copied from a replica or an earlier owner).
pub async fn ttl(ctx: &Ctx<'_>, key: &[u8], millis: bool) -> Reply {
    match read_key(ctx.shared, ctx.epoch, key, Method::HEAD, &ReadCondition::Always, &[]).await {
        Ok(r) if r.status == StatusCode::OK => {
            let Some(ms) = r.headers.get(TTL_MS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok()) else {
                return Reply::Int(-1);
            };
            Reply::Int(if millis { ms } else { (ms + 500) / 1000 })
        }
        Ok(r) if r.status == StatusCode::NOT_FOUND => Reply::Int(-2),
        Ok(r) => node_error(&r),
        Err(e) => request_error(e),
    }
}

/// `PERSIST key`: every Shardgate key expires, so the key gets the longest
/// TTL allowed (`proxy.max_ttl`); 1 when the key exists, 0 when not.
pub async fn persist(ctx: &Ctx<'_>, key: &[u8]) -> Reply {
    touch(ctx, key, ctx.shared.limits.max_ttl).await
}
