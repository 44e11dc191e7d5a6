//! `[node] register` (issue 13.5) against a real meta member on 127.0.0.1:
//! the node adds itself, a second start with the same id and address is a
//! no-op, shutdown drains then removes it within `node.shutdown_timeout`,
//! the same id at a new address replaces an entry nobody answers for but is
//! refused while another node answers as that id, and a node whose meta is
//! unreachable serves anyway.

use std::time::{Duration, Instant};

use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{NewNode, NodeState, NodeView};
use shardgate_node::NodeConfig;
use shardgate_node::registration::{RegisterConfig, Registration, RegistrationState};
use shardgate_testkit::{ClusterSpec, LocalCluster, TestNode, poll};

const DEADLINE: Duration = Duration::from_secs(20);

fn register(meta: &str, id: &str) -> RegisterConfig {
    RegisterConfig {
        meta: vec![meta.to_string()],
        id: Some(id.to_string()),
        advertise: None,
        weight: 1.0,
        zone: String::new(),
        drain: Duration::from_millis(800),
        admin_token: None,
    }
}

fn node_config(register: RegisterConfig) -> NodeConfig {
    NodeConfig { shutdown_timeout: Duration::from_secs(5), register: Some(register), ..NodeConfig::default() }
}

async fn meta_cluster(dir: &tempfile::TempDir) -> (LocalCluster, MetaClient) {
    let cluster = LocalCluster::start(ClusterSpec::new(1, 0, 0, dir.path())).await.expect("meta starts");
    let client = MetaClient::new(vec![cluster.metas[0].addr.clone()]);
    (cluster, client)
}

async fn node_of(client: &MetaClient, id: &str) -> Option<NodeView> {
    client.nodes().await.ok()?.into_iter().find(|n| n.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_itself_a_second_start_is_a_no_op_and_shutdown_drains_then_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = meta_cluster(&dir).await;
    let meta = cluster.metas[0].addr.clone();
    let node = TestNode::start(node_config(register(&meta, "self-1"))).await;

    let view = poll("the node is in the node list", DEADLINE, || async { node_of(&client, "self-1").await }).await;
    assert_eq!((view.addr.as_str(), view.state), (node.url.as_str(), NodeState::Active));
    poll("the node reports itself registered", DEADLINE, || async {
        (node.metric("shardgate_node_registered").await == 1.0).then_some(())
    })
    .await;
    let healthz = node.request(http::Method::GET, "/healthz", &[], "").await;
    assert_eq!(healthz.header("shardgate-node-id"), "self-1");
    let epoch = client.routing().await.unwrap().epoch;

    // The same id and address again (a restart): nothing changes.
    let state = RegistrationState::default();
    let again = Registration::start(&register(&meta, "self-1"), node.addr, state.clone());
    poll("the second registration finishes", DEADLINE, || async { (state.get() == 1).then_some(()) }).await;
    assert_eq!(client.routing().await.unwrap().epoch, epoch, "a second registration with the same address changes nothing");
    drop(again);

    // Shutdown: draining while it still serves, then removed.
    let started = Instant::now();
    let mut node = node;
    node.signal_stop();
    let draining =
        poll("the node is draining", DEADLINE, || async { node_of(&client, "self-1").await.filter(|n| n.state == NodeState::Draining) })
            .await;
    assert_eq!(draining.addr, node.url);
    let put = node.put(b"during-drain", b"v").await;
    assert_eq!(put.status, http::StatusCode::CREATED, "the node serves while it drains");
    poll("the node is gone from the node list", DEADLINE, || async { node_of(&client, "self-1").await.is_none().then_some(()) }).await;
    node.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5) + Duration::from_secs(3), "left within node.shutdown_timeout (+ connection drain)");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_at_a_new_address_replaces_a_dead_entry_but_not_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = meta_cluster(&dir).await;
    let meta = cluster.metas[0].addr.clone();
    // An entry for "moved" at an address nothing answers at (the node's old home).
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    client.add_node(&NewNode { id: "moved".into(), addr: format!("http://{gone}"), weight: 1.0, zone: String::new() }).await.unwrap();

    let node = TestNode::start(node_config(register(&meta, "moved"))).await;
    poll("the entry points at the node's new address", DEADLINE, || async {
        node_of(&client, "moved").await.filter(|n| n.addr == node.url)
    })
    .await;

    // A second node claiming the same id while the first answers as it: refused.
    let other = TestNode::start(node_config(register(&meta, "moved"))).await;
    poll("the second node reports the refusal", DEADLINE, || async {
        (other.metric("shardgate_node_registered").await == -1.0).then_some(())
    })
    .await;
    assert_eq!(node_of(&client, "moved").await.unwrap().addr, node.url, "the live node keeps its entry");
    // It still serves its own clients.
    assert_eq!(other.put(b"k", b"v").await.status, http::StatusCode::CREATED);
    other.stop().await;
    assert_eq!(node_of(&client, "moved").await.unwrap().addr, node.url, "the refused node's shutdown removed nothing");
    node.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_meta_is_unreachable_serves_and_keeps_trying() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let node = TestNode::start(node_config(register(&format!("http://{nobody}"), "lonely"))).await;
    assert_eq!(node.put(b"k", b"v").await.status, http::StatusCode::CREATED);
    assert_eq!(node.get(b"k").await.status, http::StatusCode::OK);
    assert_eq!(node.metric("shardgate_node_registered").await, 0.0, "not registered, not refused: retrying");
    node.stop().await;
}

#[test]
fn bad_register_blocks_are_refused_naming_the_key() {
    let base = register("http://127.0.0.1:7101", "n1");
    let cases: Vec<(RegisterConfig, &str)> = vec![
        (RegisterConfig { meta: vec![], ..base.clone() }, "node.register.meta"),
        (RegisterConfig { meta: vec!["127.0.0.1:7101".into()], ..base.clone() }, "node.register.meta"),
        (RegisterConfig { id: Some("a b".into()), ..base.clone() }, "node.register.id"),
        (RegisterConfig { advertise: Some("http://x".into()), ..base.clone() }, "node.register.advertise"),
        (RegisterConfig { weight: 5e-324, ..base.clone() }, "node.register.weight"),
        (RegisterConfig { drain: Duration::from_secs(60), ..base.clone() }, "node.register.drain"),
    ];
    for (config, key) in cases {
        let err = node_config(config).validate().unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
    node_config(base).validate().unwrap();
    // Strict TOML: an unknown key in the block is an error naming it.
    let e = toml::from_str::<NodeConfig>("register = { meta = [\"http://127.0.0.1:1\"], idd = \"x\" }").unwrap_err().to_string();
    assert!(e.contains("idd"), "{e}");
}
