//! Meta's OpenAPI document (`host/meta/openapi.json`) against a real
//! one-member cluster on 127.0.0.1:0 (real Raft, redb in a temp dir): it is
//! what `GET /openapi.json` serves, every route of the router (read from
//! `src/api.rs`, `src/raft.rs`, `src/watch.rs` and `src/membership.rs` AND kept by hand below) is in it and
//! nothing else is, every documented operation answers a request built from
//! the document with a status the document lists (never a route miss), and
//! bad requests answer the documented statuses and error bodies.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestCluster;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use shardgate_meta::{MetaConfig, MetaError};
use shardgate_testkit::openapi::{conforms, documented_operations, example_of, resolve};
use shardgate_testkit::routes_in_source;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DOCUMENT: &str = include_str!("../openapi.json");
const API_SOURCE: &str = include_str!("../src/api.rs");
const RAFT_SOURCE: &str = include_str!("../src/raft.rs");
const WATCH_SOURCE: &str = include_str!("../src/watch.rs");
const MEMBERSHIP_SOURCE: &str = include_str!("../src/membership.rs");
const RAFT_WATCH_SOURCE: &str = include_str!("../src/raft_watch.rs");
const PROXIES_SOURCE: &str = include_str!("../src/proxies.rs");
const CONSOLE_SOURCE: &str = include_str!("../src/console.rs");

/// Every route the member serves (`api::router` merged with
/// `raft::raft_routes`), by hand: (axum path, methods). Kept in step with
/// the source by `router_routes_are_exactly_the_documented_ones`.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/nodes", &["GET", "POST"]),
    ("/v1/nodes/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/changes", &["POST"]),
    ("/v1/strategies", &["GET", "POST"]),
    ("/v1/strategies/{hash}", &["GET"]),
    ("/v1/strategies/{hash}/component", &["GET"]),
    ("/v1/strategies/{hash}/activate", &["POST"]),
    ("/v1/routing", &["GET"]),
    ("/v1/routing/history", &["GET"]),
    ("/v1/routing/rollback", &["POST"]),
    ("/v1/preview", &["POST"]),
    ("/v1/lookup", &["POST"]),
    ("/v1/proxies", &["GET"]),
    ("/v1/proxies/report", &["POST"]),
    ("/ui", &["GET"]),
    ("/ui/{asset}", &["GET"]),
    ("/v1/raft/learners", &["POST"]),
    ("/v1/raft/members/{id}/promote", &["POST"]),
    ("/v1/raft/members/{id}", &["DELETE"]),
    ("/v1/watch", &["GET"]),
    ("/v1/raft/watch", &["GET"]),
    ("/v1/raft/status", &["GET"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/raft/append", &["POST"]),
    ("/raft/vote", &["POST"]),
    ("/raft/pre-vote", &["POST"]),
    ("/raft/snapshot", &["POST"]),
    ("/raft/transfer-leader", &["POST"]),
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("host/meta/openapi.json is valid JSON")
}

#[test]
fn router_routes_are_exactly_the_documented_ones() {
    let mut scanned = routes_in_source(API_SOURCE, "router", &[]);
    scanned.extend(routes_in_source(RAFT_SOURCE, "raft_routes", &[]));
    scanned.extend(routes_in_source(WATCH_SOURCE, "watch_routes", &[]));
    scanned.extend(routes_in_source(MEMBERSHIP_SOURCE, "membership_routes", &[]));
    scanned.extend(routes_in_source(RAFT_WATCH_SOURCE, "raft_watch_routes", &[]));
    scanned.extend(routes_in_source(PROXIES_SOURCE, "proxy_routes", &[]));
    scanned.extend(routes_in_source(CONSOLE_SOURCE, "console_routes", &[]));
    let kept: BTreeSet<(String, String)> =
        ROUTES.iter().flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string()))).collect();
    assert_eq!(
        scanned, kept,
        "the routers in src/api.rs + src/raft.rs + src/watch.rs + src/membership.rs and this test's ROUTES differ: update ROUTES and openapi.json"
    );
    // The scanner finds what it should (it cannot pass by finding nothing).
    assert!(scanned.contains(&("/v1/raft/members/{id}".to_string(), "DELETE".to_string())));
    assert!(scanned.contains(&("/v1/strategies".to_string(), "POST".to_string())));
    assert!(scanned.contains(&("/raft/snapshot".to_string(), "POST".to_string())));

    let documented = documented_operations(&document());
    assert_eq!(documented, kept, "openapi.json documents other operations than the router serves (left: document, right: router)");
}

