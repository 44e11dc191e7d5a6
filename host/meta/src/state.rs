//! The replicated state: cache nodes, the strategy registry, the routing
//! config and its history, and the pure function that applies one Raft log
//! entry ([`Command`]) to it.
//!
//! Sits under the Raft state machine (`store::StateMachineStore` calls
//! [`MetaState::apply`] for every committed entry) and in front of it: the
//! leader runs [`MetaState::simulate`] before proposing, so a change that
//! would be refused never reaches the log. Apply is all-or-nothing per
//! entry: a batch with one bad change changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use shardgate_strategy::RoutingInput;

use crate::model::{Change, HistoryEntry, NodeState, NodeView, RoutingState, StrategyInfo, StrategyRef};

/// How many routing configs `/v1/routing/history` keeps for rollback.
pub const HISTORY_LIMIT: usize = 100;
/// Largest replica count an activation may ask for.
pub const MAX_REPLICAS: u32 = 32;
/// Largest strategy TOML config, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Fewest hex digits of a strategy hash prefix (`resolve_hash`).
pub const MIN_HASH_PREFIX: usize = 8;
/// Longest node id and zone label.
pub const MAX_LABEL_CHARS: usize = 64;
/// Smallest node weight: a node weighted lower would own (almost) no keys.
pub const MIN_WEIGHT: f64 = 0.001;
/// Largest node weight.
pub const MAX_WEIGHT: f64 = 1_000_000.0;
/// Characters of user input (ids, addresses, paths) an error message
/// repeats; the rest is replaced by "…".
pub const MAX_ECHO_CHARS: usize = 64;

/// `input` as an error message repeats it: the first [`MAX_ECHO_CHARS`]
/// characters, then "…" when it was longer, so a 100 KB id does not come
/// back whole.
pub fn echo(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_string(),
    }
}

/// Why the state machine (or the leader, before proposing) refused a change.
/// A refused change changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("unknown node {:?}", echo(.0))]
    UnknownNode(String),
    #[error("node {:?} already exists", echo(.0))]
    DuplicateNode(String),
    /// Another node already has this address: 409 like a duplicate id.
    #[error("addr {:?} is already used by node {:?}", echo(.addr), echo(.node))]
    DuplicateAddr { addr: String, node: String },
    #[error("unknown strategy {}: upload it first (POST /v1/strategies)", echo(.0))]
    UnknownStrategy(String),
    #[error("no routing config at epoch {0} in the history (it keeps the last {HISTORY_LIMIT})")]
    UnknownEpoch(u64),
    #[error("{0}")]
    Invalid(String),
}

/// A Raft log entry's application payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Nodes and routing changes, applied together or not at all, and
    /// what the leader noted when it proposed them: its clock and the share
    /// of keys a routing change moves (both for the history; old entries
    /// and old binaries leave them out).
    Changes {
        changes: Vec<Change>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        moved_share: Option<f64>,
    },
    /// Store a strategy component (admitted by the leader before proposing).
    PutStrategy {
        info: StrategyInfo,
        #[serde(with = "base64_bytes")]
        component: Arc<Vec<u8>>,
    },
}

impl Command {
    /// A batch of changes with nothing noted (tests, tools).
    pub fn changes(changes: Vec<Change>) -> Self {
        Command::Changes { changes, at_ms: None, moved_share: None }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Changes { changes, .. } => {
                f.write_str("changes[")?;
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("]")
            }
            Command::PutStrategy { info, .. } => write!(f, "put_strategy {} ({})", info.hash, info.name),
        }
    }
}

/// What applying a log entry answered: the Raft response type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Applied { epoch: u64 },
    Rejected(Rejection),
}

/// A cache node in the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheNode {
    pub id: String,
    pub addr: String,
    pub weight: f64,
    pub zone: String,
    pub state: NodeState,
    /// Join order: a counter that increases with every add (so nodes added
    /// later sort after earlier ones, also within one batch).
    pub join_seq: u64,
}

/// A strategy in the registry, with its component bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStrategy {
    pub info: StrategyInfo,
    #[serde(with = "base64_bytes")]
    pub component: Arc<Vec<u8>>,
}

/// The active routing config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRouting {
    pub hash: String,
    pub config: String,
    pub replicas: u32,
}

