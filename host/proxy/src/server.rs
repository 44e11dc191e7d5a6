//! The proxy's HTTP/1.1 front: [`run`] serves connections through the
//! accept loop every role shares ([`shardgate_role::serve`]: header read
//! timeout, `proxy.max_connections`, optional TLS, graceful shutdown), and
//! dispatch matches a request against the route table ([`ROUTES`], in
//! order) and hands it to its domain's handlers. A client cannot tell the
//! proxy from a node: the same endpoints, the same input checks (the key
//! API's contract, `shardgate-api`), the same answers, plus a
//! `Shardgate-Epoch` header naming the routing epoch that routed the
//! request.
//!
//! Request flow: client -> [`run`]'s connection (over
//! `proxy.max_connections`: 503 and close; TLS handshake when `proxy.tls`
//! is set, see [`crate::tls`]) -> dispatch (`/v1/` only: `proxy.rate_limit`
//! 429, then `proxy.data_token` 401/403, see [`crate::rate_limit`] and
//! [`crate::auth`]) -> the route table -> load the routing epoch once ->
//! [`crate::keys`] (single keys) or [`crate::batches`] (batches), which
//! route with [`crate::routing`], choose owners and forward through
//! [`crate::replication`] / [`crate::migration`] -> relay the node's
//! answer; or [`crate::status`] (status, metrics, probes, the OpenAPI
//! document). The state every request shares is [`crate::context`]'s.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::response::{IntoResponse, Response};
use http::{Method, Request};
use hyper::body::Incoming;
use shardgate_api::ApiError;
use shardgate_api::body::check_transfer_encoding;
use shardgate_api::key::KEY_PATH_PREFIX;
use shardgate_meta_client::MetaClient;
use shardgate_role::serve::{ConnectionMetrics, ServeConfig};
/// Largest component the proxy loads: the most `meta.max_component_size`
/// accepts.
const MAX_STRATEGY_COMPONENT_BYTES: usize = 64 << 20;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::auth::{ClientToken, is_data_path};
use crate::config::ProxyConfig;
use crate::context::{Shared, with_epoch};
use crate::error::{ProxyError, RequestError};
use crate::keys::OWNERS_PATH_PREFIX;
use crate::metrics::ProxyMetrics;
use crate::nodes::NodeBoard;
use crate::rate_limit::ClientRateLimit;
use crate::routing::Routing;
use crate::upstream::Upstream;
use crate::{batches, keys, status};

/// The methods a route takes (a bit set, checked without allocating) and
/// the `Allow` header of its 405.
#[derive(Clone, Copy, Debug)]
pub struct Methods {
    bits: u8,
    allow: &'static str,
}

const GET: u8 = 1;
const HEAD: u8 = 2;
const PUT: u8 = 4;
const DELETE: u8 = 8;
const POST: u8 = 16;
const PATCH: u8 = 32;

impl Methods {
    /// GET and HEAD (HEAD is answered as GET without a body, like a node).
    pub const READ: Methods = Methods { bits: GET | HEAD, allow: "GET,HEAD" };
    /// The key API on one key.
    pub const KEY: Methods = Methods { bits: GET | HEAD | PUT | DELETE | PATCH, allow: "GET,HEAD,PUT,DELETE,PATCH" };
    pub const POST: Methods = Methods { bits: POST, allow: "POST" };

    #[inline]
    pub fn allows(self, method: &Method) -> bool {
        let bit = match *method {
            Method::GET => GET,
            Method::HEAD => HEAD,
            Method::PUT => PUT,
            Method::DELETE => DELETE,
            Method::POST => POST,
            Method::PATCH => PATCH,
            _ => 0,
        };
        self.bits & bit != 0
    }

    /// The method names, as in `Allow`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.allow.split(',')
    }
}

/// The paths a route matches.
#[derive(Clone, Copy, Debug)]
pub enum PathPattern {
    Exact(&'static str),
    /// `prefix` followed by anything (the rest is the path parameter
    /// `param`, e.g. the key; it may be empty, and the handler answers
    /// that as the node does).
    Prefix {
        prefix: &'static str,
        param: &'static str,
    },
}

impl PathPattern {
    #[inline]
    pub fn matches(self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix { prefix, .. } => path.starts_with(prefix),
        }
    }
}

/// Which handler serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    Key,
    BatchGet,
    BatchPut,
    Owners,
    Status,
    Metrics,
    Healthz,
    Readyz,
    OpenApi,
}

/// One entry of [`ROUTES`].
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub methods: Methods,
    pub path: PathPattern,
    pub handler: Handler,
}

const fn route(methods: Methods, path: PathPattern, handler: Handler) -> Route {
    Route { methods, path, handler }
}

