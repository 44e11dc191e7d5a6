//! Issue 7, proxy side, against a real in-process cluster (3 meta members,
//! 3 nodes, proxies on 127.0.0.1:0): the proxy presents `proxy.node_token`
//! to nodes that require `node.data_token`, and clients must present
//! `proxy.data_token`.

mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cluster::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use shardgate_api::batch::{self, GetResult};
use shardgate_proxy::{ProxyConfig, RateLimit, UpstreamClient};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

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
    let tokenless =
        cluster.start_proxy_with(ProxyConfig { health_interval: Duration::from_millis(100), ..ProxyConfig::default() }).await.unwrap();
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
        let results = batch::decode_get_response(a.body, &shardgate_api::Limits::default()).unwrap();
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

/// A keep-alive HTTP/1.1 connection to `proxy` from the local address
/// `source` (any of 127.0.0.0/8 works on Linux loopback), so one test can
/// be several clients.
async fn connect_from(source: &str, proxy: &str) -> SendRequest<Full<Bytes>> {
    let addr: SocketAddr = proxy.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    send
}

async fn get_on(send: &mut SendRequest<Full<Bytes>>, path: &str) -> Result<Answer, String> {
    send.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::get(path).header("host", "proxy").body(Full::new(Bytes::new())).unwrap();
    let response = send.send_request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { status: parts.status, headers: parts.headers, body })
}

/// A proxy of a 1-meta, 1-node cluster with no strategy: `GET /v1/keys/`
/// (an empty key) answers 400 without routing, so it measures admission only.
async fn plain_cluster(dir: &tempfile::TempDir, tune: impl FnOnce(&mut ProxyConfig)) -> LocalCluster {
    let mut spec = ClusterSpec::new(1, 1, 1, dir.path());
    tune(&mut spec.proxy);
    LocalCluster::start(spec).await.expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_proxy_rate_limit_gets_429s_while_another_client_is_served() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = plain_cluster(&dir, |p| p.rate_limit = Some(RateLimit { requests_per_second: 1, burst: 5 })).await;
    let base = cluster.proxies[0].addr.clone();
    let mut greedy = connect_from("127.0.0.1", &base).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let a = get_on(&mut greedy, "/v1/keys/").await.unwrap();
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1, "Retry-After {retry}");
            let text = a.text();
            assert!(text.contains("proxy.rate_limit") && text.contains("127.0.0.1") && text.contains("burst of 5"), "{text}");
        } else {
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        }
        statuses.push(a.status.as_u16());
    }
    // The burst passes; then (at 1 request per second) almost all are refused.
    assert!(statuses[..5].iter().all(|s| *s == 400), "{statuses:?}");
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 10, "{statuses:?}");
    // The limit is not on operational endpoints.
    assert_eq!(get_on(&mut greedy, "/healthz").await.unwrap().status, StatusCode::OK);

    // Another client (another source address) has its own bucket.
    let mut other = connect_from("127.0.0.2", &base).await;
    for _ in 0..5 {
        let a = get_on(&mut other, "/v1/keys/").await.unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "the other client is limited too: {}", a.text());
    }
    let metrics = Http::new().metrics(&base).await.unwrap();
    assert_eq!(metric(&metrics, "shardgate_proxy_refused_total{reason=\"rate_limited\"}"), limited as f64, "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_proxy_max_connections_gets_503_and_a_freed_slot_is_reused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = plain_cluster(&dir, |p| p.max_connections = 2).await;
    let base = cluster.proxies[0].addr.clone();
    let mut first = connect_from("127.0.0.1", &base).await;
    let mut second = connect_from("127.0.0.1", &base).await;
    for c in [&mut first, &mut second] {
        assert_eq!(get_on(c, "/healthz").await.unwrap().status, StatusCode::OK);
    }
    // The third is answered and closed without being asked anything.
    let mut third = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut raw)).await.expect("closed").unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 503") && raw.contains("proxy.max_connections is 2"), "{raw}");
    // The served connections keep working.
    assert_eq!(get_on(&mut first, "/healthz").await.unwrap().status, StatusCode::OK);
    drop(second);
    poll("a freed connection slot", Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let mut c = connect_from("127.0.0.1", &base).await;
            get_on(&mut c, "/healthz").await.ok().filter(|a| a.status == StatusCode::OK)
        }
    })
    .await;
    let m = get_on(&mut first, "/metrics").await.unwrap().text();
    assert!(metric(&m, "shardgate_proxy_refused_total{reason=\"too_many_connections\"}") >= 1.0, "{m}");
    cluster.shutdown().await;
}
