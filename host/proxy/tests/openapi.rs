//! The proxy serves its OpenAPI document (`host/proxy/openapi.json`) at
//! `GET /openapi.json`, and every parameter-free GET the document lists is a
//! route the proxy answers (not its "no such endpoint" 404). Data routes
//! (`/v1/`) document `proxy.data_token` (401/403); the others do not.

use serde_json::Value;
use shardgate_testkit::{ClusterSpec, LocalCluster};

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
