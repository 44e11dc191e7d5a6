//! The JSON API under `/v1/...` (and `/metrics`, `/openapi.json`), served by every member on
//! the same listener as the Raft RPCs.
//!
//! Request flow: a request reaches any member; [`to_leader`] forwards writes
//! and linearizable reads to the leader (one hop, marked with
//! `x-shardgate-forwarded` so it never loops) unless `?stale=true` asks for a
//! local read. On the leader a node or routing write first confirms quorum
//! (read index, as a linearizable read does), is simulated against the
//! current state (structural errors answer 4xx), admitted by the strategy host when it
//! changes the routing (422 on refusal), checked for quorum (503 without
//! one, nothing proposed), then proposed as one Raft log entry. `/v1/watch`
//! and `/v1/raft/status` always answer locally.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::ReadPolicy;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info};

use shardgate_strategy::RoutingInput;

use crate::admission::{AdmissionGate, DEFAULT_PREVIEW_SAMPLE, MAX_PREVIEW_NODES, MAX_PREVIEW_SAMPLE};
use crate::config::MetaConfig;
use crate::error::ApiError;
use crate::metrics::MetaMetrics;
use crate::model::*;
use crate::raft::{ClientWriteError, NodeId, Raft};
use crate::state::{
    Command, MAX_CONFIG_BYTES, MetaState, Outcome, Rejection, validate_addr, validate_replicas, validate_weight, validate_zone,
};
use crate::store::StateMachineStore;

/// Resolves once `stopping` turns `true` (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        if stopping.changed().await.is_err() {
            return;
        }
    }
}

/// Header set on a request one member forwards to the leader.
pub const FORWARDED_HEADER: &str = "x-shardgate-forwarded";

/// One meta member: what every handler needs.
pub struct MemberContext {
    pub id: NodeId,
    pub addr: String,
    pub raft: Arc<Raft>,
    pub sm: StateMachineStore,
    pub config: MetaConfig,
    pub http: reqwest::Client,
    pub gate: AdmissionGate,
    pub metrics: MetaMetrics,
    /// The proxies that report to this member ([`crate::proxies`]).
    pub proxies: crate::proxies::ProxyRegistry,
    /// Turns `true` when the member shuts down; ends watch streams.
    pub stopping: watch::Receiver<bool>,
}

type Ctx = State<Arc<MemberContext>>;

