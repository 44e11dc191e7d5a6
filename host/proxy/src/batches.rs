//! Batches: `POST /v1/batch/get` and `POST /v1/batch/put`, fanned out as
//! one batch request per node, in parallel, and reassembled in request
//! order. A batch get retries a failed node's keys on their next owner and
//! looks its misses up in the migration window; a batch put decides
//! conditional entries on their first owner, then writes every entry to
//! its other owners, and holds each entry to the write-ack policy
//! ([`crate::replication::write_acked`], the same as single-key writes).
//!
//! Where it sits in the request flow: [`crate::server`] dispatches the two
//! batch routes here after loading the routing epoch once; every key of a
//! batch is routed by that one epoch, its owners chosen by
//! [`crate::replication`], the per-node requests sent by
//! [`crate::node_batch`], misses handed to [`crate::migration`]. The wire
//! format is the node's (`shardgate_api::batch`), never re-implemented
//! here.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use shardgate_api::ApiError;
use shardgate_api::batch::{self, BatchError, GetResponseEncoder, GetResult, PutItem, PutResult};
use shardgate_api::body::{content_length, read_body};
use shardgate_api::etag::WriteCondition;
use shardgate_api::ttl::check_ttl_seconds;

use crate::context::Shared;
use crate::error::RequestError;
use crate::migration::migrate_batch;
use crate::node_batch::{get_batch_from, group, put_batch_to};
use crate::nodes::NodeHandle;
use crate::replication::{pick_owners, write_acked};
use crate::routing::RoutingEpoch;

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

/// `POST /v1/batch/get`: one batch per owner node in parallel; a node that
/// fails has its keys retried on their next owner.
pub(crate) async fn batch_get(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let body = read_batch_body(shared, req).await?;
    let keys = batch::decode_get_request(body, &shared.limits).map_err(ApiError::from)?;
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
    let results = get_many(shared, epoch, &refs).await?;
    let mut encoder = GetResponseEncoder::new(results.len(), shared.limits.max_batch_size);
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

/// Reads many keys (checked already, at most `<role>.max_batch_keys`) the
/// way every front end does: one batch per owner node in parallel, a
/// failed node's keys retried on their next owner, misses looked up in the
/// migration window. Results in the order of `refs`.
pub(crate) async fn get_many(shared: &Shared, epoch: &RoutingEpoch, refs: &[&[u8]]) -> Result<Vec<GetResult>, RequestError> {
    let n = refs.len();
    let positions = if n == 0 { Vec::new() } else { shared.routing.route_batch(epoch, refs)? };
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
            migrate_batch(shared, epoch, &chain, refs, &positions, &candidates, &missed, &mut results).await;
        }
    }
    Ok(results)
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
    crate::replication::check_fresh(shared, epoch)?;
    let items = batch::decode_put_request(body, &shared.limits).map_err(ApiError::from)?;
    for (index, item) in items.iter().enumerate() {
        if !item.content_type.is_empty() && HeaderValue::from_bytes(&item.content_type).is_err() {
            return Err(
                ApiError::InvalidHeader { name: "Content-Type", reason: format!("batch entry {index}: not a valid header value") }.into()
            );
        }
        if let Some(secs) = item.ttl_seconds {
            check_ttl_seconds(secs.into(), &shared.limits)?;
        }
    }
    let out = put_many(shared, epoch, &items).await?;
    Ok(batch_response(batch::encode_put_response(&out)))
}

/// Writes many entries (checked already) the way every front end does:
/// conditional entries decided by their first healthy owner, then every
/// entry written to its other owners, one batch per node in parallel;
/// each entry needs `proxy.write_ack` acknowledgements (else the whole
/// call fails naming the entry). Results in the order of `items`.
pub(crate) async fn put_many(shared: &Shared, epoch: &RoutingEpoch, items: &[PutItem]) -> Result<Vec<PutResult>, RequestError> {
    crate::replication::check_fresh(shared, epoch)?;
    let n = items.len();
    if n == 0 {
        return Ok(Vec::new());
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
        if let Err(shortfall) = write_acked(shared.config.write_ack, width, acked.len()) {
            let detail: Vec<String> = answers[i]
                .iter()
                .zip(&owners[i])
                .filter_map(|(a, node)| match a {
                    Some(Err(e)) => Some(e.clone()),
                    None => Some(format!("{}: not written", node.id)),
                    _ => None,
                })
                .collect();
            return Err(shortfall.into_error(format!(" (batch entry {i}): {}", detail.join("; "))));
        }
        out.push(acked[0]);
    }
    Ok(out)
}
