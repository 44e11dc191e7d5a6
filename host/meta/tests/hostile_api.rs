//! Hostile input for the metadata API: property tests against a real
//! one-member meta cluster (Raft, redb, HTTP on 127.0.0.1:0) that send
//! random and malformed JSON bodies to every write endpoint, random
//! component bytes to the upload, and random path segments, methods and
//! queries over raw TCP.
//!
//! Where it sits: these requests reach `api` (body parsing, path
//! extraction, leader middleware) and `state`/`admission` before anything
//! is proposed to Raft. Every refused request must get a 4xx with a JSON
//! `ErrorBody` (`error` and `kind`), and afterwards the routing state (epoch,
//! nodes, strategy, config, replicas), the history, the registry and the
//! Raft log must be exactly as before.
//!
//! Case counts are small so `cargo test` stays quick; raise them with
//! `PROPTEST_CASES=2000 cargo test -p shardgate-meta --test hostile_api`
//! (and vary the inputs with `PROPTEST_RNG_SEED`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestCluster, node};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, ErrorBody, HistoryEntry, RaftStatus, RoutingState, StrategyInfo};
use shardgate_testkit::cases;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(20);

/// A one-member cluster with two nodes and an active strategy, so there is
/// state to damage.
struct Harness {
    runtime: Runtime,
    cluster: Option<TestCluster>,
    socket: SocketAddr,
    client: MetaClient,
    strategy_hash: String,
}

impl Harness {
    fn start() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (cluster, client, strategy_hash) = runtime.block_on(async {
            // Generous timeouts: the setup compiles a component and commits
            // on a machine that may be busy with other builds and tests.
            let cluster = TestCluster::start(1, |c| c.write_timeout = Duration::from_secs(20)).await;
            let client =
                MetaClient::new(cluster.addrs()).with_request_timeout(Duration::from_secs(60)).with_retry_for(Duration::from_secs(60));
            client.add_node(&node("a", 9001)).await.unwrap();
            client.add_node(&node("b", 9002)).await.unwrap();
            let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
            let info = client.upload_strategy(component).await.unwrap();
            client.activate(&info.hash, &Activation { config: String::new(), replicas: 2 }).await.unwrap();
            (cluster, client, info.hash)
        });
        let socket = cluster.members[&1].socket;
        Harness { runtime, cluster: Some(cluster), socket, client, strategy_hash }
    }

    /// The state once the Raft metrics have caught up with the last write
    /// (they are published a moment after the write returns).
    fn settled_snapshot(&self) -> Snapshot {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let s = self.snapshot();
            let applied = s.status.applied_index;
            if applied.is_some() && applied == s.last_log_index && applied >= Some(s.routing.epoch) && s == self.snapshot() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "the Raft metrics never settled: {:?}", s.status);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything a refused request must leave alone.
    fn snapshot(&self) -> Snapshot {
        self.runtime.block_on(async {
            let mut status = self.client.status().await.unwrap();
            // How long ago each member answered the leader changes by itself.
            for m in &mut status.members {
                m.last_ack_ms = None;
            }
            Snapshot {
                routing: self.client.routing().await.unwrap(),
                history: self.client.history().await.unwrap(),
                strategies: self.client.strategies().await.unwrap(),
                last_log_index: status.last_log_index,
                members: status.members.iter().map(|m| (m.id, m.addr.clone(), m.voter)).collect(),
                status,
            }
        })
    }

    fn send(&self, method: &str, target: &[u8], body: &[u8]) -> Reply {
        self.runtime.block_on(raw_request(self.socket, method, target, body))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            self.runtime.block_on(cluster.shutdown());
        }
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    routing: RoutingState,
    history: Vec<HistoryEntry>,
    strategies: Vec<StrategyInfo>,
    last_log_index: Option<u64>,
    members: Vec<(u64, String, bool)>,
    status: RaftStatus,
}

