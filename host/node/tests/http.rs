//! Integration tests of what is the node's own: TTL expiry and batch
//! reads counted in its metrics (on a manual clock), the memory bound,
//! health, readiness and metrics, slow clients, the connection limit,
//! graceful shutdown and config validation. A real node on 127.0.0.1:0
//! (`shardgate_testkit::TestNode`), driven over real sockets by an HTTP
//! client and raw TCP. The key API itself (CRUD, conditions, the CAS race,
//! TTL queries, limits, malformed requests, batches) is checked by the
//! conformance suite in `hostile_http.rs`.

use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use http::{Method, StatusCode, header};
use shardgate_api::Limits;
use shardgate_api::batch::{self, GetResult, PutItem, PutResult};
use shardgate_api::etag::WriteCondition;
use shardgate_api::key::key_path;
use shardgate_node::NodeConfig;
use shardgate_node::store::{Clock, ManualClock};
use shardgate_testkit::TestNode;
use shardgate_testkit::http::{metric_value, raw_text as raw_exchange, read_to_close as read_until_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(15);

fn small_config() -> NodeConfig {
    NodeConfig { memory_limit: ByteSize::mib(16), ..NodeConfig::default() }
}

async fn poll_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    shardgate_testkit::poll_until(what, DEADLINE, check).await
}

/// Failed conditions are counted (the conditions themselves are the
/// suite's).
#[tokio::test]
async fn condition_failures_are_counted() {
    let node = TestNode::start(small_config()).await;
    let path = key_path(b"cond");
    let add = |v: &'static str| node.request(Method::PUT, &path, &[("if-none-match", "*")], v);
    assert_eq!(add("one").await.status, StatusCode::CREATED);
    assert_eq!(add("two").await.status, StatusCode::PRECONDITION_FAILED);
    let etag = node.get(b"cond").await.etag();
    let stale = "\"0000000000000001\"";
    let cas = node.request(Method::PUT, &path, &[("if-match", stale)], "x").await;
    assert_eq!(cas.status, StatusCode::PRECONDITION_FAILED);
    let replace = node.request(Method::PUT, &key_path(b"absent"), &[("if-match", "*")], "v").await;
    assert_eq!(replace.status, StatusCode::PRECONDITION_FAILED);
    let cas = node.request(Method::PUT, &path, &[("if-match", &etag)], "three").await;
    assert_eq!(cas.status, StatusCode::NO_CONTENT);
    let del = node.request(Method::DELETE, &path, &[("if-match", &etag)], Bytes::new()).await;
    assert_eq!(del.status, StatusCode::PRECONDITION_FAILED);
    // A malformed condition is a bad request, not a failed condition.
    let bad = node.request(Method::PUT, &path, &[("if-match", "no-quotes")], "v").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(node.metric("shardgate_node_condition_failures_total").await, 4.0);
    node.stop().await;
}

