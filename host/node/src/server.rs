//! The node's HTTP/1.1 front: the axum handlers that turn requests into
//! [`Store`] calls, served by the accept loop every role shares
//! ([`shardgate_role::serve`]: connection limit, header read timeout,
//! graceful shutdown). Requests arrive here from clients or from the proxy;
//! everything below this module is HTTP-free.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use shardgate_role::serve::{ConnectionMetrics, ServeConfig};
use tokio::net::TcpListener;
use tracing::info;

use crate::auth::{DataAuth, DataToken};
use crate::batch::{self, GetResponseEncoder, PutResult};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::etag::{ReadCondition, WriteCondition, format_etag};
use crate::key::{KEY_PATH_PREFIX, decode_key_segment};
use crate::limits::{Limits, MAX_CONTENT_TYPE_LEN};
use crate::metrics::{Endpoint, NodeMetrics};
use crate::registration::{NODE_ID_HEADER, Registration, RegistrationState};
use crate::store::{Clock, DeleteResult, Expiry, IncrError, Item, Store};
use crate::ttl::{PatchQuery, TTL_MS_HEADER, WriteTtl, check_ttl_seconds, delete_query, patch_query, write_query};
use shardgate_api::ApiError;
use shardgate_api::body::{check_transfer_encoding, content_length, read_body};

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// The OpenAPI 3.1 document of this API (`host/node/openapi.json`), served
/// at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// What every handler of one node shares.
struct NodeState {
    store: Store,
    metrics: NodeMetrics,
    limits: Limits,
    body_read_timeout: Duration,
    ready: AtomicBool,
    /// `shardgate-node-id` on `/healthz` when the node registers itself.
    node_id: Option<HeaderValue>,
    registration: RegistrationState,
}

/// Serves the node API on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (up to
/// `node.shutdown_timeout`) and returns. `config.listen` is not used: the
/// caller binds, so tests can bind `127.0.0.1:0`.
pub async fn run(listener: TcpListener, config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    run_with_clock(listener, config, Clock::system(), shutdown).await
}

/// [`run`] with the store's TTLs on `clock`. For tests: with
/// [`Clock::manual`] a TTL test advances a [`crate::store::ManualClock`]
/// instead of sleeping. Timeouts (header, body, shutdown) stay on tokio's
/// clock.
#[doc(hidden)]
pub async fn run_with_clock(
    listener: TcpListener,
    config: NodeConfig,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    config.validate()?;
    let data_token = config.resolve_data_token()?.map(|t| DataToken::new(&t));
    let local = listener.local_addr().map_err(NodeError::Listener)?;
    let metrics = NodeMetrics::new();
    let store = Store::with_clock(
        config.memory_limit.as_u64(),
        config.largest_entry(),
        config.eviction_policy,
        metrics.evictions.clone(),
        metrics.expirations.clone(),
        clock,
    );
    let state = Arc::new(NodeState {
        store,
        metrics,
        limits: config.limits(),
        body_read_timeout: config.body_read_timeout,
        ready: AtomicBool::new(true),
        node_id: config.register.as_ref().and_then(|r| HeaderValue::from_str(&r.node_id()).ok()),
        registration: RegistrationState::default(),
    });
    // Joining the cluster runs beside serving, never before it.
    let registration = config.register.as_ref().map(|r| Registration::start(r, local, state.registration.clone()));
    let service = NodeService {
        router: router(state.clone()),
        auth: Arc::new(DataAuth {
            token: data_token.clone(),
            unauthorized: state.metrics.unauthorized.clone(),
            forbidden: state.metrics.forbidden.clone(),
        }),
    };
    // Not hyper's `pipeline_flush`: with it, hyper 1.x skips every flush
    // while its read buffer holds bytes, the flush before closing included,
    // so an answer followed by a close (`Connection: close` with a request
    // pipelined behind it, garbage behind a request, the 400/431 to a
    // malformed head) was never written; it also lifts hyper's cap on the
    // write buffer. Answers to pipelined requests (a proxy's pipes,
    // `proxy.pipelines_per_node`) still leave in one write: the shared
    // accept loop writes what one poll of a connection answered at once.
    let http = hyper::server::conn::http1::Builder::new();
    let serve_config = ServeConfig {
        role: "node",
        max_connections: config.max_connections,
        max_connections_key: "node.max_connections",
        retry_after_secs: None,
        header_read_timeout: config.header_read_timeout,
        tls: None,
        drain_timeout: config.shutdown_timeout,
        on_workers: true,
    };
    info!(
        addr = %local,
        memory_limit = config.memory_limit.as_u64(),
        data_token = data_token.is_some(),
        "node listening"
    );
    let not_ready = state.clone();
    let within = config.shutdown_timeout;
    let shutdown = async move {
        shutdown.await;
        // Still serving while the node drains and leaves the cluster.
        if let Some(r) = registration {
            r.leave(within).await;
        }
        not_ready.ready.store(false, Ordering::Relaxed);
    };
    let connections: Arc<dyn ConnectionMetrics> = state.clone();
    shardgate_role::serve::serve(listener, serve_config, http, |_| service.clone(), connections, shutdown).await;
    Ok(())
}

