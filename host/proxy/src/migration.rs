//! The migration window: after a routing change, a key that misses on its
//! new owners may still sit on its owners under an earlier epoch (up to
//! [`crate::routing::MIGRATION_DEPTH`] epochs, while `proxy.migration_window`
//! is open). Single-key reads look there with [`migrate_one`], batch reads
//! with [`migrate_batch`] (one batch per earlier owner); a hit is copied to
//! the new owners (`If-None-Match: *`, so a newer write always wins).
//! Deletes remove the key from the earlier owners too
//! ([`delete_previous`]), or a later read would bring it back.
//!
//! Where it sits in the request flow: after the read path of
//! [`crate::replication`] missed, called by [`crate::keys`] (GET, HEAD and
//! DELETE of one key) and [`crate::batches`] (the misses of a batch get),
//! with the earlier epochs of the request's own routing epoch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use shardgate_api::batch::{GetResult, PutItem, PutResult};
use shardgate_api::etag::{WriteCondition, parse_etag};

use crate::context::Shared;
use crate::node_batch::{get_batch_from, group, put_batch_to};
use crate::nodes::NodeHandle;
use crate::replication::{FoundValue, owner_ids, read_from};
use crate::routing::RoutingEpoch;

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

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
    pos.iter().filter_map(|&p| previous.nodes.get(p as usize)).filter(|n| !asked.contains(&n.id) && n.is_routable()).cloned().collect()
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
        (Some(Some(v)), _) | (None, Some(v)) => Migrated::Found(FoundValue { version: v, content_type, value: found.body }),
        (None, None) => Migrated::NotFound,
    }
}

/// What a migration lookup found.
pub(crate) enum Migrated {
    /// On an earlier owner; now copied to the new owners (`version` is the
    /// new primary's, or the earlier owner's when the copy failed).
    Found(FoundValue),
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
pub(crate) async fn migrate_batch(
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
    let mut asked: HashMap<usize, Vec<String>> = missed
        .iter()
        .map(|&i| (i, owner_ids(epoch, &positions[i * width..(i + 1) * width]).into_iter().map(String::from).collect()))
        .collect();
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
