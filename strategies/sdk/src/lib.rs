//! Write a Shardgate partitioning strategy in plain Rust.
//!
//! A strategy implements [`Strategy`] and calls [`export_strategy!`] once;
//! built with `cargo build --release --target wasm32-wasip2`, the crate is a
//! WebAssembly component of the `shardgate:strategy` world (`wit/strategy.wit`),
//! ready for `shardgate strategy check` and `shardgate ctl strategy upload`.
//!
//! This crate is also the one Rust implementation of the contract's routing
//! semantics: [`key_hash`], [`Table::route`] (how the host indexes a slot
//! table or a hash ring). The host links it natively, so a table means the
//! same thing in the guest, in the host and in the tests.
//!
//! ```ignore
//! use shardgate_strategy_sdk::{export_strategy, Metadata, Node, Strategy, Table};
//!
//! struct First { n: u32 }
//! impl Strategy for First {
//!     fn metadata() -> Metadata { Metadata::new("first", "0.1.0", "every key on node 0") }
//!     fn validate_config(_: &str) -> Result<(), String> { Ok(()) }
//!     fn configure(_: &str, nodes: &[Node], _: u32) -> Result<Self, String> {
//!         Ok(First { n: nodes.len() as u32 })
//!     }
//!     fn route(&self, _key: &[u8], out: &mut Vec<u32>) { out.push(0) }
//! }
//! export_strategy!(First);
//! ```

/// A cache node as the strategy sees it (mirrors the WIT `node` record).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub weight: f64,
    pub zone: String,
}

impl Node {
    pub fn new(id: impl Into<String>, weight: f64, zone: impl Into<String>) -> Self {
        Node { id: id.into(), weight, zone: zone.into() }
    }
}

/// What a strategy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl Metadata {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Metadata { name: name.into(), version: version.into(), description: description.into() }
    }
}

/// A point on a hash ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingPoint {
    pub hash: u64,
    pub position: u32,
}

/// How the host routes keys (mirrors the WIT `routing-table` variant).
#[derive(Debug, Clone, PartialEq)]
pub enum Table {
    /// The host calls `route` for every key.
    PerKey,
    /// Row-major table of `width` positions per row.
    Slots { width: u32, entries: Vec<u32> },
    /// Points sorted by hash ascending.
    Ring(Vec<RingPoint>),
}

