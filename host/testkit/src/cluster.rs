//! Local clusters in one process: M meta members, N cache nodes and P
//! proxies, each on a listener bound to `127.0.0.1:0` before it starts, so
//! nothing races for ports. Used by the integration tests and the proxy's
//! benchmark.
//!
//! [`LocalCluster::start`] binds and starts everything and waits for a Raft
//! leader; [`LocalCluster::register_nodes`] adds the nodes to meta;
//! [`LocalCluster::activate_builtin`] uploads and activates a built-in
//! strategy; [`LocalCluster::wait_for_epoch`] polls every proxy's `/status`
//! until it serves an epoch. Every member can be stopped on its own
//! ([`Member::stop`]), which is how tests kill a node.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shardgate_meta::{InitialMember, MetaConfig};
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, Change, NewNode, WriteReceipt};
use shardgate_node::NodeConfig;
use shardgate_proxy::{ProxyConfig, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub metas: usize,
    pub nodes: usize,
    pub proxies: usize,
    /// Meta members keep their Raft state in `data_dir/meta-<id>`.
    pub data_dir: PathBuf,
    /// Template for every node (`listen` is ignored).
    pub node: NodeConfig,
    /// Template for every meta member (`id`, `listen`, `members`,
    /// `data_dir` are set per member).
    pub meta: MetaConfig,
    /// Template for every proxy (`meta` is set to the members' addresses).
    pub proxy: ProxyConfig,
}

impl ClusterSpec {
    /// A spec with quick Raft timing for local use.
    pub fn new(metas: usize, nodes: usize, proxies: usize, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir: PathBuf = data_dir.into();
        ClusterSpec {
            metas,
            nodes,
            proxies,
            node: NodeConfig { shutdown_timeout: Duration::from_secs(2), ..NodeConfig::default() },
            meta: MetaConfig {
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                watch_heartbeat: Duration::from_millis(500),
                ..MetaConfig::default()
            },
            // Proxies share one compiled-strategy cache inside the cluster's
            // directory (not the user's cache).
            proxy: ProxyConfig {
                shutdown_timeout: Duration::from_secs(2),
                compiled_cache_dir: Some(data_dir.join("proxy-compiled-strategies")),
                ..ProxyConfig::default()
            },
            data_dir,
        }
    }
}

/// A cluster member started by [`LocalCluster`].
pub struct Member {
    /// `node-1`, `meta-1`, `proxy-1`, ...
    pub id: String,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Member {
    fn spawn<F, E>(id: String, addr: String, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Member
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (tx, rx) = oneshot::channel();
        let fut = run(rx);
        let task = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        Member { id, addr, stop: Some(tx), task: Some(task) }
    }

    /// True until [`Member::stop`] has run.
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Stops the member and waits until it has closed its listener and
    /// connections. Answers the member's own error, if it stopped with one.
    pub async fn stop(&mut self) -> Result<(), String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| format!("{} task: {e}", self.id))?,
            None => Ok(()),
        }
    }
}

async fn stop_signal(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("binding 127.0.0.1:0: {0}")]
    Bind(#[from] std::io::Error),
    #[error("meta: {0}")]
    Meta(#[from] shardgate_meta_client::ClientError),
    #[error("{0}")]
    Timeout(String),
    #[error("unknown built-in strategy {0:?}")]
    UnknownStrategy(String),
    #[error("{0}")]
    Http(String),
}

/// A running local cluster.
pub struct LocalCluster {
    pub metas: Vec<Member>,
    pub nodes: Vec<Member>,
    pub proxies: Vec<Member>,
    /// Client of every meta member.
    pub meta: MetaClient,
    spec: ClusterSpec,
    http: Client<HttpConnector, Full<Bytes>>,
}

async fn bind() -> Result<(TcpListener, String), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    Ok((listener, addr))
}

