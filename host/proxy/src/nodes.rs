//! The node board: every cache node the proxy knows ([`NodeBoard`], one
//! [`NodeHandle`] per node id), its connection pool ([`PoolSettings`], the
//! [`crate::h1`] pool and [`crate::pipeline`] pipes inside each handle),
//! and its health: per-node passive error counting, a circuit breaker,
//! ejection from local routing, and the active checker ([`run_checker`])
//! that probes every node (`GET /readyz`) and brings ejected nodes back.
//!
//! Where it sits in the request flow: below everything that forwards.
//! [`crate::routing`] maps epoch positions to handles; owner choice in
//! [`crate::replication`] asks [`NodeHandle::is_routable`] (one atomic
//! load) to skip ejected owners; the forwarder ([`crate::upstream`])
//! reports every upstream outcome to the board; [`run_checker`] runs beside
//! the server with the board, its interval and a probe (the forwarder's
//! health check). Breaker states: closed (routed), open (ejected; no
//! requests), half-open (ejected, one probe in flight). An ejected node is
//! probed after `proxy.probe_backoff_min`, doubling up to
//! `proxy.probe_backoff_max` after every failed probe; one successful probe
//! closes the breaker.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::metrics::{NodeLabels, ProxyMetrics};

/// Circuit breaker state of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Breaker {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Breaker {
    fn from_u8(v: u8) -> Breaker {
        match v {
            1 => Breaker::Open,
            2 => Breaker::HalfOpen,
            _ => Breaker::Closed,
        }
    }
}

struct Probing {
    next_check: Instant,
    probe_delay: Duration,
    last_error: Option<String>,
    ejected_at: Option<Instant>,
}

/// One cache node: its address and health, shared by every routing epoch
/// that lists it.
pub struct NodeHandle {
    pub id: String,
    /// Base URL, `http://host:port`.
    pub addr: String,
    breaker: AtomicU8,
    failures: AtomicU32,
    check_in_flight: AtomicBool,
    probing: Mutex<Probing>,
    /// Idle connections for the direct upstream client (`None`: the address
    /// is not `http://host:port`, every request fails).
    pub(crate) pool: Option<crate::h1::NodePool>,
    pub(crate) latency: Histogram,
    pub(crate) errors: Counter,
    ejections: Counter,
    breaker_gauge: Gauge,
}

/// Health of one node for `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeHealth {
    pub id: String,
    pub addr: String,
    pub routable: bool,
    pub breaker: Breaker,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub ejected_for_ms: Option<u64>,
}

impl NodeHandle {
    /// True unless the node is ejected (breaker open or half-open).
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.breaker.load(Ordering::Relaxed) == Breaker::Closed as u8
    }

    pub fn breaker(&self) -> Breaker {
        Breaker::from_u8(self.breaker.load(Ordering::Relaxed))
    }

    fn set_breaker(&self, b: Breaker) {
        self.breaker.store(b as u8, Ordering::Relaxed);
        self.breaker_gauge.set(b as i64);
    }

    pub fn health(&self) -> NodeHealth {
        let p = self.probing.lock().unwrap_or_else(|e| e.into_inner());
        NodeHealth {
            id: self.id.clone(),
            addr: self.addr.clone(),
            routable: self.is_routable(),
            breaker: self.breaker(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            last_error: p.last_error.clone(),
            ejected_for_ms: p.ejected_at.map(|t| t.elapsed().as_millis() as u64),
        }
    }
}

/// Connection pool settings for new node handles.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body: usize,
    /// Pipelined connections per node for every forwarded request (0: none).
    pub pipes: usize,
    /// `proxy.request_timeout`: a pipe with requests waiting fails after
    /// this long without an answer; a request on a connection of its own
    /// gets this long in all.
    pub stall_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle: 64,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(1),
            max_body: 64 << 20,
            pipes: 0,
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// Every node the proxy currently knows, keyed by id, and the health policy.
pub struct NodeBoard {
    nodes: Mutex<HashMap<String, Arc<NodeHandle>>>,
    pool: PoolSettings,
    eject_after: u32,
    probe_min: Duration,
    probe_max: Duration,
    /// Woken whenever a node is ejected or restored.
    pub(crate) changed: Notify,
}

