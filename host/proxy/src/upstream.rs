//! The forwarder: pooled keep-alive HTTP/1.1 to nodes (the proxy's own
//! in-task client, [`crate::h1`], by default; hyper-util's legacy client
//! with `proxy.upstream_client = "hyper-util"`), `proxy.request_timeout`
//! (kept by the in-task client's pool, see [`crate::h1`]; a timer per
//! request around hyper-util's), and
//! the bookkeeping of every upstream outcome (latency histogram per node,
//! passive error counting on the node board, [`crate::nodes`]). Every request carries
//! `Authorization: Bearer <proxy.node_token>` when that is set; a node that
//! refuses the proxy's credentials (401/403) is reported as a 502 naming the
//! node's answer and `proxy.node_token`, never relayed as the client's own
//! authentication failure.
//!
//! Where it sits in the request flow: last stop before the nodes.
//! [`crate::replication`] (single keys), [`crate::node_batch`] (the
//! per-node legs of batches) and [`crate::migration`] call
//! [`Upstream::send`] once the owners are chosen; the health checker of
//! [`crate::nodes`] calls [`Upstream::check`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{ProxyConfig, UpstreamClient};
use crate::h1::NodeFailure;
use crate::nodes::{NodeBoard, NodeHandle};

/// A complete answer from a node, with its end-to-end headers only (no
/// `connection`, `keep-alive`, `transfer-encoding` or `date`).
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An upstream request that produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("node {node} ({addr}) is unreachable: {reason}")]
    Unreachable { node: String, addr: String, reason: String },
    #[error("node {node} did not answer within proxy.request_timeout ({timeout})")]
    Timeout { node: String, timeout: String },
    #[error("node {node}: bad upstream address {addr}")]
    BadAddress { node: String, addr: String },
    #[error("node {node} refused the proxy with HTTP {status} ({message}); proxy.node_token must equal the node's node.data_token")]
    Refused { node: String, status: u16, message: String },
}

/// The pooled client to cache nodes. A clone shares the pools.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    direct: bool,
    timeout: Duration,
    board: Arc<NodeBoard>,
    /// `Authorization: Bearer <proxy.node_token>`, when set.
    authorization: Option<(header::HeaderName, HeaderValue)>,
}

