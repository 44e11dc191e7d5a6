//! `[node] register`: a node that joins and leaves the cluster by itself,
//! so scaling a container service or a StatefulSet needs no operator typing
//! `ctl nodes add`.
//!
//! Where it sits: beside the HTTP front ([`crate::server`]), never in the
//! request path. On start a task adds the node to meta's node list through
//! `shardgate_meta_client` and keeps retrying (backoff 100 ms .. 10 s, the
//! reason logged) while meta cannot be reached; the node serves meanwhile.
//! On shutdown, before the listener stops, the node is set `draining`
//! (proxies stop routing new keys to it and read through it during their
//! migration window), kept serving for `register.drain`, then removed; all
//! within `node.shutdown_timeout`.
//!
//! **Same id, other address.** The id is taken as this node's when no node
//! answers as that id at the registered address (`GET /healthz` there must
//! carry `shardgate-node-id: <id>`): then this is the same node restarted
//! somewhere else (a rescheduled pod) and the entry is replaced in one
//! change batch. When a node does answer there as that id, two live nodes
//! claim it: this one is refused, says so in the log and in
//! `shardgate_node_registered` (-1), and checks again every 10 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardgate_api::addr::{base_url_form, check_base_url};
use shardgate_meta_client::model::{Change, NewNode, NodeState, NodeUpdate};
use shardgate_meta_client::{ClientError, MetaClient};
use shardgate_role::advertise::{default_advertise, host_name};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::ConfigError;

/// The header `/healthz` carries when the node registers itself: how a
/// registering node tells a live holder of its id from its own old entry.
pub const NODE_ID_HEADER: &str = "shardgate-node-id";

/// `[node] register = { meta = [...], id = "...", advertise = "http://...", weight = 1, zone = "..." }`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Meta members to register through (seeds: the client learns the rest).
    pub meta: Vec<String>,
    /// This node's id in the node list. Default: the host name, with
    /// characters outside `A-Z a-z 0-9 - _ .` replaced by `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The address proxies reach this node at, `http://host:port`. Default:
    /// `http://` + `node.listen`, or the host name and the listen port when
    /// listening on an unspecified address (`0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Routing weight, 0.001 ..= 1000000.
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default)]
    pub zone: String,
    /// How long the node keeps serving as `draining` before it removes
    /// itself on shutdown (proxies read through it meanwhile). Must leave
    /// room in `node.shutdown_timeout`.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// `meta.admin_token`, when the members require one for writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

fn default_weight() -> f64 {
    1.0
}

fn default_drain() -> Duration {
    Duration::from_secs(5)
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("node.register.{key}"), message)
}

impl RegisterConfig {
    /// The id in force.
    pub fn node_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| host_name("node"))
    }

    /// The advertised address in force for a node listening on `listen`.
    pub fn advertise_addr(&self, listen: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| default_advertise("http", listen))
    }

    /// Checks every value; `shutdown_timeout` is `node.shutdown_timeout`.
    pub fn validate(&self, shutdown_timeout: Duration) -> Result<(), ConfigError> {
        if self.meta.is_empty() {
            return Err(err("meta", "list at least one meta member, http://host:port"));
        }
        let both = ["http", "https"];
        for m in &self.meta {
            check_base_url(m, &both).map_err(|why| err("meta", format!("{m:?} is not {}: {why}", base_url_form(&both))))?;
        }
        let id = self.node_id();
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(err("id", format!("{id:?} must be 1..64 of A-Z a-z 0-9 - _ .")));
        }
        if let Some(a) = &self.advertise {
            check_base_url(a, &["http"]).map_err(|why| err("advertise", format!("{a:?} is not http://host:port: {why}")))?;
        }
        if !(0.001..=1_000_000.0).contains(&self.weight) {
            return Err(err("weight", format!("{} must be between 0.001 and 1000000", self.weight)));
        }
        if self.zone.chars().count() > 64 {
            return Err(err("zone", "at most 64 characters"));
        }
        if self.drain >= shutdown_timeout {
            return Err(err("drain", format!("{:?} must be shorter than node.shutdown_timeout ({shutdown_timeout:?})", self.drain)));
        }
        Ok(())
    }
}

/// What the registration task reports (`shardgate_node_registered`):
/// 0 not yet, 1 registered, -1 refused (another live node has the id or the
/// address), 2 draining, 3 removed.
#[derive(Clone, Default)]
pub struct RegistrationState(Arc<AtomicI64>);

impl RegistrationState {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// One node's registration: started with [`Registration::start`], ended
/// with [`Registration::leave`].
pub struct Registration {
    id: String,
    addr: String,
    drain: Duration,
    client: MetaClient,
    state: RegistrationState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Starts registering in the background (never blocks serving).
    pub fn start(config: &RegisterConfig, listen: SocketAddr, state: RegistrationState) -> Registration {
        let id = config.node_id();
        let addr = config.advertise_addr(listen);
        let mut client =
            MetaClient::new(config.meta.clone()).with_request_timeout(Duration::from_secs(2)).with_retry_for(Duration::from_secs(2));
        if let Some(token) = &config.admin_token {
            client = client.with_token(token);
        }
        let (stop, stopped) = watch::channel(false);
        let new = NewNode { id: id.clone(), addr: addr.clone(), weight: config.weight, zone: config.zone.clone() };
        let task = tokio::spawn(register(client.clone(), new, state.clone(), stopped));
        Registration { id, addr, drain: config.drain, client, state, stop, task }
    }

