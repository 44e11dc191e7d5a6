//! Node benchmark, one run, one table (`cargo bench -p shardgate-node --bench node`).
//!
//! 1. Throughput and CPU per request, driven by `wrk -t2 -c64 -d10s` on
//!    loopback: a minimal hyper "hello" server (the reference) vs the node
//!    (GET of one hot key, GET and PUT over 100k keys). Both servers are
//!    this binary re-executed as a child process (2 tokio workers each), so
//!    their CPU is read from /proc/<pid>/stat; wrk's from our own cutime/cstime.
//! 2. Memory per item: 1M items of 100-byte values, RSS delta of the node
//!    (filled with batch puts) vs memcached (filled with its text protocol).
//!
//! Bars: node GET >= 0.8x hello throughput; node bytes/item <= 1.5x memcached.
//! Skips (exit 0) when wrk is not installed; the memcached row is skipped
//! when memcached is not. `host/node/benches/run.sh` installs both.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use shardgate_api::batch::{self, PutItem};
use shardgate_api::etag::WriteCondition;
use shardgate_node::NodeConfig;

const ROLE_ENV: &str = "SHARDGATE_NODE_BENCH_ROLE";
const WRK_ARGS: [&str; 3] = ["-t2", "-c64", "-d10s"];
const ITEMS: usize = 1_000_000;
const VALUE: usize = 100;

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("node") => return serve_child(true),
        Ok("hello") => return serve_child(false),
        _ => {}
    }
    if Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        println!("node bench skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let ticks = clock_ticks();
    println!("node bench: wrk {} on loopback, then {ITEMS} items x {VALUE} B\n", WRK_ARGS.join(" "));

    // --- throughput ---
    let mut rows = Vec::new();
    {
        let hello = ServerChild::spawn("hello");
        rows.push(("hyper hello (reference)", drive(&hello, "/", None, ticks)));
    }
    {
        let node = ServerChild::spawn("node");
        put_one(node.addr, b"hot", &[b'v'; VALUE]);
        prefill(node.addr, "k", 100_000);
        rows.push(("node GET, 1 hot key, 100 B", drive(&node, "/v1/keys/hot", None, ticks)));
        let get_script = lua_script("GET", false);
        rows.push(("node GET, 100k keys, 100 B", drive(&node, "/", Some(&get_script), ticks)));
        let put_script = lua_script("PUT", true);
        rows.push(("node PUT, 100k keys, 100 B", drive(&node, "/", Some(&put_script), ticks)));
    }
    let hello_rps = rows[0].1.rps;
    println!("| case | requests/s | vs hello | CPU us/request (server + wrk) | non-2xx |");
    println!("|---|---|---|---|---|");
    for (name, r) in &rows {
        println!("| {name} | {:.0} | {:.2} | {:.1} | {} |", r.rps, r.rps / hello_rps, r.cpu_us_per_request, r.errors);
    }
    let get_ratio = rows[1].1.rps / hello_rps;
    println!("\nbar: node GET (hot key) >= 0.8x hello: {:.2}x -> {}", get_ratio, if get_ratio >= 0.8 { "MET" } else { "MISSED" });

    // --- memory per item ---
    println!("\n| store | RSS before | RSS after {ITEMS} items | bytes/item |");
    println!("|---|---|---|---|");
    let node_per_item = node_memory();
    let memcached_per_item = memcached_memory();
    match memcached_per_item {
        Some(m) => {
            let ratio = node_per_item / m;
            println!("\nbar: node bytes/item <= 1.5x memcached: {:.2}x -> {}", ratio, if ratio <= 1.5 { "MET" } else { "MISSED" });
        }
        None => println!("\nmemcached row skipped: memcached is not installed (apt-get install memcached)"),
    }
}

// ---------------------------------------------------------------- children

