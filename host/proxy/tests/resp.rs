//! The Redis protocol front (`proxy.resp_listen`) against a real cluster
//! (one meta member, three nodes, rendezvous with two replicas, from
//! `shardgate_testkit::cluster`), with real clients: the `redis` crate,
//! `redis-cli` (Debian `redis-tools`), and raw sockets for RESP3 and for
//! bad input.
//!
//! - `redis_crate_sees_every_command_and_reply_shape`: every command, its
//!   reply shape and Redis's error wording; pipelined replies in order (a
//!   write then a read of the same key in one pipeline); keys written over
//!   RESP live on their two owner nodes and read back over HTTP.
//! - `resp3_after_hello_3`: nulls and maps in RESP3.
//! - `redis_cli_round_trip`: `redis-cli` against the proxy. Without
//!   `redis-cli` on PATH it writes `SKIPPED: ...` and passes, unless
//!   `SHARDGATE_REQUIRE_REDIS_CLI=1` (set by `.ci/test`; `.ci/run`
//!   installs `redis-tools`).
//! - `auth_limits_and_bad_frames`: `AUTH` with `proxy.data_token`; keys
//!   over `max_key_size` (an error, the connection stays); bulks over
//!   `max_value_size`, too many arguments, an inline line over 64 KiB and
//!   malformed frames (an error, then the close, nothing stored);
//!   `proxy.max_connections` shared with HTTP; `proxy.rate_limit`.
//! - `a_half_sent_command_and_an_idle_connection_are_closed`: raw sockets
//!   against `proxy.resp_frame_timeout` and `proxy.resp_idle_timeout`.
//! - `random_and_mangled_resp_never_breaks_the_proxy`: a property test; every
//!   case either gets answers or a close, and the proxy keeps serving.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use shardgate_proxy::{ProxyConfig, RateLimit};
use shardgate_testkit::{ClusterSpec, Http, LocalCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A cluster with one RESP proxy (`config`), ready to route.
async fn cluster(dir: &std::path::Path, config: ProxyConfig) -> (LocalCluster, SocketAddr) {
    let spec = ClusterSpec::new(1, 3, 0, dir);
    let mut cluster = LocalCluster::start(spec).await.expect("cluster starts");
    let (_, resp) = cluster.start_proxy_with_resp(ProxyConfig { shutdown_timeout: Duration::from_secs(2), ..config }).await.unwrap();
    cluster.register_nodes().await.expect("nodes registered");
    let receipt = cluster.activate_builtin("rendezvous", "", 2).await.expect("rendezvous active");
    cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.expect("the proxy routes");
    (cluster, resp)
}

/// Runs `f` with a `redis` crate connection to `addr` on a blocking thread.
async fn with_redis<T: Send + 'static>(addr: SocketAddr, f: impl FnOnce(&mut redis::Connection) -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        f(&mut con)
    })
    .await
    .unwrap()
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The error text of a command that must fail (code and message).
fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<redis::Value>(con) {
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or("")).trim().to_string(),
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
    }
}

