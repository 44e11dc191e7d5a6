//! Recording clients of meta's node API for the linearizability scenario
//! (7): concurrent workers on several lab hosts issue add / update / remove
//! / list calls on a small set of node ids through random members, and
//! record every call as an operation of a history (call and return times
//! from one monotonic clock, the answer mapped onto the node-list model, or
//! an unknown outcome).
//!
//! Where it sits: `faults.rs` scenario 7 starts [`Recorders`] in client
//! runtimes ([`crate::lab::NetnsRuntime`]) on hosts c1, c2 and the switch,
//! injects faults while they run, collects the history and checks it with
//! `shardgate_testkit::linearizability`.
//!
//! How an answer is recorded (from the meta API's contract, `host/meta/src/
//! error.rs` and `openapi.json`: nothing is committed unless the kind is
//! `write_timeout`):
//!
//! - 201/200 -> `Done`; 409 `duplicate_node` -> `Duplicate`; 404
//!   `unknown_node` -> `UnknownNode`; a read's 200 -> the list, projected
//!   onto the history's ids;
//! - 503 `write_timeout`, a 500 (`internal`: "nothing is known to be
//!   committed"), a client timeout or a connection lost after the request
//!   was sent -> unknown outcome (return time +infinity);
//! - 503 `no_quorum` / `no_leader` / `not_leader` / `leader_unreachable`, a
//!   connection never established, any failed read -> left out (no effect,
//!   nothing observed);
//! - anything else (a 400 would be a bug of this client) fails the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use shardgate_meta_client::model::{NodeState, NodeView};
use shardgate_testkit::linearizability::Operation;
use shardgate_testkit::linearizability::node_list::{NodeAnswer, NodeOp, NodeRecord, Nodes};

use crate::cluster::http_client;

pub type History = Vec<Operation<NodeOp, NodeAnswer>>;

/// How a call ended, for the counts of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Answered with a result the model checks.
    pub ok: u64,
    /// Refused with nothing committed, or a failed read (left out).
    pub failed: u64,
    /// Outcome unknown (kept, return time +infinity).
    pub unknown: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.unknown += o.unknown;
    }
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.unknown
    }
}

/// What one call recorded.
pub enum Recorded {
    Answer(NodeAnswer),
    Unknown,
    /// Left out of the history: why (for the failure report).
    NoEffect(String),
}

/// Nanoseconds since `origin` (one clock for every client thread:
/// `Instant` is CLOCK_MONOTONIC, the same in every network namespace).
pub fn nanos(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// The list of a read, projected onto `ids`.
pub fn project(nodes: Vec<NodeView>, ids: &BTreeSet<String>) -> Nodes {
    nodes
        .into_iter()
        .filter(|n| ids.contains(&n.id))
        .map(|n| {
            assert!(n.weight.fract() == 0.0 && n.weight >= 1.0 && n.weight <= 1000.0, "weight {} was never written", n.weight);
            (n.id, NodeRecord { weight: n.weight as u32, draining: n.state == NodeState::Draining })
        })
        .collect()
}

/// Sends `op` to `member` and maps the outcome (see the module doc).
pub async fn call(http: &reqwest::Client, member: &str, op: &NodeOp, ids: &BTreeSet<String>, stale: bool) -> Recorded {
    let (method, url, body) = match op {
        NodeOp::Add { id, weight } => (
            Method::POST,
            format!("{member}/v1/nodes"),
            Some(serde_json::json!({"id": id, "addr": format!("http://{id}.lab:7200"), "weight": weight})),
        ),
        NodeOp::Update { id, weight, draining } => {
            let mut b = serde_json::Map::new();
            if let Some(w) = weight {
                b.insert("weight".into(), (*w).into());
            }
            if let Some(d) = draining {
                b.insert("state".into(), if *d { "draining" } else { "active" }.into());
            }
            (Method::PATCH, format!("{member}/v1/nodes/{id}"), Some(serde_json::Value::Object(b)))
        }
        NodeOp::Remove { id } => (Method::DELETE, format!("{member}/v1/nodes/{id}"), None),
        NodeOp::List => (Method::GET, format!("{member}/v1/nodes{}", if stale { "?stale=true" } else { "" }), None),
    };
    let read = matches!(op, NodeOp::List);
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(serde_json::to_vec(&b).expect("json"));
    }
    let sent = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    };
    let (status, text) = match sent.await {
        Ok(a) => a,
        // Never connected: the request was not sent.
        Err(e) if e.is_connect() => return Recorded::NoEffect(format!("connect: {e}")),
        Err(e) if read => return Recorded::NoEffect(format!("read failed: {e}")),
        Err(_) => return Recorded::Unknown,
    };
    if read {
        if status != 200 {
            return Recorded::NoEffect(format!("read answered {status}"));
        }
        let nodes: Vec<NodeView> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not a node list ({e}): {text}"));
        return Recorded::Answer(NodeAnswer::List(project(nodes, ids)));
    }
    if status == 200 || status == 201 {
        return Recorded::Answer(NodeAnswer::Done);
    }
    let kind = serde_json::from_str::<shardgate_meta_client::model::ErrorBody>(&text).map(|e| e.kind).unwrap_or_default();
    match (status, kind.as_str()) {
        (409, "duplicate_node") => Recorded::Answer(NodeAnswer::Duplicate),
        (404, "unknown_node") => Recorded::Answer(NodeAnswer::UnknownNode),
        (503, "write_timeout") | (500, _) => Recorded::Unknown,
        (503, "no_quorum" | "no_leader" | "not_leader" | "leader_unreachable") => Recorded::NoEffect(format!("503 {kind}")),
        _ => panic!("{op:?} via {url}: unexpected answer {status}: {text}"),
    }
}

