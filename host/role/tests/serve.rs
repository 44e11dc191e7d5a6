//! [`shardgate_role::serve::serve`] with real sockets on 127.0.0.1: the
//! connection cap's raw 503, the header read deadline, the TLS handshake
//! deadline (certificates from an rcgen CA, reqwest clients built by
//! `shardgate-tls`), and the drain after shutdown. Waits poll with
//! deadlines; nothing sleeps for a fixed time to let the server catch up.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use shardgate_role::serve::{ConnectionMetrics, Drained, ServeConfig, TlsAcceptor, rejection, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Counts what the accept loop reports.
#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
    rejected: AtomicUsize,
}

impl ConnectionMetrics for Counts {
    fn opened(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn closed(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }
}

fn config() -> ServeConfig {
    ServeConfig {
        role: "test",
        max_connections: 16,
        max_connections_key: "test.max_connections",
        retry_after_secs: None,
        header_read_timeout: Duration::from_secs(10),
        tls: None,
        drain_timeout: Duration::from_secs(10),
        on_workers: false,
    }
}

struct Server {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// Notified whenever a request to `/slow` starts.
    slow_started: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Server {
    /// Serves `GET /` with `hello <client ip>` (the per-connection hook's
    /// address) and `GET /slow` after `slow` on `config`.
    async fn start(config: ServeConfig, slow: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let slow_started = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let started = slow_started.clone();
        let service_for = move |peer: SocketAddr| {
            let started = started.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let started = started.clone();
                async move {
                    if req.uri().path() == "/slow" {
                        started.notify_one();
                        tokio::time::sleep(slow).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("hello {}", peer.ip())))))
                }
            })
        };
        let metrics: Arc<dyn ConnectionMetrics> = counts.clone();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let http = hyper::server::conn::http1::Builder::new();
        let task = tokio::spawn(serve(listener, config, http, service_for, metrics, shutdown));
        Server { addr, counts, slow_started, stop: Some(stop), task }
    }

    fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

