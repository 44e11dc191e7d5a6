//! Replication: which of a key's owners a request goes to, and how reads
//! and writes spread over them. Owner choice ([`pick_owners`]: healthy
//! owners in preference order, then `proxy.owner_down`), the read path
//! ([`read_from`]: the first owner, the next ones on failure, up to
//! `proxy.read_retries`; [`read_replicas`]: read-through to the replicas
//! with repair of the first owner), the single-key write fan-out
//! ([`write_all`]: a condition decided by the first owner, the others
//! following it) and the one write-ack policy ([`write_acked`],
//! `proxy.write_ack`) that single-key and batch writes share.
//!
//! Where it sits in the request flow: below the handlers. [`crate::keys`]
//! and [`crate::batches`] route a key with the request's epoch, then come
//! here to choose owners and to read or write; [`crate::migration`] reads
//! an earlier epoch's owners through [`read_from`]. Everything leaves
//! through the forwarder ([`crate::upstream`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use shardgate_api::etag::parse_etag;
use tracing::debug;

use crate::config::{OwnerDownPolicy, WriteAck};
use crate::context::Shared;
use crate::error::RequestError;
use crate::nodes::NodeHandle;
use crate::routing::RoutingEpoch;
use crate::upstream::{UpstreamError, UpstreamResponse};

/// The owners to use for `key` under `epoch`, healthy ones first in
/// preference order. Ejected owners are skipped; when none is left the
/// owner-down policy decides.
pub(crate) fn pick_owners(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    positions: &[u32],
) -> Result<Vec<Arc<NodeHandle>>, RequestError> {
    let mut owners: Vec<Arc<NodeHandle>> = Vec::with_capacity(positions.len());
    for &p in positions {
        if let Some(n) = epoch.nodes.get(p as usize)
            && n.is_routable()
        {
            owners.push(n.clone());
        }
    }
    if !owners.is_empty() {
        return Ok(owners);
    }
    let names = || positions.iter().filter_map(|&p| epoch.nodes.get(p as usize)).map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ");
    match shared.config.owner_down {
        OwnerDownPolicy::FailFast => Err(RequestError::OwnersDown { owners: names() }),
        OwnerDownPolicy::NextOwner => {
            let mut detour = Vec::with_capacity(positions.len());
            if shared.routing.detour_owners(epoch, key, &mut detour) {
                owners.extend(detour.iter().filter_map(|&p| epoch.nodes.get(p as usize)).filter(|n| n.is_routable()).cloned());
            }
            if owners.is_empty() {
                // Detour not built yet: take the first healthy node after the owners.
                return Err(RequestError::NoHealthyNode { owners: names() });
            }
            Ok(owners)
        }
    }
}

/// Ids of the nodes at `positions` (a key's nominal owners).
pub(crate) fn owner_ids<'a>(epoch: &'a RoutingEpoch, positions: &[u32]) -> Vec<&'a str> {
    positions.iter().filter_map(|&p| epoch.nodes.get(p as usize)).map(|n| n.id.as_str()).collect()
}

