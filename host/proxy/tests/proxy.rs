//! The proxy against a real in-process cluster: 3 meta members (Raft), 3
//! cache nodes and 2 proxies on 127.0.0.1:0, talking HTTP over real sockets.

mod cluster;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cluster::*;
use http::{Method, StatusCode};
use shardgate_api::batch::{self, GetResult, PutItem, PutResult};
use shardgate_api::etag::WriteCondition;
use shardgate_meta_client::RoutingState;
use shardgate_strategy::{Limits, NodeSpec, Router, Sandbox};

/// The strategy meta has active, configured locally: the reference the
/// proxies' routing is checked against.
async fn reference_router(cluster: &LocalCluster) -> (RoutingState, Router, Vec<String>) {
    let state = cluster.meta.routing().await.expect("routing state");
    let hash = state.strategy.as_ref().expect("a strategy is active").hash.clone();
    let bytes = cluster.meta.component(&hash).await.expect("component");
    let strategy = Sandbox::new(Limits::default()).unwrap().load(&bytes).expect("component loads");
    let nodes: Vec<NodeSpec> = state.active_nodes().map(|n| NodeSpec::new(n.id.clone(), n.weight, n.zone.clone())).collect();
    let ids = nodes.iter().map(|n| n.id.clone()).collect();
    let router = strategy.configure(&state.config, &nodes, state.replicas).expect("configures");
    (state, router, ids)
}

fn expected_owner(router: &Router, ids: &[String], key: &[u8]) -> String {
    ids[router.route(key).unwrap()[0] as usize].clone()
}

