//! Shardgate's metadata cluster (`shardgate meta`): a Raft group (openraft,
//! storage on redb) that holds the cache nodes, the registry of strategy
//! components, the active routing config with its history, and a routing
//! epoch. Every member serves the JSON API and the Raft RPCs on one
//! listener; proxies follow the routing through `/v1/watch`.
//!
//! Request flow: client or proxy -> any member ([`api`]) -> forwarded to the
//! leader for writes and linearizable reads -> simulated against the
//! [`state`] -> admitted by the strategy host ([`admission`]) -> one Raft log
//! entry ([`raft`], [`store`]) -> applied on every member -> `/v1/watch`
//! ([`watch`]) pushes the new `RoutingState`.
//!
//! Beside it: proxies report the epoch they serve to every member
//! ([`proxies`], soft state, not replicated), and every member serves the
//! operator console at `/ui` ([`console`]), which uses the same API.
//!
//! Transport: plain HTTP, or TLS with `meta.tls` (crate `shardgate-tls`)
//! for clients and members alike.
//!
//! Entry point: [`run`]. The API's wire types and client are in
//! `shardgate-meta-client`.

pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod proxies;
pub mod raft;
pub mod raft_check;
pub mod raft_watch;
pub mod recover;
pub mod server;
pub mod state;
pub mod store;
pub mod types;
pub mod watch;

pub use config::{ConfigError, InitialMember, MetaConfig, MetaTlsConfig};
pub use error::{ApiError, MetaError};
pub use server::run;

// The API contract (wire types and the client members use to reach each
// other), under the paths meta's modules use.
use shardgate_meta_client::{client, model};
