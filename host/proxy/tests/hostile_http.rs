//! Hostile HTTP for the proxy: the same property tests as the node's
//! (`host/node/tests/hostile_http.rs`), against an in-process cluster (one
//! meta member, three nodes, one proxy; rendezvous with two replicas) from
//! `shardgate_testkit::cluster`, all on pre-bound 127.0.0.1:0 listeners:
//! random bytes, mangled request lines and header sets, random
//! percent-encoded keys and values over raw TCP and an HTTP client, and
//! damaged batch bodies for `/v1/batch/get` and `/v1/batch/put`.
//!
//! Where it sits: the proxy is the cluster's front door, so it must refuse
//! exactly what a node refuses, with the same statuses and messages (it
//! reuses the node's key, TTL, ETag and batch modules), before anything is
//! forwarded. Every request gets a 4xx/5xx (JSON `{"error": ...}` when the
//! proxy answers itself), a correct 2xx, or a closed connection; the proxy
//! keeps serving; and a canary key written before the storm reads back
//! identical through the proxy and on both of its owner nodes after every
//! case.
//!
//! Case counts are small so `cargo test` stays quick; raise them with
//! `PROPTEST_CASES=2000 cargo test -p shardgate-proxy --test hostile_http`
//! (and vary the inputs with `PROPTEST_RNG_SEED`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, RngSeed};
use shardgate_api::batch::{self, BatchError, GetResult, PutItem, PutResult};
use shardgate_api::etag::{WriteCondition, format_etag};
use shardgate_api::key::{encode_key_segment, key_path};
use shardgate_api::Limits;
use shardgate_node::NodeConfig;
use shardgate_proxy::ProxyConfig;
use shardgate_testkit::{ClusterSpec, LocalCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// `default` cases from a fixed seed, so every run (and CI) tests the same
/// inputs; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further.
fn cases(default: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    let set = |var: &str| std::env::var_os(var).is_some();
    ProptestConfig {
        cases: if set("PROPTEST_CASES") { base.cases } else { default },
        rng_seed: if set("PROPTEST_RNG_SEED") { base.rng_seed } else { RngSeed::Fixed(0x5eed_0007) },
        // No regression files in the source tree; failures print their input.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..base
    }
}

const DEADLINE: Duration = Duration::from_secs(10);
const CANARY_KEY: &[u8] = b"\xffcanary\x00key";
const CANARY_TYPE: &str = "application/x-canary";

/// Small limits, so random input reaches them; the nodes behind the proxy
/// get the same ones.
fn node_config() -> NodeConfig {
    NodeConfig {
        memory_limit: ByteSize::mib(64),
        max_key_size: ByteSize::b(256),
        max_value_size: ByteSize::kib(64),
        max_batch_keys: 64,
        max_batch_size: ByteSize::kib(256),
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

fn proxy_config() -> ProxyConfig {
    let node = node_config();
    ProxyConfig {
        max_key_size: node.max_key_size,
        max_value_size: node.max_value_size,
        max_ttl: node.max_ttl,
        max_batch_keys: node.max_batch_keys,
        max_batch_size: node.max_batch_size,
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(2),
        ..ProxyConfig::default()
    }
}

fn limits() -> Limits {
    proxy_config().limits()
}

fn config() -> ProxyConfig {
    proxy_config()
}

/// One cluster for the whole file (the proptest cases of every test run
/// against it, in parallel), its runtime, a client, and the canary.
struct Harness {
    runtime: Runtime,
    addr: SocketAddr,
    cluster: LocalCluster,
    client: Client<HttpConnector, Full<Bytes>>,
    canary_value: Vec<u8>,
    canary_etag: String,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Under the target directory, one per process; statics are never
        // dropped, so directories of processes that have exited are removed
        // here instead.
        let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("proxy-hostile-http-")
                && !std::path::Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("proxy-hostile-http-{}", std::process::id()));
        let (cluster, addr, client, canary_value, canary_etag) = runtime.block_on(async {
            let mut spec = ClusterSpec::new(1, 3, 1, &dir);
            spec.node = node_config();
            spec.proxy = proxy_config();
            spec.meta.admission_sample_keys = 50;
            let cluster = LocalCluster::start(spec).await.expect("cluster starts");
            cluster.register_nodes().await.expect("nodes registered");
            let receipt = cluster.activate_builtin("rendezvous", "", 2).await.expect("rendezvous active");
            cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.expect("the proxy routes");
            let addr: SocketAddr = cluster.proxies[0].addr.trim_start_matches("http://").parse().unwrap();
            // A new connection per request: idle keep-alive connections are
            // closed after `header_read_timeout`, and a pooled connection
            // racing that close is a client problem, not input.
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
            let canary_value: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
            let req = Request::put(format!("http://{addr}{}", key_path(CANARY_KEY)))
                .header(header::CONTENT_TYPE, CANARY_TYPE)
                .body(Full::new(Bytes::from(canary_value.clone())))
                .unwrap();
            let resp = client.request(req).await.expect("the proxy is up");
            assert_eq!(resp.status(), StatusCode::CREATED);
            let etag = resp.headers()[header::ETAG].to_str().unwrap().to_string();
            (cluster, addr, client, canary_value, etag)
        });
        Harness { runtime, addr, cluster, client, canary_value, canary_etag }
    })
}

