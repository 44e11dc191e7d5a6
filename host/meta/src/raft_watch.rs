//! `GET /v1/raft/watch`: the member's Raft view as Server-Sent Events, for
//! operators (`shardgate ctl members watch`) and tools: the current view on
//! connect (`changes: ["initial"]`), then one `event: raft` whenever the
//! leader, the term, the member's own state or the membership changes
//! (learner added, promoted, member removed, a change pending or
//! committed), and a `: heartbeat` comment every `meta.watch_heartbeat`.
//! Framing: `shardgate_meta_client::watch_event::encode_raft_event`.
//!
//! Where it sits: served by every member from its own openraft metrics (no
//! leader hop, like `/v1/raft/status`), beside `/v1/watch` ([`crate::watch`]).
//! Memory per stream is one view and an 8-event channel; the member's
//! connection cap bounds the streams.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::mpsc;
use tracing::debug;

use crate::api::MemberContext;
use crate::model::{MemberView, RaftEvent};
use crate::raft::TypeConfig;
use shardgate_meta_client::watch_event::{HEARTBEAT, encode_raft_event};

/// The route, merged into the member's router by [`crate::server`].
pub fn raft_watch_routes(ctx: Arc<MemberContext>) -> Router {
    Router::new().route("/v1/raft/watch", get(raft_watch)).with_state(ctx)
}

async fn raft_watch(State(ctx): State<Arc<MemberContext>>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream_raft(ctx, tx));
    crate::watch::event_stream(rx)
}

/// The part of the metrics a raft event reports (`seq` and `changes` are
/// filled in by the stream).
fn view(m: &openraft::RaftMetrics<TypeConfig>) -> RaftEvent {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    RaftEvent {
        seq: 0,
        changes: Vec::new(),
        member: m.id,
        state: format!("{:?}", m.state).to_lowercase(),
        leader: m.current_leader,
        leader_addr: m.current_leader.and_then(|id| membership.get_node(&id).map(|n| n.addr.clone())),
        term: m.current_term,
        members: membership
            .nodes()
            .map(|(id, n)| MemberView {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                matched_index: None,
                lag: None,
                last_ack_ms: None,
            })
            .collect(),
        membership_change_pending: crate::raft::membership_change_pending(m),
    }
}

/// What changed from `before` to `after`, in the order operators read them.
fn changes(before: &RaftEvent, after: &RaftEvent) -> Vec<String> {
    let mut out = Vec::new();
    if before.leader != after.leader || before.leader_addr != after.leader_addr {
        out.push("leader".to_string());
    }
    if before.term != after.term {
        out.push("term".to_string());
    }
    if before.state != after.state {
        out.push("state".to_string());
    }
    if before.members != after.members || before.membership_change_pending != after.membership_change_pending {
        out.push("membership".to_string());
    }
    out
}

async fn stream_raft(ctx: Arc<MemberContext>, tx: mpsc::Sender<Bytes>) {
    let mut metrics = ctx.raft.metrics();
    let mut stopping = ctx.stopping.clone();
    let mut heartbeat = tokio::time::interval(ctx.config.watch_heartbeat);
    heartbeat.reset(); // the first tick would fire at once
    let mut last = view(&metrics.borrow_watched().clone());
    last.changes = vec!["initial".to_string()];
    if tx.send(encode_raft_event(&last)).await.is_err() {
        return;
    }
    let mut seq = 0;
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                let mut next = view(&metrics.borrow_watched().clone());
                let what = changes(&last, &next);
                if what.is_empty() {
                    continue;
                }
                seq += 1;
                next.seq = seq;
                next.changes = what;
                if tx.send(encode_raft_event(&next)).await.is_err() {
                    break;
                }
                last = next;
            }
            _ = heartbeat.tick() => {
                if tx.send(Bytes::from_static(HEARTBEAT)).await.is_err() {
                    break;
                }
            }
            _ = crate::api::stopped(&mut stopping) => break,
            _ = tx.closed() => break,
        }
    }
    debug!(events = seq + 1, "raft watch stream ended");
}
