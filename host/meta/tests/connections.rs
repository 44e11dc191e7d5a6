//! How a meta member accepts connections (the accept loop every role
//! shares): one connection over `meta.max_connections` gets the raw 503
//! naming the limit and is closed, and a client that sends no request head
//! is dropped after `meta.header_read_timeout`, which frees its place.
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