/// TTLs on a manual clock: the test moves the node's clock instead of
/// sleeping, so each expiry is checked at (and 1 ms before) its instant.
#[tokio::test]
async fn ttl_expiry() {
    let clock = ManualClock::new();
    let node = TestNode::start_with_clock(small_config(), Clock::manual(&clock)).await;
    let r = node.request(Method::PUT, &format!("{}?ttl=1", key_path(b"short")), &[], "v").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = node.request(Method::PUT, &format!("{}?ttl=3600", key_path(b"long")), &[], "v").await;
    assert_eq!(r.status, StatusCode::CREATED);
    clock.advance(Duration::from_millis(999));
    assert_eq!(node.get(b"short").await.status, StatusCode::OK);
    clock.advance(Duration::from_millis(1));
    assert_eq!(node.get(b"short").await.status, StatusCode::NOT_FOUND, "short expired");
    // The read that found it expired removed and counted it.
    assert_eq!(node.metric("shardgate_node_expirations_total").await, 1.0);
    assert_eq!(node.get(b"long").await.status, StatusCode::OK);
    // An expired key is absent for conditional writes too.
    let add = node.request(Method::PUT, &key_path(b"short"), &[("if-none-match", "*")], "again").await;
    assert_eq!(add.status, StatusCode::CREATED);
    // Overwriting resets the TTL to the new write's.
    node.request(Method::PUT, &format!("{}?ttl=1", key_path(b"long")), &[], "v2").await;
    assert_eq!(node.get(b"long").await.status, StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_eq!(node.get(b"long").await.status, StatusCode::NOT_FOUND, "long expired after its rewrite");
    assert_eq!(node.metric("shardgate_node_expirations_total").await, 2.0);
    node.stop().await;
}

#[tokio::test]
async fn batch_put_and_get() {
    let clock = ManualClock::new();
    let node = TestNode::start_with_clock(small_config(), Clock::manual(&clock)).await;
    let etag = node.put(b"existing", b"old").await.etag();
    let version = shardgate_api::etag::parse_etag(&etag).unwrap().unwrap();
    let items = vec![
        PutItem {
            key: Bytes::from_static(b"b1"),
            condition: WriteCondition::Always,
            ttl_seconds: None,
            content_type: Bytes::from_static(b"text/plain"),
            value: Bytes::from_static(b"one"),
        },
        PutItem {
            key: Bytes::from_static(b"existing"),
            condition: WriteCondition::IfVersionIn(vec![version]),
            ttl_seconds: Some(60),
            content_type: Bytes::new(),
            value: Bytes::from_static(b"new"),
        },
        PutItem {
            key: Bytes::from_static(b"existing"),
            condition: WriteCondition::IfAbsent,
            ttl_seconds: None,
            content_type: Bytes::new(),
            value: Bytes::from_static(b"lost"),
        },
        PutItem {
            key: Bytes::from_static(b"\x00bin\xff"),
            condition: WriteCondition::Always,
            ttl_seconds: Some(1),
            content_type: Bytes::new(),
            value: Bytes::from(vec![9u8; 5000]),
        },
    ];
    let body = batch::encode_put_request(&items).unwrap();
    let r = node.request(Method::POST, "/v1/batch/put", &[("content-type", batch::CONTENT_TYPE)], body).await;
    assert_eq!(r.status, StatusCode::OK);
    let results = batch::decode_put_response(r.body, &Limits::default()).unwrap();
    assert!(matches!(results[0], PutResult::Created { .. }));
    assert!(matches!(results[1], PutResult::Replaced { .. }));
    assert_eq!(results[2], PutResult::ConditionFailed);
    assert!(matches!(results[3], PutResult::Created { .. }));

    let single = node.get(b"b1").await;
    assert_eq!(&single.body[..], b"one");
    assert_eq!(single.headers[header::CONTENT_TYPE], "text/plain");
    let PutResult::Created { version: b1_version } = results[0] else { unreachable!() };
    assert_eq!(single.etag(), shardgate_api::etag::format_etag(b1_version).to_str().unwrap());

    let keys: Vec<&[u8]> = vec![b"b1", b"missing", b"existing", b"\x00bin\xff"];
    let r = node.request(Method::POST, "/v1/batch/get", &[], batch::encode_get_request(&keys).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], batch::CONTENT_TYPE);
    let got = batch::decode_get_response(r.body, &Limits::default()).unwrap();
    assert_eq!(
        got[0],
        GetResult::Hit { version: b1_version, content_type: Bytes::from_static(b"text/plain"), value: Bytes::from_static(b"one") }
    );
    assert_eq!(got[1], GetResult::Miss);
    assert!(matches!(&got[2], GetResult::Hit { value, .. } if &value[..] == b"new"));
    assert!(matches!(&got[3], GetResult::Hit { value, .. } if value.len() == 5000));
    assert_eq!(node.metric("shardgate_node_hits_total").await, 4.0);
    assert_eq!(node.metric("shardgate_node_misses_total").await, 1.0);
    // Entry 3 had ttl 1s.
    clock.advance(Duration::from_secs(1));
    assert_eq!(node.get(b"\x00bin\xff").await.status, StatusCode::NOT_FOUND, "batch ttl expired");
    node.stop().await;
}

