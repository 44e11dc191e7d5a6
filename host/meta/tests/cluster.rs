//! Three-member clusters on 127.0.0.1: forwarding, failover, restart from
//! disk, snapshot install, watch resumption, admission and bad input.

mod common;

use std::time::Duration;

use common::{TestCluster, expect_api, node, node_ids_on, poll};
use futures::StreamExt;
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::*;

fn rendezvous() -> Vec<u8> {
    shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_to_a_follower_commit_on_every_member() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    let client = cluster.client_of(follower);

    let receipt = client.add_node(&node("a", 9001)).await.unwrap();
    assert!(receipt.index > 0);
    assert_eq!(receipt.epoch, receipt.index, "the epoch is the log index of the change");
    // Linearizable read through the follower sees it at once.
    assert_eq!(client.nodes().await.unwrap().len(), 1);
    for id in cluster.members.keys() {
        poll("every member applied the write", Duration::from_secs(10), || async {
            (node_ids_on(&cluster, *id).await == ["a"]).then_some(())
        })
        .await;
    }
    let metrics = common::http().get(format!("{}/metrics", cluster.addr(follower))).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_forwarded_total 2"), "{metrics}");
    let metrics = common::http().get(format!("{}/metrics", cluster.addr(leader))).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_writes_total{outcome=\"committed\"} 1"), "{metrics}");
    assert!(metrics.contains("shardgate_meta_raft_is_leader 1"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_loses_no_committed_write() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    for i in 0..5 {
        client.add_node(&node(&format!("n{i}"), 9000 + i)).await.unwrap();
    }
    let old = cluster.wait_for_leader().await;
    cluster.kill(old).await;
    let survivors = cluster.client();
    let receipt = survivors.add_node(&node("after", 9100)).await.unwrap();
    let new = cluster.wait_for_leader().await;
    assert_ne!(new, old);
    let ids: Vec<String> = survivors.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["n0", "n1", "n2", "n3", "n4", "after"]);
    assert!(receipt.epoch > 5);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_catches_up_and_a_full_restart_keeps_everything() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.add_node(&node("a", 9001)).await.unwrap();
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    poll("the follower has a", Duration::from_secs(10), || async { (node_ids_on(&cluster, follower).await == ["a"]).then_some(()) }).await;
    cluster.kill(follower).await;
    let client = cluster.client();
    client.add_node(&node("b", 9002)).await.unwrap();
    client.add_node(&node("c", 9003)).await.unwrap();
    cluster.restart(follower).await;
    poll("the restarted follower caught up", Duration::from_secs(15), || async {
        (node_ids_on(&cluster, follower).await == ["a", "b", "c"]).then_some(())
    })
    .await;

    // Every member down, then up again from its data directory.
    let ids: Vec<u64> = cluster.members.keys().copied().collect();
    for id in &ids {
        cluster.kill(*id).await;
    }
    for id in &ids {
        cluster.restart(*id).await;
    }
    cluster.wait_for_leader().await;
    let client = cluster.client();
    let ids_after: Vec<String> = client.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids_after, ["a", "b", "c"]);
    client.add_node(&node("d", 9004)).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_member_receives_a_snapshot_after_the_log_was_compacted() {
    let mut cluster = TestCluster::start(3, |c| {
        c.snapshot_every = 5;
        c.keep_logs = 0;
    })
    .await;
    let client = cluster.client();
    // Every built-in plus the test component: ~1.5 MB of components, a
    // snapshot well over axum's default 2 MiB body limit (which used to
    // leave the lagging member stuck for good).
    for b in shardgate_builtins::BUILTINS {
        client.upload_strategy(b.component.to_vec()).await.unwrap();
    }
    client.upload_strategy(shardgate_builtins::MISBEHAVE.to_vec()).await.unwrap();
    let leader = cluster.wait_for_leader().await;
    let lagging = *cluster.members.keys().find(|id| **id != leader).unwrap();
    let lagging_last = poll("the lagging member's status", Duration::from_secs(10), || async {
        let st = cluster.status_of(lagging).await?;
        let leader_st = cluster.status_of(leader).await?;
        (st.applied_index == leader_st.applied_index).then_some(st.last_log_index.unwrap_or(0))
    })
    .await;
    cluster.kill(lagging).await;
    let client = cluster.client();
    for i in 0..20 {
        client.add_node(&node(&format!("n{i}"), 9000 + i)).await.unwrap();
    }
    let purged = poll("the leader compacted its log past the lagging member", Duration::from_secs(10), || async {
        let st = cluster.status_of(leader).await?;
        st.purged_index.filter(|p| *p > lagging_last)
    })
    .await;
    cluster.restart(lagging).await;
    let expected: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    poll("the lagging member has every node", Duration::from_secs(15), || async {
        (node_ids_on(&cluster, lagging).await == expected).then_some(())
    })
    .await;
    let st = cluster.status_of(lagging).await.unwrap();
    assert!(st.snapshot_index.is_some_and(|s| s >= purged), "{st:?} purged {purged}");
    // The registry (component bytes) came with the snapshot.
    let strategies = cluster.client_of(lagging).with_stale_reads(true).strategies().await.unwrap();
    assert_eq!(strategies.len(), shardgate_builtins::BUILTINS.len() + 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_an_epoch_across_reconnects_and_members() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    let first = client.add_node(&node("a", 9001)).await.unwrap();

    // A raw SSE connection: full state on connect, then heartbeats.
    let mut raw = common::http().get(format!("{}/v1/watch", cluster.addr(1))).send().await.unwrap();
    assert_eq!(raw.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains(": heartbeat") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), raw.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // The membership first, then the state.
    assert!(text.starts_with("event: members\ndata: [{\"id\":1,"), "{text}");
    let routing = text.find("\n\nevent: routing\n").expect("a routing event after the members") + 2;
    let data = text[routing..].lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let state: RoutingState = serde_json::from_str(data).unwrap();
    assert_eq!(state.epoch, first.epoch);
    assert_eq!(state.nodes[0].id, "a");
    drop(raw);

    // Up to date: nothing but heartbeats until the next change.
    let mut raw = common::http().get(format!("{}/v1/watch?from_epoch={}", cluster.addr(2), first.epoch)).send().await.unwrap();
    let mut text = String::new();
    while !text.contains(": heartbeat") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), raw.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("event: members\n"), "{text}");
    assert!(!text.contains("event: routing"), "no state when up to date: {text}");
    drop(raw);

    // Changes made while no watch is connected are delivered on resume.
    let b = client.add_node(&node("b", 9002)).await.unwrap();
    let c = client.add_node(&node("c", 9003)).await.unwrap();
    assert!(c.epoch > b.epoch && b.epoch > first.epoch);
    let watcher = MetaClient::new(vec![cluster.addr(1), cluster.addr(2), cluster.addr(3)]).with_watch_idle_timeout(Duration::from_secs(1));
    let mut stream = watcher.watch(Some(first.epoch)).filter_map(|r| async move { r.ok() }).boxed();
    let resumed = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    assert_eq!(resumed.epoch, c.epoch);
    assert_eq!(resumed.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);

    // The member the watch is connected to dies: the stream moves to another
    // member and delivers the next change.
    cluster.kill(1).await;
    let d = cluster.client().add_node(&node("d", 9004)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("the watch delivers the change made after the kill")
        .unwrap();
    assert_eq!(next.epoch, d.epoch);
    assert!(next.nodes.iter().any(|n| n.id == "d"));
    assert!(next.leader.is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_bad_components_and_commits_nothing() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.add_node(&node("a", 9001)).await.unwrap();
    client.add_node(&node("b", 9002)).await.unwrap();
    let before = client.routing().await.unwrap();

    let msg = expect_api(client.upload_strategy(b"definitely not wasm".to_vec()).await, 422, "admission");
    assert!(msg.contains("magic"), "{msg}");
    let msg = expect_api(client.upload_strategy(vec![0u8; 1024 * 1024 + 1]).await, 413, "too_large");
    assert!(msg.contains("1048577") && msg.contains("1048576") && msg.contains("meta.max_component_size"), "{msg}");
    assert!(client.strategies().await.unwrap().is_empty());

    let misbehave = client.upload_strategy(shardgate_builtins::MISBEHAVE.to_vec()).await.unwrap();
    assert_eq!(misbehave.name, "misbehave");
    let after_upload = client.routing().await.unwrap();
    assert_eq!(after_upload.epoch, before.epoch, "an upload does not change the routing epoch");

    for (config, needle) in [
        // The panic message the strategy wrote to stderr is in the answer.
        ("fault = \"trap\"", "misbehave: trap requested"),
        ("fault = \"loop\"", "fuel"),
        ("fault = \"out-of-range\"", ""),
        ("fault = \"reject-config\"", "rejects this config"),
        ("nonsense = [", ""),
    ] {
        let res = client.activate(&misbehave.hash, &Activation { config: config.into(), replicas: 2 }).await;
        let msg = expect_api(res, 422, "admission");
        assert!(msg.contains(needle), "{config}: {msg}");
    }
    let unknown = "0".repeat(64);
    expect_api(client.activate(&unknown, &Activation { config: String::new(), replicas: 1 }).await, 404, "unknown_strategy");
    assert_eq!(client.routing().await.unwrap(), after_upload, "refused activations changed nothing");
    assert!(client.history().await.unwrap().is_empty());

    // A healthy strategy is admitted; a node change that the active strategy
    // cannot configure is refused the same way.
    let r = client.upload_strategy(rendezvous()).await.unwrap();
    assert_eq!(client.upload_strategy(rendezvous()).await.unwrap(), r, "uploading the same bytes again is a no-op");
    let receipt = client.activate(&r.hash, &Activation { config: String::new(), replicas: 2 }).await.unwrap();
    let routing = client.routing().await.unwrap();
    assert_eq!(routing.epoch, receipt.epoch);
    assert_eq!(routing.strategy.as_ref().unwrap().name, "rendezvous");
    // Uploads are ordered and dated.
    assert!(r.uploaded_at > misbehave.uploaded_at && r.uploaded_unix_ms > 0, "{r:?} {misbehave:?}");
    // A hash prefix of 8+ hex digits, `sha256:` optional, names a strategy
    // too; a shorter one is refused, saying so.
    let by_prefix = client.activate(&format!("sha256:{}", &r.hash[..8]), &Activation { config: String::new(), replicas: 1 }).await.unwrap();
    let routing = client.routing().await.unwrap();
    assert_eq!((routing.epoch, routing.strategy.unwrap().hash), (by_prefix.epoch, r.hash.clone()));
    let msg = expect_api(client.activate(&r.hash[..6], &Activation { config: String::new(), replicas: 1 }).await, 400, "invalid");
    assert!(msg.contains("at least 8"), "{msg}");
    let good = client.activate(&misbehave.hash, &Activation { config: "fault = \"none\"".into(), replicas: 1 }).await.unwrap();
    let msg = expect_api(
        client.activate(&misbehave.hash, &Activation { config: "fault = \"trap\"\nafter = 0".into(), replicas: 1 }).await,
        422,
        "admission",
    );
    assert!(msg.contains("trap"), "{msg}");
    assert_eq!(client.routing().await.unwrap().epoch, good.epoch);

    // The component is downloadable, content-addressed.
    let bytes = client.component(&r.hash).await.unwrap();
    assert_eq!(bytes, rendezvous());
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), r.hash);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.add_node(&node("a", 9001)).await.unwrap();
    let before = client.routing().await.unwrap();

    expect_api(client.add_node(&node("a", 9009)).await, 409, "duplicate_node");
    expect_api(client.update_node("ghost", &NodeUpdate { weight: Some(2.0), state: None }).await, 404, "unknown_node");
    expect_api(client.remove_node("ghost").await, 404, "unknown_node");
    let msg = expect_api(
        client.add_node(&NewNode { id: "b".into(), addr: "localhost:80".into(), weight: 1.0, zone: String::new() }).await,
        400,
        "invalid",
    );
    assert!(msg.contains("http://host:port"), "{msg}");
    expect_api(
        client.add_node(&NewNode { id: "b".into(), addr: "http://h:1".into(), weight: -1.0, zone: String::new() }).await,
        400,
        "invalid",
    );
    expect_api(client.rollback(12345).await, 404, "unknown_epoch");
    // One bad change refuses the whole batch.
    let res = client
        .apply(vec![
            Change::AddNode { id: "b".into(), addr: "http://127.0.0.1:9002".into(), weight: 1.0, zone: String::new() },
            Change::RemoveNode { id: "ghost".into() },
        ])
        .await;
    expect_api(res, 404, "unknown_node");

    // Malformed JSON and unknown fields, through a follower (forwarded).
    let http = common::http();
    for body in ["{\"id\": \"b\", ", "{\"id\":\"b\",\"addr\":\"http://h:1\",\"colour\":\"red\"}", "[]"] {
        let resp = http.post(format!("{}/v1/nodes", cluster.addr(2))).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let err: ErrorBody = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(err.kind, "bad_request");
        assert!(err.error.contains("malformed JSON body"), "{}", err.error);
    }
    let resp = http.post(format!("{}/v1/nodes", cluster.addr(1))).body("{\"id\": 1").send().await.unwrap();
    let err: ErrorBody = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(err.error.contains("line 1 column"), "{}", err.error);
    let resp = http.get(format!("{}/v1/watch?from_epoch=minus-one", cluster.addr(1))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http.post(format!("{}/v1/raft/members/abc/promote", cluster.addr(1))).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    assert_eq!(client.routing().await.unwrap(), before, "refused writes changed nothing");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_quorum_answers_503_promptly_and_writes_nothing() {
    let mut cluster = TestCluster::start(3, |c| c.write_timeout = Duration::from_secs(1)).await;
    cluster.client().add_node(&node("a", 9001)).await.unwrap();
    let leader = cluster.wait_for_leader().await;
    let others: Vec<u64> = cluster.members.keys().copied().filter(|id| *id != leader).collect();
    for id in &others {
        cluster.kill(*id).await;
    }
    // Through the old leader (lost its quorum) and, after a restart, a lone
    // follower: both answer 503 within a few seconds.
    let lone = cluster.client_of(leader).with_retry_for(Duration::from_millis(1));
    let start = std::time::Instant::now();
    let res = lone.add_node(&node("b", 9002)).await;
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let err = res.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(matches!(err.kind(), Some("no_quorum" | "no_leader" | "not_leader")), "{err}");

    cluster.kill(leader).await;
    cluster.restart(others[0]).await;
    let lone = cluster.client_of(others[0]).with_retry_for(Duration::from_millis(1));
    let start = std::time::Instant::now();
    let res = lone.add_node(&node("c", 9003)).await;
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert_eq!(res.unwrap_err().status(), Some(503));

    for id in [leader, others[1]] {
        cluster.restart(id).await;
    }
    cluster.wait_for_leader().await;
    let ids: Vec<String> = cluster.client().nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["a"], "no refused write was committed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_routing_change_atomically_and_roll_back() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    let r = client.upload_strategy(rendezvous()).await.unwrap();
    let jump = client.upload_strategy(shardgate_builtins::builtin("jump").unwrap().component.to_vec()).await.unwrap();

    let one = client
        .apply(vec![
            Change::AddNode { id: "a".into(), addr: "http://127.0.0.1:9001".into(), weight: 1.0, zone: "z1".into() },
            Change::AddNode { id: "b".into(), addr: "http://127.0.0.1:9002".into(), weight: 2.0, zone: "z2".into() },
            Change::Activate { hash: r.hash.clone(), config: String::new(), replicas: 2 },
        ])
        .await
        .unwrap();
    let routing = client.routing().await.unwrap();
    assert_eq!(routing.epoch, one.index);
    assert_eq!(routing.nodes.len(), 2);
    assert_eq!(routing.replicas, 2);
    let history = client.history().await.unwrap();
    // The leader noted when; nothing routed before, so no share moved.
    let at_ms = history[0].at_ms.expect("the history notes when the leader proposed the change");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(at_ms <= now_ms && now_ms - at_ms < 600_000, "at_ms {at_ms}, now {now_ms}");
    assert_eq!(
        history,
        [HistoryEntry {
            epoch: one.index,
            hash: r.hash.clone(),
            config: String::new(),
            replicas: 2,
            at_ms: Some(at_ms),
            moved_share: None
        }]
    );

    // jump cannot weight nodes: admission refuses it while b weighs 2.
    let msg = expect_api(client.activate(&jump.hash, &Activation { config: String::new(), replicas: 1 }).await, 422, "admission");
    assert!(msg.contains("weight"), "{msg}");
    client.update_node("b", &NodeUpdate { weight: Some(1.0), state: None }).await.unwrap();
    // The history notes the share the activation moved: what a preview
    // over the admission sample predicts, exactly.
    let sample = cluster.members[&1].config.admission_sample_keys as u32;
    let predicted = client
        .preview(&PreviewRequest {
            hash: Some(jump.hash.clone()),
            config: Some(String::new()),
            replicas: Some(1),
            nodes: None,
            sample: Some(sample),
        })
        .await
        .unwrap();
    let two = client.activate(&jump.hash, &Activation { config: String::new(), replicas: 1 }).await.unwrap();
    assert_eq!(client.routing().await.unwrap().strategy.unwrap().name, "jump");
    let noted = client.history().await.unwrap().last().unwrap().clone();
    assert_eq!((noted.epoch, noted.moved_share), (two.epoch, Some(predicted.moved_share)));
    assert!(predicted.moved_share > 0.0);
    let back = client.rollback(one.index).await.unwrap();
    assert!(back.epoch > two.epoch);
    let routing = client.routing().await.unwrap();
    assert_eq!((routing.strategy.unwrap().hash, routing.replicas), (r.hash.clone(), 2));
    assert_eq!(client.history().await.unwrap().len(), 3);

    // Draining keeps the node listed but not routed; update and remove work.
    // (rendezvous is active again, so weights are fine)
    client.update_node("a", &NodeUpdate { weight: Some(3.0), state: Some(NodeState::Draining) }).await.unwrap();
    let a = client.node("a").await.unwrap();
    assert_eq!((a.weight, a.state), (3.0, NodeState::Draining));
    client.remove_node("a").await.unwrap();
    expect_api(client.node("a").await, 404, "unknown_node");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_predicts_exactly_the_movement_the_change_causes() {
    use shardgate_strategy::{Limits, NodeSpec, Sandbox};
    let cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    let r = client.upload_strategy(rendezvous()).await.unwrap();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        client.add_node(&node(id, 9001 + i as u16)).await.unwrap();
    }
    client.activate(&r.hash, &Activation { config: String::new(), replicas: 2 }).await.unwrap();
    let before = client.routing().await.unwrap();

    let mut candidate: Vec<NewNode> =
        before.nodes.iter().map(|n| NewNode { id: n.id.clone(), addr: n.addr.clone(), weight: n.weight, zone: n.zone.clone() }).collect();
    candidate.push(node("d", 9004));
    let report = client.preview(&PreviewRequest { nodes: Some(candidate), sample: Some(5000), ..Default::default() }).await.unwrap();
    assert_eq!(report.sample, 5000);
    assert!(report.moved_share > 0.15 && report.moved_share < 0.35, "{report:?}");
    assert_eq!(report.load.iter().map(|l| l.before).sum::<u64>(), 5000);
    assert_eq!(report.load.iter().map(|l| l.after).sum::<u64>(), 5000);
    assert_eq!(report.load.iter().find(|l| l.id == "d").unwrap().before, 0);
    assert!(client.routing().await.unwrap() == before, "a preview changes nothing");

    client.add_node(&node("d", 9004)).await.unwrap();
    let after = client.routing().await.unwrap();

    // Route the same sample with the routing states as a proxy would.
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let strategy = sandbox.load(&client.component(&r.hash).await.unwrap()).unwrap();
    let owners = |state: &RoutingState| -> Vec<String> {
        let nodes: Vec<NodeSpec> =
            state.active_nodes().map(|n| NodeSpec { id: n.id.clone(), weight: n.weight, zone: n.zone.clone() }).collect();
        let router = strategy.configure(&state.config, &nodes, state.replicas).unwrap();
        (0..5000u32)
            .map(|i| nodes[router.route(shardgate_meta::admission::preview_key(i).as_bytes()).unwrap()[0] as usize].id.clone())
            .collect()
    };
    let (old, new) = (owners(&before), owners(&after));
    let moved = old.iter().zip(&new).filter(|(a, b)| a != b).count();
    assert_eq!(moved as f64 / 5000.0, report.moved_share);
    for l in &report.load {
        assert_eq!(new.iter().filter(|o| **o == l.id).count() as u64, l.after, "{}", l.id);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_joins_through_a_follower_and_gets_the_state() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.add_node(&node("a", 9001)).await.unwrap();
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    cluster.start_joining(4, &cluster.addr(follower)).await;
    poll("member 4 is a voter", Duration::from_secs(20), || async {
        let st = cluster.status_of(leader).await?;
        st.members.iter().any(|m| m.id == 4 && m.voter).then_some(())
    })
    .await;
    poll("member 4 has the state", Duration::from_secs(10), || async { (node_ids_on(&cluster, 4).await == ["a"]).then_some(()) }).await;
    // And can be removed again.
    cluster.client().remove_member(4).await.unwrap();
    let st = cluster.status_of(leader).await.unwrap();
    assert!(!st.members.iter().any(|m| m.id == 4));
    assert_eq!(st.members.len(), 3);
    cluster.shutdown().await;
}