impl LocalCluster {
    /// Starts everything and waits (up to 20 s) until meta has a leader.
    pub async fn start(spec: ClusterSpec) -> Result<LocalCluster, ClusterError> {
        let mut meta_listeners = Vec::new();
        for _ in 0..spec.metas {
            meta_listeners.push(bind().await?);
        }
        let members: Vec<InitialMember> =
            meta_listeners.iter().enumerate().map(|(i, (_, addr))| InitialMember { id: i as u64 + 1, addr: addr.clone() }).collect();
        let mut metas = Vec::new();
        for (i, (listener, addr)) in meta_listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let config = MetaConfig {
                id,
                listen: listener.local_addr()?,
                members: members.clone(),
                data_dir: spec.data_dir.join(format!("meta-{id}")),
                ..spec.meta.clone()
            };
            metas.push(Member::spawn(format!("meta-{id}"), addr, move |rx| shardgate_meta::run(listener, config, stop_signal(rx))));
        }
        let meta_addrs: Vec<String> = metas.iter().map(|m| m.addr.clone()).collect();
        let meta = MetaClient::new(meta_addrs.clone()).with_retry_for(Duration::from_secs(20));
        let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut cluster = LocalCluster { metas, nodes: Vec::new(), proxies: Vec::new(), meta, spec, http };
        for _ in 0..cluster.spec.nodes {
            cluster.start_node().await?;
        }
        for _ in 0..cluster.spec.proxies {
            cluster.start_proxy().await?;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = cluster.meta.status().await
                && s.leader.is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout("meta elected no leader within 20s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(cluster)
    }

    /// Starts one more node (id `node-<n>`); not registered with meta yet.
    pub async fn start_node(&mut self) -> Result<usize, ClusterError> {
        let (listener, addr) = bind().await?;
        let id = format!("node-{}", self.nodes.len() + 1);
        let config = self.spec.node.clone();
        self.nodes.push(Member::spawn(id, addr, move |rx| shardgate_node::run(listener, config, stop_signal(rx))));
        Ok(self.nodes.len() - 1)
    }

    /// Starts one more proxy following this cluster's meta.
    pub async fn start_proxy(&mut self) -> Result<usize, ClusterError> {
        let config = self.spec.proxy.clone();
        self.start_proxy_with(config).await
    }

    /// Starts one more proxy with its own config (`meta` is set to this
    /// cluster's members).
    pub async fn start_proxy_with(&mut self, config: ProxyConfig) -> Result<usize, ClusterError> {
        let (listener, addr) = bind().await?;
        let id = format!("proxy-{}", self.proxies.len() + 1);
        let config = ProxyConfig { meta: self.metas.iter().map(|m| m.addr.clone()).collect(), ..config };
        self.proxies.push(Member::spawn(id, addr, move |rx| shardgate_proxy::run(listener, config, stop_signal(rx))));
        Ok(self.proxies.len() - 1)
    }

    /// Starts one more proxy with its own config and its Redis protocol
    /// front on a port of its own; answers (index, RESP address).
    pub async fn start_proxy_with_resp(&mut self, config: ProxyConfig) -> Result<(usize, std::net::SocketAddr), ClusterError> {
        let (listener, addr) = bind().await?;
        let resp = TcpListener::bind("127.0.0.1:0").await?;
        let resp_addr = resp.local_addr()?;
        let id = format!("proxy-{}", self.proxies.len() + 1);
        let config = ProxyConfig { meta: self.metas.iter().map(|m| m.addr.clone()).collect(), resp_listen: Some(resp_addr), ..config };
        self.proxies.push(Member::spawn(id, addr, move |rx| shardgate_proxy::run_with_resp(listener, Some(resp), config, stop_signal(rx))));
        Ok((self.proxies.len() - 1, resp_addr))
    }

    /// Adds every running node to meta (one atomic change); answers the epoch.
    pub async fn register_nodes(&self) -> Result<WriteReceipt, ClusterError> {
        let changes = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| Change::AddNode { id: n.id.clone(), addr: n.addr.clone(), weight: 1.0, zone: String::new() })
            .collect();
        Ok(self.meta.apply(changes).await?)
    }

    /// Adds one node to meta.
    pub async fn register_node(&self, index: usize) -> Result<WriteReceipt, ClusterError> {
        let n = &self.nodes[index];
        Ok(self.meta.add_node(&NewNode { id: n.id.clone(), addr: n.addr.clone(), weight: 1.0, zone: String::new() }).await?)
    }

    /// Uploads the built-in strategy `name` (or the test strategy
    /// `misbehave`) and activates it.
    pub async fn activate_builtin(&self, name: &str, config: &str, replicas: u32) -> Result<WriteReceipt, ClusterError> {
        let component = match name {
            "misbehave" => shardgate_builtins::MISBEHAVE,
            _ => shardgate_builtins::builtin(name).ok_or_else(|| ClusterError::UnknownStrategy(name.into()))?.component,
        };
        let info = self.meta.upload_strategy(component.to_vec()).await?;
        Ok(self.meta.activate(&info.hash, &Activation { config: config.to_string(), replicas }).await?)
    }

    /// `/status` of one proxy.
    pub async fn proxy_status(&self, index: usize) -> Result<Status, ClusterError> {
        let uri = format!("{}/status", self.proxies[index].addr);
        let response = self
            .http
            .get(uri.parse().map_err(|e| ClusterError::Http(format!("{e}")))?)
            .await
            .map_err(|e| ClusterError::Http(e.to_string()))?;
        let body = response.into_body().collect().await.map_err(|e| ClusterError::Http(e.to_string()))?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| ClusterError::Http(format!("bad /status answer: {e}")))
    }

    /// Waits until every running proxy serves `epoch` or later (no fallback).
    pub async fn wait_for_epoch(&self, epoch: u64, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        for (i, p) in self.proxies.iter().enumerate() {
            if !p.is_running() {
                continue;
            }
            loop {
                let s = self.proxy_status(i).await;
                if let Ok(s) = &s
                    && s.epoch >= epoch
                    && s.fallback.is_none()
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::Timeout(format!("{} did not reach epoch {epoch} within {timeout:?}: {s:?}", p.id)));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Stops everything: proxies, then nodes, then meta members.
    pub async fn shutdown(mut self) {
        for m in self.proxies.iter_mut().chain(self.nodes.iter_mut()).chain(self.metas.iter_mut()) {
            let _ = m.stop().await;
        }
    }
}