/// Reads from the first owner, then the next ones on failures (at most
/// `1 + proxy.read_retries` attempts). Answers below 500 end the loop.
pub(crate) async fn read_from(
    shared: &Shared,
    owners: &[Arc<NodeHandle>],
    method: Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<UpstreamResponse, RequestError> {
    let attempts = (1 + shared.config.read_retries as usize).min(owners.len()).max(1);
    let mut last: Option<RequestError> = None;
    for (i, node) in owners.iter().take(attempts).enumerate() {
        if i > 0 {
            shared.metrics.read_retries.inc();
        }
        match shared.upstream.send(node, method.clone(), path, headers, body.clone()).await {
            Ok(r) if !r.status.is_server_error() => return Ok(r),
            Ok(r) => last = Some(relay_error(node, &r)),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or(RequestError::NoHealthyNode { owners: String::new() }))
}

fn relay_error(node: &NodeHandle, r: &UpstreamResponse) -> RequestError {
    RequestError::Upstream(UpstreamError::Unreachable {
        node: node.id.clone(),
        addr: node.addr.clone(),
        reason: format!("answered HTTP {}: {}", r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()),
    })
}

/// A value found somewhere other than the first owner: on a replica, or on
/// an earlier epoch's owner (migration).
pub(crate) struct FoundValue {
    pub version: u64,
    pub content_type: HeaderValue,
    pub value: Bytes,
}

/// Read-through to the replicas: the first owner can miss a key its
/// replicas hold (it restarted empty, or the key was written while it was
/// ejected). Asks the other owners in preference order; a hit is copied back
/// to the first owner (`If-None-Match: *`, so a newer write there wins) and
/// answered. A genuine miss with R > 1 therefore costs one read per owner.
pub(crate) async fn read_replicas(shared: &Shared, owners: &[Arc<NodeHandle>], path: &str) -> Option<FoundValue> {
    for replica in &owners[1..] {
        shared.metrics.read_retries.inc();
        let Ok(r) = shared.upstream.send(replica, Method::GET, path, &[], Bytes::new()).await else { continue };
        if r.status != StatusCode::OK {
            continue;
        }
        let version = r.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).and_then(|v| parse_etag(v).ok().flatten())?;
        let content_type = r.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let repair = [(header::CONTENT_TYPE, content_type.clone()), (header::IF_NONE_MATCH, HeaderValue::from_static("*"))];
        if let Err(e) = shared.upstream.send(&owners[0], Method::PUT, path, &repair, r.body.clone()).await {
            debug!(node = %owners[0].id, error = %e, "read repair failed");
        }
        return Some(FoundValue { version, content_type, value: r.body });
    }
    None
}

/// Too few acknowledgements for `proxy.write_ack` (see [`write_acked`]).
pub(crate) struct AckShortfall {
    acked: usize,
    owners: usize,
    needed: usize,
    policy: WriteAck,
}

impl AckShortfall {
    /// The client's error; `detail` (what the other owners answered) is
    /// appended to the message as is.
    pub(crate) fn into_error(self, detail: String) -> RequestError {
        let AckShortfall { acked, owners, needed, policy } = self;
        RequestError::WriteNotAcknowledged { acked, owners, needed, policy, detail }
    }
}

/// The write-ack policy, the one rule for single-key writes ([`write_all`])
/// and batch writes ([`crate::batches`]): a key written to its `width`
/// nominal owners (the epoch's replicas, whether or not all were healthy)
/// is acknowledged when `acked` owners accepted it and `policy` needs no
/// more (`WriteAck::needed` of at least one owner, capped at `width`).
#[inline]
pub(crate) fn write_acked(policy: WriteAck, width: usize, acked: usize) -> Result<(), AckShortfall> {
    let needed = policy.needed(width.max(1)).min(width.max(1));
    if acked >= needed { Ok(()) } else { Err(AckShortfall { acked, owners: width, needed, policy }) }
}

/// One write (PUT or DELETE) to forward to a key's owners.
pub(crate) struct Write<'a> {
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Carries `If-Match`/`If-None-Match`: decided by the first owner.
    pub conditional: bool,
    pub body: Bytes,
}

/// Refuses a write while the routing may be stale: the meta watch has not
/// heard from a member with a leader for longer than `proxy.max_staleness`
/// (when set). Reads are not checked (fail static).
pub(crate) fn check_fresh(shared: &Shared, epoch: &RoutingEpoch) -> Result<(), RequestError> {
    let Some(limit) = shared.config.max_staleness else { return Ok(()) };
    match shared.routing.meta_staleness() {
        Some(staleness) if staleness > limit => {
            shared.metrics.stale_writes_refused.inc();
            Err(RequestError::Stale { staleness, limit, epoch: epoch.epoch })
        }
        _ => Ok(()),
    }
}

