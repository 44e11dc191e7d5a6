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
//! `spawn_blocking`, under two semaphores: `meta.max_concurrent_previews`
//! for previews and `meta.max_concurrent_admissions` for uploads and
//! routing-change admissions (503 with `Retry-After` beyond them), so the
//! blocking pool never holds more than their sum of strategy instances.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use shardgate_strategy::{NodeSpec, Router, RoutingInput, Sandbox, Strategy, StrategyCache, StrategyError};

use crate::error::ApiError;
use crate::model::{NodeLoad, PreviewReport};

/// Number of synthetic nodes an upload is routed over when the strategy
/// accepts an empty config.
const UPLOAD_CHECK_NODES: usize = 3;
/// Largest preview sample. A preview routes its sample in chunks of
/// [`PREVIEW_CHUNK`] keys, so its memory does not grow with the sample;
/// its CPU does (two routings of every key), and this bounds it.
pub const MAX_PREVIEW_SAMPLE: u32 = 100_000;
/// Default preview sample.
pub const DEFAULT_PREVIEW_SAMPLE: u32 = 10_000;
/// Most candidate nodes a preview request may list.
pub const MAX_PREVIEW_NODES: usize = 1024;
/// Keys routed at once by a preview: what it holds per routing is this
/// many keys and `PREVIEW_CHUNK x width` positions (under 1 MiB).
const PREVIEW_CHUNK: u32 = 4096;

/// The sandbox, the compiled strategies, the sample size and the
/// concurrency limits of the costly work (`meta.max_concurrent_previews`,
/// `meta.max_concurrent_admissions`).
#[derive(Clone)]
pub struct AdmissionGate {
    cache: Arc<StrategyCache>,
    sample_keys: usize,
    previews: Arc<Semaphore>,
    max_previews: u32,
    admissions: Arc<Semaphore>,
    max_admissions: u32,
    /// How long a routing-change admission waits for a place.
    admission_wait: Duration,
}

/// The concurrency limits of an [`AdmissionGate`].
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// `meta.max_concurrent_previews`.
    pub previews: u32,
    /// `meta.max_concurrent_admissions`.
    pub admissions: u32,
    /// How long a routing change waits for an admission place
    /// (`meta.write_timeout`).
    pub admission_wait: Duration,
}

fn refused(e: StrategyError) -> ApiError {
    match e {
        StrategyError::TooLarge { size, limit } => ApiError::TooLarge { size: size as u64, limit: limit as u64 },
        StrategyError::Engine(msg) => ApiError::Internal(format!("wasmtime: {msg}")),
        other => ApiError::Admission(other.to_string()),
    }
}

/// Runs `f` on the blocking pool holding `permit` until it returns, so work
/// whose client has gone still counts against its limit until it ends.
async fn blocking<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("admission task failed: {e}")))?
}

impl AdmissionGate {
    pub fn new(sandbox: Sandbox, sample_keys: usize, limits: GateLimits) -> Self {
        Self {
            cache: Arc::new(StrategyCache::with_default_bounds(sandbox)),
            sample_keys,
            previews: Arc::new(Semaphore::new(limits.previews as usize)),
            max_previews: limits.previews,
            admissions: Arc::new(Semaphore::new(limits.admissions as usize)),
            max_admissions: limits.admissions,
            admission_wait: limits.admission_wait,
        }
    }