/// The key hash of the contract: XXH3-64, seed 0, over the raw key bytes.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A strong 64-bit mixer (the SplitMix64 finalizer), for deriving
/// independent hashes from (key hash, node hash) pairs.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Maps a 64-bit hash onto `[0, n)` by multiply-shift (Lemire's fastrange).
#[inline]
pub fn fastrange(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

/// A uniform float in (0, 1] from the top 53 bits of a hash; never 0, so
/// `ln` of it is finite.
#[inline]
pub fn unit_interval(hash: u64) -> f64 {
    ((hash >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// How many positions every answer must hold.
#[inline]
pub fn answer_width(replicas: u32, nodes: usize) -> usize {
    (replicas as usize).min(nodes)
}

impl Table {
    /// Routes a key hash by the table: pushes `want` distinct positions onto
    /// `out`, preference order. Returns false for `PerKey` (the strategy must
    /// be called) or when the table cannot answer (an empty table, or a ring
    /// with fewer than `want` distinct positions); the host validates tables
    /// when a strategy is configured, so that never happens at routing time.
    #[inline]
    pub fn route(&self, hash: u64, want: usize, out: &mut Vec<u32>) -> bool {
        match self {
            Table::PerKey => false,
            Table::Slots { width, entries } => {
                let width = *width as usize;
                if width == 0 || entries.len() < width {
                    return false;
                }
                let row = fastrange(hash, entries.len() / width) * width;
                out.extend_from_slice(&entries[row..row + want.min(width)]);
                want <= width
            }
            Table::Ring(points) => ring_walk(points, hash, want, out),
        }
    }
}

/// Walks a sorted ring from the first point at or after `hash`, collecting
/// `want` distinct positions.
#[inline]
pub fn ring_walk(points: &[RingPoint], hash: u64, want: usize, out: &mut Vec<u32>) -> bool {
    if points.is_empty() {
        return false;
    }
    let start = points.partition_point(|p| p.hash < hash);
    let base = out.len();
    for i in 0..points.len() {
        let p = points[(start + i) % points.len()].position;
        if !out[base..].contains(&p) {
            out.push(p);
            if out.len() - base == want {
                return true;
            }
        }
    }
    false
}

/// A partitioning strategy.
///
/// The host calls `configure` once per instance, then either indexes the
/// table returned by [`Strategy::table`] natively or calls `route` per key.
pub trait Strategy: Sized + 'static {
    /// Name, version, description.
    fn metadata() -> Metadata;
    /// Validate a TOML config with no nodes; the error names the bad key.
    fn validate_config(config: &str) -> Result<(), String>;
    /// Build the strategy for a non-empty node list and `replicas >= 1`.
    fn configure(config: &str, nodes: &[Node], replicas: u32) -> Result<Self, String>;
    /// A table the host can index without calling the strategy per key;
    /// `None` (the default) means every key is routed by [`Strategy::route`].
    fn table(&self) -> Option<Table> {
        None
    }
    /// Push min(replicas, nodes) distinct positions for `key` onto `out`,
    /// preference order.
    fn route(&self, key: &[u8], out: &mut Vec<u32>);
}

/// Parses a strategy's TOML config into `T`. The error names the strategy,
/// the line and the key, e.g. `rendezvous config: TOML parse error at line 1,
/// column 1 ... unknown field `slot``. Use `#[serde(deny_unknown_fields)]`.
pub fn parse_config<T: serde::de::DeserializeOwned>(strategy: &str, config: &str) -> Result<T, String> {
    toml::from_str(config).map_err(|e| {
        let message = e.message().trim_end().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let before = &config[..span.start.min(config.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{strategy} config: line {line}, column {column}: {message}")
            }
            None => format!("{strategy} config: {message}"),
        }
    })
}

pub mod hrw;

/// The default number of rows for strategies that tabulate a per-key
/// algorithm over hash slots. It must not depend on the node list: a key's
/// row is `fastrange(hash, rows)`, so changing the row count remaps almost
/// every key. 2^18 rows add a slot-sampling imbalance of about
/// sqrt(N / 2^18) (0.6% at 10 nodes, 2% at 100); raise `slots` for large
/// clusters.
pub const DEFAULT_SLOTS: u32 = 1 << 18;

/// The most rows a tabulated strategy may ask for (64 MiB at width 4).
pub const MAX_SLOTS: u32 = 1 << 22;

/// Tabulates a per-hash routing function over `rows` slots: row r holds
/// `route(slot_hash(r))`, where the slot hash spreads rows over the hash
/// space. Keys land on row `fastrange(key_hash(key), rows)`.
pub fn tabulate(rows: u32, width: usize, mut route: impl FnMut(u64, &mut Vec<u32>)) -> Table {
    let mut entries = Vec::with_capacity(rows as usize * width);
    for r in 0..rows as u64 {
        route(slot_hash(r), &mut entries);
    }
    Table::Slots { width: width as u32, entries }
}

/// The hash that stands for slot `row` when a strategy tabulates itself.
#[inline]
pub fn slot_hash(row: u64) -> u64 {
    mix64(row ^ 0x5bd1_e995_5bd1_e995)
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "strategy",
        pub_export_macro: true,
        default_bindings_module: "shardgate_strategy_sdk::bindings",
    });
}

/// The glue between the generated bindings and a [`Strategy`]; used by
/// [`export_strategy!`], not by strategy authors.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::*;
    use crate::bindings::shardgate::strategy::types as wit;
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static STATE: RefCell<Option<(Box<dyn Any>, usize)>> = const { RefCell::new(None) };
    }

    pub fn metadata<S: Strategy>() -> wit::Metadata {
        let m = S::metadata();
        wit::Metadata { name: m.name, version: m.version, description: m.description }
    }

    pub fn configure<S: Strategy>(config: String, nodes: Vec<wit::Node>, replicas: u32) -> Result<wit::RoutingTable, String> {
        let nodes: Vec<Node> = nodes.into_iter().map(|n| Node { id: n.id, weight: n.weight, zone: n.zone }).collect();
        if nodes.is_empty() {
            return Err("the node list is empty".into());
        }
        if replicas == 0 {
            return Err("replicas must be at least 1".into());
        }
        let strategy = S::configure(&config, &nodes, replicas)?;
        let table = match strategy.table() {
            None | Some(Table::PerKey) => wit::RoutingTable::PerKey,
            Some(Table::Slots { width, entries }) => wit::RoutingTable::Slots(wit::SlotTable { width, entries }),
            Some(Table::Ring(points)) => {
                wit::RoutingTable::Ring(points.into_iter().map(|p| wit::RingPoint { hash: p.hash, position: p.position }).collect())
            }
        };
        let width = answer_width(replicas, nodes.len());
        STATE.with(|s| *s.borrow_mut() = Some((Box::new(strategy), width)));
        Ok(table)
    }

    fn with_strategy<S: Strategy, R>(f: impl FnOnce(&S, usize) -> R) -> R {
        STATE.with(|s| {
            let state = s.borrow();
            let (strategy, width) = state.as_ref().expect("route called before configure");
            f(strategy.downcast_ref::<S>().expect("strategy type"), *width)
        })
    }

    pub fn route<S: Strategy>(key: Vec<u8>) -> Vec<u32> {
        with_strategy::<S, _>(|s, width| {
            let mut out = Vec::with_capacity(width);
            s.route(&key, &mut out);
            out
        })
    }

    pub fn route_batch<S: Strategy>(keys: Vec<u8>, ends: Vec<u32>) -> Vec<u32> {
        with_strategy::<S, _>(|s, width| {
            let mut out = Vec::with_capacity(width * ends.len());
            let mut start = 0usize;
            for end in ends {
                let end = end as usize;
                s.route(&keys[start..end], &mut out);
                start = end;
            }
            out
        })
    }
}