/// The node id a write touches (`None` for a list).
pub fn op_id(op: &NodeOp) -> Option<&str> {
    match op {
        NodeOp::Add { id, .. } | NodeOp::Update { id, .. } | NodeOp::Remove { id } => Some(id),
        NodeOp::List => None,
    }
}

/// A small deterministic generator (xorshift64*), one per worker.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A random operation on `ids`: 35% list, 25% add, 20% update, 20% remove.
pub fn random_op(rng: &mut Rng, ids: &[String]) -> NodeOp {
    let id = ids[rng.below(ids.len() as u64) as usize].clone();
    let weight = 1 + rng.below(5) as u32;
    match rng.below(20) {
        0..7 => NodeOp::List,
        7..12 => NodeOp::Add { id, weight },
        12..16 => match rng.below(3) {
            0 => NodeOp::Update { id, weight: Some(weight), draining: None },
            1 => NodeOp::Update { id, weight: None, draining: Some(rng.below(2) == 0) },
            _ => NodeOp::Update { id, weight: Some(weight), draining: Some(rng.below(2) == 0) },
        },
        _ => NodeOp::Remove { id },
    }
}

/// One worker's recorded operations and counts.
pub struct WorkerLog {
    pub history: History,
    pub writes: Counts,
    pub reads: Counts,
    /// The first few reasons an operation was left out.
    pub failures: Vec<String>,
    /// Every write left out as "no effect": (client, call, return, write,
    /// why), shown next to a violation's window.
    pub left_out: Vec<LeftOut>,
}

/// A write left out of the history because the API said nothing was committed.
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub client: usize,
    pub call: u64,
    pub ret: u64,
    pub op: NodeOp,
    pub why: String,
}

/// Workers recording a history until stopped (or `limit` passes).
pub struct Recorders {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WorkerLog>>,
}

impl Recorders {
    /// Starts `workers` workers (client ids `first_client..`) in the current
    /// runtime (call it inside a lab runtime); each picks a random member
    /// of `members` per call and a random operation on `ids`, and projects
    /// the lists it reads onto `seen`. With `stale`, a worker only lists with
    /// `?stale=true` (the deliberately broken read path). `answered` counts
    /// the calls answered with a checked result.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        members: Vec<String>,
        ids: Vec<String>,
        seen: BTreeSet<String>,
        workers: usize,
        first_client: usize,
        origin: Instant,
        limit: Duration,
        answered: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        stale: bool,
    ) -> Recorders {
        let deadline = Instant::now() + limit;
        let tasks = (0..workers)
            .map(|w| {
                let client = first_client + w;
                let (members, ids, seen, answered, stop) = (members.clone(), ids.clone(), seen.clone(), answered.clone(), stop.clone());
                tokio::spawn(async move {
                    // Shorter than meta's write timeout (5 s): some calls
                    // end with an unknown outcome on purpose.
                    let http = http_client(Duration::from_secs(3));
                    let salt = ids.iter().flat_map(|i| i.bytes()).fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                    let mut rng = Rng::new(client as u64 * 7919 + salt);
                    let mut log = WorkerLog {
                        history: vec![],
                        writes: Counts::default(),
                        reads: Counts::default(),
                        failures: vec![],
                        left_out: vec![],
                    };
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let op = if stale { NodeOp::List } else { random_op(&mut rng, &ids) };
                        let member = &members[rng.below(members.len() as u64) as usize];
                        let at = nanos(origin);
                        let recorded = call(&http, member, &op, &seen, stale).await;
                        let counts = if matches!(op, NodeOp::List) { &mut log.reads } else { &mut log.writes };
                        match recorded {
                            Recorded::Answer(a) => {
                                counts.ok += 1;
                                log.history.push(Operation { client, input: op, call: at, returned: Some((nanos(origin), a)) });
                                answered.fetch_add(1, Ordering::Relaxed);
                                if stale {
                                    // A local read answers at once: pace it.
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                            Recorded::Unknown => {
                                counts.unknown += 1;
                                log.history.push(Operation { client, input: op, call: at, returned: None });
                            }
                            Recorded::NoEffect(why) => {
                                counts.failed += 1;
                                if log.failures.len() < 3 {
                                    log.failures.push(why.clone());
                                }
                                if !matches!(op, NodeOp::List) {
                                    log.left_out.push(LeftOut { client, call: at, ret: nanos(origin), op, why });
                                }
                                // Do not spin on a member that is down.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    log
                })
            })
            .collect();
        Recorders { stop, tasks }
    }

    /// Stops the workers and returns their logs (call it in the runtime
    /// that started them).
    pub async fn finish(self) -> Vec<WorkerLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.expect("recording worker"));
        }
        out
    }
}
