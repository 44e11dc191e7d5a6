//! The sandbox: one wasmtime engine per process, the import policy, and the
//! budgets every call into a strategy runs under.
//!
//! [`Sandbox::load`] turns untrusted bytes into a [`Strategy`] only after
//! checking size, magic and imports (read from the bytes before anything is
//! compiled, so a refusal is instant), compiling (or finding the compiled
//! form in the [`CompiledCache`]), checking exports and reading the
//! metadata; every later call into the component goes through [`Instance`],
//! which sets the fuel budget and memory limit and turns traps into
//! [`StrategyError`]s, with what the guest wrote to stderr (a panic
//! message) attached.

use crate::bindings;
use crate::compiled::CompiledCache;
use crate::error::StrategyError;
use sha2::{Digest, Sha256};
use shardgate_strategy_sdk::{Metadata, Node as NodeSpec};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

/// Interfaces a Rust `std` guest for wasm32-wasip2 links even when it never
/// calls them (and that language runtimes call at start-up). Environment,
/// arguments, stdout and stderr answer deterministically (`crate::wasi`);
/// the rest are inert stubs that trap when called. With
/// [`crate::wasi::DETERMINISTIC_INTERFACES`] (random, clocks) these are the
/// only imports allowed: any other (filesystem, sockets, http, ...) refuses
/// the component.
const STD_STUB_INTERFACES: &[&str] = &[
    "wasi:io/poll",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// Default largest component: room for CPython (componentize-py, ~18 MB).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 << 20;

/// Budgets and limits for strategies. Fuel is counted in wasmtime fuel units
/// (about one per WebAssembly instruction).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// Linear memory limit per instance, in bytes.
    pub memory_bytes: usize,
    /// Fuel for `configure` (which may build a large table).
    pub configure_fuel: u64,
    /// Fuel for `metadata` and `validate-config`.
    pub control_fuel: u64,
    /// Fuel per key for `route` and `route-batch`.
    pub route_fuel: u64,
    /// Most nodes a strategy may be configured with.
    pub max_nodes: usize,
    /// Most entries in a slot table or points on a ring.
    pub max_table_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            memory_bytes: 256 << 20,
            configure_fuel: 20_000_000_000,
            control_fuel: 100_000_000,
            route_fuel: 10_000_000,
            max_nodes: 65_536,
            max_table_entries: 1 << 24,
        }
    }
}

/// The wasmtime engine and limits shared by every strategy of a process.
/// Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
}

struct SandboxInner {
    engine: Engine,
    limits: Limits,
    compiled: Option<CompiledCache>,
}

impl Sandbox {
    /// A sandbox that compiles every component it loads.
    pub fn new(limits: Limits) -> Result<Self, StrategyError> {
        Self::build(limits, None)
    }

    /// A sandbox that keeps compiled components in `dir` (at most
    /// `max_bytes` in total; 0 keeps none) and loads them from there when
    /// the same bytes come again. The directory is created when first
    /// written; one that cannot be written only logs a warning.
    pub fn with_compiled_cache(limits: Limits, dir: std::path::PathBuf, max_bytes: u64) -> Result<Self, StrategyError> {
        Self::build(limits, Some((dir, max_bytes)))
    }

    fn build(limits: Limits, cache: Option<(std::path::PathBuf, u64)>) -> Result<Self, StrategyError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        // Synchronous calls only; the concurrency machinery slows every call.
        config.concurrency_support(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| StrategyError::Engine(format!("{e:#}")))?;
        let compiled = cache.filter(|(_, max)| *max > 0).map(|(dir, max)| CompiledCache::new(dir, max, &engine));
        Ok(Sandbox { inner: Arc::new(SandboxInner { engine, limits, compiled }) })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The on-disk cache of compiled components, if this sandbox has one.
    pub fn compiled_cache(&self) -> Option<&CompiledCache> {
        self.inner.compiled.as_ref()
    }

