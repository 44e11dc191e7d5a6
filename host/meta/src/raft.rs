//! The Raft wiring: the HTTP transport between members (client side: [`NetworkFactory`];
//! server side: the `/raft/...` routes in [`raft_routes`]), and the openraft
//! `Config` built from `[meta]`. The type configuration is in
//! [`crate::types`].
//!
//! Modelled on openraft's `raft-kv-memstore` + `network-v2-http` examples at
//! the pinned version (0.10.0-alpha.34): JSON over HTTP/1 POSTs, snapshots
//! sent whole. Members are addressed by their API address (one listener
//! serves Raft RPCs and the JSON API).

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::OptionalSend;
use openraft::errors::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::auth::AdminToken;
use crate::raft_check;
use crate::store::StateMachineStore;
pub use crate::types::*;

/// The Raft handle of a member: openraft over our [`TypeConfig`] and store.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// How far member `id` is behind the leader, from the leader's metrics
/// (`None` on a member that is not the leader): what `/v1/raft/status`
/// shows and what a promotion checks.
pub struct Progress {
    /// The last log index the member acknowledged.
    pub matched: Option<u64>,
    /// Entries behind the leader's last log index (all of them plus one
    /// when it acknowledged nothing yet).
    pub lag: u64,
    /// Time since it last acknowledged the leader.
    pub ack_age: Option<std::time::Duration>,
}

pub fn progress(m: &openraft::RaftMetrics<TypeConfig>, id: NodeId) -> Option<Progress> {
    use openraft::Instant as _;
    let (replication, heartbeat) = (m.replication.as_ref()?, m.heartbeat.as_ref()?);
    let last = m.last_log_index.unwrap_or(0);
    let matched = replication.get(&id).cloned().flatten().map(|l| l.index());
    Some(Progress {
        matched,
        lag: matched.map_or(last + 1, |i| last.saturating_sub(i)),
        ack_age: heartbeat.get(&id).cloned().flatten().map(|at| at.elapsed()),
    })
}

/// Whether the effective membership is not committed yet (a joint
/// configuration, or the uniform one after it, still waiting for a quorum).
pub fn membership_change_pending(m: &openraft::RaftMetrics<TypeConfig>) -> bool {
    m.membership_config.log_id() != m.committed_membership_config.log_id()
}

/// Creates one [`PeerClient`] per target member; all share one HTTP
/// connection pool and one [`FailureLog`].
#[derive(Clone)]
pub struct NetworkFactory {
    client: reqwest::Client,
    token: Option<AdminToken>,
    failures: Arc<FailureLog>,
}

impl NetworkFactory {
    /// `token`: `meta.admin_token`, sent with every Raft RPC when set.
    pub fn new(client: reqwest::Client, token: Option<AdminToken>) -> Self {
        Self { client, token, failures: Arc::new(FailureLog::new(FAILURE_LOG_EVERY)) }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            client: self.client.clone(),
            token: self.token.clone(),
            failures: self.failures.clone(),
        }
    }
}

/// How often failures to one member are logged once it keeps failing.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// What [`FailureLog::failed`] decided about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLine {
    /// The first failure after success (or ever): log it.
    First,
    /// Still failing and `every` has passed: log it with the count of the
    /// failures not logged since the last line.
    Again { suppressed: u64 },
    /// Not logged (counted).
    Suppressed,
}

#[derive(Debug)]
struct PeerFailures {
    last_logged: Instant,
    suppressed: u64,
}

/// Rate limit of the warnings about Raft RPCs that fail: a leader sends a
/// heartbeat to every member each `heartbeat_interval`, so a member that is
/// down (or was never started) would otherwise fill the log with one line
/// per attempt. The first failure to a member is logged, then at most one
/// line per `every` with the number of failures left out, and one line
/// when it answers again. (openraft's own per-attempt warnings are held
/// back by `shardgate`'s default log filter.)
#[derive(Debug)]
pub struct FailureLog {
    every: Duration,
    peers: Mutex<HashMap<NodeId, PeerFailures>>,
}

