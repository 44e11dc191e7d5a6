//! The proxy's HTTP/1.1 front: the handlers of the key API, served by the
//! accept loop every role shares ([`shardgate_role::serve`]: connection
//! limit, header read timeout, TLS handshake, graceful shutdown). A client cannot tell
//! the proxy from a node: the same endpoints, the same input checks (the
//! node's `key`, `ttl`, `etag`, `batch` and `error` modules), the same
//! answers, plus a `Shardgate-Epoch` header naming the routing epoch that
//! routed the request.
//!
//! Request flow: client -> [`run`]'s connection (over `proxy.max_connections`:
//! 503 and close; TLS handshake when `proxy.tls` is set) -> `dispatch`
//! (`/v1/` only: `proxy.rate_limit` 429, then `proxy.data_token` 401/403,
//! see [`crate::admission`] and [`crate::auth`]) -> load the
//! routing epoch once -> route the key ([`crate::routing`]) -> pick healthy
//! owners ([`crate::health`]) -> forward ([`crate::upstream`]; batches via
//! [`crate::fanout`]) -> relay the node's answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use hyper::body::Incoming;
use serde::Serialize;
use shardgate_meta_client::MetaClient;
use shardgate_api::etag::{ReadCondition, WriteCondition, parse_etag};
use shardgate_api::key::{KEY_PATH_PREFIX, decode_key_segment, key_path};
use shardgate_api::ttl::ttl_from_query;
use shardgate_api::{ApiError, Limits};
use shardgate_strategy::Sandbox;
use shardgate_role::serve::{ConnectionMetrics, ServeConfig};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::admission::ClientRateLimit;
use shardgate_api::body::{content_length, read_body};
use crate::auth::{ClientToken, is_data_path};
use crate::config::{OwnerDownPolicy, ProxyConfig};
use crate::error::{ProxyError, RequestError};
use crate::fanout::Migrated;
use crate::health::{NodeBoard, NodeHandle, NodeHealth};
use crate::metrics::ProxyMetrics;
use crate::routing::{Fallback, Routing, RoutingEpoch, RoutingNotes};
use crate::upstream::{Upstream, UpstreamError, UpstreamResponse};

/// Header carrying the routing epoch that routed a request.
pub const EPOCH_HEADER: &str = "shardgate-epoch";

/// `GET /v1/owners/{key}`: which nodes own a key under the serving epoch
/// (preference order, ejected or not). Not a node endpoint: for operators
/// and tests.
pub const OWNERS_PATH_PREFIX: &str = "/v1/owners/";

/// Answer of `GET /v1/owners/{key}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Owners {
    pub epoch: u64,
    pub owners: Vec<String>,
}

/// What every request of one proxy shares.
pub(crate) struct Shared {
    pub config: ProxyConfig,
    pub limits: Limits,
    pub routing: Arc<Routing>,
    pub board: Arc<NodeBoard>,
    pub upstream: Upstream,
    pub metrics: Arc<ProxyMetrics>,
    /// `proxy.data_token`: required on `/v1/` when set.
    client_token: Option<ClientToken>,
    /// `proxy.rate_limit`, when set.
    rate_limit: Option<Arc<ClientRateLimit>>,
    ready: AtomicBool,
}