#[test]
fn raft_routes_are_marked_internal() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let internal = item["post"]["x-internal"] == true;
        assert_eq!(internal, path.starts_with("/raft/"), "{path}: x-internal is {internal}");
    }
}

/// A reply, with at most the first chunk of an event stream.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(client: &reqwest::Client, method: Method, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Reply {
    let mut req = client.request(method, url).body(body);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let mut resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let streaming = headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream");
    let body = if streaming {
        // An endless stream: the first event is enough.
        resp.chunk().await.unwrap().map(|c| c.to_vec()).unwrap_or_default()
    } else {
        resp.bytes().await.unwrap().to_vec()
    };
    Reply { status, headers, body }
}

fn client() -> reqwest::Client {
    shardgate_tls::http_client_system_roots().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

/// An answer that means the router has no such route: axum's empty 404
/// (meta has no fallback) or 405.
/// A miss of the router itself: 405, or 404 with kind `not_found` (handlers
/// answer unknown nodes, strategies and epochs with their own kinds).
fn is_route_miss(reply: &Reply) -> bool {
    let kind = serde_json::from_slice::<Value>(&reply.body).ok().and_then(|v| v["kind"].as_str().map(str::to_string));
    reply.status == StatusCode::METHOD_NOT_ALLOWED || (reply.status == StatusCode::NOT_FOUND && kind.as_deref() == Some("not_found"))
}

/// Checks `reply` against the documented responses of `op`: the status is
/// listed, the Content-Type is one of the documented media types, and a
/// JSON body has the documented schema's required fields (an ErrorBody's
/// `kind` must be one of the documented kinds).
fn check_documented(doc: &Value, what: &str, op: &Value, reply: &Reply) {
    let code = reply.status.as_u16().to_string();
    let response = op["responses"]
        .get(&code)
        .unwrap_or_else(|| panic!("{what}: answered {} which openapi.json does not list (body {:?})", reply.status, reply.text()));
    let response = resolve(doc, response);
    let Some(content) = response["content"].as_object() else {
        return;
    };
    let content_type = reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content
        .keys()
        .find(|m| content_type.split(';').next() == m.split(';').next())
        .unwrap_or_else(|| panic!("{what}: Content-Type {content_type:?} is not documented for {code} ({:?})", content.keys()));
    if media == "application/json" {
        let schema = resolve(doc, &content[media]["schema"]);
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{what}: documented JSON body is not JSON ({e}): {:?}", reply.text()));
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            if body.is_object() {
                assert!(body.get(field).is_some(), "{what}: body lacks required {field}: {body}");
            }
        }
        if schema == &doc["components"]["schemas"]["ErrorBody"] {
            let kind = body["kind"].as_str().unwrap_or_default();
            assert!(
                response["description"].as_str().unwrap_or_default().contains(&format!("`{kind}`")),
                "{what}: kind {kind:?} is not among the kinds documented for {code}"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_answers_a_documented_status() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let base = cluster.addr(1);
    let doc = document();
    let http = client();

    // /openapi.json is the repo file, as JSON, OpenAPI 3.1.
    let served = send(&http, Method::GET, &format!("{base}/openapi.json"), &[], Vec::new()).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.headers[header::CONTENT_TYPE], "application/json");
    let served_doc: Value = serde_json::from_slice(&served.body).expect("served document is JSON");
    assert!(served_doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "openapi is {}", served_doc["openapi"]);
    assert_eq!(served.text(), DOCUMENT);

    // The route-miss check is not vacuous: it recognises real misses.
    let miss = send(&http, Method::GET, &format!("{base}/v1/no-such-route"), &[], Vec::new()).await;
    assert!(is_route_miss(&miss), "{} {:?}", miss.status, miss.text());
    let wrong_method = send(&http, Method::PUT, &format!("{base}/v1/routing"), &[], Vec::new()).await;
    assert!(is_route_miss(&wrong_method), "{}", wrong_method.status);

    // Real values where a dummy would only ever meet an error: an uploaded
    // component and its hash, and this member itself as the "new" learner.
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    let uploaded = cluster.client().upload_strategy(component.clone()).await.unwrap();
    let learner = json!({"id": 1, "addr": base}).to_string().into_bytes();

    let order = ["PUT", "POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS"];
    let mut operations: Vec<(String, String)> = documented_operations(&doc).into_iter().collect();
    operations.sort_by_key(|(path, method)| (order.iter().position(|m| m == method), path.clone()));
    assert_eq!(operations.len(), 35);
    let mut successes = 0;
    for (path, method) in &operations {
        let item = &doc["paths"][path];
        let op = &item[method.to_lowercase()];
        let mut params: Vec<&Value> = item["parameters"].as_array().into_iter().flatten().collect();
        params.extend(op["parameters"].as_array().into_iter().flatten());
        let mut url = path.clone();
        while let Some(open) = url.find('{') {
            let close = url[open..].find('}').unwrap() + open;
            let name = url[open + 1..close].to_string();
            let value = if name == "hash" { uploaded.hash.clone() } else { example_of(&doc, &params, &name) };
            url.replace_range(open..=close, &value);
        }
        let mut headers: Vec<(&str, String)> = Vec::new();
        let body: Vec<u8> = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/strategies") => component.clone(),
            ("POST", "/v1/raft/learners") => learner.clone(),
            _ => match op.get("requestBody") {
                Some(rb) => {
                    let (media, content) = rb["content"].as_object().and_then(|c| c.iter().next()).expect("requestBody content");
                    headers.push(("content-type", media.clone()));
                    match &content["example"] {
                        Value::Null => panic!("{method} {path}: request body without example"),
                        example => example.to_string().into_bytes(),
                    }
                }
                None => Vec::new(),
            },
        };
        let reply = send(&http, Method::from_bytes(method.as_bytes()).unwrap(), &format!("{base}{url}"), &headers, body).await;
        let what = format!("{method} {url}");
        assert!(!is_route_miss(&reply), "{what}: route miss {} {:?}", reply.status, reply.text());
        check_documented(&doc, &what, op, &reply);
        if reply.status.is_success() {
            successes += 1;
        }
        if path.starts_with("/raft/") {
            let answer: Value = serde_json::from_slice(&reply.body).unwrap();
            assert!(answer.get("Ok").is_some() || answer.get("Err").is_some(), "{what}: {answer}");
        }
    }
    // Most operations succeed with the document's examples (the rest answer
    // documented errors, e.g. rollback to an epoch that never existed).
    assert!(successes >= 20, "only {successes} of {} operations succeeded", operations.len());
    cluster.shutdown().await;
}

/// One bad request and what the member must answer.
struct Case {
    method: Method,
    path: String,
    body: Vec<u8>,
    /// The document's operation that serves it.
    operation: (&'static str, &'static str),
    status: StatusCode,
    /// Must appear in the error message (JSON `error`, or the plain text).
    message: &'static str,
}

fn case(
    method: Method,
    path: impl Into<String>,
    body: impl Into<Vec<u8>>,
    operation: (&'static str, &'static str),
    status: StatusCode,
    message: &'static str,
) -> Case {
    Case { method, path: path.into(), body: body.into(), operation, status, message }
}

#[tokio::test]
async fn error_answers_are_the_documented_ones() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let base = cluster.addr(1);
    let doc = document();
    let http = client();
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    let hash = cluster.client().upload_strategy(component).await.unwrap().hash;
    let node = json!({"id": "n1", "addr": "http://127.0.0.1:7100"}).to_string();
    let added = send(&http, Method::POST, &format!("{base}/v1/nodes"), &[], node.clone().into_bytes()).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text());
    let max_component = cluster.members[&1].config.max_component_size.as_u64() as usize;
    // 3 MiB: over the 2 MiB body limit for JSON routes; Raft
    // routes take up to RAFT_BODY_LIMIT (a snapshot holds the whole registry).
    let three_mib = vec![b' '; 3 << 20];

    let activate = "/v1/strategies/{hash}/activate";
    let cases = vec![
        case(Method::POST, "/v1/nodes", "{", ("/v1/nodes", "post"), StatusCode::BAD_REQUEST, "line 1 column 1"),
        case(Method::POST, "/v1/nodes", node.clone(), ("/v1/nodes", "post"), StatusCode::CONFLICT, "already exists"),
        case(Method::POST, "/v1/nodes", r#"{"id":"b c","addr":"http://h:1"}"#, ("/v1/nodes", "post"), StatusCode::BAD_REQUEST, "node id"),
        case(
            Method::POST,
            "/v1/nodes",
            r#"{"id":"x","addr":"http://h:1","colour":1}"#,
            ("/v1/nodes", "post"),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        case(Method::GET, "/v1/nodes/nope", "", ("/v1/nodes/{id}", "get"), StatusCode::NOT_FOUND, "unknown node"),
        case(Method::PATCH, "/v1/nodes/n1", "{}", ("/v1/nodes/{id}", "patch"), StatusCode::BAD_REQUEST, "changes nothing"),
        case(Method::DELETE, "/v1/nodes/nope", "", ("/v1/nodes/{id}", "delete"), StatusCode::NOT_FOUND, "unknown node"),
        case(Method::POST, "/v1/changes", r#"{"changes":[]}"#, ("/v1/changes", "post"), StatusCode::BAD_REQUEST, "empty change batch"),
        case(
            Method::POST,
            "/v1/changes",
            three_mib.clone(),
            ("/v1/changes", "post"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the JSON body limit of 2 MiB",
        ),
        case(
            Method::POST,
            "/v1/nodes",
            r#"{"id":"n2","addr":"http://127.0.0.1:7100"}"#,
            ("/v1/nodes", "post"),
            StatusCode::CONFLICT,
            "is already used by node",
        ),
        case(Method::POST, "/v1/strategies", "", ("/v1/strategies", "post"), StatusCode::BAD_REQUEST, "empty body"),
        case(
            Method::POST,
            "/v1/strategies",
            vec![0u8; max_component + 1],
            ("/v1/strategies", "post"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "meta.max_component_size",
        ),
        case(Method::POST, "/v1/strategies", "not wasm", ("/v1/strategies", "post"), StatusCode::UNPROCESSABLE_ENTITY, "strategy refused"),
        case(
            Method::GET,
            format!("/v1/strategies/{}", "0".repeat(64)),
            "",
            ("/v1/strategies/{hash}", "get"),
            StatusCode::NOT_FOUND,
            "upload it first",
        ),
        case(
            Method::GET,
            format!("/v1/strategies/{}/component", "0".repeat(64)),
            "",
            ("/v1/strategies/{hash}/component", "get"),
            StatusCode::NOT_FOUND,
            "upload it first",
        ),
        case(
            Method::POST,
            format!("/v1/strategies/{hash}/activate"),
            r#"{"replicas":0}"#,
            (activate, "post"),
            StatusCode::BAD_REQUEST,
            "between 1 and 32",
        ),
        case(
            Method::POST,
            format!("/v1/strategies/{hash}/activate"),
            r#"{"config":"this is not toml"}"#,
            (activate, "post"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "strategy refused",
        ),
        case(
            Method::POST,
            "/v1/routing/rollback",
            r#"{"epoch":999}"#,
            ("/v1/routing/rollback", "post"),
            StatusCode::NOT_FOUND,
            "epoch 999",
        ),
        case(Method::POST, "/v1/preview", r#"{"sample":0}"#, ("/v1/preview", "post"), StatusCode::BAD_REQUEST, "between 1 and 100000"),
        case(Method::POST, "/v1/preview", r#"{"sample":100001}"#, ("/v1/preview", "post"), StatusCode::BAD_REQUEST, "MAX_PREVIEW_SAMPLE"),
        case(Method::POST, "/v1/preview", "", ("/v1/preview", "post"), StatusCode::BAD_REQUEST, "no strategy is active"),
        case(
            Method::POST,
            "/v1/raft/learners",
            r#"{"id":0,"addr":"http://h:1"}"#,
            ("/v1/raft/learners", "post"),
            StatusCode::BAD_REQUEST,
            "must be > 0",
        ),
        case(
            Method::POST,
            "/v1/raft/members/x/promote",
            "",
            ("/v1/raft/members/{id}/promote", "post"),
            StatusCode::BAD_REQUEST,
            "not a number",
        ),
        case(
            Method::POST,
            "/v1/raft/members/9/promote",
            "",
            ("/v1/raft/members/{id}/promote", "post"),
            StatusCode::NOT_FOUND,
            "add it as a learner first",
        ),
        case(Method::DELETE, "/v1/raft/members/1", "", ("/v1/raft/members/{id}", "delete"), StatusCode::CONFLICT, "last voter"),
        case(Method::GET, "/v1/watch?from_epoch=x", "", ("/v1/watch", "get"), StatusCode::BAD_REQUEST, "from_epoch"),
        case(Method::POST, "/raft/vote", "{}", ("/raft/vote", "post"), StatusCode::BAD_REQUEST, "malformed raft rpc body"),
        case(Method::POST, "/raft/append", three_mib, ("/raft/append", "post"), StatusCode::BAD_REQUEST, "malformed raft rpc body"),
        case(Method::POST, "/v1/lookup", r#"{"key":""}"#, ("/v1/lookup", "post"), StatusCode::BAD_REQUEST, "key is empty"),
        case(
            Method::POST,
            "/v1/lookup",
            r#"{"key":"k","candidate":[null,null]}"#,
            ("/v1/lookup", "post"),
            StatusCode::BAD_REQUEST,
            "JSON objects",
        ),
        case(
            Method::POST,
            "/v1/lookup",
            r#"{"key":"k","candidate":{"nodes":[["a","http://h:1"]]}}"#,
            ("/v1/lookup", "post"),
            StatusCode::BAD_REQUEST,
            "JSON objects",
        ),
        case(
            Method::POST,
            "/v1/lookup",
            json!({"key": "k".repeat(1025)}).to_string(),
            ("/v1/lookup", "post"),
            StatusCode::BAD_REQUEST,
            "MAX_LOOKUP_KEY_BYTES",
        ),
        case(
            Method::POST,
            "/v1/lookup",
            r#"{"key":"k","candidate":{"sample":5}}"#,
            ("/v1/lookup", "post"),
            StatusCode::BAD_REQUEST,
            "candidate.sample",
        ),
        case(
            Method::POST,
            "/v1/lookup",
            json!({"key": "k", "candidate": {"hash": "0".repeat(64)}}).to_string(),
            ("/v1/lookup", "post"),
            StatusCode::NOT_FOUND,
            "upload it first",
        ),
        case(
            Method::POST,
            "/v1/proxies/report",
            json!({"id": "p".repeat(513), "epoch": 1}).to_string(),
            ("/v1/proxies/report", "post"),
            StatusCode::BAD_REQUEST,
            "MAX_PROXY_ID_BYTES",
        ),
        case(
            Method::POST,
            "/v1/proxies/report",
            r#"{"id":"p","epoch":1,"colour":2}"#,
            ("/v1/proxies/report", "post"),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        case(Method::GET, "/ui/nope.js", "", ("/ui/{asset}", "get"), StatusCode::NOT_FOUND, "no console asset"),
    ];
    for c in cases {
        let reply = send(&http, c.method.clone(), &format!("{base}{}", c.path), &[], c.body).await;
        let what = format!("{} {}", c.method, c.path.chars().take(60).collect::<String>());
        assert_eq!(reply.status, c.status, "{what}: {:?}", reply.text());
        let op = &doc["paths"][c.operation.0][c.operation.1];
        assert!(op.is_object(), "{what}: no documented operation {:?}", c.operation);
        check_documented(&doc, &what, op, &reply);
        let message = match serde_json::from_slice::<Value>(&reply.body) {
            Ok(body) => body["error"].as_str().unwrap_or_default().to_string(),
            Err(_) => reply.text(),
        };
        assert!(message.contains(c.message), "{what}: {message:?} lacks {:?}", c.message);
    }
    // Stale reads are answered locally (documented `stale` parameter).
    let stale = send(&http, Method::GET, &format!("{base}/v1/nodes?stale=true"), &[], Vec::new()).await;
    assert_eq!(stale.status, StatusCode::OK);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_member_without_a_cluster_answers_the_documented_503() {
    // No initial members and no join address: the member waits to be added
    // and knows no leader.
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = MetaConfig { data_dir: dir.path().join("lonely"), listen: listener.local_addr().unwrap(), ..common::test_config() };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shardgate_meta::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let doc = document();
    let http = client();
    // Poll until the member serves (its status route answers locally).
    common::poll("the lonely member serves", Duration::from_secs(20), || {
        let http = http.clone();
        let url = format!("{base}/v1/raft/status");
        async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    for (method, path, operation) in [
        (Method::GET, "/v1/nodes", ("/v1/nodes", "get")),
        (Method::POST, "/v1/changes", ("/v1/changes", "post")),
        (Method::GET, "/v1/routing", ("/v1/routing", "get")),
    ] {
        let reply = send(&http, method.clone(), &format!("{base}{path}"), &[], b"{}".to_vec()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {}", reply.text());
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["kind"], "no_leader");
        check_documented(&doc, &format!("{method} {path}"), &doc["paths"][operation.0][operation.1], &reply);
    }
    // A watch needs a leader: refused, documented; a stale one answers.
    let watch = send(&http, Method::GET, &format!("{base}/v1/watch"), &[], Vec::new()).await;
    assert_eq!(watch.status, StatusCode::SERVICE_UNAVAILABLE, "{}", watch.text());
    check_documented(&doc, "GET /v1/watch", &doc["paths"]["/v1/watch"]["get"], &watch);
    let watch = send(&http, Method::GET, &format!("{base}/v1/watch?stale=true"), &[], Vec::new()).await;
    assert_eq!(watch.status, StatusCode::OK);
    check_documented(&doc, "GET /v1/watch?stale=true", &doc["paths"]["/v1/watch"]["get"], &watch);
    // (the first chunk: the membership, empty here, and perhaps the state after it)
    assert!(watch.text().starts_with("event: members\ndata: []\n\n"), "{:?}", watch.text());
    let _ = stop.send(());
    let res: Result<(), MetaError> = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    res.unwrap();
}

/// With `meta.admin_token` set, every documented operation that needs it
/// (writes and Raft RPCs, by `shardgate_meta::auth::needs_admin`) answers a
/// request without a token 401 and one with another token 403, both
/// documented with the `adminToken` scheme; the others document neither.
#[tokio::test]
async fn token_refusals_are_documented_on_every_admin_route() {
    let cluster = TestCluster::start(1, |c| c.admin_token = Some("right".into())).await;
    let base = cluster.addr(1);
    let doc = document();
    let http = client();
    assert_eq!(doc["components"]["securitySchemes"]["adminToken"]["scheme"], "bearer");
    let mut checked = 0;
    for (path, method) in documented_operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let needs = shardgate_meta::auth::needs_admin(&m, &path);
        let documented = op["responses"].get("401").is_some() && op["responses"].get("403").is_some();
        let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("adminToken").is_some()));
        assert_eq!((documented, secured), (needs, needs), "{method} {path}: 401/403 and security must match needs_admin");
        if !needs {
            continue;
        }
        let url = format!("{base}{}", path.replace("{id}", "2").replace("{hash}", &"ab".repeat(32)));
        let missing = send(&http, m.clone(), &url, &[], b"{}".to_vec()).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{method} {url}: {}", missing.text());
        check_documented(&doc, &format!("{method} {url} without a token"), op, &missing);
        let wrong = send(&http, m, &url, &[("authorization", "Bearer wrong".into())], b"{}".to_vec()).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{method} {url}: {}", wrong.text());
        check_documented(&doc, &format!("{method} {url} with a wrong token"), op, &wrong);
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} admin operations checked");
    cluster.shutdown().await;
}

/// `GET /v1/watch` as the document describes it: `text/event-stream`, and
/// each event (`event`, `id`, `data` as the SSE fields) fits the per-event
/// schema, its `data` is RoutingState JSON that fits the RoutingState
/// schema (the `contentSchema`, which schemathesis does not check), and its
/// `id` is the state's epoch. Read from a real member with a routing state
/// that has nodes and an active strategy.
#[tokio::test]
async fn the_watch_stream_matches_the_document() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let base = cluster.addr(1);
    let doc = document();
    let meta = cluster.client();
    let node = shardgate_meta_client::model::NewNode { id: "n1".into(), addr: "http://127.0.0.1:9".into(), weight: 2.5, zone: "z".into() };
    meta.add_node(&node).await.unwrap();
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    let info = meta.upload_strategy(component).await.unwrap();
    let activation = shardgate_meta_client::model::Activation { config: String::new(), replicas: 1 };
    let receipt = meta.activate(&info.hash, &activation).await.unwrap();

    let op = &doc["paths"]["/v1/watch"]["get"];
    let media = &op["responses"]["200"]["content"]["text/event-stream"];
    let mut resp = client().get(format!("{base}/v1/watch")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");

    // The first events: the membership, then the state on connect.
    let mut buf = Vec::new();
    let mut next_event = async || {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event = String::from_utf8(buf[..end].to_vec()).unwrap();
                    buf.drain(..end + 2);
                    if !event.starts_with(':') {
                        return event;
                    }
                    continue;
                }
                buf.extend_from_slice(&resp.chunk().await.unwrap().expect("the stream stays open"));
            }
        })
        .await
        .expect("an event within 10s")
    };
    let members = next_event().await;
    let (fields, list) = event_fits(&doc, media, &members);
    assert_eq!(fields["event"], "members");
    assert_eq!(list[0]["addr"], base.as_str());
    let event = next_event().await;
    let (fields, state) = event_fits(&doc, media, &event);
    assert_eq!(fields["id"].as_str().unwrap(), state["epoch"].to_string());
    assert!(state["epoch"].as_u64().unwrap() >= receipt.epoch);
    assert_eq!(state["nodes"][0]["id"], "n1");
    assert_eq!(state["strategy"]["hash"], info.hash.as_str());
    // The document's example (the members, the state, then a heartbeat) fits too.
    let example = media["example"].as_str().unwrap();
    let (first, rest) = example.split_once("\n\n").unwrap();
    let (fields, _) = event_fits(&doc, media, first);
    assert_eq!(fields["event"], "members");
    let (second, rest) = rest.split_once("\n\n").unwrap();
    let (fields, state) = event_fits(&doc, media, second);
    assert_eq!(fields["id"].as_str().unwrap(), state["epoch"].to_string());
    assert_eq!(rest, ": heartbeat\n\n");
}

/// The SSE fields of one event (as schemathesis, or any SSE client, reads
/// them) and its data as JSON, after checking both against the document.
fn event_fits(doc: &Value, media: &Value, event: &str) -> (Value, Value) {
    let mut fields = serde_json::Map::new();
    for line in event.lines() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        assert!(fields.insert(name.to_string(), Value::String(value.to_string())).is_none(), "field {name} twice in {event:?}");
    }
    let fields = Value::Object(fields);
    conforms(doc, &media["schema"], &fields).unwrap_or_else(|e| panic!("event {event:?} does not fit the per-event schema: {e}"));
    // The branch of the per-event schema this event's name selects.
    let branch = media["schema"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["properties"]["event"]["const"] == fields["event"])
        .unwrap_or_else(|| panic!("no branch for {event:?}"));
    let data: Value = serde_json::from_str(fields["data"].as_str().unwrap()).unwrap();
    conforms(doc, &branch["properties"]["data"]["contentSchema"], &data)
        .unwrap_or_else(|e| panic!("event data {data} does not fit its schema: {e}"));
    (fields, data)
}
