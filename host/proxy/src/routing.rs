//! Routing state: one [`RoutingEpoch`] per meta epoch, swapped atomically,
//! and everything that produces one.
//!
//! Where it sits: [`follow`] consumes meta's watch stream
//! (`shardgate_meta_client::MetaClient::watch`: any member, leader changes,
//! reconnect with backoff), fetches a strategy's component by hash (verified
//! against the hash), compiles and configures it with the input
//! [`RoutingInput::from_state`] gives (the same meta admitted) on a
//! low-priority thread, keeping both in a bounded [`StrategyCache`], and
//! installs the new epoch. Every request loads the
//! current epoch ONCE and routes only with it, so no request ever mixes two
//! epochs. An epoch keeps the ones before it (up to four, while their
//! migration window is open) for migration lookups. A
//! strategy that faults too often is replaced by the last epoch that worked
//! ([`Routing::strategy_fault`]). When all owners of a key are ejected and
//! `proxy.owner_down = "next_owner"`, the key is routed by a *detour*: the
//! same strategy configured with the healthy nodes only, rebuilt off the
//! request path whenever the set of ejected nodes changes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::StreamExt;
use serde::Serialize;
use shardgate_meta_client::{MetaClient, RoutingState};
use shardgate_strategy::{NodeSpec, Router, RoutingInput, Sandbox, Strategy, StrategyCache, StrategyError};
use tracing::{debug, error, info, warn};

use crate::metrics::ProxyMetrics;
use crate::nodes::{NodeBoard, NodeHandle};

/// Why a fallback epoch is serving.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Fallback {
    /// The epoch whose strategy faulted.
    pub faulty_epoch: u64,
    /// The last fault seen.
    pub reason: String,
    /// Faults counted in the window when the proxy fell back.
    pub faults: u32,
}

/// The strategy's result for a key, computed from the keys' positions.
pub struct Detour {
    /// Routes over the healthy nodes only.
    router: Router,
    /// Detour position -> position in the epoch's node list.
    positions: Vec<u32>,
}

/// Everything one request routes with: one meta epoch.
pub struct RoutingEpoch {
    pub epoch: u64,
    /// `epoch` as the `Shardgate-Epoch` header value (made once).
    pub epoch_header: http::HeaderValue,
    /// The state as meta sent it.
    pub state: Arc<RoutingState>,
    /// `None` while no strategy is active.
    pub router: Option<Router>,
    /// Position -> node (the active nodes, in meta's order).
    pub nodes: Vec<Arc<NodeHandle>>,
    /// The epoch this one replaced and when, for the migration window.
    pub previous: Option<(Arc<RoutingEpoch>, Instant)>,
    /// Set on an epoch installed because the newer one's strategy faulted.
    pub fallback: Option<Fallback>,
    pub(crate) detour: ArcSwapOption<Detour>,
}

impl RoutingEpoch {
    /// Why this epoch cannot route (it has no router).
    fn unroutable(&self) -> RouteError {
        match self.state.strategy {
            Some(_) => RouteError::NoNodes { epoch: self.epoch },
            None => RouteError::NoStrategy,
        }
    }

    fn empty() -> Self {
        RoutingEpoch {
            epoch: 0,
            epoch_header: http::HeaderValue::from(0u64),
            state: Arc::new(RoutingState { epoch: 0, nodes: vec![], strategy: None, config: String::new(), replicas: 1, leader: None }),
            router: None,
            nodes: vec![],
            previous: None,
            fallback: None,
            detour: ArcSwapOption::empty(),
        }
    }

    /// A copy without the link to its own previous epoch and without a detour.
    fn detached(&self) -> Arc<RoutingEpoch> {
        self.detached_with_history(0, Duration::ZERO)
    }

    /// A copy keeping at most `depth` earlier epochs whose migration window
    /// (`window` after they were replaced) is still open.
    fn detached_with_history(&self, depth: usize, window: Duration) -> Arc<RoutingEpoch> {
        let previous = match &self.previous {
            Some((p, since)) if depth > 0 && since.elapsed() < window => Some((p.detached_with_history(depth - 1, window), *since)),
            _ => None,
        };
        Arc::new(RoutingEpoch {
            epoch: self.epoch,
            epoch_header: self.epoch_header.clone(),
            state: self.state.clone(),
            router: self.router.clone(),
            nodes: self.nodes.clone(),
            previous,
            fallback: self.fallback.clone(),
            detour: ArcSwapOption::empty(),
        })
    }

