//! The key-API suite's checks can fail: run against servers that are wrong
//! in one way each, the checks about that way fail (and a check about
//! something else still passes, so the failure is the one meant).
//!
//! - A node described with another role's limits: every check that reads
//!   `<role>.max_*` out of an error fails.
//! - A node described with a smaller `max_key_size` than it enforces: the
//!   limit checks fail (a key past the described limit is accepted).
//! - A target whose own after-case check fails: the property checks fail.
//! - A front that forwards to a real node but drops `If-Match` and
//!   `If-None-Match`: the condition checks and the CAS race fail.

use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use bytesize::ByteSize;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use shardgate_api::Limits;
use shardgate_node::NodeConfig;
use shardgate_testkit::key_api::{self, Suite, Target};
use shardgate_testkit::{Http, TestNode};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

fn config() -> NodeConfig {
    NodeConfig {
        memory_limit: ByteSize::mib(32),
        max_key_size: ByteSize::b(256),
        max_value_size: ByteSize::kib(16),
        max_batch_keys: 16,
        max_batch_size: ByteSize::kib(64),
        ..NodeConfig::default()
    }
}

/// The panic message of `check`; fails the test if the check passed.
fn failure(suite: &Suite, name: &str, check: fn(&Suite)) -> String {
    let panic =
        catch_unwind(AssertUnwindSafe(|| check(suite))).err().unwrap_or_else(|| panic!("check {name} passed against a wrong server"));
    panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn node_suite(runtime: &Runtime, limits: impl FnOnce(Limits) -> Limits) -> (TestNode, Suite) {
    let node = runtime.block_on(TestNode::start(config()));
    let target = Target::new(node.url.clone(), limits(config().limits()));
    let suite = Suite::new(runtime.handle().clone(), target);
    (node, suite)
}

#[test]
fn limits_named_for_another_role_fail_the_limit_checks() {
    let runtime = key_api::runtime();
    let (node, suite) = node_suite(&runtime, |l| Limits { role: "proxy", ..l });
    suite.crud();
    for (name, check) in [
        ("ttl_query", Suite::ttl_query as fn(&Suite)),
        ("key_and_value_limits", Suite::key_and_value_limits),
        ("batch_limits", Suite::batch_limits),
    ] {
        let message = failure(&suite, name, check);
        assert!(message.contains("does not name proxy.max_"), "{name}: {message}");
    }
    runtime.block_on(node.stop());
}

#[test]
fn a_smaller_limit_than_the_enforced_one_fails_the_limit_checks() {
    let runtime = key_api::runtime();
    let (node, suite) = node_suite(&runtime, |l| Limits { max_key_size: l.max_key_size - 1, ..l });
    let message = failure(&suite, "key_and_value_limits", Suite::key_and_value_limits);
    assert!(message.contains("414"), "{message}");
    runtime.block_on(node.stop());
}

/// Serves on 127.0.0.1:0 by forwarding every request to `upstream`
/// without its `If-Match` and `If-None-Match` headers.
async fn condition_dropping_front(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http = Http::new();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (http, upstream) = (http.clone(), upstream.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (http, upstream) = (http.clone(), upstream.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let dropped =
                        [header::IF_MATCH, header::IF_NONE_MATCH, header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING];
                    let headers: Vec<(String, String)> = parts
                        .headers
                        .iter()
                        .filter(|(n, _)| !dropped.contains(n))
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let answer = http.send(parts.method.clone(), &format!("{upstream}{path}"), &headers, body).await.unwrap();
                    let mut response = Response::builder().status(answer.status);
                    for (name, value) in &answer.headers {
                        let head = parts.method == http::Method::HEAD;
                        if (head || name != header::CONTENT_LENGTH) && name != header::TRANSFER_ENCODING {
                            response = response.header(name, value);
                        }
                    }
                    Ok::<_, Infallible>(response.body(Full::new(Bytes::from(answer.body.to_vec()))).unwrap())
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    url
}

#[test]
fn a_front_that_drops_conditions_fails_the_condition_checks() {
    let runtime = key_api::runtime();
    let node = runtime.block_on(TestNode::start(config()));
    let front = runtime.block_on(condition_dropping_front(node.url.clone()));
    let suite = Suite::new(runtime.handle().clone(), Target::new(front, config().limits()));
    // Unconditional requests pass through it.
    suite.crud();
    let message = failure(&suite, "conditions", Suite::conditions);
    assert!(message.contains("412"), "{message}");
    let message = failure(&suite, "cas_race", Suite::cas_race);
    assert!(message.contains("round 0"), "{message}");
    runtime.block_on(node.stop());
}

#[test]
fn a_failing_after_case_check_fails_the_property_checks() {
    let runtime = key_api::runtime();
    let node = runtime.block_on(TestNode::start(config()));
    let target = Target::new(node.url.clone(), config().limits()).with_after_case(|canary| async move {
        panic!("after-case check saw the canary {:?}", String::from_utf8_lossy(canary.key));
    });
    let suite = Suite::new(runtime.handle().clone(), target);
    let message = failure(&suite, "random_bytes_are_refused", Suite::random_bytes_are_refused);
    assert!(message.contains("after-case check saw the canary"), "{message}");
    runtime.block_on(node.stop());
}