/// Everything the metadata cluster replicates (besides Raft membership).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<String, CacheNode>,
    pub strategies: BTreeMap<String, StoredStrategy>,
    pub routing: Option<ActiveRouting>,
    pub history: Vec<HistoryEntry>,
    pub epoch: u64,
    pub next_join_seq: u64,
}

impl MetaState {
    /// Apply a committed entry at `index`. On `Err` nothing changed.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<u64, Rejection> {
        match cmd {
            Command::PutStrategy { info, component } => {
                // Content-addressed: uploading the same bytes twice is a no-op.
                // `uploaded_at` is the entry's log index: the order of uploads.
                self.strategies.entry(info.hash.clone()).or_insert_with(|| StoredStrategy {
                    info: StrategyInfo { uploaded_at: index, ..info.clone() },
                    component: component.clone(),
                });
                Ok(self.epoch)
            }
            Command::Changes { changes, at_ms, moved_share } => {
                let mut next = self.simulate(index, changes)?;
                if let Some(h) = next.history.last_mut().filter(|h| h.epoch == index) {
                    h.at_ms = *at_ms;
                    h.moved_share = *moved_share;
                }
                *self = next;
                Ok(self.epoch)
            }
        }
    }

    /// The state after applying `changes` at `index`, without touching `self`.
    pub fn simulate(&self, index: u64, changes: &[Change]) -> Result<MetaState, Rejection> {
        if changes.is_empty() {
            return Err(Rejection::Invalid("empty change batch: send at least one change".into()));
        }
        let mut next = self.clone();
        for change in changes {
            next.apply_change(index, change)?;
        }
        next.epoch = index;
        Ok(next)
    }

    fn apply_change(&mut self, index: u64, change: &Change) -> Result<(), Rejection> {
        match change {
            Change::AddNode { id, addr, weight, zone } => {
                validate_node_id(id)?;
                validate_addr("addr", addr)?;
                validate_weight(*weight)?;
                validate_zone(zone)?;
                if self.nodes.contains_key(id) {
                    return Err(Rejection::DuplicateNode(id.clone()));
                }
                if let Some(other) = self.nodes.values().find(|n| n.addr == *addr) {
                    return Err(Rejection::DuplicateAddr { addr: addr.clone(), node: other.id.clone() });
                }
                let join_seq = self.next_join_seq;
                self.next_join_seq += 1;
                self.nodes.insert(
                    id.clone(),
                    CacheNode {
                        id: id.clone(),
                        addr: addr.clone(),
                        weight: *weight,
                        zone: zone.clone(),
                        state: NodeState::Active,
                        join_seq,
                    },
                );
            }
            Change::UpdateNode { id, weight, state } => {
                if let Some(w) = weight {
                    validate_weight(*w)?;
                }
                let node = self.nodes.get_mut(id).ok_or_else(|| Rejection::UnknownNode(id.clone()))?;
                if weight.is_none() && state.is_none() {
                    return Err(Rejection::Invalid("node update changes nothing: give weight and/or state".into()));
                }
                if let Some(w) = weight {
                    node.weight = *w;
                }
                if let Some(s) = state {
                    node.state = *s;
                }
            }
            Change::RemoveNode { id } => {
                if self.nodes.remove(id).is_none() {
                    return Err(Rejection::UnknownNode(id.clone()));
                }
            }
            Change::Activate { hash, config, replicas } => {
                validate_replicas(*replicas)?;
                validate_config_len(config)?;
                if !self.strategies.contains_key(hash) {
                    return Err(Rejection::UnknownStrategy(hash.clone()));
                }
                self.set_routing(index, ActiveRouting { hash: hash.clone(), config: config.clone(), replicas: *replicas });
            }
            Change::Rollback { epoch } => {
                let entry = self.history.iter().find(|h| h.epoch == *epoch).cloned().ok_or(Rejection::UnknownEpoch(*epoch))?;
                if !self.strategies.contains_key(&entry.hash) {
                    return Err(Rejection::UnknownStrategy(entry.hash));
                }
                self.set_routing(index, ActiveRouting { hash: entry.hash, config: entry.config, replicas: entry.replicas });
            }
        }
        Ok(())
    }

    fn set_routing(&mut self, index: u64, routing: ActiveRouting) {
        // Two routing changes in one batch: the last one wins and the
        // history keeps one entry for the epoch.
        self.history.retain(|h| h.epoch != index);
        self.history.push(HistoryEntry {
            epoch: index,
            hash: routing.hash.clone(),
            config: routing.config.clone(),
            replicas: routing.replicas,
            at_ms: None,
            moved_share: None,
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.routing = Some(routing);
    }

    /// The full hash of the strategy `text` names: a full hash, or a prefix
    /// of at least [`MIN_HASH_PREFIX`] hex digits, either optionally written
    /// `sha256:...`. A prefix two strategies share is refused, naming them.
    pub fn resolve_hash(&self, text: &str) -> Result<String, Rejection> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text).to_ascii_lowercase();
        if self.strategies.contains_key(&hex) {
            return Ok(hex);
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.len() > 64 {
            return Err(Rejection::UnknownStrategy(text.to_string()));
        }
        if hex.len() < MIN_HASH_PREFIX {
            return Err(Rejection::Invalid(format!(
                "strategy hash prefix {:?} is {} hex digits; give at least {MIN_HASH_PREFIX}",
                echo(text),
                hex.len()
            )));
        }
        let mut matches = self.strategies.range(hex.clone()..).map(|(h, _)| h).take_while(|h| h.starts_with(&hex));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Ok(one.clone()),
            (None, _) => Err(Rejection::UnknownStrategy(text.to_string())),
            (Some(a), Some(b)) => Err(Rejection::Invalid(format!(
                "strategy hash prefix {:?} is ambiguous: it matches {} and {}{}; give more digits",
                echo(text),
                &a[..16],
                &b[..16],
                if matches.next().is_some() { " and more" } else { "" }
            ))),
        }
    }

    /// Nodes in join order.
    pub fn nodes_in_join_order(&self) -> Vec<&CacheNode> {
        let mut nodes: Vec<&CacheNode> = self.nodes.values().collect();
        nodes.sort_by_key(|n| n.join_seq);
        nodes
    }

    /// What this state configures its strategy with (`None` while no
    /// strategy is active): [`RoutingInput::from_state`] of its routing
    /// state, the same function every proxy routes with.
    pub fn routing_input(&self) -> Option<RoutingInput> {
        RoutingInput::from_state(&self.routing_state(None))
    }

    pub fn routing_state(&self, leader: Option<String>) -> RoutingState {
        let (strategy, config, replicas) = match &self.routing {
            Some(r) => {
                let info = self.strategies.get(&r.hash).map(|s| &s.info);
                (
                    Some(StrategyRef {
                        hash: r.hash.clone(),
                        name: info.map(|i| i.name.clone()).unwrap_or_default(),
                        version: info.map(|i| i.version.clone()).unwrap_or_default(),
                    }),
                    r.config.clone(),
                    r.replicas,
                )
            }
            None => (None, String::new(), 0),
        };
        RoutingState {
            epoch: self.epoch,
            nodes: self
                .nodes_in_join_order()
                .into_iter()
                .map(|n| NodeView { id: n.id.clone(), addr: n.addr.clone(), weight: n.weight, zone: n.zone.clone(), state: n.state })
                .collect(),
            strategy,
            config,
            replicas,
            leader,
        }
    }
}

