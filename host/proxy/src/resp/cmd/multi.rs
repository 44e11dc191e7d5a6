//! Multi-key commands: `MGET`, `MSET`, `MSETNX`, fanned out as one batch
//! per owner node, in parallel, through the batch path of the HTTP front
//! ([`crate::batches::get_many`] and [`crate::batches::put_many`]: the
//! same retries, migration window and write-ack policy).
//!
//! Atomicity: `MSET` writes each key under the write-ack policy; keys on
//! different nodes are not written atomically together (a reader can see
//! some of the new values before others; a failure can leave some keys
//! written, and the error says which entry fell short). `MSETNX` first
//! reads every key and writes nothing when one exists; then writes each
//! key only if it is still absent (`If-None-Match: *` on its first owner).
//! When another client creates one of the keys in between, the others are
//! still written and the answer is 0.

use bytes::Bytes;
use shardgate_api::batch::{GetResult, PutItem, PutResult};
use shardgate_api::etag::WriteCondition;

use super::{Ctx, request_error, wrong_arity};
use crate::batches::{get_many, put_many};
use crate::resp::frame::Reply;

/// Keys in one multi-key command: `proxy.max_batch_keys`.
fn too_many(ctx: &Ctx<'_>, n: usize) -> Option<Reply> {
    let limit = ctx.shared.limits.max_batch_keys;
    (n > limit).then(|| Reply::err(format!("{n} keys in one command; the limit {} is {limit}", ctx.shared.limits.name("max_batch_keys"))))
}

/// `MGET key...`.
pub async fn mget(ctx: &Ctx<'_>, keys: &[Bytes]) -> Reply {
    if let Some(reply) = too_many(ctx, keys.len()) {
        return reply;
    }
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
    let results = match get_many(ctx.shared, ctx.epoch, &refs).await {
        Ok(results) => results,
        Err(e) => return request_error(e),
    };
    let mut out = Vec::with_capacity(results.len());
    for (key, r) in keys.iter().zip(results) {
        out.push(match r {
            GetResult::Hit { value, .. } => Reply::Bulk(value),
            GetResult::Miss => Reply::Null,
            // Left out of a node's batch answer for its size: read alone.
            GetResult::Omitted => super::strings::read_value(ctx, key).await,
        });
    }
    Reply::Array(out)
}

/// `MSET key value...` (`nx`: `MSETNX`).
pub async fn mset(ctx: &Ctx<'_>, pairs: &[Bytes], nx: bool) -> Reply {
    if !pairs.len().is_multiple_of(2) {
        return wrong_arity(if nx { "msetnx" } else { "mset" });
    }
    if let Some(reply) = too_many(ctx, pairs.len() / 2) {
        return reply;
    }
    if nx {
        let refs: Vec<&[u8]> = pairs.iter().step_by(2).map(|k| k.as_ref()).collect();
        match get_many(ctx.shared, ctx.epoch, &refs).await {
            Ok(found) if found.iter().any(|r| *r != GetResult::Miss) => return Reply::Int(0),
            Ok(_) => {}
            Err(e) => return request_error(e),
        }
    }
    let condition = if nx { WriteCondition::IfAbsent } else { WriteCondition::Always };
    let items: Vec<PutItem> = pairs
        .chunks_exact(2)
        .map(|kv| PutItem {
            key: kv[0].clone(),
            condition: condition.clone(),
            ttl_seconds: None,
            content_type: Bytes::new(),
            value: kv[1].clone(),
        })
        .collect();
    match put_many(ctx.shared, ctx.epoch, &items).await {
        Ok(results) if nx => Reply::Int(i64::from(results.iter().all(|r| matches!(r, PutResult::Created { .. })))),
        Ok(_) => Reply::Ok,
        Err(e) => request_error(e),
    }
}
