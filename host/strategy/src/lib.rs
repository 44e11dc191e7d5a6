//! The strategy host: loads partitioning strategies (WebAssembly components
//! of the `shardgate:strategy` world, `wit/strategy.wit`), sandboxes them and
//! routes keys with them.
//!
//! Where it sits: above the wire contracts (`shardgate-meta-client`'s
//! routing model), below the roles. Meta calls [`admit`] before committing
//! a strategy or an activation; the proxy builds a [`Router`] for every
//! routing epoch it receives; both derive the strategy's input with
//! [`RoutingInput::from_state`] and keep compiled strategies and routers in
//! a bounded [`StrategyCache`]; `shardgate strategy check` runs the
//! [`check`] kit.
//!
//! - [`Sandbox`]: the wasmtime engine, the import policy and the [`Limits`].
//! - [`Strategy`]: a validated, compiled component with its metadata and hash.
//! - [`Router`]: a strategy configured with (config, nodes, replicas); routes
//!   natively from a table when the strategy returns one, otherwise through a
//!   pool of instances, every call under a fuel budget and memory limit.
//! - [`RoutingInput`]: what a routing state configures its strategy with.
//! - [`StrategyCache`]: compiled strategies and routers, bounded, LRU.
//! - [`SandboxSettings`]: the budgets as a role's config file sets them.
//! - [`CompiledCache`]: compiled components on disk, by sha256, bounded.

mod admit;
mod bindings;
mod cache;
pub mod check;
mod compiled;
mod error;
mod input;
mod router;
mod sandbox;
mod settings;
mod wasi;

pub use admit::{Admission, admit, sample_keys};
pub use cache::StrategyCache;
pub use compiled::CompiledCache;
pub use error::StrategyError;
pub use input::RoutingInput;
pub use router::{Router, TableKind};
pub use sandbox::{DEFAULT_MAX_COMPONENT_BYTES, Limits, Sandbox, Strategy};
pub use settings::{DEFAULT_COMPILED_CACHE_SIZE, SandboxSettings, default_compiled_cache_dir};
pub use shardgate_strategy_sdk::{Metadata, Node as NodeSpec, Table, key_hash};
