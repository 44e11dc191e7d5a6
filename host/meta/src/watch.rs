//! `GET /v1/watch?from_epoch=N`: the routing state as Server-Sent Events,
//! the contract proxies are built on (framing: `shardgate_meta_client::watch_event`).
//!
//! On connect the member sends the meta membership (`event: members`: ids
//! and API addresses; again whenever it changes, so clients rotate over the
//! members that exist rather than their seed list), then its full `RoutingState` if its epoch is
//! greater than `from_epoch` (always when `from_epoch` is absent), then one
//! `event: routing` per epoch change, and a `: heartbeat` comment every
//! `meta.watch_heartbeat` so both ends notice a dead connection. Every event
//! carries the full state, so a client that reconnects with the last epoch it
//! saw misses no change: it gets the newest state if anything changed.
//! Served from the member's own state machine (no leader hop).
//!
//! **A watch needs a leader** (as etcd's `WithRequireLeader`): a member
//! that has not heard from a leader within `meta.election_timeout` (a
//! follower cut off from the majority, or a leader that lost it) refuses new
//! streams with 503 `no_leader` and ends open ones with an `event: closing`
//! naming the reason, so a proxy moves on to a member that follows the
//! majority instead of staying on an old epoch for as long as the partition
//! lasts. `?stale=true` asks for the member's state regardless.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tokio::sync::mpsc;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use tracing::{debug, info};

use axum::Router;
use axum::routing::get;
use serde::Deserialize;

use crate::api::MemberContext;
use crate::error::ApiError;
use crate::model::{ErrorBody, MemberAddr};
use shardgate_meta_client::watch_event::{HEARTBEAT, encode_closing, encode_event, encode_members};

/// The watch route, merged into the member's router beside the API's.
pub fn watch_routes(ctx: Arc<MemberContext>) -> Router {
    Router::new().route("/v1/watch", get(watch)).with_state(ctx)
}

#[derive(Deserialize)]
pub struct WatchQuery {
    pub from_epoch: Option<u64>,
    /// `true` (or `1`, or empty): stream even without a leader.
    pub stale: Option<String>,
}

impl WatchQuery {
    fn stale(&self) -> bool {
        self.stale.as_deref().is_some_and(|v| matches!(v, "" | "true" | "1"))
    }
}

/// Why this member cannot vouch for its state, or `None` when it has heard
/// from a leader within `meta.election_timeout`: for a follower, the last
/// append or heartbeat of the leader it voted for; for the leader, the last
/// time a quorum acknowledged it (always fresh when it is the only voter).
pub async fn leader_missing(ctx: &MemberContext) -> Option<String> {
    let limit = ctx.config.election_timeout;
    let m = ctx.raft.metrics().borrow_watched().clone();
    let Some(leader) = m.current_leader else {
        return Some(format!("member {} knows no leader (it may be cut off from the majority, or an election is running)", ctx.id));
    };
    if leader == ctx.id {
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        if voters == [ctx.id] {
            return None;
        }
        return match m.last_quorum_acked.as_ref().map(|at| at.elapsed()) {
            Some(age) if age <= limit => None,
            Some(age) => Some(format!(
                "member {} leads but no majority acknowledged it for {:?} (more than meta.election_timeout, {limit:?})",
                ctx.id,
                Duration::from_millis(age.as_millis() as u64)
            )),
            None => Some(format!("member {} leads but no majority has acknowledged it yet", ctx.id)),
        };
    }
    let heard = ctx.raft.with_raft_state(|st| st.vote_last_modified().map(|at| at.elapsed())).await.ok().flatten();
    match heard {
        Some(age) if age <= limit => None,
        Some(age) => Some(format!(
            "member {} has not heard from leader {leader} for {:?} (more than meta.election_timeout, {limit:?}); it may be cut off from the majority",
            ctx.id,
            Duration::from_millis(age.as_millis() as u64)
        )),
        None => Some(format!("member {} has not heard from leader {leader} yet", ctx.id)),
    }
}

