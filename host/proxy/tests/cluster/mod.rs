//! Test support: a local cluster (3 meta members, 3 nodes, 2 proxies on
//! pre-bound 127.0.0.1:0 listeners, from `shardgate_testkit::cluster`), a
//! small HTTP client over real sockets, and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shardgate_api::key::{encode_key_segment, key_path};
pub use shardgate_testkit::{ClusterSpec, LocalCluster};
use shardgate_proxy::{EPOCH_HEADER, Owners};

/// An answer over HTTP.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The `Shardgate-Epoch` header.
    pub fn epoch(&self) -> Option<u64> {
        self.headers.get(EPOCH_HEADER)?.to_str().ok()?.parse().ok()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client.
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
    pub fn new() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Http { client: Client::builder(TokioExecutor::new()).build(c) }
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Answer, String> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{url}: no answer in 10s"))?
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

    pub async fn owners(&self, proxy: &str, key: &[u8]) -> Result<Owners, String> {
        let a = self.send(Method::GET, &format!("{proxy}/v1/owners/{}", encode_key_segment(key)), &[], Bytes::new()).await?;
        if a.status != StatusCode::OK {
            return Err(format!("owners: HTTP {} {}", a.status, a.text()));
        }
        serde_json::from_slice(&a.body).map_err(|e| e.to_string())
    }

    pub async fn metrics(&self, base: &str) -> Result<String, String> {
        Ok(self.send(Method::GET, &format!("{base}/metrics"), &[], Bytes::new()).await?.text())
    }
}

/// Value of an unlabelled metric in OpenMetrics text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Polls `check` every 10 ms until it answers `Some`, or panics after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The standard test cluster: 3 meta members, 3 nodes, 2 proxies; nodes
/// registered. `tune` adjusts the spec first.
pub async fn start(dir: &tempfile::TempDir, tune: impl FnOnce(&mut ClusterSpec)) -> LocalCluster {
    let mut spec = ClusterSpec::new(3, 3, 2, dir.path());
    // Admission routes only a few keys, so the `misbehave` strategy's
    // `after` can be small.
    spec.meta.admission_sample_keys = 10;
    spec.proxy.health_interval = Duration::from_millis(100);
    spec.proxy.request_timeout = Duration::from_secs(2);
    tune(&mut spec);
    let cluster = LocalCluster::start(spec).await.expect("cluster starts");
    cluster.register_nodes().await.expect("nodes registered");
    cluster
}

/// Activates a built-in strategy and waits until both proxies serve it.
pub async fn activate(cluster: &LocalCluster, name: &str, config: &str, replicas: u32) -> u64 {
    let receipt = cluster.activate_builtin(name, config, replicas).await.expect("activation committed");
    cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.expect("proxies reach the epoch");
    receipt.epoch
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
