//! [`shardgate_tls::TlsListener`] under `axum::serve` with real sockets and
//! certificates from an rcgen CA: reqwest clients built by this crate talk
//! HTTPS to it; a client that never sends a ClientHello blocks nobody and is
//! closed after the handshake timeout; plain HTTP and untrusting clients get
//! errors (not panics) while the server keeps serving; dropping the
//! listener closes the port and abandons pending handshakes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shardgate_tls::TlsListener;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

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
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let out = TestCa { ca: dir.join(format!("{name}-ca.pem")), cert: dir.join(format!("{name}-cert.pem")), key: dir.join(format!("{name}-key.pem")) };
    std::fs::write(&out.ca, ca.pem()).unwrap();
    std::fs::write(&out.cert, leaf.pem()).unwrap();
    std::fs::write(&out.key, leaf_key.serialize_pem()).unwrap();
    out
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

async fn serve(ca: &TestCa, handshake_timeout: Duration) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let acceptor = shardgate_tls::acceptor(&ca.cert, &ca.key, "test.tls").unwrap();
    let listener = TlsListener::new(tcp, acceptor, handshake_timeout).unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello over tls" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (format!("127.0.0.1:{port}"), stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_blocks_nobody_and_dropping_the_listener_closes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), "a");
    // A handshake timeout far beyond the client's: a listener that ran the
    // silent client's handshake inline would make the requests time out.
    let (addr, stop, task) = serve(&ca, Duration::from_secs(60)).await;
    // Connects and never sends a ClientHello.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let client = shardgate_tls::http_client(Some(&ca.ca)).unwrap().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    for url in [format!("https://{addr}/"), format!("https://localhost:{}/", addr.rsplit(':').next().unwrap())] {
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "hello over tls", "{url}");
    }
    drop(client);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops").unwrap();
    // The listener was dropped with the server: the pending handshake is
    // abandoned (long before its 60 s timeout) and the port is closed.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut raw)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listening socket is still open after the server stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_plain_http_and_untrusting_clients_fail_cleanly_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), "b");
    let other = test_ca(dir.path(), "other");
    let (addr, stop, task) = serve(&ca, Duration::from_millis(500)).await;
    let timeout = Duration::from_secs(10);
    // A client that never starts the handshake is closed after the timeout.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut raw)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");

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
    assert_eq!(body, "hello over tls");
    let _ = stop.send(());
    task.await.unwrap();
}
