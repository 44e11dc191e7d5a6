//! Multi-key work: batch get and batch put fanned out as one batch request
//! per node, in parallel, and reassembled in request order; and the
//! migration window's lookups on a key's previous owner.
//!
//! Where it sits: [`crate::server`] dispatches `POST /v1/batch/get` and
//! `POST /v1/batch/put` here after loading the routing epoch once; every
//! key of a batch is routed by that one epoch. The wire format is the
//! node's (`shardgate_api::batch`), never re-implemented here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use shardgate_api::ApiError;
use shardgate_api::batch::{self, BatchError, GetResponseEncoder, GetResult, PutItem, PutResult};
use shardgate_api::etag::{WriteCondition, parse_etag};
use shardgate_api::ttl::check_ttl_seconds;

use crate::error::RequestError;
use crate::health::NodeHandle;
use crate::routing::RoutingEpoch;
use crate::server::{Shared, owner_ids, pick_owners, read_from};
use shardgate_api::body::{content_length, read_body};

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

fn batch_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![(header::CONTENT_TYPE, HeaderValue::from_static(batch::CONTENT_TYPE))]
}

fn batch_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(batch::CONTENT_TYPE));
    response
}

async fn read_batch_body(shared: &Shared, req: Request<Incoming>) -> Result<Bytes, RequestError> {
    let (parts, body) = req.into_parts();
    let limit = shared.limits.max_batch_size;
    if let Some(size) = content_length(&parts.headers)?
        && size > limit as u64
    {
        let limit_name = shared.limits.name("max_batch_size");
        return Err(ApiError::from(BatchError::TooLarge { size: size.try_into().unwrap_or(usize::MAX), limit, limit_name }).into());
    }
    Ok(read_body(body, limit, &shared.limits, "max_batch_size", shared.config.body_read_timeout).await?)
}

