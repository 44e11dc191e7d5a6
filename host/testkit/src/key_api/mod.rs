//! The key-API conformance suite: every server of the key API (a cache
//! node, a proxy in front of nodes) must pass the same checks, in the
//! spirit of openraft's storage `Suite`. A test describes its server as a
//! [`Target`] (base URL, the [`Limits`] it enforces, whose `role` is the
//! config table its errors name, e.g. `proxy.max_key_size`) and calls
//! [`Suite::run_all`]:
//!
//! ```no_run
//! # use shardgate_testkit::key_api::{Suite, Target};
//! # fn limits() -> shardgate_api::Limits { unimplemented!() }
//! let runtime = shardgate_testkit::key_api::runtime();
//! let url = "http://127.0.0.1:8080".to_string();
//! Suite::new(runtime.handle().clone(), Target::new(url, limits())).run_all();
//! ```
//!
//! What is checked (each a method of [`Suite`], listed in [`CHECKS`]):
//!
//! - [`Suite::crud`]: PUT/GET/HEAD/DELETE of binary keys and values,
//!   content types, ETags, empty values.
//! - [`Suite::conditions`]: `If-None-Match: *`, `If-Match` (stale, current,
//!   `*` on an absent key, malformed), conditional GET (304) and DELETE.
//! - [`Suite::cas_race`]: 32 clients compare-and-set (and add) the same key
//!   at once: exactly one wins, and the stored value is the winner's.
//! - [`Suite::ttl_query`]: bad `?ttl=` queries are 400 and change nothing;
//!   one over the limit names `<role>.max_ttl`.
//! - [`Suite::ttl_expiry`]: only with [`Target::clock`] (a node on a
//!   [`ManualClock`]); see "What is not checked".
//! - [`Suite::key_and_value_limits`]: keys and values one past the limits
//!   (by length, by `Content-Length` without a body, chunked) are refused
//!   naming `<role>.max_key_size` / `<role>.max_value_size`; at the limits
//!   they are accepted.
//! - [`Suite::malformed_requests`]: empty keys, unescaped `/`, unknown
//!   paths and methods, stray queries, garbage on the wire.
//! - [`Suite::answers_before_closing`] and [`Suite::protocol_edge_cases`]
//!   (in [`wire`], raw sockets): every request carried out is answered
//!   before a close (`Connection: close` with requests pipelined behind it,
//!   a valid request followed by garbage), malformed heads 400, oversized
//!   ones 431; entity tags containing commas, invalid percent-encoding in
//!   keys (400), transfer codings other than `chunked` (501), methods a key
//!   path does not serve (405 with `Allow`).
//! - [`Suite::redis_style_operations`]: what the Redis protocol front
//!   needs, over HTTP: `shardgate-ttl-ms` on reads, `PUT ?ttl_ms=`,
//!   `?keep_ttl=true`, `?get=true`, `DELETE ?get=true`, `PATCH` with a new
//!   TTL (`ttl`, `ttl_ms`, `persist=true`, `get=true`) or `incr=N`
//!   (32 clients increment one key at once: none is lost), and the 400s
//!   and 409s of bad ones, which change nothing.
//! - [`Suite::batches`] and [`Suite::batch_limits`]: `/v1/batch/put` and
//!   `/v1/batch/get` round trips with conditions, and refusals naming
//!   `<role>.max_batch_keys`, `max_value_size`, `max_ttl`,
//!   `max_batch_size`, all or nothing.
//! - The property checks of [`hostile`]: random bytes, mangled requests,
//!   randomly percent-encoded keys and values with random TTL queries,
//!   random conditional headers, random and damaged batches. After every
//!   case a canary written at [`Suite::new`] must read back identical
//!   (value, content type, ETag), `/healthz` must answer 200, and the
//!   target's own [`Target::after_case`] check (the proxy checks the canary
//!   on its owner nodes) must pass.
//!
//! Case counts come from [`cases`](crate::proptest_config::cases): small by
//! default, `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further.
//!
//! What is not checked: expiry on a target without a manual clock. Seeing a
//! key expire through a proxy would mean waiting out a real TTL (at least a
//! second, and longer to be sure on a loaded machine) with the nodes on the
//! system clock; expiry belongs to the node, whose own tests (and this
//! suite, given the node's clock) move a [`ManualClock`] instead. Metrics
//! are role-specific and left to each role's tests.

pub mod hostile;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use http::{Method, StatusCode, header};
use shardgate_api::Limits;
use shardgate_api::batch::{self, GetResult, PutItem, PutResult};
use shardgate_api::etag::{WriteCondition, format_etag, parse_etag};
use shardgate_api::key::key_path;
use shardgate_node::NodeConfig;
use shardgate_node::store::ManualClock;
use tokio::runtime::{Handle, Runtime};

use crate::http::{Answer, Http, raw_text};