impl MemberContext {
    /// The leader's id and API address, as this member knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    fn leader_addr(&self) -> Option<String> {
        self.leader().map(|(_, a)| a)
    }

    pub fn routing_state(&self) -> RoutingState {
        let leader = self.leader_addr();
        self.sm.read(|s| s.routing_state(leader))
    }

    /// Nothing is proposed without a quorum: a fresh round of heartbeats
    /// (openraft's read index) must reach a majority within the write
    /// timeout. (A lease would be cheaper but still valid for up to an
    /// election timeout after the majority is gone, and a write proposed then
    /// would hang with an unknown outcome.)
    pub(crate) async fn ensure_quorum(&self) -> Result<(), ApiError> {
        let t = self.config.write_timeout;
        match tokio::time::timeout(t, self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let leader = self.leader().filter(|(id, _)| *id != self.id).map(|(_, a)| a);
                if leader.is_some() {
                    Err(ApiError::NotLeader { leader })
                } else {
                    Err(ApiError::NoQuorum { reason: e.to_string(), leader: None })
                }
            }
            Err(_) => Err(ApiError::NoQuorum {
                reason: format!("the leader heard from no majority within {t:?} (meta.write_timeout); nothing was written"),
                leader: self.leader_addr(),
            }),
        }
    }

    /// Propose `cmd` and wait for it to apply.
    async fn write(&self, cmd: Command) -> Result<WriteReceipt, ApiError> {
        if let Err(e) = self.ensure_quorum().await {
            self.metrics.write("no_quorum");
            return Err(e);
        }
        let t = self.config.write_timeout;
        let start = Instant::now();
        let resp = match tokio::time::timeout(t, self.raft.client_write(cmd)).await {
            Err(_) => {
                self.metrics.write("timeout");
                return Err(ApiError::WriteTimeout(t));
            }
            Ok(Err(e)) => {
                self.metrics.write("not_leader");
                return Err(match e.api_error() {
                    Some(ClientWriteError::ForwardToLeader(f)) => {
                        ApiError::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) }
                    }
                    _ => ApiError::Internal(e.to_string()),
                });
            }
            Ok(Ok(r)) => r,
        };
        self.metrics.commit_seconds.observe(start.elapsed().as_secs_f64());
        match resp.data {
            Outcome::Applied { epoch } => {
                self.metrics.write("committed");
                Ok(WriteReceipt { index: resp.log_id.index(), epoch })
            }
            Outcome::Rejected(r) => {
                self.metrics.write("rejected");
                Err(r.into())
            }
        }
    }

    /// Confirm leadership, simulate, admit and commit a batch of changes.
    ///
    /// A 404 or 409 from the simulation says something about the state, so
    /// it must be as current as a read: quorum is confirmed first (read
    /// index, which also waits until everything committed is applied here).
    /// Without it a leader cut off from the majority answered from its stale
    /// state (409 for an id the majority had removed), and a new leader from
    /// a state missing the last entries of the old one (fault scenario 7).
    pub async fn commit_changes(&self, mut changes: Vec<Change>) -> Result<WriteReceipt, ApiError> {
        if let Err(e) = self.ensure_quorum().await {
            self.metrics.write("no_quorum");
            return Err(e);
        }
        let (before, after, component) = self.sm.read_at(|s, applied| -> Result<_, Rejection> {
            // A hash prefix or `sha256:` form is committed as the full hash.
            for change in &mut changes {
                if let Change::Activate { hash, .. } = change {
                    *hash = s.resolve_hash(hash)?;
                }
            }
            let placeholder_index = applied.unwrap_or(0) + 1;
            let next = s.simulate(placeholder_index, &changes)?;
            let after = next.routing_input();
            let component = after.as_ref().and_then(|a| next.strategies.get(&a.hash)).map(|s| s.component.clone());
            Ok((s.routing_input(), after, component))
        })?;
        let mut moved_share = None;
        if before != after
            && let (Some(input), Some(component)) = (after, component)
        {
            // The share that moves is noted for the history when the
            // strategy, config or replicas change (what the history lists).
            let routing_change = changes.iter().any(|c| matches!(c, Change::Activate { .. } | Change::Rollback { .. }));
            let before = if routing_change {
                before.and_then(|b| Some((b.clone(), self.sm.read(|s| s.strategies.get(&b.hash).map(|s| s.component.clone()))?)))
            } else {
                None
            };
            match self.gate.admit_routing(input, component, before).await {
                Ok(share) => moved_share = share,
                Err(e) => {
                    if matches!(e, ApiError::Busy { .. }) {
                        self.metrics.limited("busy_admission");
                        return Err(e);
                    }
                    self.metrics.admission_refused.inc();
                    info!(reason = %e, "admission refused a routing change");
                    return Err(e);
                }
            }
        }
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64);
        self.write(Command::Changes { changes, at_ms, moved_share }).await
    }
}

/// Read a JSON body; malformed JSON is a 400 naming line and column.
///
/// Every request body is a JSON object: serde would otherwise take a struct
/// from an array, field by field (`[]` as an activation with defaults).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => return Err(ApiError::BadRequest("malformed JSON body: expected a JSON object `{...}`".into())),
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {}", cap_message(&e.to_string()))))
}

