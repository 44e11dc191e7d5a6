//! Status: the proxy's own endpoints beside the key API, `GET /status`
//! (the serving epoch, strategy, fallback, migration window and node
//! health), `/metrics` (OpenMetrics text), `/healthz`, `/readyz` (503 while
//! no routing state is installed or during shutdown) and `/openapi.json`.
//! All are open (no data token, no rate limit) and answer HEAD as GET.
//!
//! Where it sits in the request flow: [`crate::server`] dispatches these
//! routes here; they read the shared context ([`crate::context`]), the
//! routing epoch in force and the node board, and never touch a node.

use std::sync::atomic::Ordering;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Serialize;

use crate::config::{OwnerDownPolicy, WriteAck};
use crate::context::{Shared, with_epoch};
use crate::nodes::NodeHealth;
use crate::routing::{Fallback, RoutingNotes};

/// The OpenAPI 3.1 document of the proxy's API (`host/proxy/openapi.json`),
/// served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// The epoch serving requests.
    pub epoch: u64,
    pub strategy: Option<StatusStrategy>,
    pub replicas: u32,
    /// Set while a fallback epoch is serving.
    pub fallback: Option<Fallback>,
    /// The previous epoch while the migration window is open.
    pub migrating_from: Option<u64>,
    pub migration_window_left_ms: Option<u64>,
    pub routing: RoutingNotes,
    pub nodes: Vec<NodeHealth>,
    pub owner_down: OwnerDownPolicy,
    pub write_ack: WriteAck,
    /// The meta member followed and how stale the routing may be.
    pub meta: crate::routing::MetaFollow,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatusStrategy {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub table: Option<String>,
}

pub(crate) fn status(shared: &Shared) -> Response {
    let epoch = shared.routing.load();
    let window = shared.routing.migration_window();
    let body = Status {
        epoch: epoch.epoch,
        strategy: epoch.state.strategy.as_ref().map(|s| StatusStrategy {
            name: s.name.clone(),
            hash: s.hash.clone(),
            version: s.version.clone(),
            table: epoch.router.as_ref().map(|r| r.table_kind().to_string()),
        }),
        replicas: epoch.state.replicas,
        fallback: epoch.fallback.clone(),
        migrating_from: epoch.migrating_from(window).map(|p| p.epoch),
        migration_window_left_ms: epoch
            .previous
            .as_ref()
            .and_then(|(_, since)| window.checked_sub(since.elapsed()))
            .map(|d| d.as_millis() as u64),
        routing: shared.routing.notes(),
        nodes: shared.board.all().iter().map(|n| n.health()).collect(),
        owner_down: shared.config.owner_down,
        write_ack: shared.config.write_ack,
        meta: shared.routing.meta_follow(shared.config.max_staleness),
    };
    with_epoch(axum::Json(body).into_response(), &epoch)
}

pub(crate) fn metrics(shared: &Shared) -> Response {
    if let Some(staleness) = shared.routing.meta_staleness() {
        shared.metrics.meta_staleness_seconds.set(staleness.as_secs_f64());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.render()).into_response()
}

pub(crate) fn healthz() -> Response {
    "ok\n".into_response()
}

pub(crate) fn readyz(shared: &Shared) -> Response {
    if !shared.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if shared.routing.load().router.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no routing state yet\n").into_response();
    }
    let follow = shared.routing.meta_follow(shared.config.max_staleness);
    if follow.stale {
        let text = format!(
            "routing may be stale: no meta member with a leader heard from for {}ms (proxy.max_staleness is {}ms); writes are refused, reads served\n",
            follow.staleness_ms,
            follow.max_staleness_ms.unwrap_or_default()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    }
    "ready\n".into_response()
}

pub(crate) fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
