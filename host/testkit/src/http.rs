//! A small HTTP/1.1 client over real sockets ([`Http`]) and what it answers
//! ([`Answer`]), plus raw TCP exchanges ([`raw_exchange`], [`RawResponse`])
//! for bytes no well-behaved client would send.
//!
//! Every request has a deadline ([`DEADLINE`]); a server that neither
//! answers nor closes in time is a test failure, not a hang.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shardgate_api::key::{encode_key_segment, key_path};
use shardgate_proxy::{EPOCH_HEADER, Owners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one exchange may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// An answer over HTTP: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text; empty when absent or not visible ASCII.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }

    /// The `ETag` header; panics when there is none.
    pub fn etag(&self) -> String {
        self.headers
            .get(header::ETAG)
            .unwrap_or_else(|| panic!("no ETag in a {} answer: {}", self.status, self.text()))
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The `Content-Type` header, or empty.
    pub fn content_type(&self) -> String {
        self.header(header::CONTENT_TYPE)
    }

    /// The `Shardgate-Epoch` header of a proxy's answer.
    pub fn epoch(&self) -> Option<u64> {
        self.headers.get(EPOCH_HEADER)?.to_str().ok()?.parse().ok()
    }

    /// The `error` string of a JSON error body; panics when the body is
    /// not one.
    pub fn json_error(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body));
        value["error"].as_str().expect("error field").to_string()
    }
}

/// An HTTP/1.1 client: keep-alive ([`Http::new`]) or a new connection per
/// request ([`Http::fresh`]).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// Pooled keep-alive connections, `TCP_NODELAY`.
    pub fn new() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Http { client: Client::builder(TokioExecutor::new()).build(c) }
    }

    /// A new connection per request: servers close idle keep-alive
    /// connections after their header timeout, and a pooled connection
    /// racing that close is a client problem, not something under test.
    pub fn fresh() -> Self {
        Http { client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http() }
    }

    /// One request to `url`; `Err` when it cannot be built or sent, or no
    /// answer came within [`DEADLINE`].
    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Answer, String> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(DEADLINE, self.client.request(req))
            .await
            .map_err(|_| format!("{url}: no answer in {DEADLINE:?}"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    pub async fn get(&self, base: &str, key: &[u8]) -> Result<Answer, String> {
        self.send(Method::GET, &format!("{base}{}", key_path(key)), &[], Bytes::new()).await
    }

    pub async fn put(&self, base: &str, key: &[u8], value: impl Into<Bytes>) -> Result<Answer, String> {
        self.send(Method::PUT, &format!("{base}{}", key_path(key)), &[], value).await
    }

    pub async fn delete(&self, base: &str, key: &[u8]) -> Result<Answer, String> {
        self.send(Method::DELETE, &format!("{base}{}", key_path(key)), &[], Bytes::new()).await
    }

    /// A proxy's `/v1/owners/<key>`.
    pub async fn owners(&self, proxy: &str, key: &[u8]) -> Result<Owners, String> {
        let a = self.send(Method::GET, &format!("{proxy}/v1/owners/{}", encode_key_segment(key)), &[], Bytes::new()).await?;
        if a.status != StatusCode::OK {
            return Err(format!("owners: HTTP {} {}", a.status, a.text()));
        }
        serde_json::from_slice(&a.body).map_err(|e| e.to_string())
    }

    /// `/metrics` as text.
    pub async fn metrics(&self, base: &str) -> Result<String, String> {
        Ok(self.send(Method::GET, &format!("{base}/metrics"), &[], Bytes::new()).await?.text())
    }
}

/// Value of an unlabelled metric in OpenMetrics text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Value of an unlabelled metric in OpenMetrics text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(0.0)
}

/// The first response on a raw connection, parsed just enough.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Writes `bytes` on a new connection and reads until the server closes it
/// (or [`DEADLINE`] passes): what came back, as text. The connection is
/// not half-closed, so a server waiting for more sees a slow client.
pub async fn raw_text(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

/// Reads until the server closes the connection or [`DEADLINE`] passes.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes`, half-closes, and reads until the server closes. `None`
/// when the server closed without answering; panics when it neither
/// answered nor closed within [`DEADLINE`] or answered something that is
/// not an HTTP/1 response.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything: a reset
    // while writing is fine, the answer is what counts.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{addr} neither answered nor closed within {DEADLINE:?} for {:?}", clip(bytes));
    if out.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out);
    let head_end = text.find("\r\n\r\n").unwrap_or_else(|| panic!("incomplete response head: {text:?}"));
    let mut lines = text[..head_end].split("\r\n");
    let status_line = lines.next().unwrap();
    // An HTTP/1.0 request gets an HTTP/1.0 answer.
    assert!(status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "), "not an HTTP/1 status line: {status_line:?}");
    let status: u16 = status_line[9..12].parse().unwrap_or_else(|_| panic!("bad status line {status_line:?}"));
    let mut content_type = String::new();
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_string(),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let body_start = head_end + 4;
    let body = out[body_start.min(out.len())..].to_vec();
    let body = match length {
        Some(n) => body[..n.min(body.len())].to_vec(),
        None => body,
    };
    Some(RawResponse { status, content_type, body })
}

/// The first 400 bytes of `bytes`, lossily as text, for messages.
pub fn clip(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned()
}