/// Groups entry indexes by the node chosen for each.
fn group(indexes: &[usize], choose: impl Fn(usize) -> Arc<NodeHandle>) -> Vec<(Arc<NodeHandle>, Vec<usize>)> {
    let mut groups: Vec<(Arc<NodeHandle>, Vec<usize>)> = Vec::new();
    let mut by_id: HashMap<*const NodeHandle, usize> = HashMap::new();
    for &i in indexes {
        let node = choose(i);
        let slot = *by_id.entry(Arc::as_ptr(&node)).or_insert_with(|| {
            groups.push((node.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(i);
    }
    groups
}

/// One batch get to one node.
async fn get_batch_from(shared: &Shared, node: &NodeHandle, keys: &[&[u8]]) -> Result<Vec<GetResult>, RequestError> {
    let body = batch::encode_get_request(keys).map_err(ApiError::from)?;
    let r = shared.upstream.send(node, Method::POST, "/v1/batch/get", &batch_headers(), body).await?;
    if r.status != StatusCode::OK {
        return Err(RequestError::BadUpstreamBatch {
            node: node.id.clone(),
            reason: format!("HTTP {}: {}", r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()),
        });
    }
    let results = batch::decode_get_response(r.body, &shared.limits)
        .map_err(|e| RequestError::BadUpstreamBatch { node: node.id.clone(), reason: e.to_string() })?;
    if results.len() != keys.len() {
        return Err(RequestError::BadUpstreamBatch { node: node.id.clone(), reason: format!("{} results for {} keys", results.len(), keys.len()) });
    }
    Ok(results)
}

/// One batch put to one node.
async fn put_batch_to(shared: &Shared, node: &NodeHandle, items: &[PutItem]) -> Result<Vec<PutResult>, RequestError> {
    let body = batch::encode_put_request(items).map_err(ApiError::from)?;
    let r = shared.upstream.send(node, Method::POST, "/v1/batch/put", &batch_headers(), body).await?;
    if r.status != StatusCode::OK {
        return Err(RequestError::BadUpstreamBatch {
            node: node.id.clone(),
            reason: format!("HTTP {}: {}", r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()),
        });
    }
    let results = batch::decode_put_response(r.body, &shared.limits)
        .map_err(|e| RequestError::BadUpstreamBatch { node: node.id.clone(), reason: e.to_string() })?;
    if results.len() != items.len() {
        return Err(RequestError::BadUpstreamBatch { node: node.id.clone(), reason: format!("{} results for {} items", results.len(), items.len()) });
    }
    Ok(results)
}

/// `POST /v1/batch/get`: one batch per owner node in parallel; a node that
/// fails has its keys retried on their next owner.
pub(crate) async fn batch_get(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let body = read_batch_body(shared, req).await?;
    let keys = batch::decode_get_request(body, &shared.limits).map_err(ApiError::from)?;
    let n = keys.len();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
    let positions = if n == 0 { Vec::new() } else { shared.routing.route_batch(epoch, &refs)? };
    let width = epoch.width();
    let mut candidates: Vec<Vec<Arc<NodeHandle>>> = Vec::with_capacity(n);
    for (i, key) in refs.iter().enumerate() {
        candidates.push(pick_owners(shared, epoch, key, &positions[i * width..(i + 1) * width])?);
    }
    let mut results: Vec<GetResult> = vec![GetResult::Miss; n];
    let mut attempt = vec![0usize; n];
    let max_attempts = 1 + shared.config.read_retries as usize;
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let groups = group(&pending, |i| candidates[i][attempt[i]].clone());
        let calls = groups.iter().map(|(node, idx)| {
            let ks: Vec<&[u8]> = idx.iter().map(|&i| refs[i]).collect();
            async move { get_batch_from(shared, node, &ks).await }
        });
        let answers = futures::future::join_all(calls).await;
        pending.clear();
        for ((_, idx), answer) in groups.iter().zip(answers) {
            match answer {
                Ok(found) => {
                    for (&i, r) in idx.iter().zip(found) {
                        results[i] = r;
                    }
                }
                Err(e) => {
                    for &i in idx {
                        attempt[i] += 1;
                        if attempt[i] >= max_attempts.min(candidates[i].len()) {
                            return Err(e);
                        }
                        shared.metrics.read_retries.inc();
                        pending.push(i);
                    }
                }
            }
        }
    }
    let chain = epoch.migration_chain(shared.routing.migration_window());
    if !chain.is_empty() {
        let missed: Vec<usize> = (0..n).filter(|&i| results[i] == GetResult::Miss).collect();
        if !missed.is_empty() {
            migrate_batch(shared, epoch, &chain, &refs, &positions, &candidates, &missed, &mut results).await;
        }
    }
    let mut encoder = GetResponseEncoder::new(n, shared.limits.max_batch_size);
    for r in &results {
        match r {
            GetResult::Hit { version, content_type, value } => {
                encoder.push_hit(*version, content_type, value);
            }
            GetResult::Miss => encoder.push_miss(),
            GetResult::Omitted => encoder.push_omitted(),
        }
    }
    Ok(batch_response(encoder.finish()))
}

/// An earlier epoch's owners of `key` that are not among the nodes already
/// asked (`asked`: its new owners and the owners under newer earlier epochs)
/// and are routable; empty when the key's first owner was already asked.
fn previous_owners(shared: &Shared, previous: &RoutingEpoch, key: &[u8], asked: &[String]) -> Vec<Arc<NodeHandle>> {
    let mut pos = Vec::with_capacity(4);
    if shared.routing.route(previous, key, &mut pos).is_err() {
        return Vec::new();
    }
    let Some(first) = pos.first().and_then(|&p| previous.nodes.get(p as usize)) else { return Vec::new() };
    if asked.contains(&first.id) {
        return Vec::new();
    }
    pos.iter()
        .filter_map(|&p| previous.nodes.get(p as usize))
        .filter(|n| !asked.contains(&n.id) && n.is_routable())
        .cloned()
        .collect()
}

/// The migration window for one key that missed on its new owners: look
/// for it on its owners under the earlier epochs (`chain`, newest first)
/// and, on a hit, store it on the new owners (`If-None-Match: *`, so a
/// newer write is never overwritten).
pub(crate) async fn migrate_one(
    shared: &Shared,
    chain: &[&RoutingEpoch],
    key: &[u8],
    new_ids: &[&str],
    new_owners: &[Arc<NodeHandle>],
    path: &str,
) -> Migrated {
    let mut asked: Vec<String> = new_ids.iter().map(|s| s.to_string()).collect();
    let mut found = None;
    for previous in chain {
        let old = previous_owners(shared, previous, key, &asked);
        if old.is_empty() {
            continue;
        }
        shared.metrics.migration_lookups.inc();
        asked.extend(old.iter().map(|n| n.id.clone()));
        if let Ok(r) = read_from(shared, &old, Method::GET, path, &[], Bytes::new()).await
            && r.status == StatusCode::OK
        {
            found = Some(r);
            break;
        }
    }
    let Some(found) = found else { return Migrated::NotFound };
    shared.metrics.migration_hits.inc();
    let content_type = found.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(OCTET_STREAM);
    let old_version = found.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).and_then(|v| parse_etag(v).ok().flatten());
    let headers = vec![(header::CONTENT_TYPE, content_type.clone()), (header::IF_NONE_MATCH, HeaderValue::from_static("*"))];
    let copies = new_owners.iter().map(|n| shared.upstream.send(n, Method::PUT, path, &headers, found.body.clone()));
    let answers = futures::future::join_all(copies).await;
    let new_version = answers.first().and_then(|a| a.as_ref().ok()).map(|r| {
        if r.status == StatusCode::PRECONDITION_FAILED {
            return None; // a newer write got there first
        }
        r.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).and_then(|v| parse_etag(v).ok().flatten())
    });
    match (new_version, old_version) {
        (Some(None), _) => Migrated::Superseded,
        (Some(Some(v)), _) | (None, Some(v)) => Migrated::Found { version: v, content_type, value: found.body },
        (None, None) => Migrated::NotFound,
    }
}

/// What a migration lookup found.
pub(crate) enum Migrated {
    /// On an earlier owner; now copied to the new owners (`version` is the
    /// new primary's, or the earlier owner's when the copy failed).
    Found { version: u64, content_type: HeaderValue, value: Bytes },
    /// On an earlier owner, but the new primary got a value meanwhile (a
    /// client write or another reader's copy): read the new owners again.
    Superseded,
    NotFound,
}

/// Deletes `key` on its owners under the earlier epochs (`chain`) that are
/// not new owners; true when one of them held it.
pub(crate) async fn delete_previous(shared: &Shared, chain: &[&RoutingEpoch], key: &[u8], new_ids: &[&str], path: &str) -> bool {
    let mut asked: Vec<String> = new_ids.iter().map(|s| s.to_string()).collect();
    let mut old: Vec<Arc<NodeHandle>> = Vec::new();
    for previous in chain {
        // Every earlier owner, even when the first one did not change.
        let mut pos = Vec::with_capacity(4);
        if shared.routing.route(previous, key, &mut pos).is_err() {
            continue;
        }
        for n in pos.iter().filter_map(|&p| previous.nodes.get(p as usize)) {
            if !asked.contains(&n.id) && n.is_routable() {
                asked.push(n.id.clone());
                old.push(n.clone());
            }
        }
    }
    let deletes = old.iter().map(|n| shared.upstream.send(n, Method::DELETE, path, &[], Bytes::new()));
    futures::future::join_all(deletes).await.iter().any(|r| r.as_ref().is_ok_and(|r| r.status.is_success()))
}

/// The migration window for the misses of a batch: one batch get per
/// previous owner, and the hits copied to their new owners in one batch put
/// per node.
#[allow(clippy::too_many_arguments)]
async fn migrate_batch(
    shared: &Shared,
    epoch: &RoutingEpoch,
    chain: &[&RoutingEpoch],
    keys: &[&[u8]],
    positions: &[u32],
    candidates: &[Vec<Arc<NodeHandle>>],
    missed: &[usize],
    results: &mut [GetResult],
) {
    let width = epoch.width();
    let mut asked: HashMap<usize, Vec<String>> =
        missed.iter().map(|&i| (i, owner_ids(epoch, &positions[i * width..(i + 1) * width]).into_iter().map(String::from).collect())).collect();
    let mut hits: Vec<usize> = Vec::new();
    for previous in chain {
        let mut old: HashMap<usize, Arc<NodeHandle>> = HashMap::new();
        for &i in missed {
            if hits.contains(&i) {
                continue;
            }
            let owners = previous_owners(shared, previous, keys[i], &asked[&i]);
            if let Some(first) = owners.into_iter().next() {
                asked.get_mut(&i).expect("every missed key").push(first.id.clone());
                old.insert(i, first);
            }
        }
        if old.is_empty() {
            continue;
        }
        let lookup: Vec<usize> = missed.iter().copied().filter(|i| old.contains_key(i)).collect();
        shared.metrics.migration_lookups.inc_by(lookup.len() as u64);
        let groups = group(&lookup, |i| old[&i].clone());
        let calls = groups.iter().map(|(node, idx)| {
            let ks: Vec<&[u8]> = idx.iter().map(|&i| keys[i]).collect();
            async move { get_batch_from(shared, node, &ks).await }
        });
        let answers = futures::future::join_all(calls).await;
        for ((_, idx), answer) in groups.iter().zip(answers) {
            if let Ok(found) = answer {
                for (&i, r) in idx.iter().zip(found) {
                    if let GetResult::Hit { .. } = r {
                        results[i] = r;
                        hits.push(i);
                    }
                }
            }
        }
    }
    if hits.is_empty() {
        return;
    }
    shared.metrics.migration_hits.inc_by(hits.len() as u64);
    // Copy every hit to each of its new owners; the first owner's version is
    // the one the client sees.
    let mut per_node: Vec<(Arc<NodeHandle>, Vec<usize>)> = Vec::new();
    for &i in &hits {
        for node in &candidates[i] {
            match per_node.iter_mut().find(|(n, _)| Arc::ptr_eq(n, node)) {
                Some((_, v)) => v.push(i),
                None => per_node.push((node.clone(), vec![i])),
            }
        }
    }
    let calls = per_node.iter().map(|(node, idx)| {
        let items: Vec<PutItem> = idx
            .iter()
            .filter_map(|&i| match &results[i] {
                GetResult::Hit { content_type, value, .. } => Some(PutItem {
                    key: Bytes::copy_from_slice(keys[i]),
                    condition: WriteCondition::IfAbsent,
                    ttl_seconds: None,
                    content_type: content_type.clone(),
                    value: value.clone(),
                }),
                _ => None,
            })
            .collect();
        async move { put_batch_to(shared, node, &items).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut superseded = Vec::new();
    for ((node, idx), answer) in per_node.iter().zip(answers) {
        let Ok(put) = answer else { continue };
        for (&i, r) in idx.iter().zip(put) {
            if !Arc::ptr_eq(&candidates[i][0], node) {
                continue;
            }
            match (r, &mut results[i]) {
                (PutResult::Created { version: v } | PutResult::Replaced { version: v }, GetResult::Hit { version, .. }) => *version = v,
                // The new owner got a value meanwhile (a write, or another
                // reader's copy): that value is the answer.
                (PutResult::ConditionFailed, _) => superseded.push(i),
                _ => {}
            }
        }
    }
    if superseded.is_empty() {
        return;
    }
    let groups = group(&superseded, |i| candidates[i][0].clone());
    let calls = groups.iter().map(|(node, idx)| {
        let ks: Vec<&[u8]> = idx.iter().map(|&i| keys[i]).collect();
        async move { get_batch_from(shared, node, &ks).await }
    });
    for ((_, idx), answer) in groups.iter().zip(futures::future::join_all(calls).await) {
        if let Ok(found) = answer {
            for (&i, r) in idx.iter().zip(found) {
                results[i] = r;
            }
        }
    }
}

/// The (entry, owner index) pairs sent to one node.
type NodeSends = (Arc<NodeHandle>, Vec<(usize, usize)>);

/// One owner's answer for one batch entry (`None`: not sent).
type OwnerAnswer = Option<Result<PutResult, String>>;

/// `POST /v1/batch/put`: conditional entries are decided by their first
/// healthy owner, then every entry is written to its other owners, one
/// batch per node in parallel; each entry needs `proxy.write_ack`
/// acknowledgements.
pub(crate) async fn batch_put(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let body = read_batch_body(shared, req).await?;
    let items = batch::decode_put_request(body, &shared.limits).map_err(ApiError::from)?;
    for (index, item) in items.iter().enumerate() {
        if !item.content_type.is_empty() && HeaderValue::from_bytes(&item.content_type).is_err() {
            return Err(ApiError::InvalidHeader { name: "Content-Type", reason: format!("batch entry {index}: not a valid header value") }.into());
        }
        if let Some(secs) = item.ttl_seconds {
            check_ttl_seconds(secs.into(), &shared.limits)?;
        }
    }
    let n = items.len();
    if n == 0 {
        return Ok(batch_response(batch::encode_put_response(&[])));
    }
    let refs: Vec<&[u8]> = items.iter().map(|i| i.key.as_ref()).collect();
    let positions = shared.routing.route_batch(epoch, &refs)?;
    let width = epoch.width();
    let mut owners: Vec<Vec<Arc<NodeHandle>>> = Vec::with_capacity(n);
    for (i, key) in refs.iter().enumerate() {
        owners.push(pick_owners(shared, epoch, key, &positions[i * width..(i + 1) * width])?);
    }
    // answers[i][k]: the answer of owners[i][k].
    let mut answers: Vec<Vec<OwnerAnswer>> = owners.iter().map(|o| vec![None; o.len()]).collect();

    // Phase 1: conditions, on the first owner.
    let conditional: Vec<usize> = (0..n).filter(|&i| items[i].condition != WriteCondition::Always).collect();
    if !conditional.is_empty() {
        let groups = group(&conditional, |i| owners[i][0].clone());
        let calls = groups.iter().map(|(node, idx)| {
            let batch: Vec<PutItem> = idx.iter().map(|&i| items[i].clone()).collect();
            async move { put_batch_to(shared, node, &batch).await }
        });
        for ((_, idx), answer) in groups.iter().zip(futures::future::join_all(calls).await) {
            for (k, &i) in idx.iter().enumerate() {
                answers[i][0] = Some(match &answer {
                    Ok(r) => Ok(r[k]),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
    }

    // Phase 2: every other (entry, owner) pair; conditional entries follow
    // their first owner unconditionally, and only if it accepted them.
    // Per node: (entry, owner index) pairs.
    let mut sends: Vec<NodeSends> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let start = if item.condition == WriteCondition::Always {
            0
        } else {
            match answers[i][0] {
                Some(Ok(PutResult::Created { .. } | PutResult::Replaced { .. })) => 1,
                _ => continue,
            }
        };
        for (k, node) in owners[i].iter().enumerate().skip(start) {
            match sends.iter_mut().find(|(nd, _)| Arc::ptr_eq(nd, node)) {
                Some((_, v)) => v.push((i, k)),
                None => sends.push((node.clone(), vec![(i, k)])),
            }
        }
    }
    let calls = sends.iter().map(|(node, pairs)| {
        let batch: Vec<PutItem> = pairs
            .iter()
            .map(|&(i, k)| {
                let mut item = items[i].clone();
                if k > 0 {
                    item.condition = WriteCondition::Always;
                }
                item
            })
            .collect();
        async move { put_batch_to(shared, node, &batch).await }
    });
    for ((_, pairs), answer) in sends.iter().zip(futures::future::join_all(calls).await) {
        for (j, &(i, k)) in pairs.iter().enumerate() {
            answers[i][k] = Some(match &answer {
                Ok(r) => Ok(r[j]),
                Err(e) => Err(e.to_string()),
            });
        }
    }

    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(Ok(PutResult::ConditionFailed)) = answers[i][0] {
            out.push(PutResult::ConditionFailed);
            continue;
        }
        let acked: Vec<PutResult> = answers[i]
            .iter()
            .filter_map(|a| match a {
                Some(Ok(r @ (PutResult::Created { .. } | PutResult::Replaced { .. }))) => Some(*r),
                _ => None,
            })
            .collect();
        let needed = shared.config.write_ack.needed(width.max(1)).min(width.max(1));
        if acked.len() < needed {
            let detail: Vec<String> = answers[i]
                .iter()
                .zip(&owners[i])
                .filter_map(|(a, node)| match a {
                    Some(Err(e)) => Some(e.clone()),
                    None => Some(format!("{}: not written", node.id)),
                    _ => None,
                })
                .collect();
            return Err(RequestError::WriteNotAcknowledged {
                acked: acked.len(),
                owners: width,
                needed,
                policy: shared.config.write_ack,
                detail: format!(" (batch entry {i}): {}", detail.join("; ")),
            });
        }
        out.push(acked[0]);
    }
    Ok(batch_response(batch::encode_put_response(&out)))
}
