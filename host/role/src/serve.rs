//! The accept loop every role serves HTTP/1.1 with: the first thing a
//! client's connection meets, before any of the role's handlers.
//!
//! Connection flow: [`serve`] accepts a TCP connection -> over
//! [`ServeConfig::max_connections`]: [`reject_connection`] (raw 503 naming
//! the limit, optional `Retry-After`) and close -> `TCP_NODELAY` -> TLS
//! handshake in the connection's own task when [`ServeConfig::tls`] is set,
//! bounded by [`ServeConfig::header_read_timeout`] -> hyper http1 with the
//! role's builder options, the request head bounded by the same deadline ->
//! the role's service (one per connection, made from the peer's address).
//! Answers go back through [`crate::coalesce`]: what one poll of the
//! connection answered (requests pipelined in one read) leaves in one
//! write, and every answer is written before the connection closes.
//!
//! On shutdown the listener is closed, handshakes in progress are
//! abandoned, and open connections get [`ServeConfig::drain_timeout`] to
//! finish their in-flight requests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::coalesce::coalesce;

pub use tokio_rustls::TlsAcceptor;

/// How one role accepts connections.
#[derive(Clone)]
pub struct ServeConfig {
    /// The role, for log lines: `node`, `proxy`, `meta`.
    pub role: &'static str,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: u32,
    /// The config key of `max_connections` (`node.max_connections`),
    /// named in the 503.
    pub max_connections_key: &'static str,
    /// `Retry-After` (seconds) on the 503; `None`: no such header.
    pub retry_after_secs: Option<u32>,
    /// Time a client has to send a complete request head; with `tls`, also
    /// the time it has to finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// Serve TLS with this acceptor; `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// After shutdown, how long open connections get to finish.
    pub drain_timeout: Duration,
    /// Serve each connection on a connection worker
    /// ([`crate::workers`]) when the process installed them (the data
    /// path: node and proxy); otherwise on the accept loop's runtime.
    pub on_workers: bool,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("role", &self.role)
            .field("max_connections", &self.max_connections)
            .field("max_connections_key", &self.max_connections_key)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("tls", &self.tls.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .field("on_workers", &self.on_workers)
            .finish()
    }
}

/// Where [`serve`] reports connections, so each role keeps its own metric
/// names (`shardgate_node_connections_open`, `shardgate_proxy_refused_total`,
/// ...). Every method defaults to doing nothing; `()` counts nothing.
pub trait ConnectionMetrics: Send + Sync + 'static {
    /// A connection was accepted under the cap (before any TLS handshake).
    fn opened(&self) {}
    /// An accepted connection ended, whether it was served, failed its
    /// handshake or was abandoned at shutdown.
    fn closed(&self) {}
    /// A connection over the cap was answered 503.
    fn rejected(&self) {}
}

impl ConnectionMetrics for () {}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the drain deadline.
    Finished,
    /// The drain deadline passed with connections still open; they are left
    /// to finish (or not) on their own tasks.
    TimedOut,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `config.drain_timeout` for open connections to finish.
///
/// `http` carries the role's own http1 options (not `pipeline_flush`: it
/// drops answers written before a close; [`crate::coalesce`] batches
/// instead);
/// the timer and `header_read_timeout` are set here. `service_for` is
/// called once per accepted connection with the peer's address and makes
/// that connection's service (per-connection state such as the client IP
/// lives in it); axum routers come in through
/// `hyper_util::service::TowerToHyperService`.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    config: ServeConfig,
    http: http1::Builder,
    service_for: F,
    metrics: Arc<dyn ConnectionMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Drained
where
    F: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = connection_limit(config.max_connections);
    serve_with_limit(listener, config, http, service_for, limit, metrics, shutdown).await
}

/// The cap on connections served at once: one per role, shared by every
/// listener of it ([`serve_with_limit`], [`serve_streams`]).
pub fn connection_limit(max_connections: u32) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_connections as usize))
}