/// Which nodes hold `key`, asked directly.
async fn holders(http: &Http, cluster: &LocalCluster, key: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for n in cluster.nodes.iter().filter(|n| n.is_running()) {
        if http.get(&n.addr, key).await.unwrap().status == StatusCode::OK {
            out.push(n.id.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_node_through_either_proxy_and_epochs_match_meta() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, |_| {}).await;
    let epoch = activate(&cluster, "rendezvous", "", 1).await;
    let (state, router, ids) = reference_router(&cluster).await;
    assert_eq!(state.epoch, epoch);
    let http = Http::new();
    let (p0, p1) = (cluster.proxies[0].addr.clone(), cluster.proxies[1].addr.clone());
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..120 {
        let key = format!("user:{i}");
        let put = http.put(&p0, key.as_bytes(), format!("v{i}")).await.unwrap();
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
        assert_eq!(put.epoch(), Some(epoch));
        let got = http.get(&p1, key.as_bytes()).await.unwrap();
        assert_eq!((got.status, got.text()), (StatusCode::OK, format!("v{i}")));
        assert_eq!(got.epoch(), Some(epoch));
        // The proxy's ETag is the owning node's.
        let owner = expected_owner(&router, &ids, key.as_bytes());
        assert_eq!(holders(&http, &cluster, key.as_bytes()).await, vec![owner.clone()], "{key}");
        let direct = http.get(&cluster.nodes.iter().find(|n| n.id == owner).unwrap().addr, key.as_bytes()).await.unwrap();
        assert_eq!(direct.headers.get("etag"), got.headers.get("etag"));
        for p in [&p0, &p1] {
            let o = http.owners(p, key.as_bytes()).await.unwrap();
            assert_eq!((o.epoch, o.owners), (epoch, vec![owner.clone()]));
        }
        *per_node.entry(owner).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "every node owns keys: {per_node:?}");
    // Misses, deletes and bad input answer like a node, with the epoch.
    let miss = http.get(&p1, b"never-written").await.unwrap();
    assert_eq!((miss.status, miss.epoch()), (StatusCode::NOT_FOUND, Some(epoch)));
    assert_eq!(http.delete(&p1, b"user:1").await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(http.get(&p0, b"user:1").await.unwrap().status, StatusCode::NOT_FOUND);
    let node = &cluster.nodes[0].addr;
    for url in ["/v1/keys/", "/v1/keys/a/b", "/v1/keys/k?ttl=0", "/v1/keys/k?tll=5"] {
        let via_proxy = http.send(Method::PUT, &format!("{p0}{url}"), &[], "x").await.unwrap();
        let via_node = http.send(Method::PUT, &format!("{node}{url}"), &[], "x").await.unwrap();
        // The same answer, except that a proxy names its own limits.
        let proxy_text = via_proxy.text().replace("proxy.max_", "node.max_");
        assert_eq!((via_proxy.status, proxy_text), (via_node.status, via_node.text()), "{url}");
        if url.contains("ttl=0") {
            assert!(via_proxy.text().contains("proxy.max_ttl"), "{}", via_proxy.text());
        }
    }
    // HEAD answers like GET without a body, as a node does.
    let (a, b) = (
        http.send(Method::HEAD, &format!("{p0}/v1/keys/user:5"), &[], Bytes::new()).await.unwrap(),
        http.send(Method::HEAD, &format!("{node}/v1/keys/user:5"), &[], Bytes::new()).await.unwrap(),
    );
    let node_holding = holders(&http, &cluster, b"user:5").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers.get("content-length").unwrap(), "2");
    if node_holding == vec![cluster.nodes[0].id.clone()] {
        assert_eq!(a.headers.get("etag"), b.headers.get("etag"));
    }
    // Methods and paths outside the key routes answer like a node's too:
    // HEAD as GET without a body, 405 with `Allow` for a known path (and
    // the same JSON error naming the method).
    for (method, path) in [
        (Method::GET, "/v1/batch/get"),
        (Method::PUT, "/v1/batch/put"),
        (Method::HEAD, "/healthz"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/metrics"),
        (Method::HEAD, "/openapi.json"),
        (Method::PATCH, "/v1/keys/x"),
        (Method::TRACE, "/v1/keys/x"),
        (Method::GET, "/nope"),
    ] {
        let via_proxy = http.send(method.clone(), &format!("{p0}{path}"), &[], Bytes::new()).await.unwrap();
        let via_node = http.send(method.clone(), &format!("{node}{path}"), &[], Bytes::new()).await.unwrap();
        let allow = |r: &cluster::Answer| r.headers.get("allow").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            (via_proxy.status, allow(&via_proxy), via_proxy.text()),
            (via_node.status, allow(&via_node), via_node.text()),
            "{method} {path}"
        );
    }
    let big = vec![b'k'; 2000];
    let (a, b) = (http.get(&p0, &big).await.unwrap(), http.get(node, &big).await.unwrap());
    assert_eq!(a.status, b.status);
    assert_eq!(a.text(), "{\"error\":\"key is 2000 bytes; the limit proxy.max_key_size is 1024 bytes\"}");
    assert_eq!(b.text(), "{\"error\":\"key is 2000 bytes; the limit node.max_key_size is 1024 bytes\"}");
    // Conditional writes keep node semantics through the proxy.
    let add_url = format!("{p0}/v1/keys/cas");
    let add = || http.send(Method::PUT, &add_url, &[("if-none-match", "*")], "1");
    assert_eq!(add().await.unwrap().status, StatusCode::CREATED);
    assert_eq!(add().await.unwrap().status, StatusCode::PRECONDITION_FAILED);
    let etag = http.get(&p1, b"cas").await.unwrap().headers["etag"].to_str().unwrap().to_string();
    let cas = http.send(Method::PUT, &format!("{p1}/v1/keys/cas"), &[("if-match", &etag)], "2").await.unwrap();
    assert_eq!(cas.status, StatusCode::NO_CONTENT);
    let stale = http.send(Method::PUT, &format!("{p0}/v1/keys/cas"), &[("if-match", &etag)], "3").await.unwrap();
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    // Status reports the epoch and strategy.
    let s = cluster.proxy_status(1).await.unwrap();
    assert_eq!((s.epoch, s.strategy.unwrap().name.as_str()), (epoch, "rendezvous"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategy_swap_under_load_fails_no_request() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, |_| {}).await;
    let e1 = activate(&cluster, "rendezvous", "", 1).await;
    let http = Http::new();
    let proxies: Vec<String> = cluster.proxies.iter().map(|p| p.addr.clone()).collect();
    for i in 0..200 {
        assert_eq!(http.put(&proxies[0], format!("pre:{i}").as_bytes(), format!("p{i}")).await.unwrap().status, StatusCode::CREATED);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..4usize {
        let (http, proxies, stop, done) = (http.clone(), proxies.clone(), stop.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut failures: Vec<String> = Vec::new();
            let mut epochs = Vec::new();
            let own = &proxies[c % 2];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("c{c}:{n}");
                match http.put(own, key.as_bytes(), key.clone()).await {
                    Ok(a) if a.status.is_success() => epochs.push(a.epoch().unwrap()),
                    other => failures.push(format!("PUT {key}: {other:?}")),
                }
                match http.get(own, key.as_bytes()).await {
                    Ok(a) if a.status == StatusCode::OK && a.text() == key => epochs.push(a.epoch().unwrap()),
                    other => failures.push(format!("GET {key}: {other:?}")),
                }
                let j = (n * 7 + c) % 200;
                match http.get(&proxies[n % 2], format!("pre:{j}").as_bytes()).await {
                    Ok(a) if a.status == StatusCode::OK && a.text() == format!("p{j}") => {}
                    other => failures.push(format!("GET pre:{j}: {other:?}")),
                }
                done.fetch_add(3, Ordering::Relaxed);
            }
            (failures, epochs)
        }));
    }
    let before = done.load(Ordering::Relaxed);
    poll("load before the swap", Duration::from_secs(30), || async { (done.load(Ordering::Relaxed) > before + 300).then_some(()) }).await;
    let receipt = cluster.activate_builtin("ketama", "", 1).await.unwrap();
    cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.unwrap();
    let after = done.load(Ordering::Relaxed);
    poll("load after the swap", Duration::from_secs(30), || async { (done.load(Ordering::Relaxed) > after + 300).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let mut all_epochs = Vec::new();
    for c in clients {
        let (failures, epochs) = c.await.unwrap();
        assert!(failures.is_empty(), "{} failed requests, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        all_epochs.extend(epochs);
    }
    assert!(all_epochs.contains(&e1) && all_epochs.contains(&receipt.epoch), "load ran on both sides of the swap");
    assert!(all_epochs.iter().all(|e| *e == e1 || *e == receipt.epoch));
    for i in 0..2 {
        let s = cluster.proxy_status(i).await.unwrap();
        assert_eq!((s.epoch, s.strategy.unwrap().name.as_str()), (receipt.epoch, "ketama"));
    }
    // After the swap every key routes by ketama, through either proxy.
    let (_, router, ids) = reference_router(&cluster).await;
    for i in 0..60 {
        let key = format!("post:{i}");
        assert_eq!(http.put(&proxies[i % 2], key.as_bytes(), "x").await.unwrap().status, StatusCode::CREATED);
        let owner = expected_owner(&router, &ids, key.as_bytes());
        assert_eq!(holders(&http, &cluster, key.as_bytes()).await, vec![owner.clone()], "{key}");
        assert_eq!(http.owners(&proxies[(i + 1) % 2], key.as_bytes()).await.unwrap().owners, vec![owner]);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_node_moves_only_its_keys() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, |_| {}).await;
    activate(&cluster, "rendezvous", "", 1).await;
    let http = Http::new();
    let (p0, p1) = (cluster.proxies[0].addr.clone(), cluster.proxies[1].addr.clone());
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let mut before = Vec::new();
    for k in &keys {
        before.push(http.owners(&p0, k.as_bytes()).await.unwrap().owners[0].clone());
        assert_eq!(http.put(&p0, k.as_bytes(), k.clone()).await.unwrap().status, StatusCode::CREATED);
    }
    let receipt = cluster.meta.remove_node("node-3").await.unwrap();
    cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.unwrap();
    let mut moved = 0;
    for (k, old) in keys.iter().zip(&before) {
        let a = http.owners(&p0, k.as_bytes()).await.unwrap();
        let b = http.owners(&p1, k.as_bytes()).await.unwrap();
        assert_eq!((a.epoch, &a.owners), (receipt.epoch, &b.owners));
        let new = &a.owners[0];
        if old == "node-3" {
            assert_ne!(new, "node-3");
            moved += 1;
        } else {
            assert_eq!(new, old, "{k} moved although its owner stayed");
        }
    }
    let owned_by_3 = before.iter().filter(|o| *o == "node-3").count();
    assert_eq!(moved, owned_by_3);
    assert!(owned_by_3 > 50, "node-3 owned {owned_by_3} of 300 keys");
    // Every key is still readable (node-3's keys through the migration window).
    for k in &keys {
        let a = http.get(&p1, k.as_bytes()).await.unwrap();
        assert_eq!((a.status, a.text()), (StatusCode::OK, k.clone()), "{k}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_window_keeps_keys_written_before_a_swap() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, |_| {}).await;
    // A third proxy with the window off shows what the window prevents.
    let mut no_window = cluster_proxy_config();
    no_window.migration_window = Duration::ZERO;
    cluster.start_proxy_with(no_window).await.unwrap();
    let e1 = activate(&cluster, "jump", "", 1).await;
    let http = Http::new();
    let (p0, p1, p2) = (cluster.proxies[0].addr.clone(), cluster.proxies[1].addr.clone(), cluster.proxies[2].addr.clone());
    let singles: Vec<String> = (0..150).map(|i| format!("s{i}")).collect();
    for k in &singles {
        assert_eq!(http.put(&p0, k.as_bytes(), k.clone()).await.unwrap().status, StatusCode::CREATED);
    }
    let batched: Vec<Bytes> = (0..150).map(|i| Bytes::from(format!("b{i}"))).collect();
    let items: Vec<PutItem> = batched
        .iter()
        .map(|k| PutItem {
            key: k.clone(),
            condition: WriteCondition::Always,
            ttl_seconds: None,
            content_type: Bytes::from_static(b"text/plain"),
            value: k.clone(),
        })
        .collect();
    let a = http
        .send(
            Method::POST,
            &format!("{p1}/v1/batch/put"),
            &[("content-type", batch::CONTENT_TYPE)],
            batch::encode_put_request(&items).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((a.status, a.epoch()), (StatusCode::OK, Some(e1)), "{}", a.text());
    let put = batch::decode_put_response(a.body, &shardgate_api::Limits::default()).unwrap();
    assert!(put.iter().all(|r| matches!(r, PutResult::Created { .. })));

    let e2 = activate(&cluster, "maglev", "", 1).await;
    // Without the window, the keys that changed owner are gone.
    let mut lost = Vec::new();
    for k in &singles {
        if http.get(&p2, k.as_bytes()).await.unwrap().status == StatusCode::NOT_FOUND {
            lost.push(k.clone());
        }
    }
    let batch_get = |proxy: String| {
        let http = http.clone();
        let body = batch::encode_get_request(&batched).unwrap();
        async move {
            let a =
                http.send(Method::POST, &format!("{proxy}/v1/batch/get"), &[("content-type", batch::CONTENT_TYPE)], body).await.unwrap();
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            (a.epoch(), batch::decode_get_response(a.body, &shardgate_api::Limits::default()).unwrap())
        }
    };
    let (_, plain) = batch_get(p2.clone()).await;
    let batch_lost = plain.iter().filter(|r| **r == GetResult::Miss).count();
    assert!(lost.len() > 40 && batch_lost > 40, "an unrelated swap loses keys without the window: {} / {batch_lost}", lost.len());

    // With it, every key is found, single or batched.
    for k in &singles {
        let a = http.get(&p0, k.as_bytes()).await.unwrap();
        assert_eq!((a.status, a.text(), a.epoch()), (StatusCode::OK, k.clone(), Some(e2)), "{k}");
    }
    let (epoch, found) = batch_get(p1.clone()).await;
    assert_eq!(epoch, Some(e2));
    for (k, r) in batched.iter().zip(&found) {
        match r {
            GetResult::Hit { value, content_type, .. } => assert_eq!((value, &content_type[..]), (k, &b"text/plain"[..])),
            other => panic!("{k:?}: {other:?}"),
        }
    }
    let m = http.metrics(&p0).await.unwrap();
    assert_eq!(metric(&m, "shardgate_proxy_migration_hits_total") as usize, lost.len());
    // The hits were copied to their new owners: the windowless proxy finds them now.
    for k in &lost {
        assert_eq!(http.get(&p2, k.as_bytes()).await.unwrap().status, StatusCode::OK, "{k}");
    }
    let (_, copied) = batch_get(p2.clone()).await;
    assert!(copied.iter().all(|r| matches!(r, GetResult::Hit { .. })));
    // A delete in the window removes the old copy too: nothing comes back.
    let victim = lost[0].as_bytes();
    assert_eq!(http.delete(&p0, victim).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(http.get(&p0, victim).await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(holders(&http, &cluster, victim).await, Vec::<String>::new());
    // Two swaps in a row: keys untouched in between are found two epochs back.
    let chained: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    for k in &chained {
        assert_eq!(http.put(&p0, k.as_bytes(), k.clone()).await.unwrap().status, StatusCode::CREATED);
    }
    activate(&cluster, "rendezvous", "", 1).await;
    let e4 = activate(&cluster, "ketama", "", 1).await;
    for k in &chained {
        let a = http.get(&p1, k.as_bytes()).await.unwrap();
        assert_eq!((a.status, a.text(), a.epoch()), (StatusCode::OK, k.clone(), Some(e4)), "{k}");
    }
    cluster.shutdown().await;
}

fn cluster_proxy_config() -> shardgate_proxy::ProxyConfig {
    shardgate_proxy::ProxyConfig { health_interval: Duration::from_millis(100), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_node_only_affects_its_keys_and_replicas_keep_them_readable() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, |_| {}).await;
    let epoch = activate(&cluster, "rendezvous", "", 2).await;
    let http = Http::new();
    let (p0, p1) = (cluster.proxies[0].addr.clone(), cluster.proxies[1].addr.clone());
    let keys: Vec<String> = (0..150).map(|i| format!("r{i}")).collect();
    let mut owners = Vec::new();
    for k in &keys {
        let o = http.owners(&p0, k.as_bytes()).await.unwrap();
        assert_eq!(o.owners.len(), 2);
        owners.push(o.owners);
        assert_eq!(http.put(&p0, k.as_bytes(), k.clone()).await.unwrap().status, StatusCode::CREATED);
        // Written to both owners (quorum of 2 is 2).
        let mut held = holders(&http, &cluster, k.as_bytes()).await;
        held.sort();
        let mut want = owners.last().unwrap().clone();
        want.sort();
        assert_eq!(held, want);
    }
    cluster.nodes[1].stop().await.unwrap();
    let dead = "node-2";
    // Every key stays readable: keys with node-2 first are read from their replica.
    for k in &keys {
        let a = http.get(&p1, k.as_bytes()).await.unwrap();
        assert_eq!((a.status, a.text(), a.epoch()), (StatusCode::OK, k.clone(), Some(epoch)), "{k}");
    }
    // Keys of the other nodes keep working for writes too.
    let mut others = 0;
    for (k, o) in keys.iter().zip(&owners) {
        if o.iter().any(|n| n == dead) {
            continue;
        }
        others += 1;
        assert_eq!(http.put(&p0, k.as_bytes(), "new").await.unwrap().status, StatusCode::NO_CONTENT, "{k}");
        assert_eq!(http.get(&p1, k.as_bytes()).await.unwrap().text(), "new");
    }
    assert!(others > 10, "{others} keys avoid node-2");
    // Both proxies eject node-2 and report it.
    for i in 0..2 {
        let s = poll("node-2 ejected", Duration::from_secs(20), || async {
            let s = cluster.proxy_status(i).await.ok()?;
            s.nodes.iter().any(|n| n.id == dead && !n.routable).then_some(s)
        })
        .await;
        let n = s.nodes.iter().find(|n| n.id == dead).unwrap();
        assert!(n.last_error.is_some());
        assert!(s.nodes.iter().filter(|n| n.id != dead).all(|n| n.routable));
    }
    let m = http.metrics(&p0).await.unwrap();
    assert!(m.contains("shardgate_proxy_ejections_total{node=\"node-2\"} 1"), "{m}");
    // Ejected: reads no longer even try node-2.
    for k in &keys {
        assert_eq!(http.get(&p0, k.as_bytes()).await.unwrap().status, StatusCode::OK, "{k}");
    }
    cluster.shutdown().await;
}

/// A TTL change (PATCH, Redis `EXPIRE`) where only some owners hold the
/// value: an owner's 404 acknowledges (it answered, and holds nothing to
/// change), so the change succeeds when any owner had the value and is a
/// 404 only when none had it (schemathesis found the proxy answering 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_change_succeeds_when_only_some_replicas_hold_the_key() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, |_| {}).await;
    activate(&cluster, "rendezvous", "", 2).await;
    let http = Http::new();
    let proxy = cluster.proxies[0].addr.clone();
    let node_addr = |id: &str| cluster.nodes.iter().find(|n| n.id == id).unwrap().addr.clone();
    let patch = |key: &'static str| {
        let url = format!("{proxy}/v1/keys/{key}?ttl=60");
        let http = &http;
        async move { http.send(Method::PATCH, &url, &[], Bytes::new()).await.unwrap() }
    };
    for (key, holder) in [("first-only", 0), ("second-only", 1)] {
        let owners = http.owners(&proxy, key.as_bytes()).await.unwrap().owners;
        assert_eq!(owners.len(), 2, "{key}: {owners:?}");
        // Written straight to one owner: the other one missed the write.
        assert_eq!(http.put(&node_addr(&owners[holder]), key.as_bytes(), "v").await.unwrap().status, StatusCode::CREATED);
        let a = patch(key).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{key} held by {}: {}", owners[holder], a.text());
        let ttl: u64 = a.headers.get("shardgate-ttl-ms").expect("time left").to_str().unwrap().parse().unwrap();
        assert!((59_000..=60_000).contains(&ttl), "{key}: {ttl} ms left");
    }
    let a = patch("nowhere").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trapping_strategy_triggers_fallback_to_last_working_epoch() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, |s| s.proxy.fault_threshold = 3).await;
    let good = activate(&cluster, "rendezvous", "", 1).await;
    let http = Http::new();
    let p0 = cluster.proxies[0].addr.clone();
    for i in 0..30 {
        assert_eq!(http.put(&p0, format!("f{i}").as_bytes(), "v").await.unwrap().status, StatusCode::CREATED);
    }
    // Healthy for 30 calls per instance (admission routes 10 keys), then traps.
    let bad = activate(&cluster, "misbehave", "fault = \"trap\"\nafter = 30\n", 1).await;
    let mut faults = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let status = loop {
        i += 1;
        let a = http.get(&p0, format!("f{}", i % 30).as_bytes()).await.unwrap();
        if a.status.is_server_error() {
            faults.push((a.status, a.text(), a.epoch()));
        }
        let s = cluster.proxy_status(0).await.unwrap();
        if s.fallback.is_some() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no fallback after {i} requests; faults: {faults:?}");
    };
    assert!(faults.len() >= 3, "{faults:?}");
    for (status, text, epoch) in &faults {
        assert_eq!(*status, StatusCode::BAD_GATEWAY);
        assert!(text.contains("strategy fault") && text.contains("trap"), "{text}");
        assert_eq!(*epoch, Some(bad));
    }
    let fb = status.fallback.unwrap();
    assert_eq!((status.epoch, fb.faulty_epoch), (good, bad));
    assert!(status.routing.last_error.unwrap().contains("fell back"));
    // Served by the last working routing: the keys written under it are found.
    for i in 0..30 {
        let a = http.get(&p0, format!("f{i}").as_bytes()).await.unwrap();
        assert_eq!((a.status, a.epoch()), (StatusCode::OK, Some(good)));
    }
    let m = http.metrics(&p0).await.unwrap();
    assert!(metric(&m, "shardgate_proxy_strategy_faults_total") >= 3.0);
    assert_eq!(metric(&m, "shardgate_proxy_fallback_active"), 1.0);
    assert_eq!(metric(&m, "shardgate_proxy_epoch"), good as f64);
    // A new activation ends the fallback.
    let fixed = activate(&cluster, "ketama", "", 1).await;
    assert_eq!(cluster.proxy_status(0).await.unwrap().epoch, fixed);
    assert!(cluster.proxy_status(0).await.unwrap().fallback.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_down_policy_next_owner_or_fail_fast() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, |s| s.proxy.owner_down = shardgate_proxy::OwnerDownPolicy::NextOwner).await;
    let mut fail_fast = cluster_proxy_config();
    fail_fast.owner_down = shardgate_proxy::OwnerDownPolicy::FailFast;
    cluster.start_proxy_with(fail_fast).await.unwrap();
    activate(&cluster, "rendezvous", "", 1).await;
    let http = Http::new();
    let (next, fast) = (cluster.proxies[0].addr.clone(), cluster.proxies[2].addr.clone());
    let keys: Vec<String> = (0..90).map(|i| format!("d{i}")).collect();
    let mut owner = Vec::new();
    for k in &keys {
        owner.push(http.owners(&next, k.as_bytes()).await.unwrap().owners[0].clone());
        assert_eq!(http.put(&next, k.as_bytes(), "old").await.unwrap().status, StatusCode::CREATED);
    }
    cluster.nodes[2].stop().await.unwrap();
    for i in [0, 2] {
        poll("node-3 ejected", Duration::from_secs(20), || async {
            let s = cluster.proxy_status(i).await.ok()?;
            s.nodes.iter().any(|n| n.id == "node-3" && !n.routable).then_some(())
        })
        .await;
    }
    for (k, o) in keys.iter().zip(&owner) {
        if o != "node-3" {
            for p in [&next, &fast] {
                assert_eq!(http.get(p, k.as_bytes()).await.unwrap().text(), "old", "{k}");
            }
            continue;
        }
        // fail_fast: 503 naming the owner that is down.
        let a = http.get(&fast, k.as_bytes()).await.unwrap();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{k}");
        assert!(a.text().contains("node-3") && a.text().contains("fail_fast"), "{}", a.text());
        // next_owner: the key lives on the next owner meanwhile (its old value died with node-3).
        let a = poll("detour routing", Duration::from_secs(10), || async {
            let a = http.put(&next, k.as_bytes(), "new").await.unwrap();
            a.status.is_success().then_some(a)
        })
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}");
        assert_eq!(http.get(&next, k.as_bytes()).await.unwrap().text(), "new");
        let held = holders(&http, &cluster, k.as_bytes()).await;
        assert_eq!(held.len(), 1);
        assert_ne!(held[0], "node-3");
    }
    let m = http.metrics(&next).await.unwrap();
    assert!(metric(&m, "shardgate_proxy_detoured_keys_total") > 0.0);
    cluster.shutdown().await;
}
