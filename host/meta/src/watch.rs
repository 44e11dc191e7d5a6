//! `GET /v1/watch?from_epoch=N`: the routing state as Server-Sent Events,
//! the contract proxies are built on (framing: `shardgate_meta_client::watch_event`).
//!
//! On connect the member sends its full `RoutingState` if its epoch is
//! greater than `from_epoch` (always when `from_epoch` is absent), then one
//! `event: routing` per epoch change, and a `: heartbeat` comment every
//! `meta.watch_heartbeat` so both ends notice a dead connection. Every event
//! carries the full state, so a client that reconnects with the last epoch it
//! saw misses no change: it gets the newest state if anything changed.
//! Served from the member's own state machine (no leader hop).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tracing::debug;

use axum::Router;
use axum::routing::get;
use serde::Deserialize;

use crate::api::MemberContext;
use crate::error::ApiError;
use shardgate_meta_client::watch_event::{HEARTBEAT, encode_event};

/// The watch route, merged into the member's router beside the API's.
pub fn watch_routes(ctx: Arc<MemberContext>) -> Router {
    Router::new().route("/v1/watch", get(watch)).with_state(ctx)
}

#[derive(Deserialize)]
pub struct WatchQuery {
    pub from_epoch: Option<u64>,
}

/// Parse `?from_epoch=N` leniently into a clear 400.
pub fn watch_query(q: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>) -> Result<WatchQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest(format!("bad query: {e} (expected ?from_epoch=<u64>)")))
}

pub async fn watch(
    State(ctx): State<Arc<MemberContext>>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let from = match watch_query(query) {
        Ok(q) => q.from_epoch,
        Err(e) => return e.into_response(),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream_routing(ctx, from, tx));
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn stream_routing(ctx: Arc<MemberContext>, from: Option<u64>, tx: mpsc::Sender<Bytes>) {
    ctx.metrics.watch_streams.inc();
    let mut epochs = ctx.sm.subscribe_epoch();
    let mut stopping = ctx.stopping.clone();
    let mut heartbeat = tokio::time::interval(ctx.config.watch_heartbeat);
    heartbeat.reset(); // the first tick would fire at once
    let state = ctx.routing_state();
    let mut last = match from {
        Some(f) if state.epoch <= f => f,
        _ => {
            if tx.send(encode_event(&state)).await.is_err() {
                ctx.metrics.watch_streams.dec();
                return;
            }
            state.epoch
        }
    };
    loop {
        tokio::select! {
            changed = epochs.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = ctx.routing_state();
                if state.epoch > last {
                    last = state.epoch;
                    if tx.send(encode_event(&state)).await.is_err() {
                        break;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if tx.send(Bytes::from_static(HEARTBEAT)).await.is_err() {
                    break;
                }
            }
            _ = crate::api::stopped(&mut stopping) => break,
            _ = tx.closed() => break,
        }
    }
    debug!(last_epoch = last, "watch stream ended");
    ctx.metrics.watch_streams.dec();
}
