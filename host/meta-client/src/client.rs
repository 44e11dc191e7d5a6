//! [`MetaClient`]: the Rust client of the metadata API, used by
//! `shardgate ctl`, the proxy (its routing watch) and `join`.
//!
//! It talks to any member: members forward writes to the leader, and the
//! client moves on to the next member when one is unreachable or answers
//! that it has no leader/quorum yet, and tries again (after a pause) when a
//! member is `busy` (a preview or upload over its concurrency limit): those
//! answers mean nothing was written, so retrying is safe, until `retry_for`
//! runs out. A write whose
//! outcome is unknown (timeout) is never retried. [`MetaClient::watch`]
//! follows `/v1/watch` across members with backoff, resuming from the last
//! epoch it delivered.
//!
//! Members may be `https://` (`meta.tls`): the client checks their
//! certificates against the platform's roots, or against a CA file given
//! with [`MetaClient::with_tls_ca`]. Its HTTP client comes from
//! `shardgate-tls` (rustls with the ring provider).

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::model::*;
use crate::watch_event::{find_event_end, parse_closing, parse_event, parse_members, parse_raft_event};

/// A failed API call. `Api` carries the member's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach meta member {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("meta member {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("{message} (HTTP {status}, {kind})")]
    Api { status: u16, kind: String, message: String, leader: Option<String> },
    #[error("unexpected answer from {addr}: {reason}")]
    Decode { addr: String, reason: String },
    #[error("no meta member address given")]
    NoMembers,
    #[error("watch stream from {addr}: {reason}")]
    Watch { addr: String, reason: String },
    /// The CA file given to [`MetaClient::with_tls_ca`] cannot be used.
    #[error("TLS for meta members: {0}")]
    Tls(#[from] shardgate_tls::TlsError),
}

impl ClientError {
    /// HTTP status of an `Api` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Machine-readable kind of an `Api` error ("unknown_node", "admission", ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// Longest wait for a strategy upload's answer: admission compiles the
/// component, 10+ s for a large runtime the first time (more in a debug build).
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Client of the metadata API. Cheap to clone.
#[derive(Clone)]
pub struct MetaClient {
    /// The members to try: the seed list given to [`MetaClient::new`], then
    /// whatever a member's watch stream says the membership is
    /// ([`MetaClient::learn_members`]), shared by every clone.
    members: Arc<RwLock<Arc<Vec<String>>>>,
    /// Whether a member has told the membership yet: replacing the seeds
    /// the first time is routine (debug), a later change is news (info).
    learned: Arc<AtomicBool>,
    http: reqwest::Client,
    preferred: Arc<AtomicUsize>,
    request_timeout: Duration,
    retry_for: Duration,
    stale_reads: bool,
    watch_idle_timeout: Duration,
    /// `Authorization` value sent with every request (`meta.admin_token`).
    authorization: Option<Arc<str>>,
}

struct Body {
    bytes: Bytes,
    content_type: &'static str,
}

impl MetaClient {
    /// A client for the members at these API addresses (`http://host:port`,
    /// or `https://host:port` with certificates the platform trusts; see
    /// [`MetaClient::with_tls_ca`] for a private CA).
    pub fn new(members: Vec<String>) -> Self {
        let members: Vec<String> = members.into_iter().map(|m| m.trim_end_matches('/').to_string()).collect();
        let request_timeout = Duration::from_secs(10);
        let http = Self::http_client(shardgate_tls::http_client_system_roots());
        Self {
            members: Arc::new(RwLock::new(Arc::new(members))),
            learned: Arc::new(AtomicBool::new(false)),
            http,
            preferred: Arc::new(AtomicUsize::new(0)),
            request_timeout,
            retry_for: Duration::from_secs(10),
            stale_reads: false,
            watch_idle_timeout: Duration::from_secs(3),
            authorization: None,
        }
    }

    /// Trust the CA certificate(s) in this PEM file (and only them) for
    /// `https://` members: the CA that signed the members' `meta.tls`
    /// certificates.
    pub fn with_tls_ca(mut self, ca: &Path) -> Result<Self, ClientError> {
        self.http = Self::http_client(shardgate_tls::http_client(Some(ca))?);
        Ok(self)
    }

    fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
        // `build` fails only when a TLS backend cannot be initialised or the
        // system resolver config cannot be read: the builder already carries
        // its rustls config, and reqwest's default resolver reads nothing.
        builder
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client with a preconfigured rustls config")
    }

    /// Per-request timeout (default 10 s).
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// How long to keep trying other members / waiting for a leader (default 10 s).
    pub fn with_retry_for(mut self, t: Duration) -> Self {
        self.retry_for = t;
        self
    }

    /// Serve reads from whichever member answers, without a leader round
    /// trip (may be stale). Default: linearizable reads.
    pub fn with_stale_reads(mut self, stale: bool) -> Self {
        self.stale_reads = stale;
        self
    }

    /// Reconnect a watch when nothing (not even a heartbeat) arrives for
    /// this long (default 3 s; members send heartbeats every second).
    pub fn with_watch_idle_timeout(mut self, t: Duration) -> Self {
        self.watch_idle_timeout = t;
        self
    }

    /// Send `Authorization: Bearer <token>` with every request: needed for
    /// writes when the members have `meta.admin_token` set.
    pub fn with_token(mut self, token: &str) -> Self {
        self.authorization = Some(Arc::from(format!("Bearer {token}")));
        self
    }

    /// The members this client tries, in order: the seeds until a member
    /// told it the membership.
    pub fn members(&self) -> Arc<Vec<String>> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Use these API addresses from now on (the membership a member
    /// reported), dropping members no longer in it. An empty list is
    /// ignored. Returns whether anything changed.
    pub fn learn_members(&self, addrs: Vec<String>) -> bool {
        let mut addrs: Vec<String> = addrs.into_iter().map(|m| m.trim_end_matches('/').to_string()).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return false;
        }
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let first = !self.learned.swap(true, Ordering::Relaxed);
        if **members == addrs {
            return false;
        }
        if first {
            debug!(seeds = ?**members, members = ?addrs, "meta members learned");
        } else {
            info!(before = ?**members, after = ?addrs, "meta members changed");
        }
        *members = Arc::new(addrs);
        self.preferred.store(0, Ordering::Relaxed);
        true
    }

    /// Ask any member for the membership (`GET /v1/raft/status`) and use
    /// it from now on ([`MetaClient::learn_members`]): for one-shot users
    /// such as `shardgate ctl`, which do not hold a watch open. Returns the
    /// members learned.
    pub async fn discover_members(&self) -> Result<Arc<Vec<String>>, ClientError> {
        let status = self.status().await?;
        self.learn_members(status.members.into_iter().map(|m| m.addr).collect());
        Ok(self.members())
    }

    async fn call(&self, method: Method, path: &str, body: Option<Body>, retry_unknown: bool) -> Result<Bytes, ClientError> {
        self.call_within(method, path, body, retry_unknown, self.request_timeout).await
    }

