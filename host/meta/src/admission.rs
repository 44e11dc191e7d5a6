//! Admission before commit, and the movement preview: where meta runs
//! strategies in the strategy host's sandbox (`shardgate-strategy`).
//!
//! The leader calls [`AdmissionGate`] before it proposes a strategy upload,
//! an activation, a rollback or a node change while a strategy is active; a
//! refusal is answered 422 with the strategy host's reason and nothing is
//! proposed. What a routing configures its strategy with is
//! [`RoutingInput::from_state`] of the routing state the change would
//! produce: the same function every proxy routes with. Compiling a
//! component takes ~0.3 s in a debug build, so compiled strategies are kept
//! in a bounded [`StrategyCache`] and all wasm work runs in
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardgate_strategy::{NodeSpec, Router, RoutingInput, Sandbox, Strategy, StrategyCache, StrategyError};

use crate::error::ApiError;
use crate::model::{NodeLoad, PreviewReport};

/// Number of synthetic nodes an upload is routed over when the strategy
/// accepts an empty config.
const UPLOAD_CHECK_NODES: usize = 3;
/// Largest preview sample.
pub const MAX_PREVIEW_SAMPLE: u32 = 1_000_000;
/// Default preview sample.
pub const DEFAULT_PREVIEW_SAMPLE: u32 = 10_000;

/// The sandbox, the compiled strategies and the sample size.
#[derive(Clone)]
pub struct AdmissionGate {
    cache: Arc<StrategyCache>,
    sample_keys: usize,
}

fn refused(e: StrategyError) -> ApiError {
    match e {
        StrategyError::TooLarge { size, limit } => ApiError::TooLarge { size: size as u64, limit: limit as u64 },
        StrategyError::Engine(msg) => ApiError::Internal(format!("wasmtime: {msg}")),
        other => ApiError::Admission(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("admission task failed: {e}")))?
}

impl AdmissionGate {
    pub fn new(sandbox: Sandbox, sample_keys: usize) -> Self {
        Self { cache: Arc::new(StrategyCache::with_default_bounds(sandbox)), sample_keys }
    }

    /// The compiled strategy for `hash`, compiling `bytes` on a cache miss.
    /// Blocking: call from `spawn_blocking`.
    fn strategy(&self, hash: &str, bytes: &[u8]) -> Result<Strategy, ApiError> {
        match self.cache.strategy(hash) {
            Some(s) => Ok(s),
            None => self.cache.load(hash, bytes).map_err(refused),
        }
    }

    /// Admit an upload: size, wasm, component, imports, world, compiles,
    /// metadata; and, when the strategy accepts an empty config, configure
    /// it twice over three test nodes and route the sample through both.
    pub async fn admit_upload(&self, bytes: Arc<Vec<u8>>) -> Result<Strategy, ApiError> {
        let gate = self.clone();
        blocking(move || {
            let strategy = gate.cache.sandbox().load(&bytes).map_err(refused)?;
            if strategy.validate_config("").is_ok() {
                let nodes: Vec<NodeSpec> =
                    (0..UPLOAD_CHECK_NODES).map(|i| NodeSpec { id: format!("admission-{i}"), weight: 1.0, zone: String::new() }).collect();
                shardgate_strategy::admit(&strategy, "", &nodes, 1, gate.sample_keys)
                    .map_err(|e| ApiError::Admission(format!("{e} (empty config, {UPLOAD_CHECK_NODES} test nodes)")))?;
            }
            gate.cache.keep(strategy.clone());
            Ok(strategy)
        })
        .await
    }

    /// Admit the routing a change would produce. With no active node only
    /// the config is checked (a strategy is never configured without nodes;
    /// the first node added runs the full admission).
    pub async fn admit_routing(&self, input: RoutingInput, component: Arc<Vec<u8>>) -> Result<(), ApiError> {
        let gate = self.clone();
        blocking(move || {
            let strategy = gate.strategy(&input.hash, &component)?;
            if input.nodes.is_empty() {
                return strategy.validate_config(&input.config).map_err(refused);
            }
            shardgate_strategy::admit(&strategy, &input.config, &input.nodes, input.replicas, gate.sample_keys).map(|_| ()).map_err(refused)
        })
        .await
    }

    /// Route `key-0..key-{sample-1}` with the current and the candidate
    /// routing and report what moves.
    pub async fn preview(
        &self,
        current: Option<(RoutingInput, Arc<Vec<u8>>)>,
        candidate: (RoutingInput, Arc<Vec<u8>>),
        sample: u32,
    ) -> Result<PreviewReport, ApiError> {
        let gate = self.clone();
        blocking(move || {
            let keys: Vec<Vec<u8>> = (0..sample).map(|i| preview_key(i).into_bytes()).collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let route = |input: &RoutingInput, bytes: &[u8]| -> Result<Vec<Vec<String>>, ApiError> {
                let strategy = gate.strategy(&input.hash, bytes)?;
                let router: Router = match gate.cache.router(input) {
                    Some(router) => router,
                    None => gate.cache.configure(&strategy, input).map_err(refused)?,
                };
                owners(&router, &input.nodes, &refs)
            };
            let before = match &current {
                Some((input, bytes)) if !input.nodes.is_empty() => Some(route(input, bytes)?),
                _ => None,
            };
            if candidate.0.nodes.is_empty() {
                return Err(ApiError::BadRequest("the candidate has no active nodes to route to".into()));
            }
            let after = route(&candidate.0, &candidate.1)?;
            Ok(compare(before.as_deref(), &after, &candidate.0.nodes, current.as_ref().map(|c| &c.0.nodes[..])))
        })
        .await
    }
}

/// The i-th preview sample key.
pub fn preview_key(i: u32) -> String {
    format!("key-{i}")
}

/// Owner ids, preference order, per key.
fn owners(router: &Router, nodes: &[NodeSpec], keys: &[&[u8]]) -> Result<Vec<Vec<String>>, ApiError> {
    let width = router.width();
    let flat = router.route_batch(keys).map_err(refused)?;
    Ok(flat.chunks(width.max(1)).map(|row| row.iter().map(|&p| nodes[p as usize].id.clone()).collect()).collect())
}

fn compare(
    before: Option<&[Vec<String>]>,
    after: &[Vec<String>],
    after_nodes: &[NodeSpec],
    before_nodes: Option<&[NodeSpec]>,
) -> PreviewReport {
    let sample = after.len() as u64;
    let mut load: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for n in before_nodes.unwrap_or(&[]).iter().chain(after_nodes) {
        load.entry(n.id.clone()).or_default();
    }
    let (mut moved, mut set_changed) = (0u64, 0u64);
    for (i, a) in after.iter().enumerate() {
        if let Some(primary) = a.first() {
            load.entry(primary.clone()).or_default().1 += 1;
        }
        match before.map(|b| &b[i]) {
            Some(b) => {
                if let Some(primary) = b.first() {
                    load.entry(primary.clone()).or_default().0 += 1;
                }
                if b.first() != a.first() {
                    moved += 1;
                }
                let mut bs = b.clone();
                let mut as_ = a.clone();
                bs.sort();
                as_.sort();
                if bs != as_ {
                    set_changed += 1;
                }
            }
            None => {
                moved += 1;
                set_changed += 1;
            }
        }
    }
    let share = |n: u64| if sample == 0 { 0.0 } else { n as f64 / sample as f64 };
    PreviewReport {
        sample,
        moved_share: share(moved),
        replica_set_changed_share: share(set_changed),
        load: load.into_iter().map(|(id, (before, after))| NodeLoad { id, before, after }).collect(),
    }
}
