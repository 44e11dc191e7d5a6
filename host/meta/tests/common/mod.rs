//! In-process meta clusters on 127.0.0.1 for the integration tests and the
//! benchmark: real listeners, real Raft, real redb files in a temp dir;
//! plain HTTP, or TLS (`meta.tls`) with certificates from an rcgen CA.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shardgate_meta::{InitialMember, MetaConfig, MetaError};
use shardgate_meta_client::model::{NewNode, RaftStatus};
use shardgate_meta_client::{ClientError, MetaClient};
pub use shardgate_testkit::{TestCa, poll};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct RunningMember {
    pub id: u64,
    pub socket: SocketAddr,
    pub addr: String,
    pub config: MetaConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MetaError>>>,
}

impl RunningMember {
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }
}

pub struct TestCluster {
    pub members: BTreeMap<u64, RunningMember>,
    pub dir: tempfile::TempDir,
    /// With TLS: the CA that signed every member's certificate.
    pub tls: Option<TestCa>,
}

/// A reqwest client for raw requests to plain-HTTP members.
pub fn http() -> reqwest::Client {
    shardgate_tls::http_client_system_roots().no_proxy().build().unwrap()
}

/// Settings for test clusters: quicker than the defaults, still far from
/// flaky on a loaded two-core machine.
pub fn test_config() -> MetaConfig {
    MetaConfig {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(600),
        write_timeout: Duration::from_secs(2),
        watch_heartbeat: Duration::from_millis(200),
        max_component_size: bytesize::ByteSize::mib(1),
        admission_sample_keys: 200,
        ..MetaConfig::default()
    }
}

fn spawn_member(listener: TcpListener, config: MetaConfig) -> (oneshot::Sender<()>, JoinHandle<Result<(), MetaError>>) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(shardgate_meta::run(listener, config, async move {
        let _ = rx.await;
    }));
    (tx, task)
}

impl TestCluster {
    /// `n` members bootstrapped together; `tweak` adjusts every member's config.
    pub async fn start(n: u64, tweak: impl Fn(&mut MetaConfig)) -> TestCluster {
        Self::start_with(n, false, tweak).await
    }

    /// Like `start`, every member serving `meta.tls` with its own
    /// certificate from one test CA (`self.tls`), which the members and
    /// `client()` trust.
    pub async fn start_tls(n: u64, tweak: impl Fn(&mut MetaConfig)) -> TestCluster {
        Self::start_with(n, true, tweak).await
    }