    /// [`MetaClient::call`] with its own per-request timeout.
    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        retry_unknown: bool,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let members = self.members();
        let n = members.len();
        if n == 0 {
            return Err(ClientError::NoMembers);
        }
        let deadline = Instant::now() + self.retry_for;
        let mut index = self.preferred.load(Ordering::Relaxed);
        let mut hint: Option<String> = None;
        let mut pause = Duration::from_millis(20);
        loop {
            let addr = hint.take().unwrap_or_else(|| members[index % n].clone());
            let mut rb = self.http.request(method.clone(), format!("{addr}{path}")).timeout(timeout);
            if let Some(auth) = &self.authorization {
                rb = rb.header(http::header::AUTHORIZATION, auth.as_ref());
            }
            if let Some(b) = &body {
                rb = rb.header(http::header::CONTENT_TYPE, b.content_type).body(b.bytes.clone());
            }
            let err = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => return Err(self.transport_error(&addr, e, timeout)),
                    };
                    if status.is_success() {
                        if let Some(i) = members.iter().position(|m| *m == addr) {
                            self.preferred.store(i, Ordering::Relaxed);
                        }
                        return Ok(bytes);
                    }
                    let err = api_error(status, &bytes);
                    let retry = status == StatusCode::SERVICE_UNAVAILABLE
                        && matches!(err.kind(), Some("no_leader" | "not_leader" | "no_quorum" | "leader_unreachable" | "busy"));
                    if !retry {
                        return Err(err);
                    }
                    match &err {
                        ClientError::Api { leader: Some(l), kind, .. } if *l != addr && kind != "leader_unreachable" => {
                            hint = Some(l.clone())
                        }
                        _ => index += 1,
                    }
                    err
                }
                Err(e) => {
                    let err = self.transport_error(&addr, e, timeout);
                    // Connection refused: nothing was sent. Other failures
                    // (timeouts) leave a write's outcome unknown.
                    let not_sent = matches!(&err, ClientError::Unreachable { .. });
                    index += 1;
                    if not_sent {
                        // Start with the next member next time.
                        self.preferred.store(index % n, Ordering::Relaxed);
                    }
                    if !(not_sent || retry_unknown) {
                        return Err(err);
                    }
                    err
                }
            };
            if Instant::now() + pause >= deadline {
                return Err(err);
            }
            debug!(error = %err, "meta request failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn transport_error(&self, addr: &str, e: reqwest::Error, timeout: Duration) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout { addr: addr.to_string(), after: timeout }
        } else {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            ClientError::Unreachable { addr: addr.to_string(), reason }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let path =
            if self.stale_reads { format!("{path}{}stale=true", if path.contains('?') { '&' } else { '?' }) } else { path.to_string() };
        let bytes = self.call(Method::GET, &path, None, true).await?;
        decode(&path, &bytes)
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: &B) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode { addr: path.into(), reason: e.to_string() })?;
        let out = self.call(method, path, Some(Body { bytes: bytes.into(), content_type: "application/json" }), false).await?;
        decode(path, &out)
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get("/v1/nodes").await
    }

    pub async fn node(&self, id: &str) -> Result<NodeView, ClientError> {
        self.get(&format!("/v1/nodes/{id}")).await
    }

    pub async fn add_node(&self, node: &NewNode) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::POST, "/v1/nodes", node).await
    }

    pub async fn update_node(&self, id: &str, update: &NodeUpdate) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/nodes/{id}"), update).await
    }

    pub async fn remove_node(&self, id: &str) -> Result<WriteReceipt, ClientError> {
        let out = self.call(Method::DELETE, &format!("/v1/nodes/{id}"), None, false).await?;
        decode("/v1/nodes", &out)
    }

    /// Apply several changes atomically (one Raft log entry).
    pub async fn apply(&self, changes: Vec<Change>) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::POST, "/v1/changes", &ChangeBatch { changes }).await
    }

    pub async fn strategies(&self) -> Result<Vec<StrategyInfo>, ClientError> {
        self.get("/v1/strategies").await
    }

    pub async fn strategy(&self, hash: &str) -> Result<StrategyInfo, ClientError> {
        self.get(&format!("/v1/strategies/{hash}")).await
    }

    /// Upload a component; answers its registry entry (also when it was
    /// already stored).
    /// Admission compiles the component: a large runtime (CPython) takes
    /// 10+ s the first time, so the request may take up to
    /// [`UPLOAD_TIMEOUT`] (or the request timeout, if longer).
    pub async fn upload_strategy(&self, component: Vec<u8>) -> Result<StrategyInfo, ClientError> {
        let body = Body { bytes: component.into(), content_type: "application/wasm" };
        let timeout = self.request_timeout.max(UPLOAD_TIMEOUT);
        let out = self.call_within(Method::POST, "/v1/strategies", Some(body), false, timeout).await?;
        decode("/v1/strategies", &out)
    }

    /// The component bytes of `hash`.
    pub async fn component(&self, hash: &str) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/strategies/{hash}/component{}", if self.stale_reads { "?stale=true" } else { "" });
        Ok(self.call(Method::GET, &path, None, true).await?.to_vec())
    }

    pub async fn activate(&self, hash: &str, activation: &Activation) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::POST, &format!("/v1/strategies/{hash}/activate"), activation).await
    }

    pub async fn routing(&self) -> Result<RoutingState, ClientError> {
        self.get("/v1/routing").await
    }

    pub async fn history(&self) -> Result<Vec<HistoryEntry>, ClientError> {
        self.get("/v1/routing/history").await
    }

    pub async fn rollback(&self, epoch: u64) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::POST, "/v1/routing/rollback", &serde_json::json!({ "epoch": epoch })).await
    }

    pub async fn preview(&self, req: &PreviewRequest) -> Result<PreviewReport, ClientError> {
        // A preview changes nothing: safe to retry.
        let bytes = serde_json::to_vec(req).map_err(|e| ClientError::Decode { addr: String::new(), reason: e.to_string() })?;
        let out =
            self.call(Method::POST, "/v1/preview", Some(Body { bytes: bytes.into(), content_type: "application/json" }), true).await?;
        decode("/v1/preview", &out)
    }

    /// Owners of `req.key` under the active routing (and a candidate).
    /// Changes nothing: safe to retry.
    pub async fn lookup(&self, req: &LookupRequest) -> Result<LookupReport, ClientError> {
        let bytes = serde_json::to_vec(req).map_err(|e| ClientError::Decode { addr: String::new(), reason: e.to_string() })?;
        let out = self.call(Method::POST, "/v1/lookup", Some(Body { bytes: bytes.into(), content_type: "application/json" }), true).await?;
        decode("/v1/lookup", &out)
    }

    /// The proxies that report to the first member that answers (every
    /// proxy reports to every member it knows; see [`MetaClient::report_proxy`]).
    pub async fn proxies(&self) -> Result<ProxyList, ClientError> {
        let bytes = self.call(Method::GET, "/v1/proxies", None, true).await?;
        decode("/v1/proxies", &bytes)
    }

    /// Send `report` to every member this client knows, at once (each
    /// member keeps the proxies that report to it; nothing goes through
    /// Raft). Answers each member's outcome; never retries.
    pub async fn report_proxy(&self, report: &ProxyReport) -> Vec<(String, Result<(), ClientError>)> {
        let bytes: Bytes = match serde_json::to_vec(report) {
            Ok(b) => b.into(),
            Err(e) => return vec![(String::new(), Err(ClientError::Decode { addr: String::new(), reason: e.to_string() }))],
        };
        let members = self.members();
        let sends = members.iter().map(|addr| {
            let mut rb = self
                .http
                .post(format!("{addr}/v1/proxies/report"))
                .timeout(self.request_timeout)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone());
            if let Some(auth) = &self.authorization {
                rb = rb.header(http::header::AUTHORIZATION, auth.as_ref());
            }
            async move {
                let outcome = match rb.send().await {
                    Err(e) => Err(self.transport_error(addr, e, self.request_timeout)),
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let status = resp.status();
                        Err(api_error(status, &resp.bytes().await.unwrap_or_default()))
                    }
                };
                (addr.clone(), outcome)
            }
        });
        futures::future::join_all(sends).await
    }

    /// Raft status of the first member that answers (each member reports its own view).
    pub async fn status(&self) -> Result<RaftStatus, ClientError> {
        let bytes = self.call(Method::GET, "/v1/raft/status", None, true).await?;
        decode("/v1/raft/status", &bytes)
    }

    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<WriteReceipt, ClientError> {
        self.send_json(Method::POST, "/v1/raft/learners", &NewMember { id, addr: addr.to_string() }).await
    }

    pub async fn promote(&self, id: u64) -> Result<WriteReceipt, ClientError> {
        let out = self.call(Method::POST, &format!("/v1/raft/members/{id}/promote"), None, false).await?;
        decode("/v1/raft/members", &out)
    }

    pub async fn remove_member(&self, id: u64) -> Result<WriteReceipt, ClientError> {
        let out = self.call(Method::DELETE, &format!("/v1/raft/members/{id}"), None, false).await?;
        decode("/v1/raft/members", &out)
    }

    /// Follow the routing state: every state with an epoch above
    /// `from_epoch` (all states when `None`), across reconnects and
    /// members. Errors are reported as items and the stream keeps
    /// reconnecting (backoff 100 ms .. 2 s) until it is dropped.
    pub fn watch(&self, from_epoch: Option<u64>) -> WatchStream {
        let (tx, rx) = mpsc::channel(16);
        let follow = Arc::new(Following::new());
        tokio::spawn(watch_loop(self.clone(), from_epoch, tx, follow.clone()));
        WatchStream { rx, follow }
    }

    /// Follow the Raft view (`GET /v1/raft/watch`) of one member at a time:
    /// its view on connect, then every leader, term, state and membership
    /// change it sees. On an error (reported as an item) the stream moves on
    /// to the next member, each connection starting with that member's
    /// current view (`changes: ["initial"]`).
    pub fn watch_raft(&self) -> RaftWatchStream {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(raft_watch_loop(self.clone(), tx));
        RaftWatchStream { rx }
    }
}

