//! End-to-end test of the compose cluster (issue 14): the image built by
//! `config/docker/build-image.sh`, run as `config/compose/compose.yaml` (3
//! meta members, 3 self-registering cache nodes, 2 proxies, two networks),
//! driven from this host through the ports compose publishes on loopback.
//!
//! Under a steady load through both proxies (every write read back through
//! the other proxy) it does, one after another: PUT/GET through both
//! proxies; a strategy swap (`ctl strategy activate ... --wait` inside the
//! back network); `docker kill` of the meta leader (a new leader, no
//! committed change lost, the member restarted and caught up); `docker
//! network disconnect` of a meta follower while a change commits, then
//! reconnect (it catches up); `docker kill` of a cache node and its restart
//! (R=2: its keys fail over); scaling the nodes 3 -> 4 -> 3. Then every key
//! acknowledged since the swap is read back (keys written before it moved
//! lazily, within the proxies' migration window, as a swap does). It prints a table of what it measured and
//! tears the cluster down (volumes too) also when it fails, printing the
//! containers' last log lines first.
//!
//! Needs Docker with compose (`docker compose` or `docker-compose`) and the
//! image: `SHARDGATE_IMAGE=<tag>` names it (`.ci/test` builds it and sets
//! it). Without them the test prints `SKIPPED: ...` and passes, unless
//! `SHARDGATE_REQUIRE_DOCKER=1` (`.ci/test` sets it), when it fails.
//! `cargo test -p shardgate --test compose -- --nocapture` shows the table.

#[path = "support/client.rs"]
mod client;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::*;
use reqwest::Method;

/// The compose file under test.
fn compose_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/compose/compose.yaml")
}

fn skip_or_fail(reason: &str) {
    if std::env::var("SHARDGATE_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("the compose end-to-end test cannot run: {reason} (SHARDGATE_REQUIRE_DOCKER=1)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: compose_cluster_end_to_end: {reason}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)).trim().to_string()
}

