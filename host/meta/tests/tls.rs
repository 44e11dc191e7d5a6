//! `meta.tls`: members serve the JSON API, the Raft RPCs and forwarded
//! writes on one TLS listener (rustls, ring) with certificates from an
//! rcgen CA, and trust that CA (`meta.tls.ca`) for each other. Real
//! sockets, real Raft.

mod common;

use std::time::Duration;

use common::{TestCa, TestCluster, node, poll};
use futures::StreamExt;
use shardgate_meta::{MetaConfig, MetaTlsConfig};
use shardgate_meta_client::{ClientError, MetaClient};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

fn init_tracing() {
    shardgate_testkit::logging::init_tracing_with("shardgate_meta=info,shardgate_tls=debug,openraft=warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_forms_forwards_writes_and_serves_watch() {
    init_tracing();
    let cluster = TestCluster::start_tls(3, |_| {}).await;
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    // Every member advertises (and was initialised with) an https:// address.
    let status = cluster.status_of(follower).await.unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.addr.starts_with("https://127.0.0.1:")), "{:?}", status.members);

    // A write sent to a follower is forwarded to the leader over TLS and
    // replicated over TLS.
    let receipt = cluster.client_of(follower).add_node(&node("a", 9001)).await.unwrap();
    for id in cluster.members.keys() {
        poll("every member applied the write", Duration::from_secs(10), || async {
            let nodes = cluster.client_of(*id).with_stale_reads(true).nodes().await.ok()?;
            (nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>() == ["a"]).then_some(())
        })
        .await;
    }

    let ca = cluster.tls.as_ref().unwrap().ca.clone();
    let https = shardgate_tls::http_client(Some(&ca)).unwrap().no_proxy().build().unwrap();
    let metrics = https.get(format!("{}/metrics", cluster.addr(follower))).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_forwarded_total 1"), "{metrics}");

    // A client trusting the CA reads it back (linearizable, through the
    // leader) and follows the watch.
    let client = MetaClient::new(cluster.addrs()).with_tls_ca(&ca).unwrap();
    let routing = client.routing().await.unwrap();
    assert_eq!(routing.epoch, receipt.epoch);
    assert_eq!(routing.nodes[0].id, "a");
    let mut watch = client.watch(None);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.epoch, receipt.epoch);
    let second = client.add_node(&node("b", 9002)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.epoch, second.epoch);
    assert_eq!(next.nodes.len(), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_a_tls_cluster() {
    init_tracing();
    let mut cluster = TestCluster::start_tls(1, |_| {}).await;
    let via = cluster.addr(1);
    cluster.start_joining(2, &via).await;
    poll("the new member is a voter", Duration::from_secs(20), || async {
        let status = cluster.status_of(1).await?;
        status.members.iter().any(|m| m.id == 2 && m.voter && m.addr.starts_with("https://")).then_some(())
    })
    .await;
    let receipt = cluster.client_of(2).add_node(&node("a", 9001)).await.unwrap();
    assert!(receipt.epoch > 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusting_plain_and_silent_clients_fail_cleanly_and_the_member_keeps_serving() {
    init_tracing();
    let cluster = TestCluster::start_tls(1, |_| {}).await;
    let addr = cluster.addr(1);
    let socket = addr.trim_start_matches("https://").to_string();
    let quick = |client: MetaClient| client.with_request_timeout(Duration::from_secs(5)).with_retry_for(Duration::from_millis(1));

    // A client that does not trust the CA: an error naming the certificate.
    let other = TestCa::new(cluster.dir.path(), "other");
    for (what, client) in [
        ("system roots", MetaClient::new(vec![addr.clone()])),
        ("another CA", MetaClient::new(vec![addr.clone()]).with_tls_ca(&other.ca).unwrap()),
    ] {
        match quick(client).nodes().await {
            Err(ClientError::Unreachable { reason, .. }) => {
                assert!(reason.contains("certificate") && reason.contains("UnknownIssuer"), "{what}: {reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Plain HTTP to the TLS port: an error, no answer.
    let plain = quick(MetaClient::new(vec![format!("http://{socket}")])).nodes().await;
    assert!(matches!(plain, Err(ClientError::Unreachable { .. })), "{plain:?}");
    let raw = common::http().get(format!("http://{socket}/v1/nodes")).send().await;
    assert!(raw.is_err(), "{raw:?}");

    // A connection that never sends a ClientHello (the handshake timeout is
    // 10 s) does not hold up a TLS client (5 s request timeout).
    let mut silent = TcpStream::connect(&socket).await.unwrap();
    let trusting = quick(cluster.client_of(1));
    trusting.add_node(&node("a", 9001)).await.unwrap();
    assert_eq!(trusting.nodes().await.unwrap().len(), 1);
    // ... and is closed once the handshake timeout passes.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    assert_eq!(trusting.nodes().await.unwrap().len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_start_errors_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "good");
    let good = ca.member_tls("member");
    let absent = dir.path().join("absent.pem");
    let cases = [
        (MetaTlsConfig { cert: absent.clone(), ..good.clone() }, "meta.tls.cert", "absent.pem"),
        (MetaTlsConfig { cert: good.key.clone(), ..good.clone() }, "meta.tls.cert", "member-key.pem: no PEM CERTIFICATE"),
        (MetaTlsConfig { key: absent.clone(), ..good.clone() }, "meta.tls.key", "absent.pem"),
        (MetaTlsConfig { key: good.cert.clone(), ..good.clone() }, "meta.tls.key", "member-cert.pem"),
        (MetaTlsConfig { ca: Some(absent.clone()), ..good.clone() }, "meta.tls.ca: CA file", "absent.pem"),
        (MetaTlsConfig { ca: Some(good.key.clone()), ..good.clone() }, "meta.tls.ca: CA file", "member-key.pem: no PEM CERTIFICATE"),
    ];
    for (tls, key, file) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = MetaConfig { data_dir: dir.path().join("data"), tls: Some(tls.clone()), ..MetaConfig::default() };
        let run = shardgate_meta::run(listener, config, std::future::pending());
        let e = tokio::time::timeout(Duration::from_secs(10), run).await.expect("fails at start").unwrap_err().to_string();
        assert!(e.starts_with(key) && e.contains(file), "{tls:?}: {e}");
    }
    // Nothing was created: the files are checked before the stores open.
    assert!(!dir.path().join("data").exists());
}