/// Raft events from [`MetaClient::watch_raft`].
pub struct RaftWatchStream {
    rx: mpsc::Receiver<Result<RaftEvent, ClientError>>,
}

impl Stream for RaftWatchStream {
    type Item = Result<RaftEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn raft_watch_loop(client: MetaClient, tx: mpsc::Sender<Result<RaftEvent, ClientError>>) {
    if client.members().is_empty() {
        let _ = tx.send(Err(ClientError::NoMembers)).await;
        return;
    }
    let mut index = client.preferred.load(Ordering::Relaxed);
    let mut backoff = Duration::from_millis(100);
    loop {
        let members = client.members();
        let addr = members[index % members.len()].clone();
        let err = match EventStream::open(&client, &addr, "/v1/raft/watch", None).await {
            Err(e) => e,
            Ok(mut events) => loop {
                let event = match events.next().await {
                    Ok(e) => e,
                    Err(e) => break e,
                };
                backoff = Duration::from_millis(100);
                let item = match parse_raft_event(&event) {
                    Ok(None) => None,
                    Ok(Some(e)) => {
                        client.learn_members(e.members.iter().map(|m| m.addr.clone()).collect());
                        Some(Ok(e))
                    }
                    Err(reason) => Some(Err(ClientError::Decode { addr: addr.clone(), reason })),
                };
                if let Some(item) = item
                    && tx.send(item).await.is_err()
                {
                    return;
                }
                if tx.is_closed() {
                    return;
                }
            },
        };
        if !report_and_wait(&tx, err, &mut backoff).await {
            return;
        }
        index += 1;
    }
}

/// What both watch loops do after a stream ended: report `err` as an item,
/// then wait out `backoff` (doubled for next time, up to 2 s) before the
/// next member. `false` when the consumer is gone.
async fn report_and_wait<T>(tx: &mpsc::Sender<Result<T, ClientError>>, err: ClientError, backoff: &mut Duration) -> bool {
    if tx.send(Err(err)).await.is_err() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = tx.closed() => return false,
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    true
}

/// One open Server-Sent Events answer of a member (`/v1/watch`,
/// `/v1/raft/watch`): its complete events, one at a time, heartbeats
/// included. What both watch loops share: the idle timeout (no heartbeat
/// for `watch_idle_timeout`), the bound on an event's size, and telling a
/// [`Following`] when bytes arrive.
struct EventStream<'a> {
    resp: reqwest::Response,
    buf: Vec<u8>,
    addr: String,
    idle: Duration,
    heard: Option<&'a Following>,
}

