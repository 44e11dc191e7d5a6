//! Strategies written in languages other than Rust, built from source with
//! their real toolchains, checked with `shardgate strategy check` (the
//! binary) and routed through a real local cluster (meta, cache nodes,
//! proxy).
//!
//! Python: `strategies/examples/python-hrw/app.py`, built with
//! componentize-py (PyPI, pinned in `.ci/run`). The component embeds CPython
//! (~18 MB): the first load compiles it, the second comes from the
//! compiled-component cache.
//!
//! C: `strategies/examples/c-hrw/strategy.c`, built by its `build.sh` with
//! wit-bindgen's C generator, `zig cc` and wasm-tools (pinned in `.ci/run`,
//! which installs them under /opt/shardgate-c-strategy or
//! ~/.cache/shardgate-c-strategy). A ~20 KB component that imports nothing;
//! the test checks that the proxy routes every key as the table says.
//!
//! When a tool is missing (not named by its variable, `COMPONENTIZE_PY`,
//! `WIT_BINDGEN`, `WASM_TOOLS` or `ZIG`, not on PATH, not where `.ci/run`
//! puts it) the test writes `SKIPPED: <test>: <reason>` to stderr and
//! passes, unless `SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS=1` (set by
//! `.ci/test`; `.ci/run` installs the toolchains), which makes it fail
//! instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shardgate_meta_client::model::{Activation, Change, LookupRequest};
use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

#[path = "support/process.rs"]
mod process;
use process::{repo, shardgate as binary, text};

/// The tool `program` (overridden by the environment variable `var`), or
/// why the test cannot run.
fn toolchain(test: &str, var: &str, program: &str) -> Option<String> {
    toolchain_in(test, var, program, "--version", &[])
}

/// The tool `program`: named by `var`, else on PATH, else in one of
/// `known` directories; `version` is the argument it answers its version
/// to. Or why the test cannot run.
fn toolchain_in(test: &str, var: &str, program: &str, version: &str, known: &[PathBuf]) -> Option<String> {
    let answers = |p: &str| Command::new(p).arg(version).output().is_ok_and(|o| o.status.success());
    if let Ok(named) = std::env::var(var) {
        if answers(&named) {
            return Some(named);
        }
    } else {
        let found = std::iter::once(program.to_string()).chain(known.iter().map(|d| d.join(program).display().to_string()));
        if let Some(p) = found.into_iter().find(|p| answers(p)) {
            return Some(p);
        }
    }
    let reason = format!("{program} not on PATH (set {var} or install it: see .ci/run)");
    if std::env::var("SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason}, and SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS=1");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    None
}

fn shardgate(args: &[&str], cache: &Path) -> Output {
    binary().args(args).env("XDG_CACHE_HOME", cache).output().expect("run shardgate")
}

/// `shardgate strategy new python-hrw --lang python` (the template is
/// `strategies/examples/python-hrw/app.py`) built in `dir`, with the
/// commands the scaffold prints; answers the component.
fn build_python(componentize_py: &str, dir: &Path, cache: &Path) -> PathBuf {
    let project = dir.join("python-hrw");
    let new = shardgate(&["strategy", "new", "python-hrw", "--lang", "python", "--dir", project.to_str().unwrap()], cache);
    assert!(new.status.success(), "{}", text(&new.stderr));
    assert!(text(&new.stdout).contains("componentize-py -d wit -w strategy componentize app -o python-hrw.wasm --stub-wasi"));
    assert_eq!(
        std::fs::read_to_string(project.join("app.py")).unwrap(),
        std::fs::read_to_string(repo().join("strategies/examples/python-hrw/app.py")).unwrap()
    );
    let out = project.join("python-hrw.wasm");
    let built = Command::new(componentize_py)
        .current_dir(&project)
        .args(["-d", "wit", "-w", "strategy", "componentize", "app", "-o", "python-hrw.wasm", "--stub-wasi"])
        .output()
        .expect("run componentize-py");
    assert!(built.status.success(), "componentize-py failed:\n{}{}", text(&built.stdout), text(&built.stderr));
    out
}

