//! Proxy benchmark (`cargo bench -p shardgate-proxy --bench proxy`): one
//! in-process cluster (3 meta members, 3 nodes, 2 proxies) on loopback.
//!
//! 1. GET throughput and CPU per request with `wrk` (Debian's; "skipped"
//!    when missing), directly against one node, through a proxy, and
//!    through a proxy using hyper-util's client (the reference hop), three
//!    alternating rounds (`PROXY_BENCH_WRK_CONNECTIONS`, default 64;
//!    `PROXY_BENCH_SKIP_WRK=1` skips this part). CPU = this process (nodes, proxies, meta) + wrk,
//!    from getrusage, divided by requests.
//! 2. p99 GET latency through the proxies in steady state and during
//!    strategy swaps (rendezvous <-> ketama every ~450 ms, to recent configs
//!    and to new ones), phases interleaved under one continuous load.
//! 3. Time from a strategy activation (a config never used before) to the
//!    last proxy serving the new epoch, over 20 swaps: from sending the
//!    activation and from meta's commit acknowledgement.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shardgate_meta_client::model::Activation;
use shardgate_testkit::{ClusterSpec, LocalCluster};

const WRK_SECONDS: u32 = 6;
const KEYS: usize = 1000;

fn cpu_seconds(who: i32) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

struct WrkRun {
    cores: f64,
    requests: f64,
    rps: f64,
    cpu_us_per_req: f64,
    non_2xx: u64,
}

