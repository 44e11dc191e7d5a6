//! `shardgate strategy new` refuses what it cannot create, and writes what
//! each language needs. Building, checking, uploading and activating a
//! scaffolded strategy on a running cluster is the `dev` end-to-end test
//! (tests/dev.rs) for Rust, `strategy_languages.rs` for Python and C.

#[path = "support/process.rs"]
mod process;
use process::{cargo, shardgate};

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

#[test]
fn the_table_skeleton_builds_passes_its_tests_and_the_kit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("row-table");
    let out = shardgate().args(["strategy", "new", "row-table", "--table", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("use shardgate::strategy::types::SlotTable;") && lib.contains("fn the_table_and_route_agree"));
    // The same target directory as the dev test's scaffold: dependencies build once.
    let target = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/scaffold-test");
    let test = cargo(&dir, &target).args(["test", "--quiet"]).output().unwrap();
    assert!(test.status.success(), "cargo test: {}{}", String::from_utf8_lossy(&test.stdout), String::from_utf8_lossy(&test.stderr));
    let build = cargo(&dir, &target).args(["build", "--release", "--target", "wasm32-wasip2"]).output().unwrap();
    assert!(build.status.success(), "cargo build: {}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/row_table.wasm");
    let check = shardgate()
        .args(["strategy", "check"])
        .arg(&wasm)
        .args(["--replicas", "2", "--keys", "20000", "--weights", "1,2", "--json", "--no-cache"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["table"], "slots");
    assert_eq!(report["add"]["between_unaffected"], 0.0);
    // --table is Rust only.
    let out =
        shardgate().args(["strategy", "new", "x", "--lang", "python", "--table", "--dir"]).arg(tmp.path().join("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_c_scaffold_writes_the_example_its_build_script_and_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ring-c");
    let out = shardgate().args(["strategy", "new", "ring-c", "--lang", "c", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wit-bindgen-cli@0.63.0") && stdout.contains("./build.sh"), "{stdout}");
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../strategies/examples/c-hrw");
    for file in ["strategy.c", "build.sh"] {
        let want = std::fs::read_to_string(example.join(file)).unwrap().replace("c-hrw", "ring-c");
        assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), want, "{file}");
    }
    // The strategy's name is the project's; the build writes NAME.wasm.
    assert!(std::fs::read_to_string(dir.join("strategy.c")).unwrap().contains("strategy_string_dup(&ret->name, \"ring-c\")"));
    assert!(std::fs::read_to_string(dir.join("build.sh")).unwrap().contains("-o ring-c.wasm"));
    assert_eq!(std::fs::read_to_string(dir.join("wit/strategy.wit")).unwrap(), include_str!("../../../wit/strategy.wit"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.starts_with("# ring-c\n") && readme.contains("ring-c.wasm") && !readme.contains("{{"), "{readme}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("build.sh")).unwrap().permissions().mode() & 0o111, 0o111, "build.sh is executable");
    }
    // --table is Rust only.
    let out = shardgate().args(["strategy", "new", "x", "--lang", "c", "--table", "--dir"]).arg(tmp.path().join("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--table is for --lang rust"));
}
