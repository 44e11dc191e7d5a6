//! `shardgate dev` as a new user meets it (the README's first command):
//! it starts, a PUT and a GET through the proxy succeed, `ctl strategy
//! activate ketama` swaps the routing and the GET still succeeds with the
//! new epoch; then the custom-strategy path end to end: `strategy new`,
//! stock `cargo build --target wasm32-wasip2`, `strategy check`,
//! `ctl strategy upload` and `activate`, and keys keep being served.
//!
//! `dev` uses its documented fixed ports (7000, 7101, 7201-7203), so this
//! file holds one test: the scenarios run in sequence on one cluster.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{Running, cargo, shardgate, text};

const PROXY: &str = "http://127.0.0.1:7000";
const META: &str = "http://127.0.0.1:7101";

fn ctl(args: &[&str]) -> String {
    let out = shardgate().args(["ctl", "--meta", META, "--proxy", PROXY, "--timeout", "10s"]).args(args).output().unwrap();
    assert!(out.status.success(), "ctl {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn client() -> reqwest::blocking::Client {
    shardgate_tls::blocking_http_client_system_roots().timeout(Duration::from_secs(5)).no_proxy().build().unwrap()
}

/// (status, epoch header, body)
fn get(key: &str) -> (u16, u64, String) {
    let r = client().get(format!("{PROXY}/v1/keys/{key}")).send().unwrap();
    let epoch = r.headers()["shardgate-epoch"].to_str().unwrap().parse().unwrap();
    (r.status().as_u16(), epoch, r.text().unwrap())
}

fn put(key: &str, value: &str) -> u16 {
    client().put(format!("{PROXY}/v1/keys/{key}")).body(value.to_string()).send().unwrap().status().as_u16()
}

fn meta_epoch() -> u64 {
    let v: serde_json::Value = serde_json::from_str(&ctl(&["status", "--json"])).unwrap();
    v["routing"]["epoch"].as_u64().unwrap()
}

#[test]
fn dev_cluster_serves_swaps_and_runs_a_custom_strategy() {
    // 1. Start it and wait for its banner.
    // The default log filter (no RUST_LOG): checked in step 6.
    let mut child = shardgate().arg("dev").env_remove("RUST_LOG").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>());
    let dev = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = String::new();
    while !banner.contains("Ctrl-C stops everything") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("shardgate dev printed its banner in time");
        banner.push_str(&line);
        banner.push('\n');
    }
    assert!(banner.contains("proxy    http://127.0.0.1:7000"), "{banner}");
    assert!(banner.contains("curl -X PUT"), "{banner}");

    // 2. PUT and GET through the proxy.
    assert_eq!(put("greeting", "hello"), 201);
    let (status, first_epoch, body) = get("greeting");
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!(first_epoch, meta_epoch());

    // 3. Swap to ketama; the key is still there, served by the new epoch.
    let out = ctl(&["strategy", "activate", "ketama", "--wait"]);
    assert!(out.contains("activated ketama"), "{out}");
    let (status, epoch, body) = get("greeting");
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert!(epoch > first_epoch);
    assert_eq!(epoch, meta_epoch());
    // A setup job's `activate --if-inactive` run again changes nothing, and
    // `upload` takes several (already stored: 200, nothing changes).
    let again = ctl(&["strategy", "activate", "maglev", "--if-inactive"]);
    assert!(again.contains("ketama") && again.contains("already active") && again.contains("nothing changed"), "{again}");
    let uploaded = ctl(&["strategy", "upload", "ketama", "maglev"]);
    assert!(uploaded.contains("uploaded ketama") && uploaded.contains("uploaded maglev"), "{uploaded}");
    assert_eq!(meta_epoch(), epoch, "--if-inactive and re-uploads changed the routing");

    // `ctl proxies`: the proxy reported the new epoch (it reports on every
    // swap); `ctl lookup`: the owners the proxy routes the key to.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ctl(&["proxies", "--json"])).unwrap();
        let p = &v["proxies"][0];
        if p["epoch"] == epoch && p["converged"] == true {
            assert_eq!(p["id"], PROXY, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the proxy never reported epoch {epoch}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ctl(&["proxies"]).contains("converged"));
    let lookup: serde_json::Value = serde_json::from_str(&ctl(&["lookup", "greeting", "--json"])).unwrap();
    let owners: serde_json::Value = client().get(format!("{PROXY}/v1/owners/greeting")).send().unwrap().json().unwrap();
    assert_eq!((&lookup["epoch"], &lookup["active"]), (&owners["epoch"], &owners["owners"]), "{lookup} {owners}");
    let shown = ctl(&["lookup", "greeting", "--strategy", "rendezvous", "--replicas", "2"]);
    assert!(shown.contains("greeting under epoch") && shown.contains("candidate: node-"), "{shown}");

    // Bad input: a file that is not a component is a one-line error.
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("notes.wasm");
    std::fs::write(&junk, "not a component").unwrap();
    let out = shardgate().args(["ctl", "--meta", META, "strategy", "upload"]).arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not a WebAssembly file"), "{stderr}");

    // 4. A custom strategy, exactly as the README's walkthrough does it.
    let dir = tmp.path().join("zone-spread");
    let out = shardgate().args(["strategy", "new", "zone-spread", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("wit/strategy.wit")).unwrap(), include_str!("../../../wit/strategy.wit"));
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/scaffold-test");
    let test = cargo(&dir, &target).args(["test", "--quiet"]).output().unwrap();
    assert!(test.status.success(), "cargo test: {}", text(&test.stderr));
    let build = cargo(&dir, &target).args(["build", "--release", "--target", "wasm32-wasip2"]).output().unwrap();
    assert!(build.status.success(), "cargo build: {}", text(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/zone_spread.wasm");
    let check = shardgate().args(["strategy", "check"]).arg(&wasm).args(["--replicas", "2", "--keys", "20000"]).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains("result               PASS"));

    let out = ctl(&["strategy", "upload", wasm.to_str().unwrap()]);
    assert!(out.contains("uploaded zone-spread 0.1.0"), "{out}");
    ctl(&["strategy", "activate", "zone-spread", "--replicas", "2", "--wait"]);
    let status = ctl(&["status"]);
    assert!(status.contains("strategy   zone-spread 0.1.0") && status.contains("2 replica(s)"), "{status}");
    let (status, epoch, body) = get("greeting");
    assert_eq!((status, body.as_str()), (200, "hello"), "the migration window keeps old keys readable");
    assert_eq!(epoch, meta_epoch());
    for i in 0..50 {
        assert_eq!(put(&format!("custom-{i}"), &format!("v{i}")), 201);
    }
    for i in 0..50 {
        let (status, _, body) = get(&format!("custom-{i}"));
        assert_eq!((status, body), (200, format!("v{i}")));
    }

    // 5. Ctrl-C stops it cleanly.
    let mut dev = dev;
    let pid = dev.0.id();
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            assert!(status.success(), "dev exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 6. By default only shardgate's own crates log below warn: no openraft
    // INFO (a whole RaftState dump among them) before the banner or during
    // the swaps above.
    let log = log.join().unwrap();
    let chatty: Vec<&String> = log.iter().filter(|line| below_warn_from_a_dependency(line)).collect();
    assert!(chatty.is_empty(), "dependency log lines below warn by default:\n{chatty:#?}");
    assert!(log.iter().any(|l| l.contains(" INFO shardgate")), "shardgate's own info lines are kept: {log:#?}");
}

/// A tracing-subscriber fmt line (`<time> <LEVEL> [<span>{..}:]* <target>:
/// ...`, no ANSI on a pipe) at INFO, DEBUG or TRACE whose target is not a
/// shardgate crate.
fn below_warn_from_a_dependency(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(_time), Some(level)) = (words.next(), words.next()) else {
        return false;
    };
    matches!(level, "INFO" | "DEBUG" | "TRACE") && !words.any(|w| w.starts_with("shardgate") && w.ends_with(':'))
}
