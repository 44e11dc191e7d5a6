//! `proxy.tls`: the client listener speaks TLS (rustls with the ring
//! provider) with a certificate generated here by rcgen. A tokio-rustls
//! client plus a hyper HTTP/1.1 connection writes and reads keys through a
//! real cluster (1 meta member, 1 node); plain HTTP and silent clients on
//! the TLS port are closed cleanly and do not disturb TLS clients.

mod cluster;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cluster::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use shardgate_proxy::{ProxyConfig, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn tls_connector(cert: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect_tls(connector: &TlsConnector, addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(send)
}

async fn send(c: &mut SendRequest<Full<Bytes>>, method: Method, path: &str, body: &'static str) -> Result<Answer, String> {
    c.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::builder().method(method).uri(path).header("host", "localhost").body(Full::new(Bytes::from(body))).unwrap();
    let response = c.send_request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { status: parts.status, headers: parts.headers, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_written_and_read_over_tls_and_plain_http_is_refused_cleanly() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();

    // No proxy at first: activation waits for proxies over plain HTTP.
    let mut cluster = LocalCluster::start(ClusterSpec::new(1, 1, 0, dir.path())).await.unwrap();
    cluster.register_nodes().await.unwrap();
    activate(&cluster, "rendezvous", "", 1).await;
    let config = ProxyConfig {
        tls: Some(TlsConfig { cert: cert_path, key: key_path }),
        header_read_timeout: Duration::from_millis(500),
        ..ProxyConfig::default()
    };
    let p = cluster.start_proxy_with(config).await.unwrap();
    let addr = cluster.proxies[p].addr.trim_start_matches("http://").to_string();
    let connector = tls_connector(generated.cert.der());
    poll("the proxy is ready over tls", Duration::from_secs(30), || {
        let (connector, addr) = (connector.clone(), addr.clone());
        async move {
            let mut c = connect_tls(&connector, &addr).await.ok()?;
            send(&mut c, Method::GET, "/readyz", "").await.ok().filter(|a| a.status == StatusCode::OK)
        }
    })
    .await;
    let mut c = connect_tls(&connector, &addr).await.unwrap();

    let put = send(&mut c, Method::PUT, "/v1/keys/tls-key", "over tls").await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    let got = send(&mut c, Method::GET, "/v1/keys/tls-key", "").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "over tls".to_string()));

    // Plain HTTP on the TLS port: the connection is closed without an HTTP answer.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw)).await.expect("plain connection closed");
    assert!(!raw.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&raw));
    // A client that never starts the handshake is closed after proxy.header_read_timeout.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut raw)).await.expect("silent connection closed");
    assert!(raw.is_empty());
    // TLS clients are unaffected (a new connection: the 500ms
    // proxy.header_read_timeout also closes idle keep-alive connections).
    let mut fresh = connect_tls(&connector, &addr).await.unwrap();
    let got = send(&mut fresh, Method::GET, "/v1/keys/tls-key", "").await.unwrap();
    assert_eq!((got.status, got.text()), (StatusCode::OK, "over tls".to_string()));
    // A client that does not trust the certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    assert!(connect_tls(&tls_connector(other.cert.der()), &addr).await.is_err());
    cluster.shutdown().await;
}
