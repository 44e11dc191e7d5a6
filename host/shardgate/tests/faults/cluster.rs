//! A Shardgate cluster laid out on the fault lab's hosts: the deployment
//! files of every process, and the client-side helpers the scenarios share
//! (HTTP calls with the epoch header, polling with deadlines, meta and
//! proxy status, the report row).
//!
//! Where it sits: `faults.rs` scenarios call [`start_metas`],
//! [`start_nodes`] and [`start_proxies`] on a [`Lab`], then use the helpers
//! here from inside the lab's client runtime ([`Lab::lan`]).

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use shardgate_meta_client::model::RaftStatus;
use shardgate_proxy::Status;

use crate::lab::{Host, Lab, Net};

pub const META_PORT: u16 = 7100;
pub const NODE_PORT: u16 = 7200;
pub const PROXY_PORT: u16 = 7000;

/// Meta members m1..m3 on the control network.
pub fn meta_hosts() -> Vec<Host> {
    (1..=3).map(|i| Host::new(&format!("m{i}"), 10 + i, &[Net::Ctl])).collect()
}

/// Cache nodes n1..n3 on the data network.
pub fn node_hosts() -> Vec<Host> {
    (1..=3).map(|i| Host::new(&format!("n{i}"), 20 + i, &[Net::Data])).collect()
}

/// Proxies p1, p2 on both networks.
pub fn proxy_hosts() -> Vec<Host> {
    (1..=2).map(|i| Host::new(&format!("p{i}"), 30 + i, &[Net::Ctl, Net::Data])).collect()
}

/// Raft and proxy timing of the lab. Meta runs its shipped defaults
/// (heartbeat 100ms, election timeout 500ms, write timeout 5s) so the
/// failover bar is checked against what ships.
#[derive(Clone, Debug)]
pub struct Timing {
    pub meta_extra: String,
    pub proxy_health_interval: Duration,
    pub proxy_eject_after: u32,
    pub proxy_probe_min: Duration,
    pub proxy_probe_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            meta_extra: String::new(),
            proxy_health_interval: Duration::from_millis(200),
            proxy_eject_after: 3,
            proxy_probe_min: Duration::from_millis(100),
            proxy_probe_max: Duration::from_secs(1),
        }
    }
}

impl Timing {
    /// The detection time the proxy config promises for a dead node: the
    /// first failed check is due within one `health_interval`, and
    /// `eject_after_failures` consecutive failures eject (request failures
    /// count too, so load only makes it faster).
    pub fn ejection_bar(&self) -> Duration {
        self.proxy_health_interval * (self.proxy_eject_after + 1)
    }
}

/// `http://10.231.1.1i:7100` for i in 1..=3.
pub fn meta_urls(lab: &Lab) -> Vec<String> {
    (1..=3).map(|i| format!("http://{}:{META_PORT}", lab.addr(&format!("m{i}"), Net::Ctl))).collect()
}

pub fn node_url(lab: &Lab, i: usize) -> String {
    format!("http://{}:{NODE_PORT}", lab.addr(&format!("n{i}"), Net::Data))
}

pub fn proxy_url(lab: &Lab, i: usize) -> String {
    format!("http://{}:{PROXY_PORT}", lab.addr(&format!("p{i}"), Net::Data))
}

/// Starts meta-1..3 (process names `meta-i`) in m1..m3.
pub fn start_metas(lab: &mut Lab, timing: &Timing) {
    let urls = meta_urls(lab);
    let members: Vec<String> = urls.iter().enumerate().map(|(i, u)| format!("{{ id = {}, addr = \"{u}\" }}", i + 1)).collect();
    for i in 1..=3 {
        let data = lab.dir().join(format!("meta-{i}-data"));
        let config = format!(
            "version = 1\n[meta]\nid = {i}\n# all interfaces: reachable on loopback inside its host during a partition\nlisten = \"0.0.0.0:{META_PORT}\"\nadvertise = \"{}\"\ndata_dir = \"{}\"\nmembers = [{}]\n{}",
            urls[i - 1],
            data.display(),
            members.join(", "),
            timing.meta_extra
        );
        lab.spawn(&format!("meta-{i}"), &format!("m{i}"), &config);
    }
}

/// Starts node-1..3 in n1..n3.
pub fn start_nodes(lab: &mut Lab) {
    for i in 1..=3 {
        let config = format!(
            "version = 1\n[node]\nlisten = \"{}:{NODE_PORT}\"\nmemory_limit = \"64MiB\"\nshutdown_timeout = \"1s\"\n",
            lab.addr(&format!("n{i}"), Net::Data)
        );
        lab.spawn(&format!("node-{i}"), &format!("n{i}"), &config);
    }
}

/// The deployment file of proxy-i.
pub fn proxy_config(lab: &Lab, i: usize, timing: &Timing) -> String {
    let metas: Vec<String> = meta_urls(lab).iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "version = 1\n[proxy]\nlisten = \"{}:{PROXY_PORT}\"\nmeta = [{}]\nwrite_ack = \"one\"\nrequest_timeout = \"1s\"\nconnect_timeout = \"300ms\"\nhealth_interval = \"{}ms\"\neject_after_failures = {}\nprobe_backoff_min = \"{}ms\"\nprobe_backoff_max = \"{}ms\"\nshutdown_timeout = \"1s\"\n",
        lab.addr(&format!("p{i}"), Net::Data),
        metas.join(", "),
        timing.proxy_health_interval.as_millis(),
        timing.proxy_eject_after,
        timing.proxy_probe_min.as_millis(),
        timing.proxy_probe_max.as_millis(),
    )
}

/// Starts proxy-1 and proxy-2 in p1, p2.
pub fn start_proxies(lab: &mut Lab, timing: &Timing) {
    for i in 1..=2 {
        let config = proxy_config(lab, i, timing);
        lab.spawn(&format!("proxy-{i}"), &format!("p{i}"), &config);
    }
}

/// An HTTP client for the lab (no proxy settings from the environment).
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
