//! `proxy.meta_ca`: a proxy follows a meta cluster whose three members serve
//! `meta.tls` (certificates from an rcgen CA, `https://` addresses), fetches
//! the active strategy's component over TLS, reaches meta's routing epoch
//! and routes keys with it. Real meta members, a real node, a real proxy.

mod cluster;

use std::time::Duration;

use bytes::Bytes;
use cluster::{Http, init_tracing, poll};
use http::{Method, StatusCode};
use shardgate_meta::{InitialMember, MetaConfig};
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, NewNode};
use shardgate_proxy::ProxyConfig;
use shardgate_testkit::TestCa;
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_a_tls_meta_cluster_through_proxy_meta_ca() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "meta");
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners.iter().map(|l| format!("https://{}", l.local_addr().unwrap())).collect();
    let members: Vec<InitialMember> = addrs.iter().enumerate().map(|(i, a)| InitialMember { id: i as u64 + 1, addr: a.clone() }).collect();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let config = MetaConfig {
            id,
            listen: listener.local_addr().unwrap(),
            data_dir: dir.path().join(format!("meta-{id}")),
            members: members.clone(),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(600),
            admission_sample_keys: 100,
            tls: Some(ca.member_tls(&format!("meta-{id}"))),
            ..MetaConfig::default()
        };
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move { shardgate_meta::run(listener, config, stopped(rx)).await.map_err(|e| e.to_string()) }));
    }

    let node_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = format!("http://{}", node_listener.local_addr().unwrap());
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        shardgate_node::run(node_listener, shardgate_node::NodeConfig::default(), stopped(rx)).await.map_err(|e| e.to_string())
    }));

    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", proxy_listener.local_addr().unwrap());
    let config = ProxyConfig { meta: addrs.clone(), meta_ca: Some(ca.ca.clone()), ..ProxyConfig::default() };
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move { shardgate_proxy::run(proxy_listener, config, stopped(rx)).await.map_err(|e| e.to_string()) }));

    // Register the node and activate a strategy over TLS (the client
    // retries until the cluster has a leader).
    let meta = MetaClient::new(addrs).with_tls_ca(&ca.ca).unwrap().with_retry_for(Duration::from_secs(30));
    meta.add_node(&NewNode { id: "n1".into(), addr: node_addr, weight: 1.0, zone: String::new() }).await.unwrap();
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    let info = meta.upload_strategy(component).await.unwrap();
    let receipt = meta.activate(&info.hash, &Activation { config: String::new(), replicas: 1 }).await.unwrap();

    // The proxy's watch (over TLS, trusting proxy.meta_ca) brings it there.
    let http = Http::new();
    poll("the proxy serves meta's epoch", Duration::from_secs(30), || {
        let (http, proxy) = (http.clone(), proxy.clone());
        async move {
            let status = http.send(Method::GET, &format!("{proxy}/status"), &[], Bytes::new()).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&status.body).ok()?;
            (v["epoch"].as_u64() == Some(receipt.epoch)).then_some(())
        }
    })
    .await;
    let put = http.put(&proxy, b"over-tls-meta", "routed").await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert_eq!(put.epoch(), Some(receipt.epoch));
    let got = http.get(&proxy, b"over-tls-meta").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "routed".to_string()));

    stop.send(true).unwrap();
    for task in tasks {
        let res = tokio::time::timeout(Duration::from_secs(30), task).await.expect("role stops").unwrap();
        assert!(res.is_ok(), "{res:?}");
    }
}