/// Waits up to 10 s for `check`, polling.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until the server closes the connection (10 s at most).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset also closes the connection.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection was not closed: {other:?}"),
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// One `GET path` on a new connection with `Connection: close`; the whole answer.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    read_until_closed(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_a_connection_gets_the_503_naming_the_limit_and_is_closed() {
    let mut server = Server::start(ServeConfig { max_connections: 1, retry_after_secs: Some(1), ..config() }, Duration::ZERO).await;
    let held = TcpStream::connect(server.addr).await.unwrap();
    let counts = server.counts.clone();
    eventually("the first connection to be accepted", || counts.opened.load(Ordering::SeqCst) == 1).await;

    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    let body = r#"{"error":"too many connections; the limit test.max_connections is 1"}"#;
    let expected = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(answer, expected);
    assert_eq!(rejection("test.max_connections", 1, Some(1)), expected);
    assert_eq!(counts.rejected.load(Ordering::SeqCst), 1);
    // Without Retry-After (the node's answer): no such header.
    assert!(!rejection("node.max_connections", 1024, None).contains("retry-after"));

    // Closing the held connection frees its place.
    drop(held);
    eventually("the held connection to close", || counts.closed.load(Ordering::SeqCst) == 1).await;
    let answer = get(server.addr, "/").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("hello 127.0.0.1"), "{answer}");
    assert_eq!(counts.rejected.load(Ordering::SeqCst), 1);

    server.stop();
    assert_eq!(server.task.await.unwrap(), Drained::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_header_read_timeout_and_blocks_nobody() {
    let timeout = Duration::from_millis(300);
    let mut server = Server::start(ServeConfig { header_read_timeout: timeout, ..config() }, Duration::ZERO).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
    // Others are served meanwhile.
    let answer = get(server.addr, "/").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    let answer = read_until_closed(&mut silent).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let answer = read_until_closed(&mut half).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(start.elapsed() >= timeout, "closed after {:?}", start.elapsed());
    let counts = server.counts.clone();
    eventually("three closed connections", || counts.closed.load(Ordering::SeqCst) == 3).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 3);

    server.stop();
    assert_eq!(server.task.await.unwrap(), Drained::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_an_in_flight_request_and_refuses_new_connections() {
    let mut server = Server::start(config(), Duration::from_millis(300)).await;
    let addr = server.addr;
    let started = server.slow_started.clone();
    let request = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the slow request started");
    server.stop();
    // The listener closes at once ...
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... while the request in flight gets its answer.
    let answer = request.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("hello 127.0.0.1"), "{answer}");
    let drained = tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("serve returns").unwrap();
    assert_eq!(drained, Drained::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_at_its_deadline() {
    let drain = Duration::from_millis(300);
    let mut server = Server::start(ServeConfig { drain_timeout: drain, ..config() }, Duration::from_secs(3600)).await;
    let addr = server.addr;
    let started = server.slow_started.clone();
    let _request = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the slow request started");
    let stopping = Instant::now();
    server.stop();
    let drained = tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("serve returns").unwrap();
    assert_eq!(drained, Drained::TimedOut);
    assert!(stopping.elapsed() >= drain, "returned after {:?}", stopping.elapsed());
}

/// A CA and a leaf it signed for `127.0.0.1` and `localhost`, as PEM files.
struct TestCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn test_ca(dir: &Path, name: &str) -> TestCa {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let out = TestCa {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&out.ca, ca.pem()).unwrap();
    std::fs::write(&out.cert, leaf.pem()).unwrap();
    std::fs::write(&out.key, leaf_key.serialize_pem()).unwrap();
    out
}

fn acceptor(ca: &TestCa) -> TlsAcceptor {
    shardgate_tls::acceptor(&ca.cert, &ca.key, "test.tls").unwrap()
}

/// The reqwest error and its causes on one line.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_client_blocks_nobody_and_shutdown_abandons_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), "a");
    // A handshake deadline far beyond the client's: a loop that ran the
    // silent client's handshake inline would make the requests time out.
    let config = ServeConfig { tls: Some(acceptor(&ca)), header_read_timeout: Duration::from_secs(60), ..config() };
    let mut server = Server::start(config, Duration::ZERO).await;
    let addr = server.addr;
    // Connects and never sends a ClientHello.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let client = shardgate_tls::http_client(Some(&ca.ca)).unwrap().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    for url in [format!("https://{addr}/"), format!("https://localhost:{}/", addr.port())] {
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "hello 127.0.0.1", "{url}");
    }
    drop(client);

    server.stop();
    let drained = tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("serve returns").unwrap();
    assert_eq!(drained, Drained::Finished);
    // The pending handshake was abandoned (long before its 60 s deadline)
    // and the port is closed.
    let answer = read_until_closed(&mut silent).await;
    assert_eq!(answer, "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listening socket is still open after the server stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = server.counts.clone();
    eventually("every connection to be counted closed", || counts.closed.load(Ordering::SeqCst) == counts.opened.load(Ordering::SeqCst))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_handshake_deadline_closes_silent_clients_and_bad_clients_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), "b");
    let other = test_ca(dir.path(), "other");
    let deadline = Duration::from_millis(500);
    let config = ServeConfig { tls: Some(acceptor(&ca)), header_read_timeout: deadline, ..config() };
    let mut server = Server::start(config, Duration::ZERO).await;
    let addr = server.addr;
    let timeout = Duration::from_secs(10);
    // A client that never starts the handshake is closed after the deadline.
    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    assert!(start.elapsed() >= deadline, "closed after {:?}", start.elapsed());

    let plain = shardgate_tls::http_client_system_roots().no_proxy().timeout(timeout).build().unwrap();
    let e = plain.get(format!("http://{addr}/")).send().await.expect_err("plain HTTP to a TLS port");
    assert!(!e.is_timeout(), "{}", chain(&e));

    for (what, client) in [
        ("another CA", shardgate_tls::http_client(Some(&other.ca)).unwrap()),
        ("the system roots", shardgate_tls::http_client_system_roots()),
    ] {
        let e = client.no_proxy().timeout(timeout).build().unwrap().get(format!("https://{addr}/")).send().await.expect_err(what);
        let text = chain(&e);
        assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{what}: {text}");
    }

    let trusting = shardgate_tls::http_client(Some(&ca.ca)).unwrap().no_proxy().timeout(timeout).build().unwrap();
    let body = trusting.get(format!("https://{addr}/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "hello 127.0.0.1");
    drop(trusting);
    server.stop();
    let drained = tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("serve returns").unwrap();
    assert_eq!(drained, Drained::Finished);
}
