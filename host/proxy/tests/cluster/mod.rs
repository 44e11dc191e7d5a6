//! Test support: the standard local cluster of these tests (3 meta members,
//! 3 nodes, 2 proxies on pre-bound 127.0.0.1:0 listeners, from
//! `shardgate_testkit::cluster`), and re-exports of the testkit's HTTP
//! client, polling and tracing.

#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub use shardgate_testkit::http::metric;
pub use shardgate_testkit::{Answer, ClusterSpec, Http, LocalCluster, init_tracing, poll};

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
