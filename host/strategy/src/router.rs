//! A configured strategy: the thing the proxy routes keys with.
//!
//! [`Strategy::configure`] calls the component's `configure` once, checks the
//! routing table it returns, and yields a [`Router`]. Table strategies are
//! then routed natively (one hash and an index or a binary search, no
//! WebAssembly call per key); per-key strategies are called through a pool
//! of configured instances, one per concurrent caller, each call under the
//! fuel budget. Every answer is checked: exactly `width` distinct positions,
//! each in range.

use crate::error::StrategyError;
use crate::sandbox::{Instance, Strategy};
use shardgate_strategy_sdk::{Node as NodeSpec, Table, answer_width, key_hash};
use std::sync::{Arc, Mutex};

/// The routing form a router uses, for reports and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    PerKey,
    Slots,
    Ring,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::PerKey => "per-key",
            TableKind::Slots => "slots",
            TableKind::Ring => "ring",
        })
    }
}

/// A strategy configured with (config, nodes, replicas). Cheap to clone;
/// safe to share across threads.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    strategy: Strategy,
    config: String,
    nodes: Vec<NodeSpec>,
    replicas: u32,
    width: usize,
    table: Table,
    /// Configured instances for per-key routing; empty for table routing.
    pool: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("strategy", &self.inner.strategy)
            .field("nodes", &self.inner.nodes.len())
            .field("replicas", &self.inner.replicas)
            .field("table", &self.table_kind())
            .finish()
    }
}

fn validate_nodes(nodes: &[NodeSpec], max_nodes: usize) -> Result<(), StrategyError> {
    if nodes.is_empty() {
        return Err(StrategyError::BadNodes("the node list is empty: add at least one node".into()));
    }
    if nodes.len() > max_nodes {
        return Err(StrategyError::BadNodes(format!("{} nodes, over the limit of {max_nodes} (max_nodes)", nodes.len())));
    }
    for (i, n) in nodes.iter().enumerate() {
        if n.id.is_empty() {
            return Err(StrategyError::BadNodes(format!("node at position {i} has an empty id")));
        }
        if !(n.weight.is_finite() && n.weight > 0.0) {
            return Err(StrategyError::BadNodes(format!("node {} has weight {}; weights must be finite and > 0", n.id, n.weight)));
        }
        if nodes[..i].iter().any(|m| m.id == n.id) {
            return Err(StrategyError::BadNodes(format!("node id {} appears twice", n.id)));
        }
    }
    Ok(())
}

/// Checks one answer: exactly `width` distinct positions below `n`.
#[inline]
fn check_answer(answer: &[u32], width: usize, n: usize) -> Result<(), StrategyError> {
    let bad = |reason: String| Err(StrategyError::BadAnswer { answer: answer.to_vec(), reason });
    if answer.len() != width {
        return bad(format!("expected {width} positions, got {}", answer.len()));
    }
    for (i, &p) in answer.iter().enumerate() {
        if p as usize >= n {
            return bad(format!("position {p} is out of range: there are {n} nodes"));
        }
        if answer[..i].contains(&p) {
            return bad(format!("position {p} appears twice"));
        }
    }
    Ok(())
}

fn check_table(table: &Table, width: usize, n: usize, max_entries: usize) -> Result<(), StrategyError> {
    let bad = |m: String| Err(StrategyError::BadTable(m));
    match table {
        Table::PerKey => Ok(()),
        Table::Slots { width: w, entries } => {
            if *w as usize != width {
                return bad(format!("slot table width is {w}, expected min(replicas, nodes) = {width}"));
            }
            if entries.is_empty() || entries.len() % width != 0 {
                return bad(format!("slot table has {} entries, not a positive multiple of its width {width}", entries.len()));
            }
            if entries.len() > max_entries {
                return bad(format!("slot table has {} entries, over the limit of {max_entries} (max_table_entries)", entries.len()));
            }
            for (row, chunk) in entries.chunks(width).enumerate() {
                check_answer(chunk, width, n).or_else(|e| bad(format!("row {row}: {e}")))?;
            }
            Ok(())
        }
        Table::Ring(points) => {
            if points.is_empty() {
                return bad("the ring has no points".into());
            }
            if points.len() > max_entries {
                return bad(format!("the ring has {} points, over the limit of {max_entries} (max_table_entries)", points.len()));
            }
            if let Some(i) = points.windows(2).position(|w| w[0].hash > w[1].hash) {
                return bad(format!("ring points are not sorted by hash (at index {})", i + 1));
            }
            if let Some(p) = points.iter().find(|p| p.position as usize >= n) {
                return bad(format!("ring point names position {}, out of range: there are {n} nodes", p.position));
            }
            let mut seen = vec![false; n];
            points.iter().for_each(|p| seen[p.position as usize] = true);
            let distinct = seen.iter().filter(|&&s| s).count();
            if distinct < width {
                return bad(format!("the ring holds {distinct} distinct nodes, fewer than the {width} each answer needs"));
            }
            Ok(())
        }
    }
}