    fn admissions_busy(&self, what: &'static str) -> ApiError {
        ApiError::Busy { what, limit_name: "meta.max_concurrent_admissions", limit: self.max_admissions }
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
    /// A strategy that needs a config it cannot have yet (it rejects the
    /// empty one, in `validate-config` or in `configure`) is admitted: its
    /// activation, which carries the config, runs the full admission. A
    /// trap, an exhausted budget or a bad answer refuses it.
    /// Over `meta.max_concurrent_admissions`: [`ApiError::Busy`] at once.
    pub async fn admit_upload(&self, bytes: Arc<Vec<u8>>) -> Result<Strategy, ApiError> {
        let permit = self.admissions.clone().try_acquire_owned().map_err(|_| self.admissions_busy("strategy upload"))?;
        let gate = self.clone();
        blocking(permit, move || {
            let strategy = gate.cache.sandbox().load(&bytes).map_err(refused)?;
            let nodes: Vec<NodeSpec> =
                (0..UPLOAD_CHECK_NODES).map(|i| NodeSpec { id: format!("admission-{i}"), weight: 1.0, zone: String::new() }).collect();
            match shardgate_strategy::admit(&strategy, "", &nodes, 1, gate.sample_keys) {
                Ok(_) | Err(StrategyError::ConfigRejected(_)) => {}
                Err(e) => return Err(ApiError::Admission(format!("{e} (empty config, {UPLOAD_CHECK_NODES} test nodes)"))),
            }
            gate.cache.keep(strategy.clone());
            Ok(strategy)
        })
        .await
    }

    /// Admit the routing a change would produce. With no active node only
    /// the config is checked (a strategy is never configured without nodes;
    /// the first node added runs the full admission). Waits up to
    /// `meta.write_timeout` for a place under
    /// `meta.max_concurrent_admissions`, then [`ApiError::Busy`].
    ///
    /// With `before` (the routing in force) and nodes on both sides, also
    /// answers the share of the admission sample whose primary owner the
    /// change moves (for the routing history).
    pub async fn admit_routing(
        &self,
        input: RoutingInput,
        component: Arc<Vec<u8>>,
        before: Option<(RoutingInput, Arc<Vec<u8>>)>,
    ) -> Result<Option<f64>, ApiError> {
        let permit = tokio::time::timeout(self.admission_wait, self.admissions.clone().acquire_owned())
            .await
            .map_err(|_| self.admissions_busy("routing change admission"))?
            .map_err(|_| ApiError::Internal("the admission gate is closed".into()))?;
        let gate = self.clone();
        blocking(permit, move || {
            let strategy = gate.strategy(&input.hash, &component)?;
            if input.nodes.is_empty() {
                return strategy.validate_config(&input.config).map(|()| None).map_err(refused);
            }
            let (after, _) =
                shardgate_strategy::admit(&strategy, &input.config, &input.nodes, input.replicas, gate.sample_keys).map_err(refused)?;
            let Some((before_input, before_bytes)) = before.filter(|(b, _)| !b.nodes.is_empty()) else {
                return Ok(None);
            };
            // The routing in force was admitted when it was committed: a
            // failure here says nothing about the change, so it only leaves
            // the share out.
            let before_router = gate.cache.router(&before_input).map(Ok).unwrap_or_else(|| {
                let s = gate.strategy(&before_input.hash, &before_bytes)?;
                gate.cache.configure(&s, &before_input).map_err(refused)
            });
            let sample = u32::try_from(gate.sample_keys).unwrap_or(u32::MAX);
            Ok(before_router.and_then(|b| compare(Some(&b), &after, sample)).ok().map(|r| r.moved_share))
        })
        .await
    }

    /// Route `key-0..key-{sample-1}` with the current and the candidate
    /// routing and report what moves. At most `meta.max_concurrent_previews`
    /// run at once (one more: [`ApiError::Busy`] at once); each holds its
    /// two routers and one chunk of keys, never the whole sample.
    pub async fn preview(
        &self,
        current: Option<(RoutingInput, Arc<Vec<u8>>)>,
        candidate: (RoutingInput, Arc<Vec<u8>>),
        sample: u32,
    ) -> Result<PreviewReport, ApiError> {
        let permit = self.previews.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            what: "preview",
            limit_name: "meta.max_concurrent_previews",
            limit: self.max_previews,
        })?;
        let gate = self.clone();
        blocking(permit, move || {
            let router = |input: &RoutingInput, bytes: &[u8]| -> Result<Router, ApiError> {
                let strategy = gate.strategy(&input.hash, bytes)?;
                match gate.cache.router(input) {
                    Some(router) => Ok(router),
                    None => gate.cache.configure(&strategy, input).map_err(refused),
                }
            };
            let before = match &current {
                Some((input, bytes)) if !input.nodes.is_empty() => Some(router(input, bytes)?),
                _ => None,
            };
            if candidate.0.nodes.is_empty() {
                return Err(ApiError::BadRequest("the candidate has no active nodes to route to".into()));
            }
            let after = router(&candidate.0, &candidate.1)?;
            compare(before.as_ref(), &after, sample)
        })
        .await
    }
}