    /// Validates and compiles a component. Refuses, with the reason: an
    /// oversized file, a file that is not WebAssembly, a core module, a
    /// component with forbidden imports or without the strategy world's
    /// exports, one that does not instantiate, and invalid metadata.
    pub fn load(&self, bytes: &[u8]) -> Result<Strategy, StrategyError> {
        let limits = &self.inner.limits;
        if bytes.len() > limits.max_component_bytes {
            return Err(StrategyError::TooLarge { size: bytes.len(), limit: limits.max_component_bytes });
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(StrategyError::NotWasm);
        }
        // Bytes 4..8: version + layer; layer 0 is a core module.
        if bytes[6..8] == [0, 0] {
            return Err(StrategyError::NotAComponent);
        }
        // The import policy reads the bytes, before any (costly) compilation.
        let imports = component_imports(bytes)?;
        let forbidden: Vec<String> = imports.iter().filter(|name| !is_allowed_import(name)).cloned().collect();
        if !forbidden.is_empty() {
            return Err(StrategyError::ForbiddenImports(forbidden));
        }

        let hash = hex::encode(Sha256::digest(bytes));
        let engine = &self.inner.engine;
        let (component, from_cache) = self.compile(&hash, bytes)?;
        // What wasmtime sees must be what the policy read.
        if let Some(name) = component.component_type().imports(engine).map(|(name, _)| name).find(|name| !is_allowed_import(name)) {
            return Err(StrategyError::ForbiddenImports(vec![name.to_string()]));
        }

        let mut linker = Linker::<StoreState>::new(engine);
        crate::wasi::define(&mut linker, &imports).map_err(|e| StrategyError::Engine(one_line(&e)))?;
        linker.define_unknown_imports_as_traps(&component).map_err(|e| StrategyError::Engine(one_line(&e)))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| StrategyError::Invalid(one_line(&e)))?;
        let pre = bindings::StrategyPre::new(pre).map_err(|e| StrategyError::WrongWorld(one_line(&e)))?;

        let mut strategy = Strategy {
            inner: Arc::new(StrategyInner {
                sandbox: self.clone(),
                pre,
                hash,
                size: bytes.len(),
                from_cache,
                metadata: Metadata::new("", "", ""),
            }),
        };
        let mut instance = strategy.instance()?;
        let metadata = instance.metadata()?;
        validate_metadata(&metadata)?;
        Arc::get_mut(&mut strategy.inner).expect("not shared yet").metadata = metadata;
        Ok(strategy)
    }
}

impl Sandbox {
    /// The compiled component for `bytes` (sha256 `hash`): from the on-disk
    /// cache when it holds it (`true`), else compiled now (and stored).
    fn compile(&self, hash: &str, bytes: &[u8]) -> Result<(Component, bool), StrategyError> {
        let engine = &self.inner.engine;
        let invalid = |e: wasmtime::Error| StrategyError::Invalid(one_line(&e));
        let Some(cache) = &self.inner.compiled else {
            return Ok((Component::from_binary(engine, bytes).map_err(invalid)?, false));
        };
        if let Some(component) = cache.get(engine, hash) {
            return Ok((component, true));
        }
        let serialized = engine.precompile_component(bytes).map_err(invalid)?;
        // SAFETY: `serialized` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &serialized) }.map_err(|e| StrategyError::Engine(one_line(&e)))?;
        cache.put(hash, &serialized);
        Ok((component, false))
    }
}

/// The names a component imports (top level, versions included), read from
/// its bytes without compiling it.
fn component_imports(bytes: &[u8]) -> Result<Vec<String>, StrategyError> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    // Nested modules and components have imports of their own, satisfied
    // inside the component: only depth 0 faces the host.
    let mut depth = 0usize;
    // wasmparser's messages may span lines: one bounded line.
    let invalid = |e: wasmparser::BinaryReaderError| StrategyError::Invalid(guest_text(&e.to_string()));
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) if depth == 0 => break,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    // Type imports (`use types.{node, ...}` in a world) carry
                    // no behaviour; wasmtime does not list them either.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        names.push(import.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The contract's own interface (type definitions only, no functions).
const CONTRACT_INTERFACE: &str = "shardgate:strategy/types";

/// Whether an import is allowed: the contract's types, or an inert stub for
/// what Rust's std links.
fn is_allowed_import(import: &str) -> bool {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    (interface == CONTRACT_INTERFACE && version.starts_with("0.1."))
        || (version.starts_with("0.2.")
            && (STD_STUB_INTERFACES.contains(&interface) || crate::wasi::DETERMINISTIC_INTERFACES.contains(&interface)))
}