/// Child mode: serve on 127.0.0.1:0, print the port, stop on stdin EOF.
fn serve_child(node: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("PORT {}", listener.local_addr().expect("addr").port());
        let stop = async {
            // Parent closes our stdin to stop us.
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await;
        };
        if node {
            let config = NodeConfig { memory_limit: ByteSize::gib(2), max_connections: 4096, ..NodeConfig::default() };
            shardgate_node::run(listener, config, stop).await.expect("node");
        } else {
            hello_server(listener, stop).await;
        }
    });
}

/// The reference: the smallest hyper 1 HTTP/1.1 server, 100-byte body.
async fn hello_server(listener: tokio::net::TcpListener, stop: impl std::future::Future<Output = ()>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let body = Bytes::from(vec![b'v'; VALUE]);
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

struct ServerChild {
    child: Child,
    addr: SocketAddr,
}

impl ServerChild {
    fn spawn(role: &str) -> ServerChild {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE_ENV, role)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server child");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("child port");
        let port: u16 = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT line");
        ServerChild { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- wrk

struct WrkResult {
    rps: f64,
    cpu_us_per_request: f64,
    errors: u64,
}

fn lua_script(method: &str, with_body: bool) -> String {
    let body = if with_body { format!("wrk.body = string.rep(\"v\", {VALUE})\n") } else { String::new() };
    // Each wrk thread gets its own seed (setup runs once per thread).
    format!(
        "wrk.method = \"{method}\"\n{body}\
         local threads = 0\n\
         function setup(thread) threads = threads + 1; thread:set(\"seed\", threads) end\n\
         function init(args) math.randomseed(os.time() * 1000 + seed) end\n\
         request = function()\n  return wrk.format(nil, \"/v1/keys/k\" .. math.random(0, 99999))\nend\n"
    )
}

fn drive(server: &ServerChild, path: &str, script: Option<&str>, ticks: f64) -> WrkResult {
    let url = format!("http://{}{}", server.addr, path);
    let script_path = std::env::temp_dir().join(format!("shardgate-node-bench-{}.lua", std::process::id()));
    let mut cmd = Command::new("wrk");
    cmd.args(WRK_ARGS);
    if let Some(script) = script {
        std::fs::write(&script_path, script).expect("write wrk script");
        cmd.arg("-s").arg(&script_path);
    }
    cmd.arg(&url);
    let server_before = proc_cpu_ticks(server.pid());
    let children_before = self_children_ticks();
    let output = cmd.output().expect("run wrk");
    let children_after = self_children_ticks();
    let server_after = proc_cpu_ticks(server.pid());
    let _ = std::fs::remove_file(&script_path);
    let text = String::from_utf8_lossy(&output.stdout);
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("cannot parse wrk output:\n{text}"));
    let rps: f64 = text.lines().find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok())).unwrap_or(0.0);
    let errors: u64 =
        text.lines().find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:").and_then(|v| v.trim().parse().ok())).unwrap_or(0);
    let cpu_ticks = (server_after - server_before) + (children_after - children_before);
    WrkResult { rps, cpu_us_per_request: cpu_ticks / ticks * 1e6 / requests.max(1.0), errors }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields after the `(comm)` of /proc/<pid>/stat, 0-based from field 3.
fn stat_fields(path: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect()
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> f64 {
    let f = stat_fields(&format!("/proc/{pid}/stat"));
    f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)
}

/// cutime + cstime of this process (CPU of waited-for children, i.e. wrk).
fn self_children_ticks() -> f64 {
    let f = stat_fields("/proc/self/stat");
    f.get(13).unwrap_or(&0.0) + f.get(14).unwrap_or(&0.0)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------- HTTP by hand

/// One HTTP/1.1 request on a keep-alive connection; returns (status, body).
fn http(stream: &mut StdStream, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let head = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut out = vec![0u8; length];
    reader.read_exact(&mut out).expect("body");
    (status, out)
}

fn put_one(addr: SocketAddr, key: &[u8], value: &[u8]) {
    let mut s = StdStream::connect(addr).expect("connect");
    let path = shardgate_api::key::key_path(key);
    let (status, _) = http(&mut s, "PUT", &path, value);
    assert!(status == 201 || status == 204, "PUT {status}");
}

/// Stores `{prefix}0 .. {prefix}{count-1}` (100-byte values) with batch puts.
fn prefill(addr: SocketAddr, prefix: &str, count: usize) {
    let mut s = StdStream::connect(addr).expect("connect");
    let value = Bytes::from(vec![b'v'; VALUE]);
    for start in (0..count).step_by(1000) {
        let items: Vec<PutItem> = (start..(start + 1000).min(count))
            .map(|i| PutItem {
                key: Bytes::from(format!("{prefix}{i}")),
                condition: WriteCondition::Always,
                ttl_seconds: None,
                content_type: Bytes::new(),
                value: value.clone(),
            })
            .collect();
        let (status, _) = http(&mut s, "POST", "/v1/batch/put", &batch::encode_put_request(&items).expect("encode"));
        assert_eq!(status, 200, "prefill");
    }
}

// ---------------------------------------------------------------- memory

fn node_memory() -> f64 {
    let node = ServerChild::spawn("node");
    let mut s = StdStream::connect(node.addr).expect("connect");
    s.set_nodelay(true).ok();
    let _ = http(&mut s, "GET", "/healthz", b"");
    let before = rss_bytes(node.pid());
    let value = Bytes::from(vec![b'v'; VALUE]);
    let started = Instant::now();
    for chunk in 0..ITEMS / 1000 {
        let items: Vec<PutItem> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|i| PutItem {
                key: Bytes::from(format!("key:{i:07}")),
                condition: WriteCondition::Always,
                ttl_seconds: None,
                content_type: Bytes::new(),
                value: value.clone(),
            })
            .collect();
        let body = batch::encode_put_request(&items).expect("encode");
        let (status, _) = http(&mut s, "POST", "/v1/batch/put", &body);
        assert_eq!(status, 200, "batch put");
    }
    let fill = started.elapsed();
    let (_, metrics) = http(&mut s, "GET", "/metrics", b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let items = metric(&metrics, "shardgate_node_items");
    let weighed = metric(&metrics, "shardgate_node_bytes_used");
    let after = rss_bytes(node.pid());
    let per_item = (after.saturating_sub(before)) as f64 / ITEMS as f64;
    println!(
        "| node ({items:.0} items held, weighed {:.0} B/item, fill {:.1}s) | {} | {} | {per_item:.0} |",
        weighed / items.max(1.0),
        fill.as_secs_f64(),
        ByteSize::b(before),
        ByteSize::b(after)
    );
    per_item
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

fn memcached_memory() -> Option<f64> {
    let port = StdListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "2048", "-t", "2"]);
    if is_root() {
        cmd.args(["-u", "root"]);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match StdStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("memcached did not start on {addr}: {e}"),
        }
    };
    let before = rss_bytes(child.id());
    let value = vec![b'v'; VALUE];
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..ITEMS {
        buf.extend_from_slice(format!("set key:{i:07} 0 0 {VALUE} noreply\r\n").as_bytes());
        buf.extend_from_slice(&value);
        buf.extend_from_slice(b"\r\n");
        if buf.len() > (1 << 20) - 200 {
            stream.write_all(&buf).expect("memcached write");
            buf.clear();
        }
    }
    buf.extend_from_slice(format!("get key:{:07}\r\n", ITEMS - 1).as_bytes());
    stream.write_all(&buf).expect("memcached write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut hit = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.starts_with("VALUE") {
            hit = true;
        }
        if line == "END\r\n" {
            break;
        }
    }
    let after = rss_bytes(child.id());
    let _ = stream.write_all(b"stats\r\n");
    let mut items = 0.0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "END\r\n" {
            break;
        }
        if let Some(v) = line.strip_prefix("STAT curr_items ") {
            items = v.trim().parse().unwrap_or(0.0);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(hit, "memcached lost the last item");
    let per_item = (after.saturating_sub(before)) as f64 / ITEMS as f64;
    println!("| memcached ({items:.0} items held) | {} | {} | {per_item:.0} |", ByteSize::b(before), ByteSize::b(after));
    Some(per_item)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}