/// Serves the proxy API on `listener` until `shutdown` resolves, following
/// meta's routing watch meanwhile; then stops accepting, lets in-flight
/// requests finish (up to `proxy.shutdown_timeout`) and returns.
/// `config.listen` is not used: the caller binds, so tests can bind
/// `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    config.validate()?;
    let node_token = config.resolve_node_token()?;
    let client_token = config.resolve_data_token()?.map(|t| ClientToken::new(&t));
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let local = listener.local_addr().map_err(ProxyError::Listener)?;
    let metrics = Arc::new(ProxyMetrics::new());
    let pool = crate::health::PoolSettings {
        max_idle: config.pool_max_idle_per_node,
        idle_timeout: config.pool_idle_timeout,
        connect_timeout: config.connect_timeout,
        max_body: config.max_batch_size.as_u64().max(config.max_value_size.as_u64()) as usize + (64 << 10),
        pipes: config.pipelines_per_node,
        stall_timeout: config.request_timeout,
    };
    let board = Arc::new(NodeBoard::new(config.eject_after_failures, config.probe_backoff_min, config.probe_backoff_max, pool));
    let sandbox = Sandbox::new(shardgate_strategy::Limits::default()).map_err(|e| ProxyError::Sandbox(e.to_string()))?;
    let routing = Arc::new(Routing::new(
        sandbox,
        board.clone(),
        metrics.clone(),
        config.fault_threshold,
        config.fault_window,
        config.migration_window,
    ));
    let shared = Arc::new(Shared {
        limits: config.limits(),
        upstream: Upstream::new(&config, board.clone(), node_token.as_deref()),
        routing: routing.clone(),
        board,
        metrics,
        client_token,
        rate_limit: config.rate_limit.map(|r| Arc::new(ClientRateLimit::new(r))),
        ready: AtomicBool::new(true),
        config,
    });
    let meta: MetaClient = crate::tls::meta_client(&shared.config)?.with_stale_reads(true);
    let mut background = vec![
        tokio::spawn(crate::routing::follow(routing.clone(), meta)),
        tokio::spawn(routing.clone().run_detour_builder()),
        tokio::spawn(crate::health::run_checker(shared.clone())),
    ];
    if let Some(limit) = &shared.rate_limit {
        background.push(tokio::spawn(limit.clone().prune()));
    }
    let serve_config = ServeConfig {
        role: "proxy",
        max_connections: shared.config.max_connections,
        max_connections_key: "proxy.max_connections",
        retry_after_secs: Some(1),
        header_read_timeout: shared.config.header_read_timeout,
        tls,
        drain_timeout: shared.config.shutdown_timeout,
    };
    info!(addr = %local, meta = ?shared.config.meta, tls = serve_config.tls.is_some(), data_token = shared.client_token.is_some(), node_token = node_token.is_some(), "proxy listening");
    let not_ready = shared.clone();
    let shutdown = async move {
        shutdown.await;
        not_ready.ready.store(false, Ordering::Relaxed);
    };
    let for_connections = shared.clone();
    // One service per connection: it knows the client's address (`proxy.rate_limit`).
    let service_for = move |peer: SocketAddr| {
        let shared = for_connections.clone();
        let client = peer.ip();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(dispatch(shared, client, req).await) }
        })
    };
    let connections: Arc<dyn ConnectionMetrics> = shared.metrics.clone();
    let http = hyper::server::conn::http1::Builder::new();
    shardgate_role::serve::serve(listener, serve_config, http, service_for, connections, shutdown).await;
    for task in background {
        task.abort();
    }
    Ok(())
}

/// Open and refused connections under the proxy's metric names.
impl ConnectionMetrics for ProxyMetrics {
    fn opened(&self) {
        self.connections_open.inc();
    }
    fn closed(&self) {
        self.connections_open.dec();
    }
    fn rejected(&self) {
        self.refuse("too_many_connections");
    }
}

