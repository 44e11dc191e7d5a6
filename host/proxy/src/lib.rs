//! `shardgate-proxy`: the proxy role (`shardgate proxy`), the HTTP front
//! door clients use. It speaks the node's key API, routes every key with the
//! active WebAssembly strategy (hot-swapped from meta's watch stream, one
//! routing epoch per request), forwards to the owning cache nodes over
//! pooled keep-alive connections, replicates writes, survives node failures
//! and keeps keys readable across routing changes (the migration window).
//!
//! Request flow: client -> [`server`] (accept loop with
//! `proxy.max_connections` and optional [`tls`]; dispatch by the route
//! table; per `/v1/` request the [`rate_limit`] and the [`auth`] data
//! token) -> routing epoch from [`routing`], loaded once -> the domain's
//! handlers: [`keys`] (single keys), [`batches`] (batch get/put) or
//! [`status`] -> owner choice, reads with retries and read-through repair,
//! writes under the write-ack policy in [`replication`]; earlier owners in
//! the [`migration`] window -> [`upstream`] (the forwarder; per-node batch
//! legs in [`node_batch`]) over the pools of the [`nodes`] board -> nodes.
//! What every request shares is in [`context`]. The Redis protocol front
//! ([`resp`], `proxy.resp_listen`) enters beside [`server`] and calls the
//! same [`keys`] and [`batches`] routing code.
//!
//! Imports point one way, down this list (a module imports only modules
//! listed after it; Rust would allow cycles, `tests/layers.rs` does not):
//! [`server`] > [`resp`] > [`keys`], [`batches`] > [`migration`] > [`replication`],
//! [`node_batch`], [`status`], [`meta_report`] > [`context`] > [`auth`], [`rate_limit`] >
//! [`error`] > [`routing`], [`upstream`] > [`nodes`] > [`h1`] >
//! [`pipeline`] > [`wire`]; [`metrics`], [`tls`] and [`config`] at the
//! bottom.
//!
//! Below it: the key API's wire contract (`shardgate-api`), the routing
//! model and meta client (`shardgate-meta-client`) and the strategy host
//! (`shardgate-strategy`); it depends on neither the node nor meta.
//!
//! Start a proxy with [`run`] on a listener you bound yourself.

pub mod auth;
pub mod batches;
pub mod config;
pub mod context;
pub mod error;
pub mod h1;
pub mod keys;
pub mod meta_report;
pub mod metrics;
pub mod migration;
pub mod node_batch;
pub mod nodes;
pub mod pipeline;
pub mod rate_limit;
pub mod replication;
pub mod resp;
pub mod routing;
pub mod server;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod wire;

pub use config::{ConfigError, OwnerDownPolicy, ProxyConfig, RateLimit, TlsConfig, UpstreamClient, WriteAck};
pub use context::EPOCH_HEADER;
pub use error::{ProxyError, RequestError};
pub use keys::{OWNERS_PATH_PREFIX, Owners};
pub use server::{run, run_with_resp};
pub use status::Status;
