//! How a meta member accepts connections (the accept loop every role
//! shares): one connection over `meta.max_connections` gets the raw 503
//! naming the limit and is closed, and a client that sends no request head
//! is dropped after `meta.header_read_timeout`, which frees its place.
//! A request body must arrive within `meta.body_read_timeout` (408).
//! One member on 127.0.0.1:0 that nothing else connects to.

mod common;

use std::time::{Duration, Instant};

use shardgate_meta::{InitialMember, MetaConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the member closes the connection (10 s at most).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection was not closed: {other:?}"),
    }
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_gets_503_and_a_silent_client_is_dropped_after_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket = listener.local_addr().unwrap();
    let header_read_timeout = Duration::from_millis(300);
    let config = MetaConfig {
        listen: socket,
        data_dir: dir.path().join("meta-1"),
        members: vec![InitialMember { id: 1, addr: format!("http://{socket}") }],
        max_connections: 1,
        header_read_timeout,
        ..common::test_config()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let member = tokio::spawn(shardgate_meta::run(listener, config, async move {
        let _ = stopped.await;
    }));

    // Connections are accepted in order: the first takes the only place.
    let start = Instant::now();
    let mut silent = TcpStream::connect(socket).await.unwrap();
    let mut refused = TcpStream::connect(socket).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    let body = r#"{"error":"too many connections; the limit meta.max_connections is 1"}"#;
    assert_eq!(
        answer,
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    );

    // The silent client is dropped once meta.header_read_timeout passes ...
    let dropped = read_until_closed(&mut silent).await;
    assert!(!dropped.contains("200 OK"), "{dropped}");
    assert!(start.elapsed() >= header_read_timeout, "dropped after {:?}", start.elapsed());

    // ... which frees its place (released by the connection's task: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(socket).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: meta\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(Instant::now() < deadline, "the silent client's place was not freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), member).await.expect("the member stops").unwrap().unwrap();
}

/// Starts one member on 127.0.0.1:0 with `tweak` applied.
async fn start_member(
    dir: &std::path::Path,
    tweak: impl Fn(&mut MetaConfig),
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), shardgate_meta::MetaError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket = listener.local_addr().unwrap();
    let mut config = MetaConfig {
        listen: socket,
        data_dir: dir.join("meta-1"),
        members: vec![InitialMember { id: 1, addr: format!("http://{socket}") }],
        ..common::test_config()
    };
    tweak(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let member = tokio::spawn(shardgate_meta::run(listener, config, async move {
        let _ = stopped.await;
    }));
    common::poll("the member is ready", Duration::from_secs(20), || async move {
        common::http().get(format!("http://{socket}/readyz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    (socket, stop, member)
}

/// The issue's reproduction: a request head announcing 100 body bytes, then
/// one byte, then nothing. The member answers 408 naming
/// `meta.body_read_timeout` and closes, on every kind of route (JSON API,
/// upload, Raft RPC), instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_after_body_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let body_read_timeout = Duration::from_millis(400);
    let (socket, stop, member) = start_member(dir.path(), |c| c.body_read_timeout = body_read_timeout).await;
    for path in ["/v1/nodes", "/v1/preview", "/v1/strategies", "/raft/vote"] {
        let mut stream = TcpStream::connect(socket).await.unwrap();
        let start = Instant::now();
        stream
            .write_all(
                format!("POST {path} HTTP/1.1\r\nhost: meta\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{").as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await;
        let took = start.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{path}: {answer}");
        assert!(answer.contains("request body not received within meta.body_read_timeout (400ms)"), "{path}: {answer}");
        assert!(answer.contains("\"kind\":\"body_timeout\""), "{path}: {answer}");
        assert!(took >= body_read_timeout, "{path}: answered after {took:?}");
    }
    // A body that does arrive is served.
    let mut stream = TcpStream::connect(socket).await.unwrap();
    stream.write_all(b"POST /v1/preview HTTP/1.1\r\nhost: meta\r\nconnection: close\r\ncontent-length: 2\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"{}").await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    // No strategy is active: the preview itself is refused, not the body.
    assert!(answer.contains("no strategy is active"), "{answer}");
    let metrics = common::http().get(format!("http://{socket}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_limited_total{outcome=\"body_timeout\"} 4\n"), "{metrics}");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), member).await.expect("the member stops").unwrap().unwrap();
}

/// The issue's other reproduction: 1,500 idle or half-sent connections.
/// Only `meta.max_connections` are held; every other one is answered 503
/// at once, and the held ones are dropped after `meta.header_read_timeout`,
/// after which the member serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_hundred_idle_or_half_sent_connections_hold_at_most_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (max, header_read_timeout) = (100u32, Duration::from_millis(1500));
    let (socket, stop, member) = start_member(dir.path(), |c| {
        c.max_connections = max;
        c.header_read_timeout = header_read_timeout;
    })
    .await;
    let mut streams = Vec::new();
    for i in 0..1500 {
        let mut stream = TcpStream::connect(socket).await.unwrap();
        // Half idle, half a partial request head.
        if i % 2 == 1 {
            stream.write_all(b"POST /v1/nodes HTTP/1.1\r\nhost: me").await.unwrap();
        }
        streams.push(stream);
    }
    let mut refused = 0;
    let mut held = 0;
    for stream in &mut streams {
        let answer = read_until_closed(stream).await;
        if answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n") {
            assert!(answer.contains("meta.max_connections is 100"), "{answer}");
            refused += 1;
        } else {
            assert!(!answer.contains("200 OK"), "{answer}");
            held += 1;
        }
    }
    // Every connection was closed (read_until_closed), the held ones by the
    // header timeout; at most max_connections were held.
    assert!(held <= max as usize, "{held} connections were held");
    assert_eq!(refused + held, 1500);
    let metrics = common::http().get(format!("http://{socket}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("shardgate_meta_connections_rejected_total {refused}\n")), "{metrics}");
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut stream = TcpStream::connect(socket).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: meta\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the member does not serve again: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), member).await.expect("the member stops").unwrap().unwrap();
}