impl Snapshot {
    /// Equal in everything but the Raft term bookkeeping that heartbeats touch.
    fn assert_same(&self, other: &Snapshot, input: &str) {
        assert_eq!(self.routing, other.routing, "{input}: the routing state changed");
        assert_eq!(self.history, other.history, "{input}: the history changed");
        assert_eq!(self.strategies, other.strategies, "{input}: the registry changed");
        assert_eq!(self.last_log_index, other.last_log_index, "{input}: something was appended to the Raft log");
        assert_eq!(self.members, other.members, "{input}: the membership changed");
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One request on a fresh connection (`Connection: close`), the raw target
/// sent as is.
async fn raw_request(addr: SocketAddr, method: &str, target: &[u8], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nhost: meta\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    request.extend_from_slice(body);
    let _ = stream.write_all(&request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    let shown = String::from_utf8_lossy(&target[..target.len().min(200)]).into_owned();
    assert!(read.is_ok(), "{method} {shown}: no answer within {DEADLINE:?}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let head_end = text.find("\r\n\r\n").unwrap_or_else(|| panic!("{method} {shown}: incomplete answer {text:?}"));
    let mut lines = text[..head_end].split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_string(),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let raw = out[(head_end + 4).min(out.len())..].to_vec();
    let body = if chunked { dechunk(&raw) } else { raw };
    Reply { status, content_type, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..(eol + 2 + size).min(raw.len())]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

/// A refusal as the API promises it: 4xx and an `ErrorBody`.
fn assert_json_refusal(r: &Reply, input: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert!((400..500).contains(&r.status), "{input}: expected a 4xx, got {} {body}", r.status);
    assert!(r.content_type.starts_with("application/json"), "{input}: {} with content type {:?}: {body:?}", r.status, r.content_type);
    let e: ErrorBody = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{input}: not an ErrorBody ({e}): {body:?}"));
    assert!(!e.error.trim().is_empty() && !e.kind.is_empty(), "{input}: {e:?}");
}

/// Runs `test` on `cases` inputs from `strategy`; a failure panics with
/// the minimal input.
fn check<S: Strategy>(config: ProptestConfig, strategy: S, test: impl Fn(S::Value)) {
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        test(value);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// --- generators -----------------------------------------------------------------

const FIELDS: &[&str] =
    &["id", "addr", "weight", "zone", "state", "changes", "op", "config", "replicas", "epoch", "hash", "nodes", "sample"];

/// Arbitrary JSON text: any shape, field names of the API's bodies.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(u32::MAX as i64 + 1)].prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::sample::select(&["", "a", "http://127.0.0.1", "active", "draining", "add_node", "remove_node", "activate", "rollback"][..])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![3 => prop::sample::select(FIELDS).prop_map(String::from), 1 => "[a-z_]{0,8}"],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body that can never be a valid request of its endpoint: random
/// bytes, JSON cut short, any JSON value with an unknown field added (every
/// body type denies unknown fields), JSON that is not an object, or
/// numbers out of range.
fn bad_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        2 => (json(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            // A strict prefix of a JSON text is never JSON... except of a number.
            let at = cut.index(text.len().max(1));
            let mut t = text[..at].to_vec();
            t.push(b'{');
            t
        }),
        3 => (json(), "[a-z]{1,8}").prop_map(|(v, extra)| {
            let mut m = match v {
                serde_json::Value::Object(m) => m,
                other => [("wrapped".to_string(), other)].into_iter().collect(),
            };
            m.insert(format!("unknown_{extra}"), serde_json::Value::Bool(true));
            serde_json::Value::Object(m).to_string().into_bytes()
        }),
        // Not an object (arrays: see `json_arrays_are_not_accepted_as_request_objects`).
        2 => json().prop_filter("not an object", |v| !v.is_object() && !v.is_array()).prop_map(|v| v.to_string().into_bytes()),
        1 => prop::sample::select(&[
            "{\"epoch\": -1}", "{\"epoch\": 1e400}", "{\"replicas\": 4294967296}", "{\"id\": 18446744073709551616, \"addr\": \"http://127.0.0.1:1\"}",
            "{\"weight\": NaN}", "{\"changes\": [{\"op\": \"explode\"}]}", "{\"changes\": {}}", "\u{feff}{}", "{\"id\":\"x\",\"id\":\"y\"}",
            "{\"changes\": [{\"op\": \"add_node\", \"id\": \"n\", \"addr\": \"http://127.0.0.1:1\", \"colour\": 1}]}",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A path segment: printable text, stray `%`, escapes, dots, very long
/// ones. (Escapes that do not decode to UTF-8 are left to
/// `unknown_routes_and_undecodable_segments_get_json_errors`.)
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9._~+-]{1,24}".prop_map(|s| format!("x{s}").into_bytes()),
        1 => "[a-zA-Z0-9._~+-]{0,6}%[a-zA-Z0-9]{0,2}[a-z]{0,4}".prop_map(|s| format!("x{s}").into_bytes())
            .prop_filter("decodes to UTF-8", |s| percent_decodes_to_utf8(s)),
        2 => prop::sample::select(&["%", "%zz", "%00", "..", ".", "%2F", "%2e%2e", "x%20y", "%E2%80%AE", "%C3%A9"][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        // RFC 3986 pchars (bytes outside them are the HTTP parser's 400, not the API's).
        1 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,20}".prop_map(|s| format!("{s}x").into_bytes()),
        1 => (200..5000usize).prop_map(|n| vec![b'x'; n]),
        1 => prop_oneof![Just(0u64), Just(2), Just(u64::MAX), any::<u64>().prop_map(|n| n | 2)]
            .prop_map(|n| n.to_string().into_bytes()),
    ]
}

/// Whether `%xx` escapes in `s` decode to valid UTF-8 (stray `%` are literal).
fn percent_decodes_to_utf8(s: &[u8]) -> bool {
    std::str::from_utf8(&shardgate_testkit::key_api::hostile::percent_decode(s)).is_ok()
}

// --- the properties -----------------------------------------------------------------

/// Every write endpoint, with a body that is never valid for it.
#[test]
fn malformed_bodies_to_every_write_endpoint_are_refused_and_change_nothing() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let unknown_hash = "0".repeat(64);
    let endpoints: Vec<(&str, String)> = vec![
        ("POST", "/v1/nodes".into()),
        ("PATCH", "/v1/nodes/a".into()),
        ("PATCH", "/v1/nodes/ghost".into()),
        ("POST", "/v1/changes".into()),
        ("POST", format!("/v1/strategies/{}/activate", h.strategy_hash)),
        ("POST", format!("/v1/strategies/{unknown_hash}/activate")),
        ("POST", "/v1/routing/rollback".into()),
        ("POST", "/v1/preview".into()),
        ("POST", "/v1/raft/learners".into()),
    ];
    let n = endpoints.len();
    check(cases(256), (0..n, bad_body()), |(e, body)| {
        let (method, path) = &endpoints[e];
        let input = format!("{method} {path} with {:?}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        let reply = h.send(method, path.as_bytes(), &body);
        assert_json_refusal(&reply, &input);
        assert_eq!(reply.status, 400, "{input}: {}", String::from_utf8_lossy(&reply.body));
        before.assert_same(&h.snapshot(), &input);
    });
}

/// Bodies with the right shape but hostile values: refused by validation
/// (ids, addresses, weights, replicas, epochs), never committed.
#[test]
fn hostile_values_in_well_formed_bodies_are_refused_and_change_nothing() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let id = prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        (65..300usize).prop_map(|n| "i".repeat(n)),
        any::<String>().prop_map(|s| format!("n{s}")),
    ];
    let addr = prop_oneof![
        Just(String::new()),
        Just("localhost:80".to_string()),
        Just("http://127.0.0.1".to_string()),
        Just("http://127.0.0.1:99999".to_string()),
        Just("http://127.0.0.1:1/path".to_string()),
        Just("http://127.0.0.1:1/".to_string()),
        Just("http://127.0.0.1:1?x".to_string()),
        Just("ftp://127.0.0.1:1".to_string()),
        Just("http://:1".to_string()),
        "[ -~]{0,40}",
    ];
    // Only invalid weights: a valid one would make some updates legitimate.
    let weight = prop_oneof![Just(0.0), Just(-1.0), Just(-0.0), Just(-1e300), Just(f64::MIN)];
    let body = prop_oneof![
        // New nodes: a duplicate id or an invalid address or weight.
        (id.clone(), addr.clone(), weight.clone(), any::<bool>()).prop_map(|(id, addr, weight, use_weight)| {
            let mut v = serde_json::json!({ "id": id, "addr": addr });
            if use_weight {
                v["weight"] = weight.into();
            } else if id != "a" && id != "b" {
                // A fresh id needs a bad address to be refused.
                v["addr"] = format!("not an address {addr}").into();
            }
            ("POST", "/v1/nodes".to_string(), v)
        }),
        // Updates of unknown nodes, or bad weights for known ones.
        (id.clone(), weight.clone()).prop_map(|(id, weight)| {
            let id = if id == "a" || id == "b" { id } else { format!("ghost-{}", id.len()) };
            ("PATCH", format!("/v1/nodes/{id}"), serde_json::json!({ "weight": weight }))
        }),
        // Activations that admission refuses: configs the strategy rejects,
        // replicas out of range.
        (
            prop::sample::select(
                &["slots = -1", "slots = \"many\"", "[[[", "nonsense = 1", "slots = 4294967295", "slots = 99999999999"][..]
            ),
            0..3u32
        )
            .prop_map(|(config, replicas)| (
                "POST",
                "HASH/activate".to_string(),
                serde_json::json!({ "config": config, "replicas": replicas })
            )),
        // Rollbacks to epochs that never were.
        (100..u64::MAX).prop_map(|epoch| ("POST", "/v1/routing/rollback".to_string(), serde_json::json!({ "epoch": epoch }))),
        // Change batches with one bad change among good ones (all or nothing).
        (id, addr.clone()).prop_map(|(id, addr)| {
            let good = serde_json::json!({ "op": "add_node", "id": "fresh-node", "addr": "http://127.0.0.1:9100" });
            let bad = serde_json::json!({ "op": "add_node", "id": "a", "addr": addr });
            let bad2 = serde_json::json!({ "op": "remove_node", "id": format!("ghost-{}", id.len()) });
            ("POST", "/v1/changes".to_string(), serde_json::json!({ "changes": [good, bad, bad2] }))
        }),
        // Learners that cannot be: id 0, or an invalid address.
        (any::<bool>(), addr).prop_map(|(zero, addr)| {
            let (id, addr) = if zero { (0u64, "http://127.0.0.1:1".to_string()) } else { (7u64, format!("bad {addr}")) };
            ("POST", "/v1/raft/learners".to_string(), serde_json::json!({ "id": id, "addr": addr }))
        }),
    ];
    check(cases(128), body, |(method, path, body)| {
        let path = path.replace("HASH", &format!("/v1/strategies/{}", h.strategy_hash));
        let input = format!("{method} {path} with {body}");
        let reply = h.send(method, path.as_bytes(), body.to_string().as_bytes());
        assert_json_refusal(&reply, &input);
        before.assert_same(&h.snapshot(), &input);
    });
}

/// Random bytes as a strategy upload: 422 (admission) or 413, nothing in
/// the registry.
#[test]
fn random_component_uploads_are_refused_and_change_nothing() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let component = shardgate_builtins::builtin("jump").unwrap().component;
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..1024),
        any::<prop::sample::Index>().prop_map(move |i| component[..1 + i.index(component.len() - 1)].to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| [&b"\0asm\x0d\0\x01\0"[..], &b].concat()),
    ];
    check(cases(48), body, |body| {
        let input = format!("upload of {} bytes", body.len());
        let reply = h.send("POST", b"/v1/strategies", &body);
        assert_json_refusal(&reply, &input);
        assert!(matches!(reply.status, 400 | 413 | 422), "{input}: {}", reply.status);
        before.assert_same(&h.snapshot(), &input);
    });
}

/// Random path segments, methods and queries: 4xx with an `ErrorBody`, or
/// for reads of things that exist a 2xx; nothing changes.
#[test]
fn random_paths_get_json_errors_and_change_nothing() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let request = prop_oneof![
        (prop::sample::select(&["GET", "PATCH", "DELETE"][..]), segment()).prop_map(|(m, s)| (m, [&b"/v1/nodes/"[..], &s].concat())),
        // Only methods each route serves (others: see the ignored test below).
        (segment(), prop::sample::select(&[("GET", ""), ("GET", "/component"), ("POST", "/activate")][..]))
            .prop_map(|(s, (m, tail))| (m, [&b"/v1/strategies/"[..], &s, tail.as_bytes()].concat())),
        (segment(), prop::sample::select(&[("DELETE", ""), ("POST", "/promote")][..]))
            .prop_map(|(s, (m, tail))| (m, [&b"/v1/raft/members/"[..], &s, tail.as_bytes()].concat())),
        // A valid epoch would open the (endless) watch stream: only invalid ones.
        prop_oneof![segment(), Just(b"%FF".to_vec()), Just(b"-1".to_vec()), Just(b"18446744073709551616".to_vec())]
            .prop_filter("not a number", |s| !s.iter().all(u8::is_ascii_digit))
            .prop_map(|s| ("GET", [&b"/v1/watch?from_epoch="[..], &s].concat())),
    ];
    check(cases(192), request, |(method, target)| {
        let input = format!("{method} {}", String::from_utf8_lossy(&target[..target.len().min(300)]));
        let reply = h.send(method, &target, b"");
        assert_json_refusal(&reply, &input);
        before.assert_same(&h.snapshot(), &input);
    });
}