/// [`serve`] counting its connections against `connections`, a limit
/// other listeners of the role share (from [`connection_limit`]).
pub async fn serve_with_limit<F, S, B>(
    listener: TcpListener,
    config: ServeConfig,
    mut http: http1::Builder,
    mut service_for: F,
    connections: Arc<Semaphore>,
    metrics: Arc<dyn ConnectionMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Drained
where
    F: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let role = config.role;
    let local = listener.local_addr().ok();
    let workers = config.on_workers.then(crate::workers::installed).flatten();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Flips to true at shutdown: handshakes still in progress are abandoned.
    let (stopping_tx, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let Some((stream, peer)) = next_connection(&listener, &mut shutdown, role).await else { break };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.rejected();
            debug!(role, %peer, limit = config.max_connections, key = config.max_connections_key, "rejecting connection");
            tokio::spawn(reject_connection(stream, config.max_connections_key, config.max_connections, config.retry_after_secs));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service_for(peer);
        let (http, watcher, metrics) = (http.clone(), graceful.watcher(), metrics.clone());
        metrics.opened();
        match &config.tls {
            None => {
                let connection = move |stream: TcpStream| async move {
                    serve_connection(&http, watcher, stream, service, peer).await;
                    metrics.closed();
                    drop(permit);
                };
                spawn_connection(workers, stream, connection);
            }
            Some(acceptor) => {
                // The handshake runs in the connection's own task, bounded
                // like a request head, so a slow client stalls nobody.
                let (acceptor, mut stopping) = (acceptor.clone(), stopping.clone());
                let handshake_timeout = config.header_read_timeout;
                let connection = move |stream: TcpStream| async move {
                    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    let tls = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(tls)) => Some(tls),
                            Ok(Err(error)) => {
                                debug!(role, %peer, %error, "tls handshake failed");
                                None
                            }
                            Err(_) => {
                                debug!(role, %peer, timeout = ?handshake_timeout, "tls handshake timed out");
                                None
                            }
                        },
                        _ = stopping.wait_for(|s| *s) => {
                            debug!(role, %peer, "tls handshake abandoned at shutdown");
                            None
                        }
                    };
                    if let Some(tls) = tls {
                        serve_connection(&http, watcher, tls, service, peer).await;
                    }
                    metrics.closed();
                    drop(permit);
                };
                spawn_connection(workers, stream, connection);
            }
        }
    }

    let _ = stopping_tx.send(true);
    drop(listener);
    info!(role, addr = ?local, "shutting down; finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {
            info!(role, addr = ?local, "stopped");
            Drained::Finished
        }
        () = tokio::time::sleep(config.drain_timeout) => {
            warn!(role, addr = ?local, timeout = ?config.drain_timeout, "stopped with requests still in flight");
            Drained::TimedOut
        }
    }
}

