//! `shardgate-node`: the cache node role (`shardgate node`). A node keeps
//! values in memory (a byte-bounded quick_cache with per-entry TTL) and
//! serves them over HTTP/1.1; proxies route each key to one or more nodes.
//!
//! Request flow: client or proxy -> [`server`] (accept loop, limits,
//! handlers) -> [`store`]. The modules the proxy reuses so that it is
//! indistinguishable from a node for clients: [`key`] (key URLs),
//! [`etag`] (versions and conditional headers), [`ttl`] (`?ttl=`),
//! [`limits`], [`error`] (error statuses and bodies) and [`batch`] (the
//! batch wire format).
//!
//! Start a node with [`run`] on a listener you bound yourself.

pub mod auth;
pub mod batch;
pub mod config;
pub mod error;
pub mod etag;
pub mod key;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod store;
pub mod ttl;

pub use config::{ConfigError, EvictionPolicy, NodeConfig};
pub use error::{ApiError, NodeError};
pub use limits::Limits;
pub use server::run;
