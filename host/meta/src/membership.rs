//! Raft membership through the API: `POST /v1/raft/learners`,
//! `POST /v1/raft/members/{id}/promote`, `DELETE /v1/raft/members/{id}`, and
//! the checks that keep a careless or hostile request from costing the
//! cluster its quorum.
//!
//! Request flow: like every write, forwarded to the leader
//! ([`crate::api::to_leader`]) -> checked here against the leader's view ->
//! one openraft membership change, bounded by `meta.membership_timeout`.
//!
//! - A learner is added only when its address answers `GET
//!   /v1/raft/status` as meta member `id` of no other cluster, and no other
//!   member has that address.
//! - A learner is promoted only when it is within `meta.promotion_max_lag`
//!   entries of the leader and acknowledged the leader within
//!   `meta.election_timeout`; the refusal names both.
//! - What no check can prevent (the learner dies between the check and the
//!   commit, leaving a joint configuration that needs it) is reported: 503
//!   `membership_timeout` and `membership_change_pending` in
//!   `/v1/raft/status`. `shardgate meta recover` ([`crate::recover`]) undoes
//!   it offline, the way etcd's `--force-new-cluster` does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{delete, post};
use axum::{Json, Router, middleware};
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use tracing::{debug, error, info, warn};

use crate::api::{MemberContext, parse_json, to_leader};
use crate::error::ApiError;
use crate::model::{NewMember, RaftStatus, WriteReceipt};
use crate::raft::{ClientWriteError, Member as RaftMember, NodeId, TypeConfig};
use crate::state::validate_member_addr;

type Ctx = State<Arc<MemberContext>>;

/// How long the leader waits for a would-be learner to answer `GET
/// /v1/raft/status` (capped by `meta.membership_timeout`).
pub const LEARNER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest `/v1/raft/status` answer read from a would-be learner.
pub const LEARNER_PROBE_MAX_BYTES: usize = 256 * 1024;

/// The membership routes, behind the same leader forwarding as the rest of
/// the API (merged by [`crate::server`]); a route layer per method router,
/// so a wrong method is answered 405 with `Allow` here, never forwarded.
pub fn membership_routes(ctx: Arc<MemberContext>) -> Router {
    let leader = middleware::from_fn_with_state(ctx.clone(), to_leader);
    Router::new()
        .route("/v1/raft/learners", post(add_learner).route_layer(leader.clone()))
        .route("/v1/raft/members/{id}/promote", post(promote).route_layer(leader.clone()))
        .route("/v1/raft/members/{id}", delete(remove_member).route_layer(leader))
        .with_state(ctx)
}

fn receipt(ctx: &MemberContext) -> WriteReceipt {
    WriteReceipt { index: ctx.sm.applied_index().unwrap_or(0), epoch: ctx.sm.read(|s| s.epoch) }
}

fn membership_error(e: openraft::errors::RaftError<TypeConfig, ClientWriteError>) -> ApiError {
    match e.api_error() {
        Some(ClientWriteError::ForwardToLeader(f)) => ApiError::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) },
        Some(ClientWriteError::ChangeMembershipError(c)) => ApiError::Membership(c.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

/// What a change that did not complete in time left behind, for the 503.
fn timed_out(ctx: &MemberContext, what: &str) -> ApiError {
    let t = ctx.config.membership_timeout;
    let m = ctx.raft.metrics().borrow_watched().clone();
    let effective = m.membership_config.membership();
    let pending = crate::raft::membership_change_pending(&m);
    let message = if pending {
        let configs: Vec<String> = effective
            .get_joint_config()
            .iter()
            .map(|c| format!("{{{}}}", c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")))
            .collect();
        format!(
            "{what} was not committed within {t:?} (meta.membership_timeout). The change is still pending: it needs a majority of each of \
             the voter sets {}. Bring the missing members back, or, if they are gone for good, stop the remaining members and run \
             `shardgate meta recover` (README: Recovering a meta cluster)",
            configs.join(" and ")
        )
    } else {
        format!("{what} did not complete within {t:?} (meta.membership_timeout)")
    };
    error!(%message, "membership change timed out");
    ApiError::MembershipTimeout(message)
}

/// Runs a voter/member change. One that finds another change still in
/// progress (a joint configuration not yet committed, e.g. right after a
/// promotion) waits for it instead of failing, up to
/// `meta.membership_timeout` in all.
async fn change_membership(
    ctx: &MemberContext,
    change: ChangeMembers<NodeId, RaftMember>,
    what: &str,
) -> Result<openraft::raft::ClientWriteResponse<TypeConfig>, ApiError> {
    let deadline = tokio::time::Instant::now() + ctx.config.membership_timeout;
    loop {
        let attempt =
            tokio::time::timeout_at(deadline, ctx.raft.change_membership(change.clone(), false)).await.map_err(|_| timed_out(ctx, what))?;
        match attempt {
            Err(e)
                if matches!(
                    e.api_error(),
                    Some(ClientWriteError::ChangeMembershipError(openraft::errors::ChangeMembershipError::InProgress(_)))
                ) =>
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(timed_out(ctx, what));
                }
                debug!("waiting for the previous membership change to commit");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map_err(membership_error),
        }
    }
}

fn parse_member_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        let shown: String = id.chars().take(32).collect();
        let more = if shown.len() < id.len() { "…" } else { "" };
        ApiError::BadRequest(format!("member id {shown:?}{more} is not a number"))
    })
}

