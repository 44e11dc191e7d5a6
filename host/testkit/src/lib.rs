//! `shardgate-testkit`: what the integration tests and benchmarks of every
//! crate share, on top of the whole house (a dev-dependency only; nothing in
//! production depends on it).
//!
//! - [`cluster`]: local clusters in one process (meta members, cache nodes,
//!   proxies on pre-bound `127.0.0.1:0` listeners) with the built-in
//!   strategies.

pub mod cluster;

pub use cluster::{ClusterSpec, LocalCluster};