async fn dispatch(shared: Arc<Shared>, client: IpAddr, req: Request<Incoming>) -> Response {
    let path = req.uri().path();
    // Rate limit first, so floods of requests without a token are cheap.
    if let Some(limit) = &shared.rate_limit
        && is_data_path(path)
        && let Err(error) = limit.check(client)
    {
        shared.metrics.refuse("rate_limited");
        debug!(%client, path, "refusing request over proxy.rate_limit");
        let response = error.into_response();
        shared.metrics.request("refused", response.status().as_u16());
        return response;
    }
    if let Some(token) = &shared.client_token
        && is_data_path(path)
        && let Err(error) = token.check(req.headers())
    {
        let reason = if matches!(error, RequestError::Forbidden) { "forbidden" } else { "unauthorized" };
        shared.metrics.refuse(reason);
        debug!(path, status = %error.status(), "refusing data request without a valid token");
        let response = error.into_response();
        shared.metrics.request("refused", response.status().as_u16());
        return response;
    }
    let (route, response) = if path.starts_with(KEY_PATH_PREFIX) {
        let epoch = shared.routing.load();
        let method = req.method().clone();
        let (route, result) = match method {
            Method::GET => ("get", get_key(&shared, &epoch, req).await),
            Method::HEAD => ("head", get_key(&shared, &epoch, req).await),
            Method::PUT => ("put", put_key(&shared, &epoch, req).await),
            Method::DELETE => ("delete", delete_key(&shared, &epoch, req).await),
            _ => ("other", Err(RequestError::MethodNotAllowed { allow: "GET,HEAD,PUT,DELETE" })),
        };
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        response.headers_mut().insert(HeaderName::from_static(EPOCH_HEADER), epoch.epoch_header.clone());
        (route, response)
    } else {
        // Like a node (axum): HEAD is answered as GET without a body (hyper
        // leaves it out), and a known path with another method is a 405
        // naming the methods it takes.
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match (req.method(), path) {
            (&Method::POST, "/v1/batch/get") => {
                let epoch = shared.routing.load();
                let r = crate::fanout::batch_get(&shared, &epoch, req).await.unwrap_or_else(IntoResponse::into_response);
                ("batch_get", with_epoch(r, &epoch))
            }
            (&Method::POST, "/v1/batch/put") => {
                let epoch = shared.routing.load();
                let r = crate::fanout::batch_put(&shared, &epoch, req).await.unwrap_or_else(IntoResponse::into_response);
                ("batch_put", with_epoch(r, &epoch))
            }
            (_, "/v1/batch/get" | "/v1/batch/put") => ("other", RequestError::MethodNotAllowed { allow: "POST" }.into_response()),
            (_, "/status") if get => ("status", status(&shared)),
            (_, p) if get && p.starts_with(OWNERS_PATH_PREFIX) => {
                let epoch = shared.routing.load();
                let r = owners(&shared, &epoch, req.uri()).unwrap_or_else(IntoResponse::into_response);
                ("owners", with_epoch(r, &epoch))
            }
            (_, "/metrics") if get => ("metrics", metrics(&shared)),
            (_, "/healthz") if get => ("healthz", "ok\n".into_response()),
            (_, "/readyz") if get => ("readyz", readyz(&shared)),
            (_, "/openapi.json") if get => {
                ("openapi", ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response())
            }
            (_, "/status" | "/metrics" | "/healthz" | "/readyz" | "/openapi.json") => {
                ("other", RequestError::MethodNotAllowed { allow: "GET,HEAD" }.into_response())
            }
            (_, p) if p.starts_with(OWNERS_PATH_PREFIX) => ("other", RequestError::MethodNotAllowed { allow: "GET,HEAD" }.into_response()),
            _ => ("other", ApiError::NoRoute.into_response()),
        }
    };
    shared.metrics.request(route, response.status().as_u16());
    response
}

/// The OpenAPI 3.1 document of the proxy's API (`host/proxy/openapi.json`),
/// served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

fn with_epoch(mut r: Response, epoch: &RoutingEpoch) -> Response {
    r.headers_mut().insert(HeaderName::from_static(EPOCH_HEADER), epoch.epoch_header.clone());
    r
}

/// The owners to use for `key` under `epoch`, healthy ones first in
/// preference order. Ejected owners are skipped; when none is left the
/// owner-down policy decides.
pub(crate) fn pick_owners(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    positions: &[u32],
) -> Result<Vec<Arc<NodeHandle>>, RequestError> {
    let mut owners: Vec<Arc<NodeHandle>> = Vec::with_capacity(positions.len());
    for &p in positions {
        if let Some(n) = epoch.nodes.get(p as usize)
            && n.is_routable()
        {
            owners.push(n.clone());
        }
    }
    if !owners.is_empty() {
        return Ok(owners);
    }
    let names = || positions.iter().filter_map(|&p| epoch.nodes.get(p as usize)).map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ");
    match shared.config.owner_down {
        OwnerDownPolicy::FailFast => Err(RequestError::OwnersDown { owners: names() }),
        OwnerDownPolicy::NextOwner => {
            let mut detour = Vec::with_capacity(positions.len());
            if shared.routing.detour_owners(epoch, key, &mut detour) {
                owners.extend(detour.iter().filter_map(|&p| epoch.nodes.get(p as usize)).filter(|n| n.is_routable()).cloned());
            }
            if owners.is_empty() {
                // Detour not built yet: take the first healthy node after the owners.
                return Err(RequestError::NoHealthyNode { owners: names() });
            }
            Ok(owners)
        }
    }
}

