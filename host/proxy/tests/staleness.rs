//! How stale the proxy's routing may be, visible and bounded (issue 13.3):
//! a real local cluster (meta, nodes, proxies), then every meta member
//! stopped. `/status` names the member followed and the age of the last
//! word from it; with `proxy.max_staleness` set, writes are refused (503
//! naming the setting) and `/readyz` reports not ready once that age passes
//! it, while reads keep being served from the last epoch (fail static).

mod cluster;

use std::time::Duration;

use cluster::*;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_meta_writes_are_refused_after_max_staleness_and_reads_are_served() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, |spec| spec.proxy.max_staleness = Some(Duration::from_secs(1))).await;
    let epoch = activate(&cluster, "rendezvous", "", 1).await;
    let http = Http::new();
    let proxy = cluster.proxies[0].addr.clone();
    let put = http.put(&proxy, b"k", "v").await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());

    // While meta answers: following a member, fresh, ready.
    let status = poll("the proxy follows a meta member", Duration::from_secs(10), || async {
        let s = http.send(Method::GET, &format!("{proxy}/status"), &[], "").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&s.body).ok()?;
        v["meta"]["member"].is_string().then_some(v)
    })
    .await;
    let metas: Vec<String> = cluster.metas.iter().map(|m| m.addr.clone()).collect();
    assert!(metas.contains(&status["meta"]["member"].as_str().unwrap().to_string()), "{status}");
    assert_eq!(status["meta"]["stale"], false, "{status}");
    assert_eq!(status["meta"]["max_staleness_ms"], 1000, "{status}");
    assert_eq!(http.send(Method::GET, &format!("{proxy}/readyz"), &[], "").await.unwrap().status, StatusCode::OK);

    // Meta goes away entirely.
    for m in &mut cluster.metas {
        m.stop().await.unwrap();
    }
    let stale = poll("the proxy reports its routing stale", Duration::from_secs(15), || async {
        let s = http.send(Method::GET, &format!("{proxy}/status"), &[], "").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&s.body).ok()?;
        (v["meta"]["stale"] == true).then_some(v)
    })
    .await;
    assert!(stale["meta"]["staleness_ms"].as_u64().unwrap() >= 1000, "{stale}");
    assert!(stale["meta"]["member"].is_null(), "no stream is open: {stale}");

    // Writes: 503 naming the setting; nothing written.
    let put = http.put(&proxy, b"k2", "v2").await.unwrap();
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.text());
    assert!(put.text().contains("proxy.max_staleness"), "{}", put.text());
    assert_eq!(put.epoch(), Some(epoch));
    let del = http.delete(&proxy, b"k").await.unwrap();
    assert_eq!(del.status, StatusCode::SERVICE_UNAVAILABLE, "{}", del.text());
    // Reads: served from the last epoch.
    let got = http.get(&proxy, b"k").await.unwrap();
    assert_eq!((got.status, got.text(), got.epoch()), (StatusCode::OK, "v".to_string(), Some(epoch)));
    let miss = http.get(&proxy, b"k2").await.unwrap();
    assert_eq!(miss.status, StatusCode::NOT_FOUND, "the refused write stored nothing");
    // Not ready, saying why; the staleness and the refusals are metrics.
    let ready = http.send(Method::GET, &format!("{proxy}/readyz"), &[], "").await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("proxy.max_staleness"), "{}", ready.text());
    let metrics = http.metrics(&proxy).await.unwrap();
    assert!(metric(&metrics, "shardgate_proxy_meta_staleness_seconds") > 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "shardgate_proxy_stale_writes_refused_total"), 2.0, "{metrics}");

    cluster.shutdown().await;
}
