//! Issue 7, proxy side, against a real in-process cluster (3 meta members,
//! 3 nodes, proxies on 127.0.0.1:0): the proxy presents `proxy.node_token`
//! to nodes that require `node.data_token`, and clients must present
//! `proxy.data_token`.

mod cluster;

use std::time::Duration;

use cluster::*;
use http::{Method, StatusCode};
use shardgate_node::batch::{self, GetResult};
use shardgate_proxy::{ProxyConfig, UpstreamClient};

const NODE_TOKEN: &str = "node-s3cret";

fn keys() -> impl Iterator<Item = String> {
    (0..30).map(|i| format!("sec:{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxies_present_the_node_token_and_a_proxy_without_it_gets_a_clear_502() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, |spec| {
        spec.node.data_token = Some(NODE_TOKEN.into());
        spec.proxy.node_token = Some(NODE_TOKEN.into());
    })
    .await;
    let epoch = activate(&cluster, "rendezvous", "", 2).await;
    let http = Http::new();
    // The nodes really are closed to callers without the token.
    let direct = http.put(&cluster.nodes[0].addr, b"direct", "x").await.unwrap();
    assert_eq!(direct.status, StatusCode::UNAUTHORIZED, "{}", direct.text());

    // A second proxy using the hyper-util client, its token from a file.
    let token_file = dir.path().join("node-token");
    std::fs::write(&token_file, format!("{NODE_TOKEN}\n")).unwrap();
    let hyper_util = ProxyConfig {
        upstream_client: UpstreamClient::HyperUtil,
        node_token_file: Some(token_file),
        health_interval: Duration::from_millis(100),
        ..ProxyConfig::default()
    };
    let h = cluster.start_proxy_with(hyper_util).await.unwrap();
    // A proxy without the token.
    let tokenless = cluster.start_proxy_with(ProxyConfig { health_interval: Duration::from_millis(100), ..ProxyConfig::default() }).await.unwrap();
    cluster.wait_for_epoch(epoch, Duration::from_secs(30)).await.unwrap();

    for base in [&cluster.proxies[0].addr, &cluster.proxies[h].addr] {
        for key in keys() {
            let put = http.put(base, key.as_bytes(), format!("v-{key}")).await.unwrap();
            assert!(put.status.is_success(), "{base} put {key}: {} {}", put.status, put.text());
            let got = http.get(base, key.as_bytes()).await.unwrap();
            assert_eq!((got.status, got.text()), (StatusCode::OK, format!("v-{key}")), "{base}");
        }
        let body = batch::encode_get_request(&keys().collect::<Vec<_>>()).unwrap();
        let a = http.send(Method::POST, &format!("{base}/v1/batch/get"), &[("content-type", batch::CONTENT_TYPE)], body).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let results = batch::decode_get_response(a.body, &shardgate_node::Limits::default()).unwrap();
        assert!(results.iter().all(|r| matches!(r, GetResult::Hit { .. })), "{base}: {results:?}");
        let deleted = http.delete(base, b"sec:0").await.unwrap();
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
        let put = http.put(base, b"sec:0", "v-sec:0").await.unwrap();
        assert!(put.status.is_success());
    }

    let base = cluster.proxies[tokenless].addr.clone();
    let got = http.get(&base, b"sec:1").await.unwrap();
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    let text = got.text();
    assert!(text.contains("HTTP 401") && text.contains("proxy.node_token") && text.contains("node.data_token"), "{text}");
    let put = http.put(&base, b"sec:new", "v").await.unwrap();
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.text());
    assert!(put.text().contains("HTTP 401") && put.text().contains("proxy.node_token"), "{}", put.text());
    // The refusal is not a node failure: no node gets ejected, and the
    // proxies with the token keep serving.
    let status = cluster.proxy_status(tokenless).await.unwrap();
    assert!(status.nodes.iter().all(|n| n.routable), "{:?}", status.nodes);
    let got = http.get(&cluster.proxies[1].addr, b"sec:1").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "v-sec:1".to_string()));
    cluster.shutdown().await;
}

const CLIENT_TOKEN: &str = "client-t0ken";

/// One meta member, one node that requires `NODE_TOKEN`, one proxy that
/// requires `CLIENT_TOKEN` and presents `NODE_TOKEN`; a strategy active.
async fn guarded_cluster(dir: &tempfile::TempDir, tune: impl FnOnce(&mut ClusterSpec)) -> LocalCluster {
    let mut spec = ClusterSpec::new(1, 1, 1, dir.path());
    spec.node.data_token = Some(NODE_TOKEN.into());
    spec.proxy.node_token = Some(NODE_TOKEN.into());
    spec.proxy.data_token = Some(CLIENT_TOKEN.into());
    spec.proxy.health_interval = Duration::from_millis(100);
    tune(&mut spec);
    let cluster = LocalCluster::start(spec).await.expect("cluster starts");
    cluster.register_nodes().await.expect("nodes registered");
    activate(&cluster, "rendezvous", "", 1).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_api_needs_proxy_data_token_and_the_operational_endpoints_stay_open() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = guarded_cluster(&dir, |_| {}).await;
    let base = cluster.proxies[0].addr.clone();
    let http = Http::new();
    let url = format!("{base}/v1/keys/k1");
    let good = format!("Bearer {CLIENT_TOKEN}");

    let put = http.send(Method::PUT, &url, &[("authorization", &good)], "v1").await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    let got = http.send(Method::GET, &url, &[("authorization", &good)], "").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "v1".to_string()));

    // Missing (or another scheme): 401 with a challenge, naming the key.
    for headers in [vec![], vec![("authorization", "Basic Y2xpZW50")], vec![("authorization", "Bearer ")]] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let a = http.send(method.clone(), &url, &headers, "x").await.unwrap();
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {headers:?}: {}", a.text());
            assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"shardgate-proxy\"");
            assert_eq!(a.headers["content-type"], "application/json");
            assert!(a.text().contains("proxy.data_token"), "{}", a.text());
        }
    }
    // Wrong token, including the nodes' token: 403.
    for wrong in [format!("Bearer {NODE_TOKEN}"), format!("Bearer {CLIENT_TOKEN}x"), "Bearer client".to_string()] {
        let a = http.send(Method::GET, &url, &[("authorization", &wrong)], "").await.unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{wrong}: {}", a.text());
        assert!(a.text().contains("does not match proxy.data_token"), "{}", a.text());
    }
    for path in ["/v1/batch/get", "/v1/batch/put"] {
        let a = http.send(Method::POST, &format!("{base}{path}"), &[], "").await.unwrap();
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let a = http.send(Method::GET, &format!("{base}/v1/owners/k1"), &[], "").await.unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Nothing was written by the refused PUTs and DELETEs.
    let got = http.send(Method::GET, &url, &[("authorization", &good)], "").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "v1".to_string()));

    for path in ["/healthz", "/readyz", "/status", "/metrics", "/openapi.json"] {
        let a = http.send(Method::GET, &format!("{base}{path}"), &[], "").await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{path} stays open: {}", a.text());
    }
    let metrics = http.metrics(&base).await.unwrap();
    let refused = |reason: &str| metric(&metrics, &format!("shardgate_proxy_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!((refused("unauthorized"), refused("forbidden")), (12.0, 3.0), "{metrics}");
    cluster.shutdown().await;
}
