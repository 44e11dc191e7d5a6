//! The node's Prometheus metrics, in a registry owned by one node instance
//! (several nodes run in one process in tests and `shardgate dev`, so there
//! is no global recorder). Handlers bump counters and time requests; the
//! gauges are read from the store when `/metrics` is scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::time::Instant;

use crate::store::Store;

/// Times one request (see [`NodeMetrics::start`]).
pub struct RequestTimer<'a> {
    metrics: &'a NodeMetrics,
    endpoint: Endpoint,
    start: Instant,
}

impl RequestTimer<'_> {
    /// Re-labels the request (a GET handler serving HEAD).
    pub fn set_endpoint(&mut self, endpoint: Endpoint) {
        self.endpoint = endpoint;
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics.latency[self.endpoint as usize].observe(self.start.elapsed().as_secs_f64());
        self.metrics.requests_in_flight.dec();
    }
}

/// Which endpoint a request went to (the `endpoint` label of the latency
/// histogram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Get,
    Head,
    Put,
    Delete,
    BatchGet,
    BatchPut,
    Patch,
}

impl Endpoint {
    const ALL: [Endpoint; 7] =
        [Endpoint::Get, Endpoint::Head, Endpoint::Put, Endpoint::Delete, Endpoint::BatchGet, Endpoint::BatchPut, Endpoint::Patch];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Get => "get",
            Endpoint::Head => "head",
            Endpoint::Put => "put",
            Endpoint::Delete => "delete",
            Endpoint::BatchGet => "batch_get",
            Endpoint::BatchPut => "batch_put",
            Endpoint::Patch => "patch",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric of one node.
pub struct NodeMetrics {
    registry: Registry,
    pub hits: Counter,
    pub misses: Counter,
    pub sets: Counter,
    pub deletes: Counter,
    /// TTLs changed by `PATCH` (`EXPIRE`, `PERSIST`, `GETEX`).
    pub touches: Counter,
    pub evictions: Counter,
    pub expirations: Counter,
    pub condition_failures: Counter,
    pub connections_rejected: Counter,
    pub unauthorized: Counter,
    pub forbidden: Counter,
    pub connections_open: Gauge,
    /// `[node] register`: 0 not yet, 1 registered, -1 refused, 2 draining,
    /// 3 removed (set when `/metrics` is read).
    pub registered: Gauge,
    requests_in_flight: Gauge,
    bytes_used: Gauge,
    items: Gauge,
    memory_limit: Gauge,
    latency: [Histogram; 7],
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardgate_node");
        let m = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let hits = m(&mut registry, "hits", "Reads that found a live value (per key in batches)");
        let misses = m(&mut registry, "misses", "Reads that found no live value (per key in batches)");
        let sets = m(&mut registry, "sets", "Values stored");
        let deletes = m(&mut registry, "deletes", "Values deleted by request");
        let touches = m(&mut registry, "touches", "TTLs changed by PATCH");
        let evictions = m(&mut registry, "evictions", "Entries evicted to stay within node.memory_limit");
        let expirations = m(&mut registry, "expirations", "Entries removed because their TTL passed");
        let condition_failures = m(&mut registry, "condition_failures", "Conditional writes refused (answered 412)");
        let connections_rejected = m(&mut registry, "connections_rejected", "Connections refused because node.max_connections were open");
        let unauthorized = m(&mut registry, "unauthorized", "Data requests refused without a bearer token (401, node.data_token set)");
        let forbidden = m(&mut registry, "forbidden", "Data requests refused with a token other than node.data_token (403)");
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let connections_open = g(&mut registry, "connections_open", "Client connections open");
        let registered = g(
            &mut registry,
            "registered",
            "node.register: 0 not yet, 1 registered, -1 refused (another live node has the id or address), 2 draining, 3 removed",
        );
        let requests_in_flight = g(&mut registry, "requests_in_flight", "Key and batch requests being handled");
        let bytes_used = g(&mut registry, "bytes_used", "Weighed bytes held (keys, values, per-entry overhead)");
        let items = g(&mut registry, "items", "Entries held");
        let memory_limit = g(&mut registry, "memory_limit_bytes", "node.memory_limit");
        let family = Family::<Labels, Histogram, _>::new_with_constructor(|| {
            // 10 us .. ~1.3 s
            Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
        });
        registry.register("request_duration_seconds", "Time from request head to response head, by endpoint", family.clone());
        let latency = Endpoint::ALL.map(|e| family.get_or_create_owned(&vec![("endpoint", e.label())]));
        NodeMetrics {
            registry,
            hits,
            misses,
            sets,
            deletes,
            touches,
            evictions,
            expirations,
            condition_failures,
            connections_rejected,
            unauthorized,
            forbidden,
            connections_open,
            registered,
            requests_in_flight,
            bytes_used,
            items,
            memory_limit,
            latency,
        }
    }

    /// Starts timing a request; the returned guard records its duration
    /// and leaves the in-flight gauge when dropped.
    pub fn start(&self, endpoint: Endpoint) -> RequestTimer<'_> {
        self.requests_in_flight.inc();
        RequestTimer { metrics: self, endpoint, start: Instant::now() }
    }

    /// Prometheus text exposition, with the store gauges brought up to date
    /// (the store's counts are exact at every instant).
    pub fn render(&self, store: &Store) -> String {
        self.bytes_used.set(store.weighted_size() as i64);
        self.items.set(store.entry_count() as i64);
        self.memory_limit.set(store.memory_limit() as i64);
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