impl FailureLog {
    pub fn new(every: Duration) -> Self {
        FailureLog { every, peers: Mutex::new(HashMap::new()) }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, PeerFailures>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed RPC to `target` at `now`.
    pub fn failed(&self, target: NodeId, now: Instant) -> FailureLine {
        let mut peers = self.peers();
        match peers.get_mut(&target) {
            None => {
                peers.insert(target, PeerFailures { last_logged: now, suppressed: 0 });
                FailureLine::First
            }
            Some(p) if now.saturating_duration_since(p.last_logged) >= self.every => {
                let suppressed = std::mem::take(&mut p.suppressed);
                p.last_logged = now;
                FailureLine::Again { suppressed }
            }
            Some(p) => {
                p.suppressed += 1;
                FailureLine::Suppressed
            }
        }
    }

    /// Records a successful RPC to `target`: `Some(failures not logged)`
    /// when it had been failing.
    pub fn succeeded(&self, target: NodeId) -> Option<u64> {
        self.peers().remove(&target).map(|p| p.suppressed)
    }
}

/// Sends Raft RPCs to one member: `POST {addr}/raft/{rpc}` with a JSON body.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: reqwest::Client,
    token: Option<AdminToken>,
    failures: Arc<FailureLog>,
}

impl PeerClient {
    /// One RPC, its failure logged through the [`FailureLog`].
    async fn request<Req, Resp>(&self, rpc: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Result<Resp, RaftError<TypeConfig>>: DeserializeOwned,
    {
        let result = self.send(rpc, req, option).await;
        let (target, addr) = (self.target, &self.addr);
        match &result {
            Err(error) => match self.failures.failed(target, Instant::now()) {
                FailureLine::First => warn!(
                    member = target,
                    %addr,
                    rpc,
                    %error,
                    "raft rpc to a member failed; while it keeps failing this is logged at most every {FAILURE_LOG_EVERY:?}"
                ),
                FailureLine::Again { suppressed } => {
                    warn!(member = target, %addr, rpc, %error, suppressed, "raft rpcs to a member still fail")
                }
                FailureLine::Suppressed => {}
            },
            Ok(_) => {
                if let Some(suppressed) = self.failures.succeeded(target) {
                    info!(member = target, %addr, suppressed, "raft rpcs to a member succeed again");
                }
            }
        }
        result
    }

    async fn send<Req, Resp>(&self, rpc: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Result<Resp, RaftError<TypeConfig>>: DeserializeOwned,
    {
        let url = format!("{}/raft/{rpc}", self.addr);
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut rb = self.client.post(&url).header(http::header::CONTENT_TYPE, "application/json").body(body).timeout(option.hard_ttl());
        if let Some(token) = &self.token {
            rb = rb.header(http::header::AUTHORIZATION, token.header_value());
        }
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() { RPCError::Unreachable(Unreachable::new(&e)) } else { RPCError::Network(NetworkError::new(&e)) }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            return Err(RPCError::Network(NetworkError::from_string(format!(
                "HTTP {status} from {url}: {}",
                String::from_utf8_lossy(&bytes)
            ))));
        }
        let res: Result<Resp, RaftError<TypeConfig>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // A remote Fatal (the member is shutting down) counts as unreachable.
        res.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request("append", &req, &option).await
    }

    async fn vote(&mut self, req: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request("vote", &req, &option).await
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request("pre-vote", &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, SnapshotBytes(snapshot.snapshot.into_inner()));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.request("snapshot", &req, &option) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request("transfer-leader", &req, &option).await
    }
}

/// Snapshot bytes on the wire: base64 in the JSON message (a JSON array of
/// numbers would take ~3.6 bytes per byte).
struct SnapshotBytes(Vec<u8>);

impl Serialize for SnapshotBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for SnapshotBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map(SnapshotBytes).map_err(serde::de::Error::custom)
    }
}