fn validate_metadata(m: &Metadata) -> Result<(), StrategyError> {
    let bad = |what: &str| Err(StrategyError::BadMetadata(what.to_string()));
    let ident = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if m.name.is_empty() || m.name.len() > 64 || !ident(&m.name) {
        return bad("name must be 1-64 characters of [A-Za-z0-9-_.]");
    }
    if m.version.is_empty() || m.version.len() > 32 || !ident(&m.version) {
        return bad("version must be 1-32 characters of [A-Za-z0-9-_.]");
    }
    if m.description.len() > 200 || m.description.contains('\n') {
        return bad("description must be one line of at most 200 bytes");
    }
    Ok(())
}

/// Most bytes of guest-provided text (a config error, metadata) kept in an
/// error message.
pub(crate) const MAX_GUEST_TEXT: usize = 1024;

/// Guest text as one bounded line: control characters and line breaks
/// become spaces, runs of white space collapse, and text past
/// [`MAX_GUEST_TEXT`] bytes is cut with a note of how much was dropped.
pub(crate) fn guest_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_GUEST_TEXT + 32));
    let mut space = false;
    for (i, c) in text.char_indices() {
        if out.len() >= MAX_GUEST_TEXT {
            out.push_str(&format!("... ({} more bytes)", text.len() - i));
            break;
        }
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// One line of an error chain: wasmtime errors carry a multi-line wasm
/// backtrace that the operator does not need in the message.
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// A validated, compiled strategy component. Cheap to clone.
#[derive(Clone)]
pub struct Strategy {
    inner: Arc<StrategyInner>,
}

struct StrategyInner {
    sandbox: Sandbox,
    pre: bindings::StrategyPre<StoreState>,
    hash: String,
    size: usize,
    from_cache: bool,
    metadata: Metadata,
}

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strategy")
            .field("name", &self.inner.metadata.name)
            .field("version", &self.inner.metadata.version)
            .field("hash", &self.inner.hash)
            .finish()
    }
}

impl Strategy {
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// Lowercase hex SHA-256 of the component bytes: its registry address.
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether the compiled form came from the on-disk [`CompiledCache`]
    /// (no compilation on this load).
    pub fn from_compiled_cache(&self) -> bool {
        self.inner.from_cache
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// Asks the strategy to check a TOML config, without nodes.
    pub fn validate_config(&self, config: &str) -> Result<(), StrategyError> {
        self.instance()?.validate_config(config)
    }

    /// A fresh, unconfigured instance.
    pub(crate) fn instance(&self) -> Result<Instance, StrategyError> {
        let limits = &self.inner.sandbox.inner.limits;
        let mut store = Store::new(&self.inner.sandbox.inner.engine, StoreState::new(limits.memory_bytes));
        store.limiter(|s| &mut s.memory);
        store.set_fuel(limits.control_fuel).map_err(|e| StrategyError::Engine(one_line(&e)))?;
        let bindings = match self.inner.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(classify(e, &store, "instantiate", limits.control_fuel, "control_fuel")),
        };
        Ok(Instance { store, bindings, limits: limits.clone() })
    }
}

pub(crate) struct StoreState {
    memory: MemoryLimit,
    /// What the guest wrote to stdout/stderr, at most
    /// [`crate::wasi::MAX_GUEST_OUTPUT`] bytes: shown with a trap.
    pub(crate) output: Vec<u8>,
}

impl StoreState {
    pub(crate) fn new(memory_limit: usize) -> Self {
        StoreState { memory: MemoryLimit { limit: memory_limit, exceeded: false }, output: Vec::new() }
    }
}