    /// The previous epoch while the migration window is open.
    #[inline]
    pub fn migrating_from(&self, window: Duration) -> Option<&RoutingEpoch> {
        match &self.previous {
            Some((prev, since)) if since.elapsed() < window => Some(prev),
            _ => None,
        }
    }

    /// The earlier epochs whose migration window is still open, newest
    /// first (at most [`MIGRATION_DEPTH`]): a key that changed owner in
    /// several recent swaps is looked for on each of its earlier owners.
    pub fn migration_chain(&self, window: Duration) -> Vec<&RoutingEpoch> {
        let mut chain = Vec::new();
        let mut at = self;
        while let Some(prev) = at.migrating_from(window) {
            if chain.len() == MIGRATION_DEPTH {
                break;
            }
            chain.push(prev);
            at = prev;
        }
        chain
    }

    /// Number of owners per key.
    pub fn width(&self) -> usize {
        self.router.as_ref().map_or(0, |r| r.width())
    }
}

/// Why a key cannot be routed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("no routing strategy is active yet (activate one through meta)")]
    NoStrategy,
    #[error("routing epoch {epoch} has no active nodes (add nodes through meta)")]
    NoNodes { epoch: u64 },
    #[error("strategy fault while routing (epoch {epoch}): {error}")]
    Fault { epoch: u64, error: StrategyError },
    #[error("strategy failed to route (epoch {epoch}): {error}")]
    Strategy { epoch: u64, error: StrategyError },
}

/// Earlier epochs a missed read is looked up in, within the window.
pub const MIGRATION_DEPTH: usize = 4;

/// Counts strategy faults in a sliding window.
struct FaultWindow {
    times: VecDeque<Instant>,
}

/// What `/status` shows about routing beyond the epoch itself.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RoutingNotes {
    /// The newest epoch meta has announced.
    pub meta_epoch: u64,
    /// Why the newest announced epoch is not serving, if it is not.
    pub last_error: Option<String>,
    /// Epochs installed since start.
    pub swaps: u64,
}

/// The proxy's routing: the epoch in force and how it changes.
pub struct Routing {
    current: ArcSwap<RoutingEpoch>,
    last_good: ArcSwapOption<RoutingEpoch>,
    faults: Mutex<FaultWindow>,
    fault_threshold: u32,
    fault_window: Duration,
    migration_window: Duration,
    notes: Mutex<RoutingNotes>,
    meta_epoch: AtomicU64,
    /// Compiled strategies and the last few configured routers, so
    /// returning to a recent routing (a rollback, a swap back) costs no
    /// `configure`.
    cache: Arc<StrategyCache>,
    pub(crate) board: Arc<NodeBoard>,
    pub(crate) metrics: Arc<ProxyMetrics>,
    /// Woken on every install (for the detour builder).
    installed: tokio::sync::Notify,
    /// Woken on every install (for the report to meta, [`crate::meta_report`]).
    pub(crate) swapped: tokio::sync::Notify,
    /// What the meta watch follows (set when [`follow`] starts).
    following: std::sync::OnceLock<Arc<shardgate_meta_client::Following>>,
}

/// How current the proxy's routing is, as `/status` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MetaFollow {
    /// The meta member whose watch stream is open (none while reconnecting).
    pub member: Option<String>,
    /// Milliseconds since the last event or heartbeat from a member with a
    /// leader (since the proxy started when none came yet).
    pub staleness_ms: u64,
    /// `proxy.max_staleness` in milliseconds, when set.
    pub max_staleness_ms: Option<u64>,
    /// `true` when `max_staleness` is set and exceeded: writes are refused.
    pub stale: bool,
}

impl Routing {
    pub fn new(
        sandbox: Sandbox,
        board: Arc<NodeBoard>,
        metrics: Arc<ProxyMetrics>,
        fault_threshold: u32,
        fault_window: Duration,
        migration_window: Duration,
    ) -> Self {
        Routing {
            current: ArcSwap::from_pointee(RoutingEpoch::empty()),
            last_good: ArcSwapOption::empty(),
            faults: Mutex::new(FaultWindow { times: VecDeque::new() }),
            fault_threshold,
            fault_window,
            migration_window,
            notes: Mutex::new(RoutingNotes::default()),
            meta_epoch: AtomicU64::new(0),
            cache: Arc::new(StrategyCache::with_default_bounds(sandbox)),
            board,
            metrics,
            installed: tokio::sync::Notify::new(),
            swapped: tokio::sync::Notify::new(),
            following: std::sync::OnceLock::new(),
        }
    }