/// Every route of the proxy, matched in order against the request path;
/// the first match serves it (a known path with another method is a 405
/// naming the route's methods, no match is the node's 404). Keys first:
/// they are the hot path. `tests/openapi.rs` holds `openapi.json` to this
/// table, route by route and method by method.
pub static ROUTES: &[Route] = &[
    route(Methods::KEY, PathPattern::Prefix { prefix: KEY_PATH_PREFIX, param: "key" }, Handler::Key),
    route(Methods::POST, PathPattern::Exact("/v1/batch/get"), Handler::BatchGet),
    route(Methods::POST, PathPattern::Exact("/v1/batch/put"), Handler::BatchPut),
    route(Methods::READ, PathPattern::Exact("/status"), Handler::Status),
    route(Methods::READ, PathPattern::Prefix { prefix: OWNERS_PATH_PREFIX, param: "key" }, Handler::Owners),
    route(Methods::READ, PathPattern::Exact("/metrics"), Handler::Metrics),
    route(Methods::READ, PathPattern::Exact("/healthz"), Handler::Healthz),
    route(Methods::READ, PathPattern::Exact("/readyz"), Handler::Readyz),
    route(Methods::READ, PathPattern::Exact("/openapi.json"), Handler::OpenApi),
];

/// [`ROUTES`] as (OpenAPI path template, methods): an exact route is its
/// path; a prefix route is both `prefix` and `prefix{param}`.
pub fn route_templates() -> Vec<(String, Vec<&'static str>)> {
    let mut out = Vec::new();
    for r in ROUTES {
        let methods: Vec<&'static str> = r.methods.names().collect();
        match r.path {
            PathPattern::Exact(p) => out.push((p.to_string(), methods)),
            PathPattern::Prefix { prefix, param } => {
                out.push((prefix.to_string(), methods.clone()));
                out.push((format!("{prefix}{{{param}}}"), methods));
            }
        }
    }
    out
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
    run_with_resp(listener, None, config, shutdown).await
}

