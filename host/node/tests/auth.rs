//! `node.data_token` against a real node on 127.0.0.1:0: `/v1/` requests
//! without the token get 401 (with `WWW-Authenticate: Bearer` and a JSON
//! error naming the key), with another token 403, and neither changes the
//! store; the right token is served; health, readiness, metrics and the
//! OpenAPI document stay open; without a token configured the API is open.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use shardgate_api::batch;
use shardgate_api::etag::WriteCondition;
use shardgate_node::{NodeConfig, NodeError};
use shardgate_testkit::{Answer, TestNode};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(15);
const TOKEN: &str = "proxy-token-1";

/// Requests with an optional `Authorization` header.
trait Authed {
    async fn authed(&self, method: Method, path: &str, authorization: Option<&str>, body: impl Into<Bytes>) -> Answer;
}

impl Authed for TestNode {
    async fn authed(&self, method: Method, path: &str, authorization: Option<&str>, body: impl Into<Bytes>) -> Answer {
        let headers: Vec<(&str, &str)> = authorization.map(|v| ("authorization", v)).into_iter().collect();
        self.request(method, path, &headers, body).await
    }
}

fn protected() -> NodeConfig {
    NodeConfig { data_token: Some(TOKEN.into()), ..NodeConfig::default() }
}

#[tokio::test]
async fn data_api_requires_the_token_and_refusals_change_nothing() {
    let node = TestNode::start(protected()).await;
    let good = format!("Bearer {TOKEN}");
    let batch_put = batch::encode_put_request(&[batch::PutItem {
        key: Bytes::from_static(b"b"),
        content_type: Bytes::new(),
        value: Bytes::from_static(b"v"),
        ttl_seconds: None,
        condition: WriteCondition::Always,
    }])
    .unwrap();
    let batch_get = batch::encode_get_request(&[b"k".as_slice(), b"b".as_slice()]).unwrap();

    // Missing: 401 + WWW-Authenticate, on every /v1/ route (also unknown ones).
    for (method, path, body) in [
        (Method::PUT, "/v1/keys/k", Bytes::from_static(b"v")),
        (Method::GET, "/v1/keys/k", Bytes::new()),
        (Method::DELETE, "/v1/keys/k", Bytes::new()),
        (Method::POST, "/v1/batch/put", batch_put.clone()),
        (Method::POST, "/v1/batch/get", batch_get.clone()),
        (Method::GET, "/v1/no-such-route", Bytes::new()),
    ] {
        for auth in [None, Some("Basic cHJveHk6dG9rZW4="), Some("Bearer ")] {
            let reply = node.authed(method.clone(), path, auth, body.clone()).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert!(reply.json_error().contains("node.data_token"), "{}", reply.json_error());
        }
        for wrong in ["Bearer proxy-token-2", "Bearer proxy-token-", "Bearer PROXY-TOKEN-1"] {
            let reply = node.authed(method.clone(), path, Some(wrong), body.clone()).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path} {wrong}");
            assert!(!reply.headers.contains_key(header::WWW_AUTHENTICATE));
            assert_eq!(reply.json_error(), "bearer token does not match node.data_token");
        }
    }

    // Nothing the refused writes sent was stored.
    let reply = node.authed(Method::POST, "/v1/batch/get", Some(&good), batch_get.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let limits = shardgate_api::Limits::default();
    let entries = batch::decode_get_response(reply.body, &limits).unwrap();
    assert!(entries.iter().all(|e| matches!(e, batch::GetResult::Miss)), "{entries:?}");

    // The right token is served (scheme name case-insensitive).
    let reply = node.authed(Method::PUT, "/v1/keys/k", Some(&good), "v").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = node.authed(Method::GET, "/v1/keys/k", Some(&format!("bearer {TOKEN}")), Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"v");
    // A refused delete leaves the key in place.
    let reply = node.authed(Method::DELETE, "/v1/keys/k", None, Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = node.authed(Method::GET, "/v1/keys/k", Some(&good), Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Refusals are counted: 6 routes x 3 missing + 1 refused delete, 6 x 3 wrong.
    let metrics = node.authed(Method::GET, "/metrics", None, Bytes::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("shardgate_node_unauthorized_total 19"), "{text}");
    assert!(text.contains("shardgate_node_forbidden_total 18"), "{text}");

    // Operational endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = node.authed(Method::GET, path, None, Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    node.stop().await;
}

#[tokio::test]
async fn without_a_token_the_data_api_is_open() {
    let node = TestNode::start(NodeConfig::default()).await;
    let reply = node.authed(Method::PUT, "/v1/keys/k", None, "v").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = node.authed(Method::GET, "/v1/keys/k", Some("Bearer anything"), Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn token_file_is_used_and_a_missing_one_stops_the_start() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("node-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let node = TestNode::start(NodeConfig { data_token_file: Some(path.clone()), ..NodeConfig::default() }).await;
    let reply = node.authed(Method::PUT, "/v1/keys/k", None, "v").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = node.authed(Method::PUT, "/v1/keys/k", Some(&format!("Bearer {TOKEN}")), "v").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    node.stop().await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig { data_token_file: Some(dir.join("absent")), ..NodeConfig::default() };
    let err = tokio::time::timeout(DEADLINE, shardgate_node::run(listener, config, std::future::pending()))
        .await
        .expect("run returns at once")
        .unwrap_err();
    assert!(matches!(err, NodeError::TokenFile { .. }), "{err}");
    assert!(err.to_string().contains("node.data_token_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