impl NodeBoard {
    pub fn new(eject_after: u32, probe_min: Duration, probe_max: Duration, pool: PoolSettings) -> Self {
        NodeBoard { nodes: Mutex::new(HashMap::new()), pool, eject_after, probe_min, probe_max, changed: Notify::new() }
    }

    /// The handle for (id, addr): the existing one, or a fresh healthy one
    /// when the node is new or moved to another address.
    pub fn handle(&self, id: &str, addr: &str, metrics: &ProxyMetrics) -> Arc<NodeHandle> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = nodes.get(id)
            && h.addr == addr
        {
            return h.clone();
        }
        let labels = NodeLabels { node: id.to_string() };
        let handle = Arc::new(NodeHandle {
            id: id.to_string(),
            addr: addr.to_string(),
            breaker: AtomicU8::new(Breaker::Closed as u8),
            failures: AtomicU32::new(0),
            check_in_flight: AtomicBool::new(false),
            pool: crate::h1::NodePool::with_pipes(
                addr,
                self.pool.max_idle,
                self.pool.idle_timeout,
                self.pool.connect_timeout,
                self.pool.max_body,
                self.pool.pipes,
                self.pool.stall_timeout,
                crate::pipeline::PipeCounts {
                    requests: metrics.pipelined_requests.get_or_create(&labels).clone(),
                    writes: metrics.pipelined_writes.get_or_create(&labels).clone(),
                },
            )
            .ok(),
            probing: Mutex::new(Probing { next_check: Instant::now(), probe_delay: self.probe_min, last_error: None, ejected_at: None }),
            latency: metrics.upstream_seconds.get_or_create(&labels).clone(),
            errors: metrics.upstream_errors.get_or_create(&labels).clone(),
            ejections: metrics.ejections.get_or_create(&labels).clone(),
            breaker_gauge: metrics.breaker_state.get_or_create(&labels).clone(),
        });
        handle.breaker_gauge.set(0);
        nodes.insert(id.to_string(), handle.clone());
        handle
    }

    /// Forgets nodes not in `keep` (ids).
    pub fn retain(&self, keep: &[&str]) {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| keep.contains(&id.as_str()));
    }

    pub fn all(&self) -> Vec<Arc<NodeHandle>> {
        let mut v: Vec<_> = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// An upstream request to `node` succeeded (any answer below 500).
    #[inline]
    pub fn success(&self, node: &NodeHandle) {
        if node.failures.load(Ordering::Relaxed) != 0 {
            node.failures.store(0, Ordering::Relaxed);
        }
    }

    /// An upstream request or health check of `node` failed.
    pub fn failure(&self, node: &NodeHandle, reason: &str) {
        let n = node.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p = node.probing.lock().unwrap_or_else(|e| e.into_inner());
        p.last_error = Some(reason.to_string());
        if n >= self.eject_after && node.is_routable() {
            node.set_breaker(Breaker::Open);
            node.ejections.inc();
            p.ejected_at = Some(Instant::now());
            p.probe_delay = self.probe_min;
            p.next_check = Instant::now() + self.probe_min;
            drop(p);
            warn!(node = %node.id, addr = %node.addr, failures = n, error = %reason, "ejecting node from routing");
            self.changed.notify_one();
        }
    }

    fn probe_result(&self, node: &NodeHandle, ok: Result<(), String>, interval: Duration) {
        let mut p = node.probing.lock().unwrap_or_else(|e| e.into_inner());
        match ok {
            Ok(()) => {
                node.failures.store(0, Ordering::Relaxed);
                p.next_check = Instant::now() + interval;
                if !node.is_routable() {
                    let down = p.ejected_at.take().map(|t| t.elapsed());
                    p.probe_delay = self.probe_min;
                    node.set_breaker(Breaker::Closed);
                    drop(p);
                    info!(node = %node.id, down_ms = down.map(|d| d.as_millis() as u64), "node recovered; routing to it again");
                    self.changed.notify_one();
                }
            }
            Err(reason) => {
                if node.is_routable() {
                    p.next_check = Instant::now() + interval;
                    drop(p);
                    self.failure(node, &reason);
                } else {
                    node.set_breaker(Breaker::Open);
                    p.probe_delay = (p.probe_delay * 2).min(self.probe_max);
                    p.next_check = Instant::now() + p.probe_delay;
                    p.last_error = Some(reason);
                }
            }
        }
    }
}

