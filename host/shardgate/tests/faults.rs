//! Fault tests across real processes (issue 7): the real `shardgate`
//! binary runs as separate processes on separate hosts made of Linux network
//! namespaces, the test drives load through them and injects faults: kill -9
//! of a meta leader, a cache node or a proxy, a network partition of a meta
//! member or of a proxy from meta, a restart of the whole meta cluster.
//!
//! Design (see `faults/lab.rs` for the topology): one namespace per host
//! (meta m1..m3, nodes n1..n3, proxies p1..p2) wired by veth pairs to two
//! bridges (control and data networks) in a dedicated switch namespace; the
//! processes run with `ip netns exec`; the test's HTTP clients run on a
//! thread that entered the switch namespace (`setns`), so all traffic stays
//! inside the lab. A partition is `ip link set <veth> down` at the switch.
//! Every load loop is bounded in count and in time; waiting is polling with
//! deadlines, never a sleep. Scenarios run one at a time (a process-wide
//! lock) and each prints its report row (`cargo test -p shardgate --test
//! faults -- --nocapture`).
//!
//! Needs root and iproute2; elsewhere every test prints `skipped: <reason>`
//! and passes.

#[path = "faults/cluster.rs"]
mod cluster;
#[path = "faults/lab.rs"]
mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster::*;
use lab::{Host, Lab, Net};
use reqwest::Method;
use shardgate_meta::MetaClient;
use shardgate_meta::model::NewNode;

/// The lab for a scenario, or `None` (after printing why) where network
/// namespaces are not available.
fn lab(tag: &str, hosts: Vec<Host>) -> Option<Lab> {
    if let Some(reason) = lab::unsupported() {
        println!("skipped: {reason}");
        return None;
    }
    Some(Lab::new(tag, &hosts))
}

/// Index (1-based) of a meta member in `metas`.
fn member_no(metas: &[String], url: &str) -> usize {
    metas.iter().position(|m| m == url).expect("a lab member") + 1
}

/// One metadata write by the writers: which node id, when it finished, how.
#[derive(Debug, Clone)]
struct MetaWrite {
    id: String,
    done: Instant,
    acked: bool,
    error: Option<String>,
}

/// Concurrent writers adding nodes (`w<t>-<n>`) through a [`MetaClient`]
/// until stopped, `max_each` writes each, or `limit` passes.
struct MetaWriters {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<MetaWrite>>>,
}

/// Waits until `counter` reaches `at_least`; panics naming `what` after `timeout`.
async fn wait_count(counter: Arc<AtomicU64>, at_least: u64, timeout: Duration, what: &str) {
    let c = counter.clone();
    let got = poll(timeout, Duration::from_millis(10), || {
        let c = c.clone();
        async move { (c.load(Ordering::Relaxed) >= at_least).then_some(()) }
    })
    .await;
    assert!(got.is_some(), "{what}: reached {} of {at_least} within {timeout:?}", counter.load(Ordering::Relaxed));
}

impl MetaWriters {
    /// Must be called inside a lab runtime.
    fn start(metas: Vec<String>, writers: usize, max_each: usize, limit: Duration, tag: &'static str) -> MetaWriters {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = MetaClient::new(metas).with_request_timeout(Duration::from_secs(2)).with_retry_for(Duration::from_secs(3));
        let deadline = Instant::now() + limit;
        let tasks = (0..writers)
            .map(|t| {
                let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for n in 0..max_each {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let id = format!("{tag}{t}-{n}");
                        let node = NewNode { id: id.clone(), addr: format!("http://{id}.lab:7200"), weight: 1.0, zone: String::new() };
                        let r = client.add_node(&node).await;
                        if r.is_ok() {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        out.push(MetaWrite { id, done: Instant::now(), acked: r.is_ok(), error: r.err().map(|e| e.to_string()) });
                    }
                    out
                })
            })
            .collect();
        MetaWriters { acked, stop, tasks }
    }

    async fn finish(self) -> Vec<MetaWrite> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("writer task"));
        }
        all
    }
}

