//! `shardgate-testkit`: what the integration tests and benchmarks of every
//! crate share, on top of the whole house (a dev-dependency only; nothing in
//! production depends on it). Other crates list it under
//! `[dev-dependencies]`; the cycle that makes (node -> testkit -> node) is
//! fine for integration tests, which link the one library build.
//!
//! - [`cluster`]: local clusters in one process (meta members, cache nodes,
//!   proxies on pre-bound `127.0.0.1:0` listeners) with the built-in
//!   strategies.
//! - [`node`]: one real cache node for a test ([`TestNode`]).
//! - [`http`]: a small HTTP client over real sockets ([`Http`],
//!   [`Answer`]) and raw TCP exchanges.
//! - [`key_api`]: the key-API conformance suite every server of the key
//!   API (node, proxy) runs.
//! - [`linearizability`]: a linearizability checker (Wing–Gong/Lowe) for
//!   recorded histories, with the model of meta's node list.
//! - [`poll`]: waiting for a condition with a deadline.
//! - [`logging`]: [`init_tracing`] for tests.
//! - [`tls`]: a test CA writing PEM files ([`TestCa`]).
//! - [`proptest_config`]: [`cases`], the one proptest configuration.
//! - [`source`]: [`routes_in_source`], a router's routes read from its
//!   source.
//! - [`openapi`]: operations, `$ref`s and examples of an OpenAPI document.

pub mod cluster;
pub mod http;
pub mod key_api;
pub mod linearizability;
pub mod logging;
pub mod node;
pub mod openapi;
pub mod poll;
pub mod proptest_config;
pub mod source;
pub mod tls;

pub use cluster::{ClusterSpec, LocalCluster};
pub use http::{Answer, Http};
pub use logging::init_tracing;
pub use node::TestNode;
pub use poll::{poll, poll_until};
pub use proptest_config::cases;
pub use source::routes_in_source;
pub use tls::TestCa;
