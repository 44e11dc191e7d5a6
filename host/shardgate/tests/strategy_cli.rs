//! `shardgate strategy ...` as a user runs it: the real binary, real files.

use std::path::Path;
use std::process::{Command, Output};

fn shardgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardgate")).args(args).output().expect("run shardgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let out = shardgate(&["ctl", "--meta", &format!("http://127.0.0.1:{port}"), "--timeout", "1s", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("meta member http://127.0.0.1:{port}")), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "ctl must not hang");
}
