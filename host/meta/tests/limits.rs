//! Meta's costly and hostile inputs are bounded (issue 12): preview sample,
//! candidate nodes, replicas and weights are checked and named in the 400;
//! previews over `meta.max_concurrent_previews` get 503 + `Retry-After`;
//! weights outside [0.001, 1000000] are refused wherever they enter; a
//! node address used twice is 409 like a duplicate id; errors echo at most
//! 64 characters of user input; a wrong method is 405 with `Allow` even
//! without a leader; `/healthz` and `/readyz` answer locally and openly.
//!
//! Real one-member clusters on 127.0.0.1:0 (Raft, redb, HTTP), raw requests
//! with reqwest.

mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, http, node};
use serde_json::{Value, json};
use shardgate_meta::MetaConfig;
use shardgate_meta_client::model::Activation;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A one-member cluster with nodes a and b and rendezvous active
/// (replicas 2); `tweak` adjusts the member's config.
async fn cluster_with_routing(tweak: impl Fn(&mut MetaConfig)) -> TestCluster {
    let cluster = TestCluster::start(1, |c| {
        c.write_timeout = Duration::from_secs(20);
        tweak(c)
    })
    .await;
    let client = cluster.client().with_request_timeout(Duration::from_secs(60)).with_retry_for(Duration::from_secs(60));
    client.add_node(&node("a", 9001)).await.unwrap();
    client.add_node(&node("b", 9002)).await.unwrap();
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    let info = client.upload_strategy(component).await.unwrap();
    client.activate(&info.hash, &Activation { config: String::new(), replicas: 2 }).await.unwrap();
    cluster
}

/// POST `body` as JSON to `url`: (status, Retry-After, JSON body).
async fn post(url: &str, body: &Value) -> (u16, Option<String>, Value) {
    let resp = http()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn json_of(resp: reqwest::Response) -> Option<Value> {
    serde_json::from_slice(&resp.bytes().await.ok()?).ok()
}

fn candidates(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"id": format!("n{i}"), "addr": format!("http://10.0.{}.{}:7000", i / 250, i % 250)})).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_limits_are_named_in_the_400_and_the_largest_preview_is_served() {
    let cluster = cluster_with_routing(|_| {}).await;
    let url = format!("{}/v1/preview", cluster.addr(1));
    let cases = [
        (json!({"sample": 100_001}), "sample 100001 must be between 1 and 100000 (MAX_PREVIEW_SAMPLE)"),
        (json!({"sample": 1_000_000}), "must be between 1 and 100000"),
        (json!({"nodes": candidates(1025)}), "1025 candidate nodes; a preview takes at most 1024"),
        (json!({"replicas": 33}), "replicas 33 must be between 1 and 32"),
        (json!({"replicas": 0}), "replicas 0 must be between 1 and 32"),
        (json!({"nodes": [{"id": "a", "addr": "http://h:1", "weight": 5e-324}]}), "weight 5e-324 must be between 0.001 and 1000000"),
        (json!({"nodes": [{"id": "a", "addr": "http://h:1", "weight": 1e7}]}), "must be between 0.001 and 1000000"),
        (json!({"config": "x".repeat(64 * 1024 + 1)}), "strategy config is 65537 bytes; the limit is 65536"),
    ];
    for (body, needle) in cases {
        let (status, _, answer) = post(&url, &body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{answer}");
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }
    // The largest sample over the most candidates is answered, with every
    // candidate in the load report (replicas 32 over 1024 nodes is refused
    // by the strategy's configure fuel instead: 422).
    let start = Instant::now();
    let (status, _, answer) = post(&url, &json!({"sample": 100_000, "replicas": 2, "nodes": candidates(1024)})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sample"], 100_000);
    assert_eq!(answer["load"].as_array().unwrap().len(), 1024 + 2, "the candidates and the current nodes a, b");
    let primaries: u64 = answer["load"].as_array().unwrap().iter().map(|l| l["after"].as_u64().unwrap()).sum();
    assert_eq!(primaries, 100_000);
    println!("largest preview (100000 keys, 1024 candidates, 2 replicas): {:?}", start.elapsed());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_over_max_concurrent_previews_get_503_with_retry_after() {
    let cluster = cluster_with_routing(|c| c.max_concurrent_previews = 1).await;
    let url = format!("{}/v1/preview", cluster.addr(1));
    // A large preview holds the only place while small ones are sent; it
    // is started again until a small one met it (no timing assumption).
    let deadline = Instant::now() + Duration::from_secs(120);
    let busy = 'outer: loop {
        assert!(Instant::now() < deadline, "no preview was refused while another ran");
        let large = {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &json!({"sample": 100_000, "replicas": 2, "nodes": candidates(512)})).await })
        };
        while !large.is_finished() {
            let (status, retry_after, answer) = post(&url, &json!({"sample": 10})).await;
            if status == 503 {
                break 'outer (retry_after, answer, large);
            }
            assert_eq!(status, 200, "{answer}");
        }
        // The large one may itself have met a small one holding the place.
        let (status, _, answer) = large.await.unwrap();
        assert!(status == 200 || answer["kind"] == "busy", "{status} {answer}");
    };
    let (retry_after, answer, large) = busy;
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(answer["kind"], "busy");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("preview: 1 already running on this member, the limit meta.max_concurrent_previews"), "{error}");
    // The large one is served, and its place is free again afterwards.
    let (status, _, answer) = large.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = post(&url, &json!({"sample": 10})).await;
    assert_eq!(status, 200, "{answer}");
    let metrics = http().get(format!("{}/metrics", cluster.addr(1))).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_limited_total{outcome=\"busy_preview\"}"), "{metrics}");
    cluster.shutdown().await;
}

