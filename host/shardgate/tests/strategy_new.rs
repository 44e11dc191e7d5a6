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

/// The strategy toolchains are pinned once, in `.ci/run` (what CI builds
/// the examples with); every install line a user copies (README, the C
/// example's build script and source, the C scaffold's README, the hints
/// `strategy new` prints) names the same versions.
#[test]
fn every_install_hint_names_the_versions_ci_pins() {
    let repo = process::repo();
    let ci = std::fs::read_to_string(repo.join(".ci/run")).unwrap();
    let pinned = |var: &str| -> String {
        let line = ci.lines().find(|l| l.starts_with(&format!("{var}="))).unwrap_or_else(|| panic!(".ci/run sets no {var}"));
        line[var.len() + 1..].trim().to_string()
    };
    // (tool as written before the version, the separators used, .ci/run's variable)
    let tools = [
        ("wit-bindgen-cli", &["@", " "][..], "wit_bindgen_version"),
        ("wasm-tools", &["@", " "][..], "wasm_tools_version"),
        ("ziglang", &["=="][..], "ziglang_version"),
        ("zig", &[" "][..], "ziglang_version"),
        ("componentize-py", &["=="][..], "componentize_py_version"),
    ];
    let files = [
        "README.md",
        "strategies/examples/c-hrw/build.sh",
        "strategies/examples/c-hrw/strategy.c",
        "host/shardgate/src/commands/scaffold/c_README.md.tmpl",
        "host/shardgate/src/commands/strategy.rs",
        ".ci/run",
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(repo.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (tool, separators, var) in tools {
            let want = pinned(var);
            for separator in separators {
                let needle = format!("{tool}{separator}");
                for (at, _) in text.match_indices(&needle) {
                    // A whole word before, a version (digits and dots) after.
                    if text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                        continue;
                    }
                    let rest = &text[at + needle.len()..];
                    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                    let version = version.trim_end_matches('.');
                    if version.is_empty() || !version.contains('.') {
                        continue; // prose ("wasm-tools from crates.io"), not a pin
                    }
                    checked += 1;
                    if version != want {
                        wrong.push(format!("{file}: {needle}{version} (.ci/run pins {var}={want})"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "install hints that disagree with .ci/run:\n{}", wrong.join("\n"));
    // README, build.sh, the template and strategy.rs pin each C tool at least once.
    assert!(checked >= 12, "only {checked} pinned versions found: did the install lines change shape?");
}
