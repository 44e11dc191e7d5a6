//! Below every role (node, proxy, meta): how a role accepts connections and
//! how its config errors look.
//!
//! - [`serve`]: the one accept loop. A role hands it its bound listener,
//!   its limits ([`serve::ServeConfig`]: connection cap, header read
//!   deadline, optional TLS, drain deadline), a hyper service per connection
//!   and a shutdown future; connections over the cap get the same raw 503
//!   in every role ([`serve::reject_connection`]), and each role counts
//!   connections under its own metric names ([`serve::ConnectionMetrics`]).
//! - [`coalesce`]: between hyper and each connection's socket, so that
//!   answers written in one poll of the connection (pipelined requests)
//!   leave in one write, and none is lost when the connection closes.
//! - [`config`]: [`config::ConfigError`], the `{key}: {message}` error every
//!   role's `validate` returns (the binary's file loader adds file and line).
//!
//! - [`advertise`]: the address a role gives others when its config names
//!   none (the host name in place of `0.0.0.0`).
//! - [`stall`]: a thread beside the runtime that reports when no task has
//!   run for a while (every worker blocked: the process accepts
//!   connections but answers nothing).
//! - [`workers`]: one single-threaded runtime per core that the accept
//!   loop hands the data path's connections to, so a request's tasks run
//!   on one thread.
//!
//! Nothing here knows a role: this crate imports no other Shardgate crate.

pub mod advertise;
pub mod coalesce;
pub mod config;
pub mod serve;
pub mod stall;
pub mod workers;

pub use config::ConfigError;
