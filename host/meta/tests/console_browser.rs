//! The operator console (`/ui`) in a real browser: headless Chromium from
//! Debian (`chromium`, `chromium-driver`) driven by Selenium (PyPI) through
//! `tests/console/drive.py`, against a real local cluster (three meta
//! members with `meta.admin_token`, three cache nodes, one proxy following
//! meta), the page served by a follower so every write is forwarded.
//!
//! The script checks, in the browser: the page loads with no console
//! errors; the members (with the leader) and the three nodes are shown; an
//! action without the token is refused and meta's refusal shown; a
//! component uploads through the file picker; a preview chart renders; the
//! activation shows the new epoch and the proxy converged on it; history
//! and key lookup answer; a rollback, confirmed in the dialog, shows its
//! epoch. This test then checks through the API that the
//! refused action changed nothing and the activation happened. Screenshots
//! of each view: `target/ui-screenshots/` (or `SHARDGATE_UI_SCREENSHOTS`).
//!
//! When Chromium, chromedriver or Selenium is missing the test writes
//! `SKIPPED: <test>: <reason>` to stderr and passes, unless
//! `SHARDGATE_REQUIRE_BROWSER=1` (set by `.ci/test`; `.ci/run` installs
//! them), which makes it fail instead. The Python that has Selenium:
//! `SHARDGATE_BROWSER_PYTHON`, else the virtual environments `.ci/run`
//! makes (`/opt/shardgate-selenium`, `~/.cache/shardgate-selenium`), else
//! `python3`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, Change, NodeState};
use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

const TOKEN: &str = "console-test-token";
/// Wall-clock bound of the browser run.
const MAX_SECONDS: u64 = 240;

fn python_candidates() -> Vec<String> {
    if let Ok(p) = std::env::var("SHARDGATE_BROWSER_PYTHON") {
        return vec![p];
    }
    let mut out = vec!["/opt/shardgate-selenium/bin/python".to_string()];
    if let Ok(home) = std::env::var("HOME") {
        out.push(format!("{home}/.cache/shardgate-selenium/bin/python"));
    }
    out.push("python3".into());
    out
}

/// The Python with Selenium, or `None` after writing the SKIPPED line
/// (panics instead with `SHARDGATE_REQUIRE_BROWSER=1`).
fn browser_or_skip(test: &str) -> Option<String> {
    let mut missing = Vec::new();
    for (program, what) in
        [("chromium", "chromium (apt-get install chromium)"), ("chromedriver", "chromedriver (apt-get install chromium-driver)")]
    {
        if !Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success()) {
            missing.push(what.to_string());
        }
    }
    let python = python_candidates()
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import selenium"]).output().is_ok_and(|o| o.status.success()));
    if python.is_none() {
        missing.push("selenium for python3 (pip install selenium in a venv)".into());
    }
    if missing.is_empty() {
        return python;
    }
    let reason = format!("not found: {}", missing.join(", "));
    if std::env::var("SHARDGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{test}: {reason}; SHARDGATE_REQUIRE_BROWSER=1 requires them (.ci/run installs them)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    None
}

fn screenshot_dir() -> PathBuf {
    match std::env::var("SHARDGATE_UI_SCREENSHOTS") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    let test = "console_in_headless_chromium";
    let Some(python) = browser_or_skip(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(3, 3, 1, dir.path());
    spec.meta.admin_token = Some(TOKEN.into());
    let cluster = LocalCluster::start(spec).await.unwrap();
    let admin =
        MetaClient::new(cluster.metas.iter().map(|m| m.addr.clone()).collect()).with_token(TOKEN).with_retry_for(Duration::from_secs(20));
    let changes = cluster
        .nodes
        .iter()
        .map(|n| Change::AddNode { id: n.id.clone(), addr: n.addr.clone(), weight: 1.0, zone: String::new() })
        .collect();
    admin.apply(changes).await.unwrap();
    let rendezvous = admin.upload_strategy(shardgate_builtins::builtin("rendezvous").unwrap().component.to_vec()).await.unwrap();
    let receipt = admin.activate(&rendezvous.hash, &Activation { config: String::new(), replicas: 2 }).await.unwrap();
    cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.unwrap();

    // The page from a follower: every write it sends is forwarded.
    let status = admin.status().await.unwrap();
    let leader = status.leader.unwrap();
    let follower = cluster.metas.iter().enumerate().find(|(i, _)| *i as u64 + 1 != leader).map(|(_, m)| m.addr.clone()).unwrap();
    let component = dir.path().join("jump.wasm");
    std::fs::write(&component, shardgate_builtins::builtin("jump").unwrap().component).unwrap();
    let out = screenshot_dir();

    let mut child = tokio::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/drive.py"))
        .args(["--url", &follower, "--token", TOKEN, "--candidate", "jump", "--members", "3", "--nodes", "3"])
        .arg("--out")
        .arg(&out)
        .arg("--component")
        .arg(&component)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s).await.unwrap();
        s
    };
    let (so, se) = (tokio::spawn(read(Box::new(stdout))), tokio::spawn(read(Box::new(stderr))));
    let status = match tokio::time::timeout(Duration::from_secs(MAX_SECONDS), child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            panic!("the browser run took over {MAX_SECONDS}s; stderr: {}", se.await.unwrap());
        }
    };
    let (stdout, stderr) = (so.await.unwrap(), se.await.unwrap());
    assert!(status.success(), "drive.py failed ({status}); screenshots in {}\nstdout: {stdout}\nstderr: {stderr}", out.display());
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("drive.py printed no JSON line ({e}): {stdout}"));

    // What the browser showed is what the cluster holds: jump activated at
    // `epoch` (its moved share noted), then rendezvous again by the rollback.
    let routing = admin.routing().await.unwrap();
    assert_eq!(routing.strategy.as_ref().map(|s| s.name.as_str()), Some("rendezvous"));
    assert_eq!(report["rollback_epoch"].as_u64(), Some(routing.epoch), "{report}");
    let history = admin.history().await.unwrap();
    let activated = history.iter().find(|h| Some(h.epoch) == report["epoch"].as_u64()).unwrap();
    let jump = admin.strategies().await.unwrap().into_iter().find(|s| s.name == "jump").unwrap();
    assert_eq!(activated.hash, jump.hash);
    let shown = format!("{:.1}%", activated.moved_share.unwrap() * 100.0);
    assert_eq!(report["moved"].as_str(), Some(shown.as_str()), "{report}");
    let refused = report["refused_node"].as_str().unwrap();
    let node = routing.nodes.iter().find(|n| n.id == refused).unwrap();
    assert_eq!(node.state, NodeState::Active, "the refused drain changed {refused}");
    cluster.wait_for_epoch(routing.epoch, Duration::from_secs(30)).await.unwrap();
    for shot in ["cluster", "cluster-refused", "strategies", "preview", "proxies", "history", "lookup", "history-rollback"] {
        assert!(out.join(format!("{shot}.png")).is_file(), "no screenshot {shot}.png in {}", out.display());
    }
    eprintln!("screenshots of each view: {}", out.display());
    cluster.shutdown().await;
}