/// `component` with a custom section named `name` appended: still a valid
/// component, with another sha256 (so it is compiled again).
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.push(section.len() as u8);
    out.extend(section);
    out
}

/// POST `bytes` to `/v1/strategies`: (status, Retry-After, JSON body).
async fn upload(base: &str, bytes: Vec<u8>) -> (u16, Option<String>, Value) {
    let resp = http().post(format!("{base}/v1/strategies")).body(bytes).timeout(Duration::from_secs(120)).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, json_of(resp).await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_max_concurrent_admissions_get_503_with_retry_after() {
    let cluster = TestCluster::start(1, |c| {
        c.max_concurrent_admissions = 1;
        c.write_timeout = Duration::from_secs(20);
    })
    .await;
    let base = cluster.addr(1);
    let component = shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec();
    // A real component (compiled: ~0.3 s in a debug build) holds the only
    // place while garbage uploads (refused 422 once they get a place) are
    // sent; a fresh component each round, until one garbage upload met it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    let (retry_after, answer, large) = 'outer: loop {
        assert!(Instant::now() < deadline, "no upload was refused while another was admitted");
        round += 1;
        let large = {
            let (base, bytes) = (base.clone(), with_custom_section(&component, &format!("round-{round}")));
            tokio::spawn(async move { upload(&base, bytes).await })
        };
        let mut probe = 0;
        while !large.is_finished() {
            probe += 1;
            let (status, retry_after, answer) = upload(&base, format!("not wasm {round} {probe}").into_bytes()).await;
            if status == 503 {
                break 'outer (retry_after, answer, large);
            }
            assert_eq!(status, 422, "{answer}");
        }
        let (status, _, answer) = large.await.unwrap();
        assert!(status == 201 || answer["kind"] == "busy", "{status} {answer}");
    };
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(answer["kind"], "busy");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("strategy upload: 1 already running on this member, the limit meta.max_concurrent_admissions"), "{error}");
    let (status, _, answer) = large.await.unwrap();
    assert_eq!(status, 201, "{answer}");
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_limited_total{outcome=\"busy_admission\"}"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_addresses_and_echoed_input_are_bounded() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let base = cluster.addr(1);
    let client = cluster.client();
    client.add_node(&node("a", 9001)).await.unwrap();

    // A weight so small the node would never get a key, or too large.
    for (weight, path, body) in [
        ("5e-324", "/v1/nodes", json!({"id": "w", "addr": "http://127.0.0.1:9100", "weight": 5e-324})),
        ("0.0009", "/v1/nodes", json!({"id": "w", "addr": "http://127.0.0.1:9100", "weight": 0.0009})),
        ("1000000.5", "/v1/changes", json!({"changes": [{"op": "update_node", "id": "a", "weight": 1000000.5}]})),
    ] {
        let resp = http()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let answer: Value = json_of(resp).await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(&format!("weight {weight} must be between 0.001 and 1000000")), "{error}");
    }
    let resp = http()
        .patch(format!("{base}/v1/nodes/a"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"weight": 0.0})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The bounds themselves are accepted.
    client.add_node(&shardgate_meta_client::model::NewNode { weight: 0.001, ..node("lo", 9101) }).await.unwrap();
    client.add_node(&shardgate_meta_client::model::NewNode { weight: 1_000_000.0, ..node("hi", 9102) }).await.unwrap();

    // An address already in use is a conflict, like an id.
    let resp = http()
        .post(format!("{base}/v1/nodes"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"id": "a2", "addr": "http://127.0.0.1:9001"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let answer: Value = json_of(resp).await.unwrap();
    assert_eq!(answer["kind"], "duplicate_addr", "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("\"http://127.0.0.1:9001\" is already used by node \"a\""), "{answer}");
    let resp = http()
        .post(format!("{base}/v1/nodes"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"id": "a", "addr": "http://127.0.0.1:9200"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);

    // A 100 KB id (50 KB in a path: a URI holds at most 64 KiB) comes back
    // as its first 64 characters and "…"; so does a long unknown field name
    // in serde's message, cut in the middle.
    let long = "x".repeat(100_000);
    let long_path = "x".repeat(50_000);
    // (An address is echoed with its scheme: fewer x's before the "…".)
    let echoed = format!("{}…", "x".repeat(50));
    for (method, path, body) in [
        (reqwest::Method::GET, format!("/v1/nodes/{long_path}"), None),
        (reqwest::Method::DELETE, format!("/v1/nodes/{long_path}"), None),
        (reqwest::Method::POST, "/v1/nodes".to_string(), Some(json!({"id": long, "addr": "http://127.0.0.1:9300"}))),
        (reqwest::Method::POST, "/v1/nodes".to_string(), Some(json!({"id": "z", "addr": format!("http://{long}:1")}))),
        (reqwest::Method::DELETE, format!("/v1/raft/members/{long_path}"), None),
        (reqwest::Method::GET, format!("/v1/strategies/{long_path}"), None),
        (reqwest::Method::POST, "/v1/nodes".to_string(), Some(json!({"id": "z", "addr": "http://h:1", long.clone(): 1}))),
    ] {
        let mut rb = http().request(method.clone(), format!("{base}{path}"));
        if let Some(body) = body {
            rb = rb.header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let what = format!("{method} {}", &path[..path.len().min(20)]);
        assert!(status.is_client_error(), "{what}: {status}");
        assert!(text.len() < 600, "{what}: {status}, {} bytes: {}", text.len(), &text[..600]);
        // (The membership routes cut member ids at 32 characters.)
        assert!(text.contains(&echoed) || text.contains("characters left out") || text.contains("xxxxxxxx\\\"…"), "{what}: {text}");
    }
    cluster.shutdown().await;
}

/// A member that has no cluster (no members, no join): no leader.
async fn lonely_member() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), shardgate_meta::MetaError>>, tempfile::TempDir)
{
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = MetaConfig {
        data_dir: dir.path().join("lonely"),
        listen: listener.local_addr().unwrap(),
        admin_token: Some("s3cret".into()),
        ..common::test_config()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shardgate_meta::run(listener, config, async move {
        let _ = stopped.await;
    }));
    common::poll("the lonely member serves", Duration::from_secs(20), || {
        let url = format!("{base}/healthz");
        async move { http().get(&url).send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    (base, stop, task, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_with_allow_even_without_a_leader() {
    let (base, stop, task, _dir) = lonely_member().await;
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/routing", "GET"),
        (reqwest::Method::GET, "/v1/preview", "POST"),
        (reqwest::Method::PUT, "/v1/nodes/a", "GET,PATCH,DELETE"),
        (reqwest::Method::POST, "/v1/raft/members/2", "DELETE"),
    ] {
        let resp = http().request(method.clone(), format!("{base}{path}")).header("authorization", "Bearer s3cret").send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let header = resp.headers()["allow"].to_str().unwrap().replace(' ', "");
        let expected: std::collections::BTreeSet<&str> = allow.split(',').collect();
        let got: std::collections::BTreeSet<&str> = header.split(',').filter(|m| *m != "HEAD").collect();
        assert_eq!(got, expected, "{method} {path}: Allow {header}");
        let answer: Value = json_of(resp).await.unwrap();
        assert_eq!(answer["kind"], "method_not_allowed");
        assert!(answer["error"].as_str().unwrap().contains(&format!("allowed: {}", allow.split(',').next().unwrap())), "{answer}");
    }
    // A right method still needs the leader.
    let resp = http().get(format!("{base}/v1/routing")).send().await.unwrap();
    assert_eq!(resp.status(), 503);

    // Health: the process serves; not ready without a leader, with the
    // reason; both open without the admin token.
    let resp = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await.unwrap(), json!({"status": "ok"}));
    let resp = http().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let answer: Value = json_of(resp).await.unwrap();
    assert_eq!(answer["ready"], false);
    assert!(answer["reason"].as_str().unwrap().starts_with("no leader is known"), "{answer}");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_200_on_a_single_member_cluster() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let url = format!("{}/readyz", cluster.addr(1));
    common::poll("the member is ready", Duration::from_secs(20), || {
        let url = url.clone();
        async move { http().get(&url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    // A single voter is its own majority: no acknowledgement ages out.
    tokio::time::sleep(cluster.members[&1].config.election_timeout * 3).await;
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", json_of(resp).await);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_on_every_member_of_a_working_cluster_and_503_on_a_leader_without_quorum() {
    let mut cluster = TestCluster::start(3, |c| c.admin_token = Some("s3cret".into())).await;
    for id in 1..=3 {
        let url = format!("{}/readyz", cluster.addr(id));
        let answer: Value = common::poll("the member is ready", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                let resp = http().get(&url).send().await.ok()?;
                if resp.status() != 200 {
                    return None;
                }
                json_of(resp).await
            }
        })
        .await;
        assert_eq!(answer["ready"], true, "{answer}");
        assert!(answer["applied_index"].as_u64() >= answer["committed_index"].as_u64(), "{answer}");
        let resp = http().get(format!("{}/healthz", cluster.addr(id))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Still ready well after 2 x election_timeout: heartbeats keep the
    // leader's quorum acknowledgement fresh (not a wait for a condition: the
    // readiness must hold once the time has passed).
    let election_timeout = cluster.members[&1].config.election_timeout;
    tokio::time::sleep(election_timeout * 3).await;
    for id in 1..=3 {
        let resp = http().get(format!("{}/readyz", cluster.addr(id))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "member {id}: {:?}", json_of(resp).await);
    }
    // Both followers gone: the leader hears from no majority and is no
    // longer ready.
    let survivor = cluster.wait_for_leader().await;
    for id in 1..=3 {
        if id != survivor {
            cluster.kill(id).await;
        }
    }
    let url = format!("{}/readyz", cluster.addr(survivor));
    let answer: Value = common::poll("the cut-off member is not ready", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let resp = http().get(&url).send().await.ok()?;
            if resp.status() != 503 {
                return None;
            }
            json_of(resp).await
        }
    })
    .await;
    assert_eq!(answer["ready"], false, "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("no majority has acknowledged it"), "{answer}");
    cluster.shutdown().await;
}

/// The process's peak resident memory so far (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Not a check: what previews cost, for the record (README / report).
/// Peak RSS (VmHWM) of this process, which runs the member, after each
/// preview shape, cheapest first, then 24 concurrent default previews.
/// `cargo test -p shardgate-meta --test limits -- --ignored --nocapture preview_costs`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn preview_costs() {
    let cluster = cluster_with_routing(|_| {}).await;
    let url = format!("{}/v1/preview", cluster.addr(1));
    println!("baseline: peak RSS {} MiB", peak_rss_mib());
    for (what, body) in [
        ("default (10000 keys, 2 nodes, 2 replicas)", json!({})),
        ("100000 keys (MAX_PREVIEW_SAMPLE)", json!({"sample": 100_000})),
        ("100000 keys, 40 candidates, 32 replicas", json!({"sample": 100_000, "replicas": 32, "nodes": candidates(40)})),
        ("100000 keys, 1024 candidates, 2 replicas", json!({"sample": 100_000, "replicas": 2, "nodes": candidates(1024)})),
        ("100000 keys, 1024 candidates, 32 replicas", json!({"sample": 100_000, "replicas": 32, "nodes": candidates(1024)})),
    ] {
        let start = Instant::now();
        let (status, _, answer) = post(&url, &body).await;
        let kind = answer["kind"].as_str().unwrap_or("");
        println!("{what}: {status} {kind} in {:?}, peak RSS {} MiB", start.elapsed(), peak_rss_mib());
    }
    let start = Instant::now();
    let burst: Vec<_> = (0..24)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &json!({})).await.0 })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for task in burst {
        *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    println!("24 concurrent default previews: {statuses:?} in {:?}, peak RSS {} MiB", start.elapsed(), peak_rss_mib());
    cluster.shutdown().await;
}