/// Refuses memory growth past the limit and remembers that it did, so the
/// resulting trap is reported as a memory-limit error.
struct MemoryLimit {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Err(wasmtime::format_err!("memory limit of {} bytes exceeded", self.limit));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

fn classify(e: wasmtime::Error, store: &Store<StoreState>, call: &'static str, fuel: u64, limit: &'static str) -> StrategyError {
    match classify_trap(e, store, call, fuel, limit) {
        StrategyError::Trap { call, message } if !store.data().output.is_empty() => {
            let said = guest_text(&String::from_utf8_lossy(&store.data().output));
            StrategyError::Trap { call, message: format!("{message}; the strategy wrote: {said}") }
        }
        other => other,
    }
}

fn classify_trap(e: wasmtime::Error, store: &Store<StoreState>, call: &'static str, fuel: u64, limit: &'static str) -> StrategyError {
    if store.data().memory.exceeded {
        return StrategyError::MemoryLimit { call, limit: store.data().memory.limit };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => StrategyError::OutOfFuel { call, fuel, limit },
        Some(Trap::UnreachableCodeReached) => {
            StrategyError::Trap { call, message: "wasm `unreachable` executed (a panic or abort in the strategy)".into() }
        }
        Some(trap) => StrategyError::Trap { call, message: trap.to_string() },
        // A host function's error (a stub that must not be called): its
        // own message, not the backtrace wasmtime wraps it in.
        None => StrategyError::Trap { call, message: e.root_cause().to_string() },
    }
}

/// One instance of a strategy in its own store. Not thread-safe by itself:
/// routers keep a pool of them. After any error the instance must be
/// dropped (a trapped component instance cannot be entered again).
pub(crate) struct Instance {
    store: Store<StoreState>,
    bindings: bindings::Strategy,
    limits: Limits,
}

impl Instance {
    fn budget(&mut self, fuel: u64) -> Result<(), StrategyError> {
        self.store.set_fuel(fuel).map_err(|e| StrategyError::Engine(one_line(&e)))
    }

    pub(crate) fn metadata(&mut self) -> Result<Metadata, StrategyError> {
        let fuel = self.limits.control_fuel;
        self.budget(fuel)?;
        match self.bindings.call_metadata(&mut self.store) {
            Ok(m) => Ok(m.into()),
            Err(e) => Err(classify(e, &self.store, "metadata", fuel, "control_fuel")),
        }
    }

    pub(crate) fn validate_config(&mut self, config: &str) -> Result<(), StrategyError> {
        let fuel = self.limits.control_fuel;
        self.budget(fuel)?;
        match self.bindings.call_validate_config(&mut self.store, config) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StrategyError::ConfigRejected(guest_text(&reason))),
            Err(e) => Err(classify(e, &self.store, "validate-config", fuel, "control_fuel")),
        }
    }

    pub(crate) fn configure(
        &mut self,
        config: &str,
        nodes: &[NodeSpec],
        replicas: u32,
    ) -> Result<shardgate_strategy_sdk::Table, StrategyError> {
        let fuel = self.limits.configure_fuel;
        self.budget(fuel)?;
        let nodes: Vec<_> = nodes.iter().map(Into::into).collect();
        match self.bindings.call_configure(&mut self.store, config, &nodes, replicas) {
            Ok(Ok(table)) => Ok(table.into()),
            Ok(Err(reason)) => Err(StrategyError::ConfigRejected(guest_text(&reason))),
            Err(e) => Err(classify(e, &self.store, "configure", fuel, "configure_fuel")),
        }
    }

    #[inline]
    pub(crate) fn route(&mut self, key: &[u8]) -> Result<Vec<u32>, StrategyError> {
        let fuel = self.limits.route_fuel;
        self.budget(fuel)?;
        self.bindings.call_route(&mut self.store, key).map_err(|e| classify(e, &self.store, "route", fuel, "route_fuel"))
    }

    pub(crate) fn route_batch(&mut self, keys: &[u8], ends: &[u32]) -> Result<Vec<u32>, StrategyError> {
        let fuel = self.limits.route_fuel.saturating_mul(ends.len().max(1) as u64);
        self.budget(fuel)?;
        self.bindings.call_route_batch(&mut self.store, keys, ends).map_err(|e| classify(e, &self.store, "route-batch", fuel, "route_fuel"))
    }
}

// Strategies and sandboxes are shared across tokio worker threads.
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<Strategy>();
    is::<Sandbox>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_one_bounded_line() {
        assert_eq!(guest_text("a\n  b\0c\t"), "a b c");
        let long = "x".repeat(5000);
        let t = guest_text(&long);
        assert!(t.len() < MAX_GUEST_TEXT + 32 && t.ends_with("(3976 more bytes)"), "{t}");
        assert_eq!(guest_text("é".repeat(600).as_str()).chars().filter(|&c| c == 'é').count(), 512);
    }
}
