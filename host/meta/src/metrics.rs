//! Prometheus metrics of one meta member (`GET /metrics`), in a registry
//! owned by that member: several members run in one process in tests and in
//! `shardgate dev`, so there is no global recorder.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::types::TypeConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// The member's metrics and their registry.
pub struct MetaMetrics {
    registry: Registry,
    /// Writes handled by this member as leader, by outcome: committed,
    /// rejected, no_quorum, timeout.
    pub writes: Family<OutcomeLabel, Counter>,
    /// Requests this member forwarded to the leader.
    pub forwarded: Counter,
    /// Strategy uploads and routing changes refused by admission.
    pub admission_refused: Counter,
    /// Seconds from proposing a write to its apply, on the leader.
    pub commit_seconds: Histogram,
    /// Open `/v1/watch` streams.
    pub watch_streams: Gauge,
    /// Admin requests and Raft RPCs refused by `meta.admin_token`, by
    /// outcome: unauthorized (no token), forbidden (another token).
    pub auth_refused: Family<OutcomeLabel, Counter>,
    /// Requests refused by a limit, by outcome: body_timeout
    /// (`meta.body_read_timeout`, 408), body_too_large (413), busy_preview
    /// (`meta.max_concurrent_previews`, 503), busy_admission
    /// (`meta.max_concurrent_admissions`, 503).
    pub limited: Family<OutcomeLabel, Counter>,
    /// Open client connections (under `meta.max_connections`).
    pub connections_open: Gauge,
    /// Connections over `meta.max_connections`, answered 503 and closed.
    pub connections_rejected: Counter,
    /// `/v1/watch` streams refused (outcome `refused`) or ended (`closed`)
    /// because this member heard from no leader within the election timeout.
    pub watch_no_leader: Family<OutcomeLabel, Counter>,
    /// Proxy reports received (`POST /v1/proxies/report`), by outcome:
    /// kept, bad_request, too_many_proxies.
    pub proxy_reports: Family<OutcomeLabel, Counter>,
    /// Proxies this member keeps (reported within the TTL).
    pub proxies: Gauge,
    term: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    epoch: Gauge,
}

impl Default for MetaMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shardgate_meta");
        let writes = Family::<OutcomeLabel, Counter>::default();
        registry.register("writes", "Writes handled as leader, by outcome", writes.clone());
        let forwarded = Counter::default();
        registry.register("forwarded", "Requests forwarded to the leader", forwarded.clone());
        let admission_refused = Counter::default();
        registry.register("admission_refused", "Strategy uploads and routing changes refused by admission", admission_refused.clone());
        let commit_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        registry.register("commit_seconds", "Seconds from proposing a write to its apply (leader)", commit_seconds.clone());
        let watch_streams = Gauge::default();
        registry.register("watch_streams", "Open /v1/watch streams", watch_streams.clone());
        let auth_refused = Family::<OutcomeLabel, Counter>::default();
        registry.register("auth_refused", "Admin requests and Raft RPCs refused by meta.admin_token, by outcome", auth_refused.clone());
        let limited = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "limited",
            "Requests refused by a limit (body_read_timeout, body size, concurrency), by outcome",
            limited.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("connections_open", "Open client connections", connections_open.clone());
        let connections_rejected = Counter::default();
        registry.register("connections_rejected", "Connections over meta.max_connections, answered 503", connections_rejected.clone());
        let watch_no_leader = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "watch_no_leader",
            "/v1/watch streams refused or ended because no leader was heard from within meta.election_timeout, by outcome",
            watch_no_leader.clone(),
        );
        let proxy_reports = Family::<OutcomeLabel, Counter>::default();
        registry.register("proxy_reports", "Proxy reports received, by outcome", proxy_reports.clone());
        let proxies = Gauge::default();
        registry.register("proxies", "Proxies kept (reported within the TTL)", proxies.clone());
        let term = Gauge::default();
        registry.register("raft_term", "Current Raft term", term.clone());
        let is_leader = Gauge::default();
        registry.register("raft_is_leader", "1 when this member is the leader", is_leader.clone());
        let last_log_index = Gauge::default();
        registry.register("raft_last_log_index", "Index of the last log entry", last_log_index.clone());
        let applied_index = Gauge::default();
        registry.register("raft_applied_index", "Index of the last applied entry", applied_index.clone());
        let epoch = Gauge::default();
        registry.register("routing_epoch", "Routing epoch of this member's state machine", epoch.clone());
        Self {
            registry,
            writes,
            forwarded,
            admission_refused,
            commit_seconds,
            watch_streams,
            auth_refused,
            limited,
            connections_open,
            connections_rejected,
            watch_no_leader,
            proxy_reports,
            proxies,
            term,
            is_leader,
            last_log_index,
            applied_index,
            epoch,
        }
    }
}

impl MetaMetrics {
    pub fn write(&self, outcome: &str) {
        self.writes.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// Counts a proxy report by outcome.
    pub fn proxy_report(&self, outcome: &str) {
        self.proxy_reports.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// Counts a request refused by a limit (see [`MetaMetrics::limited`]).
    pub fn limited(&self, outcome: &str) {
        self.limited.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// What the accept loop reports connections to.
    pub fn connections(&self) -> ConnectionCounts {
        ConnectionCounts { open: self.connections_open.clone(), rejected: self.connections_rejected.clone() }
    }

    /// Refresh the Raft gauges and encode everything in the text format.
    pub fn render(&self, m: &openraft::RaftMetrics<TypeConfig>, epoch: u64) -> String {
        self.term.set(m.current_term as i64);
        self.is_leader.set(i64::from(m.current_leader == Some(m.id)));
        self.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        self.applied_index.set(m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0) as i64);
        self.epoch.set(epoch as i64);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# metrics encoding failed: {e}\n");
        }
        out
    }
}

/// The connection metrics of a [`MetaMetrics`], for the accept loop
/// ([`shardgate_role::serve::serve`]).
pub struct ConnectionCounts {
    open: Gauge,
    rejected: Counter,
}

impl shardgate_role::serve::ConnectionMetrics for ConnectionCounts {
    fn opened(&self) {
        self.open.inc();
    }
    fn closed(&self) {
        self.open.dec();
    }
    fn rejected(&self) {
        self.rejected.inc();
    }
}