#[test]
fn a_python_strategy_builds_checks_and_routes_through_a_cluster() {
    let test = "a_python_strategy_builds_checks_and_routes_through_a_cluster";
    let Some(componentize_py) = toolchain(test, "COMPONENTIZE_PY", "componentize-py") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let wasm = build_python(&componentize_py, dir.path(), &cache);
    // `strategy check` compiles into the directory the cluster's proxy reads
    // (testkit's `proxy-compiled-strategies`): the proxy then loads it from
    // there.
    let compiled = dir.path().join("cluster/proxy-compiled-strategies");

    // The quality kit passes; the second load comes from the compiled cache.
    let check = |keys: &str| {
        let args = [
            "strategy",
            "check",
            wasm.to_str().unwrap(),
            "--keys",
            keys,
            "--nodes",
            "5",
            "--json",
            "--cache-dir",
            compiled.to_str().unwrap(),
        ];
        shardgate(&args, &cache)
    };
    let first = check("20000");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!((report["name"].as_str(), report["table"].as_str()), (Some("python-hrw"), Some("slots")));
    assert_eq!(report["removals"].as_array().unwrap().len(), 5);
    for m in report["removals"].as_array().unwrap() {
        assert_eq!(m["between_unaffected"], 0.0, "HRW moves nothing between unaffected nodes: {m}");
    }
    let second = check("1000");
    assert_eq!(second.status.code(), Some(0));
    assert!(text(&second.stderr).contains("compiled form from the cache"), "{}", text(&second.stderr));
    // A config the strategy rejects names the key, from Python.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "slots = 0\n").unwrap();
    let out = shardgate(
        &["strategy", "check", wasm.to_str().unwrap(), "--config", bad.to_str().unwrap(), "--cache-dir", compiled.to_str().unwrap()],
        &cache,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("slots must be between 1 and 65536"), "{}", text(&out.stderr));

    // Meta's cache (in its data_dir) gets the same file: one compilation in
    // the whole test. A file copied between machines of the same build is
    // as good as one compiled there.
    let meta_compiled = dir.path().join("cluster/meta-1/compiled-strategies");
    std::fs::create_dir_all(&meta_compiled).unwrap();
    for entry in std::fs::read_dir(&compiled).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, meta_compiled.join(path.file_name().unwrap())).unwrap();
    }

    // Upload, activate, and route keys through the proxy.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = LocalCluster::start(ClusterSpec::new(1, 3, 1, dir.path().join("cluster"))).await.expect("cluster starts");
        cluster.register_nodes().await.unwrap();
        let info = cluster.meta.upload_strategy(std::fs::read(&wasm).unwrap()).await.expect("meta admits the Python strategy");
        assert_eq!(info.name, "python-hrw");
        let receipt = cluster.meta.activate(&info.hash[..12], &Activation { config: "slots = 1024".into(), replicas: 2 }).await.unwrap();
        cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(600)).await.expect("the proxy routes with it");
        let status = cluster.proxy_status(0).await.unwrap();
        let strategy = status.strategy.as_ref().expect("a strategy is active");
        assert_eq!((strategy.name.as_str(), strategy.table.as_deref()), ("python-hrw", Some("slots")), "{status:?}");
        let http = shardgate_tls::http_client_system_roots().timeout(Duration::from_secs(10)).no_proxy().build().unwrap();
        let proxy = &cluster.proxies[0].addr;
        for i in 0..50 {
            let url = format!("{proxy}/v1/keys/py-{i}");
            let put = http.put(&url).body(format!("value {i}")).send().await.unwrap();
            assert!(put.status().is_success(), "PUT {url}: {}", put.status());
            let got = http.get(&url).send().await.unwrap();
            assert_eq!(got.status(), 200);
            assert_eq!(got.text().await.unwrap(), format!("value {i}"));
        }
        cluster.shutdown().await;
    });
}

