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
//! [`EXAMPLES`] per operation). Settings and generation filters, each with
//! the rule of the documents it encodes: `tests/schemathesis/schemathesis.toml`
//! and `tests/schemathesis/hooks.py`.
//!
//! The run is deterministic (`--generation-deterministic`: no random seed,
//! no example database; one worker) and bounded: [`EXAMPLES`] examples per
//! operation and phase, `--max-time` per role.
//!
//! What schemathesis cannot exercise is covered elsewhere:
//! - the binary batch format (`application/vnd.shardgate.batch`) and
//!   strategy uploads (`application/wasm`): schemathesis cannot generate
//!   those bodies, so it only sends what it can (wrong bodies, which must
//!   be refused as documented); the property tests of the key-API suite
//!   (`host/testkit/src/key_api`) and meta's hostile tests cover them.
//! - `GET /v1/watch` is an endless `text/event-stream`: a tool that reads
//!   the whole answer can only time out on it, so it is excluded here by
//!   operation id (`watchRouting`) and its event format is checked against
//!   the document by `host/meta/tests/openapi.rs`
//!   (`the_watch_stream_matches_the_document`).
//!
//! Nothing else is excluded: the membership operations (remove, promote,
//! add learner) run against a single-member meta cluster, where removing
//! the last voter is refused (409) and an unknown id is a 404, and the Raft
//! RPCs run last, on a cluster nothing else uses afterwards.
//!
//! When schemathesis is not on PATH the test writes `SKIPPED: <test>:
//! schemathesis not on PATH` to stderr and passes, unless
//! `SHARDGATE_REQUIRE_SCHEMATHESIS=1` (set by `.ci/test`; `.ci/run`
//! installs it), which makes it fail instead.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shardgate_testkit::cluster::{ClusterSpec, LocalCluster};

/// The schemathesis executable (override with `SCHEMATHESIS`).
fn program() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

/// Examples per operation and generation phase.
const EXAMPLES: u32 = 25;
/// Time budget of one role's run, in seconds.
const MAX_TIME: u32 = 90;

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

/// One role's run: (passed, schemathesis's output).
fn run_schemathesis(role: &str, base: &str, work: &Path, extra: &[&str]) -> (bool, String) {
    let examples = env_or("SHARDGATE_SCHEMATHESIS_EXAMPLES", EXAMPLES);
    let dir = work.join(role);
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let out = Command::new(program())
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
        .args(["--max-time", &MAX_TIME.to_string()])
        .args(["--request-timeout", "10"])
        .args(["--wait-for-schema", "10"])
        .arg("--no-color")
        .args(extra)
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "==== schemathesis against the {role} ({base}, {:.1}s, exit {:?})\n{}{}",
        started.elapsed().as_secs_f64(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
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
    let runs = [
        ("node", cluster.nodes[0].addr.clone(), vec![]),
        ("proxy", cluster.proxies[0].addr.clone(), vec![]),
        // Last: it changes the membership and the routing, and its Raft
        // RPCs may make the member step down for an election timeout.
        ("meta", cluster.metas[0].addr.clone(), vec!["--exclude-operation-id", "watchRouting"]),
    ];
    let mut failed = Vec::new();
    for (role, base, extra) in &runs {
        let (ok, report) = run_schemathesis(role, base, &work, extra);
        println!("{report}");
        if !ok {
            failed.push(report);
        }
    }
    runtime.block_on(cluster.shutdown());
    assert!(failed.is_empty(), "schemathesis found failures:\n{}", failed.join("\n"));
}