pub fn validate_node_id(id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.chars().count() > MAX_LABEL_CHARS {
        return Err(Rejection::Invalid(format!("node id {:?} must be 1 to {MAX_LABEL_CHARS} characters", echo(id))));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(Rejection::Invalid(format!("node id {:?} may only contain ASCII letters, digits, '-', '_' and '.'", echo(id))));
    }
    Ok(())
}

pub fn validate_zone(zone: &str) -> Result<(), Rejection> {
    if zone.chars().count() > MAX_LABEL_CHARS || zone.chars().any(|c| c.is_control()) {
        return Err(Rejection::Invalid(format!("zone {:?} must be at most {MAX_LABEL_CHARS} printable characters", echo(zone))));
    }
    Ok(())
}

/// A node weight must lie in [[`MIN_WEIGHT`], [`MAX_WEIGHT`]]: applied to
/// added and updated nodes, change batches and preview candidates.
pub fn validate_weight(weight: f64) -> Result<(), Rejection> {
    if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
        return Err(Rejection::Invalid(format!("weight {weight:?} must be between {MIN_WEIGHT} and {MAX_WEIGHT} (inclusive)")));
    }
    Ok(())
}

pub fn validate_replicas(replicas: u32) -> Result<(), Rejection> {
    if replicas == 0 || replicas > MAX_REPLICAS {
        return Err(Rejection::Invalid(format!("replicas {replicas} must be between 1 and {MAX_REPLICAS}")));
    }
    Ok(())
}

