//! `shardgate strategy new` produces a crate that builds with stock cargo
//! for wasm32-wasip2, passes its own tests and `shardgate strategy check`.
//! (Uploading and activating it on a running cluster is covered by the
//! `dev` end-to-end test.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn shardgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardgate"))
}

/// A cargo for the scaffolded crate: the outer build's settings removed,
/// a target directory kept between runs so the dependencies build once.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target_dir());
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/scaffold-test")
}

#[test]
fn scaffolded_strategy_builds_tests_and_passes_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zone-spread");
    let out = shardgate().args(["strategy", "new", "zone-spread", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/strategy.wit")).unwrap(),
        include_str!("../../../wit/strategy.wit"),
        "the scaffold carries the project's WIT"
    );

    let test = cargo(&dir).args(["test", "--quiet"]).output().unwrap();
    assert!(test.status.success(), "cargo test: {}", String::from_utf8_lossy(&test.stderr));

    let build = cargo(&dir).args(["build", "--release", "--target", "wasm32-wasip2"]).output().unwrap();
    assert!(build.status.success(), "cargo build: {}", String::from_utf8_lossy(&build.stderr));
    let wasm = target_dir().join("wasm32-wasip2/release/zone_spread.wasm");

    let check = shardgate()
        .args(["strategy", "check"])
        .arg(&wasm)
        .args(["--replicas", "2", "--nodes", "6", "--keys", "20000"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&check.stderr));
    assert!(report.contains("zone-spread") && report.contains("per-key"), "{report}");
}

#[test]
fn refuses_bad_names_and_existing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = shardgate().args(["strategy", "new", "Bad Name", "--dir"]).arg(tmp.path().join("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid strategy name"));
    let out = shardgate().args(["strategy", "new", "ok", "--dir"]).arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