/// A check run after every property case, given the canary (e.g. "both
/// owner nodes still hold it").
pub type AfterCase = Arc<dyn Fn(Canary) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The server under test.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The socket behind `url`, for raw TCP.
    pub addr: SocketAddr,
    /// What it enforces; `limits.role` is the config table its errors name.
    pub limits: Limits,
    /// The clock the target's TTLs follow, when the test controls it.
    pub clock: Option<ManualClock>,
    /// Run after every property case.
    pub after_case: Option<AfterCase>,
}

impl Target {
    /// A target at `url` (`http://<ip>:<port>`) enforcing `limits`.
    pub fn new(url: impl Into<String>, limits: Limits) -> Target {
        let url = url.into();
        let addr = url.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{url} is not http://<ip>:<port>: {e}"));
        Target { url, addr, limits, clock: None, after_case: None }
    }

    /// TTLs follow `clock`: [`Suite::ttl_expiry`] runs.
    pub fn with_clock(self, clock: ManualClock) -> Target {
        Target { clock: Some(clock), ..self }
    }

    /// `check` runs after every property case.
    pub fn with_after_case<F, Fut>(self, check: F) -> Target
    where
        F: Fn(Canary) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Target { after_case: Some(Arc::new(move |c| Box::pin(check(c)))), ..self }
    }
}

/// A key written when the suite starts that must never change.
#[derive(Clone, Debug)]
pub struct Canary {
    pub key: &'static [u8],
    pub value: Vec<u8>,
    pub content_type: &'static str,
    pub etag: String,
}

/// The canary's key: binary, with a NUL.
pub const CANARY_KEY: &[u8] = b"\xffcanary\x00key";
/// The canary's content type.
pub const CANARY_TYPE: &str = "application/x-canary";

