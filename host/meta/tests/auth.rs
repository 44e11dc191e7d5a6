//! `meta.admin_token` on a real three-member cluster on 127.0.0.1: Raft
//! still elects and replicates (members send the token with every RPC);
//! writes without the token answer 401 `unauthorized`, with another token
//! 403 `forbidden`, on the leader and on followers, and commit nothing;
//! writes with the token commit on every member, also when sent to a
//! follower (the forward carries the client's Authorization header); reads,
//! the watch stream and preview stay open; a stranger's Raft RPCs are
//! refused before they reach Raft.

mod common;

use std::time::Duration;

use common::{TestCluster, expect_api, node, node_ids_on, poll};
use futures::StreamExt;
use shardgate_meta_client::model::PreviewRequest;
use shardgate_meta_client::{ClientError, MetaClient};

const TOKEN: &str = "meta-admin-7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_cluster_refuses_strangers_and_serves_the_token() {
    // Electing a leader already needs the vote RPCs to carry the token.
    let cluster = TestCluster::start(3, |c| c.admin_token = Some(TOKEN.into())).await;
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    let applied_before = cluster.status_of(leader).await.unwrap().applied_index;

    for id in [leader, follower] {
        let anonymous = cluster.client_of(id);
        let message = expect_api(anonymous.add_node(&node("a", 9001)).await, 401, "unauthorized");
        assert!(message.contains("meta.admin_token"), "{message}");
        let wrong = cluster.client_of(id).with_token("meta-admin-8");
        let message = expect_api(wrong.add_node(&node("a", 9001)).await, 403, "forbidden");
        assert!(message.contains("meta.admin_token"), "{message}");
        expect_api(anonymous.upload_strategy(b"\0asm".to_vec()).await, 401, "unauthorized");
        expect_api(anonymous.rollback(1).await, 401, "unauthorized");
        expect_api(anonymous.add_learner(9, "http://127.0.0.1:1").await, 401, "unauthorized");
        expect_api(anonymous.promote(9).await, 401, "unauthorized");
        expect_api(anonymous.remove_member(2).await, 401, "unauthorized");
        expect_api(wrong.remove_node("a").await, 403, "forbidden");

        // The 401 names the scheme; framework refusals stay JSON.
        let http = common::http();
        let resp = http.post(format!("{}/v1/changes", cluster.addr(id))).body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert_eq!(resp.headers()["content-type"], "application/json");
    }

    let metrics = common::http().get(format!("{}/metrics", cluster.addr(follower))).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("shardgate_meta_auth_refused_total{outcome=\"unauthorized\"} 7"), "{metrics}");
    assert!(metrics.contains("shardgate_meta_auth_refused_total{outcome=\"forbidden\"} 2"), "{metrics}");

    // Nothing was proposed, let alone committed.
    assert_eq!(cluster.status_of(leader).await.unwrap().applied_index, applied_before);
    for id in cluster.members.keys() {
        assert!(node_ids_on(&cluster, *id).await.is_empty());
    }

    // Reads, preview and the watch stream need no token.
    let anonymous = cluster.client_of(follower);
    assert!(anonymous.nodes().await.unwrap().is_empty());
    anonymous.routing().await.unwrap();
    let preview = anonymous.preview(&PreviewRequest { sample: Some(10), ..Default::default() }).await;
    assert!(!matches!(preview, Err(ClientError::Api { status: 401 | 403, .. })), "{preview:?}");
    let mut watch = anonymous.watch(None);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    // With the token, through a follower: forwarded with its Authorization
    // (the leader checks it again) and applied everywhere.
    let admin = cluster.client_of(follower).with_token(TOKEN);
    admin.add_node(&node("a", 9001)).await.unwrap();
    for id in cluster.members.keys() {
        poll("every member applied the write", Duration::from_secs(10), || async {
            (node_ids_on(&cluster, *id).await == ["a"]).then_some(())
        })
        .await;
    }
    let metrics = common::http().get(format!("{}/metrics", cluster.addr(follower))).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("shardgate_meta_forwarded_total 0"), "{metrics}");

    // A stranger's Raft RPCs never reach Raft.
    let http = common::http();
    for rpc in ["vote", "pre-vote", "append", "snapshot", "transfer-leader"] {
        let url = format!("{}/raft/{rpc}", cluster.addr(follower));
        let resp = http.post(&url).body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 401, "{rpc}");
        let resp = http.post(&url).bearer_auth("meta-admin-8").body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 403, "{rpc}");
        // The right token gets past the check (to Raft's own 400 for a bad body).
        let resp = http.post(&url).bearer_auth(TOKEN).body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 400, "{rpc}");
    }
    // The cluster is undisturbed and still commits.
    assert_eq!(cluster.wait_for_leader().await, leader);
    admin.add_node(&node("b", 9002)).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_the_token_joins_through_a_follower() {
    let mut cluster = TestCluster::start(3, |c| c.admin_token = Some(TOKEN.into())).await;
    cluster.client().with_token(TOKEN).add_node(&node("a", 9001)).await.unwrap();
    let leader = cluster.wait_for_leader().await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    // The joiner's add-learner and promote go through a follower (forwarded
    // with its token), then Raft replicates to it with the token.
    cluster.start_joining_with(4, &cluster.addr(follower), |c| c.admin_token = Some(TOKEN.into())).await;
    poll("member 4 is a voter", Duration::from_secs(20), || async {
        let st = cluster.status_of(leader).await?;
        st.members.iter().any(|m| m.id == 4 && m.voter).then_some(())
    })
    .await;
    poll("member 4 has the state", Duration::from_secs(10), || async { (node_ids_on(&cluster, 4).await == ["a"]).then_some(()) }).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_cluster_is_open() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let client = MetaClient::new(cluster.addrs());
    client.add_node(&node("a", 9001)).await.unwrap();
    // A token the cluster does not ask for is ignored.
    cluster.client().with_token("unused").add_node(&node("b", 9002)).await.unwrap();
    cluster.shutdown().await;
}