/// Reads from the first owner, then the next ones on failures (at most
/// `1 + proxy.read_retries` attempts). Answers below 500 end the loop.
pub(crate) async fn read_from(
    shared: &Shared,
    owners: &[Arc<NodeHandle>],
    method: Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<UpstreamResponse, RequestError> {
    let attempts = (1 + shared.config.read_retries as usize).min(owners.len()).max(1);
    let mut last: Option<RequestError> = None;
    for (i, node) in owners.iter().take(attempts).enumerate() {
        if i > 0 {
            shared.metrics.read_retries.inc();
        }
        match shared.upstream.send(node, method.clone(), path, headers, body.clone()).await {
            Ok(r) if !r.status.is_server_error() => return Ok(r),
            Ok(r) => last = Some(relay_error(node, &r)),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or(RequestError::NoHealthyNode { owners: String::new() }))
}

fn relay_error(node: &NodeHandle, r: &UpstreamResponse) -> RequestError {
    RequestError::Upstream(UpstreamError::Unreachable {
        node: node.id.clone(),
        addr: node.addr.clone(),
        reason: format!("answered HTTP {}: {}", r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()),
    })
}

/// The client-facing response for a node's answer (its headers moved over;
/// [`UpstreamResponse`] holds no hop-by-hop ones).
pub(crate) fn relay(r: UpstreamResponse) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = r.status;
    *response.headers_mut() = r.headers;
    response
}

/// Ids of the nodes at `positions` (a key's nominal owners).
pub(crate) fn owner_ids<'a>(epoch: &'a RoutingEpoch, positions: &[u32]) -> Vec<&'a str> {
    positions.iter().filter_map(|&p| epoch.nodes.get(p as usize)).map(|n| n.id.as_str()).collect()
}

fn key_of<'a>(uri: &'a Uri, limits: &Limits) -> Result<std::borrow::Cow<'a, [u8]>, RequestError> {
    let segment = uri.path().strip_prefix(KEY_PATH_PREFIX).unwrap_or("");
    Ok(decode_key_segment(segment, limits)?)
}

fn forward_headers(headers: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in names {
        for v in headers.get_all(name) {
            out.push((name.clone(), v.clone()));
        }
    }
    out
}

async fn get_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    let condition = ReadCondition::from_headers(req.headers())?;
    let method = req.method().clone();
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = key_path(&key);
    let headers = forward_headers(req.headers(), &[header::IF_NONE_MATCH]);
    let response = read_from(shared, &owners, method.clone(), &path, &headers, Bytes::new()).await?;
    if response.status == StatusCode::NOT_FOUND && owners.len() > 1 {
        if let Some(found) = read_replicas(shared, &owners, &path).await {
            return Ok(found.into_response(&condition, &method));
        }
    }
    if response.status == StatusCode::NOT_FOUND && epoch.previous.is_some() {
        let chain = epoch.migration_chain(shared.routing.migration_window());
        if !chain.is_empty() {
            match crate::fanout::migrate_one(shared, &chain, &key, &owner_ids(epoch, &positions), &owners, &path).await {
                Migrated::Found { version, content_type, value } => {
                    return Ok(FoundValue { version, content_type, value }.into_response(&condition, &method));
                }
                Migrated::Superseded => {
                    let again = read_from(shared, &owners, method, &path, &headers, Bytes::new()).await?;
                    return Ok(relay(again));
                }
                Migrated::NotFound => {}
            }
        }
    }
    Ok(relay(response))
}

/// A value found somewhere other than the first owner: on a replica, or on
/// an earlier epoch's owner (migration).
struct FoundValue {
    version: u64,
    content_type: HeaderValue,
    value: Bytes,
}

