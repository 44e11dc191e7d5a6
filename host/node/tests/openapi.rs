//! The node's OpenAPI document (`host/node/openapi.json`) against the real
//! server on 127.0.0.1:0: it is what `GET /openapi.json` serves, every route
//! of the router (read from `src/server.rs` AND kept by hand below) is in it,
//! nothing else is, and every documented operation answers a request built
//! from the document with a status the document lists (never a route miss).
//! Bad requests answer the statuses and error bodies the document promises.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use http::{Method, StatusCode, header};
use serde_json::Value;
use shardgate_api::batch::{self, PutItem};
use shardgate_api::etag::WriteCondition;
use shardgate_api::key::KEY_PATH_PREFIX;
use shardgate_node::NodeConfig;
use shardgate_testkit::http::read_to_close;
use shardgate_testkit::openapi::{METHODS, documented_operations, example_of, resolve};
use shardgate_testkit::{Answer, TestNode, routes_in_source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOCUMENT: &str = include_str!("../openapi.json");
const SERVER_SOURCE: &str = include_str!("../src/server.rs");
const DEADLINE: Duration = Duration::from_secs(15);

/// Every route of `server::router`, by hand: (axum path, methods). Kept in
/// step with the source by
/// `router_routes_are_exactly_the_documented_ones`.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/keys/", &["GET", "PUT", "DELETE", "PATCH"]),
    ("/v1/keys/{*key}", &["GET", "PUT", "DELETE", "PATCH"]),
    ("/v1/batch/get", &["POST"]),
    ("/v1/batch/put", &["POST"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
];

type Reply = Answer;

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("host/node/openapi.json is valid JSON")
}

/// A route of the router as axum spells it -> the document's path template.
fn document_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

// ---------------------------------------------------------------------
fn hand_kept_routes() -> BTreeSet<(String, String)> {
    ROUTES.iter().flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string()))).collect()
}

#[test]
fn router_routes_are_exactly_the_documented_ones() {
    let scanned = routes_in_source(SERVER_SOURCE, "router", &[("KEY_PATH_PREFIX", KEY_PATH_PREFIX)]);
    let kept = hand_kept_routes();
    assert_eq!(scanned, kept, "src/server.rs's router and this test's ROUTES differ: update ROUTES and openapi.json");
    // The scanner finds what it should (it cannot pass by finding nothing).
    assert!(scanned.contains(&("/v1/keys/{*key}".to_string(), "DELETE".to_string())));
    assert!(scanned.contains(&("/v1/keys/".to_string(), "PUT".to_string())));

    let doc = document();
    let documented = documented_operations(&doc);
    // Every route is documented...
    for (path, method) in &kept {
        let path = document_path(path);
        assert!(documented.contains(&(path.clone(), method.clone())), "route {method} {path} is not in openapi.json");
    }
    // ...and the document has nothing the router does not serve (axum answers
    // HEAD on GET routes).
    for (path, method) in &documented {
        let served = kept.iter().any(|(p, m)| document_path(p) == *path && (m == method || (method == "HEAD" && m == "GET")));
        assert!(served, "openapi.json documents {method} {path}, which the router does not serve");
    }
}