impl Upstream {
    /// A forwarder; `node_token` (resolved from `proxy.node_token[_file]`,
    /// already validated) is sent on every request.
    pub fn new(config: &ProxyConfig, board: Arc<NodeBoard>, node_token: Option<&str>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_node)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let authorization = node_token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()).map(|mut v| {
            v.set_sensitive(true);
            (header::AUTHORIZATION, v)
        });
        Upstream { client, direct: config.upstream_client == UpstreamClient::Direct, timeout: config.request_timeout, board, authorization }
    }

    /// Sends one request to `node` and reads the whole answer within
    /// `proxy.request_timeout`. Answers of 500 and above, connection errors
    /// and timeouts count as failures of the node; anything else resets its
    /// failure count.
    pub async fn send(
        &self,
        node: &NodeHandle,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let start = Instant::now();
        let result = if self.direct {
            let Some(pool) = &node.pool else {
                return Err(UpstreamError::BadAddress { node: node.id.clone(), addr: node.addr.clone() });
            };
            let extra = self.authorization.as_slice();
            // One clock read per request: the pool's bound, its idle
            // stamps and the latency all start from `start`. The pool
            // bounds the wait with `proxy.request_timeout` (a piped
            // request by its pipe's one timer: see `crate::h1`).
            match pool.request_at(start, &method, path_and_query, headers, extra, &body).await {
                Ok(a) => Ok(Ok(UpstreamResponse { status: a.status, headers: a.headers, body: a.body })),
                Err(NodeFailure::Failed(reason)) => Ok(Err(reason)),
                Err(NodeFailure::NoAnswer { .. }) => Err(()),
            }
        } else {
            let with_token;
            let headers = match &self.authorization {
                Some(auth) => {
                    with_token = headers.iter().cloned().chain(std::iter::once(auth.clone())).collect::<Vec<_>>();
                    &with_token[..]
                }
                None => headers,
            };
            // Boxed: hyper's client future is kilobytes, and unboxed it would
            // size every future that awaits `send` (each moved whole when
            // built), the direct path's included.
            Box::pin(self.send_hyper(node, method, path_and_query, headers, body)).await?.map_err(|_| ())
        };
        node.latency.observe(start.elapsed().as_secs_f64());
        match result {
            Ok(Ok(response)) if matches!(response.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                // The node is up; the proxy's credentials are wrong. Not a
                // node failure (ejecting would hide the cause), not the
                // client's fault either.
                node.errors.inc();
                tracing::debug!(node = %node.id, status = response.status.as_u16(), "node refused the proxy's token");
                let message = serde_json::from_slice::<serde_json::Value>(&response.body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&response.body).chars().take(200).collect());
                Err(UpstreamError::Refused { node: node.id.clone(), status: response.status.as_u16(), message })
            }
            Ok(Ok(response)) => {
                if response.status.is_server_error() {
                    node.errors.inc();
                    self.board.failure(node, &format!("answered HTTP {}", response.status.as_u16()));
                } else {
                    self.board.success(node);
                }
                Ok(response)
            }
            Ok(Err(reason)) => {
                node.errors.inc();
                self.board.failure(node, &reason);
                Err(UpstreamError::Unreachable { node: node.id.clone(), addr: node.addr.clone(), reason })
            }
            Err(_) => {
                node.errors.inc();
                let timeout = humantime::format_duration(self.timeout).to_string();
                self.board.failure(node, &format!("no answer within {timeout}"));
                Err(UpstreamError::Timeout { node: node.id.clone(), timeout })
            }
        }
    }

    async fn send_hyper(
        &self,
        node: &NodeHandle,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Result<Result<UpstreamResponse, String>, tokio::time::error::Elapsed>, UpstreamError> {
        let uri: Uri = format!("{}{}", node.addr, path_and_query)
            .parse()
            .map_err(|_| UpstreamError::BadAddress { node: node.id.clone(), addr: node.addr.clone() })?;
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request =
            builder.body(Full::new(body)).map_err(|_| UpstreamError::BadAddress { node: node.id.clone(), addr: node.addr.clone() })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe(&e))?;
            let (mut parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| describe(&e))?.to_bytes();
            // Like the direct client's answers: end-to-end headers only.
            for name in [header::CONNECTION, header::HeaderName::from_static("keep-alive"), header::TRANSFER_ENCODING, header::DATE] {
                parts.headers.remove(name);
            }
            Ok::<_, String>(UpstreamResponse { status: parts.status, headers: parts.headers, body })
        };
        Ok(tokio::time::timeout(self.timeout, exchange).await)
    }

    /// One active health check: `GET /readyz` must answer 200 in time.
    pub async fn check(&self, node: &NodeHandle) -> Result<(), String> {
        if self.direct {
            let pool = node.pool.as_ref().ok_or_else(|| format!("bad address {}", node.addr))?;
            return match tokio::time::timeout(self.timeout, pool.request(&Method::GET, "/readyz", &[], b"")).await {
                Ok(Ok(a)) if a.status == StatusCode::OK => Ok(()),
                Ok(Ok(a)) => Err(format!("health check answered HTTP {}", a.status.as_u16())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("health check got no answer within {}", humantime::format_duration(self.timeout))),
            };
        }
        let uri: Uri = format!("{}/readyz", node.addr).parse().map_err(|_| format!("bad address {}", node.addr))?;
        let request = Request::get(uri).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe(&e))?;
            let status = response.status();
            let _ = response.into_body().collect().await;
            if status == StatusCode::OK { Ok(()) } else { Err(format!("health check answered HTTP {}", status.as_u16())) }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("health check got no answer within {}", humantime::format_duration(self.timeout))),
        }
    }
}

/// The error and its causes on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}