/// Open and rejected connections under the node's metric names.
impl ConnectionMetrics for NodeState {
    fn opened(&self) {
        self.metrics.connections_open.inc();
    }
    fn closed(&self) {
        self.metrics.connections_open.dec();
    }
    fn rejected(&self) {
        self.metrics.connections_rejected.inc();
    }
}

fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(KEY_PATH_PREFIX, get(empty_key).put(empty_key).delete(empty_key).patch(empty_key).fallback(not_allowed(KEY_METHODS)))
        .route("/v1/keys/{*key}", get(key_get).put(key_put).delete(key_delete).patch(key_patch).fallback(not_allowed(KEY_METHODS)))
        .route("/v1/batch/get", post(batch_get).fallback(not_allowed("POST")))
        .route("/v1/batch/put", post(batch_put).fallback(not_allowed("POST")))
        .route("/healthz", get(healthz).fallback(not_allowed(READ_METHODS)))
        .route("/readyz", get(readyz).fallback(not_allowed(READ_METHODS)))
        .route("/metrics", get(metrics).fallback(not_allowed(READ_METHODS)))
        .route("/openapi.json", get(openapi).fallback(not_allowed(READ_METHODS)))
        .fallback(|| async { ApiError::NoRoute })
        .with_state(state)
}

/// What hyper calls for every request: `node.data_token` on `/v1/`, then
/// a transfer coding other than chunked (hyper only de-chunks: the body
/// would be taken still encoded), then the router. Checked here rather
/// than in two `axum::middleware::from_fn` layers, which box and clone
/// the rest of the stack for every request.
#[derive(Clone)]
struct NodeService {
    router: Router,
    auth: Arc<DataAuth>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for NodeService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        axum::routing::future::RouteFuture<std::convert::Infallible>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use futures::future::Either;
        use tower::Service as _;
        if let Some(refusal) = self.auth.refuse(req.uri().path(), req.headers()) {
            return Either::Left(std::future::ready(Ok(refusal)));
        }
        if let Err(error) = check_transfer_encoding(req.headers()) {
            return Either::Left(std::future::ready(Ok(error.into_response())));
        }
        Either::Right(self.router.clone().call(req))
    }
}

async fn empty_key() -> ApiError {
    ApiError::EmptyKey
}

/// The `Allow` of a key path (the proxy's is the same).
const KEY_METHODS: &str = "GET,HEAD,PUT,DELETE,PATCH";
/// The `Allow` of a read-only path (GET routes answer HEAD too).
const READ_METHODS: &str = "GET,HEAD";

/// The answer to a method a known path does not serve (`TRACE`, `PATCH`,
/// an extension method, ...): 405 naming the method, with `Allow`, and the
/// JSON body of every other refusal.
fn not_allowed(allow: &'static str) -> impl Fn(Method) -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move |method: Method| std::future::ready(ApiError::MethodNotAllowed { method: method.as_str().chars().take(32).collect(), allow })
}

