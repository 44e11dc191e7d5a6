//! The request context: [`Shared`], what every request of one proxy
//! shares (configuration, limits, routing, the node board, the forwarder,
//! metrics, the client-facing guards), and the `Shardgate-Epoch` header
//! every routed answer carries.
//!
//! Where it sits in the request flow: [`crate::server`]'s `run` builds one
//! `Shared` per proxy and hands it to dispatch, which passes `&Shared` to
//! the handler modules ([`crate::keys`], [`crate::batches`],
//! [`crate::status`]) and they to [`crate::replication`] and
//! [`crate::migration`]. Handler modules import this module, never
//! [`crate::server`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::response::Response;
use http::HeaderName;
use shardgate_api::Limits;

use crate::auth::ClientToken;
use crate::config::ProxyConfig;
use crate::metrics::{CommandMetrics, ProxyMetrics};
use crate::nodes::NodeBoard;
use crate::rate_limit::ClientRateLimit;
use crate::routing::{Routing, RoutingEpoch};
use crate::upstream::Upstream;

/// Header carrying the routing epoch that routed a request.
pub const EPOCH_HEADER: &str = "shardgate-epoch";

/// What every request of one proxy shares.
pub(crate) struct Shared {
    pub config: ProxyConfig,
    pub limits: Limits,
    pub routing: Arc<Routing>,
    pub board: Arc<NodeBoard>,
    pub upstream: Upstream,
    pub metrics: Arc<ProxyMetrics>,
    /// `proxy.data_token`: required on `/v1/` when set.
    pub client_token: Option<ClientToken>,
    /// `proxy.rate_limit`, when set.
    pub rate_limit: Option<Arc<ClientRateLimit>>,
    /// False once shutdown began (`/readyz` answers 503).
    pub ready: AtomicBool,
    /// The RESP metrics of every command, in the order of the RESP
    /// front's command table (`crate::resp::cmd::SPECS`).
    pub resp_metrics: Vec<CommandMetrics>,
}

/// `r` with the `Shardgate-Epoch` header of `epoch`.
pub(crate) fn with_epoch(mut r: Response, epoch: &RoutingEpoch) -> Response {
    r.headers_mut().insert(HeaderName::from_static(EPOCH_HEADER), epoch.epoch_header.clone());
    r
}