    /// Time since the meta watch last heard from a member with a leader
    /// (`None` before the watch started, e.g. in tests driving `install`).
    pub fn meta_staleness(&self) -> Option<Duration> {
        self.following.get().map(|f| f.staleness())
    }

    /// The `/status` view of the meta watch, judged against `max`.
    pub fn meta_follow(&self, max: Option<Duration>) -> MetaFollow {
        let staleness = self.meta_staleness();
        MetaFollow {
            member: self.following.get().and_then(|f| f.member()),
            staleness_ms: staleness.unwrap_or_default().as_millis() as u64,
            max_staleness_ms: max.map(|m| m.as_millis() as u64),
            stale: max.is_some_and(|m| staleness.is_some_and(|s| s > m)),
        }
    }

    /// The epoch in force: load it once per request.
    #[inline]
    pub fn load(&self) -> Arc<RoutingEpoch> {
        self.current.load_full()
    }

    pub fn migration_window(&self) -> Duration {
        self.migration_window
    }

    pub fn notes(&self) -> RoutingNotes {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        n.meta_epoch = self.meta_epoch.load(Ordering::Relaxed);
        n
    }

    /// Appends the owners (positions, preference order) of `key` under
    /// `epoch` to `out`. A strategy fault is counted and may trigger the
    /// fallback.
    #[inline]
    pub fn route(&self, epoch: &RoutingEpoch, key: &[u8], out: &mut Vec<u32>) -> Result<(), RouteError> {
        let Some(router) = &epoch.router else { return Err(epoch.unroutable()) };
        let start = Instant::now();
        let result = router.route_into(key, out);
        self.metrics.routing_nanoseconds.inc_by(start.elapsed().as_nanos() as u64);
        self.metrics.routed_keys.inc();
        result.map_err(|error| self.route_error(epoch, error))
    }

    /// Owners of many keys: `width` positions per key, concatenated.
    pub fn route_batch(&self, epoch: &RoutingEpoch, keys: &[&[u8]]) -> Result<Vec<u32>, RouteError> {
        let Some(router) = &epoch.router else { return Err(epoch.unroutable()) };
        let start = Instant::now();
        let result = router.route_batch(keys);
        self.metrics.routing_nanoseconds.inc_by(start.elapsed().as_nanos() as u64);
        self.metrics.routed_keys.inc_by(keys.len() as u64);
        result.map_err(|error| self.route_error(epoch, error))
    }

    fn route_error(&self, epoch: &RoutingEpoch, error: StrategyError) -> RouteError {
        if error.is_routing_fault() {
            self.strategy_fault(epoch, &error);
            RouteError::Fault { epoch: epoch.epoch, error }
        } else {
            RouteError::Strategy { epoch: epoch.epoch, error }
        }
    }

