//! The strategy host: loads partitioning strategies (WebAssembly components
//! of the `shardgate:strategy` world, `wit/strategy.wit`), sandboxes them and
//! routes keys with them.
//!
//! Where it sits: meta calls [`admit`] before committing a strategy or an
//! activation; the proxy builds a [`Router`] for every routing epoch it
//! receives and swaps it into its [`ActiveRouter`]; `shardgate strategy
//! check` runs the [`check`] kit.
//!
//! - [`Sandbox`]: the wasmtime engine, the import policy and the [`Limits`].
//! - [`Strategy`]: a validated, compiled component with its metadata and hash.
//! - [`Router`]: a strategy configured with (config, nodes, replicas); routes
//!   natively from a table when the strategy returns one, otherwise through a
//!   pool of instances, every call under a fuel budget and memory limit.
//! - [`ActiveRouter`]: the router in force, swapped atomically.

mod active;
mod admit;
mod bindings;
pub mod check;
mod error;
mod router;
mod sandbox;

pub use active::ActiveRouter;
pub use admit::{admit, sample_keys, Admission};
pub use error::StrategyError;
pub use router::{Router, TableKind};
pub use sandbox::{Limits, Sandbox, Strategy};
pub use shardgate_strategy_sdk::{key_hash, Metadata, Node as NodeSpec, Table};
