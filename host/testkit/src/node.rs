//! A real cache node on `127.0.0.1:0` for a test: [`TestNode::start`]
//! (system clock) or [`TestNode::start_with_clock`] (a
//! [`ManualClock`](shardgate_node::store::ManualClock) for TTL tests that
//! must not sleep), requests that panic on transport failures, and a
//! graceful [`TestNode::stop`] that fails the test if the node ends with
//! an error.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Method;
use shardgate_api::key::key_path;
use shardgate_node::store::Clock;
use shardgate_node::{NodeConfig, NodeError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{Answer, DEADLINE, Http};

/// A node serving on its own listener until [`TestNode::stop`].
pub struct TestNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub url: String,
    /// A keep-alive client.
    pub http: Http,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

impl TestNode {
    /// Binds `127.0.0.1:0` and runs `shardgate_node::run` with `config`
    /// (its `listen` is ignored).
    pub async fn start(config: NodeConfig) -> TestNode {
        TestNode::start_with_clock(config, Clock::system()).await
    }

    /// As [`TestNode::start`], with TTLs following `clock`.
    pub async fn start_with_clock(config: NodeConfig, clock: Clock) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(shardgate_node::server::run_with_clock(listener, config, clock, async move {
            let _ = stopped.await;
        }));
        TestNode { addr, url: format!("http://{addr}"), http: Http::new(), stop: Some(stop), task: Some(task) }
    }

    /// `method` on `path` (which starts with `/`); panics when there is no
    /// answer within the deadline.
    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let url = format!("{}{path}", self.url);
        self.http.send(method, &url, headers, body).await.unwrap_or_else(|e| panic!("the node answers: {e}"))
    }

    /// `GET` of a key.
    pub async fn get(&self, key: &[u8]) -> Answer {
        self.request(Method::GET, &key_path(key), &[], Bytes::new()).await
    }

    /// `PUT` of a key.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Answer {
        self.request(Method::PUT, &key_path(key), &[], Bytes::copy_from_slice(value)).await
    }

    /// The value of an unlabelled metric; panics when it is not exported.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.request(Method::GET, "/metrics", &[], Bytes::new()).await.text();
        crate::http::metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Asks the node to stop without waiting: it closes its listener and
    /// finishes the requests in flight. [`TestNode::stop`] waits.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Asks the node to stop and waits until it has; panics if it does not
    /// stop within the deadline or stops with an error.
    pub async fn stop(mut self) {
        self.signal_stop();
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the node stops within the deadline")
            .expect("the node task did not panic")
            .expect("the node stopped cleanly");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // A test that panicked before `stop`: tell the node to go.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