fn validate_config_len(config: &str) -> Result<(), Rejection> {
    if config.len() > MAX_CONFIG_BYTES {
        return Err(Rejection::Invalid(format!("strategy config is {} bytes; the limit is {MAX_CONFIG_BYTES}", config.len())));
    }
    Ok(())
}

/// Check an HTTP base address `http://host:port` (no path, query or
/// userinfo): a cache node's address (the proxy reaches nodes over plain
/// HTTP). `what` names the field in the error.
pub fn validate_addr(what: &str, addr: &str) -> Result<(), Rejection> {
    check_base_url(what, addr, &["http"])
}

/// Check a meta member's API address: `http://host:port`, or
/// `https://host:port` for members serving `meta.tls`.
pub fn validate_member_addr(what: &str, addr: &str) -> Result<(), Rejection> {
    check_base_url(what, addr, &["http", "https"])
}

fn check_base_url(what: &str, addr: &str, schemes: &[&str]) -> Result<(), Rejection> {
    shardgate_api::addr::check_base_url(addr, schemes)
        .map_err(|why| Rejection::Invalid(format!("{what} {:?} is not {}: {why}", echo(addr), shardgate_api::addr::base_url_form(schemes))))
}

/// Serde for component bytes: base64 in JSON (log entries, snapshots).
mod base64_bytes {
    use std::sync::Arc;

    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<u8>>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map(Arc::new).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: &str, port: u16) -> Change {
        Change::AddNode { id: id.into(), addr: format!("http://127.0.0.1:{port}"), weight: 1.0, zone: String::new() }
    }

    fn with_strategy() -> MetaState {
        let mut s = MetaState::default();
        let info = StrategyInfo {
            hash: "ab".into(),
            name: "x".into(),
            version: "1".into(),
            description: String::new(),
            size: 3,
            uploaded_at: 1,
            uploaded_unix_ms: 0,
        };
        s.apply(1, &Command::PutStrategy { info, component: Arc::new(vec![1, 2, 3]) }).unwrap();
        s
    }

    #[test]
    fn a_batch_with_one_bad_change_changes_nothing() {
        let mut s = with_strategy();
        s.apply(2, &Command::changes(vec![add("a", 1)])).unwrap();
        let before = s.clone();
        let err = s.apply(3, &Command::changes(vec![add("b", 2), Change::RemoveNode { id: "nope".into() }])).unwrap_err();
        assert_eq!(err, Rejection::UnknownNode("nope".into()));
        assert_eq!(s, before);
    }

    #[test]
    fn epoch_is_the_index_of_the_last_routing_change_and_uploads_do_not_bump_it() {
        let mut s = with_strategy();
        assert_eq!(s.epoch, 0);
        assert_eq!(s.apply(5, &Command::changes(vec![add("a", 1)])).unwrap(), 5);
        let again = with_strategy().strategies["ab"].clone();
        assert_eq!(s.apply(6, &Command::PutStrategy { info: again.info, component: again.component }).unwrap(), 5);
        assert_eq!(s.epoch, 5);
    }

    #[test]
    fn nodes_keep_join_order_within_and_across_batches() {
        let mut s = MetaState::default();
        s.apply(2, &Command::changes(vec![add("z", 1), add("a", 2)])).unwrap();
        s.apply(3, &Command::changes(vec![add("m", 3)])).unwrap();
        let order: Vec<_> = s.nodes_in_join_order().iter().map(|n| n.id.clone()).collect();
        assert_eq!(order, ["z", "a", "m"]);
        s.apply(4, &Command::changes(vec![Change::UpdateNode { id: "a".into(), weight: None, state: Some(NodeState::Draining) }])).unwrap();
        let active: Vec<_> = s.routing_state(None).active_nodes().map(|n| n.id.clone()).collect();
        assert_eq!(active, ["z", "m"]);
    }

    #[test]
    fn duplicate_ids_unknown_hashes_and_bad_fields_are_refused() {
        let mut s = with_strategy();
        s.apply(2, &Command::changes(vec![add("a", 1)])).unwrap();
        let cases: Vec<(Change, &str)> = vec![
            (add("a", 9), "already exists"),
            (add("b", 1), "already used"),
            (Change::AddNode { id: "b c".into(), addr: "http://h:1".into(), weight: 1.0, zone: String::new() }, "node id"),
            (Change::AddNode { id: "b".into(), addr: "h:1".into(), weight: 1.0, zone: String::new() }, "http://host:port"),
            (Change::AddNode { id: "b".into(), addr: "http://h".into(), weight: 1.0, zone: String::new() }, "missing port"),
            (Change::AddNode { id: "b".into(), addr: "http://h:1/x".into(), weight: 1.0, zone: String::new() }, "no path"),
            (Change::AddNode { id: "b".into(), addr: "http://h:1".into(), weight: f64::NAN, zone: String::new() }, "weight"),
            (
                Change::AddNode { id: "b".into(), addr: "http://h:1".into(), weight: 5e-324, zone: String::new() },
                "weight 5e-324 must be between 0.001 and 1000000",
            ),
            (
                Change::AddNode { id: "b".into(), addr: "http://h:1".into(), weight: 1e6 + 1.0, zone: String::new() },
                "must be between 0.001 and 1000000",
            ),
            (Change::UpdateNode { id: "a".into(), weight: Some(0.0009), state: None }, "must be between 0.001 and 1000000"),
            (Change::Activate { hash: "cd".into(), config: String::new(), replicas: 1 }, "unknown strategy cd"),
            (Change::Activate { hash: "ab".into(), config: String::new(), replicas: 0 }, "between 1 and 32"),
            (Change::Rollback { epoch: 77 }, "epoch 77"),
            (Change::UpdateNode { id: "a".into(), weight: None, state: None }, "changes nothing"),
        ];
        for (change, needle) in cases {
            let before = s.clone();
            let err = s.apply(3, &Command::changes(vec![change.clone()])).unwrap_err();
            assert!(err.to_string().contains(needle), "{change:?}: {err}");
            assert_eq!(s, before);
        }
    }

    #[test]
    fn errors_repeat_at_most_64_characters_of_user_input() {
        let long = "x".repeat(100_000);
        let s = with_strategy();
        for change in [
            Change::RemoveNode { id: long.clone() },
            Change::AddNode { id: long.clone(), addr: "http://h:1".into(), weight: 1.0, zone: String::new() },
            Change::AddNode { id: "b".into(), addr: format!("http://{long}"), weight: 1.0, zone: String::new() },
            Change::Activate { hash: long.clone(), config: String::new(), replicas: 1 },
        ] {
            let err = s.simulate(3, &[change]).unwrap_err().to_string();
            assert!(err.len() < 300, "{} bytes: {}", err.len(), &err[..300]);
            assert!(err.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"), "{err}");
        }
        assert_eq!(echo("short"), "short");
        assert_eq!(echo(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
    }

    #[test]
    fn rollback_reactivates_an_earlier_config_at_a_new_epoch() {
        let mut s = with_strategy();
        s.apply(2, &Command::changes(vec![Change::Activate { hash: "ab".into(), config: "a = 1".into(), replicas: 1 }])).unwrap();
        s.apply(3, &Command::changes(vec![Change::Activate { hash: "ab".into(), config: "a = 2".into(), replicas: 2 }])).unwrap();
        s.apply(4, &Command::changes(vec![Change::Rollback { epoch: 2 }])).unwrap();
        assert_eq!(s.routing, Some(ActiveRouting { hash: "ab".into(), config: "a = 1".into(), replicas: 1 }));
        assert_eq!(s.epoch, 4);
        assert_eq!(s.history.iter().map(|h| h.epoch).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn history_is_capped() {
        let mut s = with_strategy();
        for i in 0..(HISTORY_LIMIT as u64 + 10) {
            s.apply(10 + i, &Command::changes(vec![Change::Activate { hash: "ab".into(), config: String::new(), replicas: 1 }])).unwrap();
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].epoch, 20);
    }

    #[test]
    fn component_bytes_round_trip_through_json_as_base64() {
        let s = with_strategy();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"AQID\""), "{json}");
        let back: MetaState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
