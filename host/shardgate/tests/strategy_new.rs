//! `shardgate strategy new` refuses what it cannot create. Building,
//! checking, uploading and activating a scaffolded strategy on a running
//! cluster is the `dev` end-to-end test (tests/dev.rs).

use std::process::Command;

fn shardgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardgate"))
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
