//! The proxy serves its OpenAPI document (`host/proxy/openapi.json`) at
//! `GET /openapi.json`; the document lists exactly the routes of the
//! proxy's route table (`shardgate_proxy::server::ROUTES`), method by
//! method; every parameter-free GET the document lists is a route the
//! proxy answers (not its "no such endpoint" 404). Data routes (`/v1/`)
//! document `proxy.data_token` (401/403); the others do not.

use std::collections::BTreeSet;

use http::Method;
use serde_json::Value;
use shardgate_proxy::server::{Handler, PathPattern, ROUTES, route_templates};
use shardgate_testkit::openapi::documented_operations;
use shardgate_testkit::{ClusterSpec, LocalCluster};

const DOCUMENT: &str = include_str!("../openapi.json");

/// (path template, METHOD) of every route in the proxy's table.
fn table_operations() -> BTreeSet<(String, String)> {
    route_templates().into_iter().flat_map(|(path, methods)| methods.into_iter().map(move |m| (path.clone(), m.to_string()))).collect()
}

#[test]
fn the_route_table_is_exactly_the_documented_operations() {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("host/proxy/openapi.json is valid JSON");
    let documented = documented_operations(&doc);
    let table = table_operations();
    // The proxy answers HEAD wherever it answers GET (as GET without a
    // body, like the node), so the document may leave HEAD out there.
    let mut served: BTreeSet<(String, String)> = documented.clone();
    for (path, method) in &documented {
        if method == "GET" {
            served.insert((path.clone(), "HEAD".to_string()));
        }
    }
    for op in &table {
        assert!(served.contains(op), "route {} {} is in the table but not in openapi.json", op.1, op.0);
    }
    for op in &served {
        assert!(table.contains(op), "{} {} is in openapi.json but not in the route table", op.1, op.0);
    }
    // The comparison cannot pass by comparing nothing.
    for op in
        [("/v1/keys/{key}", "DELETE"), ("/v1/keys/", "PUT"), ("/v1/batch/put", "POST"), ("/v1/owners/{key}", "GET"), ("/status", "HEAD")]
    {
        assert!(table.contains(&(op.0.to_string(), op.1.to_string())), "{op:?} missing from the table");
    }
    assert!(documented.len() >= 16, "only {} documented operations", documented.len());
}

#[test]
fn routes_match_in_order_without_overlap() {
    let handler = |path: &str| ROUTES.iter().find(|r| r.path.matches(path)).map(|r| r.handler);
    assert_eq!(handler("/v1/keys/a"), Some(Handler::Key));
    assert_eq!(handler("/v1/keys/"), Some(Handler::Key));
    assert_eq!(handler("/v1/owners/a"), Some(Handler::Owners));
    assert_eq!(handler("/v1/batch/get"), Some(Handler::BatchGet));
    assert_eq!(handler("/v1/batch/get/x"), None);
    assert_eq!(handler("/status"), Some(Handler::Status));
    assert_eq!(handler("/v1/keys"), None);
    // No path is matched by two routes, so the order only matters for speed.
    let probe = |p: PathPattern| match p {
        PathPattern::Exact(p) => p.to_string(),
        PathPattern::Prefix { prefix, .. } => format!("{prefix}k"),
    };
    for (i, a) in ROUTES.iter().enumerate() {
        for b in &ROUTES[i + 1..] {
            assert!(!b.path.matches(&probe(a.path)) && !a.path.matches(&probe(b.path)), "{a:?} and {b:?} overlap");
        }
    }
    // A route's methods (the bits dispatch checks) are the ones its 405 names.
    for r in ROUTES {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::POST, Method::PATCH, Method::OPTIONS] {
            assert_eq!(r.methods.allows(&method), r.methods.names().any(|n| n == method.as_str()), "{method} on {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_its_plain_gets_are_routes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(ClusterSpec::new(1, 1, 1, dir.path())).await.unwrap();
    let base = cluster.proxies[0].addr.clone();
    let http = shardgate_tls::http_client_system_roots().no_proxy().build().unwrap();
    let r = http.get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.unwrap();
    assert_eq!(text, include_str!("../openapi.json"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.contains('{') || item.get("get").is_none() || path.ends_with('/') {
            continue;
        }
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(!(status == 404 && body.contains("no such endpoint")), "{path} is documented but not routed");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} paths checked");
    // `proxy.data_token` is documented on every data route and only there.
    assert_eq!(doc["components"]["securitySchemes"]["dataToken"]["scheme"], "bearer");
    let mut guarded = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "head", "put", "delete", "post"].contains(&method.as_str()) {
                continue;
            }
            let data = path.starts_with("/v1/");
            let documents_401 = ["401", "403", "429"].iter().all(|s| op["responses"].get(s).is_some());
            assert_eq!(op.get("security").is_some(), data, "{method} {path}: security listed iff a /v1/ route");
            assert_eq!(documents_401, data, "{method} {path}: 401/403/429 documented iff a /v1/ route");
            guarded += usize::from(data);
        }
    }
    assert!(guarded >= 10, "only {guarded} data operations");
    let r = http.get(format!("{base}/no/such/path")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the miss check can fail");
    cluster.shutdown().await;
}
