//! Pipelined requests to a node (`shardgate_proxy::pipeline` through
//! `h1::NodePool::request_at`): against a real node, every answer reaches the
//! request that asked for it, under many concurrent readers and writers; and
//! against hostile servers, a pipe that is closed or stalls fails its
//! requests without losing the pool (GET falls back to a connection of its
//! own; a write that was sent is never sent twice).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use shardgate_proxy::h1::NodePool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn node() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(shardgate_node::server::run(listener, shardgate_node::NodeConfig::default(), async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn pool(addr: &str, pipes: usize, stall: Duration) -> NodePool {
    NodePool::with_pipes(addr, 16, Duration::from_secs(30), Duration::from_secs(1), 1 << 20, pipes, stall, Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_reaches_its_request_under_concurrency() {
    let (addr, _stop) = node().await;
    let pool = Arc::new(pool(&addr, 2, Duration::from_secs(5)));
    // Values of different sizes (some past the 16 KiB copy-out limit), so a
    // framing slip shows as a wrong value.
    for k in 0..64usize {
        let value = vec![b'a' + (k % 26) as u8; 1 + k * 700];
        let r = pool.request_at(Instant::now(), &Method::PUT, &format!("/v1/keys/k{k}"), &[], &[], &value).await.unwrap();
        assert!(r.status.is_success(), "{:?}", r.status);
    }
    let (puts, _) = pool.pipelined();
    assert_eq!(puts, 64, "writes ride the pipes too");
    let mut tasks = Vec::new();
    for c in 0..32usize {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200usize {
                let k = (c * 7 + i * 13) % 80; // k64..k79 do not exist
                let method = if i % 5 == 0 { Method::HEAD } else { Method::GET };
                let a = pool.request_at(Instant::now(), &method, &format!("/v1/keys/k{k}"), &[], &[], b"").await.unwrap();
                if k < 64 {
                    let len = 1 + k * 700;
                    assert_eq!(a.status, StatusCode::OK);
                    assert_eq!(a.headers["content-length"], len.to_string().as_str());
                    if method == Method::GET {
                        assert_eq!(a.body.len(), len, "k{k}");
                        assert!(a.body.iter().all(|&b| b == b'a' + (k % 26) as u8), "k{k} got another key's value");
                    } else {
                        assert!(a.body.is_empty());
                    }
                } else {
                    assert_eq!(a.status, StatusCode::NOT_FOUND, "k{k}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (requests, writes) = pool.pipelined();
    assert_eq!(requests - puts, 32 * 200, "every read went through a pipe");
    assert!(writes < requests, "requests shared writes: {requests} requests in {writes} writes");
}

/// A server that answers `answered` pipelined GETs of one connection, then
/// closes it (or, with `stall`, keeps it open and silent); later connections
/// are answered one request at a time.
async fn flaky_server(answered: usize, stall: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut sent = 0;
            while sent < answered {
                let n = first.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
                while sent < heads.min(answered) {
                    first.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").await.unwrap();
                    sent += 1;
                }
            }
            if stall {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_closed_pipe_sends_unanswered_reads_again() {
    let addr = flaky_server(1, false).await;
    let pool = Arc::new(pool(&addr, 1, Duration::from_secs(5)));
    let reads: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request_at(Instant::now(), &Method::GET, &format!("/v1/keys/{i}"), &[], &[], b"").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for r in reads {
        bodies.push(String::from_utf8(r.await.unwrap().expect("answered").body.to_vec()).unwrap());
    }
    assert!(bodies.iter().all(|b| b == "first" || b == "fresh"), "{bodies:?}");
    assert!(bodies.contains(&"fresh".to_string()), "the unanswered reads were sent again: {bodies:?}");
    // The pool keeps working: a new pipe replaces the closed one.
    let again = pool.request_at(Instant::now(), &Method::GET, "/v1/keys/x", &[], &[], b"").await.unwrap();
    assert_eq!(&again.body[..], b"fresh");
}

#[tokio::test]
async fn a_stalled_pipe_fails_after_the_stall_timeout() {
    let addr = flaky_server(0, true).await;
    let pool = pool(&addr, 1, Duration::from_millis(300));
    let start = Instant::now();
    // The pipe stalls; nothing of the answer arrived, so the read is sent
    // again on a connection of its own, which answers.
    let a = pool.request_at(Instant::now(), &Method::GET, "/v1/keys/x", &[], &[], b"").await.unwrap();
    assert_eq!(&a.body[..], b"fresh");
    assert!(start.elapsed() >= Duration::from_millis(300), "answered before the pipe's stall timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_that_goes_silent_while_idle_fails_the_next_read() {
    // One answer, then the pipe sits idle, then the node stops answering.
    let addr = flaky_server(1, true).await;
    let pool = pool(&addr, 1, Duration::from_millis(300));
    let a = pool.request_at(Instant::now(), &Method::GET, "/v1/keys/a", &[], &[], b"").await.unwrap();
    assert_eq!(&a.body[..], b"first");
    tokio::time::sleep(Duration::from_millis(50)).await; // the reader is in its idle read
    let start = Instant::now();
    let b = tokio::time::timeout(Duration::from_secs(10), pool.request_at(Instant::now(), &Method::GET, "/v1/keys/b", &[], &[], b""))
        .await
        .expect("the stall timeout bounds a read sent to an idle pipe")
        .unwrap();
    assert_eq!(&b.body[..], b"fresh");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn without_pipes_reads_use_their_own_connections() {
    let (addr, _stop) = node().await;
    let pool = pool(&addr, 0, Duration::from_secs(5));
    let a = pool.request_at(Instant::now(), &Method::GET, "/v1/keys/nothing", &[], &[], b"").await.unwrap();
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stalled_pipe_fails_a_sent_write_without_sending_it_again() {
    let addr = flaky_server(0, true).await;
    let pool = pool(&addr, 1, Duration::from_millis(300));
    // The PUT was written to the pipe, which never answers: it may have
    // been applied, so it fails instead of going out a second time (the
    // server's other connections would answer "fresh").
    let e = pool.request_at(Instant::now(), &Method::PUT, "/v1/keys/x", &[], &[], b"value").await.unwrap_err();
    assert_eq!(e.to_string(), "no answer within 300ms");
    // A read after it is served on a new pipe or its own connection.
    let a = pool.request_at(Instant::now(), &Method::GET, "/v1/keys/x", &[], &[], b"").await.unwrap();
    assert_eq!(&a.body[..], b"fresh");
}
