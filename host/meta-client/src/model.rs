//! The wire types of the metadata API: what `/v1/...` accepts and answers,
//! and the [`RoutingState`] that `/v1/watch` streams to proxies.
//!
//! These are the contract between a meta member, `MetaClient`,
//! `shardgate ctl` and the proxy; the Raft log and the state machine use them
//! too (a [`Change`] is what a log entry carries), so changing one is a
//! compatibility decision.

use serde::{Deserialize, Serialize};

/// Whether a cache node takes new keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Owns keys: handed to the strategy.
    Active,
    /// Being emptied before removal: listed, but not handed to the strategy,
    /// so it owns no keys.
    Draining,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
        })
    }
}

/// A cache node as the routing state lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    /// Base URL of the node's HTTP API, `http://host:port`.
    pub addr: String,
    pub weight: f64,
    pub zone: String,
    pub state: NodeState,
}

/// Which strategy component is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyRef {
    /// Lowercase hex sha256 of the component bytes; download them from
    /// `GET /v1/strategies/{hash}/component`.
    pub hash: String,
    pub name: String,
    pub version: String,
}

/// Everything a proxy needs to route: sent by `/v1/watch` on connect and on
/// every change.
///
/// `nodes` is in join order (the Raft log index of each node's add). The
/// strategy is configured with the `active` nodes only, in that order, so
/// position `i` of a strategy's answer is the i-th active node of this list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingState {
    /// Increases with every change to nodes or routing config: the Raft log
    /// index of the change. 0 before the first change.
    pub epoch: u64,
    pub nodes: Vec<NodeView>,
    /// `None` until a strategy has been activated.
    pub strategy: Option<StrategyRef>,
    /// The active strategy's TOML config.
    pub config: String,
    pub replicas: u32,
    /// API address of the Raft leader as the serving member sees it.
    pub leader: Option<String>,
}

impl RoutingState {
    /// The nodes handed to the strategy, in position order.
    pub fn active_nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.state == NodeState::Active)
    }
}

/// Body of `POST /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub id: String,
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default)]
    pub zone: String,
}

fn default_weight() -> f64 {
    1.0
}

/// Body of `PATCH /v1/nodes/{id}`: the fields to change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
}

/// Body of `POST /v1/strategies/{hash}/activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// TOML handed to the strategy's `configure`.
    #[serde(default)]
    pub config: String,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
}

fn default_replicas() -> u32 {
    1
}

/// One change in an atomic batch (`POST /v1/changes`); also what a Raft log
/// entry carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    AddNode {
        id: String,
        addr: String,
        #[serde(default = "default_weight")]
        weight: f64,
        #[serde(default)]
        zone: String,
    },
    UpdateNode {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<NodeState>,
    },
    RemoveNode {
        id: String,
    },
    Activate {
        hash: String,
        #[serde(default)]
        config: String,
        #[serde(default = "default_replicas")]
        replicas: u32,
    },
    /// Re-activate the strategy, config and replicas that were active at
    /// `epoch` (see `/v1/routing/history`).
    Rollback {
        epoch: u64,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::AddNode { id, .. } => write!(f, "add_node {id}"),
            Change::UpdateNode { id, .. } => write!(f, "update_node {id}"),
            Change::RemoveNode { id } => write!(f, "remove_node {id}"),
            Change::Activate { hash, replicas, .. } => write!(f, "activate {hash} replicas={replicas}"),
            Change::Rollback { epoch } => write!(f, "rollback to {epoch}"),
        }
    }
}

/// Body of `POST /v1/changes`: applied together in one Raft log entry, or
/// not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    pub changes: Vec<Change>,
}

/// Answer to every committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReceipt {
    /// Raft log index of the entry.
    pub index: u64,
    /// Routing epoch after the write (unchanged by a strategy upload).
    pub epoch: u64,
}

/// A strategy in the registry (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyInfo {
    pub hash: String,
    pub name: String,
    pub version: String,
    pub description: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Raft log index of the upload: later uploads have larger ones.
    pub uploaded_at: u64,
    /// When it was uploaded, in milliseconds since the Unix epoch by the
    /// leader's clock (0 for uploads older than this field).
    #[serde(default)]
    pub uploaded_unix_ms: u64,
}

/// One routing config in the history (`GET /v1/routing/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The epoch at which this config became active.
    pub epoch: u64,
    pub hash: String,
    pub config: String,
    pub replicas: u32,
    /// When the leader proposed it (milliseconds since the Unix epoch, the
    /// leader's clock); absent for entries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// Share of the admission sample (`meta.admission_sample_keys`) whose
    /// primary owner changed with it; absent when nothing routed before
    /// it, and for entries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_share: Option<f64>,
}

/// Body of `POST /v1/preview`: a candidate routing; absent fields default to
/// the active routing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// The candidate's full node list (join order); absent: the current nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NewNode>>,
    /// Keys sampled: `key-0` .. `key-{n-1}`; default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
}

/// Per-node share of primary ownership in a preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub id: String,
    /// Keys of the sample whose primary owner is this node, before (active
    /// routing) and after (candidate).
    pub before: u64,
    pub after: u64,
}