/// A unique prefix per case, so keys of different cases never collide.
fn unique() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("c{}-", N.fetch_add(1, Ordering::Relaxed)).into_bytes()
}

struct Reply {
    status: StatusCode,
    content_type: String,
    etag: String,
    body: Bytes,
}

async fn request(method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let h = harness();
    let mut req = Request::builder().method(method).uri(format!("http://{}{path}", h.addr));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = tokio::time::timeout(DEADLINE, h.client.request(req.body(Full::new(body.into())).unwrap()))
        .await
        .expect("the proxy answers in time")
        .expect("the proxy answers");
    let (parts, body) = resp.into_parts();
    let text = |name| parts.headers.get(name).map(|v: &http::HeaderValue| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    Reply {
        status: parts.status,
        content_type: text(header::CONTENT_TYPE),
        etag: text(header::ETAG),
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The node still serves, and the canary is exactly what was written.
async fn assert_canary_intact() {
    let h = harness();
    let r = request(Method::GET, &key_path(CANARY_KEY), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "canary: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], &h.canary_value[..], "the canary's value changed");
    assert_eq!(r.content_type, CANARY_TYPE, "the canary's content type changed");
    assert_eq!(r.etag, h.canary_etag, "the canary's version changed");
    let r = request(Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    // On the nodes themselves: both owners hold it, unchanged.
    let mut held = 0;
    for node in &h.cluster.nodes {
        let url = format!("{}{}", node.addr, key_path(CANARY_KEY));
        let resp = tokio::time::timeout(DEADLINE, h.client.request(Request::get(url).body(Full::new(Bytes::new())).unwrap()))
            .await
            .expect("the node answers in time")
            .expect("the node answers");
        if resp.status() == StatusCode::OK {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], &h.canary_value[..], "the canary's value changed on {}", node.id);
            held += 1;
        }
    }
    assert_eq!(held, 2, "the canary is no longer on both of its owners");
}

/// An error answer of the node itself: JSON `{"error": "<non-empty>"}`.
fn assert_json_error(status: StatusCode, content_type: &str, body: &[u8], input: &str) {
    assert!(content_type.starts_with("application/json"), "{input}: {status} with content type {content_type:?}");
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{input}: {status} body is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    let message = v["error"].as_str().unwrap_or_else(|| panic!("{input}: no \"error\" string in {v}"));
    assert!(!message.trim().is_empty() && !message.contains('\n'), "{input}: error {message:?}");
}

/// The first response on a raw connection, parsed just enough.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends `bytes`, half-closes, and reads until the server closes. `None`
/// when the server closed without answering.
async fn raw_exchange(bytes: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(harness().addr).await.unwrap();
    // The server may answer and close before reading everything: a reset
    // while writing is fine, the answer is what counts.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the proxy neither answered nor closed within {DEADLINE:?} for {:?}", clip(bytes));
    if out.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out);
    let head_end = text.find("\r\n\r\n").unwrap_or_else(|| panic!("incomplete response head: {text:?}"));
    let mut lines = text[..head_end].split("\r\n");
    let status_line = lines.next().unwrap();
    // An HTTP/1.0 request gets an HTTP/1.0 answer.
    assert!(
        status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "),
        "not an HTTP/1 status line: {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap_or_else(|_| panic!("bad status line {status_line:?}"));
    let mut content_type = String::new();
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_string(),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let body_start = head_end + 4;
    let body = out[body_start.min(out.len())..].to_vec();
    let body = match length {
        Some(n) => body[..n.min(body.len())].to_vec(),
        None => body,
    };
    Some(RawResponse { status, content_type, body })
}

fn clip(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned()
}

/// The reply to a request the node must refuse (or hang up on).
fn assert_refused(reply: &Option<RawResponse>, input: &[u8]) {
    let Some(r) = reply else { return };
    assert!((400..600).contains(&r.status), "{:?} got {}", clip(input), r.status);
    assert_ne!(r.status, 500, "internal error for {:?}: {:?}", clip(input), String::from_utf8_lossy(&r.body));
    if !r.content_type.is_empty() && !input.starts_with(b"HEAD ") {
        assert_json_error(StatusCode::from_u16(r.status).unwrap(), &r.content_type, &r.body, &clip(input));
    }
}

/// The reply to a request that may be valid: any status but a 500, and
/// every error the node writes itself is JSON.
fn assert_answered_sanely(reply: &Option<RawResponse>, input: &[u8]) {
    let Some(r) = reply else { return };
    assert!((100..600).contains(&r.status), "{:?} got {}", clip(input), r.status);
    assert_ne!(r.status, 500, "internal error for {:?}: {:?}", clip(input), String::from_utf8_lossy(&r.body));
    // Answers to HEAD carry the headers of the error but no body.
    if r.status >= 400 && !r.content_type.is_empty() && !input.starts_with(b"HEAD ") {
        assert_json_error(StatusCode::from_u16(r.status).unwrap(), &r.content_type, &r.body, &clip(input));
    }
}

// --- raw bytes and mangled requests -------------------------------------------

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(&["GET", "PUT", "POST", "DELETE", "HEAD"][..]).prop_map(|m| m.as_bytes().to_vec()),
        1 => prop::sample::select(&["PATCH", "OPTIONS", "CONNECT", "TRACE", "get", "G ET", "", "PUT\0"][..])
            .prop_map(|m| m.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let segment = "[a-zA-Z0-9%/?#&=.~ _+-]{0,40}";
    prop_oneof![
        4 => segment.prop_map(|s| format!("/v1/keys/{s}").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| [&b"/v1/keys/"[..], &b].concat()),
        2 => prop::sample::select(
            &[
                "/v1/batch/get", "/v1/batch/put", "/v1/keys/", "/v1/keys", "/healthz", "/readyz", "/metrics", "*", "",
                "//", "/v1/keys/../../etc/passwd", "http://127.0.0.1/v1/keys/x", "/v1/keys/x?ttl=-1", "/v1/keys/%",
                "/v1/keys/%zz%", "/v1/keys/x#frag",
            ][..],
        )
        .prop_map(|t| t.as_bytes().to_vec()),
        1 => "[ -~]{0,60}".prop_map(String::into_bytes),
        1 => "/v1/keys/[a-z]{1,8}\\?[a-z=&0-9%-]{0,30}".prop_map(String::into_bytes),
        1 => (1..20_000usize).prop_map(|n| format!("/v1/keys/{}", "k".repeat(n)).into_bytes()),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        1 => prop::sample::select(&["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "http/1.1", "HTTP/1.", "", "HTTP/1.1 HTTP/1.1"][..])
            .prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn header_line() -> impl Strategy<Value = Vec<u8>> {
    let pair = |name: &'static str, values: &'static [&'static str]| {
        prop::sample::select(values).prop_map(move |v| format!("{name}: {v}").into_bytes())
    };
    prop_oneof![
        pair("Content-Length", &["0", "5", "-1", "18446744073709551616", "5, 6", " 7 ", "0x10", "", "99999999", "65537"]),
        pair("Transfer-Encoding", &["chunked", "gzip", "chunked, gzip", "identity", "", "chunked\0"]),
        pair("Host", &["127.0.0.1", "", "a b", "x:99999"]),
        pair("If-Match", &["*", "\"1\"", "W/\"1\"", "\"abc\"", "\"1\", \"2\"", "", "\"18446744073709551616\"", "\"", ","]),
        pair("If-None-Match", &["*", "\"1\"", "", "garbage"]),
        pair("Content-Type", &["text/plain", "", "a\u{7f}b", "application/json; charset=utf-8"]),
        pair("Expect", &["100-continue", "nonsense"]),
        pair("Connection", &["close", "keep-alive", "upgrade", ""]),
        pair("Upgrade", &["h2c", "websocket"]),
        (1..400usize).prop_map(|n| format!("Content-Type: {}", "t".repeat(n)).into_bytes()),
        "[!-9;-~]{1,20}: [ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
        (1..20_000usize).prop_map(|n| format!("X-Big: {}", "v".repeat(n)).into_bytes()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(vec![]),
        3 => proptest::collection::vec(any::<u8>(), 0..600),
        1 => Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        1 => Just(b"zz\r\nhello\r\n".to_vec()),
        1 => Just(b"ffffffffffffffffff\r\nx\r\n".to_vec()),
        1 => Just(b"GET /v1/keys/x HTTP/1.1\r\n\r\n".to_vec()),
    ]
}

/// A request assembled from (possibly broken) parts.
fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
    (method(), target(), version(), proptest::collection::vec(header_line(), 0..6), body(), any::<bool>()).prop_map(
        |(m, t, v, headers, body, bare_lf)| {
            let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
            let mut out = [&m[..], b" ", &t, b" ", &v, eol].concat();
            for h in headers {
                out.extend_from_slice(&h);
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(eol);
            out.extend_from_slice(&body);
            out
        },
    )
}

proptest! {
    #![proptest_config(cases(128))]

    /// Random bytes on a fresh connection: refused or hung up on.
    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 1..2048)) {
        harness().runtime.block_on(async {
            let reply = raw_exchange(&bytes).await;
            assert_refused(&reply, &bytes);
            assert_canary_intact().await;
        });
    }

    /// Mangled request lines, random header sets and bodies: a sane answer
    /// (never a 500, JSON for the node's own errors) or a hang-up.
    #[test]
    fn mangled_requests_get_sane_answers(request in mangled_request()) {
        harness().runtime.block_on(async {
            let reply = raw_exchange(&request).await;
            assert_answered_sanely(&reply, &request);
            assert_canary_intact().await;
        });
    }
}

// --- keys and values -------------------------------------------------------------

/// How a key is written into the URL.
#[derive(Debug, Clone)]
enum Encoding {
    /// `encode_key_segment`: everything but unreserved characters.
    Canonical,
    /// Every byte as `%xx` with lowercase hex.
    AllLowercase,
    /// Canonical, with stray `%` sequences that are not escapes (taken
    /// literally by the node) inserted at these positions.
    Stray(Vec<(prop::sample::Index, &'static str)>),
}

fn encode(key: &[u8], how: &Encoding) -> String {
    match how {
        Encoding::Canonical => encode_key_segment(key),
        Encoding::AllLowercase => key.iter().map(|b| format!("%{b:02x}")).collect(),
        Encoding::Stray(inserts) => {
            let mut parts: Vec<String> = key.iter().map(|b| encode_key_segment(&[*b])).collect();
            for (at, stray) in inserts {
                let i = at.index(parts.len() + 1);
                parts.insert(i, stray.to_string());
            }
            parts.concat()
        }
    }
}

/// `%xx` escapes decoded, anything else (stray `%` too) taken literally,
/// as the node's `decode_key_segment` does.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A `?ttl=` query and whether the node must accept it.
fn ttl_query() -> impl Strategy<Value = (String, bool)> {
    let max = config().max_ttl.as_secs();
    prop_oneof![
        3 => Just((String::new(), true)),
        2 => (1..=max).prop_map(|s| (format!("?ttl={s}"), true)),
        1 => Just((format!("?ttl={}", max + 1), false)),
        1 => prop::sample::select(
            &["?ttl=0", "?ttl=", "?ttl=-5", "?ttl=abc", "?ttl=1.5", "?ttl=5&ttl=5", "?tll=5", "?ttl=99999999999999999999999", "?ttl=%35"][..],
        )
        .prop_map(|q| (q.to_string(), false)),
    ]
}

proptest! {
    #![proptest_config(cases(128))]

    /// PUT under a randomly encoded key: stored exactly under the decoded
    /// key (readable by its canonical URL and the URL it was written with)
    /// when key, value and TTL are within the limits; otherwise a JSON 4xx
    /// naming the problem and nothing stored.
    #[test]
    fn percent_encoded_keys_and_values_round_trip_or_are_refused(
        key in proptest::collection::vec(any::<u8>(), 0..300),
        how in prop_oneof![
            Just(Encoding::Canonical),
            Just(Encoding::AllLowercase),
            proptest::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(&["%", "%%", "%G1", "%2", "%zz", "%%41"][..])),
                1..4,
            )
            .prop_map(Encoding::Stray),
        ],
        value in prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..2048),
            1 => (65530..65540usize).prop_map(|n| vec![b'v'; n]),
        ],
        (query, ttl_ok) in ttl_query(),
        content_type in prop_oneof![Just(None), Just(Some("text/plain")), Just(Some("application/octet-stream; x=1"))],
    ) {
        let key = [unique(), key].concat();
        let segment = encode(&key, &how);
        // What the node must decode: `%xx` escapes, anything else literally.
        let decoded = percent_decode(segment.as_bytes());
        let l = limits();
        let input = format!("PUT /v1/keys/{segment}{query} ({} value bytes)", value.len());
        harness().runtime.block_on(async {
            let path = format!("/v1/keys/{segment}{query}");
            let headers: Vec<(&str, &str)> = content_type.iter().map(|ct| ("content-type", *ct)).collect();
            let r = request(Method::PUT, &path, &headers, value.clone()).await;
            let fits = decoded.len() <= l.max_key_size && value.len() <= l.max_value_size;
            if fits && ttl_ok {
                assert_eq!(r.status, StatusCode::CREATED, "{input}: {}", String::from_utf8_lossy(&r.body));
                for url in [key_path(&decoded), format!("/v1/keys/{segment}")] {
                    let got = request(Method::GET, &url, &[], Bytes::new()).await;
                    assert_eq!(got.status, StatusCode::OK, "{input}: GET {url}");
                    assert_eq!(&got.body[..], &value[..], "{input}: GET {url} returned another value");
                    assert_eq!(got.etag, r.etag, "{input}: GET {url}");
                    assert_eq!(got.content_type, content_type.unwrap_or("application/octet-stream"), "{input}");
                }
            } else {
                assert!(r.status.is_client_error(), "{input}: {} {}", r.status, String::from_utf8_lossy(&r.body));
                assert_json_error(r.status, &r.content_type, &r.body, &input);
                // Checked in the node's order: the key, then the query, then the value.
                let text = String::from_utf8_lossy(&r.body);
                if decoded.len() > l.max_key_size {
                    assert_eq!(r.status, StatusCode::URI_TOO_LONG, "{input}");
                    assert!(text.contains("proxy.max_key_size"), "{input}: {text}");
                } else if !ttl_ok {
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{input}: {text}");
                    assert!(text.contains("ttl"), "{input}: {text}");
                } else {
                    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{input}");
                    assert!(text.contains("proxy.max_value_size"), "{input}: {text}");
                }
                if decoded.len() <= l.max_key_size {
                    let got = request(Method::GET, &key_path(&decoded), &[], Bytes::new()).await;
                    assert_eq!(got.status, StatusCode::NOT_FOUND, "{input}: a refused write stored something");
                }
            }
            assert_canary_intact().await;
        });
    }

    /// Random conditional headers on writes and reads of an existing key:
    /// the value changes only on a 2xx write, and every refusal is JSON.
    #[test]
    fn random_conditional_headers_change_only_what_they_allow(
        headers in proptest::collection::vec(
            (
                prop::sample::select(&["if-match", "if-none-match", "content-type", "x-any"][..]),
                prop_oneof![
                    prop::sample::select(&["*", "\"1\"", "W/\"1\"", "\"0\"", "\"1\", \"2\"", "", "\"", "\"18446744073709551616\"", "garbage", "*, \"1\""][..])
                        .prop_map(String::from),
                    "[ -~]{0,30}",
                ],
            ),
            0..4,
        ),
        method in prop::sample::select(&[Method::GET, Method::HEAD, Method::PUT, Method::DELETE][..]),
    ) {
        harness().runtime.block_on(async {
            let key = [unique(), b"cond".to_vec()].concat();
            let first = request(Method::PUT, &key_path(&key), &[], "first").await;
            assert_eq!(first.status, StatusCode::CREATED);
            let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            // http rejects some header values client-side (e.g. a bare `"`
            // is fine, control characters are not): those never reach the node.
            let mut builder = Request::builder().method(method.clone()).uri("http://x/");
            for (n, v) in &hs {
                builder = builder.header(*n, *v);
            }
            prop_assume!(builder.body(()).is_ok());
            let r = request(method.clone(), &key_path(&key), &hs, "second").await;
            let input = format!("{method} with {hs:?}");
            prop_assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", input);
            if r.status.is_client_error() && method != Method::HEAD {
                assert_json_error(r.status, &r.content_type, &r.body, &input);
            }
            let now = request(Method::GET, &key_path(&key), &[], Bytes::new()).await;
            match (method.as_str(), r.status.is_success()) {
                ("PUT", true) => prop_assert_eq!(&now.body[..], b"second", "{}", input),
                ("DELETE", true) => prop_assert_eq!(now.status, StatusCode::NOT_FOUND, "{}", input),
                _ => {
                    prop_assert_eq!(now.status, StatusCode::OK, "{}: {}", input, r.status);
                    prop_assert_eq!(&now.body[..], b"first", "{}: the value changed", input);
                    prop_assert_eq!(&now.etag, &first.etag, "{}: the version changed", input);
                }
            }
            assert_canary_intact().await;
            Ok(())
        })?;
    }
}

// --- batches ---------------------------------------------------------------------

fn put_item() -> impl Strategy<Value = PutItem> {
    let condition = prop_oneof![
        4 => Just(WriteCondition::Always),
        1 => Just(WriteCondition::IfAbsent),
        1 => Just(WriteCondition::IfPresent),
        1 => proptest::collection::vec(any::<u64>(), 0..3).prop_map(WriteCondition::IfVersionIn),
    ];
    let ttl = prop_oneof![3 => Just(None), 1 => (1..100_000u32).prop_map(Some), 1 => Just(Some(u32::MAX))];
    (
        proptest::collection::vec(any::<u8>(), 0..20),
        condition,
        ttl,
        prop_oneof![Just(Bytes::new()), Just(Bytes::from_static(b"text/plain")), Just(Bytes::from_static(b"bad\x01type"))],
        prop_oneof![4 => proptest::collection::vec(any::<u8>(), 0..200), 1 => Just(vec![b'v'; 65537])],
    )
        .prop_map(|(key, condition, ttl_seconds, content_type, value)| PutItem {
            key: Bytes::from(key),
            condition,
            ttl_seconds,
            content_type,
            value: Bytes::from(value),
        })
}

/// How to damage an encoded batch.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Append(Vec<u8>),
    Count(u32),
    Header(u8, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        2 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        2 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
        1 => prop_oneof![Just(0u32), Just(1), Just(65), Just(u32::MAX), any::<u32>()].prop_map(Damage::Count),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(v, k)| Damage::Header(v, k)),
    ]
}

fn apply(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        Damage::Count(c) => bytes[2..6].copy_from_slice(&c.to_be_bytes()),
        Damage::Header(v, k) => {
            bytes[0] = *v;
            bytes[1] = *k;
        }
    }
    bytes
}

/// A batch POST through the client.
async fn post_batch(path: &str, body: Vec<u8>) -> Reply {
    request(Method::POST, path, &[("content-type", batch::CONTENT_TYPE)], body).await
}

/// What the node must answer for a refused batch: the status and message
/// its own decoder gives for these bytes.
fn assert_batch_refused(r: &Reply, expected: &BatchError, input: &str) {
    assert_eq!(r.status, expected.status(), "{input}: {}", String::from_utf8_lossy(&r.body));
    assert_json_error(r.status, &r.content_type, &r.body, input);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"].as_str().unwrap(), expected.to_string(), "{input}");
}

proptest! {
    #![proptest_config(cases(96))]

    /// Random and damaged put batches: the node answers exactly what the
    /// batch codec says about the bytes. A refused batch stores none of
    /// its keys; an accepted one stores exactly its entries.
    #[test]
    fn random_put_batches_are_all_or_nothing(
        items in proptest::collection::vec(put_item(), 0..8),
        damage in damage(),
        raw in prop_oneof![9 => Just(None), 1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some)],
    ) {
        // Fresh keys on every run (shrinking re-runs a case).
        let prefix = unique();
        let mut items = items;
        for item in &mut items {
            item.key = Bytes::from([&prefix[..], &item.key].concat());
        }
        let encoded = batch::encode_put_request(&items).unwrap().to_vec();
        let body = match &raw { Some(r) => r.clone(), None => apply(encoded, &damage) };
        let input = format!("{} put entries, {damage:?}, {} body bytes", items.len(), body.len());
        let l = limits();
        harness().runtime.block_on(async {
            let r = post_batch("/v1/batch/put", body.clone()).await;
            let decoded = batch::decode_put_request(Bytes::from(body.clone()), &l);
            let invalid_type = decoded.as_ref().ok().and_then(|d| d.iter().position(|i| !i.content_type.is_empty() && http::HeaderValue::from_bytes(&i.content_type).is_err()));
            match (&decoded, invalid_type) {
                (Err(e), _) => assert_batch_refused(&r, e, &input),
                (Ok(_), Some(index)) => {
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{input}");
                    assert_json_error(r.status, &r.content_type, &r.body, &input);
                    assert!(String::from_utf8_lossy(&r.body).contains(&format!("batch entry {index}")), "{input}");
                }
                (Ok(entries), None) => {
                    assert_eq!(r.status, StatusCode::OK, "{input}: {}", String::from_utf8_lossy(&r.body));
                    let results = batch::decode_put_response(r.body.clone(), &l).unwrap();
                    assert_eq!(results.len(), entries.len(), "{input}");
                    // Later entries for the same key overwrite earlier ones.
                    for (i, (entry, result)) in entries.iter().zip(&results).enumerate() {
                        let later = entries[i + 1..].iter().any(|e| e.key == entry.key);
                        if let (PutResult::Created { version } | PutResult::Replaced { version }, false) = (result, later) {
                            let got = request(Method::GET, &key_path(&entry.key), &[], Bytes::new()).await;
                            assert_eq!(&got.body[..], &entry.value[..], "{input}: entry {i}");
                            assert_eq!(got.etag, format_etag(*version).to_str().unwrap(), "{input}: entry {i}");
                        }
                    }
                }
            }
            if r.status != StatusCode::OK {
                // All or nothing: none of the entries' keys was written.
                let keys: Vec<Bytes> = items.iter().map(|i| i.key.clone()).filter(|k| !k.is_empty() && k.len() <= l.max_key_size).collect();
                for key in keys {
                    let got = request(Method::GET, &key_path(&key), &[], Bytes::new()).await;
                    assert_eq!(got.status, StatusCode::NOT_FOUND, "{input}: a refused batch stored {:?}", key);
                }
            }
            assert_canary_intact().await;
        });
    }

    /// Random and damaged get batches (some naming the canary): the
    /// node's answer matches its codec, and hits carry the stored values.
    #[test]
    fn random_get_batches_answer_what_the_codec_says(
        keys in proptest::collection::vec(
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 1..40),
                1 => Just(CANARY_KEY.to_vec()),
                1 => Just(vec![b'k'; 300]),
            ],
            0..70,
        ),
        damage in damage(),
    ) {
        let encoded = batch::encode_get_request(&keys).unwrap().to_vec();
        let body = apply(encoded, &damage);
        let input = format!("{} get keys, {damage:?}", keys.len());
        let l = limits();
        harness().runtime.block_on(async {
            let r = post_batch("/v1/batch/get", body.clone()).await;
            match batch::decode_get_request(Bytes::from(body), &l) {
                Err(e) => assert_batch_refused(&r, &e, &input),
                Ok(asked) => {
                    assert_eq!(r.status, StatusCode::OK, "{input}: {}", String::from_utf8_lossy(&r.body));
                    let results = batch::decode_get_response(r.body.clone(), &l).unwrap();
                    assert_eq!(results.len(), asked.len(), "{input}");
                    for (key, result) in asked.iter().zip(&results) {
                        if &key[..] == CANARY_KEY {
                            let h = harness();
                            match result {
                                GetResult::Hit { value, content_type, .. } => {
                                    assert_eq!(&value[..], &h.canary_value[..], "{input}");
                                    assert_eq!(&content_type[..], CANARY_TYPE.as_bytes(), "{input}");
                                }
                                other => panic!("{input}: the canary read as {other:?}"),
                            }
                        }
                    }
                }
            }
            assert_canary_intact().await;
        });
    }
}
