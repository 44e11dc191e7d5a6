//! A Shardgate cluster laid out on the fault lab's hosts: the deployment
//! files of every process, and the client-side helpers the scenarios share
//! (HTTP calls with the epoch header, polling with deadlines, meta and
//! proxy status, the report row).
//!
//! Where it sits: `faults.rs` scenarios call [`start_metas`],
//! [`start_nodes`] and [`start_proxies`] on a [`Lab`], then use the helpers
//! here from inside the lab's client runtime ([`Lab::lan`]).

use std::time::Duration;

pub use crate::client::*;
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