    /// The id this node registers as.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// On shutdown, while still serving: set `draining`, wait
    /// `register.drain`, remove the node. Bounded by `within`.
    pub async fn leave(self, within: Duration) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if self.state.get() != 1 {
            info!(id = %self.id, "not registered: nothing to remove on shutdown");
            return;
        }
        let (id, client, state, drain) = (self.id.clone(), self.client.clone(), self.state.clone(), self.drain);
        let leaving = async move {
            match client.update_node(&id, &NodeUpdate { weight: None, state: Some(NodeState::Draining) }).await {
                Ok(r) => {
                    state.set(2);
                    info!(%id, epoch = r.epoch, drain = ?drain, "draining: proxies route no new keys here and read through this node");
                    tokio::time::sleep(drain).await;
                }
                Err(e) => warn!(%id, error = %e, "could not set this node draining; removing it at once"),
            }
            match client.remove_node(&id).await {
                Ok(r) => {
                    state.set(3);
                    info!(%id, epoch = r.epoch, "removed this node from the cluster");
                }
                Err(e) => {
                    error!(%id, error = %e, "could not remove this node from the cluster; remove it with `shardgate ctl nodes remove`")
                }
            }
        };
        if tokio::time::timeout(within, leaving).await.is_err() {
            error!(id = %self.id, addr = %self.addr, ?within, "leaving the cluster did not finish within node.shutdown_timeout");
        }
    }
}

/// Whether a node answers at `addr` as `id` (`/healthz` with the header).
async fn answers_as(addr: &str, id: &str) -> bool {
    let Ok(client) = shardgate_tls::http_client_system_roots().no_proxy().timeout(Duration::from_secs(2)).build() else {
        return false;
    };
    match client.get(format!("{addr}/healthz")).send().await {
        Ok(r) => r.headers().get(NODE_ID_HEADER).and_then(|v| v.to_str().ok()) == Some(id),
        Err(_) => false,
    }
}

async fn register(client: MetaClient, new: NewNode, state: RegistrationState, mut stopped: watch::Receiver<bool>) {
    let id = new.id.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let pause = match attempt(&client, &new).await {
            Ok(what) => {
                state.set(1);
                info!(%id, addr = %new.addr, "{what}");
                return;
            }
            Err(Attempt::Refused(reason)) => {
                state.set(-1);
                error!(%id, addr = %new.addr, %reason, "registration refused; checking again in 10s");
                Duration::from_secs(10)
            }
            Err(Attempt::Retry(reason)) => {
                warn!(%id, %reason, retry_in = ?backoff, "cannot register with meta yet; serving meanwhile");
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                b
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
    }
}

enum Attempt {
    /// Another live node holds the id or the address.
    Refused(String),
    /// Meta cannot be reached or has no quorum: try again.
    Retry(String),
}

fn retry(e: ClientError) -> Attempt {
    Attempt::Retry(e.to_string())
}

/// One registration attempt: what was done, or why not.
async fn attempt(client: &MetaClient, new: &NewNode) -> Result<&'static str, Attempt> {
    match client.node(&new.id).await {
        Ok(existing) if existing.addr == new.addr => {
            if existing.state == NodeState::Draining {
                // Restarted while it was leaving: serve again.
                client.update_node(&new.id, &NodeUpdate { weight: None, state: Some(NodeState::Active) }).await.map_err(retry)?;
                return Ok("registered again (was draining)");
            }
            Ok("already registered with this address")
        }
        Ok(existing) => {
            if answers_as(&existing.addr, &new.id).await {
                return Err(Attempt::Refused(format!(
                    "node id {} is registered at {} and a node answers there as {}: two nodes cannot share an id (give this one another node.register.id)",
                    new.id, existing.addr, new.id
                )));
            }
            let changes = vec![
                Change::RemoveNode { id: new.id.clone() },
                Change::AddNode { id: new.id.clone(), addr: new.addr.clone(), weight: new.weight, zone: new.zone.clone() },
            ];
            client.apply(changes).await.map_err(|e| refused_or_retry(e, new))?;
            Ok("re-registered at a new address (no node answers as this id at the old one: the same node, moved)")
        }
        Err(ClientError::Api { status: 404, .. }) => {
            client.add_node(new).await.map_err(|e| refused_or_retry(e, new))?;
            Ok("registered")
        }
        Err(e) => Err(retry(e)),
    }
}

/// A 409 for the address means another node id uses it: refused. Anything
/// else (a lost race on the id, no quorum) is tried again.
fn refused_or_retry(e: ClientError, new: &NewNode) -> Attempt {
    match &e {
        ClientError::Api { status: 409, kind, message, .. } if kind == "duplicate_addr" => {
            Attempt::Refused(format!("address {} is registered for another node id: {message}", new.addr))
        }
        ClientError::Api { status: 400 | 422, message, .. } => Attempt::Refused(format!("meta refused the registration: {message}")),
        _ => retry(e),
    }
}