impl FoundValue {
    fn into_response(self, condition: &ReadCondition, method: &Method) -> Response {
        let etag = shardgate_api::etag::format_etag(self.version);
        if condition.not_modified(self.version) {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
        }
        let len = self.value.len();
        let mut r = Response::new(if *method == Method::HEAD { Body::empty() } else { Body::from(self.value) });
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, self.content_type);
        h.insert(header::ETAG, etag);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    }
}

/// Read-through to the replicas: the first owner can miss a key its
/// replicas hold (it restarted empty, or the key was written while it was
/// ejected). Asks the other owners in preference order; a hit is copied back
/// to the first owner (`If-None-Match: *`, so a newer write there wins) and
/// answered. A genuine miss with R > 1 therefore costs one read per owner.
async fn read_replicas(shared: &Shared, owners: &[Arc<NodeHandle>], path: &str) -> Option<FoundValue> {
    for replica in &owners[1..] {
        shared.metrics.read_retries.inc();
        let Ok(r) = shared.upstream.send(replica, Method::GET, path, &[], Bytes::new()).await else { continue };
        if r.status != StatusCode::OK {
            continue;
        }
        let version = r.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).and_then(|v| parse_etag(v).ok().flatten())?;
        let content_type = r.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let repair = [(header::CONTENT_TYPE, content_type.clone()), (header::IF_NONE_MATCH, HeaderValue::from_static("*"))];
        if let Err(e) = shared.upstream.send(&owners[0], Method::PUT, path, &repair, r.body.clone()).await {
            debug!(node = %owners[0].id, error = %e, "read repair failed");
        }
        return Some(FoundValue { version, content_type, value: r.body });
    }
    None
}

/// One write (PUT or DELETE) to forward to a key's owners.
pub(crate) struct Write<'a> {
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Carries `If-Match`/`If-None-Match`: decided by the first owner.
    pub conditional: bool,
    pub body: Bytes,
}