    /// Counts a fault of `epoch`'s strategy; at `proxy.fault_threshold`
    /// faults within `proxy.fault_window` installs the last epoch that worked.
    pub fn strategy_fault(&self, epoch: &RoutingEpoch, error: &StrategyError) {
        self.metrics.strategy_faults.inc();
        warn!(epoch = epoch.epoch, %error, "strategy fault");
        let count = {
            let mut w = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            w.times.push_back(now);
            while w.times.front().is_some_and(|t| now.duration_since(*t) > self.fault_window) {
                w.times.pop_front();
            }
            w.times.len() as u32
        };
        if count < self.fault_threshold {
            return;
        }
        let current = self.current.load();
        if current.epoch != epoch.epoch || current.fallback.is_some() {
            return;
        }
        let Some(good) = self.last_good.load_full() else {
            error!(epoch = epoch.epoch, faults = count, "strategy keeps faulting and there is no earlier routing state to fall back to");
            return;
        };
        let fallback = Fallback { faulty_epoch: epoch.epoch, reason: error.to_string(), faults: count };
        let replacement = Arc::new(RoutingEpoch {
            epoch: good.epoch,
            epoch_header: good.epoch_header.clone(),
            state: good.state.clone(),
            router: good.router.clone(),
            nodes: good.nodes.clone(),
            previous: None,
            fallback: Some(fallback),
            detour: ArcSwapOption::empty(),
        });
        // Only replace the faulty epoch itself, never a newer one.
        let prev = self.current.compare_and_swap(&current, replacement);
        if !Arc::ptr_eq(&prev, &current) {
            return;
        }
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).times.clear();
        self.metrics.fallbacks.inc();
        self.metrics.fallback_active.set(1);
        self.metrics.epoch.set(good.epoch as i64);
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).last_error =
            Some(format!("epoch {} fell back to epoch {} after {count} strategy faults: {error}", epoch.epoch, good.epoch));
        error!(
            faulty_epoch = epoch.epoch,
            fallback_epoch = good.epoch,
            faults = count,
            "falling back to the last routing state that worked"
        );
        self.installed.notify_one();
    }

    /// Builds and installs the epoch for `state`: fetches the component if
    /// needed, compiles and configures off the async threads. On failure the
    /// current epoch stays in force.
    pub async fn install(&self, state: RoutingState, meta: &MetaClient) -> Result<(), String> {
        let epoch_no = state.epoch;
        self.meta_epoch.fetch_max(epoch_no, Ordering::Relaxed);
        let router = match RoutingInput::from_state(&state) {
            None => None,
            Some(input) if input.nodes.is_empty() => None,
            Some(input) => match self.cache.router(&input) {
                Some(router) => {
                    debug!(epoch = epoch_no, "reusing a configured router");
                    Some(router)
                }
                None => {
                    let name = state.strategy.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                    let strategy = self.strategy(&input.hash, meta).await?;
                    let cache = self.cache.clone();
                    let hash = input.hash.clone();
                    let router = off_request_path(move || cache.configure(&strategy, &input))
                        .await?
                        .map_err(|e| format!("configuring strategy {name} ({hash}) for epoch {epoch_no}: {e}"))?;
                    Some(router)
                }
            },
        };
        let nodes: Vec<Arc<NodeHandle>> = state.active_nodes().map(|n| self.board.handle(&n.id, &n.addr, &self.metrics)).collect();
        let current = self.current.load_full();
        let previous = if self.migration_window.is_zero() || current.router.is_none() || router.is_none() {
            None
        } else {
            Some((current.detached_with_history(MIGRATION_DEPTH - 1, self.migration_window), Instant::now()))
        };
        // Keep health state for the nodes still listed now or in the window.
        let mut keep: Vec<&str> = state.nodes.iter().map(|n| n.id.as_str()).collect();
        if let Some((p, _)) = &previous {
            keep.extend(p.state.nodes.iter().map(|n| n.id.as_str()));
        }
        self.board.retain(&keep);
        let next = Arc::new(RoutingEpoch {
            epoch: epoch_no,
            epoch_header: http::HeaderValue::from(epoch_no),
            state: Arc::new(state.clone()),
            router,
            nodes,
            previous,
            fallback: None,
            detour: ArcSwapOption::empty(),
        });
        if current.router.is_some() && current.fallback.is_none() {
            self.last_good.store(Some(current.detached()));
        } else if current.fallback.is_some() {
            // The fallback epoch itself worked; keep it as the last good one.
            self.last_good.store(Some(current.detached()));
        }
        self.current.store(next);
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).times.clear();
        self.metrics.epoch.set(epoch_no as i64);
        self.metrics.swaps.inc();
        self.metrics.fallback_active.set(0);
        {
            let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
            notes.last_error = None;
            notes.swaps += 1;
        }
        info!(
            epoch = epoch_no,
            strategy = state.strategy.as_ref().map(|s| s.name.as_str()).unwrap_or("none"),
            nodes = state.active_nodes().count(),
            replicas = state.replicas,
            "routing epoch installed"
        );
        self.installed.notify_one();
        self.swapped.notify_one();
        Ok(())
    }

    /// The compiled strategy for `hash`: from the cache, or fetched from
    /// meta, checked against the hash and compiled on the a low-priority thread.
    async fn strategy(&self, hash: &str, meta: &MetaClient) -> Result<Strategy, String> {
        if let Some(s) = self.cache.strategy(hash) {
            return Ok(s);
        }
        let bytes = meta.component(hash).await.map_err(|e| format!("fetching component {hash}: {e}"))?;
        let cache = self.cache.clone();
        let started = Instant::now();
        let owned_hash = hash.to_string();
        let strategy = off_request_path(move || cache.load(&owned_hash, &bytes)).await?.map_err(|e| match e {
            StrategyError::HashMismatch { actual, .. } => format!("component fetched for {hash} has sha256 {actual}: refusing it"),
            e => format!("loading component {hash}: {e}"),
        })?;
        debug!(hash, ms = started.elapsed().as_millis() as u64, "strategy compiled");
        Ok(strategy)
    }

    fn install_failed(&self, epoch: u64, reason: String) {
        self.metrics.swap_failures.inc();
        error!(epoch, error = %reason, "routing epoch not installed; the previous one stays in force");
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(format!("epoch {epoch}: {reason}"));
    }

    /// The detour of `epoch` if one is built.
    pub fn detour_owners(&self, epoch: &RoutingEpoch, key: &[u8], out: &mut Vec<u32>) -> bool {
        let detour = epoch.detour.load();
        let Some(d) = detour.as_ref() else { return false };
        let mut tmp = Vec::with_capacity(d.router.width());
        if d.router.route_into(key, &mut tmp).is_err() {
            return false;
        }
        out.extend(tmp.iter().filter_map(|&p| d.positions.get(p as usize).copied()));
        self.metrics.detoured_keys.inc();
        true
    }

    /// Keeps the current epoch's detour in step with the ejected nodes:
    /// rebuilt on the a low-priority thread after every ejection, recovery or install.
    pub(crate) async fn run_detour_builder(self: Arc<Self>) {
        loop {
            let epoch = self.load();
            let healthy: Vec<u32> = (0..epoch.nodes.len() as u32).filter(|&p| epoch.nodes[p as usize].is_routable()).collect();
            let want = epoch.router.is_some() && !healthy.is_empty() && healthy.len() < epoch.nodes.len();
            if !want {
                epoch.detour.store(None);
            } else {
                let current_positions = epoch.detour.load().as_ref().map(|d| d.positions.clone());
                if current_positions.as_deref() != Some(&healthy[..]) {
                    let router = epoch.router.clone().expect("checked above");
                    let specs: Vec<NodeSpec> = healthy.iter().map(|&p| router.nodes()[p as usize].clone()).collect();
                    let r2 = router.clone();
                    let built = off_request_path(move || r2.strategy().configure(r2.config(), &specs, r2.replicas())).await;
                    match built {
                        Ok(Ok(detour)) => {
                            info!(
                                epoch = epoch.epoch,
                                healthy = healthy.len(),
                                nodes = epoch.nodes.len(),
                                "detour routing built for keys of ejected nodes"
                            );
                            epoch.detour.store(Some(Arc::new(Detour { router: detour, positions: healthy })));
                        }
                        Ok(Err(e)) => warn!(epoch = epoch.epoch, error = %e, "cannot build detour routing"),
                        Err(e) => warn!(error = %e, "detour task failed"),
                    }
                    continue; // health may have changed meanwhile
                }
            }
            tokio::select! {
                () = self.board.changed.notified() => {}
                () = self.installed.notified() => {}
            }
        }
    }
}