impl<'a> EventStream<'a> {
    /// `GET {addr}{path}`: the stream, or the member's refusal.
    async fn open(client: &MetaClient, addr: &str, path: &str, heard: Option<&'a Following>) -> Result<EventStream<'a>, ClientError> {
        let resp =
            client.http.get(format!("{addr}{path}")).send().await.map_err(|e| client.transport_error(addr, e, client.request_timeout))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(EventStream { resp, buf: Vec::new(), addr: addr.to_string(), idle: client.watch_idle_timeout, heard })
    }

    /// The next complete event; an error ends the stream.
    async fn next(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(end) = find_event_end(&self.buf) {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            let watch_error = |reason: String| ClientError::Watch { addr: self.addr.clone(), reason };
            let chunk = match tokio::time::timeout(self.idle, self.resp.chunk()).await {
                Err(_) => return Err(watch_error(format!("nothing received for {:?} (no heartbeat)", self.idle))),
                Ok(Err(e)) => return Err(watch_error(e.to_string())),
                Ok(Ok(None)) => return Err(watch_error("stream closed".into())),
                Ok(Ok(Some(c))) => c,
            };
            if let Some(f) = self.heard {
                f.heard();
            }
            self.buf.extend_from_slice(&chunk);
            if self.buf.len() > MAX_WATCH_EVENT_BYTES {
                return Err(watch_error(format!("an event over {MAX_WATCH_EVENT_BYTES} bytes")));
            }
        }
    }
}

/// Largest watch event the client buffers: a routing state is bounded by
/// meta's limits (nodes, config) far below this; a member that sends more
/// without ending an event is cut off and the next member tried.
const MAX_WATCH_EVENT_BYTES: usize = 16 << 20;

/// Routing states from [`MetaClient::watch`].
pub struct WatchStream {
    rx: mpsc::Receiver<Result<RoutingState, ClientError>>,
    follow: Arc<Following>,
}

impl WatchStream {
    /// Which member the stream follows and when it last heard from it,
    /// updated as the stream runs (shared; cheap to read).
    pub fn following(&self) -> Arc<Following> {
        self.follow.clone()
    }
}

/// What a routing watch follows: the member whose stream is open (if any)
/// and when the last bytes (an event or a heartbeat) came from a member
/// with a leader. A member without a leader ends its stream within 1.5
/// election timeouts, so the age of the last contact is how stale the
/// routing may be.
#[derive(Debug)]
pub struct Following {
    started: Instant,
    state: std::sync::Mutex<FollowingState>,
}

#[derive(Debug, Clone, Default)]
struct FollowingState {
    member: Option<String>,
    last_contact: Option<Instant>,
}

impl Following {
    fn new() -> Self {
        Self { started: Instant::now(), state: std::sync::Mutex::new(FollowingState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FollowingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The member whose watch stream is open now.
    pub fn member(&self) -> Option<String> {
        self.lock().member.clone()
    }

    /// Time since the last event or heartbeat from a member that had a
    /// leader (since the watch started when none came yet).
    pub fn staleness(&self) -> Duration {
        self.lock().last_contact.unwrap_or(self.started).elapsed()
    }

    /// Whether any member was heard from yet.
    pub fn ever_contacted(&self) -> bool {
        self.lock().last_contact.is_some()
    }

    fn connected(&self, addr: &str) {
        let mut st = self.lock();
        if st.member.as_deref() != Some(addr) {
            info!(member = %addr, previous = ?st.member, "following meta member");
        }
        st.member = Some(addr.to_string());
        st.last_contact = Some(Instant::now());
    }

    fn heard(&self) {
        self.lock().last_contact = Some(Instant::now());
    }

    fn lost(&self) {
        self.lock().member = None;
    }
}

impl Stream for WatchStream {
    type Item = Result<RoutingState, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn watch_loop(
    client: MetaClient,
    from_epoch: Option<u64>,
    tx: mpsc::Sender<Result<RoutingState, ClientError>>,
    follow: Arc<Following>,
) {
    if client.members().is_empty() {
        let _ = tx.send(Err(ClientError::NoMembers)).await;
        return;
    }
    let mut last = from_epoch;
    let mut index = client.preferred.load(Ordering::Relaxed);
    let mut backoff = Duration::from_millis(100);
    loop {
        let members = client.members();
        let addr = members[index % members.len()].clone();
        let path = match last {
            Some(e) => format!("/v1/watch?from_epoch={e}"),
            None => "/v1/watch".to_string(),
        };
        let err = match EventStream::open(&client, &addr, &path, Some(&follow)).await {
            Err(e) => e,
            Ok(mut events) => {
                follow.connected(&addr);
                loop {
                    let event = match events.next().await {
                        Ok(e) => e,
                        Err(e) => break e,
                    };
                    backoff = Duration::from_millis(100);
                    if let Some(reason) = parse_closing(&event) {
                        // The member ended the stream on purpose (e.g. it
                        // lost its leader): on to the next member.
                        break ClientError::Watch { addr: addr.clone(), reason: format!("{} ({})", reason.error, reason.kind) };
                    }
                    if let Some(list) = parse_members(&event) {
                        client.learn_members(list.into_iter().map(|m| m.addr).collect());
                        continue;
                    }
                    match parse_event(&event) {
                        Ok(Some(state)) => {
                            if last.is_none_or(|l| state.epoch > l) {
                                last = Some(state.epoch);
                                if tx.send(Ok(state)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            if tx.send(Err(ClientError::Decode { addr: addr.clone(), reason })).await.is_err() {
                                return;
                            }
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        };
        follow.lost();
        if !report_and_wait(&tx, err, &mut backoff).await {
            return;
        }
        index += 1;
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api { status: status.as_u16(), kind: b.kind, message: b.error, leader: b.leader },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            kind: "http".into(),
            message: String::from_utf8_lossy(body).chars().take(300).collect(),
            leader: None,
        },
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode { addr: what.to_string(), reason: e.to_string() })
}