/// Sends `write` to the key's `owners` (nominally `width` of them) and
/// answers the first acknowledging owner's answer once `proxy.write_ack`
/// is met; `acked` says which statuses acknowledge.
pub(crate) async fn write_all(
    shared: &Shared,
    owners: &[Arc<NodeHandle>],
    width: usize,
    write: Write<'_>,
    acked: impl Fn(StatusCode) -> bool,
) -> Result<UpstreamResponse, RequestError> {
    let Write { method, path, headers, conditional, body } = write;
    // A condition is decided by the first healthy owner; the others follow
    // it unconditionally, so replicas never diverge on a condition.
    let mut answers: Vec<Result<UpstreamResponse, UpstreamError>> = Vec::with_capacity(owners.len());
    let rest_headers: Vec<(HeaderName, HeaderValue)> =
        headers.iter().filter(|(n, _)| *n != header::IF_MATCH && *n != header::IF_NONE_MATCH).cloned().collect();
    let first_len;
    if conditional {
        let first = shared.upstream.send(&owners[0], method.clone(), path, &headers, body.clone()).await;
        // A refused condition (412) or other client error is the answer.
        if let Ok(r) = &first
            && !acked(r.status)
            && !r.status.is_server_error()
        {
            return Ok(r.clone());
        }
        answers.push(first);
        first_len = 1;
    } else {
        first_len = 0;
    }
    let rest = &owners[first_len..];
    if !rest.is_empty() && (first_len == 0 || answers[0].as_ref().is_ok_and(|r| acked(r.status))) {
        let hdrs = if conditional { &rest_headers } else { &headers };
        let sends = rest.iter().map(|n| shared.upstream.send(n, method.clone(), path, hdrs, body.clone()));
        answers.extend(futures::future::join_all(sends).await);
    }
    let acks = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| acked(r.status))).count();
    let needed = shared.config.write_ack.needed(width.max(1)).min(width.max(1));
    if acks >= needed {
        let primary = answers.iter().find_map(|a| a.as_ref().ok().filter(|r| acked(r.status)));
        return Ok(primary.cloned().expect("at least one acknowledgement"));
    }
    // Not enough acknowledgements: a client error from the primary is the answer.
    if let Some(Ok(r)) = answers.first()
        && r.status.is_client_error()
    {
        return Ok(r.clone());
    }
    let detail: Vec<String> = answers
        .iter()
        .zip(owners)
        .filter_map(|(a, n)| match a {
            Ok(r) if acked(r.status) => None,
            Ok(r) => Some(format!("{}: HTTP {}", n.id, r.status.as_u16())),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    Err(RequestError::WriteNotAcknowledged {
        acked: acks,
        owners: width,
        needed,
        policy: shared.config.write_ack,
        detail: if detail.is_empty() { String::new() } else { format!(": {}", detail.join("; ")) },
    })
}

async fn put_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let (parts, body) = req.into_parts();
    let key = key_of(&parts.uri, &shared.limits)?;
    ttl_from_query(parts.uri.query(), &shared.limits)?;
    let condition = WriteCondition::from_headers(&parts.headers)?;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE)
        && ct.len() > shardgate_api::limits::MAX_CONTENT_TYPE_LEN
    {
        return Err(ApiError::InvalidHeader {
            name: "Content-Type",
            reason: format!("is {} bytes; the limit is {} bytes", ct.len(), shardgate_api::limits::MAX_CONTENT_TYPE_LEN),
        }
        .into());
    }
    let limit = shared.limits.max_value_size;
    if let Some(size) = content_length(&parts.headers)?
        && size > limit as u64
    {
        return Err(ApiError::ValueTooLarge { size, limit, limit_name: shared.limits.name("max_value_size") }.into());
    }
    let value = read_body(body, limit, &shared.limits, "max_value_size", shared.config.body_read_timeout).await?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = match parts.uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}", key_path(&key)),
        _ => key_path(&key),
    };
    let headers = forward_headers(&parts.headers, &[header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    let write = Write { method: Method::PUT, path: &path, headers, conditional, body: value };
    let r = write_all(shared, &owners, positions.len(), write, |s| s.is_success()).await?;
    Ok(relay(r))
}

async fn delete_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::UnknownQueryParameter { name: uri.query().unwrap_or_default().chars().take(64).collect(), accepted: "nothing" }.into());
    }
    let condition = WriteCondition::from_headers(req.headers())?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = key_path(&key);
    let headers = forward_headers(req.headers(), &[header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    // 404 is an acknowledgement too: the key is gone from that owner.
    let gone = |s: StatusCode| s.is_success() || s == StatusCode::NOT_FOUND;
    let write = Write { method: Method::DELETE, path: &path, headers, conditional, body: Bytes::new() };
    let r = write_all(shared, &owners, positions.len(), write, gone).await?;
    let mut deleted = r.status.is_success();
    // In the migration window the value may still sit on the key's previous
    // owners: delete it there too, or a later read would bring it back.
    if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
        let chain = epoch.migration_chain(shared.routing.migration_window());
        if !chain.is_empty() {
            deleted |= crate::fanout::delete_previous(shared, &chain, &key, &owner_ids(epoch, &positions), &path).await;
        }
    }
    if deleted && r.status == StatusCode::NOT_FOUND {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(relay(r))
}

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
    pub write_ack: crate::config::WriteAck,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatusStrategy {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub table: Option<String>,
}

fn status(shared: &Shared) -> Response {
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
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(HeaderName::from_static(EPOCH_HEADER), epoch.epoch_header.clone());
    r
}

fn owners(shared: &Shared, epoch: &RoutingEpoch, uri: &Uri) -> Result<Response, RequestError> {
    let segment = uri.path().strip_prefix(OWNERS_PATH_PREFIX).unwrap_or("");
    let key = decode_key_segment(segment, &shared.limits)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = owner_ids(epoch, &positions).into_iter().map(String::from).collect();
    Ok(axum::Json(Owners { epoch: epoch.epoch, owners }).into_response())
}

fn metrics(shared: &Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.metrics.render(),
    )
        .into_response()
}

fn readyz(shared: &Shared) -> Response {
    if !shared.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if shared.routing.load().router.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no routing state yet\n").into_response();
    }
    "ready\n".into_response()
}