/// Largest Raft RPC body accepted from a peer. A snapshot carries the whole
/// state, the strategy registry included, and one log entry can carry a
/// component of up to `meta.max_component_size`, so axum's default 2 MiB
/// would leave a lagging member unable to catch up once the registry grows.
pub const RAFT_BODY_LIMIT: usize = 1 << 30;

/// Server side of the transport: `POST /raft/{append,vote,pre-vote,snapshot,transfer-leader}`.
pub fn raft_routes(raft: Arc<Raft>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/transfer-leader", post(transfer_leader))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(raft)
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new((StatusCode::BAD_REQUEST, format!("malformed raft rpc body: {e}")).into_response()))
}

fn encode<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 400 for a decoded RPC that [`crate::raft_check`] refuses.
fn refused(reason: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("refused raft rpc: {reason}")).into_response()
}

async fn append(State(raft): State<Arc<Raft>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Err(reason) = raft_check::check_append(&req.vote, req.prev_log_id.as_ref(), &req.entries, req.leader_commit.as_ref()) {
        return refused(reason);
    }
    let committed = {
        use openraft::async_runtime::WatchReceiver;
        raft.metrics().borrow_watched().local_committed
    };
    if let Err(reason) = raft_check::check_append_against_committed(committed.as_ref(), req.prev_log_id.as_ref(), &req.entries) {
        return refused(reason);
    }
    encode(&raft.append_entries(req).await)
}

async fn vote(State(raft): State<Arc<Raft>>, body: Bytes) -> Response {
    let req: VoteRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Err(reason) = raft_check::check_vote_request(&req.vote, req.last_log_id.as_ref()) {
        return refused(reason);
    }
    encode(&raft.vote(req).await)
}

async fn pre_vote(State(raft): State<Arc<Raft>>, body: Bytes) -> Response {
    let req: VoteRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Err(reason) = raft_check::check_vote_request(&req.vote, req.last_log_id.as_ref()) {
        return refused(reason);
    }
    encode(&raft.pre_vote(req).await)
}

async fn snapshot(State(raft): State<Arc<Raft>>, body: Bytes) -> Response {
    let (vote, meta, SnapshotBytes(data)): (Vote, SnapshotMeta, SnapshotBytes) = match decode(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Err(reason) = raft_check::check_snapshot(&vote, &meta, &data) {
        return refused(reason);
    }
    let snapshot = Snapshot { meta, snapshot: Cursor::new(data) };
    let res: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> =
        raft.install_full_snapshot(vote, snapshot).await.map_err(RaftError::Fatal);
    encode(&res)
}

async fn transfer_leader(State(raft): State<Arc<Raft>>, body: Bytes) -> Response {
    let req: TransferLeaderRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Err(reason) = raft_check::check_transfer_leader(req.from_leader(), req.last_log_id()) {
        return refused(reason);
    }
    let res: Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>> =
        raft.handle_transfer_leader(req).await.map_err(RaftError::Fatal);
    encode(&res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_to_a_member_are_logged_once_then_at_most_every_period_with_a_count() {
        let log = FailureLog::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(log.failed(7, t0), FailureLine::First);
        // A heartbeat every 100 ms for 29.9 s: nothing more is logged.
        for i in 1..300 {
            assert_eq!(log.failed(7, t0 + Duration::from_millis(100 * i)), FailureLine::Suppressed);
        }
        // Another member's failures are counted apart.
        assert_eq!(log.failed(8, t0), FailureLine::First);
        assert_eq!(log.failed(7, t0 + Duration::from_secs(30)), FailureLine::Again { suppressed: 299 });
        assert_eq!(log.failed(7, t0 + Duration::from_secs(31)), FailureLine::Suppressed);
        assert_eq!(log.succeeded(7), Some(1));
        assert_eq!(log.succeeded(7), None);
        // Failing again after a success is a first failure again.
        assert_eq!(log.failed(7, t0 + Duration::from_secs(32)), FailureLine::First);
    }
}