/// Sends `write` to the key's `owners` (nominally `width` of them) and,
/// once `proxy.write_ack` is met ([`write_acked`]), answers the first
/// owner's success, or else the first acknowledging answer (a 404 where
/// `acked` counts it); `acked` says which statuses acknowledge.
pub(crate) async fn write_all(
    shared: &Shared,
    owners: &[Arc<NodeHandle>],
    width: usize,
    write: Write<'_>,
    acked: impl Fn(StatusCode) -> bool,
) -> Result<UpstreamResponse, RequestError> {
    let Write { method, path, headers, conditional, body } = write;
    // A condition is decided by the first healthy owner; the others follow
    // it unconditionally, so replicas never diverge on a condition.
    let mut answers: Vec<Result<UpstreamResponse, UpstreamError>> = Vec::with_capacity(owners.len());
    let rest_headers: Vec<(HeaderName, HeaderValue)> =
        headers.iter().filter(|(n, _)| *n != header::IF_MATCH && *n != header::IF_NONE_MATCH).cloned().collect();
    let first_len;
    if conditional {
        let first = shared.upstream.send(&owners[0], method.clone(), path, &headers, body.clone()).await;
        // A refused condition (412) or other client error is the answer.
        if let Ok(r) = &first
            && !acked(r.status)
            && !r.status.is_server_error()
        {
            return Ok(r.clone());
        }
        answers.push(first);
        first_len = 1;
    } else {
        first_len = 0;
    }
    let rest = &owners[first_len..];
    if !rest.is_empty() && (first_len == 0 || answers[0].as_ref().is_ok_and(|r| acked(r.status))) {
        let hdrs = if conditional { &rest_headers } else { &headers };
        let sends = rest.iter().map(|n| shared.upstream.send(n, method.clone(), path, hdrs, body.clone()));
        answers.extend(futures::future::join_all(sends).await);
    }
    let acks = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| acked(r.status))).count();
    let Err(shortfall) = write_acked(shared.config.write_ack, width, acks) else {
        let acknowledging = || answers.iter().filter_map(|a| a.as_ref().ok()).filter(|r| acked(r.status));
        let primary = acknowledging().find(|r| r.status.is_success()).or_else(|| acknowledging().next());
        return Ok(primary.cloned().expect("at least one acknowledgement"));
    };
    // Not enough acknowledgements: a client error from the primary is the answer.
    if let Some(Ok(r)) = answers.first()
        && r.status.is_client_error()
    {
        return Ok(r.clone());
    }
    let detail: Vec<String> = answers
        .iter()
        .zip(owners)
        .filter_map(|(a, n)| match a {
            Ok(r) if acked(r.status) => None,
            Ok(r) => Some(format!("{}: HTTP {}", n.id, r.status.as_u16())),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    Err(shortfall.into_error(if detail.is_empty() { String::new() } else { format!(": {}", detail.join("; ")) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ack_policy() {
        let needed = |policy, width, acked| match write_acked(policy, width, acked) {
            Ok(()) => None,
            Err(s) => Some((s.needed, s.owners)),
        };
        // (policy, width) -> acknowledgements needed.
        for (policy, width, want) in
            [(WriteAck::One, 3, 1usize), (WriteAck::Quorum, 3, 2), (WriteAck::Quorum, 2, 2), (WriteAck::All, 3, 3), (WriteAck::All, 0, 1)]
        {
            assert_eq!(needed(policy, width, want.saturating_sub(1)), Some((want, width)), "{policy} of {width}");
            assert_eq!(needed(policy, width, want), None, "{policy} of {width}");
        }
        let RequestError::WriteNotAcknowledged { acked, owners, needed, policy, detail } =
            write_acked(WriteAck::All, 2, 1).err().unwrap().into_error(": n2: HTTP 503".into())
        else {
            panic!("not a write-ack error")
        };
        assert_eq!((acked, owners, needed, policy, detail.as_str()), (1, 2, 2, WriteAck::All, ": n2: HTTP 503"));
    }
}