/// Paths and methods no route serves, and bytes that are not a valid path
/// segment: refused with the same JSON `ErrorBody` as every other error.
#[test]
fn unknown_routes_and_undecodable_segments_get_json_errors() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    for (method, target) in [
        ("GET", "/nope"),
        ("GET", "/v1"),
        ("GET", "/v1/nodes/a/extra"),
        ("PUT", "/v1/nodes"),
        ("POST", "/v1/routing"),
        ("DELETE", "/v1/strategies"),
        ("GET", "/v1/nodes/%FF"),
        ("PATCH", "/v1/nodes/%C3%28"),
        ("DELETE", "/v1/raft/members/%FF"),
    ] {
        let reply = h.send(method, target.as_bytes(), b"");
        assert_json_refusal(&reply, &format!("{method} {target}"));
        before.assert_same(&h.snapshot(), target);
    }
}

/// serde accepts a JSON array where a struct is expected (fields by
/// position): `POST /v1/strategies/{active}/activate` with `[]` re-activates
/// the strategy with config "" and replicas 1 (a committed change of the
/// replica count), `[\"slots = 0\", 1]` activates that config, and
/// `POST /v1/nodes` with `[\"c\", \"http://127.0.0.1:9003\"]` adds a node.
#[test]
fn json_arrays_are_not_accepted_as_request_objects() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let activate = format!("/v1/strategies/{}/activate", h.strategy_hash);
    for (method, path, body) in [
        ("POST", activate.as_str(), "[]"),
        ("POST", activate.as_str(), "[\"slots = 0\", 1]"),
        ("PATCH", "/v1/nodes/a", "[]"),
        ("POST", "/v1/nodes", "[\"c\", \"http://127.0.0.1:9003\"]"),
        ("POST", "/v1/routing/rollback", "[1]"),
        ("POST", "/v1/changes", "[[]]"),
    ] {
        let input = format!("{method} {path} with {body}");
        let reply = h.send(method, path.as_bytes(), body.as_bytes());
        assert_json_refusal(&reply, &input);
        before.assert_same(&h.snapshot(), &input);
    }
}

/// `Transfer-Encoding` with a coding other than `chunked` (hyper only
/// de-chunks, so the body would be read still encoded): 501 naming the
/// coding, kind `not_implemented`, and nothing changes.
#[test]
fn transfer_codings_other_than_chunked_are_not_implemented() {
    let h = Harness::start();
    let before = h.settled_snapshot();
    let body = r#"{"id":"c","addr":"http://127.0.0.1:9003"}"#;
    for coding in ["gzip, chunked", "x-custom, chunked"] {
        let request = format!(
            "POST /v1/nodes HTTP/1.1\r\nhost: meta\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: {coding}\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let text = h.runtime.block_on(async {
            let mut stream = TcpStream::connect(h.socket).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await.expect("an answer in time").unwrap();
            String::from_utf8_lossy(&out).into_owned()
        });
        assert!(text.starts_with("HTTP/1.1 501 "), "{coding}: {text}");
        let name = coding.split(',').next().unwrap_or_default();
        assert!(text.contains("\"kind\":\"not_implemented\"") && text.contains(&format!("\\\"{name}\\\"")), "{coding}: {text}");
        before.assert_same(&h.snapshot(), coding);
    }
}