/// Parse `?from_epoch=N` leniently into a clear 400.
pub fn watch_query(q: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>) -> Result<WatchQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest(format!("bad query: {e} (expected ?from_epoch=<u64>)")))
}

pub async fn watch(
    State(ctx): State<Arc<MemberContext>>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (from, stale) = match watch_query(query) {
        Ok(q) => (q.from_epoch, q.stale()),
        Err(e) => return e.into_response(),
    };
    if !stale && let Some(reason) = leader_missing(&ctx).await {
        ctx.metrics.watch_no_leader.get_or_create(&crate::metrics::OutcomeLabel { outcome: "refused".into() }).inc();
        return ApiError::NoLeaderFor(format!("{reason}; a watch needs a leader: try another member, or ask for ?stale=true"))
            .into_response();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream_routing(ctx, from, stale, tx));
    event_stream(rx)
}

/// A `text/event-stream` answer whose body is what `rx` receives (the
/// stream's task writes the events; the body ends when it drops its
/// sender). Shared with [`crate::raft_watch`].
pub(crate) fn event_stream(mut rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The members (voters and learners) and their API addresses, as this
/// member knows them.
fn member_addrs(ctx: &MemberContext) -> Vec<MemberAddr> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    m.membership_config.membership().nodes().map(|(id, n)| MemberAddr { id: *id, addr: n.addr.clone() }).collect()
}

async fn stream_routing(ctx: Arc<MemberContext>, from: Option<u64>, stale: bool, tx: mpsc::Sender<Bytes>) {
    ctx.metrics.watch_streams.inc();
    let mut epochs = ctx.sm.subscribe_epoch();
    let mut stopping = ctx.stopping.clone();
    let mut heartbeat = tokio::time::interval(ctx.config.watch_heartbeat);
    heartbeat.reset(); // the first tick would fire at once
    // Checked twice per election timeout: a stream ends at most 1.5
    // election timeouts after the member last heard from its leader.
    let mut leader_check = tokio::time::interval(ctx.config.election_timeout / 2);
    leader_check.reset();
    // The membership first, so a client rotates over the members that
    // exist now; again whenever it changes.
    let mut raft_metrics = ctx.raft.metrics();
    let mut members = member_addrs(&ctx);
    if tx.send(encode_members(&members)).await.is_err() {
        ctx.metrics.watch_streams.dec();
        return;
    }
    let state = ctx.routing_state();
    let mut last = match from {
        Some(f) if state.epoch <= f => f,
        _ => {
            if tx.send(encode_event(&state)).await.is_err() {
                ctx.metrics.watch_streams.dec();
                return;
            }
            state.epoch
        }
    };
    loop {
        tokio::select! {
            changed = epochs.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = ctx.routing_state();
                if state.epoch > last {
                    last = state.epoch;
                    if tx.send(encode_event(&state)).await.is_err() {
                        break;
                    }
                }
            }
            changed = raft_metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = member_addrs(&ctx);
                if now != members {
                    members = now;
                    if tx.send(encode_members(&members)).await.is_err() {
                        break;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if tx.send(Bytes::from_static(HEARTBEAT)).await.is_err() {
                    break;
                }
            }
            _ = leader_check.tick(), if !stale => {
                if let Some(reason) = leader_missing(&ctx).await {
                    info!(%reason, "ending a watch stream: no leader");
                    ctx.metrics.watch_no_leader.get_or_create(&crate::metrics::OutcomeLabel { outcome: "closed".into() }).inc();
                    let body = ErrorBody { error: format!("{reason}; a watch needs a leader: try another member"), kind: "no_leader".into(), leader: None };
                    let _ = tx.send(encode_closing(&body)).await;
                    break;
                }
            }
            _ = crate::api::stopped(&mut stopping) => break,
            _ = tx.closed() => break,
        }
    }
    debug!(last_epoch = last, "watch stream ended");
    ctx.metrics.watch_streams.dec();
}