/// A flood of large values from concurrent clients never takes the store
/// past `node.memory_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bound_holds_under_a_flood_of_large_values() {
    let limit = ByteSize::mib(4);
    let config = NodeConfig { memory_limit: limit, max_value_size: ByteSize::kib(256), ..NodeConfig::default() };
    let node = std::sync::Arc::new(TestNode::start(config).await);
    let value = Bytes::from(vec![7u8; 200 * 1024]);
    let mut tasks = Vec::new();
    for client in 0..16u32 {
        let node = node.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8u32 {
                let key = format!("flood-{client}-{i}");
                let r = node.request(Method::PUT, &key_path(key.as_bytes()), &[], value.clone()).await;
                assert_eq!(r.status, StatusCode::CREATED);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let used = node.metric("shardgate_node_bytes_used").await;
    let items = node.metric("shardgate_node_items").await;
    let evictions = node.metric("shardgate_node_evictions_total").await;
    assert!(used <= limit.as_u64() as f64, "bytes used {used} > limit");
    assert!(items <= 20.0, "{items} items of 200 KiB in 4 MiB");
    assert!(items >= 10.0, "only {items} items kept");
    assert_eq!(items + evictions, 128.0, "every write is either held or counted as evicted");
    assert_eq!(node.metric("shardgate_node_sets_total").await, 128.0);
    std::sync::Arc::into_inner(node).unwrap().stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let node = TestNode::start(small_config()).await;
    let r = node.request(Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = node.request(Method::GET, "/readyz", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    node.put(b"a", b"12345").await;
    node.get(b"a").await;
    node.get(b"b").await;
    node.request(Method::DELETE, &key_path(b"a"), &[], Bytes::new()).await;
    let text = node.request(Method::GET, "/metrics", &[], Bytes::new()).await.text();
    for (name, want) in [
        ("shardgate_node_hits_total", 1.0),
        ("shardgate_node_misses_total", 1.0),
        ("shardgate_node_sets_total", 1.0),
        ("shardgate_node_deletes_total", 1.0),
        ("shardgate_node_evictions_total", 0.0),
        ("shardgate_node_expirations_total", 0.0),
        ("shardgate_node_items", 0.0),
        ("shardgate_node_bytes_used", 0.0),
        ("shardgate_node_memory_limit_bytes", 16.0 * 1024.0 * 1024.0),
        ("shardgate_node_request_duration_seconds_count{endpoint=\"get\"}", 2.0),
        ("shardgate_node_request_duration_seconds_count{endpoint=\"put\"}", 1.0),
    ] {
        assert_eq!(metric_value(&text, name), Some(want), "{name} in\n{text}");
    }
    node.stop().await;
}

#[tokio::test]
async fn slow_clients_time_out_without_disturbing_others() {
    let config =
        NodeConfig { header_read_timeout: Duration::from_millis(300), body_read_timeout: Duration::from_millis(300), ..small_config() };
    let node = TestNode::start(config).await;
    node.put(b"neighbour", b"safe").await;

    // Head never completed: the connection is closed (hyper may say 408 first).
    let mut slow_head = TcpStream::connect(node.addr).await.unwrap();
    slow_head.write_all(b"GET /v1/keys/neighbour HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // Body never completed: 408 naming the limit.
    let mut slow_body = TcpStream::connect(node.addr).await.unwrap();
    slow_body.write_all(b"PUT /v1/keys/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").await.unwrap();
    // Meanwhile everyone else is served.
    assert_eq!(&node.get(b"neighbour").await.body[..], b"safe");

    let reply = read_until_close(&mut slow_head).await;
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{reply}");
    let reply = read_until_close(&mut slow_body).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("node.body_read_timeout"), "{reply}");
    // On a new connection: the node closes a keep-alive connection idle for
    // header_read_timeout (300 ms here, longer than the reads above took),
    // and a pooled one could race that close.
    let fresh = shardgate_testkit::Http::fresh().get(&node.url, b"slow").await.unwrap();
    assert_eq!(fresh.status, StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_service_resumes() {
    let node = TestNode::start(NodeConfig { max_connections: 2, ..small_config() }).await;
    // Two keep-alive connections, each proven accepted by a full exchange.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let reply = raw_exchange(node.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("node.max_connections is 2"), "{reply}");
    drop(held);
    poll_until("a connection slot to free up", || async {
        raw_exchange(node.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(node.metric("shardgate_node_connections_rejected_total").await >= 1.0);
    node.stop().await;
}

/// Shutdown stops accepting but lets a request already in flight finish.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut node = TestNode::start(small_config()).await;
    let mut in_flight = TcpStream::connect(node.addr).await.unwrap();
    in_flight.write_all(b"PUT /v1/keys/late HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nhal").await.unwrap();
    // Make sure the server is inside the handler (it has read the head and
    // waits for the body) before shutting down.
    poll_until("the request to be in flight", || async { node.metric("shardgate_node_requests_in_flight").await >= 1.0 }).await;
    node.signal_stop();
    poll_until("the listener to close", || async { TcpStream::connect(node.addr).await.is_err() }).await;
    in_flight.write_all(b"f!!").await.unwrap();
    let reply = read_until_close(&mut in_flight).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    node.stop().await;
}

#[tokio::test]
async fn invalid_config_is_refused_before_serving() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig { max_ttl: Duration::from_secs(60), ..NodeConfig::default() };
    let err = shardgate_node::run(listener, config, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("node.default_ttl"), "{err}");
}