fn wrk(url: &str) -> Option<WrkRun> {
    let (self0, child0) = (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_CHILDREN));
    let conns = std::env::var("PROXY_BENCH_WRK_CONNECTIONS").unwrap_or_else(|_| "64".into());
    let out = Command::new("wrk").args(["-t2", &format!("-c{conns}"), &format!("-d{WRK_SECONDS}s"), url]).output().ok()?;
    let (self1, child1) = (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_CHILDREN));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let requests: f64 = text.lines().find(|l| l.contains("requests in"))?.split_whitespace().next()?.parse().ok()?;
    let rps: f64 = text.lines().find(|l| l.starts_with("Requests/sec:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let non_2xx =
        text.lines().find(|l| l.contains("Non-2xx")).and_then(|l| l.split_whitespace().last()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu = (self1 - self0) + (child1 - child0);
    Some(WrkRun { cores: cpu / WRK_SECONDS as f64, requests, rps, cpu_us_per_req: cpu / requests * 1e6, non_2xx })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Closed-loop GET load on the proxies until `stop`; answers the latencies
/// and the number of failed requests.
async fn load(proxies: Vec<String>, clients: usize, stop: Arc<AtomicBool>) -> (Vec<(Instant, Duration)>, Vec<String>) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let proxies = proxies.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut lat = Vec::new();
            let mut failed = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += clients;
                let url = format!("{}/v1/keys/bench-{}", proxies[i % proxies.len()], i % KEYS);
                let t = Instant::now();
                match client.get(url.parse().unwrap()).await {
                    Ok(r) => {
                        let status = r.status();
                        let epoch = r.headers().get("shardgate-epoch").map(|v| v.to_str().unwrap_or("").to_string());
                        let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if !status.is_success() {
                            failed.push(format!("{url}: {status} epoch {epoch:?} {}", String::from_utf8_lossy(&body)));
                        }
                    }
                    Err(e) => failed.push(format!("{url}: {e}")),
                }
                lat.push((t, t.elapsed()));
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed.extend(f);
    }
    (all, failed)
}

/// Polls every proxy's `/status` (every 0.5 ms) until it serves `epoch`.
async fn proxies_at(cluster: &LocalCluster, epoch: u64) {
    for i in 0..cluster.proxies.len() {
        while cluster.proxies[i].is_running() {
            if cluster.proxy_status(i).await.is_ok_and(|s| s.epoch >= epoch) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(3, 3, 2, dir.path());
    spec.node.max_connections = 4096;
    let mut cluster = LocalCluster::start(spec).await.expect("cluster starts");
    cluster.register_nodes().await.unwrap();
    // A third proxy with hyper-util's pooled client: the reference hop.
    let hyper_proxy = cluster
        .start_proxy_with(shardgate_proxy::ProxyConfig {
            upstream_client: shardgate_proxy::UpstreamClient::HyperUtil,
            ..Default::default()
        })
        .await
        .unwrap();
    // Upload both components once; warm up: both compiled in both proxies.
    let mut strategies = Vec::new();
    for s in ["rendezvous", "ketama"] {
        let info = cluster.meta.upload_strategy(shardgate_builtins::builtin(s).unwrap().component.to_vec()).await.unwrap();
        strategies.push(info.hash);
    }
    // Swap i: rendezvous for even i, ketama for odd i; `fresh` gives every
    // swap a config never used before (a full configure in every proxy and
    // an admission in meta), otherwise the two default configs alternate
    // (the proxies reuse their recently configured routers).
    let activate = |i: usize, fresh: bool| {
        let hash = strategies[i % 2].clone();
        let config = match (fresh, i % 2) {
            (false, _) => String::new(),
            (true, 0) => format!("slots = {}", 262_144 - i),
            (true, _) => format!("vnodes = {}", 100 + i),
        };
        let meta = cluster.meta.clone();
        async move { meta.activate(&hash, &Activation { config, replicas: 1 }).await.unwrap() }
    };
    for i in 0..2 {
        let r = activate(i, false).await;
        proxies_at(&cluster, r.epoch).await;
    }
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let proxy = cluster.proxies[0].addr.clone();
    for i in 0..KEYS {
        let req = http::Request::put(format!("{proxy}/v1/keys/bench-{i}")).body(Full::new(Bytes::from(vec![b'v'; 100]))).unwrap();
        assert!(http.request(req).await.unwrap().status().is_success());
    }
    // The key wrk reads, and the node that owns it.
    let key = "bench-0";
    let owners: shardgate_proxy::Owners = {
        let r = http.get(format!("{proxy}/v1/owners/{key}").parse().unwrap()).await.unwrap();
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
    };
    let node = cluster.nodes.iter().find(|n| n.id == owners.owners[0]).unwrap().addr.clone();

    println!("## shardgate-proxy benchmark (loopback, 2 cores; one process holds 3 metas, 3 nodes, 2 proxies)\n");
    if std::env::var_os("PROXY_BENCH_SKIP_WRK").is_some() {
        println!("wrk: skipped (PROXY_BENCH_SKIP_WRK)\n");
    } else if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk: skipped (not installed; apt-get install wrk)\n");
    } else {
        let conns = std::env::var("PROXY_BENCH_WRK_CONNECTIONS").unwrap_or_else(|_| "64".into());
        println!("### GET throughput, wrk -t2 -c{conns} -d{WRK_SECONDS}s, one 100-byte key\n");
        println!("| round | case | req/s | CPU us/req | cores busy | non-2xx |");
        println!("|---|---|---|---|---|---|");
        let (mut direct, mut proxied, mut hyper) = (Vec::new(), Vec::new(), Vec::new());
        let hyper_addr = cluster.proxies[hyper_proxy].addr.clone();
        for round in 1..=3 {
            for (name, url, into) in [
                ("direct to node", format!("{node}/v1/keys/{key}"), &mut direct),
                ("through proxy (direct upstream client, default)", format!("{proxy}/v1/keys/{key}"), &mut proxied),
                ("through proxy (hyper-util upstream client)", format!("{hyper_addr}/v1/keys/{key}"), &mut hyper),
            ] {
                let run = wrk(&url).expect("wrk ran");
                println!("| {round} | {name} | {:.0} | {:.1} | {:.2} | {} |", run.rps, run.cpu_us_per_req, run.cores, run.non_2xx);
                into.push(run);
            }
        }
        let sum = |v: &[WrkRun]| {
            (
                v.iter().map(|r| r.rps).sum::<f64>() / v.len() as f64,
                v.iter().map(|r| r.cpu_us_per_req * r.requests).sum::<f64>() / v.iter().map(|r| r.requests).sum::<f64>(),
            )
        };
        let (d_rps, d_cpu) = sum(&direct);
        let (p_rps, p_cpu) = sum(&proxied);
        let (h_rps, h_cpu) = sum(&hyper);
        println!();
        println!("| summary | value | bar |");
        println!("|---|---|---|");
        println!("| proxy / direct throughput | {:.2} | >= 0.50 {} |", p_rps / d_rps, if p_rps / d_rps >= 0.5 { "pass" } else { "FAIL" });
        println!(
            "| CPU added per request | +{:.1} us ({:.1} -> {:.1}) | <= +25 us {} |",
            p_cpu - d_cpu,
            d_cpu,
            p_cpu,
            if p_cpu - d_cpu <= 25.0 { "pass" } else { "FAIL" }
        );
        println!("| reference: hyper-util client hop, throughput / CPU added | {:.2} / +{:.1} us | |", h_rps / d_rps, h_cpu - d_cpu);
        println!();
    }

    cluster.proxies[hyper_proxy].stop().await.unwrap();

    // p99 during swaps vs steady state.
    let proxies: Vec<String> = cluster.proxies.iter().filter(|p| p.is_running()).map(|p| p.addr.clone()).collect();
    // One continuous load; phases alternate (1 s each, 3 rounds): steady,
    // swaps to recent configs, steady, swaps to new configs. Each request
    // counts in the phase it started in, so all phases see the same
    // machine noise.
    let clients = 16;
    let phase = Duration::from_secs(1);
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(proxies.clone(), clients, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut phases: Vec<(usize, Instant, Instant)> = Vec::new(); // kind: 0 steady, 1 recent, 2 new
    let mut swaps = [0usize; 3];
    let mut swap_index = 100;
    for _ in 0..3 {
        for kind in [0usize, 1, 0, 2] {
            let start = Instant::now();
            if kind == 0 {
                tokio::time::sleep(phase).await;
            } else {
                // No /status polling here: it would load the proxies.
                while start.elapsed() < phase {
                    activate(swap_index, kind == 2).await;
                    swap_index += 1;
                    swaps[kind] += 1;
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            }
            phases.push((kind, start, Instant::now()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, failures) = running.await.unwrap();
    let mut by_kind: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (t, d) in samples {
        if let Some((kind, _, _)) = phases.iter().find(|(_, a, b)| t >= *a && t < *b) {
            by_kind[*kind].push(d);
        }
    }
    for v in by_kind.iter_mut() {
        v.sort();
    }
    println!("### GET latency through the proxies, {clients} closed-loop clients, phases of 1 s interleaved (3 rounds)\n");
    println!("| phase | swaps | requests | p50 | p99 | p99 / steady |");
    println!("|---|---|---|---|---|---|");
    let s99 = percentile(&by_kind[0], 0.99);
    let names =
        ["steady", "swaps rendezvous<->ketama, recent configs (router reused)", "swaps rendezvous<->ketama, new configs (full configure)"];
    for kind in 0..3 {
        let v = &by_kind[kind];
        let p99 = percentile(v, 0.99);
        let ratio = p99.as_secs_f64() / s99.as_secs_f64();
        let verdict = if kind == 0 {
            ""
        } else if ratio <= 1.5 {
            " pass"
        } else {
            " FAIL (bar 1.5)"
        };
        println!("| {} | {} | {} | {:?} | {p99:?} | {ratio:.2}{verdict} |", names[kind], swaps[kind], v.len(), percentile(v, 0.5));
    }
    println!("\nfailed requests during all phases: {}", failures.len());
    for f in failures.iter().take(5) {
        println!("failed: {f}");
    }
    println!();

    // Commit -> last proxy serving the new epoch.
    let mut from_send = Vec::new();
    let mut from_commit = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        let r = activate(swap_index + i, true).await;
        let t1 = Instant::now();
        proxies_at(&cluster, r.epoch).await;
        let t2 = Instant::now();
        from_send.push(t2 - t0);
        from_commit.push(t2.saturating_duration_since(t1));
    }
    from_send.sort();
    from_commit.sort();
    println!("### Activation to the last of 2 proxies serving the new epoch, 20 swaps to new configs\n");
    println!("| measured from | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| sending the activation (admission, Raft commit) | {:?} | {:?} | {:?} |",
        percentile(&from_send, 0.5),
        percentile(&from_send, 0.99),
        from_send[from_send.len() - 1]
    );
    println!(
        "| meta's commit acknowledgement | {:?} | {:?} | {:?} |",
        percentile(&from_commit, 0.5),
        percentile(&from_commit, 0.99),
        from_commit[from_commit.len() - 1]
    );
    let p99 = percentile(&from_send, 0.99);
    println!("\nbar p99 < 100 ms (from sending): {}", if p99 < Duration::from_millis(100) { "pass" } else { "FAIL" });
    cluster.shutdown().await;
}