#[tokio::test]
async fn openapi_json_is_served_as_the_repo_file() {
    let node = TestNode::start(NodeConfig::default()).await;
    let reply = node.request(Method::GET, "/openapi.json", &[], Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let served: Value = serde_json::from_slice(&reply.body).expect("served document is JSON");
    assert!(served["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "openapi is {}", served["openapi"]);
    assert_eq!(reply.text(), DOCUMENT);
    node.stop().await;
}

fn hex_decode(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

/// The value of parameter `name` for a request built from the document:
/// its `example`.
/// The request body a documented operation describes: the example of its
/// first media type (hex for binary ones), and that media type.
fn example_body(doc: &Value, op: &Value) -> (Option<String>, Bytes) {
    let Some(body) = op.get("requestBody") else {
        return (None, Bytes::new());
    };
    let body = resolve(doc, body);
    let (media, content) = body["content"].as_object().and_then(|c| c.iter().next()).expect("requestBody has content");
    let bytes = if let Some(hex) = content.get("x-shardgate-example-hex").and_then(Value::as_str) {
        hex_decode(hex)
    } else {
        match &content["example"] {
            Value::String(s) => s.clone().into_bytes(),
            Value::Null => Vec::new(),
            other => other.to_string().into_bytes(),
        }
    };
    let media = (media != "*/*").then(|| media.clone());
    (media, Bytes::from(bytes))
}

/// An answer that means the router has no such route: the fallback's 404
/// or axum's 405.
fn is_route_miss(reply: &Reply) -> bool {
    reply.status == StatusCode::METHOD_NOT_ALLOWED || (reply.status == StatusCode::NOT_FOUND && reply.text().contains("no such endpoint"))
}

/// Checks `reply` against the documented responses of `op`: the status is
/// listed; an error body has the documented JSON shape; documented headers
/// of a 2xx are present.
fn check_documented(doc: &Value, what: &str, op: &Value, reply: &Reply) {
    let code = reply.status.as_u16().to_string();
    let response = op["responses"]
        .get(&code)
        .unwrap_or_else(|| panic!("{what}: answered {} which openapi.json does not list (body {:?})", reply.status, reply.text()));
    let response = resolve(doc, response);
    if let Some(json) = response.pointer("/content/application~1json") {
        let schema = resolve(doc, &json["schema"]);
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{what}: documented JSON body is not JSON ({e}): {:?}", reply.text()));
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            assert!(body.get(field).is_some(), "{what}: body lacks required {field}: {body}");
        }
    }
    if reply.status.is_success() {
        // Headers marked `required: false` are sent only in some setups
        // (`shardgate-node-id` with `[node] register`).
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            if header["required"] == false {
                continue;
            }
            assert!(reply.headers.contains_key(name.as_str()), "{what}: documented header {name} missing");
        }
    }
}

#[tokio::test]
async fn every_documented_operation_answers_a_documented_status() {
    let node = TestNode::start(NodeConfig::default()).await;
    let doc = document();

    // The route-miss check is not vacuous: it recognises real misses.
    let miss = node.request(Method::GET, "/v1/no-such-route", &[], Bytes::new()).await;
    assert!(is_route_miss(&miss), "{} {:?}", miss.status, miss.text());
    let wrong_method = node.request(Method::GET, "/v1/batch/get", &[], Bytes::new()).await;
    assert!(is_route_miss(&wrong_method), "{}", wrong_method.status);

    // Writes first, so that reads and deletes find the example key.
    let order = ["PUT", "POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS"];
    let mut operations: Vec<(String, String)> = documented_operations(&doc).into_iter().collect();
    operations.sort_by_key(|(path, method)| (order.iter().position(|m| m == method), path.clone()));
    assert!(operations.len() >= 14, "only {} operations documented", operations.len());

    for (path, method) in &operations {
        let item = &doc["paths"][path];
        let op = &item[method.to_lowercase()];
        let mut params: Vec<&Value> = item["parameters"].as_array().into_iter().flatten().collect();
        params.extend(op["parameters"].as_array().into_iter().flatten());
        // Path parameters from their examples; other parameters only when required.
        let mut url = path.clone();
        while let Some(open) = url.find('{') {
            let close = url[open..].find('}').unwrap() + open;
            let name = url[open + 1..close].to_string();
            url.replace_range(open..=close, &example_of(&doc, &params, &name));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut query: Vec<String> = Vec::new();
        for p in &params {
            let p = resolve(&doc, p);
            if p["required"] == true && p["in"] != "path" {
                let value = example_of(&doc, &params, p["name"].as_str().unwrap());
                match p["in"].as_str() {
                    Some("header") => headers.push((p["name"].as_str().unwrap().into(), value)),
                    Some("query") => query.push(format!("{}={value}", p["name"].as_str().unwrap())),
                    other => panic!("parameter in {other:?}"),
                }
            }
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let (media, body) = example_body(&doc, op);
        if let Some(media) = media {
            headers.push(("content-type".into(), media));
        }
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let reply = node.request(Method::from_bytes(method.as_bytes()).unwrap(), &url, &header_refs, body).await;
        let what = format!("{method} {url}");
        assert!(!is_route_miss(&reply), "{what}: route miss {} {:?}", reply.status, reply.text());
        check_documented(&doc, &what, op, &reply);

        // A documented binary answer decodes as the message kind it names.
        if reply.status == StatusCode::OK
            && let Some(kind) =
                op.pointer("/responses/200/content/application~1vnd.shardgate.batch/x-shardgate-message-kind").and_then(Value::as_u64)
        {
            assert_eq!(reply.headers[header::CONTENT_TYPE], batch::CONTENT_TYPE);
            let limits = shardgate_api::Limits::default();
            match kind {
                2 => drop(batch::decode_get_response(reply.body.clone(), &limits).expect("get response")),
                4 => drop(batch::decode_put_response(reply.body.clone(), &limits).expect("put response")),
                other => panic!("{what}: unexpected response kind {other}"),
            }
        }
    }
    node.stop().await;
}

/// One bad (or conditional) request and what the handler must answer.
struct Case {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// The document's operation that serves it.
    operation: (&'static str, &'static str),
    status: StatusCode,
    /// Must appear in the JSON error message (None: no JSON body).
    message: Option<&'static str>,
}

fn case(
    method: Method,
    path: impl Into<String>,
    operation: (&'static str, &'static str),
    status: StatusCode,
    message: Option<&'static str>,
) -> Case {
    Case { method, path: path.into(), headers: Vec::new(), body: Bytes::new(), operation, status, message }
}

#[tokio::test]
async fn error_answers_are_the_documented_ones() {
    let config = NodeConfig { max_value_size: ByteSize::kib(1), max_batch_keys: 2, ..NodeConfig::default() };
    let node = TestNode::start(config).await;
    let doc = document();
    let key_op = "/v1/keys/{key}";

    let stored = node.request(Method::PUT, "/v1/keys/present", &[], "v").await;
    assert_eq!(stored.status, StatusCode::CREATED);
    let etag = stored.headers[header::ETAG].to_str().unwrap().to_string();
    let long_key = "k".repeat(2000);
    let three_keys = batch::encode_get_request(&[b"a", b"b", b"c"]).unwrap();
    let long_ttl = batch::encode_put_request(&[PutItem {
        key: Bytes::from_static(b"a"),
        condition: WriteCondition::Always,
        ttl_seconds: Some(u32::MAX),
        content_type: Bytes::new(),
        value: Bytes::from_static(b"v"),
    }])
    .unwrap();

    let mut cases = vec![
        case(Method::GET, "/v1/keys/absent", (key_op, "get"), StatusCode::NOT_FOUND, Some("key not found")),
        case(Method::HEAD, "/v1/keys/absent", (key_op, "head"), StatusCode::NOT_FOUND, None),
        case(Method::GET, "/v1/keys/a/b", (key_op, "get"), StatusCode::BAD_REQUEST, Some("one percent-encoded path segment")),
        case(Method::GET, format!("/v1/keys/{long_key}"), (key_op, "get"), StatusCode::URI_TOO_LONG, Some("node.max_key_size")),
        case(Method::PUT, format!("/v1/keys/{long_key}"), (key_op, "put"), StatusCode::URI_TOO_LONG, Some("node.max_key_size")),
        case(Method::DELETE, format!("/v1/keys/{long_key}"), (key_op, "delete"), StatusCode::URI_TOO_LONG, Some("node.max_key_size")),
        case(Method::PUT, "/v1/keys/a?ttl=0", (key_op, "put"), StatusCode::BAD_REQUEST, Some("node.max_ttl")),
        case(Method::PUT, "/v1/keys/a?tll=5", (key_op, "put"), StatusCode::BAD_REQUEST, Some("accepts ttl")),
        case(Method::DELETE, "/v1/keys/present?x=1", (key_op, "delete"), StatusCode::BAD_REQUEST, Some("this endpoint accepts get")),
        case(Method::DELETE, "/v1/keys/absent", (key_op, "delete"), StatusCode::NOT_FOUND, Some("key not found")),
        case(Method::GET, "/v1/keys/", ("/v1/keys/", "get"), StatusCode::BAD_REQUEST, Some("key must not be empty")),
        case(Method::PUT, "/v1/keys/", ("/v1/keys/", "put"), StatusCode::BAD_REQUEST, Some("key must not be empty")),
        case(Method::POST, "/v1/batch/get", ("/v1/batch/get", "post"), StatusCode::BAD_REQUEST, Some("batch is empty")),
        case(Method::POST, "/v1/batch/put", ("/v1/batch/put", "post"), StatusCode::BAD_REQUEST, Some("batch is empty")),
    ];
    let mut c = case(Method::GET, "/v1/keys/present", (key_op, "get"), StatusCode::NOT_MODIFIED, None);
    c.headers.push(("if-none-match", etag.clone()));
    cases.push(c);
    let mut c = case(Method::GET, "/v1/keys/present", (key_op, "get"), StatusCode::BAD_REQUEST, Some("If-None-Match"));
    c.headers.push(("if-none-match", "abc".into()));
    cases.push(c);
    let mut c = case(Method::PUT, "/v1/keys/present", (key_op, "put"), StatusCode::PRECONDITION_FAILED, Some("precondition failed"));
    c.headers.push(("if-none-match", "*".into()));
    cases.push(c);
    let mut c = case(Method::PUT, "/v1/keys/present", (key_op, "put"), StatusCode::BAD_REQUEST, Some("cannot be combined"));
    c.headers.push(("if-none-match", "*".into()));
    c.headers.push(("if-match", "*".into()));
    cases.push(c);
    let mut c = case(Method::PUT, "/v1/keys/a", (key_op, "put"), StatusCode::BAD_REQUEST, Some("the limit is 255 bytes"));
    c.headers.push(("content-type", "t".repeat(256)));
    cases.push(c);
    let mut c = case(Method::PUT, "/v1/keys/a", (key_op, "put"), StatusCode::PAYLOAD_TOO_LARGE, Some("node.max_value_size"));
    c.body = Bytes::from(vec![b'x'; 1025]);
    cases.push(c);
    let mut c = case(Method::DELETE, "/v1/keys/present", (key_op, "delete"), StatusCode::PRECONDITION_FAILED, Some("precondition failed"));
    c.headers.push(("if-match", "\"0000000000000000\"".into()));
    cases.push(c);
    let mut c = case(Method::POST, "/v1/batch/get", ("/v1/batch/get", "post"), StatusCode::PAYLOAD_TOO_LARGE, Some("node.max_batch_keys"));
    c.body = three_keys;
    cases.push(c);
    let mut c = case(Method::POST, "/v1/batch/put", ("/v1/batch/put", "post"), StatusCode::BAD_REQUEST, Some("node.max_ttl"));
    c.body = long_ttl;
    cases.push(c);

    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = node.request(c.method.clone(), &c.path, &headers, c.body).await;
        let short: String = c.path.chars().take(40).collect();
        let what = format!("{} {short}", c.method);
        assert_eq!(reply.status, c.status, "{what}: {:?}", reply.text());
        let op = &doc["paths"][c.operation.0][c.operation.1];
        assert!(op.is_object(), "{what}: no documented operation {:?}", c.operation);
        check_documented(&doc, &what, op, &reply);
        if let Some(needle) = c.message {
            let body: Value = serde_json::from_slice(&reply.body).unwrap();
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{what}: {message:?} lacks {needle:?}");
        }
    }
    node.stop().await;
}

/// Reads one HTTP response head + body from a raw connection until the
/// server closes it.
#[tokio::test]
async fn slow_bodies_and_connection_limit_answer_as_documented() {
    let config = NodeConfig { body_read_timeout: Duration::from_millis(200), max_connections: 1, ..NodeConfig::default() };
    let node = TestNode::start(config).await;
    let doc = document();

    // 408: a body that never completes (the server's own timeout ends it).
    let mut slow = TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(b"PUT /v1/keys/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, slow.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    assert!(doc["paths"]["/v1/keys/{key}"]["put"]["responses"]["408"].is_object());
    drop(slow);

    // 503: the only permitted connection is held (a served request proves it
    // was accepted); the next one is refused before routing. The slow
    // connection's permit is released once the node notices it closed: poll.
    let deadline = std::time::Instant::now() + DEADLINE;
    let _held = loop {
        let mut held = TcpStream::connect(node.addr).await.unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(DEADLINE, held.read_exact(&mut head)).await.unwrap().unwrap();
        if &head == b"HTTP/1.1 200" {
            break held;
        }
        assert_eq!(&head, b"HTTP/1.1 503");
        assert!(std::time::Instant::now() < deadline, "the slow connection's permit was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut refused = TcpStream::connect(node.addr).await.unwrap();
    refused.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("node.max_connections"), "{answer}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                assert!(op["responses"]["503"].is_object(), "{method} {path} does not document 503");
            }
        }
    }
    node.stop().await;
}

/// With `node.data_token` set, every documented `/v1/` operation answers a
/// request without a token 401 and one with another token 403, both
/// documented (with the `dataToken` security scheme), and the open routes
/// stay open.
#[tokio::test]
async fn token_refusals_are_documented_on_every_data_route() {
    let node = TestNode::start(NodeConfig { data_token: Some("right".into()), ..NodeConfig::default() }).await;
    let doc = document();
    assert_eq!(doc["components"]["securitySchemes"]["dataToken"]["scheme"], "bearer");
    let mut checked = 0;
    for (path, method) in documented_operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let url = path.replace("{key}", "k");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        if !path.starts_with("/v1/") {
            let reply = node.request(m, &url, &[], Bytes::new()).await;
            assert_eq!(reply.status, StatusCode::OK, "{method} {url} must stay open");
            continue;
        }
        assert!(
            op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("dataToken").is_some())),
            "{method} {path}: no dataToken security requirement"
        );
        let missing = node.request(m.clone(), &url, &[], Bytes::new()).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{method} {url}");
        check_refusal(&doc, &format!("{method} {url} without a token"), op, &missing);
        let wrong = node.request(m, &url, &[("authorization", "Bearer wrong")], Bytes::new()).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{method} {url}");
        check_refusal(&doc, &format!("{method} {url} with a wrong token"), op, &wrong);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} data operations checked");
    node.stop().await;
}

/// A refusal is documented for `op`; a HEAD answer has no body to check.
fn check_refusal(doc: &Value, what: &str, op: &Value, reply: &Reply) {
    if what.starts_with("HEAD ") {
        let code = reply.status.as_u16().to_string();
        assert!(op["responses"].get(&code).is_some(), "{what}: {code} not documented");
        assert!(reply.body.is_empty(), "{what}: HEAD answer has a body");
    } else {
        check_documented(doc, what, op, reply);
        assert!(String::from_utf8_lossy(&reply.body).contains("node.data_token"), "{what}: {:?}", reply.text());
    }
}
