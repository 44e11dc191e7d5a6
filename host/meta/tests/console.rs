//! The console's server side without a browser, on real clusters over real
//! sockets: `/ui` and its assets (content types, the Content-Security-Policy,
//! 404 for an unknown asset, 405 for a method other than GET/HEAD, open with
//! `meta.admin_token`, over TLS with `meta.tls`); `GET /v1/proxies` with a
//! real proxy reporting to every member and converging after an activation;
//! `POST /v1/proxies/report` open with the token and bounded; `POST
//! /v1/lookup` agreeing with the proxy's own `GET /v1/owners/{key}`. (The
//! registry's entry bound and TTL: unit tests in `src/proxies.rs`.)

mod common;

use std::time::Duration;

use common::{TestCluster, http, poll};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use shardgate_meta::console::CONTENT_SECURITY_POLICY;
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, Change, LookupRequest, PreviewRequest, ProxyList};
use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

const TOKEN: &str = "console-token";

async fn check_console(client: &reqwest::Client, base: &str) {
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/chart.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let resp = client.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            let body = resp.bytes().await.unwrap();
            assert_eq!(body.is_empty(), method == Method::HEAD, "{method} {path}");
        }
    }
    let csp = CONTENT_SECURITY_POLICY;
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    let page = client.get(format!("{base}/ui")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<script src=\"/ui/app.js\""), "{page}");

    for path in ["/ui/nope.js", "/ui/index.html", "/ui/app.js.map"] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = body_of(resp).await;
        assert_eq!(body["kind"], "not_found", "{path}: {body}");
    }
    for (method, path) in [(Method::POST, "/ui"), (Method::PUT, "/ui/app.js"), (Method::DELETE, "/ui")] {
        let resp = client.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD", "{method} {path}");
        let body: Value = body_of(resp).await;
        assert_eq!(body["kind"], "method_not_allowed");
    }
}