/// Scenario 1: kill -9 the meta leader under a stream of metadata writes.
/// A new leader within 2 s; every acknowledged write is in the final state.
#[test]
fn s1_meta_leader_killed_under_writes_loses_no_acknowledged_write() {
    let Some(mut lab) = lab("s1", meta_hosts()) else { return };
    let timing = Timing::default();
    start_metas(&mut lab, &timing);
    let metas = meta_urls(&lab);
    let http = http_client(Duration::from_secs(2));

    let (m, h) = (metas.clone(), http.clone());
    lab.lan().run(async move { poll(Duration::from_secs(30), Duration::from_millis(20), || leader(&h, &m)).await.expect("a first leader") });
    let m = metas.clone();
    let writers = lab.lan().run(async move { MetaWriters::start(m, 2, 600, Duration::from_secs(60), "w") });
    let acked_count = writers.acked.clone();
    lab.lan().run(wait_count(acked_count.clone(), 40, Duration::from_secs(30), "acknowledged writes before the kill"));
    let (m, h) = (metas.clone(), http.clone());
    let (old_url, old) = lab.lan().run(async move { poll(Duration::from_secs(10), Duration::from_millis(10), || leader(&h, &m)).await.expect("a leader") });
    let acked_at_kill = acked_count.load(Ordering::Relaxed);
    let victim = format!("meta-{}", member_no(&metas, &old_url));
    let killed_at = Instant::now();
    lab.kill9(&victim);

    // A surviving member leads, in a later term.
    let survivors: Vec<String> = metas.iter().filter(|m| **m != old_url).cloned().collect();
    let (s, h) = (survivors.clone(), http.clone());
    let old_term = old.term;
    let elected = lab.lan().run(async move {
        poll(Duration::from_secs(10), Duration::from_millis(10), || async {
            leader(&h, &s).await.filter(|(_, st)| st.term > old_term).map(|l| (Instant::now(), l))
        })
        .await
    });
    let (elected_at, (new_url, _)) = elected.expect("no new leader among the survivors within 10 s");
    let detection = elected_at - killed_at;
    assert!(detection < Duration::from_secs(2), "new leader after {detection:?}; the bar is 2 s");

    lab.lan().run(wait_count(acked_count.clone(), acked_at_kill + 40, Duration::from_secs(30), "acknowledged writes after the kill"));
    let writes = lab.lan().run(writers.finish());

    // The final state, read linearizably through the new leader.
    let s = survivors.clone();
    let final_nodes: BTreeSet<String> =
        lab.lan().run(async move { MetaClient::new(s).nodes().await.expect("final node list").into_iter().map(|n| n.id).collect() });
    let acked: Vec<&MetaWrite> = writes.iter().filter(|w| w.acked).collect();
    let lost: Vec<&str> = acked.iter().filter(|w| !final_nodes.contains(&w.id)).map(|w| w.id.as_str()).collect();
    assert!(lost.is_empty(), "{} acknowledged writes missing from the final state: {lost:?}", lost.len());
    let sent: BTreeSet<&str> = writes.iter().map(|w| w.id.as_str()).collect();
    let foreign: Vec<&String> = final_nodes.iter().filter(|id| !sent.contains(id.as_str())).collect();
    assert!(foreign.is_empty(), "the final state holds writes never sent: {foreign:?}");
    let recovered_at = acked.iter().filter(|w| w.done > killed_at).map(|w| w.done).min().expect("writes acknowledged after the kill");

    // The killed member comes back from its data directory and catches up.
    lab.restart(&victim);
    let restarted_at = Instant::now();
    let (h, want) = (http.clone(), final_nodes.clone());
    let caught_up = lab.lan().run(async move {
        poll(Duration::from_secs(30), Duration::from_millis(20), || async {
            let a = send(&h, Method::GET, &format!("{old_url}/v1/nodes?stale=true"), None).await.ok()?;
            let nodes: Vec<shardgate_meta::model::NodeView> = serde_json::from_str(&a.body).ok()?;
            let ids: BTreeSet<String> = nodes.into_iter().map(|n| n.id).collect();
            ids.is_superset(&want).then(Instant::now)
        })
        .await
    });
    let caught_up = caught_up.expect("the restarted member did not catch up within 30 s");

    let failed = writes.len() - acked.len();
    Row {
        scenario: "1. kill -9 meta leader under metadata writes",
        sent: writes.len() as u64,
        failed: failed as u64,
        detection: format!("new leader {}", ms(detection)),
        recovery: format!("first commit {}", ms(recovered_at - killed_at)),
        notes: format!(
            "{} acked, 0 lost; leader {} -> {}; restarted member caught up in {}",
            acked.len(),
            victim,
            format!("meta-{}", member_no(&metas, &new_url)),
            ms(caught_up - restarted_at)
        ),
    }
    .print();
}
