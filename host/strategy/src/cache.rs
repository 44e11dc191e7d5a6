//! [`StrategyCache`]: the compiled strategies and configured routers a
//! process keeps, bounded. Meta's admission and the proxy's routing both
//! go through one, so both compile a component once and reuse a router when
//! a routing returns (a rollback, a swap back).
//!
//! Lookups are cheap and never block on wasm work; [`StrategyCache::load`]
//! and [`StrategyCache::configure`] compile and configure, so callers run
//! them where they want the CPU spent (meta on its blocking pool, the proxy
//! on a low-priority thread). Both caches evict the least recently used
//! entry: at most `strategies` compiled components (each holds its native
//! code, megabytes for a large runtime) and `routers` configured routers.

use std::collections::VecDeque;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::StrategyError;
use crate::input::RoutingInput;
use crate::router::Router;
use crate::sandbox::{Sandbox, Strategy};

/// Compiled strategies kept by default.
pub const DEFAULT_STRATEGIES: usize = 8;
/// Configured routers kept by default.
pub const DEFAULT_ROUTERS: usize = 4;

/// A least-recently-used list for a handful of entries: linear lookups
/// over at most a few dozen keys cost less than hashing them.
struct Recent<K, V> {
    capacity: usize,
    entries: VecDeque<(K, V)>,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    fn new(capacity: usize) -> Self {
        Recent { capacity: capacity.max(1), entries: VecDeque::new() }
    }

    fn get<Q: ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: PartialEq<Q>,
    {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at)?;
        let value = entry.1.clone();
        self.entries.push_back(entry);
        Some(value)
    }

    fn insert(&mut self, key: K, value: V) {
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries.remove(at);
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((key, value));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The compiled strategies (by sha256) and configured routers (by
/// [`RoutingInput`]) of one process.
pub struct StrategyCache {
    sandbox: Sandbox,
    strategies: Mutex<Recent<String, Strategy>>,
    routers: Mutex<Recent<RoutingInput, Router>>,
}

impl StrategyCache {
    /// A cache over `sandbox` keeping at most `strategies` compiled
    /// components and `routers` configured routers (each at least 1).
    pub fn new(sandbox: Sandbox, strategies: usize, routers: usize) -> Self {
        StrategyCache { sandbox, strategies: Mutex::new(Recent::new(strategies)), routers: Mutex::new(Recent::new(routers)) }
    }

    /// A cache keeping [`DEFAULT_STRATEGIES`] and [`DEFAULT_ROUTERS`].
    pub fn with_default_bounds(sandbox: Sandbox) -> Self {
        StrategyCache::new(sandbox, DEFAULT_STRATEGIES, DEFAULT_ROUTERS)
    }

    /// The sandbox strategies are loaded into.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The compiled strategy `hash`, if cached.
    pub fn strategy(&self, hash: &str) -> Option<Strategy> {
        lock(&self.strategies).get(hash)
    }

    /// Compiles `bytes`, which must hash to `hash` (lowercase hex sha256),
    /// and keeps the result. Blocking: compiling takes milliseconds to
    /// seconds.
    pub fn load(&self, hash: &str, bytes: &[u8]) -> Result<Strategy, StrategyError> {
        // Bytes that are not the component asked for are refused before the
        // (costly) compilation, not after it.
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != hash {
            return Err(StrategyError::HashMismatch { expected: hash.to_string(), actual });
        }
        let strategy = self.sandbox.load(bytes)?;
        self.keep(strategy.clone());
        Ok(strategy)
    }

    /// Keeps an already compiled strategy (an upload meta just admitted).
    pub fn keep(&self, strategy: Strategy) {
        lock(&self.strategies).insert(strategy.hash().to_string(), strategy);
    }

    /// The router configured for `input`, if cached.
    pub fn router(&self, input: &RoutingInput) -> Option<Router> {
        lock(&self.routers).get(input)
    }

    /// Configures `strategy` (which must be `input.hash`) with `input` and
    /// keeps the router. Blocking: runs the guest's `configure`.
    pub fn configure(&self, strategy: &Strategy, input: &RoutingInput) -> Result<Router, StrategyError> {
        if strategy.hash() != input.hash {
            return Err(StrategyError::HashMismatch { expected: input.hash.clone(), actual: strategy.hash().to_string() });
        }
        let router = strategy.configure(&input.config, &input.nodes, input.replicas)?;
        lock(&self.routers).insert(input.clone(), router.clone());
        Ok(router)
    }

    /// Entries held: (compiled strategies, configured routers).
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.strategies).len(), lock(&self.routers).len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn least_recently_used_goes_first() {
        let mut r = Recent::new(2);
        r.insert("a", 1);
        r.insert("b", 2);
        assert_eq!(r.get(&"a"), Some(1)); // a is now the newest
        r.insert("c", 3); // evicts b
        assert_eq!(r.get(&"b"), None);
        assert_eq!(r.get(&"a"), Some(1));
        assert_eq!(r.get(&"c"), Some(3));
        r.insert("c", 4); // replaces, no eviction
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(&"c"), Some(4));
        assert_eq!(r.get(&"a"), Some(1));
    }

    #[test]
    fn capacity_zero_still_keeps_one() {
        let mut r = Recent::new(0);
        r.insert(1, 1);
        r.insert(2, 2);
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(&2), Some(2));
    }
}