/// Runs active health checks until the task is dropped: every `interval`
/// (`proxy.health_interval`) for routed nodes, on the backoff schedule for
/// ejected ones. `probe` checks one node (the forwarder's
/// `Upstream::check`); it runs in a task of its own per check.
pub(crate) async fn run_checker<P, F>(board: Arc<NodeBoard>, interval: Duration, probe: P)
where
    P: Fn(Arc<NodeHandle>) -> F,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let tick = interval.min(board.probe_min).min(Duration::from_millis(100));
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        for node in board.all() {
            let due = node.probing.lock().unwrap_or_else(|e| e.into_inner()).next_check <= now;
            if !due || node.check_in_flight.swap(true, Ordering::Acquire) {
                continue;
            }
            if !node.is_routable() {
                node.set_breaker(Breaker::HalfOpen);
            }
            let check = probe(node.clone());
            let board = board.clone();
            tokio::spawn(async move {
                let result = check.await;
                board.probe_result(&node, result, interval);
                node.check_in_flight.store(false, Ordering::Release);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(node: &NodeHandle) -> Duration {
        node.probing.lock().unwrap().probe_delay
    }

    #[test]
    fn ejects_after_consecutive_failures_and_backs_off_probes() {
        let metrics = ProxyMetrics::new();
        let board = NodeBoard::new(3, Duration::from_millis(100), Duration::from_millis(400), PoolSettings::default());
        let n = board.handle("n1", "http://127.0.0.1:1", &metrics);
        board.failure(&n, "refused");
        board.failure(&n, "refused");
        board.success(&n);
        board.failure(&n, "refused");
        board.failure(&n, "refused");
        assert!(n.is_routable(), "a success in between resets the count");
        board.failure(&n, "refused");
        assert!(!n.is_routable());
        assert_eq!(n.breaker(), Breaker::Open);
        assert_eq!(n.health().last_error.as_deref(), Some("refused"));
        assert!(metrics.render().contains("shardgate_proxy_ejections_total{node=\"n1\"} 1"));
        assert!(metrics.render().contains("shardgate_proxy_breaker_state{node=\"n1\"} 1"));
        // Failed probes double the delay up to the maximum.
        let interval = Duration::from_secs(1);
        for want in [200, 400, 400] {
            board.probe_result(&n, Err("still down".into()), interval);
            assert_eq!((delay(&n), n.breaker()), (Duration::from_millis(want), Breaker::Open));
        }
        board.probe_result(&n, Ok(()), interval);
        assert!(n.is_routable());
        assert_eq!((delay(&n), n.health().consecutive_failures), (Duration::from_millis(100), 0));
        assert!(metrics.render().contains("shardgate_proxy_breaker_state{node=\"n1\"} 0"));
        // Active check failures on a routed node count like request failures.
        for _ in 0..3 {
            board.probe_result(&n, Err("health check answered HTTP 503".into()), interval);
        }
        assert!(!n.is_routable());
    }

    #[test]
    fn handles_are_shared_per_id_and_renewed_on_a_new_address() {
        let metrics = ProxyMetrics::new();
        let board = NodeBoard::new(1, Duration::from_millis(100), Duration::from_millis(400), PoolSettings::default());
        let a = board.handle("n1", "http://127.0.0.1:1", &metrics);
        board.failure(&a, "down");
        assert!(Arc::ptr_eq(&a, &board.handle("n1", "http://127.0.0.1:1", &metrics)));
        let moved = board.handle("n1", "http://127.0.0.1:2", &metrics);
        assert!(moved.is_routable() && !Arc::ptr_eq(&a, &moved));
        board.retain(&[]);
        assert!(board.all().is_empty());
    }
}