/// Writes `bytes` and reads until the proxy closes or `wait` passes
/// without more bytes: (what came back, closed by the proxy).
async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_sees_every_command_and_reply_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, addr) = cluster(dir.path(), ProxyConfig::default()).await;
    with_redis(addr, |c| {
        // Connection commands.
        assert_eq!(q::<String>(c, &["PING"]), "PONG");
        assert_eq!(q::<String>(c, &["PING", "hi"]), "hi");
        assert_eq!(q::<String>(c, &["ECHO", "x y"]), "x y");
        assert_eq!(q::<String>(c, &["SELECT", "0"]), "OK");
        assert_eq!(err(c, &["SELECT", "1"]), "ERR DB index is out of range");
        assert_eq!(q::<Option<String>>(c, &["CLIENT", "GETNAME"]), None);
        assert_eq!(q::<String>(c, &["CLIENT", "SETNAME", "tester"]), "OK");
        assert_eq!(q::<String>(c, &["CLIENT", "GETNAME"]), "tester");
        assert!(q::<i64>(c, &["CLIENT", "ID"]) > 0);
        assert!(q::<String>(c, &["CLIENT", "INFO"]).contains("name=tester"));
        assert_eq!(q::<i64>(c, &["COMMAND", "COUNT"]), 32);
        let info: Vec<redis::Value> = q(c, &["COMMAND", "INFO", "get"]);
        assert_eq!(info.len(), 1);
        assert_eq!(err(c, &["NOSUCH", "a"]), "ERR unknown command 'NOSUCH', with args beginning with: 'a'");
        assert_eq!(err(c, &["GET"]), "ERR wrong number of arguments for 'get' command");
        assert_eq!(
            err(c, &["AUTH", "x"]).split('.').next().unwrap(),
            "ERR AUTH <password> called without any password configured for the default user"
        );

        // Strings.
        assert_eq!(q::<Option<String>>(c, &["GET", "s"]), None);
        assert_eq!(q::<String>(c, &["SET", "s", "v1"]), "OK");
        assert_eq!(q::<String>(c, &["GET", "s"]), "v1");
        assert_eq!(q::<Option<String>>(c, &["SET", "s", "v2", "NX"]), None);
        assert_eq!(q::<String>(c, &["SET", "s", "v2", "XX", "GET"]), "v1");
        assert_eq!(q::<Option<String>>(c, &["SET", "fresh", "v", "XX"]), None);
        assert_eq!(q::<Option<String>>(c, &["SET", "fresh", "v", "GET"]), None);
        assert_eq!(q::<String>(c, &["SET", "fresh", "w", "NX", "GET"]), "v");
        assert_eq!(q::<String>(c, &["SET", "s", "v3", "EX", "100"]), "OK");
        let ttl: i64 = q(c, &["TTL", "s"]);
        assert!((99..=100).contains(&ttl), "{ttl}");
        assert_eq!(q::<String>(c, &["SET", "s", "v4", "KEEPTTL"]), "OK");
        assert!(q::<i64>(c, &["PTTL", "s"]) <= 100_000);
        assert_eq!(q::<String>(c, &["SET", "s", "v5", "PX", "50000"]), "OK");
        assert!(q::<i64>(c, &["PTTL", "s"]) <= 50_000);
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1000;
        assert_eq!(q::<String>(c, &["SET", "s", "v6", "EXAT", &at.to_string()]), "OK");
        assert!((998..=1000).contains(&q::<i64>(c, &["TTL", "s"])));
        assert_eq!(q::<String>(c, &["SET", "s", "v7", "PXAT", &((at + 1000) * 1000).to_string()]), "OK");
        assert_eq!(err(c, &["SET", "s", "v", "EX", "0"]), "ERR invalid expire time in 'set' command");
        assert_eq!(err(c, &["SET", "s", "v", "EX", "x"]), "ERR value is not an integer or out of range");
        assert_eq!(err(c, &["SET", "s", "v", "NX", "XX"]), "ERR syntax error");
        assert_eq!(err(c, &["SET", "s", "v", "EX", "1", "KEEPTTL"]), "ERR syntax error");
        assert!(err(c, &["SET", "s", "v", "EX", "999999999"]).contains("proxy.max_ttl"));
        assert_eq!(q::<String>(c, &["SETEX", "e", "30", "v"]), "OK");
        assert!((29..=30).contains(&q::<i64>(c, &["TTL", "e"])));
        assert_eq!(q::<String>(c, &["PSETEX", "e", "20000", "w"]), "OK");
        assert_eq!(q::<String>(c, &["GET", "e"]), "w");
        assert_eq!(err(c, &["SETEX", "e", "-1", "v"]), "ERR invalid expire time in 'setex' command");
        assert_eq!(q::<i64>(c, &["SETNX", "n", "1"]), 1);
        assert_eq!(q::<i64>(c, &["SETNX", "n", "2"]), 0);
        assert_eq!(q::<String>(c, &["GETDEL", "n"]), "1");
        assert_eq!(q::<Option<String>>(c, &["GETDEL", "n"]), None);
        assert_eq!(q::<Option<String>>(c, &["GET", "n"]), None);
        assert_eq!(q::<String>(c, &["GETEX", "e"]), "w");
        assert_eq!(q::<String>(c, &["GETEX", "e", "EX", "500"]), "w");
        assert!((499..=500).contains(&q::<i64>(c, &["TTL", "e"])));
        assert_eq!(q::<String>(c, &["GETEX", "e", "PERSIST"]), "w");
        assert!(q::<i64>(c, &["TTL", "e"]) > 1_000_000);
        assert_eq!(q::<Option<String>>(c, &["GETEX", "missing", "EX", "5"]), None);
        assert_eq!(err(c, &["GETEX", "e", "EX"]), "ERR syntax error");

        // Counters.
        assert_eq!(q::<i64>(c, &["INCR", "ctr"]), 1);
        assert_eq!(q::<i64>(c, &["INCRBY", "ctr", "41"]), 42);
        assert_eq!(q::<i64>(c, &["DECR", "ctr"]), 41);
        assert_eq!(q::<i64>(c, &["DECRBY", "ctr", "50"]), -9);
        assert_eq!(q::<String>(c, &["GET", "ctr"]), "-9");
        assert_eq!(err(c, &["INCR", "s"]), "ERR value is not an integer or out of range");
        assert_eq!(err(c, &["INCRBY", "ctr", "1.5"]), "ERR value is not an integer or out of range");
        assert_eq!(q::<String>(c, &["SET", "big", &i64::MAX.to_string()]), "OK");
        assert_eq!(err(c, &["INCR", "big"]), "ERR increment or decrement would overflow");
        assert_eq!(err(c, &["DECRBY", "ctr", &i64::MIN.to_string()]), "ERR decrement would overflow");

        // Keyspace.
        assert_eq!(q::<i64>(c, &["EXISTS", "ctr", "ctr", "nope"]), 2);
        assert_eq!(q::<i64>(c, &["EXPIRE", "ctr", "100"]), 1);
        assert!((99..=100).contains(&q::<i64>(c, &["TTL", "ctr"])));
        assert_eq!(q::<i64>(c, &["PEXPIRE", "ctr", "90000"]), 1);
        assert!(q::<i64>(c, &["PTTL", "ctr"]) <= 90_000);
        assert_eq!(q::<i64>(c, &["EXPIRE", "nope", "100"]), 0);
        assert_eq!(q::<i64>(c, &["PERSIST", "ctr"]), 1);
        assert_eq!(q::<i64>(c, &["PERSIST", "nope"]), 0);
        assert_eq!(q::<i64>(c, &["TTL", "nope"]), -2);
        assert_eq!(q::<i64>(c, &["PTTL", "nope"]), -2);
        assert_eq!(q::<i64>(c, &["EXPIRE", "ctr", "0"]), 1);
        assert_eq!(q::<i64>(c, &["EXISTS", "ctr"]), 0);
        assert!(err(c, &["EXPIRE", "s", "10", "NX"]).contains("not supported"));
        assert_eq!(q::<String>(c, &["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
        assert_eq!(
            q::<Vec<Option<String>>>(c, &["MGET", "a", "nope", "c", "b"]),
            vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
        );
        assert_eq!(q::<i64>(c, &["DEL", "a", "b", "nope"]), 2);
        assert_eq!(q::<i64>(c, &["UNLINK", "c"]), 1);
        assert_eq!(q::<i64>(c, &["MSETNX", "m1", "1", "m2", "2"]), 1);
        assert_eq!(q::<i64>(c, &["MSETNX", "m2", "x", "m3", "3"]), 0);
        assert_eq!(q::<Vec<Option<String>>>(c, &["MGET", "m1", "m2", "m3"]), vec![Some("1".into()), Some("2".into()), None]);
        assert_eq!(err(c, &["MSET", "a", "1", "b"]), "ERR wrong number of arguments for 'mset' command");
        assert!(q::<i64>(c, &["DBSIZE"]) >= 5);
        let info: String = q(c, &["INFO"]);
        for section in ["# Server", "# Clients", "# Stats", "# Keyspace", "db0:keys="] {
            assert!(info.contains(section), "{info}");
        }
        assert!(!q::<String>(c, &["INFO", "keyspace"]).contains("# Server"));

        // Pipelined: replies in order, a write then a read of one key sees it.
        let mut p = redis::pipe();
        for i in 0..100 {
            p.cmd("SET").arg(format!("p{}", i % 7)).arg(i).cmd("GET").arg(format!("p{}", i % 7));
        }
        let replies: Vec<redis::Value> = p.query(c).unwrap();
        for (i, pair) in replies.chunks(2).enumerate() {
            assert_eq!(pair[0], redis::Value::Okay, "{i}");
            assert_eq!(pair[1], redis::Value::BulkString(i.to_string().into_bytes()), "{i}");
        }
    })
    .await;

    // Same routing as the HTTP front: both owners hold a RESP write, and
    // the HTTP API reads it.
    with_redis(addr, |c| assert_eq!(q::<String>(c, &["SET", "shared-key", "from resp"]), "OK")).await;
    let http = Http::fresh();
    let proxy = &cluster.proxies[0].addr;
    assert_eq!(&http.get(proxy, b"shared-key").await.unwrap().body[..], b"from resp");
    let mut held = 0;
    for n in &cluster.nodes {
        if http.get(&n.addr, b"shared-key").await.unwrap().status == http::StatusCode::OK {
            held += 1;
        }
    }
    assert_eq!(held, 2, "a RESP write is on both owners");
    let metrics = http.metrics(proxy).await.unwrap();
    assert!(metrics.contains("shardgate_proxy_resp_commands_total{command=\"set\"}"), "{metrics}");
    assert!(metrics.contains("shardgate_proxy_resp_errors_total{command=\"incr\"}"), "{metrics}");
    assert!(metrics.contains("shardgate_proxy_resp_command_seconds_bucket{"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_command_and_an_idle_connection_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        resp_frame_timeout: Duration::from_millis(300),
        resp_idle_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let (cluster, addr) = cluster(dir.path(), config).await;
    // Half a command, then nothing: closed without a reply (as Redis
    // closes a timed-out client). `exchange` waits 20 s for more bytes.
    let (out, closed) = exchange(addr, b"*2\r\n$3\r\nGET\r\n$1\r\n", Duration::from_secs(20)).await;
    assert!(closed && out.is_empty(), "closed: {closed}, got {}", out.escape_ascii());
    // A complete command, then idle: answered, then closed.
    let (out, closed) = exchange(addr, b"PING\r\n", Duration::from_secs(20)).await;
    assert!(closed && out == b"+PONG\r\n", "closed: {closed}, got {}", out.escape_ascii());
    // The proxy keeps serving.
    let (out, _) = exchange(addr, b"*2\r\n$4\r\nECHO\r\n$2\r\nok\r\n", Duration::from_millis(200)).await;
    assert_eq!(out, b"$2\r\nok\r\n");
    let metrics = Http::fresh().metrics(&cluster.proxies[0].addr).await.unwrap();
    assert!(metrics.contains("shardgate_proxy_resp_errors_total{command=\"timeout\"} 2"), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_after_hello_3() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, addr) = cluster(dir.path(), ProxyConfig::default()).await;
    let (out, closed) =
        exchange(addr, b"GET nope\r\nHELLO 3\r\nGET nope\r\nHELLO 2\r\nGET nope\r\nHELLO 4\r\n", Duration::from_millis(1500)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(!closed, "{text}");
    assert!(text.starts_with("$-1\r\n%7\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.contains("\r\n_\r\n*14\r\n"), "RESP3 null, then HELLO 2 as a flat array: {text}");
    assert!(text.ends_with("$-1\r\n-NOPROTO unsupported protocol version\r\n"), "{text}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_round_trip() {
    let test = "redis_cli_round_trip";
    if std::process::Command::new("redis-cli").arg("--version").output().is_err() {
        if std::env::var("SHARDGATE_REQUIRE_REDIS_CLI").as_deref() == Ok("1") {
            panic!("{test}: redis-cli not on PATH; SHARDGATE_REQUIRE_REDIS_CLI=1 requires it (apt-get install redis-tools)");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: redis-cli not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cluster, addr) = cluster(dir.path(), ProxyConfig::default()).await;
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    let run = move || {
        assert_eq!(cli(&["PING"]), "PONG");
        assert_eq!(cli(&["SET", "cli", "hello world"]), "OK");
        assert_eq!(cli(&["GET", "cli"]), "hello world");
        assert_eq!(cli(&["INCRBY", "cli-n", "5"]), "5");
        assert_eq!(cli(&["MGET", "cli", "nope"]), "hello world");
        assert_eq!(cli(&["--no-raw", "MGET", "cli", "nope"]), "1) \"hello world\"\n2) (nil)");
        assert_eq!(cli(&["--no-raw", "NOSUCH"]), "(error) ERR unknown command 'NOSUCH', with args beginning with:");
        assert_eq!(cli(&["-3", "--no-raw", "GET", "nope"]), "(nil)");
        // Interactive-style input on stdin, several commands.
        let mut child = std::process::Command::new("redis-cli")
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"SET piped 1\nINCR piped\nGET piped\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n2\n2\n");
    };
    tokio::task::spawn_blocking(run).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_limits_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        data_token: Some("s3cret-token-for-tests".into()),
        max_key_size: bytesize::ByteSize::b(16),
        max_value_size: bytesize::ByteSize::b(64),
        max_batch_keys: 4,
        max_batch_size: bytesize::ByteSize::kib(1),
        max_connections: 4,
        ..ProxyConfig::default()
    };
    let (mut cluster, addr) = cluster(dir.path(), config).await;
    let wait = Duration::from_millis(800);
    // AUTH.
    let (out, _) = exchange(addr, b"GET a\r\nAUTH wrong\r\nAUTH bob s3cret-token-for-tests\r\nPING\r\n", wait).await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n"
    );
    let auth = "AUTH s3cret-token-for-tests\r\n";
    let (out, closed) = exchange(addr, format!("{auth}SET k v\r\nGET k\r\nAUTH default s3cret-token-for-tests\r\n").as_bytes(), wait).await;
    assert_eq!((String::from_utf8_lossy(&out).as_ref(), closed), ("+OK\r\n+OK\r\n$1\r\nv\r\n+OK\r\n", false));
    // A key over max_key_size: an error, and the connection goes on.
    let (out, closed) = exchange(addr, format!("{auth}SET {} v\r\nPING\r\n", "k".repeat(17)).as_bytes(), wait).await;
    assert_eq!(
        (String::from_utf8_lossy(&out).as_ref(), closed),
        ("+OK\r\n-ERR key is 17 bytes; the limit proxy.max_key_size is 16 bytes\r\n+PONG\r\n", false)
    );
    // Too many keys for one multi-key command.
    let (out, _) = exchange(addr, format!("{auth}MGET a b c d e\r\n").as_bytes(), wait).await;
    assert!(String::from_utf8_lossy(&out).contains("-ERR 5 keys in one command; the limit proxy.max_batch_keys is 4"));
    // Frames the stream cannot be resynchronised after: error, close, nothing stored.
    let big = "v".repeat(65);
    for (input, want) in [
        (format!("*3\r\n$3\r\nSET\r\n$4\r\nbulk\r\n$65\r\n{big}\r\n"), "bulk of 65 bytes; the limit proxy.max_value_size is 64 bytes"),
        ("*10\r\n$3\r\nSET\r\n".to_string(), "10 arguments; the limit is 9 (2 x proxy.max_batch_keys + 1)"),
        (format!("SET bulk {}\r\n", "x".repeat(70_000)), "too big inline request (the limit is 65536 bytes)"),
        ("*3\r\n$3\r\nSET\r\n$4\r\nbulk\r\n:5\r\n".to_string(), "expected '$', got ':'"),
        ("*1\r\n$x\r\n".to_string(), "invalid bulk length"),
        ("SET bulk \"unbalanced\r\n".to_string(), "unbalanced quotes in request"),
    ] {
        let (out, closed) = exchange(addr, format!("{auth}{input}").as_bytes(), Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text, format!("+OK\r\n-ERR Protocol error: {want}\r\n"), "{input:.60}");
        assert!(closed, "{input:.60}: the proxy closes after a protocol error");
    }
    let (out, _) = exchange(addr, format!("{auth}EXISTS bulk\r\n").as_bytes(), wait).await;
    assert_eq!(String::from_utf8_lossy(&out), "+OK\r\n:0\r\n", "nothing stored");

    // proxy.max_connections counts RESP and HTTP connections together.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PING\r\n").await.unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0);
        open.push(s);
    }
    let (out, closed) = exchange(addr, b"PING\r\n", Duration::from_secs(5)).await;
    assert_eq!(String::from_utf8_lossy(&out), "-ERR max number of clients reached (the limit proxy.max_connections is 4)\r\n");
    assert!(closed);
    let r = Http::fresh().send(http::Method::GET, &format!("{}/healthz", cluster.proxies[0].addr), &[], bytes::Bytes::new()).await;
    assert!(r.is_err() || r.unwrap().status == http::StatusCode::SERVICE_UNAVAILABLE, "HTTP shares the cap");
    drop(open);

    // proxy.rate_limit, per command.
    let limited = ProxyConfig { rate_limit: Some(RateLimit { requests_per_second: 1, burst: 3 }), ..ProxyConfig::default() };
    let (_, raddr) = cluster.start_proxy_with_resp(limited).await.unwrap();
    let epoch = cluster.proxy_status(0).await.unwrap().epoch;
    cluster.wait_for_epoch(epoch, Duration::from_secs(30)).await.unwrap();
    let (out, _) = exchange(raddr, b"PING\r\nPING\r\nPING\r\nPING\r\n", wait).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("+PONG\r\n+PONG\r\n+PONG\r\n-ERR too many requests from 127.0.0.1"), "{text}");
    assert!(text.contains("proxy.rate_limit"), "{text}");
    cluster.shutdown().await;
}

/// A few valid commands, to mangle.
fn commands() -> impl Strategy<Value = Vec<u8>> {
    let cmd = prop_oneof![
        Just(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()),
        Just(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nval\r\n".to_vec()),
        Just(b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n10\r\n".to_vec()),
        Just(b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec()),
        Just(b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n".to_vec()),
        Just(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n".to_vec()),
        Just(b"PING\r\n".to_vec()),
        Just(b"set a \"b\\x41\"\r\n".to_vec()),
        Just(b"*1\r\n$4\r\nQUIT\r\n".to_vec()),
    ];
    proptest::collection::vec(cmd, 1..6).prop_map(|v| v.concat())
}

/// Random bytes, or valid commands with bytes flipped, cut or inserted.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (commands(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6)).prop_map(
            |(mut bytes, edits)| {
                for (at, byte, kind) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = at.index(bytes.len());
                    match kind {
                        0 => bytes[i] = byte,
                        1 => bytes.truncate(i),
                        _ => bytes.insert(i, byte),
                    }
                }
                bytes
            }
        ),
        commands(),
    ]
}

#[test]
fn random_and_mangled_resp_never_breaks_the_proxy() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig { max_value_size: bytesize::ByteSize::kib(4), ..ProxyConfig::default() };
    let (cluster, addr) = runtime.block_on(cluster(dir.path(), config));
    runtime.block_on(async {
        let (out, _) = exchange(addr, b"SET canary precious\r\n", Duration::from_millis(500)).await;
        assert_eq!(out, b"+OK\r\n");
    });
    proptest!(shardgate_testkit::proptest_config::cases(64), |(input in hostile())| {
        runtime.block_on(async {
            // Answers, or a close (the exchange ends either way); then the
            // proxy still serves and nothing it held changed.
            let (out, _closed) = exchange(addr, &input, Duration::from_millis(300)).await;
            if let Some(&first) = out.first() {
                assert!(b"+-:$*%_".contains(&first), "not a RESP reply: {:?}", String::from_utf8_lossy(&out));
            }
            let (out, closed) = exchange(addr, b"GET canary\r\n", Duration::from_millis(2000)).await;
            assert_eq!((out.as_slice(), closed), (&b"$8\r\nprecious\r\n"[..], false), "the proxy still serves and the canary is intact");
        });
    });
    runtime.block_on(cluster.shutdown());
}