/// A runtime for a suite: two workers, IO and timers. Build the target on
/// it, then give [`Suite::new`] its handle; the suite blocks on it, so the
/// test itself must not be async.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A node config with small limits, so random input reaches them: 256-byte
/// keys, 64 KiB values, 64 keys and 256 KiB per batch, 64 MiB of memory,
/// 2 s header and body timeouts. The node's suite runs against it, and the
/// proxy's against nodes (and a proxy with the same limits) running it.
pub fn small_node_config() -> NodeConfig {
    NodeConfig {
        memory_limit: ByteSize::mib(64),
        max_key_size: ByteSize::b(256),
        max_value_size: ByteSize::kib(64),
        max_batch_keys: 64,
        max_batch_size: ByteSize::kib(256),
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

/// One check of the suite.
pub type Check = (&'static str, fn(&Suite));

/// Every check, in the order [`Suite::run_all`] runs them.
pub const CHECKS: &[Check] = &[
    ("crud", Suite::crud),
    ("conditions", Suite::conditions),
    ("cas_race", Suite::cas_race),
    ("ttl_query", Suite::ttl_query),
    ("ttl_expiry", Suite::ttl_expiry),
    ("key_and_value_limits", Suite::key_and_value_limits),
    ("malformed_requests", Suite::malformed_requests),
    ("answers_before_closing", Suite::answers_before_closing),
    ("protocol_edge_cases", Suite::protocol_edge_cases),
    ("redis_style_operations", Suite::redis_style_operations),
    ("batches", Suite::batches),
    ("batch_limits", Suite::batch_limits),
    ("random_bytes_are_refused", Suite::random_bytes_are_refused),
    ("mangled_requests_get_sane_answers", Suite::mangled_requests_get_sane_answers),
    ("percent_encoded_keys_and_values_round_trip_or_are_refused", Suite::percent_encoded_keys_and_values_round_trip_or_are_refused),
    ("random_conditional_headers_change_only_what_they_allow", Suite::random_conditional_headers_change_only_what_they_allow),
    ("random_put_batches_are_all_or_nothing", Suite::random_put_batches_are_all_or_nothing),
    ("random_get_batches_answer_what_the_codec_says", Suite::random_get_batches_answer_what_the_codec_says),
];

/// The suite, bound to one target.
pub struct Suite {
    target: Target,
    runtime: Handle,
    http: Http,
    canary: Canary,
    seq: AtomicU64,
}

impl Suite {
    /// Writes the canary (the target must be serving).
    pub fn new(runtime: Handle, target: Target) -> Suite {
        let http = Http::fresh();
        let value: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let url = format!("{}{}", target.url, key_path(CANARY_KEY));
        let r = runtime
            .block_on(http.send(Method::PUT, &url, &[("content-type", CANARY_TYPE)], value.clone()))
            .unwrap_or_else(|e| panic!("the {} is up: {e}", target.limits.role));
        assert_eq!(r.status, StatusCode::CREATED, "writing the canary: {}", r.text());
        let canary = Canary { key: CANARY_KEY, value, content_type: CANARY_TYPE, etag: r.etag() };
        Suite { target, runtime, http, canary, seq: AtomicU64::new(0) }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn canary(&self) -> &Canary {
        &self.canary
    }

    fn role(&self) -> &'static str {
        self.target.limits.role
    }

    /// Every check of [`CHECKS`], in order; the first failure panics naming
    /// the check, the role and the URL.
    pub fn run_all(&self) {
        for (name, check) in CHECKS {
            self.run(name, *check);
        }
    }

    /// One check, its failure named.
    pub fn run(&self, name: &str, check: fn(&Suite)) {
        eprintln!("key API check {name} against the {} at {}", self.role(), self.target.url);
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(self))) {
            let message =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            panic!("key API check `{name}` failed against the {} at {}: {message}", self.role(), self.target.url);
        }
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A unique prefix per call, so keys of different cases never collide.
    fn unique(&self) -> Vec<u8> {
        format!("c{}-", self.seq.fetch_add(1, Ordering::Relaxed)).into_bytes()
    }

    /// A fixed key of one check: `k-<check>-<name>`.
    fn key(check: &str, name: &[u8]) -> Vec<u8> {
        [format!("k-{check}-").as_bytes(), name].concat()
    }

    /// `method` on `path`; panics when the target does not answer in time.
    async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let url = format!("{}{path}", self.target.url);
        self.http.send(method, &url, headers, body).await.unwrap_or_else(|e| panic!("the {} answers: {e}", self.role()))
    }

    async fn get(&self, key: &[u8]) -> Answer {
        self.request(Method::GET, &key_path(key), &[], Bytes::new()).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Answer {
        self.request(Method::PUT, &key_path(key), &[], Bytes::copy_from_slice(value)).await
    }

    /// The target still serves, the canary is exactly what was written, and
    /// the target's own after-case check passes.
    async fn assert_canary_intact(&self) {
        let c = &self.canary;
        let r = self.get(c.key).await;
        assert_eq!(r.status, StatusCode::OK, "canary: {}", r.text());
        assert_eq!(&r.body[..], &c.value[..], "the canary's value changed");
        assert_eq!(r.content_type(), c.content_type, "the canary's content type changed");
        assert_eq!(r.header(header::ETAG), c.etag, "the canary's version changed");
        let r = self.request(Method::GET, "/healthz", &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK);
        if let Some(check) = &self.target.after_case {
            check(c.clone()).await;
        }
    }

    /// PUT/GET/HEAD/DELETE of a key of every byte value and a binary value.
    pub fn crud(&self) {
        self.block_on(async {
            let key: Vec<u8> = (0..=255u8).collect();
            assert!(key.len() <= self.target.limits.max_key_size, "crud needs {}.max_key_size >= 256", self.role());
            let value: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
            let path = key_path(&key);

            let created = self.request(Method::PUT, &path, &[("content-type", "image/x-test")], value.clone()).await;
            assert_eq!(created.status, StatusCode::CREATED);
            let etag1 = created.etag();

            let got = self.get(&key).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(&got.body[..], &value[..]);
            assert_eq!(got.headers[header::CONTENT_TYPE], "image/x-test");
            assert_eq!(got.etag(), etag1);

            let head = self.request(Method::HEAD, &path, &[], Bytes::new()).await;
            assert_eq!(head.status, StatusCode::OK);
            assert!(head.body.is_empty());
            assert_eq!(head.headers[header::CONTENT_LENGTH], "3000");
            assert_eq!(head.etag(), etag1);

            let replaced = self.put(&key, b"second").await;
            assert_eq!(replaced.status, StatusCode::NO_CONTENT);
            assert_ne!(replaced.etag(), etag1);
            let got = self.get(&key).await;
            assert_eq!(&got.body[..], b"second");
            assert_eq!(got.etag(), replaced.etag());
            assert_eq!(got.headers[header::CONTENT_TYPE], "application/octet-stream");

            let deleted = self.request(Method::DELETE, &path, &[], Bytes::new()).await;
            assert_eq!(deleted.status, StatusCode::NO_CONTENT);
            assert_eq!(self.get(&key).await.status, StatusCode::NOT_FOUND);
            let again = self.request(Method::DELETE, &path, &[], Bytes::new()).await;
            assert_eq!(again.status, StatusCode::NOT_FOUND);
            let head = self.request(Method::HEAD, &path, &[], Bytes::new()).await;
            assert_eq!(head.status, StatusCode::NOT_FOUND);

            // Empty values are values.
            let empty = Self::key("crud", b"empty");
            assert_eq!(self.put(&empty, b"").await.status, StatusCode::CREATED);
            let got = self.get(&empty).await;
            assert_eq!((got.status, got.body.len()), (StatusCode::OK, 0));
        })
    }

    /// Conditional writes, reads and deletes.
    pub fn conditions(&self) {
        self.block_on(async {
            let key = Self::key("conditions", b"cond");
            let path = key_path(&key);
            let add = |v: &'static str| self.request(Method::PUT, &path, &[("if-none-match", "*")], v);
            assert_eq!(add("one").await.status, StatusCode::CREATED);
            let second = add("two").await;
            assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
            assert!(second.text().contains("If-None-Match"), "{}", second.text());
            let current = self.get(&key).await;
            assert_eq!(&current.body[..], b"one");
            let etag = current.etag();

            let stale = "\"0000000000000001\"";
            let cas = self.request(Method::PUT, &path, &[("if-match", stale)], "x").await;
            assert_eq!(cas.status, StatusCode::PRECONDITION_FAILED);
            let cas = self.request(Method::PUT, &path, &[("if-match", &etag)], "three").await;
            assert_eq!(cas.status, StatusCode::NO_CONTENT);
            let new_etag = cas.etag();
            assert_eq!(&self.get(&key).await.body[..], b"three");

            let not_modified = self.request(Method::GET, &path, &[("if-none-match", &new_etag)], Bytes::new()).await;
            assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
            assert!(not_modified.body.is_empty());
            let modified = self.request(Method::GET, &path, &[("if-none-match", &etag)], Bytes::new()).await;
            assert_eq!(modified.status, StatusCode::OK);

            let absent = Self::key("conditions", b"absent");
            let replace = self.request(Method::PUT, &key_path(&absent), &[("if-match", "*")], "v").await;
            assert_eq!(replace.status, StatusCode::PRECONDITION_FAILED);
            assert_eq!(self.get(&absent).await.status, StatusCode::NOT_FOUND);

            let del = self.request(Method::DELETE, &path, &[("if-match", &etag)], Bytes::new()).await;
            assert_eq!(del.status, StatusCode::PRECONDITION_FAILED);
            assert_eq!(&self.get(&key).await.body[..], b"three", "a refused DELETE removed the key");
            let del = self.request(Method::DELETE, &path, &[("if-match", &new_etag)], Bytes::new()).await;
            assert_eq!(del.status, StatusCode::NO_CONTENT);
            assert_eq!(self.get(&key).await.status, StatusCode::NOT_FOUND);

            let bad = self.request(Method::PUT, &path, &[("if-match", "no-quotes")], "v").await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST);
            assert!(bad.text().contains("If-Match"));
            assert_eq!(self.get(&key).await.status, StatusCode::NOT_FOUND, "a malformed condition wrote");

            // If-Match and If-None-Match exclude each other on a write, even
            // when either alone would pass (the documents' rule; schemathesis
            // is kept from generating the pair by its hooks).
            for method in [Method::PUT, Method::DELETE] {
                let both = self.request(method.clone(), &path, &[("if-match", "*"), ("if-none-match", "*")], "v").await;
                assert_eq!(both.status, StatusCode::BAD_REQUEST, "{method} with If-Match and If-None-Match");
                assert!(both.text().contains("cannot be combined with If-None-Match"), "{}", both.text());
            }
            assert_eq!(self.get(&key).await.status, StatusCode::NOT_FOUND, "a refused condition pair wrote");
        })
    }

    /// Many clients compare-and-set from the same version at once: exactly
    /// one wins, and the stored value is the winner's; `If-None-Match: *`
    /// races the same way.
    pub fn cas_race(&self) {
        self.block_on(async {
            let key = Self::key("cas_race", b"contended");
            for round in 0..5 {
                let etag = self.put(&key, format!("base{round}").as_bytes()).await.etag();
                let mut tasks = Vec::new();
                for client in 0..32 {
                    let (http, url, etag) = (self.http.clone(), format!("{}{}", self.target.url, key_path(&key)), etag.clone());
                    tasks.push(tokio::spawn(async move {
                        let value = format!("client{client}");
                        let r = http.send(Method::PUT, &url, &[("if-match", &etag)], value.clone()).await.expect("an answer");
                        (r.status, value)
                    }));
                }
                let mut winners = Vec::new();
                for task in tasks {
                    let (status, value) = task.await.unwrap();
                    match status {
                        StatusCode::NO_CONTENT => winners.push(value),
                        StatusCode::PRECONDITION_FAILED => {}
                        other => panic!("unexpected {other}"),
                    }
                }
                assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
                assert_eq!(self.get(&key).await.body, winners[0].as_bytes());
            }
            let added = Self::key("cas_race", b"added");
            let mut tasks = Vec::new();
            for client in 0..32 {
                let (http, url) = (self.http.clone(), format!("{}{}", self.target.url, key_path(&added)));
                tasks.push(tokio::spawn(async move {
                    let r = http.send(Method::PUT, &url, &[("if-none-match", "*")], format!("{client}")).await.expect("an answer");
                    (r.status, client)
                }));
            }
            let mut created = Vec::new();
            for task in tasks {
                let (status, client) = task.await.unwrap();
                match status {
                    StatusCode::CREATED => created.push(client),
                    StatusCode::PRECONDITION_FAILED => {}
                    other => panic!("unexpected {other}"),
                }
            }
            assert_eq!(created.len(), 1, "{created:?}");
            assert_eq!(self.get(&added).await.text(), created[0].to_string());
        })
    }

    /// Bad `?ttl=` queries are 400 naming the query, and change nothing.
    pub fn ttl_query(&self) {
        self.block_on(async {
            let key = Self::key("ttl_query", b"k");
            let max = self.target.limits.max_ttl.as_secs();
            assert_eq!(self.put(&key, b"original").await.status, StatusCode::CREATED);
            let over = format!("ttl={}", max + 1);
            for query in ["ttl=0", &over, "ttl=abc", "ttl=-5", "ttl=", "ttl=1&ttl=2", "tll=5"] {
                let r = self.request(Method::PUT, &format!("{}?{query}", key_path(&key)), &[], "changed").await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
                assert!(r.text().contains("ttl") || r.text().contains("tll"), "{query}: {}", r.text());
            }
            let r = self.request(Method::PUT, &format!("{}?{over}", key_path(&key)), &[], "changed").await;
            let name = self.target.limits.name("max_ttl");
            assert!(r.text().contains(&name), "{over}: {} does not name {name}", r.text());
            assert_eq!(&self.get(&key).await.body[..], b"original");
            // At the limit it is accepted.
            let r = self.request(Method::PUT, &format!("{}?ttl={max}", key_path(&key)), &[], "at the limit").await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "ttl={max}: {}", r.text());
        })
    }

    /// With a manual clock: a key expires exactly at its TTL, an expired key
    /// is absent for conditional writes, and an overwrite resets the TTL.
    /// Without one, skipped (see the module docs).
    pub fn ttl_expiry(&self) {
        let Some(clock) = &self.target.clock else {
            eprintln!("key API check ttl_expiry skipped for the {}: no manual clock (see shardgate_testkit::key_api)", self.role());
            return;
        };
        self.block_on(async {
            let (short, long) = (Self::key("ttl_expiry", b"short"), Self::key("ttl_expiry", b"long"));
            let r = self.request(Method::PUT, &format!("{}?ttl=1", key_path(&short)), &[], "v").await;
            assert_eq!(r.status, StatusCode::CREATED);
            let r = self.request(Method::PUT, &format!("{}?ttl=3600", key_path(&long)), &[], "v").await;
            assert_eq!(r.status, StatusCode::CREATED);
            clock.advance(Duration::from_millis(999));
            assert_eq!(self.get(&short).await.status, StatusCode::OK);
            clock.advance(Duration::from_millis(1));
            assert_eq!(self.get(&short).await.status, StatusCode::NOT_FOUND, "short expired");
            assert_eq!(self.get(&long).await.status, StatusCode::OK);
            let add = self.request(Method::PUT, &key_path(&short), &[("if-none-match", "*")], "again").await;
            assert_eq!(add.status, StatusCode::CREATED, "an expired key is absent for conditional writes");
            self.request(Method::PUT, &format!("{}?ttl=1", key_path(&long)), &[], "v2").await;
            assert_eq!(self.get(&long).await.status, StatusCode::OK);
            clock.advance(Duration::from_secs(1));
            assert_eq!(self.get(&long).await.status, StatusCode::NOT_FOUND, "long expired after its rewrite");
        })
    }

    /// The Redis-style single-key operations over HTTP (see the module docs).
    pub fn redis_style_operations(&self) {
        self.block_on(async {
            let key = Self::key("redis", &self.unique());
            let path = key_path(&key);
            let ttl_ms = |r: &Answer| r.header("shardgate-ttl-ms").parse::<u64>().unwrap_or_else(|_| panic!("shardgate-ttl-ms in {r:?}"));
            // PUT ?ttl_ms, and the time left on reads.
            let r = self.request(Method::PUT, &format!("{path}?ttl_ms=5000"), &[], "v1").await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            let got = self.get(&key).await;
            assert!((1..=5000).contains(&ttl_ms(&got)), "{got:?}");
            let head = self.request(Method::HEAD, &path, &[], Bytes::new()).await;
            assert!(ttl_ms(&head) <= 5000);
            // keep_ttl keeps it; get=true answers the value replaced.
            let r = self.request(Method::PUT, &format!("{path}?keep_ttl=true&get=true"), &[("content-type", "text/x-old")], "v2").await;
            assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"v1"[..]), "{}", r.text());
            assert!(ttl_ms(&self.get(&key).await) <= 5000, "keep_ttl kept the TTL");
            let fresh = Self::key("redis", &self.unique());
            let r = self.request(Method::PUT, &format!("{}?get=true", key_path(&fresh)), &[], "new").await;
            assert_eq!(r.status, StatusCode::CREATED, "nothing replaced: 201 as usual");
            // PATCH: a new TTL, persist, get.
            let r = self.request(Method::PATCH, &format!("{path}?ttl=100"), &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
            assert!((99_000..=100_000).contains(&ttl_ms(&r)), "{r:?}");
            assert!(ttl_ms(&self.get(&key).await) > 5000, "the new TTL holds");
            let r = self.request(Method::PATCH, &format!("{path}?persist=true"), &[], Bytes::new()).await;
            assert!(ttl_ms(&r) > self.target.limits.max_ttl.as_millis() as u64 - 5000, "{r:?}");
            let r = self.request(Method::PATCH, &format!("{path}?ttl_ms=7000&get=true"), &[], Bytes::new()).await;
            assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"v2"[..]));
            assert!(ttl_ms(&r) <= 7000);
            let absent = key_path(&Self::key("redis", b"absent"));
            let r = self.request(Method::PATCH, &format!("{absent}?ttl=5"), &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            // DELETE ?get=true.
            let r = self.request(Method::DELETE, &format!("{path}?get=true"), &[], Bytes::new()).await;
            assert_eq!((r.status, &r.body[..], r.content_type().as_str()), (StatusCode::OK, &b"v2"[..], "text/x-old"));
            assert_eq!(self.request(Method::DELETE, &format!("{path}?get=true"), &[], Bytes::new()).await.status, StatusCode::NOT_FOUND);
            // PATCH ?incr: atomic, absent counts as 0, errors change nothing.
            let counter = key_path(&Self::key("redis", &self.unique()));
            let r = self.request(Method::PATCH, &format!("{counter}?incr=5"), &[], Bytes::new()).await;
            assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "5"));
            let r = self.request(Method::PATCH, &format!("{counter}?incr=-7"), &[], Bytes::new()).await;
            assert_eq!(r.text(), "-2");
            let incr = format!("{counter}?incr=1");
            let incrs = (0..32).map(|_| self.request(Method::PATCH, &incr, &[], Bytes::new()));
            for r in futures::future::join_all(incrs).await {
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            }
            assert_eq!(self.request(Method::GET, &counter, &[], Bytes::new()).await.text(), "30", "no increment lost");
            let text = key_path(&fresh);
            let r = self.request(Method::PATCH, &format!("{text}?incr=1"), &[], Bytes::new()).await;
            assert_eq!((r.status, r.json_error()), (StatusCode::CONFLICT, "value is not an integer or out of range".to_string()));
            let max = key_path(&Self::key("redis", &self.unique()));
            self.request(Method::PUT, &max, &[], i64::MAX.to_string()).await;
            let r = self.request(Method::PATCH, &format!("{max}?incr=1"), &[], Bytes::new()).await;
            assert_eq!((r.status, r.json_error()), (StatusCode::CONFLICT, "increment or decrement would overflow".to_string()));
            assert_eq!(self.request(Method::GET, &max, &[], Bytes::new()).await.text(), i64::MAX.to_string());
            // Bad queries: 400, nothing changed.
            for (method, query) in [
                (Method::PATCH, ""),
                (Method::PATCH, "?incr=x"),
                (Method::PATCH, "?incr=1&ttl=5"),
                (Method::PATCH, "?ttl=5&persist=true"),
                (Method::PATCH, "?get=true"),
                (Method::PATCH, "?ttl=0"),
                (Method::PATCH, "?nope=1"),
                (Method::PUT, "?keep_ttl=yes"),
                (Method::PUT, "?ttl=1&ttl_ms=1000"),
                (Method::PUT, "?ttl_ms=0"),
                (Method::PUT, "?ttl_ms=abc"),
                (Method::PUT, "?get=1"),
                (Method::DELETE, "?get=false"),
            ] {
                let r = self.request(method.clone(), &format!("{counter}{query}"), &[], "changed").await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {query}: {}", r.text());
            }
            let over = format!("?ttl_ms={}", self.target.limits.max_ttl.as_millis() + 1);
            let r = self.request(Method::PUT, &format!("{counter}{over}"), &[], "changed").await;
            assert!(r.text().contains(&self.target.limits.name("max_ttl")), "{}", r.text());
            assert_eq!(self.request(Method::GET, &counter, &[], Bytes::new()).await.text(), "30", "refusals changed nothing");
        })
    }

    /// Keys and values one past the limits are refused naming the limit,
    /// however the value arrives; at the limits they are accepted.
    pub fn key_and_value_limits(&self) {
        let l = self.target.limits.clone();
        let (key_name, value_name) = (l.name("max_key_size"), l.name("max_value_size"));
        self.block_on(async {
            let neighbour = Self::key("limits", b"neighbour");
            self.put(&neighbour, b"safe").await;

            let r = self.put(&vec![b'k'; l.max_key_size + 1], b"v").await;
            assert_eq!(r.status, StatusCode::URI_TOO_LONG);
            assert!(r.text().contains(&key_name), "{} does not name {}", r.text(), key_name);
            assert_eq!(self.get(&vec![b'k'; l.max_key_size]).await.status, StatusCode::NOT_FOUND);
            assert_eq!(self.get(&vec![b'k'; l.max_key_size + 1]).await.status, StatusCode::URI_TOO_LONG);
            let at_limit = [b"k-limits-".as_slice(), &vec![b'k'; l.max_key_size - 9]].concat();
            assert_eq!(self.put(&at_limit, b"v").await.status, StatusCode::CREATED, "a key at {key_name}");
            // A very long URL is refused the same way.
            let r = self.request(Method::GET, &format!("/v1/keys/{}", "x".repeat(60_000)), &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::URI_TOO_LONG);

            let big = Self::key("limits", b"big");
            let r = self.put(&big, &vec![0u8; l.max_value_size + 1]).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(r.text().contains(&value_name), "{} does not name {}", r.text(), value_name);
            assert_eq!(self.get(&big).await.status, StatusCode::NOT_FOUND);
            assert_eq!(self.put(&big, &vec![0u8; l.max_value_size]).await.status, StatusCode::CREATED);

            // Announced by Content-Length, body never sent: refused without reading it.
            let head = format!("PUT /v1/keys/k-limits-huge HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", l.max_value_size * 100);
            let reply = raw_text(self.target.addr, head.as_bytes()).await;
            assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
            assert!(reply.contains(&value_name), "{reply} does not name {value_name}");

            // Chunked, no length: cut off at the limit.
            let mut chunked = b"PUT /v1/keys/k-limits-chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..l.max_value_size / 0x400 + 1 {
                chunked.extend_from_slice(b"400\r\n");
                chunked.extend_from_slice(&[b'z'; 0x400]);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            let reply = raw_text(self.target.addr, &chunked).await;
            assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
            assert!(reply.contains(&value_name), "{reply} does not name {value_name}");
            assert_eq!(self.get(b"k-limits-chunked").await.status, StatusCode::NOT_FOUND);

            let long_ct = "a/".to_owned() + &"b".repeat(300);
            let ct_key = Self::key("limits", b"ct");
            let r = self.request(Method::PUT, &key_path(&ct_key), &[("content-type", &long_ct)], "v").await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.text().contains("Content-Type"));
            assert_eq!(self.get(&ct_key).await.status, StatusCode::NOT_FOUND);

            assert_eq!(&self.get(&neighbour).await.body[..], b"safe");
        })
    }

    /// Paths, methods and bytes no client should send.
    pub fn malformed_requests(&self) {
        self.block_on(async {
            let neighbour = Self::key("malformed", b"neighbour");
            self.put(&neighbour, b"safe").await;
            let r = self.request(Method::GET, "/v1/keys/", &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.text().contains("empty"), "{}", r.text());
            let r = self.request(Method::PUT, "/v1/keys/k-malformed-a/b", &[], "v").await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.text().contains("%2F"), "{}", r.text());
            assert_eq!(self.put(b"k-malformed-a/b", b"slash").await.status, StatusCode::CREATED);
            assert_eq!(&self.request(Method::GET, "/v1/keys/k-malformed-a%2Fb", &[], Bytes::new()).await.body[..], b"slash");
            let r = self.request(Method::GET, "/nope", &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            let r = self.request(Method::POST, &key_path(b"k-malformed-k"), &[], "v").await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
            let r = self.request(Method::DELETE, &format!("{}?x=1", key_path(&neighbour)), &[], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);

            for garbage in [
                &b"\x00\x01\x02 garbage\r\n\r\n"[..],
                b"GET /v1/keys/k-malformed-k HTTP/9.9\r\n\r\n",
                b"PUT /v1/keys/k-malformed-k HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
                b"PUT /v1/keys/k-malformed-k HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
                b"PUT /v1/keys/k-malformed-k HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            ] {
                // Answered, never closed silently (see `answers_before_closing`).
                let reply = raw_text(self.target.addr, garbage).await;
                assert!(
                    reply.starts_with("HTTP/1.1 4") || reply.starts_with("HTTP/1.1 505"),
                    "{:?}: {reply:?}",
                    String::from_utf8_lossy(garbage)
                );
            }
            assert_eq!(self.get(b"k-malformed-k").await.status, StatusCode::NOT_FOUND);
            assert_eq!(&self.get(&neighbour).await.body[..], b"safe");
        })
    }

    /// A put batch with plain, conditional (version, absent) and TTL'd
    /// entries, then a get batch of hits and a miss.
    pub fn batches(&self) {
        let l = self.target.limits.clone();
        self.block_on(async {
            let (b1, existing, bin, missing) = (
                Self::key("batches", b"b1"),
                Self::key("batches", b"existing"),
                Self::key("batches", b"\x00bin\xff"),
                Self::key("batches", b"missing"),
            );
            let etag = self.put(&existing, b"old").await.etag();
            let version = parse_etag(&etag).unwrap().unwrap();
            let item = |key: &[u8], condition, ttl_seconds, content_type: &'static [u8], value: Vec<u8>| PutItem {
                key: Bytes::copy_from_slice(key),
                condition,
                ttl_seconds,
                content_type: Bytes::from_static(content_type),
                value: Bytes::from(value),
            };
            let items = vec![
                item(&b1, WriteCondition::Always, None, b"text/plain", b"one".to_vec()),
                item(&existing, WriteCondition::IfVersionIn(vec![version]), Some(60), b"", b"new".to_vec()),
                item(&existing, WriteCondition::IfAbsent, None, b"", b"lost".to_vec()),
                item(&bin, WriteCondition::Always, Some(1), b"", vec![9u8; 5000]),
            ];
            let body = batch::encode_put_request(&items).unwrap();
            let r = self.request(Method::POST, "/v1/batch/put", &[("content-type", batch::CONTENT_TYPE)], body).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let results = batch::decode_put_response(r.body, &l).unwrap();
            assert!(matches!(results[0], PutResult::Created { .. }), "{results:?}");
            assert!(matches!(results[1], PutResult::Replaced { .. }), "{results:?}");
            assert_eq!(results[2], PutResult::ConditionFailed);
            assert!(matches!(results[3], PutResult::Created { .. }), "{results:?}");

            let single = self.get(&b1).await;
            assert_eq!(&single.body[..], b"one");
            assert_eq!(single.headers[header::CONTENT_TYPE], "text/plain");
            let PutResult::Created { version: b1_version } = results[0] else { unreachable!() };
            assert_eq!(single.etag(), format_etag(b1_version).to_str().unwrap());
            assert_eq!(&self.get(&existing).await.body[..], b"new", "the IfAbsent entry after it lost");

            let keys: Vec<&[u8]> = vec![&b1, &missing, &existing, &bin];
            let r = self.request(Method::POST, "/v1/batch/get", &[], batch::encode_get_request(&keys).unwrap()).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.headers[header::CONTENT_TYPE], batch::CONTENT_TYPE);
            let got = batch::decode_get_response(r.body, &l).unwrap();
            assert_eq!(
                got[0],
                GetResult::Hit { version: b1_version, content_type: Bytes::from_static(b"text/plain"), value: Bytes::from_static(b"one") }
            );
            assert_eq!(got[1], GetResult::Miss);
            assert!(matches!(&got[2], GetResult::Hit { value, .. } if &value[..] == b"new"), "{:?}", got[2]);
            assert!(matches!(&got[3], GetResult::Hit { value, .. } if value.len() == 5000), "{:?}", got[3]);
            if let Some(clock) = &self.target.clock {
                // Entry 3 had ttl 1s.
                clock.advance(Duration::from_secs(1));
                assert_eq!(self.get(&bin).await.status, StatusCode::NOT_FOUND, "batch ttl expired");
            }
        })
    }

    /// Batches past a limit are refused naming it, and store nothing.
    pub fn batch_limits(&self) {
        let l = self.target.limits.clone();
        self.block_on(async {
            let keys: Vec<String> = (0..=l.max_batch_keys).map(|i| format!("k-batch_limits-{i}")).collect();
            let r = self.request(Method::POST, "/v1/batch/get", &[], batch::encode_get_request(&keys).unwrap()).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(r.text().contains(&l.name("max_batch_keys")), "{} does not name {}", r.text(), l.name("max_batch_keys"));

            let (first, second) = (Self::key("batch_limits", b"first"), Self::key("batch_limits", b"second"));
            let item = |key: &[u8], size: usize| PutItem {
                key: Bytes::copy_from_slice(key),
                condition: WriteCondition::Always,
                ttl_seconds: None,
                content_type: Bytes::new(),
                value: Bytes::from(vec![1u8; size]),
            };
            let body = batch::encode_put_request(&[item(&first, 10), item(&second, l.max_value_size + 1)]).unwrap();
            assert!(body.len() <= l.max_batch_size, "batch_limits needs max_batch_size > max_value_size");
            let r = self.request(Method::POST, "/v1/batch/put", &[], body).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(r.text().contains(&l.name("max_value_size")), "{} does not name {}", r.text(), l.name("max_value_size"));
            assert_eq!(self.get(&first).await.status, StatusCode::NOT_FOUND);

            let body = batch::encode_put_request(&[item(&first, 10), PutItem { ttl_seconds: Some(u32::MAX), ..item(&second, 1) }]).unwrap();
            let r = self.request(Method::POST, "/v1/batch/put", &[], body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.text().contains(&l.name("max_ttl")), "{} does not name {}", r.text(), l.name("max_ttl"));
            let body = batch::encode_put_request(&[
                item(&first, 10),
                PutItem { content_type: Bytes::from_static(b"bad\nct"), ..item(&second, 1) },
            ])
            .unwrap();
            assert_eq!(self.request(Method::POST, "/v1/batch/put", &[], body).await.status, StatusCode::BAD_REQUEST);
            assert_eq!(self.get(&first).await.status, StatusCode::NOT_FOUND);
            assert_eq!(self.get(&second).await.status, StatusCode::NOT_FOUND);

            let r = self.request(Method::POST, "/v1/batch/put", &[], vec![0u8; l.max_batch_size + 1]).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(r.text().contains(&l.name("max_batch_size")), "{} does not name {}", r.text(), l.name("max_batch_size"));
            for garbage in
                [&b""[..], b"\x01", b"\x02\x01\x00\x00\x00\x00", b"\x01\x03\x00\x00\x00\x01", b"\x01\x01\x00\x00\x00\x01\x00\x05ab"]
            {
                let r = self.request(Method::POST, "/v1/batch/get", &[], Bytes::copy_from_slice(garbage)).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{garbage:?}: {}", r.text());
            }
        })
    }
}
