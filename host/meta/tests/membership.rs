//! Meta cannot lose its quorum through its own membership API (issue 12.1):
//! real members on 127.0.0.1, real Raft, members killed mid-way.
//!
//! - a learner whose address does not answer as that meta member, or that
//!   another member already has, is refused before anything is proposed;
//! - a learner that stopped answering is not promoted, and the refusal
//!   names how far behind it is;
//! - a change that cannot complete is bounded by `meta.membership_timeout`
//!   and reported, and `shardgate_meta::recover` (`shardgate meta recover`)
//!   gets the stuck cluster back, data kept.

mod common;

use std::time::Duration;

use common::*;
use shardgate_meta_client::model::NewMember;

async fn learners(http: &reqwest::Client, member: &str, id: u64, addr: &str) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(&NewMember { id, addr: addr.into() }).unwrap();
    let resp = http.post(format!("{member}/v1/raft/learners")).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, json(resp).await)
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default()
}

/// Poll the leader (member 1) until learner `id` has acknowledged its last entry.
async fn caught_up(cluster: &TestCluster, id: u64) {
    poll("the leader sees the learner caught up", Duration::from_secs(10), || async {
        let st = cluster.status_of(1).await?;
        (st.members.iter().find(|m| m.id == id)?.lag == Some(0)).then_some(())
    })
    .await
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_address_that_is_not_that_meta_member_is_refused_and_nothing_is_proposed() {
    let mut cluster = TestCluster::start(1, |_| {}).await;
    let http = http();
    let leader = cluster.addr(1);
    let before = cluster.status_of(1).await.unwrap();

    // Nobody answers: the request the issue found wedging the cluster.
    let nobody = format!("http://127.0.0.1:{}", closed_port().await);
    let (status, body) = learners(&http, &leader, 2, &nobody).await;
    assert_eq!((status, body["kind"].as_str()), (422, Some("learner_check")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("/v1/raft/status"), "{body}");

    // Something answers, but not as a meta member (a plain HTTP server).
    let stranger = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stranger_addr = format!("http://{}", stranger.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/raft/status", axum::routing::get(|| async { "hello" }));
    let server = tokio::spawn(async move { axum::serve(stranger, app).await });
    let (status, body) = learners(&http, &leader, 2, &stranger_addr).await;
    assert_eq!((status, body["kind"].as_str()), (422, Some("learner_check")), "{body}");
    server.abort();

    // A real meta member, under another id.
    cluster.start_unattached(2).await;
    let (status, body) = learners(&http, &leader, 3, &cluster.addr(2)).await;
    assert_eq!((status, body["kind"].as_str()), (422, Some("learner_check")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("answers as meta member 2, not 3"), "{body}");

    // Another member's address (the leader's own).
    let (status, body) = learners(&http, &leader, 4, &leader).await;
    assert_eq!((status, body["kind"].as_str()), (409, Some("membership")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("member 1 already has address"), "{body}");

    // Nothing was proposed: same membership, same log.
    let after = cluster.status_of(1).await.unwrap();
    let view = |s: &shardgate_meta_client::model::RaftStatus| s.members.iter().map(|m| (m.id, m.addr.clone(), m.voter)).collect::<Vec<_>>();
    assert_eq!(view(&after), view(&before));
    assert_eq!(after.last_log_index, before.last_log_index);
    assert!(!after.membership_change_pending);

    // The right one is accepted; the same address under a second id is not.
    let (status, body) = learners(&http, &leader, 2, &cluster.addr(2)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = learners(&http, &leader, 5, &cluster.addr(2)).await;
    assert_eq!((status, body["kind"].as_str()), (409, Some("membership")), "{body}");

    // And the cluster still writes.
    cluster.client().add_node(&node("n1", 9001)).await.expect("writes keep working");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_stopped_answering_is_not_promoted_and_the_refusal_names_its_lag() {
    let mut cluster = TestCluster::start(1, |_| {}).await;
    let http = http();
    let leader = cluster.addr(1);
    cluster.start_unattached(2).await;
    let (status, body) = learners(&http, &leader, 2, &cluster.addr(2)).await;
    assert_eq!(status, 200, "{body}");
    caught_up(&cluster, 2).await;
    cluster.kill(2).await;
    // Entries it never sees.
    let client = cluster.client_of(1);
    for i in 0..3 {
        client.add_node(&node(&format!("n{i}"), 9000 + i)).await.unwrap();
    }
    let election_timeout = cluster.members[&1].config.election_timeout.as_millis() as u64;
    let lag = poll("the leader has not heard from learner 2 for an election timeout", Duration::from_secs(10), || async {
        let st = cluster.status_of(1).await?;
        let m = st.members.iter().find(|m| m.id == 2)?;
        (m.last_ack_ms? > election_timeout).then_some(m.lag?)
    })
    .await;
    assert!(lag >= 3, "three entries were written after learner 2 stopped, lag {lag}");

    let resp = http.post(format!("{leader}/v1/raft/members/2/promote")).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    let body = json(resp).await;
    assert_eq!(body["kind"], "not_caught_up", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(&format!("{lag} entries behind")), "{error}");
    assert!(error.contains("meta.promotion_max_lag") && error.contains("meta.election_timeout"), "{error}");

    // Nothing changed: 2 is still a learner and the cluster writes.
    let st = cluster.status_of(1).await.unwrap();
    assert!(!st.membership_change_pending);
    assert!(!st.members.iter().find(|m| m.id == 2).unwrap().voter);
    client.add_node(&node("after", 9100)).await.expect("writes keep working");

    // The learner can be removed again.
    let resp = http.delete(format!("{leader}/v1/raft/members/2")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_that_cannot_commit_times_out_is_reported_and_recover_gets_the_cluster_back() {
    // A long election timeout lets the promotion check pass right after the
    // learner dies: the race no check can close, made deterministic.
    let mut cluster = TestCluster::start(1, |c| {
        c.election_timeout = Duration::from_secs(30);
        c.write_timeout = Duration::from_millis(500);
        c.membership_timeout = Duration::from_secs(1);
    })
    .await;
    let http = http();
    let leader = cluster.addr(1);
    cluster.client_of(1).add_node(&node("kept", 9001)).await.unwrap();
    cluster.start_unattached(2).await;
    let (status, body) = learners(&http, &leader, 2, &cluster.addr(2)).await;
    assert_eq!(status, 200, "{body}");
    caught_up(&cluster, 2).await;
    cluster.kill(2).await;

    let resp = http.post(format!("{leader}/v1/raft/members/2/promote")).send().await.unwrap();
    let status = resp.status();
    let body = json(resp).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kind"], "membership_timeout", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("meta.membership_timeout") && error.contains("shardgate meta recover"), "{error}");
    assert!(error.contains("{1} and {1,2}"), "the joint configuration is named: {error}");

    // The cluster is stuck, and says so.
    let st = cluster.status_of(1).await.unwrap();
    assert!(st.membership_change_pending, "{st:?}");
    let resp = http.post(format!("{leader}/v1/nodes")).body(r#"{"id": "lost", "addr": "http://127.0.0.1:9002"}"#).send().await.unwrap();
    assert_eq!(resp.status(), 503, "{}", resp.text().await.unwrap());

    // Recovery, offline, on the survivor.
    cluster.kill(1).await;
    // The stopped member's last tasks let go of the database a moment after
    // `run` returns; until then redb refuses a second opener.
    let dir = cluster.data_dir(1);
    let r = poll("recover can open the stopped member's database", Duration::from_secs(10), || async {
        match shardgate_meta::recover::recover(&dir, 1) {
            Err(shardgate_meta::recover::RecoverError::Open { reason, .. }) if reason.contains("already open") => None,
            other => Some(other),
        }
    })
    .await
    .expect("recover");
    assert!(r.changed);
    assert_eq!(r.voters_before.len(), 2, "a joint configuration before: {r:?}");
    assert_eq!(r.removed.iter().copied().collect::<Vec<_>>(), vec![2]);
    cluster.restart(1).await;
    let st = poll("member 1 leads again, alone", Duration::from_secs(15), || async {
        let st = cluster.status_of(1).await?;
        (st.leader == Some(1) && !st.membership_change_pending).then_some(st)
    })
    .await;
    assert_eq!(st.members.iter().map(|m| (m.id, m.voter)).collect::<Vec<_>>(), vec![(1, true)]);
    let client = cluster.client_of(1);
    let ids: Vec<String> = client.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, vec!["kept".to_string()], "the data is kept");
    client.add_node(&node("new", 9003)).await.expect("writes work again");

    // Running it again changes nothing.
    cluster.kill(1).await;
    let again = shardgate_meta::recover::recover(&cluster.data_dir(1), 1).expect("recover again");
    assert!(!again.changed, "{again:?}");
    // The wrong id is refused, naming the members.
    let err = shardgate_meta::recover::recover(&cluster.data_dir(1), 7).unwrap_err().to_string();
    assert!(err.contains("member 7 is not in the membership") && err.contains("1 (http://"), "{err}");
}
