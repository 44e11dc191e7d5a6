//! `shardgate-proxy`: the proxy role (`shardgate proxy`), the HTTP front
//! door clients use. It speaks the node's key API, routes every key with the
//! active WebAssembly strategy (hot-swapped from meta's watch stream, one
//! routing epoch per request), forwards to the owning cache nodes over
//! pooled keep-alive connections, replicates writes, survives node failures
//! and keeps keys readable across routing changes (the migration window).
//!
//! Request flow: client -> [`server`] (accept loop with
//! `proxy.max_connections` and optional [`tls`]; per request the
//! [`admission`] rate limit and the [`auth`] data token) -> routing
//! epoch from [`routing`] -> owners filtered by [`health`] -> [`upstream`]
//! (single keys) or [`fanout`] (batches, migration lookups) -> nodes.
//! Below it: the key API's wire contract (`shardgate-api`), the routing
//! model and meta client (`shardgate-meta-client`) and the strategy host
//! (`shardgate-strategy`); it depends on neither the node nor meta.
//!
//! Start a proxy with [`run`] on a listener you bound yourself.

pub mod admission;
pub mod auth;
pub mod config;
pub mod error;
pub mod fanout;
pub mod h1;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;

pub use config::{ConfigError, OwnerDownPolicy, ProxyConfig, RateLimit, TlsConfig, UpstreamClient, WriteAck};
pub use error::{ProxyError, RequestError};
pub use server::{EPOCH_HEADER, OWNERS_PATH_PREFIX, Owners, Status, run};