/// Where `.ci/run` installs the C toolchain.
fn c_toolchain_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/opt/shardgate-c-strategy/bin")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/shardgate-c-strategy/bin"));
    }
    dirs
}

/// `shardgate strategy new c-hrw --lang c` (the templates are
/// `strategies/examples/c-hrw/`) built in `dir` with its `build.sh`;
/// answers the project directory.
fn build_c(tools: &[(&str, String)], dir: &Path, cache: &Path) -> PathBuf {
    let project = dir.join("c-hrw");
    let new = shardgate(&["strategy", "new", "c-hrw", "--lang", "c", "--dir", project.to_str().unwrap()], cache);
    assert!(new.status.success(), "{}", text(&new.stderr));
    assert!(text(&new.stdout).contains("./build.sh"), "{}", text(&new.stdout));
    let example = repo().join("strategies/examples/c-hrw");
    for file in ["strategy.c", "build.sh"] {
        assert_eq!(
            std::fs::read_to_string(project.join(file)).unwrap(),
            std::fs::read_to_string(example.join(file)).unwrap(),
            "{file}: the scaffold writes the example"
        );
    }
    assert!(project.join("README.md").exists() && project.join("wit/strategy.wit").exists());
    let mut build = Command::new(project.join("build.sh"));
    for (var, path) in tools {
        build.env(var, path);
    }
    let built = build.output().expect("run build.sh");
    assert!(built.status.success(), "build.sh failed:\n{}{}", text(&built.stdout), text(&built.stderr));
    project
}

/// Weighted HRW as `strategy.c` computes it, written again here: the
/// positions row `row` of the table holds.
fn hrw_row(ids: &[&str], weights: &[f64], row: u32, width: usize) -> Vec<usize> {
    let fnv = |s: &str| s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mix = |mut x: u64| {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    let mut scored: Vec<(f64, usize)> = ids
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (id, w))| {
            let u = ((mix(fnv(id) ^ row as u64) >> 11) + 1) as f64 / (1u64 << 53) as f64;
            (-u.ln() * (1.0 / w), i)
        })
        .collect();
    scored.sort_by(|a, b| a.partial_cmp(b).unwrap());
    scored.into_iter().take(width).map(|(_, i)| i).collect()
}

