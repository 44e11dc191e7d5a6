//! Integration tests: a real node on 127.0.0.1:0, driven over real sockets
//! by a hyper client (and raw TCP for malformed and slow clients).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shardgate_api::Limits;
use shardgate_api::batch::{self, GetResult, PutItem, PutResult};
use shardgate_api::etag::WriteCondition;
use shardgate_api::key::key_path;
use shardgate_node::store::{Clock, ManualClock};
use shardgate_node::{NodeConfig, NodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(15);

struct TestNode {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NodeError>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn etag(&self) -> String {
        self.headers[header::ETAG].to_str().unwrap().to_owned()
    }
}

impl TestNode {
    async fn start(config: NodeConfig) -> TestNode {
        TestNode::start_with_clock(config, Clock::system()).await
    }

    /// A node whose TTLs follow `clock` (a [`ManualClock`] in TTL tests).
    async fn start_with_clock(config: NodeConfig, clock: Clock) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(shardgate_node::server::run_with_clock(listener, config, clock, async move {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestNode {
            addr,
            client,
            stop: Some(stop),
            task,
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, key: &[u8]) -> Reply {
        self.request(Method::GET, &key_path(key), &[], Bytes::new())
            .await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Reply {
        self.request(
            Method::PUT,
            &key_path(key),
            &[],
            Bytes::copy_from_slice(value),
        )
        .await
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .request(Method::GET, "/metrics", &[], Bytes::new())
            .await
            .text();
        metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn small_config() -> NodeConfig {
    NodeConfig {
        memory_limit: ByteSize::mib(16),
        ..NodeConfig::default()
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes
/// it (or the deadline passes).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_close(&mut stream).await
}

async fn read_until_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn poll_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn put_get_head_delete_with_binary_key_and_value() {
    let node = TestNode::start(small_config()).await;
    let key: Vec<u8> = (0..=255u8).collect();
    let value: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
    let path = key_path(&key);

    let created = node
        .request(
            Method::PUT,
            &path,
            &[("content-type", "image/x-test")],
            value.clone(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let etag1 = created.etag();

    let got = node.get(&key).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], &value[..]);
    assert_eq!(got.headers[header::CONTENT_TYPE], "image/x-test");
    assert_eq!(got.etag(), etag1);

    let head = node.request(Method::HEAD, &path, &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers[header::CONTENT_LENGTH], "3000");
    assert_eq!(head.etag(), etag1);

    let replaced = node.put(&key, b"second").await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT);
    assert_ne!(replaced.etag(), etag1);
    let got = node.get(&key).await;
    assert_eq!(&got.body[..], b"second");
    assert_eq!(
        got.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );

    let deleted = node.request(Method::DELETE, &path, &[], Bytes::new()).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(node.get(&key).await.status, StatusCode::NOT_FOUND);
    let again = node.request(Method::DELETE, &path, &[], Bytes::new()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let head = node.request(Method::HEAD, &path, &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);

    // Empty values are values.
    assert_eq!(node.put(b"empty", b"").await.status, StatusCode::CREATED);
    let got = node.get(b"empty").await;
    assert_eq!((got.status, got.body.len()), (StatusCode::OK, 0));
    node.stop().await;
}

#[tokio::test]
async fn conditional_requests() {
    let node = TestNode::start(small_config()).await;
    let path = key_path(b"cond");
    let add = |v: &'static str| node.request(Method::PUT, &path, &[("if-none-match", "*")], v);
    assert_eq!(add("one").await.status, StatusCode::CREATED);
    let second = add("two").await;
    assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
    assert!(second.text().contains("If-None-Match"), "{}", second.text());
    let current = node.get(b"cond").await;
    assert_eq!(&current.body[..], b"one");
    let etag = current.etag();

    let stale = "\"0000000000000001\"";
    let cas = node
        .request(Method::PUT, &path, &[("if-match", stale)], "x")
        .await;
    assert_eq!(cas.status, StatusCode::PRECONDITION_FAILED);
    let cas = node
        .request(Method::PUT, &path, &[("if-match", &etag)], "three")
        .await;
    assert_eq!(cas.status, StatusCode::NO_CONTENT);
    let new_etag = cas.etag();
    assert_eq!(&node.get(b"cond").await.body[..], b"three");

    let not_modified = node
        .request(
            Method::GET,
            &path,
            &[("if-none-match", &new_etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    let modified = node
        .request(
            Method::GET,
            &path,
            &[("if-none-match", &etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(modified.status, StatusCode::OK);

    let replace = node
        .request(Method::PUT, &key_path(b"absent"), &[("if-match", "*")], "v")
        .await;
    assert_eq!(replace.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(node.get(b"absent").await.status, StatusCode::NOT_FOUND);

    let del = node
        .request(Method::DELETE, &path, &[("if-match", &etag)], Bytes::new())
        .await;
    assert_eq!(del.status, StatusCode::PRECONDITION_FAILED);
    let del = node
        .request(
            Method::DELETE,
            &path,
            &[("if-match", &new_etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);

    let bad = node
        .request(Method::PUT, &path, &[("if-match", "no-quotes")], "v")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("If-Match"));
    assert_eq!(
        node.metric("shardgate_node_condition_failures_total").await,
        4.0
    );
    node.stop().await;
}

/// Many clients compare-and-set from the same version at once: exactly one
/// wins, and the stored value is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_race_has_exactly_one_winner() {
    let node = std::sync::Arc::new(TestNode::start(small_config()).await);
    for round in 0..5 {
        let etag = node
            .put(b"contended", format!("base{round}").as_bytes())
            .await
            .etag();
        let mut tasks = Vec::new();
        for client in 0..32 {
            let node = node.clone();
            let etag = etag.clone();
            tasks.push(tokio::spawn(async move {
                let value = format!("client{client}");
                let r = node
                    .request(
                        Method::PUT,
                        &key_path(b"contended"),
                        &[("if-match", &etag)],
                        value.clone(),
                    )
                    .await;
                (r.status, value)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (status, value) = task.await.unwrap();
            match status {
                StatusCode::NO_CONTENT => winners.push(value),
                StatusCode::PRECONDITION_FAILED => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(node.get(b"contended").await.body, winners[0].as_bytes());
    }
    // `add` races the same way.
    let mut tasks = Vec::new();
    for client in 0..32 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.request(
                Method::PUT,
                &key_path(b"added"),
                &[("if-none-match", "*")],
                format!("{client}"),
            )
            .await
            .status
        }));
    }
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    std::sync::Arc::into_inner(node).unwrap().stop().await;
}

/// TTLs on a manual clock: the test moves the node's clock instead of
/// sleeping, so each expiry is checked at (and 1 ms before) its instant.
#[tokio::test]
async fn ttl_expiry() {
    let clock = ManualClock::new();
    let node = TestNode::start_with_clock(small_config(), Clock::manual(&clock)).await;
    let r = node
        .request(
            Method::PUT,
            &format!("{}?ttl=1", key_path(b"short")),
            &[],
            "v",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = node
        .request(
            Method::PUT,
            &format!("{}?ttl=3600", key_path(b"long")),
            &[],
            "v",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    clock.advance(Duration::from_millis(999));
    assert_eq!(node.get(b"short").await.status, StatusCode::OK);
    clock.advance(Duration::from_millis(1));
    assert_eq!(node.get(b"short").await.status, StatusCode::NOT_FOUND, "short expired");
    // The read that found it expired removed and counted it.
    assert_eq!(node.metric("shardgate_node_expirations_total").await, 1.0);
    assert_eq!(node.get(b"long").await.status, StatusCode::OK);
    // An expired key is absent for conditional writes too.
    let add = node
        .request(
            Method::PUT,
            &key_path(b"short"),
            &[("if-none-match", "*")],
            "again",
        )
        .await;
    assert_eq!(add.status, StatusCode::CREATED);
    // Overwriting resets the TTL to the new write's.
    node.request(
        Method::PUT,
        &format!("{}?ttl=1", key_path(b"long")),
        &[],
        "v2",
    )
    .await;
    assert_eq!(node.get(b"long").await.status, StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_eq!(node.get(b"long").await.status, StatusCode::NOT_FOUND, "long expired after its rewrite");
    assert_eq!(node.metric("shardgate_node_expirations_total").await, 2.0);
    node.stop().await;
}

#[tokio::test]
async fn bad_ttl_is_400_and_changes_nothing() {
    let node = TestNode::start(NodeConfig {
        max_ttl: Duration::from_secs(60),
        default_ttl: Duration::from_secs(60),
        ..small_config()
    })
    .await;
    node.put(b"k", b"original").await;
    for query in [
        "ttl=0",
        "ttl=61",
        "ttl=abc",
        "ttl=-5",
        "ttl=",
        "ttl=1&ttl=2",
        "tll=5",
    ] {
        let r = node
            .request(
                Method::PUT,
                &format!("{}?{query}", key_path(b"k")),
                &[],
                "changed",
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            r.text().contains("ttl") || r.text().contains("tll"),
            "{query}: {}",
            r.text()
        );
    }
    let r = node
        .request(
            Method::PUT,
            &format!("{}?ttl=61", key_path(b"k")),
            &[],
            "changed",
        )
        .await;
    assert!(r.text().contains("node.max_ttl"), "{}", r.text());
    assert_eq!(&node.get(b"k").await.body[..], b"original");
    node.stop().await;
}

#[tokio::test]
async fn oversized_keys_and_values_are_rejected_naming_the_limit() {
    let config = NodeConfig {
        max_key_size: ByteSize::b(16),
        max_value_size: ByteSize::kib(4),
        ..small_config()
    };
    let node = TestNode::start(config).await;
    node.put(b"neighbour", b"safe").await;

    let r = node.put(&[b'k'; 17], b"v").await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert!(r.text().contains("node.max_key_size"), "{}", r.text());
    assert_eq!(node.get(&[b'k'; 16]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(node.get(&[b'k'; 17]).await.status, StatusCode::URI_TOO_LONG);
    // A very long URL is refused the same way.
    let r = node
        .request(
            Method::GET,
            &format!("/v1/keys/{}", "x".repeat(60_000)),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);

    let r = node.put(b"big", &vec![0u8; 4097]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("node.max_value_size"), "{}", r.text());
    assert_eq!(
        node.put(b"big", &vec![0u8; 4096]).await.status,
        StatusCode::CREATED
    );

    // Announced by Content-Length, body never sent: refused without reading it.
    let head = "PUT /v1/keys/huge HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n";
    let reply = raw_exchange(node.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("node.max_value_size"), "{reply}");

    // Chunked, no length: cut off at the limit.
    let mut chunked =
        b"PUT /v1/keys/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'z'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(node.addr, &chunked).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("node.max_value_size"), "{reply}");
    assert_eq!(node.get(b"chunked").await.status, StatusCode::NOT_FOUND);

    let long_ct = "a/".to_owned() + &"b".repeat(300);
    let r = node
        .request(
            Method::PUT,
            &key_path(b"ct"),
            &[("content-type", &long_ct)],
            "v",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("Content-Type"));

    assert_eq!(&node.get(b"neighbour").await.body[..], b"safe");
    node.stop().await;
}

#[tokio::test]
async fn malformed_paths_and_requests() {
    let node = TestNode::start(small_config()).await;
    node.put(b"neighbour", b"safe").await;
    let r = node
        .request(Method::GET, "/v1/keys/", &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("empty"));
    let r = node.request(Method::PUT, "/v1/keys/a/b", &[], "v").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("%2F"), "{}", r.text());
    assert_eq!(node.put(b"a/b", b"slash").await.status, StatusCode::CREATED);
    assert_eq!(
        &node
            .request(Method::GET, "/v1/keys/a%2Fb", &[], Bytes::new())
            .await
            .body[..],
        b"slash"
    );
    let r = node.request(Method::GET, "/nope", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = node.request(Method::POST, &key_path(b"k"), &[], "v").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = node
        .request(
            Method::DELETE,
            &format!("{}?x=1", key_path(b"neighbour")),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    for garbage in [
        &b"\x00\x01\x02 garbage\r\n\r\n"[..],
        b"GET /v1/keys/k HTTP/9.9\r\n\r\n",
        b"PUT /v1/keys/k HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"PUT /v1/keys/k HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        b"PUT /v1/keys/k HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let reply = raw_exchange(node.addr, garbage).await;
        assert!(
            reply.is_empty()
                || reply.starts_with("HTTP/1.1 4")
                || reply.starts_with("HTTP/1.1 505"),
            "{reply}"
        );
    }
    assert_eq!(node.get(b"k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(&node.get(b"neighbour").await.body[..], b"safe");
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
    let r = node
        .request(
            Method::POST,
            "/v1/batch/put",
            &[("content-type", batch::CONTENT_TYPE)],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let results = batch::decode_put_response(r.body, &Limits::default()).unwrap();
    assert!(matches!(results[0], PutResult::Created { .. }));
    assert!(matches!(results[1], PutResult::Replaced { .. }));
    assert_eq!(results[2], PutResult::ConditionFailed);
    assert!(matches!(results[3], PutResult::Created { .. }));

    let single = node.get(b"b1").await;
    assert_eq!(&single.body[..], b"one");
    assert_eq!(single.headers[header::CONTENT_TYPE], "text/plain");
    let PutResult::Created {
        version: b1_version,
    } = results[0]
    else {
        unreachable!()
    };
    assert_eq!(
        single.etag(),
        shardgate_api::etag::format_etag(b1_version)
            .to_str()
            .unwrap()
    );

    let keys: Vec<&[u8]> = vec![b"b1", b"missing", b"existing", b"\x00bin\xff"];
    let r = node
        .request(
            Method::POST,
            "/v1/batch/get",
            &[],
            batch::encode_get_request(&keys).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], batch::CONTENT_TYPE);
    let got = batch::decode_get_response(r.body, &Limits::default()).unwrap();
    assert_eq!(
        got[0],
        GetResult::Hit {
            version: b1_version,
            content_type: Bytes::from_static(b"text/plain"),
            value: Bytes::from_static(b"one")
        }
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

#[tokio::test]
async fn batch_limits_and_bad_batches_change_nothing() {
    let config = NodeConfig {
        max_batch_keys: 4,
        max_value_size: ByteSize::kib(1),
        max_batch_size: ByteSize::kib(8),
        ..small_config()
    };
    let node = TestNode::start(config).await;
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let r = node
        .request(
            Method::POST,
            "/v1/batch/get",
            &[],
            batch::encode_get_request(&keys).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("node.max_batch_keys"), "{}", r.text());

    let item = |key: &'static [u8], size: usize| PutItem {
        key: Bytes::from_static(key),
        condition: WriteCondition::Always,
        ttl_seconds: None,
        content_type: Bytes::new(),
        value: Bytes::from(vec![1u8; size]),
    };
    let body = batch::encode_put_request(&[item(b"first", 10), item(b"second", 1025)]).unwrap();
    let r = node.request(Method::POST, "/v1/batch/put", &[], body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("node.max_value_size"), "{}", r.text());
    assert_eq!(node.get(b"first").await.status, StatusCode::NOT_FOUND);

    let body = batch::encode_put_request(&[
        item(b"first", 10),
        PutItem {
            ttl_seconds: Some(u32::MAX),
            ..item(b"second", 1)
        },
    ])
    .unwrap();
    let r = node.request(Method::POST, "/v1/batch/put", &[], body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("node.max_ttl"), "{}", r.text());
    let body = batch::encode_put_request(&[
        item(b"first", 10),
        PutItem {
            content_type: Bytes::from_static(b"bad\nct"),
            ..item(b"second", 1)
        },
    ])
    .unwrap();
    assert_eq!(
        node.request(Method::POST, "/v1/batch/put", &[], body)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(node.get(b"first").await.status, StatusCode::NOT_FOUND);

    let r = node
        .request(Method::POST, "/v1/batch/put", &[], vec![0u8; 9000])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("node.max_batch_size"), "{}", r.text());
    for garbage in [
        &b""[..],
        b"\x01",
        b"\x02\x01\x00\x00\x00\x00",
        b"\x01\x03\x00\x00\x00\x01",
        b"\x01\x01\x00\x00\x00\x01\x00\x05ab",
    ] {
        let r = node
            .request(
                Method::POST,
                "/v1/batch/get",
                &[],
                Bytes::copy_from_slice(garbage),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{garbage:?}: {}",
            r.text()
        );
    }
    node.stop().await;
}

/// A flood of large values from concurrent clients never takes the store
/// past `node.memory_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bound_holds_under_a_flood_of_large_values() {
    let limit = ByteSize::mib(4);
    let config = NodeConfig {
        memory_limit: limit,
        max_value_size: ByteSize::kib(256),
        ..NodeConfig::default()
    };
    let node = std::sync::Arc::new(TestNode::start(config).await);
    let value = Bytes::from(vec![7u8; 200 * 1024]);
    let mut tasks = Vec::new();
    for client in 0..16u32 {
        let node = node.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8u32 {
                let key = format!("flood-{client}-{i}");
                let r = node
                    .request(Method::PUT, &key_path(key.as_bytes()), &[], value.clone())
                    .await;
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
    assert_eq!(
        items + evictions,
        128.0,
        "every write is either held or counted as evicted"
    );
    assert_eq!(node.metric("shardgate_node_sets_total").await, 128.0);
    std::sync::Arc::into_inner(node).unwrap().stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let node = TestNode::start(small_config()).await;
    let r = node
        .request(Method::GET, "/healthz", &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = node
        .request(Method::GET, "/readyz", &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    node.put(b"a", b"12345").await;
    node.get(b"a").await;
    node.get(b"b").await;
    node.request(Method::DELETE, &key_path(b"a"), &[], Bytes::new())
        .await;
    let text = node
        .request(Method::GET, "/metrics", &[], Bytes::new())
        .await
        .text();
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
        (
            "shardgate_node_request_duration_seconds_count{endpoint=\"get\"}",
            2.0,
        ),
        (
            "shardgate_node_request_duration_seconds_count{endpoint=\"put\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&text, name), Some(want), "{name} in\n{text}");
    }
    node.stop().await;
}

#[tokio::test]
async fn slow_clients_time_out_without_disturbing_others() {
    let config = NodeConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..small_config()
    };
    let node = TestNode::start(config).await;
    node.put(b"neighbour", b"safe").await;

    // Head never completed: the connection is closed (hyper may say 408 first).
    let mut slow_head = TcpStream::connect(node.addr).await.unwrap();
    slow_head
        .write_all(b"GET /v1/keys/neighbour HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Body never completed: 408 naming the limit.
    let mut slow_body = TcpStream::connect(node.addr).await.unwrap();
    slow_body
        .write_all(b"PUT /v1/keys/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    // Meanwhile everyone else is served.
    assert_eq!(&node.get(b"neighbour").await.body[..], b"safe");

    let reply = read_until_close(&mut slow_head).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    let reply = read_until_close(&mut slow_body).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("node.body_read_timeout"), "{reply}");
    assert_eq!(node.get(b"slow").await.status, StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_service_resumes() {
    let node = TestNode::start(NodeConfig {
        max_connections: 2,
        ..small_config()
    })
    .await;
    // Two keep-alive connections, each proven accepted by a full exchange.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
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
        raw_exchange(
            node.addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(
        node.metric("shardgate_node_connections_rejected_total")
            .await
            >= 1.0
    );
    node.stop().await;
}

/// Shutdown stops accepting but lets a request already in flight finish.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut node = TestNode::start(small_config()).await;
    let mut in_flight = TcpStream::connect(node.addr).await.unwrap();
    in_flight
        .write_all(b"PUT /v1/keys/late HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nhal")
        .await
        .unwrap();
    // Make sure the server is inside the handler (it has read the head and
    // waits for the body) before shutting down.
    poll_until("the request to be in flight", || async {
        node.metric("shardgate_node_requests_in_flight").await >= 1.0
    })
    .await;
    let _ = node.stop.take().unwrap().send(());
    poll_until("the listener to close", || async {
        TcpStream::connect(node.addr).await.is_err()
    })
    .await;
    in_flight.write_all(b"f!!").await.unwrap();
    let reply = read_until_close(&mut in_flight).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    tokio::time::timeout(DEADLINE, &mut node.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn invalid_config_is_refused_before_serving() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig {
        max_ttl: Duration::from_secs(60),
        ..NodeConfig::default()
    };
    let err = shardgate_node::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node.default_ttl"), "{err}");
}
