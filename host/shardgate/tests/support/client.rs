//! Client-side helpers shared by the tests that drive a whole cluster from
//! outside (`faults.rs` across network namespaces, `compose.rs` across
//! containers): HTTP calls with the epoch header, polling with deadlines,
//! meta and proxy status, the report row. Each test crate uses a part.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use shardgate_meta_client::model::RaftStatus;
use shardgate_proxy::Status;

/// An HTTP client for a test cluster (no proxy settings from the environment).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    shardgate_tls::http_client_system_roots()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .build()
        .expect("http client")
}

/// An answer: status, the `Shardgate-Epoch` header, the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub epoch: Option<u64>,
    pub body: String,
}

pub async fn send(http: &reqwest::Client, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Answer, String> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let epoch = resp.headers().get("shardgate-epoch").and_then(|v| v.to_str().ok()?.parse().ok());
    let body = resp.text().await.map_err(describe)?;
    Ok(Answer { status, epoch, body })
}

/// A reqwest error with its causes, on one line.
pub fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Polls `f` every `every` until it answers `Some` or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// `GET /v1/raft/status` of one member.
pub async fn raft_status(http: &reqwest::Client, meta: &str) -> Option<RaftStatus> {
    let a = send(http, Method::GET, &format!("{meta}/v1/raft/status"), None).await.ok()?;
    if a.status != 200 {
        return None;
    }
    serde_json::from_str(&a.body).ok()
}

/// The member that says it leads, among `metas`, with its status.
pub async fn leader(http: &reqwest::Client, metas: &[String]) -> Option<(String, RaftStatus)> {
    for m in metas {
        if let Some(s) = raft_status(http, m).await
            && s.state == "leader"
        {
            return Some((m.clone(), s));
        }
    }
    None
}

/// `GET /status` of a proxy.
pub async fn proxy_status(http: &reqwest::Client, proxy: &str) -> Option<Status> {
    let a = send(http, Method::GET, &format!("{proxy}/status"), None).await.ok()?;
    if a.status != 200 {
        return None;
    }
    serde_json::from_str(&a.body).ok()
}

/// Waits until every proxy serves `epoch` or later; panics after `timeout`.
pub async fn wait_proxies_at(http: &reqwest::Client, proxies: &[String], epoch: u64, timeout: Duration) {
    for p in proxies {
        let got = poll(timeout, Duration::from_millis(20), || async { proxy_status(http, p).await.filter(|s| s.epoch >= epoch) }).await;
        assert!(got.is_some(), "proxy {p} did not reach epoch {epoch} within {timeout:?}: {:?}", proxy_status(http, p).await);
    }
}

/// One row of the fault report.
pub struct Row {
    pub scenario: &'static str,
    pub sent: u64,
    pub failed: u64,
    pub detection: String,
    pub recovery: String,
    pub notes: String,
}

impl Row {
    /// Prints the row as a Markdown table line (visible with `--nocapture`).
    pub fn print(&self) {
        println!("| {} | {} | {} | {} | {} | {} |", self.scenario, self.sent, self.failed, self.detection, self.recovery, self.notes);
    }
}

pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
