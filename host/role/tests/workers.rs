//! [`shardgate_role::workers`] with real sockets on 127.0.0.1: once
//! installed, both accept loops ([`serve`], [`serve_streams`]) serve a
//! listener with `on_workers` on the workers in turn (every connection
//! whole on one worker thread), a listener without it on the accept loop's
//! runtime, and the drain after shutdown still waits for a request in
//! flight on a worker. The workers are per process, so this file is its
//! own test binary and installs them once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use shardgate_role::serve::{ConnectionMetrics, Drained, ServeConfig, serve, serve_streams};
use shardgate_role::workers::{self, WorkersError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

const WORKERS: usize = 2;

fn config(on_workers: bool) -> ServeConfig {
    ServeConfig {
        role: "test",
        max_connections: 64,
        max_connections_key: "test.max_connections",
        retry_after_secs: None,
        header_read_timeout: Duration::from_secs(10),
        tls: None,
        drain_timeout: Duration::from_secs(10),
        on_workers,
    }
}

/// The name of the thread the caller runs on, and the worker it is.
fn here() -> String {
    format!("{} {:?}", std::thread::current().name().unwrap_or("unnamed"), workers::current())
}

/// One `GET path` on a new connection; the answer's body (the server
/// answers with one line and closes).
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("an answer within 10 s").unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

/// Serves `GET /` with the thread name and worker of the request (and of
/// the per-connection hook), `GET /slow` after `Notify` is notified.
async fn http_server(
    on_workers: bool,
    release: Arc<Notify>,
    started: Arc<Notify>,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<Drained>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let service_for = move |_peer: SocketAddr| {
        let (release, started) = (release.clone(), started.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (release, started) = (release.clone(), started.clone());
            async move {
                if req.uri().path() == "/slow" {
                    started.notify_one();
                    release.notified().await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(here()))))
            }
        })
    };
    let metrics: Arc<dyn ConnectionMetrics> = Arc::new(());
    let http = hyper::server::conn::http1::Builder::new();
    let task = tokio::spawn(serve(listener, config(on_workers), http, service_for, metrics, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_the_workers_in_turn_and_drained_at_shutdown() {
    assert!(workers::installed().is_none(), "no workers before install");
    let (addr, stop, task) = http_server(true, Arc::new(Notify::new()), Arc::new(Notify::new())).await;
    // Not installed yet: the accept loop's runtime serves.
    let before = get(addr, "/").await;
    assert!(before.starts_with("tokio-rt-worker None"), "before install: {before}");
    let _ = stop.send(());
    assert_eq!(task.await.unwrap(), Drained::Finished);

    let installed = workers::install(WORKERS).unwrap();
    assert_eq!(installed.len(), WORKERS);
    assert!(matches!(workers::install(1), Err(WorkersError::Installed)), "a second install is refused");
    assert!(workers::current().is_none(), "a test thread is no worker");
    // An accept loop looks for the workers when it starts.
    let (addr, stop, task) = http_server(true, Arc::new(Notify::new()), Arc::new(Notify::new())).await;

    // In turn: 2 x WORKERS connections land on every worker twice.
    let mut seen = Vec::new();
    for _ in 0..2 * WORKERS {
        seen.push(get(addr, "/").await);
    }
    for w in 0..WORKERS {
        let name = format!("shardgate-conn-{w} Some({w})");
        assert_eq!(seen.iter().filter(|s| **s == name).count(), 2, "connections per worker: {seen:?}");
    }

    // A listener without on_workers stays on the accept loop's runtime.
    let (plain, plain_stop, plain_task) = http_server(false, Arc::new(Notify::new()), Arc::new(Notify::new())).await;
    let answer = get(plain, "/").await;
    assert!(answer.starts_with("tokio-rt-worker None"), "without on_workers: {answer}");
    let _ = plain_stop.send(());
    assert_eq!(plain_task.await.unwrap(), Drained::Finished);
    let _ = stop.send(());
    assert_eq!(task.await.unwrap(), Drained::Finished);

    // The drain waits for a request in flight on a worker.
    let (release, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (addr, stop, task) = http_server(true, release.clone(), started.clone()).await;
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the slow request started");
    let _ = stop.send(());
    // The loop has stopped accepting (its listener is closed) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener still accepts 10 s after shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... and still drains: the request on the worker holds it.
    assert!(!task.is_finished(), "the drain ended with a request in flight");
    release.notify_one();
    let body = slow.await.unwrap();
    assert!(body.starts_with("shardgate-conn-"), "the slow request ran on a worker: {body}");
    assert_eq!(task.await.unwrap(), Drained::Finished);

    // serve_streams: every connection on a worker, the stream usable there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    let handle = move |mut io: Box<dyn shardgate_role::serve::Stream>, _peer: SocketAddr, _stopping| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = io.write_all(format!("{}\n", here()).as_bytes()).await;
            let _ = io.shutdown().await;
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let metrics: Arc<dyn ConnectionMetrics> = Arc::new(());
    let task = tokio::spawn(serve_streams(
        listener,
        config(true),
        Arc::new(tokio::sync::Semaphore::new(64)),
        Arc::from(&b"-ERR full\r\n"[..]),
        handle,
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut names = Vec::new();
    for _ in 0..WORKERS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut line)).await.expect("a line within 10 s").unwrap();
        names.push(line.trim().to_string());
    }
    names.sort();
    let expected: Vec<String> = (0..WORKERS).map(|w| format!("shardgate-conn-{w} Some({w})")).collect();
    assert_eq!(names, expected);
    assert_eq!(served.load(Ordering::SeqCst), WORKERS);
    let _ = stop.send(());
    assert_eq!(task.await.unwrap(), Drained::Finished);
}
