//! Schemathesis (`schemathesis run --checks all`, from PyPI) against the
//! OpenAPI document each role serves at `/openapi.json`, on a real local
//! cluster: one meta member, three cache nodes and one proxy, each on a
//! `127.0.0.1:0` listener, `rendezvous` active. It ends with 0 failures or
//! the test fails with schemathesis's own report (which prints a `curl`
//! reproduction of every failure).
//!
//! Run it alone with `cargo test -p shardgate --test schemathesis --
//! --nocapture` (the output shows each role's summary). Knobs for
//! iterating on a document: `SHARDGATE_SCHEMATHESIS_EXAMPLES` (default
//! [`EXAMPLES`] per operation) and `SHARDGATE_SCHEMATHESIS_ARGS` (more
//! arguments for every run, split at spaces, e.g. `--include-operation-id
//! putKey`; CI sets neither). Settings and generation filters, each with
//! the rule of the documents it encodes: `tests/schemathesis/schemathesis.toml`
//! and `tests/schemathesis/hooks.py`.
//!
//! The run is deterministic (`--generation-deterministic`: no random seed,
//! no example database; one worker) and bounded: [`EXAMPLES`] examples per
//! operation and phase, and a run is killed after [`MAX_SECONDS`].
//!
//! What schemathesis cannot exercise is covered elsewhere, and the
//! settings file says so where it turns an operation off:
//! - the binary batch format (`application/vnd.shardgate.batch`) and
//!   strategy uploads (`application/wasm`): schemathesis has no serializer
//!   for either, so `batchGet`, `batchPut` and `uploadStrategy` are not
//!   generated; the key-API property suite (`host/testkit/src/key_api`, run
//!   against node and proxy), the batch codec's tests and meta's tests
//!   cover them.
//!
//! `GET /v1/watch` is an endless `text/event-stream`: schemathesis reads at
//! most two events (or until a short timeout) and checks each against the
//! per-event schema.
//!
//! Meta runs in two passes on the same single-member cluster: first the
//! JSON API (membership operations included: removing the last voter is a
//! 409, an unknown id a 404), then the Raft RPCs (`/raft/*`), which may move
//! the member's term and make it step down for an election; after them the
//! member must still lead and commit a write, so a message that killed its
//! Raft core fails the test even where the answer looked fine.
//!
//! When schemathesis is not on PATH the test writes `SKIPPED: <test>:
//! schemathesis not on PATH` to stderr and passes, unless
//! `SHARDGATE_REQUIRE_SCHEMATHESIS=1` (set by `.ci/test`; `.ci/run`
//! installs it), which makes it fail instead.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shardgate_meta_client::model::NewNode;
use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

/// The schemathesis executable (override with `SCHEMATHESIS`).
fn program() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

/// Examples per operation and generation phase.
const EXAMPLES: u32 = 25;
/// Wall-clock bound of one run (a role's run takes 10 to 40 s here).
const MAX_SECONDS: u64 = 240;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `Some(version)` when schemathesis runs; `None` after writing the SKIPPED
/// line (or panics when `SHARDGATE_REQUIRE_SCHEMATHESIS=1`).
fn schemathesis_or_skip(test: &str) -> Option<String> {
    let found = Command::new(program()).arg("--version").output();
    match found {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        other => {
            let reason = match other {
                Ok(out) => format!("`{} --version` failed: {}", program(), String::from_utf8_lossy(&out.stderr).trim()),
                Err(_) => "schemathesis not on PATH".to_string(),
            };
            if std::env::var("SHARDGATE_REQUIRE_SCHEMATHESIS").as_deref() == Ok("1") {
                panic!("{test}: {reason}; SHARDGATE_REQUIRE_SCHEMATHESIS=1 requires it (pip install schemathesis==4.32.5)");
            }
            // Straight to stderr, past libtest's capture.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
            None
        }
    }
}

/// One role's run: (passed, schemathesis's output). Killed (and failed)
/// after [`MAX_SECONDS`].
fn run_schemathesis(role: &str, base: &str, work: &Path, extra: &[&str]) -> (bool, String) {
    let examples = env_or("SHARDGATE_SCHEMATHESIS_EXAMPLES", EXAMPLES);
    let dir = work.join(role);
    std::fs::create_dir_all(&dir).unwrap();
    // Files, not pipes: a full pipe would stall schemathesis while this
    // thread waits for it.
    let out_path = dir.join("output.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let started = Instant::now();
    let mut child = Command::new(program())
        // Its reports stay in the temporary directory.
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        // hooks.py, named by schemathesis.toml.
        .env("PYTHONPATH", &settings)
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples.to_string()])
        .arg("--generation-deterministic")
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--wait-for-schema", "10"])
        .arg("--no-color")
        .args(extra)
        .args(std::env::var("SHARDGATE_SCHEMATHESIS_ARGS").unwrap_or_default().split_whitespace())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("schemathesis starts");
    let deadline = started + Duration::from_secs(MAX_SECONDS);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let verdict = match status {
        Some(status) => format!("exit {:?}", status.code()),
        None => format!("KILLED after {MAX_SECONDS}s"),
    };
    let text = format!(
        "==== schemathesis against the {role} ({base}, {:.1}s, {verdict})\n{}",
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string(&out_path).unwrap_or_default()
    );
    (status.is_some_and(|s| s.success()), text)
}

#[test]
fn every_role_conforms_to_its_openapi_document_under_schemathesis() {
    let test = "every_role_conforms_to_its_openapi_document_under_schemathesis";
    let Some(version) = schemathesis_or_skip(test) else { return };
    println!("{version}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = runtime.block_on(async {
        let spec = ClusterSpec::new(1, 3, 1, dir.path().join("cluster"));
        let cluster = LocalCluster::start(spec).await.expect("cluster starts");
        cluster.register_nodes().await.expect("nodes registered");
        let receipt = cluster.activate_builtin("rendezvous", "", 2).await.expect("rendezvous active");
        cluster.wait_for_epoch(receipt.epoch, Duration::from_secs(30)).await.expect("the proxy routes");
        cluster
    });

    // The cluster's tasks run on the runtime's worker threads while this
    // thread waits for schemathesis.
    let work = dir.path().join("schemathesis");
    let runs: [(&str, String, &[&str]); 4] = [
        ("node", cluster.nodes[0].addr.clone(), &[]),
        ("proxy", cluster.proxies[0].addr.clone(), &[]),
        // Last: it changes the membership and the routing.
        ("meta", cluster.metas[0].addr.clone(), &["--exclude-tag", "raft (internal)"]),
        ("meta-raft", cluster.metas[0].addr.clone(), &["--include-tag", "raft (internal)"]),
    ];
    let mut failed = Vec::new();
    for (role, base, extra) in &runs {
        let (ok, report) = run_schemathesis(role, base, &work, extra);
        println!("{report}");
        if !ok {
            failed.push(report);
        }
    }
    // The Raft RPCs must not have broken the member: it leads again (after
    // at most an election) and commits a write.
    let alive = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = NewNode { id: "after-schemathesis".into(), addr: "http://127.0.0.1:1".into(), weight: 1.0, zone: String::new() };
            let outcome = cluster.meta.add_node(&probe).await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    if let Err(e) = alive {
        failed.push(format!("after the Raft RPCs the meta member no longer commits a write within 20s: {e}"));
    }
    runtime.block_on(cluster.shutdown());
    assert!(failed.is_empty(), "schemathesis found failures:\n{}", failed.join("\n"));
}