/// `docker compose` (v2) when it is there, else `docker-compose` (v1).
fn compose_program() -> Option<Vec<String>> {
    let ok = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().is_ok_and(|o| o.status.success());
    if ok(&["docker", "compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if ok(&["docker-compose", "version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// A compose project of this test: its own name, loopback ports chosen by
/// Docker, torn down (with its volumes) when dropped.
struct Project {
    program: Vec<String>,
    name: String,
    image: String,
}

impl Project {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..]).arg("-p").arg(&self.name).arg("-f").arg(compose_file());
        c.env("SHARDGATE_IMAGE", &self.image);
        for var in ["META_1", "META_2", "META_3", "PROXY_1", "PROXY_2"] {
            c.env(format!("SHARDGATE_{var}_PUBLISH"), "127.0.0.1:");
        }
        c
    }

    /// Runs `compose ARGS`, panicking with its output when it fails.
    fn compose(&self, args: &[&str]) -> String {
        let o = run(self.command().args(args));
        assert!(o.status.success(), "compose {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `http://127.0.0.1:PORT` where `service`'s `port` is published.
    fn published(&self, service: &str, port: u16) -> String {
        let out = self.compose(&["port", service, &port.to_string()]);
        let addr = out.lines().last().unwrap_or_default().trim();
        let port = addr.rsplit(':').next().unwrap_or_default();
        format!("http://127.0.0.1:{port}")
    }

    /// Container ids of a service, oldest first.
    fn containers(&self, service: &str) -> Vec<String> {
        let out = self.compose(&["ps", "-q", service]);
        let mut ids: Vec<(String, String)> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|id| {
                let created = docker(&["inspect", "-f", "{{.Created}}", id]);
                (created, id.trim().to_string())
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn network(&self, name: &str) -> String {
        // Compose v1 and v2 both name networks <project>_<network>.
        format!("{}_{name}", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = run(self.command().args(["logs", "--no-color", "--tail", "40"]));
            eprintln!("--- last log lines of {} ---\n{}", self.name, text(&o));
        }
        if std::env::var("SHARDGATE_KEEP_COMPOSE").as_deref() == Ok("1") {
            eprintln!("SHARDGATE_KEEP_COMPOSE=1: project {} left running", self.name);
            return;
        }
        let o = run(self.command().args(["down", "-v", "--remove-orphans", "-t", "5"]));
        if !o.status.success() {
            eprintln!("compose down failed: {}", text(&o));
        }
    }
}

fn docker(args: &[&str]) -> String {
    let o = run(Command::new("docker").args(args));
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A shardgate command inside a running container of the back network
/// (the image has no shell: `docker exec` runs the binary itself).
fn shardgate_in(container: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", container, "/shardgate"];
    all.extend_from_slice(args);
    let o = run(Command::new("docker").args(&all));
    assert!(o.status.success(), "shardgate {args:?} in {container} failed: {}", text(&o));
    text(&o)
}

/// The steady load: each worker writes a fresh key through one proxy and
/// reads it back through the other, paced, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxies: &[String], workers: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            acked: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (stop, sent, failed, errors, acked) =
                (load.stop.clone(), load.sent.clone(), load.failed.clone(), load.errors.clone(), load.acked.clone());
            let (write_via, read_via) = (proxies[w % proxies.len()].clone(), proxies[(w + 1) % proxies.len()].clone());
            tasks.push(tokio::spawn(async move {
                let http = http_client(Duration::from_secs(5));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("e2e-{w}-{i}");
                    i += 1;
                    let put = send(&http, Method::PUT, &format!("{write_via}/v1/keys/{key}"), Some(key.clone().into_bytes())).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let outcome = match put {
                        Ok(a) if a.status == 201 || a.status == 204 || a.status == 200 => {
                            acked.lock().unwrap().push(key.clone());
                            sent.fetch_add(1, Ordering::Relaxed);
                            match send(&http, Method::GET, &format!("{read_via}/v1/keys/{key}"), None).await {
                                Ok(a) if a.status == 200 && a.body == key => Ok(()),
                                Ok(a) => Err(format!("GET {key} via {read_via}: {} {}", a.status, a.body.trim())),
                                Err(e) => Err(format!("GET {key} via {read_via}: {e}")),
                            }
                        }
                        Ok(a) => Err(format!("PUT {key} via {write_via}: {} {}", a.status, a.body.trim())),
                        Err(e) => Err(format!("PUT {key} via {write_via}: {e}")),
                    };
                    if let Err(e) = outcome {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut errors = errors.lock().unwrap();
                        if errors.len() < 20 {
                            errors.push(e);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Load { tasks, ..load }
    }

    fn counts(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Waits until at least `more` requests were sent after now.
    async fn wait_more(&self, more: u64, what: &str) {
        let target = self.sent.load(Ordering::Relaxed) + more;
        let got = poll(Duration::from_secs(60), Duration::from_millis(20), || async {
            (self.sent.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
        assert!(got.is_some(), "the load stalled ({what}): {:?}", self.errors.lock().unwrap());
    }

    async fn finish(self) -> (u64, u64, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load worker");
        }
        let errors = self.errors.lock().unwrap().clone();
        let acked = self.acked.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), errors, acked)
    }
}

/// One line of the report.
struct Step {
    what: &'static str,
    measured: String,
    requests: u64,
    failed: u64,
}

async fn leader_of(http: &reqwest::Client, metas: &[String]) -> Option<(usize, u64, u64)> {
    for (i, m) in metas.iter().enumerate() {
        if let Some(s) = raft_status(http, m).await
            && s.state == "leader"
        {
            return Some((i, s.id, s.term));
        }
    }
    None
}

/// Waits until both proxies serve the routing of `epoch` or later with
/// `nodes` routable nodes.
async fn wait_routing(http: &reqwest::Client, proxies: &[String], epoch: u64, nodes: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    for p in proxies {
        let got = poll(timeout, Duration::from_millis(20), || async {
            proxy_status(http, p).await.filter(|s| s.epoch >= epoch && s.nodes.iter().filter(|n| n.routable).count() == nodes)
        })
        .await;
        assert!(got.is_some(), "{p} did not reach epoch {epoch} with {nodes} routable nodes: {:?}", proxy_status(http, p).await);
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_end_to_end() {
    let Ok(image) = std::env::var("SHARDGATE_IMAGE") else {
        return skip_or_fail("SHARDGATE_IMAGE is not set (build the image: bash config/docker/build-image.sh)");
    };
    let Some(program) = compose_program() else {
        return skip_or_fail("neither `docker compose` nor `docker-compose` runs");
    };
    let inspect = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Size}}", &image]));
    if !inspect.status.success() {
        return skip_or_fail(&format!("image {image} not found: {}", text(&inspect)));
    }
    let project = Project { program, name: format!("sge2e{}", std::process::id()), image };
    let started = Instant::now();
    tokio::task::block_in_place(|| project.compose(&["up", "-d"]));
    let up_took = started.elapsed();

    let http = http_client(Duration::from_secs(3));
    let mut metas: Vec<String> = (1..=3).map(|i| project.published(&format!("meta-{i}"), 7101)).collect();
    let proxies: Vec<String> = (1..=2).map(|i| project.published(&format!("proxy-{i}"), 7000)).collect();
    let mut steps: Vec<Step> = Vec::new();

    // Up: a leader, 3 registered nodes, rendezvous active with R=2 (the
    // one-shot services), both proxies routing to all three.
    let ready = poll(Duration::from_secs(90), Duration::from_millis(100), || async {
        let mut epochs = Vec::new();
        for p in &proxies {
            let s = proxy_status(&http, p).await?;
            let strategy = s.strategy.as_ref()?;
            (strategy.name == "rendezvous" && s.replicas == 2 && s.nodes.iter().filter(|n| n.routable).count() == 3).then_some(())?;
            epochs.push(s.epoch);
        }
        Some(epochs)
    })
    .await;
    let Some(ready) = ready else {
        panic!("the cluster did not come up within 90 s: proxy-1 {:?}", proxy_status(&http, &proxies[0]).await);
    };
    let serving_after = started.elapsed();

    // PUT/GET through both proxies.
    for (w, r) in [(0, 1), (1, 0)] {
        let key = format!("hello-{w}");
        let put = send(&http, Method::PUT, &format!("{}/v1/keys/{key}", proxies[w]), Some(b"world".to_vec())).await.unwrap();
        assert_eq!(put.status, 201, "PUT via proxy-{}: {}", w + 1, put.body);
        let get = send(&http, Method::GET, &format!("{}/v1/keys/{key}", proxies[r]), None).await.unwrap();
        assert_eq!((get.status, get.body.as_str()), (200, "world"), "GET via proxy-{}", r + 1);
    }
    steps.push(Step {
        what: "up: PUT/GET through both proxies",
        measured: format!("compose up {}, serving {} after up (epoch {})", ms(up_took), ms(serving_after), ready[0]),
        requests: 4,
        failed: 0,
    });

    let load = Load::start(&proxies, 4);
    load.wait_more(200, "before the swap").await;

    // 1. A strategy swap under load, through the real CLI in the back network.
    let meta1 = project.containers("meta-1").remove(0);
    let (s0, f0) = load.counts();
    let swap_started = Instant::now();
    let said = tokio::task::block_in_place(|| {
        shardgate_in(
            &meta1,
            &[
                "ctl",
                "--meta",
                "http://meta-1:7101,http://meta-2:7101,http://meta-3:7101",
                "strategy",
                "activate",
                "ketama",
                "--replicas",
                "2",
                "--wait",
                "--proxy",
                "http://proxy-1:7000,http://proxy-2:7000",
            ],
        )
    });
    let converged = swap_started.elapsed();
    // Keys written before the swap move lazily: a proxy reads a miss
    // through the old owners only within proxy.migration_window (60 s), so
    // the final read-back covers the keys written under the new routing.
    let acked_before_swap = load.acked.lock().unwrap().len();
    load.wait_more(200, "after the swap").await;
    let swap_epoch = proxy_status(&http, &proxies[0]).await.expect("proxy-1 status").epoch;
    let (s1, f1) = load.counts();
    assert_eq!(f1 - f0, 0, "requests failed during the swap: {:?}", load.errors.lock().unwrap());
    assert!(said.contains("activated ketama"), "ctl said: {said}");
    steps.push(Step {
        what: "strategy swap rendezvous -> ketama under load",
        measured: format!("both proxies on epoch {swap_epoch} {} after ctl started", ms(converged)),
        requests: s1 - s0,
        failed: f1 - f0,
    });

    // 2. docker kill the meta leader: a new leader, nothing committed lost.
    let (li, lid, term) = leader_of(&http, &metas).await.expect("a meta leader");
    let before = shardgate_meta_client::MetaClient::new(vec![metas[li].clone()]).routing().await.expect("routing");
    let leader_container = project.containers(&format!("meta-{}", li + 1)).remove(0);
    let (s0, f0) = load.counts();
    let killed = Instant::now();
    tokio::task::block_in_place(|| docker(&["kill", &leader_container]));
    let others: Vec<String> = metas.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, m)| m.clone()).collect();
    let (_, new_id, new_term) = poll(Duration::from_secs(20), Duration::from_millis(20), || async {
        leader_of(&http, &others).await.filter(|(_, id, t)| *id != lid && *t > term)
    })
    .await
    .expect("a new meta leader within 20 s");
    let failover = killed.elapsed();
    let survivor = others.iter().find(|m| **m != metas[li]).unwrap().clone();
    let after = shardgate_meta_client::MetaClient::new(vec![survivor]).routing().await.expect("routing from the new leader");
    assert!(after.epoch >= before.epoch, "epoch went back: {} -> {}", before.epoch, after.epoch);
    assert_eq!(after.strategy.as_ref().map(|s| &s.hash), before.strategy.as_ref().map(|s| &s.hash), "the active strategy changed");
    assert_eq!(
        after.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
        before.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
        "the node list changed"
    );
    // The killed member restarts (compose's restart policy does not restart
    // a killed container) and catches up.
    tokio::task::block_in_place(|| docker(&["start", &leader_container]));
    // A restarted container may be published on another free port.
    let restarted_meta = tokio::task::block_in_place(|| project.published(&format!("meta-{}", li + 1), 7101));
    metas[li] = restarted_meta.clone();
    poll(Duration::from_secs(30), Duration::from_millis(50), || async {
        let s = raft_status(&http, &restarted_meta).await?;
        (s.leader.is_some() && s.applied_index >= Some(after.epoch)).then_some(())
    })
    .await
    .expect("the killed leader rejoined as a follower and applied every committed change");
    load.wait_more(200, "after the meta leader kill").await;
    let (s1, f1) = load.counts();
    steps.push(Step {
        what: "docker kill of the meta leader",
        measured: format!(
            "member {lid} (term {term}) killed; member {new_id} leads (term {new_term}) {} later; epoch {} kept",
            ms(failover),
            after.epoch
        ),
        requests: s1 - s0,
        failed: f1 - f0,
    });

    // 3. Disconnect a meta follower, commit a change without it, reconnect.
    let (li, _, _) = leader_of(&http, &metas).await.expect("a meta leader");
    let fi = (li + 1) % 3;
    let follower = project.containers(&format!("meta-{}", fi + 1)).remove(0);
    let back = project.network("back");
    let (s0, f0) = load.counts();
    tokio::task::block_in_place(|| docker(&["network", "disconnect", &back, &follower]));
    let leader_client = shardgate_meta_client::MetaClient::new(vec![metas[li].clone()]);
    // A committed change that moves no key: a node's weight set to what it is.
    let (node, weight) = (after.nodes[0].id.clone(), after.nodes[0].weight);
    let change = leader_client
        .update_node(&node, &shardgate_meta_client::model::NodeUpdate { weight: Some(weight), state: None })
        .await
        .expect("a change commits without the disconnected member");
    let reconnected = Instant::now();
    tokio::task::block_in_place(|| {
        docker(&["network", "connect", "--alias", &format!("meta-{}", fi + 1), &back, &follower]);
    });
    let follower_url = tokio::task::block_in_place(|| project.published(&format!("meta-{}", fi + 1), 7101));
    metas[fi] = follower_url.clone();
    poll(Duration::from_secs(30), Duration::from_millis(20), || async {
        let s = raft_status(&http, &follower_url).await?;
        (s.applied_index >= Some(change.index)).then_some(())
    })
    .await
    .expect("the reconnected member caught up");
    let caught_up = reconnected.elapsed();
    load.wait_more(200, "after the reconnect").await;
    let (s1, f1) = load.counts();
    steps.push(Step {
        what: "docker network disconnect/connect of a meta follower",
        measured: format!("change at index {} committed without it; caught up {} after reconnect", change.index, ms(caught_up)),
        requests: s1 - s0,
        failed: f1 - f0,
    });

    // 4. Kill a cache node and restart it: with R=2 its keys fail over.
    let nodes = project.containers("node");
    assert_eq!(nodes.len(), 3, "three node containers");
    let victim = nodes[0].clone();
    let (s0, f0) = load.counts();
    let killed = Instant::now();
    tokio::task::block_in_place(|| docker(&["kill", &victim]));
    let victim_id = victim[..12].to_string();
    for p in &proxies {
        poll(Duration::from_secs(20), Duration::from_millis(20), || async {
            proxy_status(&http, p).await.filter(|s| s.nodes.iter().any(|n| n.id == victim_id && !n.routable))
        })
        .await
        .unwrap_or_else(|| panic!("{p} never ejected the killed node {victim_id}"));
    }
    let ejected = killed.elapsed();
    load.wait_more(300, "while the node is down").await;
    tokio::task::block_in_place(|| docker(&["start", &victim]));
    let epoch = proxy_status(&http, &proxies[0]).await.expect("status").epoch;
    let back_in = wait_routing(&http, &proxies, epoch, 3, Duration::from_secs(30)).await;
    load.wait_more(200, "after the node restart").await;
    let (s1, f1) = load.counts();
    steps.push(Step {
        what: "docker kill of a cache node, then start (R=2)",
        measured: format!("ejected by both proxies {} after the kill; routed again {} after start", ms(ejected), ms(back_in)),
        requests: s1 - s0,
        failed: f1 - f0,
    });

    // 5. Scale the nodes 3 -> 4 -> 3 under load.
    let (s0, f0) = load.counts();
    let epoch = proxy_status(&http, &proxies[0]).await.expect("status").epoch;
    let scale_up = Instant::now();
    tokio::task::block_in_place(|| project.compose(&["up", "-d", "--no-recreate", "--scale", "node=4"]));
    wait_routing(&http, &proxies, epoch + 1, 4, Duration::from_secs(30)).await;
    let up4 = scale_up.elapsed();
    load.wait_more(300, "with 4 nodes").await;
    let epoch = proxy_status(&http, &proxies[0]).await.expect("status").epoch;
    let scale_down = Instant::now();
    tokio::task::block_in_place(|| project.compose(&["up", "-d", "--no-recreate", "--scale", "node=3"]));
    wait_routing(&http, &proxies, epoch + 1, 3, Duration::from_secs(30)).await;
    let down3 = scale_down.elapsed();
    load.wait_more(200, "back at 3 nodes").await;
    let (s1, f1) = load.counts();
    steps.push(Step {
        what: "scale nodes 3 -> 4 -> 3 under load",
        measured: format!("4th node routed {} after `up --scale node=4`; 3 again {} after `--scale node=3`", ms(up4), ms(down3)),
        requests: s1 - s0,
        failed: f1 - f0,
    });

    let (sent, failed, errors, acked) = load.finish().await;
    // Every key acknowledged under the new routing, read back through proxy-1.
    let acked = &acked[acked_before_swap..];
    let mut lost = Vec::new();
    for key in acked {
        match send(&http, Method::GET, &format!("{}/v1/keys/{key}", proxies[0]), None).await {
            Ok(a) if a.status == 200 && a.body == *key => {}
            Ok(a) => lost.push(format!("{key}: {}", a.status)),
            Err(e) => lost.push(format!("{key}: {e}")),
        }
    }
    steps.push(Step {
        what: "every key acknowledged after the swap, read back at the end",
        measured: format!("{} of {} readable", acked.len() - lost.len(), acked.len()),
        requests: acked.len() as u64,
        failed: lost.len() as u64,
    });

    println!("\n| step | measured | requests | failed |\n|---|---|---|---|");
    for s in &steps {
        println!("| {} | {} | {} | {} |", s.what, s.measured, s.requests, s.failed);
    }
    println!("| total under load | {} | {sent} | {failed} |", ms(started.elapsed()));
    assert_eq!(failed, 0, "failed requests under load: {errors:?}");
    assert!(lost.is_empty(), "{} acknowledged keys unreadable: {:?}", lost.len(), &lost[..lost.len().min(40)]);
}