#[tokio::test]
async fn ui_is_served_with_its_content_types_and_csp_and_open_with_a_token() {
    let cluster = TestCluster::start(1, |c| c.admin_token = Some(TOKEN.into())).await;
    check_console(&http(), &cluster.addr(1)).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn ui_is_served_over_tls_with_meta_tls() {
    let cluster = TestCluster::start_tls(1, |_| {}).await;
    let ca = std::fs::read(&cluster.tls.as_ref().unwrap().ca).unwrap();
    let client = shardgate_tls::http_client(Some(&cluster.tls.as_ref().unwrap().ca)).unwrap().no_proxy().build().unwrap();
    assert!(!ca.is_empty());
    let base = cluster.addr(1);
    assert!(base.starts_with("https://"), "{base}");
    check_console(&client, &base).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn proxy_reports_are_open_bounded_and_local() {
    let cluster = TestCluster::start(1, |c| c.admin_token = Some(TOKEN.into())).await;
    let base = cluster.addr(1);
    let client = http();
    // Open without the token (a proxy holds none); writes still need it.
    let report = json!({"id": "http://10.0.0.9:7000", "epoch": 0, "interval_ms": 2000});
    let resp = client
        .post(format!("{base}/v1/proxies/report"))
        .header("content-type", "application/json")
        .body(report.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let refused = client.post(format!("{base}/v1/nodes")).body(json!({"id": "a", "addr": "http://h:1"}).to_string()).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let list: ProxyList = body_of(client.get(format!("{base}/v1/proxies")).send().await.unwrap()).await;
    assert_eq!((list.member, list.ttl_ms, list.proxies.len()), (1, 60_000, 1));
    assert_eq!(list.proxies[0].id, "http://10.0.0.9:7000");
    assert!(list.proxies[0].converged && !list.proxies[0].silent);

    for (body, message) in [
        (json!({"id": "", "epoch": 1}), "empty"),
        (json!({"id": "x".repeat(513), "epoch": 1}), "MAX_PROXY_ID_BYTES"),
        (json!({"id": "p", "epoch": 1, "last_error": "e".repeat(2049)}), "MAX_PROXY_TEXT_BYTES"),
        (json!({"id": "p"}), "missing field `epoch`"),
        (json!({"id": "p", "epoch": -1}), "invalid value"),
    ] {
        let resp = client.post(format!("{base}/v1/proxies/report")).body(body.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let e: Value = body_of(resp).await;
        assert!(e["error"].as_str().unwrap().contains(message), "{e}");
    }
    // Nothing bad was kept.
    let list: ProxyList = body_of(client.get(format!("{base}/v1/proxies")).send().await.unwrap()).await;
    assert_eq!(list.proxies.len(), 1);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_proxy_reports_total{outcome=\"kept\"} 1"), "{metrics}");
    assert!(metrics.contains("shardgate_meta_proxies 1"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_reports_to_every_member_and_converges_after_an_activation() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(ClusterSpec::new(3, 3, 1, dir.path())).await.unwrap();
    cluster.register_nodes().await.unwrap();
    let first = cluster.activate_builtin("rendezvous", "", 2).await.unwrap();
    cluster.wait_for_epoch(first.epoch, Duration::from_secs(30)).await.unwrap();
    let proxy_id = cluster.proxies[0].addr.clone();

    // Every member lists the proxy (it reports to all of them), converged.
    for member in &cluster.metas {
        let one = MetaClient::new(vec![member.addr.clone()]);
        let list = poll(&format!("{} lists the proxy on epoch {}", member.id, first.epoch), Duration::from_secs(30), || {
            let one = one.clone();
            let proxy_id = proxy_id.clone();
            async move {
                let list = one.proxies().await.ok()?;
                list.proxies.iter().any(|p| p.id == proxy_id && p.epoch == first.epoch && p.converged).then_some(list)
            }
        })
        .await;
        let p = &list.proxies[0];
        assert_eq!((p.behind, p.silent, p.meta_epoch), (0, false, first.epoch), "{p:?}");
        assert!(p.following.as_deref().is_some_and(|f| cluster.metas.iter().any(|m| m.addr == f)), "{p:?}");
    }

    // A new routing: the list shows the proxy catching up to it.
    let jump = cluster.meta.upload_strategy(shardgate_builtins::builtin("jump").unwrap().component.to_vec()).await.unwrap();
    let second = cluster.meta.activate(&jump.hash, &Activation { config: String::new(), replicas: 1 }).await.unwrap();
    let list = poll("the proxy converged on the new epoch", Duration::from_secs(30), || {
        let meta = cluster.meta.clone();
        async move { meta.proxies().await.ok().filter(|l| l.epoch == second.epoch && l.proxies.iter().all(|p| p.converged)) }
    })
    .await;
    assert_eq!(list.proxies[0].epoch, second.epoch);

    // Key lookup answers what the proxy routes by, and a candidate's owners
    // are what activating it gives.
    let http = http();
    for key in ["user:42", "a", "ключ"] {
        let lookup = cluster.meta.lookup(&LookupRequest { key: key.into(), candidate: None }).await.unwrap();
        let url = format!("{}/v1/owners/{}", proxy_id, utf8_percent(key));
        let owners: Value = body_of(http.get(&url).send().await.unwrap()).await;
        assert_eq!(owners["epoch"], lookup.epoch, "{key}");
        assert_eq!(owners["owners"], json!(lookup.active.clone().unwrap()), "{key}");
        assert_eq!(lookup.active.as_ref().unwrap().len(), 1);
    }
    let rendezvous = cluster.meta.strategies().await.unwrap().into_iter().find(|s| s.name == "rendezvous").unwrap();
    let candidate = PreviewRequest { hash: Some(rendezvous.hash.clone()), replicas: Some(3), ..Default::default() };
    let before = cluster.meta.lookup(&LookupRequest { key: "user:42".into(), candidate: Some(candidate) }).await.unwrap();
    let third = cluster.meta.apply(vec![Change::Activate { hash: rendezvous.hash, config: String::new(), replicas: 3 }]).await.unwrap();
    let after = cluster.meta.lookup(&LookupRequest { key: "user:42".into(), candidate: None }).await.unwrap();
    assert_eq!(after.epoch, third.epoch);
    assert_eq!(before.candidate, after.active);
    assert_eq!(after.active.as_ref().unwrap().len(), 3);
    cluster.shutdown().await;
}

/// Percent-encodes every byte outside the unreserved set.
fn utf8_percent(key: &str) -> String {
    key.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn body_of<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    let bytes = resp.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}