/// Runs `f` (compiling or configuring a strategy) on its own thread at a
/// lower CPU priority (nice 10 on Linux), so that on busy cores the
/// requests being served keep the CPU and the new routing is ready a little
/// later instead.
async fn off_request_path<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shardgate-configure".into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority on the calling thread (who = 0) has no
            // memory effects; failure only leaves the priority unchanged.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a configure thread: {e}"))?;
    rx.await.map_err(|_| "the configure thread stopped without an answer".to_string())
}

/// Follows meta's routing watch until the task is dropped, installing every
/// new epoch (skipping to the newest when several are queued). An epoch
/// that cannot be installed (component fetch or configure failed) is retried
/// with backoff until it works or a newer one arrives.
pub(crate) async fn follow(routing: Arc<Routing>, meta: MetaClient) {
    let mut stream = meta.watch(None);
    let _ = routing.following.set(stream.following());
    let mut pending: Option<RoutingState> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let item = match &pending {
            Some(_) => tokio::select! {
                item = stream.next() => item,
                () = tokio::time::sleep(backoff) => {
                    let state = pending.take().expect("pending is set");
                    let epoch = state.epoch;
                    if let Err(reason) = routing.install(state.clone(), &meta).await {
                        routing.install_failed(epoch, reason);
                        pending = Some(state);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    continue;
                }
            },
            None => stream.next().await,
        };
        let Some(mut latest) = item else { return };
        // Several states queued: only the newest matters (each is complete).
        while let Some(Some(next)) = futures::FutureExt::now_or_never(stream.next()) {
            match next {
                Ok(s) => latest = Ok(s),
                Err(e) => debug!(error = %e, "routing watch error"),
            }
        }
        match latest {
            Ok(state) => {
                let current = routing.load();
                if state.epoch <= current.epoch && current.epoch != 0 {
                    continue;
                }
                let epoch = state.epoch;
                pending = None;
                backoff = Duration::from_millis(100);
                if let Err(reason) = routing.install(state.clone(), &meta).await {
                    routing.install_failed(epoch, reason);
                    pending = Some(state);
                }
            }
            Err(e) => warn!(error = %e, "routing watch interrupted; reconnecting"),
        }
    }
}