impl AdmissionGate {
    /// The owners (node ids, preference order) of `key` under `current`
    /// (when a routing is active) and `candidate` (when one is given):
    /// what `POST /v1/lookup` answers. Shares the preview limit
    /// (`meta.max_concurrent_previews`).
    pub async fn lookup(
        &self,
        current: Option<(RoutingInput, Arc<Vec<u8>>)>,
        candidate: Option<(RoutingInput, Arc<Vec<u8>>)>,
        key: Vec<u8>,
    ) -> Result<(Option<Vec<String>>, Option<Vec<String>>), ApiError> {
        let permit = self.previews.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            what: "lookup",
            limit_name: "meta.max_concurrent_previews",
            limit: self.max_previews,
        })?;
        let gate = self.clone();
        blocking(permit, move || {
            let owners = |routing: &Option<(RoutingInput, Arc<Vec<u8>>)>| -> Result<Option<Vec<String>>, ApiError> {
                let Some((input, bytes)) = routing else { return Ok(None) };
                if input.nodes.is_empty() {
                    return Ok(None);
                }
                let strategy = gate.strategy(&input.hash, bytes)?;
                let router = match gate.cache.router(input) {
                    Some(router) => router,
                    None => gate.cache.configure(&strategy, input).map_err(refused)?,
                };
                let positions = router.route(&key).map_err(refused)?;
                Ok(Some(positions.iter().filter_map(|&p| router.nodes().get(p as usize)).map(|n| n.id.clone()).collect()))
            };
            Ok((owners(&current)?, owners(&candidate)?))
        })
        .await
    }
}

/// The i-th preview sample key.
pub fn preview_key(i: u32) -> String {
    format!("key-{i}")
}

/// Routes the sample through `before` (if any) and `after`, one chunk at a
/// time, and counts what moves: memory is the two routers plus one chunk.
fn compare(before: Option<&Router>, after: &Router, sample: u32) -> Result<PreviewReport, ApiError> {
    // Every node of either routing, by id (the report lists them sorted);
    // positions of each routing map to indexes in it.
    let mut ids: Vec<&str> = after.nodes().iter().chain(before.map(|b| b.nodes()).unwrap_or(&[])).map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let index_of = |nodes: &[NodeSpec]| -> Vec<usize> { nodes.iter().map(|n| ids.binary_search(&n.id.as_str()).unwrap_or(0)).collect() };
    let after_index = index_of(after.nodes());
    let before_index = before.map(|b| index_of(b.nodes())).unwrap_or_default();
    let mut load = vec![(0u64, 0u64); ids.len()];
    let (mut moved, mut set_changed) = (0u64, 0u64);
    let (mut set_a, mut set_b) = (Vec::new(), Vec::new());
    let mut start = 0u32;
    while start < sample {
        let end = start.saturating_add(PREVIEW_CHUNK).min(sample);
        let keys: Vec<Vec<u8>> = (start..end).map(|i| preview_key(i).into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let a_flat = after.route_batch(&refs).map_err(refused)?;
        let b_flat = match before {
            Some(b) => Some(b.route_batch(&refs).map_err(refused)?),
            None => None,
        };
        let a_width = after.width().max(1);
        for (i, a) in a_flat.chunks(a_width).enumerate() {
            set_a.clear();
            set_a.extend(a.iter().map(|&p| after_index[p as usize]));
            if let Some(&primary) = set_a.first() {
                load[primary].1 += 1;
            }
            match (&b_flat, before) {
                (Some(b_flat), Some(b_router)) => {
                    let b_width = b_router.width().max(1);
                    let b = &b_flat[i * b_width..(i + 1) * b_width];
                    set_b.clear();
                    set_b.extend(b.iter().map(|&p| before_index[p as usize]));
                    if let Some(&primary) = set_b.first() {
                        load[primary].0 += 1;
                    }
                    if set_a.first() != set_b.first() {
                        moved += 1;
                    }
                    set_a.sort_unstable();
                    set_b.sort_unstable();
                    if set_a != set_b {
                        set_changed += 1;
                    }
                }
                _ => {
                    moved += 1;
                    set_changed += 1;
                }
            }
        }
        start = end;
    }
    let share = |n: u64| if sample == 0 { 0.0 } else { n as f64 / f64::from(sample) };
    Ok(PreviewReport {
        sample: u64::from(sample),
        moved_share: share(moved),
        replica_set_changed_share: share(set_changed),
        load: ids.iter().zip(load).map(|(id, (before, after))| NodeLoad { id: id.to_string(), before, after }).collect(),
    })
}