/// Asks `addr` who it is: it must answer `GET /v1/raft/status` as meta member
/// `id`, and not as a member of another cluster.
async fn probe_learner(ctx: &MemberContext, id: NodeId, addr: &str) -> Result<(), ApiError> {
    let refuse = |why: String| ApiError::LearnerCheck(format!("{addr} cannot be added as learner {id}: {why}"));
    let timeout = LEARNER_PROBE_TIMEOUT.min(ctx.config.membership_timeout);
    let url = format!("{addr}/v1/raft/status");
    let mut resp = ctx
        .http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| refuse(format!("GET {url} failed ({e}); a learner must be a running meta member")))?;
    if !resp.status().is_success() {
        return Err(refuse(format!("GET {url} answered {}; a learner must be a running meta member", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(timeout, resp.chunk())
        .await
        .map_err(|_| refuse(format!("GET {url} did not finish its answer within {timeout:?}")))?
        .map_err(|e| refuse(format!("GET {url} failed while reading the answer ({e})")))?
    {
        if body.len() + chunk.len() > LEARNER_PROBE_MAX_BYTES {
            return Err(refuse(format!("GET {url} answered more than {LEARNER_PROBE_MAX_BYTES} bytes; not a meta member")));
        }
        body.extend_from_slice(&chunk);
    }
    let status: RaftStatus =
        serde_json::from_slice(&body).map_err(|e| refuse(format!("GET {url} did not answer a meta member's status ({e})")))?;
    if status.id != id {
        return Err(refuse(format!("it answers as meta member {}, not {id}", status.id)));
    }
    if !status.members.is_empty() && !status.members.iter().any(|m| m.id == ctx.id) {
        let theirs: Vec<String> = status.members.iter().map(|m| m.id.to_string()).collect();
        return Err(refuse(format!(
            "it belongs to another cluster (members {}); start it with an empty data directory to join this one",
            theirs.join(", ")
        )));
    }
    Ok(())
}

async fn add_learner(State(ctx): Ctx, body: Bytes) -> Result<Json<WriteReceipt>, ApiError> {
    let m: NewMember = parse_json(&body)?;
    if m.id == 0 {
        return Err(ApiError::BadRequest("member id must be > 0".into()));
    }
    validate_member_addr("addr", &m.addr)?;
    let membership = ctx.raft.metrics().borrow_watched().membership_config.membership().clone();
    if let Some(node) = membership.get_node(&m.id) {
        if node.addr == m.addr {
            // Joining again (e.g. after a restart): already a member.
            return Ok(Json(receipt(&ctx)));
        }
        return Err(ApiError::Membership(format!("member {} already exists with address {}", m.id, node.addr)));
    }
    if let Some((other, _)) = membership.nodes().find(|(_, n)| n.addr.eq_ignore_ascii_case(&m.addr)) {
        return Err(ApiError::Membership(format!("member {other} already has address {}; one address, one member", m.addr)));
    }
    probe_learner(&ctx, m.id, &m.addr).await?;
    ctx.ensure_quorum().await?;
    info!(member = m.id, addr = %m.addr, "adding learner");
    let what = format!("adding learner {} at {}", m.id, m.addr);
    // Blocking: answers once the learner has caught up with the log.
    let resp = tokio::time::timeout(ctx.config.membership_timeout, ctx.raft.add_learner(m.id, RaftMember { addr: m.addr.clone() }, true))
        .await
        .map_err(|_| timed_out(&ctx, &what))?
        .map_err(membership_error)?;
    Ok(Json(WriteReceipt { index: resp.log_id.index(), epoch: ctx.sm.read(|s| s.epoch) }))
}

/// How far learner `id` is behind, as the leader sees it: `Err` with the
/// refusal when it must not be promoted.
fn check_caught_up(ctx: &MemberContext, id: NodeId) -> Result<(), ApiError> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let Some(crate::raft::Progress { matched, lag, ack_age }) = crate::raft::progress(&m, id) else {
        return Err(ApiError::NotLeader { leader: ctx.leader().map(|(_, a)| a) });
    };
    let last = m.last_log_index.unwrap_or(0);
    let max_lag = ctx.config.promotion_max_lag;
    let max_age = ctx.config.election_timeout;
    let lag_ok = lag <= max_lag;
    let ack_ok = ack_age.is_some_and(|a| a <= max_age);
    if lag_ok && ack_ok {
        return Ok(());
    }
    let matched = matched.map_or("none".to_string(), |i| i.to_string());
    let ack = match ack_age {
        Some(a) => format!("last acknowledged the leader {:?} ago", Duration::from_millis(a.as_millis() as u64)),
        None => "never acknowledged the leader".to_string(),
    };
    Err(ApiError::NotCaughtUp(format!(
        "learner {id} is not caught up: it is {lag} entries behind the leader (matched index {matched}, leader's last index {last}; \
         meta.promotion_max_lag is {max_lag}) and {ack} (it must have within meta.election_timeout, {max_age:?}). Promoting it could \
         leave the cluster without a quorum; check that it runs and that the leader reaches it, then retry"
    )))
}

async fn promote(State(ctx): Ctx, Path(id): Path<String>) -> Result<Json<WriteReceipt>, ApiError> {
    let id = parse_member_id(&id)?;
    let membership = ctx.raft.metrics().borrow_watched().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Err(ApiError::NotFound(format!("unknown member {id}: add it as a learner first")));
    }
    if membership.voter_ids().any(|v| v == id) {
        return Ok(Json(receipt(&ctx)));
    }
    ctx.ensure_quorum().await?;
    // The leader's replication metrics trail its acknowledgements by a
    // moment (a learner added a moment ago may not show as caught up yet):
    // give it up to an election timeout.
    let deadline = tokio::time::Instant::now() + ctx.config.election_timeout;
    while let Err(e) = check_caught_up(&ctx, id) {
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(member = id, "promoting learner to voter");
    let resp = change_membership(&ctx, ChangeMembers::AddVoterIds(BTreeSet::from([id])), &format!("promoting learner {id}")).await?;
    Ok(Json(WriteReceipt { index: resp.log_id.index(), epoch: ctx.sm.read(|s| s.epoch) }))
}

async fn remove_member(State(ctx): Ctx, Path(id): Path<String>) -> Result<Json<WriteReceipt>, ApiError> {
    let id = parse_member_id(&id)?;
    let membership = ctx.raft.metrics().borrow_watched().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Err(ApiError::NotFound(format!("unknown member {id}")));
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if voters.contains(&id) && voters.len() == 1 {
        return Err(ApiError::Membership(format!("member {id} is the last voter; it cannot be removed")));
    }
    ctx.ensure_quorum().await?;
    warn!(member = id, "removing member");
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    let resp = change_membership(&ctx, change, &format!("removing member {id}")).await?;
    Ok(Json(WriteReceipt { index: resp.log_id.index(), epoch: ctx.sm.read(|s| s.epoch) }))
}