/// A parser's message, which may quote the input (an unknown field's name,
/// a bad value): at most 256 characters, keeping its end (serde names the
/// line and column there).
fn cap_message(message: &str) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 64;
    let chars = message.chars().count();
    if chars <= HEAD + TAIL + 32 {
        return message.to_string();
    }
    let head: String = message.chars().take(HEAD).collect();
    let tail: String = message.chars().skip(chars - TAIL).collect();
    format!("{head}… ({} characters left out) …{tail}", chars - HEAD - TAIL)
}

/// Largest JSON request body (every endpoint but the upload, which takes
/// `meta.max_component_size`).
pub const MAX_JSON_BODY: u64 = 2 * 1024 * 1024;

/// Reads every request body before routing, within
/// `meta.body_read_timeout` (408 past it) and under its endpoint's limit
/// (413 over it: `meta.max_component_size` for uploads,
/// [`crate::raft::RAFT_BODY_LIMIT`] for Raft RPCs, [`MAX_JSON_BODY`] for the
/// rest), so no handler, forward or Raft RPC waits on a slow client.
/// Runs after the token check: an unauthenticated client is refused before
/// its body is read.
pub async fn bounded_body(State(ctx): Ctx, req: Request, next: Next) -> Response {
    let upload = req.method() == Method::POST && req.uri().path() == "/v1/strategies";
    let raft_rpc = req.uri().path().starts_with("/raft/");
    let (limit, limit_name) = if upload {
        (ctx.config.max_component_size.as_u64(), "meta.max_component_size")
    } else if raft_rpc {
        // A snapshot or an append may carry the whole strategy registry.
        (crate::raft::RAFT_BODY_LIMIT as u64, "the Raft RPC body limit of 1 GiB")
    } else {
        (MAX_JSON_BODY, "the JSON body limit of 2 MiB")
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared == Some(0) || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING)) {
        return next.run(req).await;
    }
    let refuse = |e: ApiError| {
        ctx.metrics.limited(if matches!(e, ApiError::BodyTimeout(_)) { "body_timeout" } else { "body_too_large" });
        e.into_response()
    };
    if upload && let Some(size) = declared.filter(|s| *s > limit) {
        return refuse(ApiError::TooLarge { size, limit });
    }
    if declared.is_some_and(|s| s > limit) {
        return refuse(ApiError::BodyTooLarge { limit, limit_name });
    }
    let (parts, body) = req.into_parts();
    let timeout = ctx.config.body_read_timeout;
    let collected =
        match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit as usize))).await {
            Err(_) => return refuse(ApiError::BodyTimeout(timeout)),
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return refuse(if upload {
                    ApiError::TooLarge { size: limit + 1, limit }
                } else {
                    ApiError::BodyTooLarge { limit, limit_name }
                });
            }
            Ok(Err(e)) => return ApiError::BadRequest(format!("request body could not be read: {e}")).into_response(),
        };
    next.run(Request::from_parts(parts, Body::from(collected))).await
}

/// Gives the framework's own refusals (unknown path 404, wrong method 405
/// with `Allow`, a path segment that is not UTF-8 400, a body over a limit
/// 413) the same JSON [`crate::model::ErrorBody`] as every other error.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/event-stream"));
    if !status.is_client_error() || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let (kind, fallback) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            ("method_not_allowed", format!("method not allowed on this path (allowed: {allow})"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "request body too large".to_string()),
        _ => ("bad_request", status.canonical_reason().unwrap_or("bad request").to_lowercase()),
    };
    let error = if text.is_empty() { fallback } else { text };
    let mut out = (status, Json(crate::model::ErrorBody { error, kind: kind.into(), leader: None })).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

fn created(receipt: WriteReceipt) -> Response {
    (StatusCode::CREATED, Json(receipt)).into_response()
}

