//! The proxy's Prometheus metrics, in a registry owned by one proxy instance
//! (several proxies run in one process in tests and `shardgate dev`, so
//! there is no global recorder). Handlers count requests and routing time;
//! the forwarder times upstream calls per node; health, the routing follower
//! and the fault tracker count ejections, swaps, migration hits, faults and
//! fallbacks. Served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of `shardgate_proxy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

/// Label set of per-node metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

/// Label set of `shardgate_proxy_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `unauthorized` (401), `forbidden` (403), `rate_limited` (429) or
    /// `too_many_connections` (503).
    pub reason: &'static str,
}

/// Label set of the RESP command metrics: the command's name, lower case
/// (one of the commands the proxy serves, or `unknown`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
}

/// Every metric of one proxy instance.
pub struct ProxyMetrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_seconds: Family<NodeLabels, Histogram>,
    pub upstream_errors: Family<NodeLabels, Counter>,
    pub ejections: Family<NodeLabels, Counter>,
    /// 0 closed (routed), 1 open (ejected), 2 half-open (probing).
    pub breaker_state: Family<NodeLabels, Gauge>,
    pub epoch: Gauge,
    pub swaps: Counter,
    pub swap_failures: Counter,
    /// Reports to a meta member (`POST /v1/proxies/report`) that failed.
    pub meta_report_failures: Counter,
    pub migration_lookups: Counter,
    pub migration_hits: Counter,
    pub strategy_faults: Counter,
    pub fallbacks: Counter,
    pub fallback_active: Gauge,
    pub routing_nanoseconds: Counter,
    pub routed_keys: Counter,
    pub read_retries: Counter,
    pub detoured_keys: Counter,
    pub refused: Family<RefusedLabels, Counter>,
    pub connections_open: Gauge,
    pub pipelined_requests: Family<NodeLabels, Counter>,
    pub pipelined_writes: Family<NodeLabels, Counter>,
    /// Seconds since the meta watch last heard from a member with a leader
    /// (set when `/metrics` is read).
    pub meta_staleness_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Writes refused because the routing may be stale (`proxy.max_staleness`).
    pub stale_writes_refused: Counter,
    /// RESP commands served, by command.
    pub resp_commands: Family<CommandLabels, Counter>,
    /// RESP commands answered with an error, by command.
    pub resp_errors: Family<CommandLabels, Counter>,
    /// Time from a RESP command parsed to its reply ready, by command.
    pub resp_seconds: Family<CommandLabels, Histogram>,
}

/// The RESP metrics of one command, looked up once (a family lookup
/// hashes the labels under a lock: three per command were ~2% of a
/// pipelined GET's CPU).
#[derive(Clone, Debug)]
pub struct CommandMetrics {
    pub commands: Counter,
    pub errors: Counter,
    pub seconds: Histogram,
}

