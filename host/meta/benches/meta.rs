//! Meta benchmark: commit latency of a metadata write on a 3-member loopback
//! cluster (with the floor it sits on, in the same run), and the time from
//! killing the leader to the next committed write, with default timeouts.
//!
//! `cargo bench -p shardgate-meta --bench meta`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, node};
use shardgate_meta::MetaConfig;
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::NodeUpdate;

const WRITES: usize = match option_env!("SHARDGATE_BENCH_WRITES") {
    Some(_) => 100,
    None => 1000,
};
const FAILOVERS: usize = 5;

fn defaults(c: &mut MetaConfig) {
    let d = MetaConfig::default();
    c.heartbeat_interval = d.heartbeat_interval;
    c.election_timeout = d.election_timeout;
    c.write_timeout = d.write_timeout;
    c.watch_heartbeat = d.watch_heartbeat;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
        ms(samples.iter().sum::<Duration>()) / samples.len() as f64,
    );
}

/// The floor: one redb write transaction with an fsync, as every Raft
/// append does (a leader appends, then each follower appends).
fn redb_fsync_floor() -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("floor.redb")).unwrap();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let payload = vec![7u8; 200];
    (0..WRITES as u64)
        .map(|i| {
            let start = Instant::now();
            let txn = db.begin_write().unwrap();
            txn.open_table(table).unwrap().insert(i, payload.as_slice()).unwrap();
            txn.commit().unwrap();
            start.elapsed()
        })
        .collect()
}

async fn write_latencies(client: &MetaClient) -> Vec<Duration> {
    let mut out = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let update = NodeUpdate { weight: Some(1.0 + (i % 2) as f64), state: None };
        let start = Instant::now();
        client.update_node("bench", &update).await.expect("write");
        out.push(start.elapsed());
    }
    out
}

async fn commit_latency() {
    println!("## Commit latency of a metadata write (PATCH /v1/nodes/bench, sequential, {WRITES} writes)\n");
    println!("| path | writes | p50 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---|---|---|---|");
    row("reference: redb write txn + fsync alone", redb_fsync_floor());

    let single = TestCluster::start(1, defaults).await;
    let client = single.client_of(1);
    client.add_node(&node("bench", 9000)).await.unwrap();
    row("reference: 1-member cluster (no replication)", write_latencies(&client).await);
    single.shutdown().await;

    let cluster = TestCluster::start(3, defaults).await;
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    let client = cluster.client_of(leader);
    client.add_node(&node("bench", 9000)).await.unwrap();
    row("3-member cluster, client -> leader", write_latencies(&client).await);
    row("3-member cluster, client -> follower (forwarded)", write_latencies(&cluster.client_of(follower)).await);
    cluster.shutdown().await;
    println!();
}

async fn failover() {
    println!(
        "## Failover: kill the leader, time until the next committed write (default timeouts: heartbeat 100ms, election_timeout 500ms: openraft starts an election 1.25-1.5 s after the last heartbeat)\n"
    );
    println!("| round | old leader | new leader | member stopped after ms | kill -> committed write ms |");
    println!("|---|---|---|---|---|");
    let mut cluster = TestCluster::start(3, defaults).await;
    cluster.client().add_node(&node("bench", 9000)).await.unwrap();
    let mut times = Vec::new();
    for round in 1..=FAILOVERS {
        let old = cluster.wait_for_leader().await;
        // Everyone has caught up before the kill.
        let r = cluster.client().update_node("bench", &NodeUpdate { weight: Some(1.0), state: None }).await.unwrap();
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        common::poll("every member applied the last write", Duration::from_secs(10), || async {
            for id in &ids {
                if cluster.status_of(*id).await?.applied_index? < r.index {
                    return None;
                }
            }
            Some(())
        })
        .await;
        let survivors: Vec<String> = cluster.members.values().filter(|m| m.id != old).map(|m| m.addr.clone()).collect();
        let client = MetaClient::new(survivors).with_request_timeout(Duration::from_millis(500)).with_retry_for(Duration::from_millis(1));
        let start = Instant::now();
        cluster.kill(old).await;
        let killed = start.elapsed();
        loop {
            let update = NodeUpdate { weight: Some(2.0 + round as f64), state: None };
            if client.update_node("bench", &update).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        times.push(took);
        let new = cluster.wait_for_leader().await;
        println!("| {round} | {old} | {new} | {:.0} | {:.0} |", killed.as_secs_f64() * 1000.0, took.as_secs_f64() * 1000.0);
        cluster.restart(old).await;
        cluster.wait_for_leader().await;
    }
    times.sort();
    println!(
        "\nfailover over {FAILOVERS} rounds: median {:.0} ms, max {:.0} ms (bar: < 2000 ms)\n",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
    cluster.shutdown().await;
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        commit_latency().await;
        failover().await;
    });
}