/// The raw key segment of a `/v1/keys/...` URI.
fn key_segment(uri: &Uri) -> &str {
    uri.path().strip_prefix(KEY_PATH_PREFIX).unwrap_or("")
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

// Key handlers take the request whole: extracting `Uri` and `HeaderMap`
// would clone them.
async fn key_get(State(node): State<Arc<NodeState>>, req: axum::extract::Request) -> Response {
    let _timer = node.metrics.start(if req.method() == Method::HEAD { Endpoint::Head } else { Endpoint::Get });
    respond(get_one(&node, req.uri(), req.headers()))
}

fn get_one(node: &NodeState, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    let key = decode_key_segment(key_segment(uri), &node.limits)?;
    let condition = ReadCondition::from_headers(headers)?;
    let Some(item) = node.store.get(&key) else {
        node.metrics.misses.inc();
        return Err(ApiError::NotFound);
    };
    node.metrics.hits.inc();
    let etag = format_etag(item.version());
    if condition.not_modified(item.version()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(value_response(node, &item, StatusCode::OK))
}

/// An answer carrying `item`: its value, content type, version and the
/// time it has left (`shardgate-ttl-ms`).
fn value_response(node: &NodeState, item: &Item, status: StatusCode) -> Response {
    let content_type = match item.content_type() {
        [] => OCTET_STREAM,
        ct => HeaderValue::from_bytes(ct).unwrap_or(OCTET_STREAM),
    };
    let mut response = Response::new(Body::from(item.value_bytes()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::ETAG, format_etag(item.version()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(item.value().len()));
    h.insert(TTL_MS_HEADER, HeaderValue::from(node.store.remaining(item).as_millis() as u64));
    response
}

async fn key_put(State(node): State<Arc<NodeState>>, req: axum::extract::Request) -> Response {
    let _timer = node.metrics.start(Endpoint::Put);
    let (parts, body) = req.into_parts();
    respond(put_one(&node, &parts.uri, &parts.headers, body).await)
}

async fn put_one(node: &NodeState, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let key = decode_key_segment(key_segment(uri), &node.limits)?;
    let query = write_query(uri.query(), &node.limits)?;
    let condition = WriteCondition::from_headers(headers)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => &[][..],
        Some(ct) if ct.len() > MAX_CONTENT_TYPE_LEN => {
            return Err(ApiError::InvalidHeader {
                name: "Content-Type",
                reason: format!("is {} bytes; the limit is {MAX_CONTENT_TYPE_LEN} bytes", ct.len()),
            });
        }
        Some(ct) => ct.as_bytes(),
    };
    let limit = node.limits.max_value_size;
    if let Some(size) = content_length(headers)?
        && size > limit as u64
    {
        return Err(ApiError::ValueTooLarge { size, limit, limit_name: node.limits.name("max_value_size") });
    }
    let value = read_body(body, limit, &node.limits, "max_value_size", node.body_read_timeout).await?;
    let expiry = match query.ttl {
        WriteTtl::After(ttl) => Expiry::After(ttl),
        WriteTtl::Keep => Expiry::Keep { otherwise: node.limits.default_ttl },
    };
    let (result, old) = node.store.put_with(&key, content_type, &value, expiry, &condition);
    let (status, version) = match result {
        PutResult::Created { version } => (StatusCode::CREATED, version),
        PutResult::Replaced { version } => (StatusCode::NO_CONTENT, version),
        PutResult::ConditionFailed => {
            node.metrics.condition_failures.inc();
            return Err(ApiError::PreconditionFailed(condition.failure_reason()));
        }
    };
    node.metrics.sets.inc();
    if query.get
        && let Some(old) = old
    {
        // `get=true` and a value was replaced: it is the answer (200), with
        // the new version as the ETag.
        let mut r = value_response(node, &old, StatusCode::OK);
        r.headers_mut().insert(header::ETAG, format_etag(version));
        r.headers_mut().remove(TTL_MS_HEADER);
        return Ok(r);
    }
    Ok((status, [(header::ETAG, format_etag(version))]).into_response())
}

async fn key_delete(State(node): State<Arc<NodeState>>, req: axum::extract::Request) -> Response {
    let _timer = node.metrics.start(Endpoint::Delete);
    respond(delete_one(&node, req.uri(), req.headers()))
}

fn delete_one(node: &NodeState, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    let key = decode_key_segment(key_segment(uri), &node.limits)?;
    let get = delete_query(uri.query())?;
    let condition = WriteCondition::from_headers(headers)?;
    match node.store.delete_with(&key, &condition) {
        (DeleteResult::Deleted, old) => {
            node.metrics.deletes.inc();
            match old {
                Some(old) if get => {
                    let mut r = value_response(node, &old, StatusCode::OK);
                    r.headers_mut().remove(TTL_MS_HEADER);
                    Ok(r)
                }
                _ => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        (DeleteResult::NotFound, _) => Err(ApiError::NotFound),
        (DeleteResult::ConditionFailed, _) => {
            node.metrics.condition_failures.inc();
            Err(ApiError::PreconditionFailed(condition.failure_reason()))
        }
    }
}

async fn key_patch(State(node): State<Arc<NodeState>>, uri: Uri) -> Response {
    let _timer = node.metrics.start(Endpoint::Patch);
    respond(patch_one(&node, &uri))
}

/// `PATCH /v1/keys/{key}`: a new TTL (`EXPIRE`, `PERSIST`, `GETEX`) or an
/// atomic increment (`INCRBY`).
fn patch_one(node: &NodeState, uri: &Uri) -> Result<Response, ApiError> {
    let key = decode_key_segment(key_segment(uri), &node.limits)?;
    match patch_query(uri.query(), &node.limits)? {
        PatchQuery::Expire { ttl, get } => {
            let Some(item) = node.store.touch(&key, ttl) else {
                node.metrics.misses.inc();
                return Err(ApiError::NotFound);
            };
            node.metrics.touches.inc();
            if get {
                return Ok(value_response(node, &item, StatusCode::OK));
            }
            let ttl_ms = HeaderValue::from(node.store.remaining(&item).as_millis() as u64);
            Ok((StatusCode::NO_CONTENT, [(header::ETAG, format_etag(item.version())), (HeaderName::from_static(TTL_MS_HEADER), ttl_ms)])
                .into_response())
        }
        PatchQuery::Incr(by) => match node.store.incr(&key, by, node.limits.default_ttl) {
            Ok((_, item)) => {
                node.metrics.sets.inc();
                Ok(value_response(node, &item, StatusCode::OK))
            }
            Err(IncrError::NotAnInteger) => Err(ApiError::NotAnInteger),
            Err(IncrError::Overflow) => Err(ApiError::IncrementOverflow),
        },
    }
}

async fn batch_get(State(node): State<Arc<NodeState>>, headers: HeaderMap, body: Body) -> Response {
    let _timer = node.metrics.start(Endpoint::BatchGet);
    respond(get_many(&node, &headers, body).await)
}

async fn get_many(node: &NodeState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_batch_body(node, headers, body).await?;
    let keys = batch::decode_get_request(body, &node.limits)?;
    let mut encoder = GetResponseEncoder::new(keys.len(), node.limits.max_batch_size);
    let (mut hits, mut misses) = (0, 0);
    for key in &keys {
        match node.store.get(key) {
            Some(item) => {
                hits += 1;
                encoder.push_hit(item.version(), item.content_type(), item.value());
            }
            None => {
                misses += 1;
                encoder.push_miss();
            }
        }
    }
    node.metrics.hits.inc_by(hits);
    node.metrics.misses.inc_by(misses);
    Ok(batch_response(encoder.finish()))
}

async fn batch_put(State(node): State<Arc<NodeState>>, headers: HeaderMap, body: Body) -> Response {
    let _timer = node.metrics.start(Endpoint::BatchPut);
    respond(put_many(&node, &headers, body).await)
}

async fn put_many(node: &NodeState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_batch_body(node, headers, body).await?;
    let items = batch::decode_put_request(body, &node.limits)?;
    // Check everything before writing anything: a bad batch changes nothing.
    for (index, item) in items.iter().enumerate() {
        if !item.content_type.is_empty() && HeaderValue::from_bytes(&item.content_type).is_err() {
            return Err(ApiError::InvalidHeader { name: "Content-Type", reason: format!("batch entry {index}: not a valid header value") });
        }
        if let Some(secs) = item.ttl_seconds {
            check_ttl_seconds(secs.into(), &node.limits)?;
        }
    }
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let ttl = item.ttl_seconds.map_or(node.limits.default_ttl, |s| Duration::from_secs(s.into()));
        let result = node.store.put(&item.key, &item.content_type, &item.value, ttl, &item.condition);
        match result {
            PutResult::ConditionFailed => node.metrics.condition_failures.inc(),
            _ => node.metrics.sets.inc(),
        };
        results.push(result);
    }
    Ok(batch_response(batch::encode_put_response(&results)))
}

fn batch_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(batch::CONTENT_TYPE));
    response
}

async fn read_batch_body(node: &NodeState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = node.limits.max_batch_size;
    if let Some(size) = content_length(headers)?
        && size > limit as u64
    {
        return Err(batch::BatchError::TooLarge {
            size: size.try_into().unwrap_or(usize::MAX),
            limit,
            limit_name: node.limits.name("max_batch_size"),
        }
        .into());
    }
    read_body(body, limit, &node.limits, "max_batch_size", node.body_read_timeout).await
}

async fn healthz(State(node): State<Arc<NodeState>>) -> Response {
    let mut r = "ok\n".into_response();
    if let Some(id) = &node.node_id {
        r.headers_mut().insert(NODE_ID_HEADER, id.clone());
    }
    r
}

async fn readyz(State(node): State<Arc<NodeState>>) -> Response {
    if node.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(node): State<Arc<NodeState>>) -> Response {
    node.metrics.registered.set(node.registration.get());
    let node2 = node.clone();
    let text = tokio::task::spawn_blocking(move || node2.metrics.render(&node2.store)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
