//! `shardgate-meta-client`: the metadata API's contract, on the ground floor
//! below the roles. Meta serves it; the proxy, `shardgate ctl` and joining
//! members consume it.
//!
//! - [`model`]: the JSON wire types of `/v1/...`, above all the
//!   [`RoutingState`] a proxy routes by (nodes, active strategy, config,
//!   replicas, epoch).
//! - [`watch_event`]: the Server-Sent Events framing of `/v1/watch`.
//! - [`client`] (feature `client`, on by default): [`MetaClient`], which
//!   talks to any member and follows the watch stream across members.
//!
//! Crates that need only the model (the strategy host) turn the `client`
//! feature off and stay free of HTTP client code.

pub mod model;
pub mod watch_event;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "client")]
pub use client::{ClientError, Following, MetaClient, WatchStream};
pub use model::{NodeState, NodeView, RoutingState, StrategyRef};