/// Exports a [`Strategy`] implementation as the component's `strategy` world.
/// Expands to nothing when not compiling for WebAssembly, so the same crate
/// builds natively for unit tests and benchmarks.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::shardgate::strategy::types as __wit;
            struct __ShardgateStrategy;
            impl $crate::bindings::Guest for __ShardgateStrategy {
                fn metadata() -> __wit::Metadata {
                    $crate::glue::metadata::<$strategy>()
                }
                fn validate_config(config: String) -> Result<(), String> {
                    <$strategy as $crate::Strategy>::validate_config(&config)
                }
                fn configure(config: String, nodes: Vec<__wit::Node>, replicas: u32) -> Result<__wit::RoutingTable, String> {
                    $crate::glue::configure::<$strategy>(config, nodes, replicas)
                }
                fn route(key: Vec<u8>) -> Vec<u32> {
                    $crate::glue::route::<$strategy>(key)
                }
                fn route_batch(keys: Vec<u8>, ends: Vec<u32>) -> Vec<u32> {
                    $crate::glue::route_batch::<$strategy>(keys, ends)
                }
            }
    $crate::bindings::export!(__ShardgateStrategy with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_xxh3_seed_0() {
        // Published XXH3-64 test vector for the empty input.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn fastrange_covers_range() {
        assert_eq!(fastrange(0, 10), 0);
        assert_eq!(fastrange(u64::MAX, 10), 9);
        assert_eq!(fastrange(u64::MAX / 2, 10), 4);
    }

    #[test]
    fn unit_interval_never_zero() {
        assert!(unit_interval(0) > 0.0);
        assert!(unit_interval(u64::MAX) <= 1.0);
    }

    #[test]
    fn slots_route_picks_row_by_fastrange() {
        let t = Table::Slots { width: 2, entries: vec![0, 1, 1, 2, 2, 0] };
        let mut out = vec![];
        assert!(t.route(0, 2, &mut out));
        assert_eq!(out, [0, 1]);
        out.clear();
        assert!(t.route(u64::MAX, 1, &mut out));
        assert_eq!(out, [2]);
    }

    #[test]
    fn ring_walk_wraps_and_skips_duplicates() {
        let ring = vec![RingPoint { hash: 10, position: 0 }, RingPoint { hash: 20, position: 0 }, RingPoint { hash: 30, position: 1 }];
        let mut out = vec![];
        assert!(ring_walk(&ring, 11, 2, &mut out));
        assert_eq!(out, [0, 1]);
        out.clear();
        assert!(ring_walk(&ring, 31, 2, &mut out));
        assert_eq!(out, [0, 1]);
        out.clear();
        assert!(!ring_walk(&ring, 0, 3, &mut out), "only two distinct positions");
    }

    #[test]
    fn config_errors_are_one_line_with_line_and_column() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            a: u32,
        }
        let e = parse_config::<C>("s", "\n  b = 1\n").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("s config: line 2, column 3: unknown field `b`"), "{e}");
    }

    #[test]
    fn per_key_table_does_not_route() {
        assert!(!Table::PerKey.route(1, 1, &mut vec![]));
    }
}