impl Strategy {
    /// Configures a fresh instance of this strategy and checks the routing
    /// table it returns. A strategy that rejects the config, traps, exceeds
    /// its budget or returns an invalid table yields an error; nothing else
    /// changes.
    pub fn configure(&self, config: &str, nodes: &[NodeSpec], replicas: u32) -> Result<Router, StrategyError> {
        let limits = self.sandbox().limits();
        validate_nodes(nodes, limits.max_nodes)?;
        if replicas == 0 {
            return Err(StrategyError::BadNodes("replicas must be at least 1".into()));
        }
        let width = answer_width(replicas, nodes.len());
        let mut instance = self.instance()?;
        let table = instance.configure(config, nodes, replicas)?;
        check_table(&table, width, nodes.len(), limits.max_table_entries)?;
        let pool = match table {
            Table::PerKey => vec![instance],
            _ => vec![],
        };
        Ok(Router {
            inner: Arc::new(RouterInner {
                strategy: self.clone(),
                config: config.to_string(),
                nodes: nodes.to_vec(),
                replicas,
                width,
                table,
                pool: Mutex::new(pool),
            }),
        })
    }
}

impl Router {
    pub fn strategy(&self) -> &Strategy {
        &self.inner.strategy
    }

    pub fn config(&self) -> &str {
        &self.inner.config
    }

    pub fn nodes(&self) -> &[NodeSpec] {
        &self.inner.nodes
    }

    pub fn replicas(&self) -> u32 {
        self.inner.replicas
    }

    /// Positions per answer: min(replicas, nodes).
    pub fn width(&self) -> usize {
        self.inner.width
    }

    pub fn table_kind(&self) -> TableKind {
        match self.inner.table {
            Table::PerKey => TableKind::PerKey,
            Table::Slots { .. } => TableKind::Slots,
            Table::Ring(_) => TableKind::Ring,
        }
    }

    /// The routing table (for comparing two configurations of a strategy).
    pub fn table(&self) -> &Table {
        &self.inner.table
    }

    /// The positions owning `key`, preference order.
    pub fn route(&self, key: &[u8]) -> Result<Vec<u32>, StrategyError> {
        let mut out = Vec::with_capacity(self.inner.width);
        self.route_into(key, &mut out)?;
        Ok(out)
    }

    /// Appends the positions owning `key` to `out`.
    #[inline]
    pub fn route_into(&self, key: &[u8], out: &mut Vec<u32>) -> Result<(), StrategyError> {
        let inner = &*self.inner;
        if inner.table.route(key_hash(key), inner.width, out) {
            return Ok(());
        }
        let answer = self.with_instance(|i| i.route(key))?;
        check_answer(&answer, inner.width, inner.nodes.len())?;
        out.extend_from_slice(&answer);
        Ok(())
    }

    /// Routes many keys: `width()` positions per key, concatenated in key
    /// order. One call into the strategy for per-key strategies.
    pub fn route_batch(&self, keys: &[&[u8]]) -> Result<Vec<u32>, StrategyError> {
        let inner = &*self.inner;
        let mut out = Vec::with_capacity(keys.len() * inner.width);
        if !matches!(inner.table, Table::PerKey) {
            for key in keys {
                inner.table.route(key_hash(key), inner.width, &mut out);
            }
            return Ok(out);
        }
        if keys.is_empty() {
            return Ok(out);
        }
        let total: usize = keys.iter().map(|k| k.len()).sum();
        if total > u32::MAX as usize {
            return Err(StrategyError::BadAnswer { answer: vec![], reason: "batch over 4 GiB of keys".into() });
        }
        let mut packed = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(keys.len());
        for key in keys {
            packed.extend_from_slice(key);
            ends.push(packed.len() as u32);
        }
        let answer = self.with_instance(|i| i.route_batch(&packed, &ends))?;
        if answer.len() != keys.len() * inner.width {
            return Err(StrategyError::BadAnswer {
                answer: answer.iter().take(16).copied().collect(),
                reason: format!("route-batch returned {} positions for {} keys of width {}", answer.len(), keys.len(), inner.width),
            });
        }
        for chunk in answer.chunks(inner.width) {
            check_answer(chunk, inner.width, inner.nodes.len())?;
        }
        Ok(answer)
    }

    /// Runs `f` on a configured instance from the pool (a new one when all
    /// are busy). An instance that failed is dropped, never reused.
    fn with_instance<R>(&self, f: impl FnOnce(&mut Instance) -> Result<R, StrategyError>) -> Result<R, StrategyError> {
        let inner = &*self.inner;
        let pooled = inner.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => {
                let mut i = inner.strategy.instance()?;
                i.configure(&inner.config, &inner.nodes, inner.replicas)?;
                i
            }
        };
        let result = f(&mut instance)?;
        inner.pool.lock().unwrap_or_else(|p| p.into_inner()).push(instance);
        Ok(result)
    }
}