pub fn router(ctx: Arc<MemberContext>) -> Router {
    let upload_limit = ctx.config.max_component_size.as_u64() as usize;
    // A route layer on each method router: it runs only for the methods the
    // path serves, so a wrong method is answered 405 with `Allow` by this
    // member, whatever the leader or quorum, and never forwarded.
    let leader = middleware::from_fn_with_state(ctx.clone(), to_leader);
    let leader_routes = Router::new()
        .route("/v1/nodes", get(list_nodes).post(add_node).route_layer(leader.clone()))
        .route("/v1/nodes/{id}", get(get_node).patch(update_node).delete(remove_node).route_layer(leader.clone()))
        .route("/v1/changes", post(apply_changes).route_layer(leader.clone()))
        .route(
            "/v1/strategies",
            get(list_strategies).post(upload_strategy).layer(DefaultBodyLimit::max(upload_limit + 1)).route_layer(leader.clone()),
        )
        .route("/v1/strategies/{hash}", get(get_strategy).route_layer(leader.clone()))
        .route("/v1/strategies/{hash}/component", get(get_component).route_layer(leader.clone()))
        .route("/v1/strategies/{hash}/activate", post(activate).route_layer(leader.clone()))
        .route("/v1/routing", get(get_routing).route_layer(leader.clone()))
        .route("/v1/routing/history", get(get_history).route_layer(leader.clone()))
        .route("/v1/routing/rollback", post(rollback).route_layer(leader.clone()))
        .route("/v1/preview", post(preview).route_layer(leader.clone()))
        .route("/v1/lookup", post(lookup).route_layer(leader));
    Router::new()
        .merge(leader_routes)
        .route("/v1/raft/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(ctx)
}

fn wants_stale(req: &Request) -> bool {
    req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "stale=true" || p == "stale=1" || p == "stale"))
}

/// Forward to the leader unless this member leads (or a stale read is asked).
pub async fn to_leader(State(ctx): Ctx, req: Request, next: Next) -> Response {
    let is_read = req.method() == Method::GET;
    if is_read && wants_stale(&req) {
        return next.run(req).await;
    }
    match ctx.leader() {
        Some((id, _)) if id == ctx.id => {
            if is_read && let Err(e) = ctx.ensure_quorum().await {
                return e.into_response();
            }
            next.run(req).await
        }
        Some((_, addr)) => {
            if req.headers().contains_key(FORWARDED_HEADER) {
                // Forwarded to us, but we are not the leader (any more).
                ApiError::NotLeader { leader: Some(addr) }.into_response()
            } else {
                forward(&ctx, req, &addr).await.unwrap_or_else(|e| e.into_response())
            }
        }
        None => ApiError::NoLeader.into_response(),
    }
}

async fn forward(ctx: &MemberContext, req: Request, leader: &str) -> Result<Response, ApiError> {
    ctx.metrics.forwarded.inc();
    let (parts, body) = req.into_parts();
    let limit = ctx.config.max_component_size.as_u64() as usize + 1;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::TooLarge {
        size: parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(limit as u64),
        limit: limit as u64 - 1,
    })?;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{leader}{path}");
    debug!(%url, method = %parts.method, "forwarding to the leader");
    let timeout = ctx.config.write_timeout * 2 + Duration::from_secs(1);
    let mut rb = ctx.http.request(parts.method.clone(), &url).header(FORWARDED_HEADER, ctx.id.to_string()).timeout(timeout).body(body);
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        rb = rb.header(header::CONTENT_TYPE, ct.clone());
    }
    // The leader checks `meta.admin_token` again: pass the client's own.
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        rb = rb.header(header::AUTHORIZATION, auth.clone());
    }
    // A timeout leaves the outcome of a forwarded write unknown, and so does
    // a connection lost once it was made (the leader may have committed the
    // write and died before answering); only a connection never made means
    // the leader never saw it. (A read changes nothing either way.)
    let is_write = parts.method != Method::GET;
    let unreachable = |e: reqwest::Error| {
        if e.is_timeout() {
            ApiError::WriteTimeout(timeout)
        } else if is_write && !e.is_connect() {
            ApiError::ForwardLost { addr: leader.to_string(), reason: e.to_string() }
        } else {
            ApiError::LeaderUnreachable { addr: leader.to_string(), reason: e.to_string() }
        }
    };
    let resp = rb.send().await.map_err(unreachable)?;
    let status = resp.status();
    // The leader's headers that mean something to the client.
    let relayed: Vec<_> = [header::CONTENT_TYPE, header::RETRY_AFTER, header::ALLOW, header::WWW_AUTHENTICATE]
        .into_iter()
        .filter_map(|name| resp.headers().get(&name).cloned().map(|v| (name, v)))
        .collect();
    let bytes = resp.bytes().await.map_err(unreachable)?;
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    out.headers_mut().extend(relayed);
    Ok(out)
}