/// [`run`], with the RESP front (`proxy.resp_listen`) on `resp` when the
/// caller bound it (tests bind `127.0.0.1:0`); with `None` and
/// `proxy.resp_listen` set, the proxy binds that address itself.
pub async fn run_with_resp(
    listener: TcpListener,
    resp: Option<TcpListener>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    config.validate()?;
    let resp = match (resp, config.resp_listen) {
        (Some(l), _) => Some(l),
        (None, Some(addr)) => Some(TcpListener::bind(addr).await.map_err(ProxyError::Listener)?),
        (None, None) => None,
    };
    let node_token = config.resolve_node_token()?;
    let client_token = config.resolve_data_token()?.map(|t| ClientToken::new(&t));
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let local = listener.local_addr().map_err(ProxyError::Listener)?;
    let metrics = Arc::new(ProxyMetrics::new());
    let pool = crate::nodes::PoolSettings {
        max_idle: config.pool_max_idle_per_node,
        idle_timeout: config.pool_idle_timeout,
        connect_timeout: config.connect_timeout,
        max_body: config.max_batch_size.as_u64().max(config.max_value_size.as_u64()) as usize + (64 << 10),
        pipes: config.pipelines_per_node,
        stall_timeout: config.request_timeout,
    };
    let board = Arc::new(NodeBoard::new(config.eject_after_failures, config.probe_backoff_min, config.probe_backoff_max, pool));
    // Meta admitted the component already (up to its own
    // `meta.max_component_size`): the proxy takes any size meta may accept.
    let sandbox = config
        .strategy
        .sandbox(MAX_STRATEGY_COMPONENT_BYTES, config.compiled_cache_dir.clone().or_else(shardgate_strategy::default_compiled_cache_dir))
        .map_err(|e| ProxyError::Sandbox(e.to_string()))?;
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
        resp_metrics: crate::resp::cmd::SPECS.iter().map(|s| metrics.resp_command(s.name)).collect(),
        metrics,
        client_token,
        rate_limit: config.rate_limit.map(|r| Arc::new(ClientRateLimit::new(r))),
        ready: AtomicBool::new(true),
        config,
    });
    let meta: MetaClient = crate::tls::meta_client(&shared.config)?.with_stale_reads(true);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let proxy_id = shared.config.advertise.clone().unwrap_or_else(|| shardgate_role::advertise::default_advertise(scheme, local));
    let mut background = vec![
        tokio::spawn(crate::routing::follow(routing.clone(), meta.clone())),
        tokio::spawn(crate::meta_report::report_to_meta(routing.clone(), meta, proxy_id)),
        tokio::spawn(routing.clone().run_detour_builder()),
        tokio::spawn(health_checker(shared.clone())),
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
        on_workers: true,
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
    let limit = shardgate_role::serve::connection_limit(shared.config.max_connections);
    // Both fronts stop on the one shutdown signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let resp_task = resp.map(|resp| {
        let addr = resp.local_addr().ok();
        info!(addr = ?addr, "proxy RESP listening");
        let for_resp = shared.clone();
        let handle = move |io: Box<dyn shardgate_role::serve::Stream>, peer: SocketAddr, stopping| {
            crate::resp::serve(for_resp.clone(), io, peer, stopping)
        };
        let refusal = crate::resp::refusal(shared.config.max_connections);
        tokio::spawn(shardgate_role::serve::serve_streams(
            resp,
            ServeConfig { role: "proxy-resp", ..serve_config.clone() },
            limit.clone(),
            refusal,
            handle,
            connections.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    shardgate_role::serve::serve_with_limit(listener, serve_config, http, service_for, limit, connections, shutdown).await;
    if let Some(task) = resp_task {
        let _ = task.await;
    }
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
    // A transfer coding other than chunked: hyper only de-chunks, so the
    // body would be taken still encoded.
    if let Err(error) = check_transfer_encoding(req.headers()) {
        let response = error.into_response();
        shared.metrics.request("other", response.status().as_u16());
        return response;
    }
    let (label, response) = match ROUTES.iter().find(|r| r.path.matches(path)) {
        None => ("other", ApiError::NoRoute.into_response()),
        Some(route) => serve(&shared, route, req).await,
    };
    shared.metrics.request(label, response.status().as_u16());
    response
}

/// Serves `req` with `route`'s handler: (metrics route label, answer).
async fn serve(shared: &Shared, route: &Route, req: Request<Incoming>) -> (&'static str, Response) {
    let allowed = route.methods.allows(req.method());
    if route.handler == Handler::Key {
        // Every answer on a key path names the epoch, a 405 included.
        let epoch = shared.routing.load();
        let method = req.method().clone();
        let (label, result) = match method {
            _ if !allowed => ("other", Err(not_allowed(&method, route.methods).into())),
            Method::GET => ("get", keys::get_key(shared, &epoch, req).await),
            Method::HEAD => ("head", keys::get_key(shared, &epoch, req).await),
            Method::PUT => ("put", keys::put_key(shared, &epoch, req).await),
            Method::DELETE => ("delete", keys::delete_key(shared, &epoch, req).await),
            Method::PATCH => ("patch", keys::patch_key(shared, &epoch, req).await),
            _ => ("other", Err(not_allowed(&method, route.methods).into())),
        };
        return (label, with_epoch(result.unwrap_or_else(IntoResponse::into_response), &epoch));
    }
    if !allowed {
        return ("other", not_allowed(req.method(), route.methods).into_response());
    }
    match route.handler {
        Handler::BatchGet => {
            let epoch = shared.routing.load();
            let r = batches::batch_get(shared, &epoch, req).await.unwrap_or_else(IntoResponse::into_response);
            ("batch_get", with_epoch(r, &epoch))
        }
        Handler::BatchPut => {
            let epoch = shared.routing.load();
            let r = batches::batch_put(shared, &epoch, req).await.unwrap_or_else(IntoResponse::into_response);
            ("batch_put", with_epoch(r, &epoch))
        }
        Handler::Owners => {
            let epoch = shared.routing.load();
            let r = keys::owners(shared, &epoch, req.uri()).unwrap_or_else(IntoResponse::into_response);
            ("owners", with_epoch(r, &epoch))
        }
        Handler::Status => ("status", status::status(shared)),
        Handler::Metrics => ("metrics", status::metrics(shared)),
        Handler::Healthz => ("healthz", status::healthz()),
        Handler::Readyz => ("readyz", status::readyz(shared)),
        Handler::OpenApi => ("openapi", status::openapi()),
        Handler::Key => unreachable!("served above"),
    }
}

/// The 405 of a known path asked with a method it does not take: names the
/// method, with `Allow`, as a node answers.
fn not_allowed(method: &Method, methods: Methods) -> ApiError {
    ApiError::MethodNotAllowed { method: method.as_str().chars().take(32).collect(), allow: methods.allow }
}

/// The health checker with what it needs from `shared`: the node board,
/// `proxy.health_interval` and the forwarder's check as its probe.
fn health_checker(shared: Arc<Shared>) -> impl Future<Output = ()> + Send + 'static {
    let upstream = Arc::new(shared.upstream.clone());
    let probe = move |node: Arc<crate::nodes::NodeHandle>| {
        let upstream = upstream.clone();
        async move { upstream.check(&node).await }
    };
    crate::nodes::run_checker(shared.board.clone(), shared.config.health_interval, probe)
}
