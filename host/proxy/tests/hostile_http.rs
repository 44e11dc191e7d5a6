//! The key-API conformance suite (`shardgate_testkit::key_api`) against a
//! proxy in front of real nodes: an in-process cluster (one meta member,
//! three nodes, one proxy; rendezvous with two replicas) from
//! `shardgate_testkit::cluster`, all on pre-bound 127.0.0.1:0 listeners.
//!
//! The proxy is the cluster's front door, so it must answer exactly what a
//! node answers, with the same statuses and messages (naming `proxy.max_*`,
//! its own limits), refusing before anything is forwarded. What is the
//! proxy's own here: after every property case the canary must also read
//! back identical on both of its owner nodes, straight from the nodes.
//! Expiry is not checked through the proxy (it would need real waiting;
//! see the suite's docs): the nodes' own tests check it on a manual clock.
//!
//! Case counts are small so `cargo test` stays quick; raise them with
//! `PROPTEST_CASES=2000 cargo test -p shardgate-proxy --test hostile_http`
//! (and vary the inputs with `PROPTEST_RNG_SEED`).

use std::time::Duration;

use http::StatusCode;
use shardgate_node::NodeConfig;
use shardgate_proxy::ProxyConfig;
use shardgate_testkit::key_api::{self, Canary, Suite, Target};
use shardgate_testkit::{ClusterSpec, Http, LocalCluster};

/// The suite's small limits, for the nodes and the proxy alike.
fn node_config() -> NodeConfig {
    key_api::small_node_config()
}

fn proxy_config() -> ProxyConfig {
    let node = node_config();
    ProxyConfig {
        max_key_size: node.max_key_size,
        max_value_size: node.max_value_size,
        max_ttl: node.max_ttl,
        max_batch_keys: node.max_batch_keys,
        max_batch_size: node.max_batch_size,
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(2),
        ..ProxyConfig::default()
    }
}

/// On the nodes themselves: both owners hold the canary, unchanged.
async fn canary_on_both_owners(nodes: Vec<(String, String)>, canary: Canary) {
    let http = Http::fresh();
    let mut held = 0;
    for (id, addr) in &nodes {
        let r = http.get(addr, canary.key).await.unwrap_or_else(|e| panic!("{id} answers: {e}"));
        if r.status == StatusCode::OK {
            assert_eq!(&r.body[..], &canary.value[..], "the canary's value changed on {id}");
            held += 1;
        }
    }
    assert_eq!(held, 2, "the canary is no longer on both of its owners");
}

#[test]
fn the_proxy_conforms_to_the_key_api() {
    let runtime = key_api::runtime();
    let dir = tempfile::tempdir().unwrap();
    let cluster = runtime.block_on(async {
        let mut spec = ClusterSpec::new(1, 3, 1, dir.path());
        spec.node = node_config();
        spec.proxy = proxy_config();
        spec.meta.admission_sample_keys = 50;
        let cluster = LocalCluster::start(spec).await.expect("cluster starts");
        cluster.register_nodes().await.expect("nodes registered");
        let receipt = cluster.activate_builtin("rendezvous", "", 2).await.expect("rendezvous active");
        cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.expect("the proxy routes");
        cluster
    });
    let nodes: Vec<(String, String)> = cluster.nodes.iter().map(|n| (n.id.clone(), n.addr.clone())).collect();
    let target = Target::new(cluster.proxies[0].addr.clone(), proxy_config().limits())
        .with_after_case(move |canary| canary_on_both_owners(nodes.clone(), canary));
    Suite::new(runtime.handle().clone(), target).run_all();
    runtime.block_on(cluster.shutdown());
}