async fn list_nodes(State(ctx): Ctx) -> Json<Vec<NodeView>> {
    Json(ctx.routing_state().nodes)
}

async fn get_node(State(ctx): Ctx, Path(id): Path<String>) -> Result<Json<NodeView>, ApiError> {
    ctx.routing_state().nodes.into_iter().find(|n| n.id == id).map(Json).ok_or_else(|| Rejection::UnknownNode(id).into())
}

async fn add_node(State(ctx): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let n: NewNode = parse_json(&body)?;
    let receipt = ctx.commit_changes(vec![Change::AddNode { id: n.id, addr: n.addr, weight: n.weight, zone: n.zone }]).await?;
    Ok(created(receipt))
}

async fn update_node(State(ctx): Ctx, Path(id): Path<String>, body: Bytes) -> Result<Json<WriteReceipt>, ApiError> {
    let u: NodeUpdate = parse_json(&body)?;
    Ok(Json(ctx.commit_changes(vec![Change::UpdateNode { id, weight: u.weight, state: u.state }]).await?))
}

async fn remove_node(State(ctx): Ctx, Path(id): Path<String>) -> Result<Json<WriteReceipt>, ApiError> {
    Ok(Json(ctx.commit_changes(vec![Change::RemoveNode { id }]).await?))
}

async fn apply_changes(State(ctx): Ctx, body: Bytes) -> Result<Json<WriteReceipt>, ApiError> {
    let batch: ChangeBatch = parse_json(&body)?;
    Ok(Json(ctx.commit_changes(batch.changes).await?))
}

async fn list_strategies(State(ctx): Ctx) -> Json<Vec<StrategyInfo>> {
    Json(ctx.sm.read(|s| s.strategies.values().map(|s| s.info.clone()).collect()))
}

async fn get_strategy(State(ctx): Ctx, Path(hash): Path<String>) -> Result<Json<StrategyInfo>, ApiError> {
    Ok(Json(ctx.sm.read(|s| s.resolve_hash(&hash).map(|h| s.strategies[&h].info.clone()))?))
}

