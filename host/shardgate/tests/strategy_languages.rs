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
//! When componentize-py is not on PATH (or `COMPONENTIZE_PY` names it) the
//! test writes `SKIPPED: <test>: <reason>` to stderr and passes, unless
//! `SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS=1` (set by `.ci/test`; `.ci/run`
//! installs the toolchains), which makes it fail instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shardgate_meta_client::model::Activation;
use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tool `program` (overridden by the environment variable `var`), or
/// why the test cannot run.
fn toolchain(test: &str, var: &str, program: &str) -> Option<String> {
    let program = std::env::var(var).unwrap_or_else(|_| program.to_string());
    if Command::new(&program).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(program);
    }
    let reason = format!("{program} not on PATH (set {var} or install it: see .ci/run)");
    if std::env::var("SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason}, and SHARDGATE_REQUIRE_STRATEGY_TOOLCHAINS=1");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    None
}

fn shardgate(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardgate")).args(args).env("XDG_CACHE_HOME", cache).output().expect("run shardgate")
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
