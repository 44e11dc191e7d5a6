//! Live Raft events and watches that need a leader (issue 13.1, 13.4), on
//! real members on 127.0.0.1:
//!
//! - `/v1/raft/watch` sends the member's view on connect, then an event for
//!   a learner added, a member removed, and a leader change;
//! - a member that lost its leader ends its `/v1/watch` streams with an
//!   `event: closing` naming the reason, refuses new ones with 503
//!   `no_leader`, and still serves `?stale=true`.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use shardgate_meta_client::model::RaftEvent;
use shardgate_meta_client::watch_event::{find_event_end, parse_closing, parse_event};

const DEADLINE: Duration = Duration::from_secs(15);

/// The next event of `stream` that satisfies `want`, within the deadline.
async fn next_matching(
    stream: &mut shardgate_meta_client::client::RaftWatchStream,
    what: &str,
    want: impl Fn(&RaftEvent) -> bool,
) -> RaftEvent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no raft event where {what} within {DEADLINE:?}"))
            .expect("the stream does not end");
        if let Ok(e) = item
            && want(&e)
        {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_watch_reports_learners_promotions_removals_and_leader_changes_as_they_happen() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut events = cluster.client_of(follower).watch_raft();

    let first = next_matching(&mut events, "the initial view", |_| true).await;
    assert_eq!(first.changes, vec!["initial".to_string()]);
    assert_eq!((first.member, first.leader, first.seq), (follower, Some(leader), 0));
    assert_eq!(first.members.iter().filter(|m| m.voter).count(), 3);

    // A learner added.
    cluster.start_unattached(4).await;
    cluster.client_of(leader).add_learner(4, &cluster.addr(4)).await.expect("add learner 4");
    let added = next_matching(&mut events, "learner 4 appears", |e| e.members.iter().any(|m| m.id == 4 && !m.voter)).await;
    assert!(added.changes.contains(&"membership".to_string()), "{added:?}");

    // The learner promoted.
    cluster.client_of(leader).promote(4).await.expect("promote 4");
    let promoted = next_matching(&mut events, "member 4 votes", |e| e.members.iter().any(|m| m.id == 4 && m.voter)).await;
    assert!(promoted.changes.contains(&"membership".to_string()), "{promoted:?}");

    // A member removed.
    cluster.client_of(leader).remove_member(4).await.expect("remove 4");
    let removed = next_matching(&mut events, "member 4 is gone", |e| !e.members.iter().any(|m| m.id == 4)).await;
    assert!(removed.changes.contains(&"membership".to_string()), "{removed:?}");
    assert!(removed.seq > added.seq);
    cluster.kill(4).await;

    // A leader change.
    cluster.kill(leader).await;
    let changed = next_matching(&mut events, "a new leader", |e| e.leader.is_some_and(|l| l != leader)).await;
    assert!(changed.changes.contains(&"leader".to_string()), "{changed:?}");
    assert!(changed.term > first.term, "{changed:?}");
    cluster.shutdown().await;
}

/// The events of a raw `/v1/watch` stream until it ends or `deadline`.
async fn read_events(mut resp: reqwest::Response, deadline: tokio::time::Instant) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = find_event_end(&buf) {
            events.push(buf.drain(..end + 2).collect());
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_leader_ends_watches_refuses_new_ones_and_serves_stale_ones() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_for_leader().await;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let http = http();
    let addr = cluster.addr(survivor);

    // While the cluster is whole, the watch streams the routing state and
    // stays open: heartbeats for three election timeouts, no closing.
    let mut resp = http.get(format!("{addr}/v1/watch")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let config = &cluster.members[&survivor].config;
    let beats = (3 * config.election_timeout.as_millis() / config.watch_heartbeat.as_millis()) as usize + 1;
    let mut seen = String::new();
    while seen.matches(": heartbeat").count() < beats {
        let chunk =
            tokio::time::timeout(DEADLINE, resp.chunk()).await.expect("heartbeats keep coming").unwrap().expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(!seen.contains("event: closing"), "a member with a leader ended the watch: {seen}");
    }
    assert!(seen.starts_with("event: members") && seen.contains("\n\nevent: routing\n"), "{seen}");
    let stream = tokio::spawn(read_events(resp, tokio::time::Instant::now() + DEADLINE));

    // The survivor loses its majority (and so its leader).
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.kill(id).await;
    }
    let events = stream.await.unwrap();
    let closing = events.iter().find_map(|e| parse_closing(e)).expect("the stream ended with an `event: closing`");
    assert_eq!(closing.kind, "no_leader", "{closing:?}");
    assert!(closing.error.contains("meta.election_timeout") || closing.error.contains("knows no leader"), "{closing:?}");
    assert!(parse_closing(events.last().unwrap()).is_some(), "closing is the last event");

    // New watches are refused, naming why; a stale one is served.
    let resp = http.get(format!("{addr}/v1/watch")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["kind"], "no_leader", "{body}");
    assert!(body["error"].as_str().unwrap().contains("?stale=true"), "{body}");
    let resp = http.get(format!("{addr}/v1/watch?stale=true")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = read_events(resp, tokio::time::Instant::now() + Duration::from_secs(2)).await;
    assert!(events.iter().any(|e| parse_event(e).unwrap().is_some()), "a stale watch still streams the member's state");
    assert!(events.iter().all(|e| parse_closing(e).is_none()), "a stale watch is not ended for want of a leader");

    // The metric counts both.
    let metrics = http.get(format!("{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_watch_no_leader_total{outcome=\"closed\"} 1"), "{metrics}");
    assert!(metrics.contains("shardgate_meta_watch_no_leader_total{outcome=\"refused\"} 1"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_seeded_with_one_member_learns_the_membership_from_its_watch() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_for_leader().await;
    let seed = cluster.addr(1);
    let client = cluster.client_for(vec![seed.clone()]);
    let mut routing = client.watch(None);
    // Keep the stream drained (the membership arrives with it).
    let drain = tokio::spawn(async move { while routing.next().await.is_some() {} });
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = sorted(cluster.addrs());
    let learned = poll("the client learns all three members", DEADLINE, || async {
        let now = client.members().to_vec();
        (now == all).then_some(now)
    })
    .await;
    assert_eq!(learned.len(), 3);
    // A one-shot client (as `ctl`) learns them by asking once.
    let one_shot = cluster.client_for(vec![seed.clone()]);
    assert_eq!(sorted(one_shot.discover_members().await.unwrap().to_vec()), all);

    // A member added later is used, a removed one dropped.
    cluster.start_unattached(4).await;
    cluster.client_of(leader).add_learner(4, &cluster.addr(4)).await.unwrap();
    let four = cluster.addr(4);
    poll("the client learns member 4", DEADLINE, || async { client.members().contains(&four).then_some(()) }).await;
    cluster.client_of(leader).remove_member(4).await.unwrap();
    poll("the client drops member 4", DEADLINE, || async { (!client.members().contains(&four)).then_some(()) }).await;
    assert_eq!(sorted(client.members().to_vec()), all);
    drain.abort();
    cluster.kill(4).await;
    cluster.shutdown().await;
}