async fn get_component(State(ctx): Ctx, Path(hash): Path<String>) -> Result<Response, ApiError> {
    let bytes = ctx.sm.read(|s| s.resolve_hash(&hash).map(|h| s.strategies[&h].component.clone()))?;
    let mut resp = Response::new(Body::from(bytes.as_ref().clone()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/wasm"));
    Ok(resp)
}

async fn upload_strategy(State(ctx): Ctx, req: Request) -> Result<Response, ApiError> {
    let limit = ctx.config.max_component_size.as_u64();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(size) = declared.filter(|s| *s > limit) {
        return Err(ApiError::TooLarge { size, limit });
    }
    let body = axum::body::to_bytes(req.into_body(), limit as usize + 1)
        .await
        .map_err(|_| ApiError::TooLarge { size: declared.unwrap_or(limit + 1), limit })?;
    if body.len() as u64 > limit {
        return Err(ApiError::TooLarge { size: body.len() as u64, limit });
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest("empty body: send the component bytes".into()));
    }
    // Content-addressed: a component already in the registry is answered
    // without compiling it again.
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    if let Some(existing) = ctx.sm.read(|s| s.strategies.get(&hash).map(|s| s.info.clone())) {
        return Ok((StatusCode::OK, Json(existing)).into_response());
    }
    let bytes = Arc::new(body.to_vec());
    let strategy = match ctx.gate.admit_upload(bytes.clone()).await {
        Ok(s) => s,
        Err(e @ ApiError::Busy { .. }) => {
            ctx.metrics.limited("busy_admission");
            return Err(e);
        }
        Err(e) => {
            ctx.metrics.admission_refused.inc();
            info!(reason = %e, "admission refused an upload");
            return Err(e);
        }
    };
    debug_assert_eq!(strategy.hash(), hash);
    let meta = strategy.metadata();
    let mut info = StrategyInfo {
        hash: hash.clone(),
        name: meta.name.clone(),
        version: meta.version.clone(),
        description: meta.description.clone(),
        size: bytes.len() as u64,
        uploaded_at: 0,
        uploaded_unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    };
    let receipt = ctx.write(Command::PutStrategy { info: info.clone(), component: bytes }).await?;
    info.uploaded_at = ctx.sm.read(|s| s.strategies.get(&hash).map(|s| s.info.uploaded_at)).unwrap_or(receipt.index);
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn activate(State(ctx): Ctx, Path(hash): Path<String>, body: Bytes) -> Result<Json<WriteReceipt>, ApiError> {
    let a: Activation = if body.is_empty() { Activation { config: String::new(), replicas: 1 } } else { parse_json(&body)? };
    Ok(Json(ctx.commit_changes(vec![Change::Activate { hash, config: a.config, replicas: a.replicas }]).await?))
}

async fn get_routing(State(ctx): Ctx) -> Json<RoutingState> {
    Json(ctx.routing_state())
}

async fn get_history(State(ctx): Ctx) -> Json<Vec<HistoryEntry>> {
    Json(ctx.sm.read(|s| s.history.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    epoch: u64,
}

async fn rollback(State(ctx): Ctx, body: Bytes) -> Result<Json<WriteReceipt>, ApiError> {
    let r: RollbackRequest = parse_json(&body)?;
    Ok(Json(ctx.commit_changes(vec![Change::Rollback { epoch: r.epoch }]).await?))
}

/// A strategy's input and component bytes.
type Routed = (RoutingInput, Arc<Vec<u8>>);

/// The active routing (if any) and the candidate `req` describes: absent
/// fields default to the active routing, `req.nodes` replaces the node list.
fn candidate(s: &MetaState, req: &PreviewRequest) -> Result<(Option<Routed>, Routed), ApiError> {
    let current = s.routing_input().and_then(|input| {
        let bytes = s.strategies.get(&input.hash)?.component.clone();
        Some((input, bytes))
    });
    let hash = match &req.hash {
        Some(h) => s.resolve_hash(h)?,
        None => s
            .routing
            .as_ref()
            .map(|r| r.hash.clone())
            .ok_or_else(|| ApiError::BadRequest("no strategy is active: name one with \"hash\"".into()))?,
    };
    let bytes = s.strategies.get(&hash).ok_or_else(|| Rejection::UnknownStrategy(hash.clone()))?.component.clone();
    let same_strategy = s.routing.as_ref().is_some_and(|r| r.hash == hash);
    let config = match (&req.config, &s.routing) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) if same_strategy => r.config.clone(),
        _ => String::new(),
    };
    let replicas = req.replicas.or(s.routing.as_ref().map(|r| r.replicas)).unwrap_or(1);
    validate_replicas(replicas)?;
    if let Some(c) = &req.config
        && c.len() > MAX_CONFIG_BYTES
    {
        return Err(Rejection::Invalid(format!("strategy config is {} bytes; the limit is {MAX_CONFIG_BYTES}", c.len())).into());
    }
    // The candidate is the routing state activating (hash, config,
    // replicas) would produce, seen through the same function as
    // every proxy, with the node list replaced when one is given.
    let mut candidate = s.routing_state(None);
    candidate.strategy = Some(StrategyRef { hash: hash.clone(), name: String::new(), version: String::new() });
    candidate.config = config;
    candidate.replicas = replicas;
    let mut input =
        RoutingInput::from_state(&candidate).ok_or_else(|| ApiError::Internal("the candidate routing names no strategy".into()))?;
    if let Some(list) = &req.nodes {
        if list.len() > MAX_PREVIEW_NODES {
            return Err(ApiError::BadRequest(format!(
                "{} candidate nodes; a preview takes at most {MAX_PREVIEW_NODES} (MAX_PREVIEW_NODES)",
                list.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for n in list {
            crate::state::validate_node_id(&n.id)?;
            validate_addr("addr", &n.addr)?;
            validate_weight(n.weight)?;
            validate_zone(&n.zone)?;
            if !seen.insert(n.id.clone()) {
                return Err(Rejection::DuplicateNode(n.id.clone()).into());
            }
        }
        input.nodes =
            list.iter().map(|n| shardgate_strategy::NodeSpec { id: n.id.clone(), weight: n.weight, zone: n.zone.clone() }).collect();
    }
    Ok((current, (input, bytes)))
}

async fn preview(State(ctx): Ctx, body: Bytes) -> Result<Json<PreviewReport>, ApiError> {
    let req: PreviewRequest = if body.is_empty() { PreviewRequest::default() } else { parse_json(&body)? };
    let sample = req.sample.unwrap_or(DEFAULT_PREVIEW_SAMPLE);
    if sample == 0 || sample > MAX_PREVIEW_SAMPLE {
        return Err(ApiError::BadRequest(format!("sample {sample} must be between 1 and {MAX_PREVIEW_SAMPLE} (MAX_PREVIEW_SAMPLE)")));
    }
    let (current, candidate) = ctx.sm.read(|s: &MetaState| candidate(s, &req))?;
    let report = ctx.gate.preview(current, candidate, sample).await.inspect_err(|e| {
        if matches!(e, ApiError::Busy { .. }) {
            ctx.metrics.limited("busy_preview");
        }
    })?;
    Ok(Json(report))
}

/// Longest key `POST /v1/lookup` takes, in bytes: the key API's default
/// `max_key_size`.
pub const MAX_LOOKUP_KEY_BYTES: usize = shardgate_api::limits::DEFAULT_MAX_KEY_SIZE as usize;

async fn lookup(State(ctx): Ctx, body: Bytes) -> Result<Json<LookupReport>, ApiError> {
    let req: LookupRequest = parse_json(&body)?;
    // serde takes a struct from an array too: the candidate and its nodes
    // must be JSON objects, as the top level must.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(c) = v.get("candidate")
        && (!c.is_object() || c.get("nodes").and_then(|n| n.as_array()).is_some_and(|n| n.iter().any(|n| !n.is_object())))
    {
        return Err(ApiError::BadRequest("malformed JSON body: candidate and its nodes must be JSON objects `{...}`".into()));
    }
    if req.key.is_empty() {
        return Err(ApiError::BadRequest("key is empty".into()));
    }
    if req.key.len() > MAX_LOOKUP_KEY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "key is {} bytes; the limit is {MAX_LOOKUP_KEY_BYTES} (MAX_LOOKUP_KEY_BYTES, the key API's default max_key_size)",
            req.key.len()
        )));
    }
    if req.candidate.as_ref().is_some_and(|c| c.sample.is_some()) {
        return Err(ApiError::BadRequest("candidate.sample has no meaning in a lookup: leave it out".into()));
    }
    let (epoch, current, candidate) = ctx.sm.read(|s: &MetaState| -> Result<_, ApiError> {
        let current = s.routing_input().and_then(|input| {
            let bytes = s.strategies.get(&input.hash)?.component.clone();
            Some((input, bytes))
        });
        let candidate = match &req.candidate {
            Some(c) => Some(candidate(s, c)?.1),
            None => None,
        };
        Ok((s.epoch, current, candidate))
    })?;
    let (active, candidate) = ctx.gate.lookup(current, candidate, req.key.clone().into_bytes()).await.inspect_err(|e| {
        if matches!(e, ApiError::Busy { .. }) {
            ctx.metrics.limited("busy_preview");
        }
    })?;
    Ok(Json(LookupReport { key: req.key, epoch, active, candidate }))
}

/// `GET /healthz`: 200 whenever the process serves requests.
async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
}

/// What `GET /readyz` answers.
#[derive(serde::Serialize)]
struct Readiness {
    ready: bool,
    /// Why the member is not ready (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    leader: Option<u64>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
}

/// `GET /readyz`: 200 when this member knows a leader and has applied
/// every entry it knows to be committed, else 503 with the reason. A leader
/// with other voters whose last acknowledgement by a majority is older than
/// twice `meta.election_timeout` is not ready either (it has lost its
/// quorum; a single voter is its own majority).
/// Answered locally, never forwarded.
async fn readyz(State(ctx): Ctx) -> Response {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let committed = m.local_committed.as_ref().map(|l| l.index());
    let applied = m.last_applied.as_ref().map(|l| l.index());
    let quorum_window = ctx.config.election_timeout * 2;
    let quorum_age = m.last_quorum_acked.as_ref().map(|t| openraft::Instant::elapsed(&**t));
    let reason = if m.current_leader.is_none() {
        Some("no leader is known: the cluster is electing one, lacks quorum, or this member has not joined".to_string())
    } else if m.current_leader == Some(m.id)
        && m.membership_config.membership().voter_ids().nth(1).is_some()
        && let Some(age) = quorum_age.filter(|age| *age > quorum_window)
    {
        Some(format!("this member leads but no majority has acknowledged it for {age:?} (over 2 x meta.election_timeout)"))
    } else if applied < committed {
        Some(format!(
            "applied index {} is behind committed index {}: still applying the log",
            applied.map_or("none".to_string(), |a| a.to_string()),
            committed.map_or("none".to_string(), |c| c.to_string())
        ))
    } else {
        None
    };
    let status = if reason.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness { ready: reason.is_none(), reason, leader: m.current_leader, committed_index: committed, applied_index: applied };
    (status, Json(body)).into_response()
}

async fn status(State(ctx): Ctx) -> Json<RaftStatus> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    // The leader knows how far each member is behind and when it last
    // answered (what a promotion checks); followers leave these out.
    let members = membership
        .nodes()
        .map(|(id, n)| {
            let p = crate::raft::progress(&m, *id);
            MemberView {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                matched_index: p.as_ref().and_then(|p| p.matched),
                lag: p.as_ref().filter(|_| *id != m.id).map(|p| p.lag),
                last_ack_ms: p.as_ref().and_then(|p| p.ack_age).map(|a| a.as_millis() as u64),
            }
        })
        .collect();
    let membership_change_pending = crate::raft::membership_change_pending(&m);
    let leader_addr = m.current_leader.and_then(|id| membership.get_node(&id).map(|n| n.addr.clone()));
    let state = format!("{:?}", m.state).to_lowercase();
    Json(RaftStatus {
        id: m.id,
        state,
        leader: m.current_leader,
        leader_addr,
        term: m.current_term,
        last_log_index: m.last_log_index,
        committed_index: m.local_committed.as_ref().map(|l| l.index()),
        applied_index: m.last_applied.as_ref().map(|l| l.index()),
        snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
        purged_index: m.purged.as_ref().map(|l| l.index()),
        members,
        membership_change_pending,
        epoch: ctx.sm.read(|s| s.epoch),
    })
}

/// The OpenAPI 3.1 document of this API and the Raft RPCs
/// (`host/meta/openapi.json`), served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics(State(ctx): Ctx) -> Response {
    let body = ctx.metrics.render(&ctx.raft.metrics().borrow_watched().clone(), ctx.sm.read(|s| s.epoch));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