    async fn start_with(n: u64, tls: bool, tweak: impl Fn(&mut MetaConfig)) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls.then(|| TestCa::new(dir.path(), "meta"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let initial: Vec<InitialMember> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| InitialMember { id: i as u64 + 1, addr: format!("{scheme}://{}", l.local_addr().unwrap()) })
            .collect();
        let mut members = BTreeMap::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let socket = listener.local_addr().unwrap();
            let mut config = test_config();
            config.id = id;
            config.listen = socket;
            config.data_dir = dir.path().join(format!("meta-{id}"));
            config.members = initial.clone();
            config.tls = tls.as_ref().map(|ca| ca.member_tls(&format!("meta-{id}")));
            tweak(&mut config);
            let (stop, task) = spawn_member(listener, config.clone());
            members
                .insert(id, RunningMember { id, socket, addr: format!("{scheme}://{socket}"), config, stop: Some(stop), task: Some(task) });
        }
        let cluster = TestCluster { members, dir, tls };
        cluster.wait_for_leader().await;
        cluster
    }

    /// Start one more member that joins through `via`.
    pub async fn start_joining(&mut self, id: u64, via: &str) {
        self.start_joining_with(id, via, |_| {}).await
    }

    /// Like `start_joining`; `tweak` adjusts the new member's config.
    pub async fn start_joining_with(&mut self, id: u64, via: &str, tweak: impl Fn(&mut MetaConfig)) {
        self.start_extra(id, |config| {
            config.join = Some(via.to_string());
            tweak(config);
        })
        .await;
    }

    /// One more member on its own 127.0.0.1:0 listener and data directory,
    /// `tweak`ed; answers its address.
    async fn start_extra(&mut self, id: u64, tweak: impl FnOnce(&mut MetaConfig)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = listener.local_addr().unwrap();
        let mut config = test_config();
        config.id = id;
        config.listen = socket;
        config.data_dir = self.dir.path().join(format!("meta-{id}"));
        config.tls = self.tls.as_ref().map(|ca| ca.member_tls(&format!("meta-{id}")));
        tweak(&mut config);
        let (stop, task) = spawn_member(listener, config.clone());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = format!("{scheme}://{socket}");
        self.members.insert(id, RunningMember { id, socket, addr: addr.clone(), config, stop: Some(stop), task: Some(task) });
        addr
    }

    /// Start one more member with no `members` and no `join`: it serves and
    /// waits to be added (`POST /v1/raft/learners`).
    pub async fn start_unattached(&mut self, id: u64) {
        let addr = self.start_extra(id, |_| {}).await;
        let http = http();
        poll("the new member serves /v1/raft/status", Duration::from_secs(10), || {
            let (http, addr) = (http.clone(), addr.clone());
            async move { http.get(format!("{addr}/v1/raft/status")).send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
    }

    pub fn addrs(&self) -> Vec<String> {
        self.members.values().filter(|m| m.is_running()).map(|m| m.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.members[&id].addr.clone()
    }

    /// A client of these members, trusting the test CA with TLS.
    pub fn client_for(&self, members: Vec<String>) -> MetaClient {
        let client = MetaClient::new(members);
        match &self.tls {
            Some(ca) => client.with_tls_ca(&ca.ca).expect("the test CA loads"),
            None => client,
        }
    }

    /// A client of every running member.
    pub fn client(&self) -> MetaClient {
        self.client_for(self.addrs()).with_request_timeout(Duration::from_secs(5)).with_retry_for(Duration::from_secs(10))
    }

    /// A client of one member only.
    pub fn client_of(&self, id: u64) -> MetaClient {
        self.client_for(vec![self.addr(id)]).with_request_timeout(Duration::from_secs(5)).with_retry_for(Duration::from_secs(10))
    }

    pub async fn status_of(&self, id: u64) -> Option<RaftStatus> {
        self.client_for(vec![self.addr(id)]).with_retry_for(Duration::from_millis(1)).status().await.ok()
    }

    /// Poll until every running member names the same leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        let running: Vec<u64> = self.members.values().filter(|m| m.is_running()).map(|m| m.id).collect();
        poll("every running member agrees on a leader", Duration::from_secs(20), || async {
            let mut leader = None;
            for id in &running {
                let st = self.status_of(*id).await?;
                let l = st.leader?;
                if !running.contains(&l) || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
        .await
    }

    /// Stop a member (its shutdown future completes; `run` returns).
    pub async fn kill(&mut self, id: u64) {
        let m = self.members.get_mut(&id).unwrap();
        if let Some(stop) = m.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = m.task.take() {
            let res = tokio::time::timeout(Duration::from_secs(10), task).await.expect("member stops within 10s");
            res.expect("member task").expect("member run returned an error");
        }
    }

    /// Start a stopped member again on the same address and data directory.
    pub async fn restart(&mut self, id: u64) {
        let m = self.members.get_mut(&id).unwrap();
        assert!(!m.is_running());
        let socket = m.socket;
        let listener =
            poll("the old port can be bound again", Duration::from_secs(10), || async move { TcpListener::bind(socket).await.ok() }).await;
        let (stop, task) = spawn_member(listener, m.config.clone());
        m.stop = Some(stop);
        m.task = Some(task);
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.members[&id].config.data_dir.clone()
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

pub fn node(id: &str, port: u16) -> NewNode {
    NewNode { id: id.into(), addr: format!("http://127.0.0.1:{port}"), weight: 1.0, zone: String::new() }
}

/// The message of an API error with this status and kind; panics on any
/// other outcome.
pub fn expect_api<T: std::fmt::Debug>(res: Result<T, ClientError>, status: u16, kind: &str) -> String {
    match res {
        Err(ClientError::Api { status: s, kind: k, message, .. }) => {
            assert_eq!((s, k.as_str()), (status, kind), "{message}");
            message
        }
        other => panic!("expected HTTP {status} {kind}, got {other:?}"),
    }
}

/// The node ids member `id` holds (a stale read of that member), or none.
pub async fn node_ids_on(cluster: &TestCluster, id: u64) -> Vec<String> {
    let c = cluster.client_of(id).with_stale_reads(true);
    c.nodes().await.map(|n| n.into_iter().map(|n| n.id).collect()).unwrap_or_default()
}