impl ProxyMetrics {
    /// The handles of `command`'s series in the RESP families.
    pub fn resp_command(&self, command: &'static str) -> CommandMetrics {
        let labels = CommandLabels { command };
        CommandMetrics {
            commands: self.resp_commands.get_or_create(&labels).clone(),
            errors: self.resp_errors.get_or_create(&labels).clone(),
            seconds: self.resp_seconds.get_or_create(&labels).clone(),
        }
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardgate_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Client requests by route and status", requests.clone());
        let upstream_seconds =
            Family::<NodeLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)));
        registry.register("upstream_seconds", "Latency of upstream requests to a node", upstream_seconds.clone());
        let upstream_errors = Family::<NodeLabels, Counter>::default();
        registry.register("upstream_errors", "Upstream requests that failed (connection, timeout, 5xx)", upstream_errors.clone());
        let ejections = Family::<NodeLabels, Counter>::default();
        registry.register("ejections", "Times a node was ejected from routing", ejections.clone());
        let breaker_state = Family::<NodeLabels, Gauge>::default();
        registry.register("breaker_state", "Circuit breaker per node: 0 closed, 1 open, 2 half-open", breaker_state.clone());
        let epoch = Gauge::default();
        registry.register("epoch", "Routing epoch serving requests", epoch.clone());
        let swaps = Counter::default();
        registry.register("swaps", "Routing states installed", swaps.clone());
        let meta_report_failures = Counter::default();
        registry.register("meta_report_failures", "Reports of the served epoch to a meta member that failed", meta_report_failures.clone());
        let swap_failures = Counter::default();
        registry.register(
            "swap_failures",
            "Routing states that could not be installed (fetch, compile or configure failed)",
            swap_failures.clone(),
        );
        let migration_lookups = Counter::default();
        registry.register(
            "migration_lookups",
            "Reads that missed on a new owner and were tried on the previous owner",
            migration_lookups.clone(),
        );
        let migration_hits = Counter::default();
        registry.register("migration_hits", "Migration lookups that found the value on the previous owner", migration_hits.clone());
        let strategy_faults = Counter::default();
        registry.register(
            "strategy_faults",
            "Strategy calls that trapped, ran out of budget or answered out of range",
            strategy_faults.clone(),
        );
        let fallbacks = Counter::default();
        registry.register("fallbacks", "Times the proxy fell back to the last routing state that worked", fallbacks.clone());
        let fallback_active = Gauge::default();
        registry.register("fallback_active", "1 while serving a fallback routing state", fallback_active.clone());
        let routing_nanoseconds = Counter::default();
        registry.register("routing_nanoseconds", "Time spent routing keys with the strategy, in nanoseconds", routing_nanoseconds.clone());
        let routed_keys = Counter::default();
        registry.register("routed_keys", "Keys routed with the strategy", routed_keys.clone());
        let read_retries = Counter::default();
        registry.register("read_retries", "Reads retried on the next owner", read_retries.clone());
        let detoured_keys = Counter::default();
        registry.register("detoured_keys", "Keys routed to the next owner because all their owners were ejected", detoured_keys.clone());
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register("refused", "Client requests or connections refused by access control or limits, by reason", refused.clone());
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections being served", connections_open.clone());
        let pipelined_requests = Family::<NodeLabels, Counter>::default();
        registry.register("pipelined_requests", "Requests sent to a node on a pipelined connection", pipelined_requests.clone());
        let pipelined_writes = Family::<NodeLabels, Counter>::default();
        registry.register("pipelined_writes", "Writes that carried them (requests / writes = the mean batch)", pipelined_writes.clone());
        let meta_staleness_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "meta_staleness_seconds",
            "Seconds since the meta watch last heard from a member with a leader (how stale the routing may be)",
            meta_staleness_seconds.clone(),
        );
        let stale_writes_refused = Counter::default();
        registry.register(
            "stale_writes_refused",
            "Writes refused because the routing may be stale (proxy.max_staleness)",
            stale_writes_refused.clone(),
        );
        let resp_commands = Family::<CommandLabels, Counter>::default();
        registry.register("resp_commands", "RESP commands served, by command", resp_commands.clone());
        let resp_errors = Family::<CommandLabels, Counter>::default();
        registry.register("resp_errors", "RESP commands answered with an error, by command", resp_errors.clone());
        let resp_seconds =
            Family::<CommandLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_01, 2.0, 18)));
        registry.register("resp_command_seconds", "Time from a RESP command parsed to its reply ready, by command", resp_seconds.clone());
        ProxyMetrics {
            resp_commands,
            resp_errors,
            resp_seconds,
            meta_staleness_seconds,
            stale_writes_refused,
            pipelined_requests,
            pipelined_writes,
            registry,
            requests,
            upstream_seconds,
            upstream_errors,
            ejections,
            breaker_state,
            epoch,
            swaps,
            swap_failures,
            meta_report_failures,
            migration_lookups,
            migration_hits,
            strategy_faults,
            fallbacks,
            fallback_active,
            routing_nanoseconds,
            routed_keys,
            read_retries,
            detoured_keys,
            refused,
            connections_open,
        }
    }

    /// Counts one client request.
    pub fn request(&self, route: &'static str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// Counts one refusal (see [`RefusedLabels`]).
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