#[test]
fn a_c_strategy_builds_checks_and_routes_through_a_cluster() {
    let test = "a_c_strategy_builds_checks_and_routes_through_a_cluster";
    let known = c_toolchain_dirs();
    let Some(wit_bindgen) = toolchain_in(test, "WIT_BINDGEN", "wit-bindgen", "--version", &known) else { return };
    let Some(wasm_tools) = toolchain_in(test, "WASM_TOOLS", "wasm-tools", "--version", &known) else { return };
    let Some(zig) = toolchain_in(test, "ZIG", "zig", "version", &known) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tools = [("WIT_BINDGEN", wit_bindgen), ("WASM_TOOLS", wasm_tools.clone()), ("ZIG", zig)];
    let project = build_c(&tools, dir.path(), &cache);
    let wasm = project.join("c-hrw.wasm");

    // The core module imports nothing (build.sh refuses one that does; this
    // checks the check): no WASI adapter, no clock, no randomness.
    let printed = Command::new(&wasm_tools).arg("print").arg(project.join("build/core.wasm")).output().unwrap();
    assert!(printed.status.success());
    assert!(!text(&printed.stdout).contains("(import "), "the core module imports:\n{}", text(&printed.stdout));

    let check = |args: &[&str]| {
        let mut all = vec!["strategy", "check", wasm.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()];
        all.extend_from_slice(args);
        shardgate(&all, &cache)
    };
    let out = check(&["--keys", "20000", "--nodes", "5", "--weights", "1,2", "--replicas", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["name"].as_str(), report["table"].as_str()), (Some("c-hrw"), Some("slots")));
    for m in report["removals"].as_array().unwrap() {
        assert_eq!(m["between_unaffected"], 0.0, "HRW moves nothing between unaffected nodes: {m}");
    }
    // Config errors name the line, from C.
    for (config, needle) in [
        ("slots = 0\n", "line 1: slots must be between 1 and 65536, got 0"),
        ("# comment\n\nslot = 3\n", "line 3: unknown setting 'slot'; the only key is slots"),
        ("slots = many", "line 1: slots must be an integer, got 'many'"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, config).unwrap();
        let out = check(&["--keys", "1000", "--config", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{config}");
        assert!(text(&out.stderr).contains(needle), "{config}: {}", text(&out.stderr));
    }

    // Upload with `ctl`, activate, and route keys through the proxy: every
    // key lands on the nodes the table names (HRW recomputed here).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = LocalCluster::start(ClusterSpec::new(1, 3, 1, dir.path().join("cluster"))).await.expect("cluster starts");
        let weights = [1.0, 2.0, 1.0];
        let changes = cluster
            .nodes
            .iter()
            .zip(weights)
            .map(|(n, weight)| Change::AddNode { id: n.id.clone(), addr: n.addr.clone(), weight, zone: String::new() })
            .collect();
        cluster.meta.apply(changes).await.unwrap();
        // The README's commands: ctl strategy upload FILE, activate NAME.
        let ctl = |args: &[&str]| {
            let out = binary().args(["ctl", "--meta", &cluster.metas[0].addr, "--timeout", "60s", "strategy"]).args(args).output().unwrap();
            assert!(out.status.success(), "ctl strategy {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        };
        ctl(&["upload", wasm.to_str().unwrap()]);
        let slots = 512u32;
        let config = dir.path().join("slots.toml");
        std::fs::write(&config, format!("slots = {slots}\n")).unwrap();
        ctl(&["activate", "c-hrw", "--replicas", "2", "--config", config.to_str().unwrap()]);
        let routing = cluster.meta.routing().await.unwrap();
        assert_eq!(routing.strategy.as_ref().map(|s| s.name.as_str()), Some("c-hrw"));
        cluster.wait_for_epoch(routing.epoch, Duration::from_secs(120)).await.expect("the proxy routes with it");
        let status = cluster.proxy_status(0).await.unwrap();
        let strategy = status.strategy.as_ref().expect("a strategy is active");
        assert_eq!((strategy.name.as_str(), strategy.table.as_deref()), ("c-hrw", Some("slots")), "{status:?}");

        let ids: Vec<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
        let http = shardgate_tls::http_client_system_roots().timeout(Duration::from_secs(10)).no_proxy().build().unwrap();
        let proxy = &cluster.proxies[0].addr;
        let mut primaries = [0usize; 3];
        for i in 0..120 {
            let key = format!("c-{i}");
            let row = ((shardgate_strategy::key_hash(key.as_bytes()) as u128 * slots as u128) >> 64) as u32;
            let owners = hrw_row(&ids, &weights, row, 2);
            primaries[owners[0]] += 1;
            // Meta's lookup answers from the same table.
            let lookup = cluster.meta.lookup(&LookupRequest { key: key.clone(), candidate: None }).await.unwrap();
            let want: Vec<String> = owners.iter().map(|&o| ids[o].to_string()).collect();
            assert_eq!(lookup.active.as_ref(), Some(&want), "{key}: row {row}");
            // A write through the proxy lands on exactly those nodes.
            let put = http.put(format!("{proxy}/v1/keys/{key}")).body(format!("value {i}")).send().await.unwrap();
            assert!(put.status().is_success(), "PUT {key}: {}", put.status());
            for (n, node) in cluster.nodes.iter().enumerate() {
                let got = http.get(format!("{}/v1/keys/{key}", node.addr)).send().await.unwrap().status().as_u16();
                let expected = if owners.contains(&n) { 200 } else { 404 };
                assert_eq!(got, expected, "{key} (row {row}, owners {owners:?}) on node {n}");
            }
        }
        // Weighted: the node of weight 2 is the primary of the most keys.
        assert!(primaries[1] > primaries[0] && primaries[1] > primaries[2], "{primaries:?}");
        cluster.shutdown().await;
    });
}
