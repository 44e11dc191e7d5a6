//! `shardgate strategy ...` as a user runs it: the real binary, real files.

use std::path::Path;
use std::process::Output;

use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

#[path = "support/process.rs"]
mod process;
use process::{free_port, shardgate as binary, text};

fn shardgate(args: &[&str]) -> Output {
    // The compiled-component cache goes to a directory of the test run, not
    // the user's.
    let cache = std::env::temp_dir().join(format!("shardgate-cli-test-cache-{}", std::process::id()));
    binary().args(args).env("XDG_CACHE_HOME", cache).output().expect("run shardgate")
}

#[test]
fn list_shows_every_builtin() {
    let out = shardgate(&["strategy", "list"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for name in ["rendezvous", "ketama", "maglev", "jump", "pinned"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn check_a_builtin_passes_and_reports_progress() {
    let out = shardgate(&["strategy", "check", "maglev", "--keys", "20000", "--nodes", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("peak/mean") && stdout.contains("result               PASS"), "{stdout}");
    assert!(text(&out.stderr).contains("movement: removing node-4 (5/5)"));
}

#[test]
fn check_json_is_machine_readable() {
    let out = shardgate(&["strategy", "check", "ketama", "--keys", "5000", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "ketama");
    assert_eq!(v["table"], "ring");
    assert!(v["balance"]["peak_over_mean"].as_f64().unwrap() >= 1.0);
}

#[test]
fn every_example_strategy_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/strategies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let out = shardgate(&["strategy", "check", &name, "--config", path.to_str().unwrap(), "--keys", "5000"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        seen += 1;
    }
    assert!(seen >= 4);
}

#[test]
fn a_file_that_is_not_wasm_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.wasm");
    std::fs::write(&file, "hello").unwrap();
    let out = shardgate(&["strategy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a WebAssembly file"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_one_line_error() {
    let out = shardgate(&["strategy", "check", "/nonexistent/x.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/x.wasm"));
}

#[test]
fn a_rejected_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "\nvnodes = 0\n").unwrap();
    let out = shardgate(&["strategy", "check", "ketama", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("vnodes must be between 1 and 4096"), "{}", text(&out.stderr));
    std::fs::write(&file, "\nvnode = 3\n").unwrap();
    let out = shardgate(&["strategy", "check", "ketama", "--config", file.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("line 2"), "{}", text(&out.stderr));
}

#[test]
fn a_strategy_breaking_a_hard_property_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("misbehave.wasm");
    std::fs::write(&wasm, shardgate_builtins::MISBEHAVE).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "fault = \"out-of-range\"\nafter = 10").unwrap();
    let out = shardgate(&["strategy", "check", wasm.to_str().unwrap(), "--config", config.to_str().unwrap(), "--keys", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("out of range"));
}

#[test]
fn ctl_names_a_meta_address_that_does_not_answer_within_the_timeout() {
    // A port nobody listens on: bound, then released.
    let port = free_port();
    let started = std::time::Instant::now();
    let out = shardgate(&["ctl", "--meta", &format!("http://127.0.0.1:{port}"), "--timeout", "1s", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("meta member http://127.0.0.1:{port}")), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "ctl must not hang");
}

#[test]
fn check_takes_weights_zones_budgets_and_writes_an_html_report() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let out = shardgate(&[
        "strategy",
        "check",
        "rendezvous",
        "--keys",
        "20000",
        "--nodes",
        "4",
        "--weights",
        "1,3",
        "--zones",
        "2",
        "--route-fuel",
        "100000",
        "--config-fuel",
        "5000000000",
        "--html",
        html.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["balance"]["counts"], "primaries");
    let load = v["load"].as_array().unwrap();
    assert_eq!(load.len(), 4);
    assert_eq!((load[1]["weight"].as_f64(), load[1]["zone"].as_str()), (Some(3.0), Some("zone-1")));
    // Weighted: node-1 (weight 3) owns about three times node-0's keys, and
    // each node about its share.
    let keys = |i: usize| load[i]["keys"].as_u64().unwrap() as f64;
    assert!(keys(1) > 2.5 * keys(0), "{load:?}");
    assert!(load.iter().all(|l| (l["over_share"].as_f64().unwrap() - 1.0).abs() < 0.1), "{load:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Load per node") && page.contains("node-3 (w 3)"), "{page}");
    assert!(!page.contains("<script"), "self-contained, no script");
}

#[test]
fn check_failures_are_json_with_json_and_name_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "vnodes = 0\n").unwrap();
    let out = shardgate(&["strategy", "check", "ketama", "--config", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("vnodes must be between 1 and 4096"), "{v}");
    assert_eq!(v["passed"], false);
    // A configure budget too small for the table: refused, naming the flag's key.
    let out = shardgate(&["strategy", "check", "rendezvous", "--keys", "1000", "--config-fuel", "100000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("configure_fuel"), "{}", text(&out.stderr));
    let out = shardgate(&["strategy", "check", "rendezvous", "--route-fuel", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--route-fuel: must be at least 1000"), "{}", text(&out.stderr));
}

#[test]
fn check_shows_a_panicking_strategys_message() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("misbehave.wasm");
    std::fs::write(&wasm, shardgate_builtins::MISBEHAVE).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "fault = \"trap\"\nat = \"configure\"").unwrap();
    let out = shardgate(&["strategy", "check", wasm.to_str().unwrap(), "--config", config.to_str().unwrap(), "--keys", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("misbehave: trap requested"), "{}", text(&out.stderr));
}

#[test]
fn check_loads_a_component_from_the_compiled_cache_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = || shardgate(&["strategy", "check", "maglev", "--keys", "1000", "--nodes", "3", "--cache-dir", cache.to_str().unwrap()]);
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("(compiled)") || text(&first.stderr).contains(", compiled)"), "{}", text(&first.stderr));
    let second = run();
    assert_eq!(second.status.code(), Some(0));
    assert!(text(&second.stderr).contains("compiled form from the cache"), "{}", text(&second.stderr));
}

#[test]
fn ctl_errors_are_json_with_json() {
    let port = free_port();
    let out = shardgate(&["ctl", "--meta", &format!("http://127.0.0.1:{port}"), "--timeout", "1s", "--json", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{v}");
}

/// What `strategies/testing/panicky` panics with in every `configure`.
const PANICKY: &str = "panicky: configure panics on purpose";

#[test]
fn a_panic_under_the_empty_config_shows_in_check_and_in_ctl_upload() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("panicky.wasm");
    std::fs::write(&wasm, shardgate_builtins::PANICKY).unwrap();
    let out = shardgate(&["strategy", "check", wasm.to_str().unwrap(), "--keys", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(PANICKY), "{}", text(&out.stderr));
    let out = shardgate(&["strategy", "check", wasm.to_str().unwrap(), "--keys", "1000", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains(PANICKY), "{v}");

    // Upload admission configures with the empty config: the panic refuses
    // the upload, and its message is in ctl's error.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = LocalCluster::start(ClusterSpec::new(1, 0, 0, dir.path().join("cluster"))).await.expect("cluster starts");
        let out = ctl(&cluster, &["strategy", "upload", wasm.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains(PANICKY), "{}", text(&out.stderr));
        assert!(cluster.meta.strategies().await.unwrap().is_empty(), "nothing stored");
        cluster.shutdown().await;
    });
}

#[test]
fn a_panic_only_under_a_real_config_is_uploaded_and_its_activation_refused_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    // misbehave rejects the empty config (it needs `fault`), so the upload is
    // admitted; with `fault = "trap"` its configure panics.
    let wasm = dir.path().join("misbehave.wasm");
    std::fs::write(&wasm, shardgate_builtins::MISBEHAVE).unwrap();
    let config = dir.path().join("trap.toml");
    std::fs::write(&config, "fault = \"trap\"\nat = \"configure\"\n").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = LocalCluster::start(ClusterSpec::new(1, 2, 0, dir.path().join("cluster"))).await.expect("cluster starts");
        cluster.register_nodes().await.unwrap();
        let out = ctl(&cluster, &["strategy", "upload", wasm.to_str().unwrap()]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let out = ctl(&cluster, &["strategy", "activate", "misbehave", "--config", config.to_str().unwrap(), "--replicas", "1"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains("misbehave: trap requested"), "{}", text(&out.stderr));
        assert!(cluster.meta.routing().await.unwrap().strategy.is_none(), "nothing activated");
        cluster.shutdown().await;
    });
}

fn ctl(cluster: &LocalCluster, args: &[&str]) -> Output {
    let meta = &cluster.metas[0].addr;
    shardgate(&[&["ctl", "--meta", meta, "--timeout", "60s"], args].concat())
}
