//! `shardgate-node`: the cache node role (`shardgate node`). A node keeps
//! values in memory (a byte-bounded quick_cache with per-entry TTL) and
//! serves them over HTTP/1.1; proxies route each key to one or more nodes.
//!
//! Request flow: client or proxy -> [`server`] (accept loop, limits,
//! handlers) -> [`store`]. What a request may look like and how it is
//! refused (keys, versions, TTLs, limits, the batch format, errors) is the
//! key API's wire contract in `shardgate-api`, shared with the proxy.
//!
//! Start a node with [`run`] on a listener you bound yourself.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod registration;
pub mod server;
pub mod store;

// The wire contract, under the paths the node's modules use.
use shardgate_api::{batch, etag, key, limits, ttl};

pub use config::{ConfigError, NodeConfig};
pub use error::NodeError;
pub use server::run;
pub use shardgate_api::{ApiError, Limits};
pub use store::EvictionPolicy;