/// A client connection of [`serve_streams`]: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Serves a protocol other than HTTP (the proxy's RESP listener) through
/// the same accept loop: the same connection cap (`connections`, shared
/// with the role's HTTP listener), `TCP_NODELAY`, optional TLS handshake
/// bounded by `header_read_timeout`, and the same drain on shutdown. A
/// connection over the cap gets `refusal` written raw and is closed.
/// `handle` serves one connection until it ends; its `stopping` receiver
/// turns true at shutdown (stop taking new commands, answer what was read,
/// return).
#[allow(clippy::too_many_arguments)]
pub async fn serve_streams<H, Fut>(
    listener: TcpListener,
    config: ServeConfig,
    connections: Arc<Semaphore>,
    refusal: Arc<[u8]>,
    handle: H,
    metrics: Arc<dyn ConnectionMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Drained
where
    H: Fn(Box<dyn Stream>, SocketAddr, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let role = config.role;
    let local = listener.local_addr().ok();
    let workers = config.on_workers.then(crate::workers::installed).flatten();
    let handle = Arc::new(handle);
    let (stopping_tx, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Some((mut stream, peer)) = next_connection(&listener, &mut shutdown, role).await else { break };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.rejected();
            debug!(role, %peer, limit = config.max_connections, key = config.max_connections_key, "rejecting connection");
            let refusal = refusal.clone();
            tokio::spawn(async move {
                let write = async {
                    stream.write_all(&refusal).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handle, metrics, mut stopping) = (handle.clone(), metrics.clone(), stopping.clone());
        let tls = config.tls.clone();
        let handshake_timeout = config.header_read_timeout;
        metrics.opened();
        let connection = move |stream: TcpStream| async move {
            let io: Option<Box<dyn Stream>> = match tls {
                None => Some(Box::new(stream)),
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(tls)) => Some(Box::new(tls) as Box<dyn Stream>),
                            Ok(Err(error)) => {
                                debug!(role, %peer, %error, "tls handshake failed");
                                None
                            }
                            Err(_) => None,
                        },
                        _ = stopping.wait_for(|s| *s) => None,
                    }
                }
            };
            if let Some(io) = io {
                handle(io, peer, stopping).await;
            }
            metrics.closed();
            drop(permit);
        };
        spawn_connection(workers, stream, connection);
    }
    let _ = stopping_tx.send(true);
    drop(stopping);
    drop(listener);
    info!(role, addr = ?local, "shutting down; finishing in-flight commands");
    // Every connection task holds a receiver: closed once all have ended.
    match tokio::time::timeout(config.drain_timeout, stopping_tx.closed()).await {
        Ok(()) => Drained::Finished,
        Err(_) => {
            warn!(role, addr = ?local, timeout = ?config.drain_timeout, "stopped with commands still in flight");
            Drained::TimedOut
        }
    }
}

/// Runs `connection` on `stream`: on the next connection worker when the
/// loop has them, else as a task of the accept loop's runtime.
fn spawn_connection<F, Fut>(workers: Option<&crate::workers::Workers>, stream: TcpStream, connection: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    match workers {
        Some(workers) => workers.serve(stream, connection),
        None => drop(tokio::spawn(connection(stream))),
    }
}

/// The next connection `listener` accepts, or `None` once `shutdown` is
/// done: the accept step of both loops ([`serve_with_limit`],
/// [`serve_streams`]).
async fn next_connection<S: Future<Output = ()>>(
    listener: &TcpListener,
    shutdown: &mut std::pin::Pin<&mut S>,
    role: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                // The peer gave up before we accepted: nothing to do.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(role, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves HTTP/1.1 on one accepted (and, with TLS, handshaken) connection
/// until it ends; `watcher` lets shutdown end it gracefully. Answers hyper
/// writes in one poll of the connection leave in one write
/// ([`crate::coalesce`]).
async fn serve_connection<I, S, B>(http: &http1::Builder, watcher: Watcher, io: I, service: S, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // hyper serves on the coalescing side; its connection future runs
    // inside the flusher, which writes what each poll answered at once.
    let (io, flusher) = coalesce(io);
    if let Err(error) = flusher.around(watcher.watch(http.serve_connection(TokioIo::new(io), service))).await {
        debug!(%peer, %error, "connection ended with an error");
    }
}

/// Answers a connection over a connection limit (`key`, e.g.
/// `node.max_connections`) with a 503 naming the limit, optionally with
/// `Retry-After`, and closes it. Written raw: no HTTP request is read.
pub async fn reject_connection(mut stream: TcpStream, key: &str, limit: u32, retry_after_secs: Option<u32>) {
    let response = rejection(key, limit, retry_after_secs);
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The bytes [`reject_connection`] writes.
pub fn rejection(key: &str, limit: u32, retry_after_secs: Option<u32>) -> String {
    let body = serde_json::json!({
        "error": format!("too many connections; the limit {key} is {limit}")
    })
    .to_string();
    let retry_after = retry_after_secs.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n{retry_after}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}