/// Answer of `POST /v1/preview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewReport {
    pub sample: u64,
    /// Share of sampled keys whose primary owner changes (0..=1); 1 when no
    /// routing is active yet.
    pub moved_share: f64,
    /// Share of sampled keys whose owner set (all replicas) changes.
    pub replica_set_changed_share: f64,
    pub load: Vec<NodeLoad>,
}

/// Body of `POST /v1/lookup`: which nodes own `key` under the active
/// routing and, when `candidate` is given, under that candidate (the same
/// fields as a preview's, absent ones defaulting to the active routing;
/// `sample` has no meaning here and is refused).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The key as UTF-8 text (the key API's keys are bytes; the console and
    /// `ctl` look up text keys).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<PreviewRequest>,
}

/// Answer of `POST /v1/lookup`: owners as node ids in preference order
/// (the first is the primary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupReport {
    pub key: String,
    /// The routing epoch the active owners were computed at.
    pub epoch: u64,
    /// Owners under the active routing; `None` when no strategy is active
    /// or no node is active.
    pub active: Option<Vec<String>>,
    /// Owners under the candidate, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Vec<String>>,
}

/// Body of `POST /v1/proxies/report`: a proxy telling a meta member which
/// routing epoch it serves (sent to every member, on every swap and
/// periodically).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyReport {
    /// The proxy's identity: its advertised URL (`proxy.advertise`).
    pub id: String,
    /// The epoch serving requests.
    pub epoch: u64,
    /// The newest epoch meta has announced to the proxy (above `epoch`
    /// while a swap is in progress or failing).
    #[serde(default)]
    pub meta_epoch: u64,
    /// Milliseconds since the proxy's routing watch last heard from a meta
    /// member with a leader.
    #[serde(default)]
    pub staleness_ms: u64,
    /// The meta member whose watch the proxy follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<String>,
    /// Why the newest announced epoch is not serving, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How often the proxy reports (milliseconds); a proxy silent for three
    /// intervals is shown as `silent`.
    #[serde(default)]
    pub interval_ms: u64,
}

/// One proxy in `GET /v1/proxies`: its last report to this member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyView {
    /// The fields of its [`ProxyReport`].
    pub id: String,
    pub epoch: u64,
    pub meta_epoch: u64,
    pub staleness_ms: u64,
    pub following: Option<String>,
    pub last_error: Option<String>,
    pub interval_ms: u64,
    /// Milliseconds since this member received the report.
    pub age_ms: u64,
    /// Epochs the proxy serves behind this member's routing epoch (0 when
    /// it is on it, or ahead of a lagging member).
    pub behind: u64,
    /// `true` when the proxy serves this member's routing epoch (or a newer one).
    pub converged: bool,
    /// `true` when no report came for three of the proxy's intervals.
    pub silent: bool,
}

/// Answer of `GET /v1/proxies`: the proxies that report to this member
/// (each proxy reports to every member; not replicated through Raft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyList {
    /// The member answering.
    pub member: u64,
    /// Its routing epoch, what `behind` and `converged` compare with.
    pub epoch: u64,
    /// A proxy silent for this long is forgotten.
    pub ttl_ms: u64,
    pub proxies: Vec<ProxyView>,
}

/// Body of `POST /v1/raft/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub id: u64,
    /// API address of the member, `http://host:port` (`https://host:port`
    /// for members serving `meta.tls`).
    pub addr: String,
}

/// A meta member in the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    /// `true` for voters, `false` for learners.
    pub voter: bool,
    /// Leader only: the last log index this member has acknowledged
    /// (`None` when it has acknowledged nothing yet, and on followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    /// Leader only: entries this member is behind the leader's last log
    /// index (what a promotion checks against `meta.promotion_max_lag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Leader only: milliseconds since this member last acknowledged the
    /// leader (a heartbeat or an append).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_ms: Option<u64>,
}

/// Answer of `GET /v1/raft/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    pub id: u64,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: String,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberView>,
    /// `true` while a membership change is not committed yet (a joint
    /// configuration): it needs a majority of the old AND of the new
    /// voters. One that stays `true` is what `shardgate meta recover` is for.
    #[serde(default)]
    pub membership_change_pending: bool,
    /// Routing epoch of this member's state machine.
    pub epoch: u64,
}

/// A meta member's id and API address (`event: members` of `/v1/watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    pub id: u64,
    pub addr: String,
}

/// One event of `GET /v1/raft/watch`: the Raft view of the member that
/// sent it, and what changed since its previous event (`["initial"]` on
/// connect; then any of `"leader"`, `"term"`, `"state"`, `"membership"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEvent {
    /// Sequence number within this stream, from 0.
    pub seq: u64,
    pub changes: Vec<String>,
    /// The member that sent the event.
    pub member: u64,
    /// Its Raft state: "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: String,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    /// The effective membership (voters and learners); lag and
    /// acknowledgement fields are left out (they change all the time).
    pub members: Vec<MemberView>,
    pub membership_change_pending: bool,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Machine-readable kind, e.g. "unknown_node", "no_quorum".
    pub kind: String,
    /// API address of the leader when known (set on "no_quorum" and
    /// "not_leader").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}
