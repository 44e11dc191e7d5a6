//! `shardgate probe`, the health check of a shell-less container, with the
//! real binary against a real node process: ready through `--url` and
//! through a deployment file listening on 0.0.0.0 (probed on loopback);
//! not ready on a port nobody serves, naming it; a usage error without a
//! target.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{Running, free_port, shardgate, text};

fn probe(args: &[&str]) -> Output {
    shardgate().arg("probe").args(args).output().unwrap()
}

#[test]
fn probe_exits_0_for_a_ready_role_1_for_a_missing_one_and_2_without_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("version = 1\n[node]\nlisten = \"0.0.0.0:{port}\"\nmemory_limit = \"16MiB\"\n")).unwrap();
    let _node = Running(shardgate().args(["serve", "--config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = probe(&["--url", &url]);
        if out.status.success() {
            assert!(text(&out.stderr).contains(&format!("ok {url}")), "{}", text(&out.stderr));
            break;
        }
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(Instant::now() < deadline, "the node never became ready: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Through the deployment file: 0.0.0.0 is probed on loopback.
    let out = probe(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("ok http://127.0.0.1:{port}/readyz")), "{}", text(&out.stderr));

    // One target down: exit 1, naming it; the ready one is still reported.
    let down = format!("http://127.0.0.1:{}/readyz", free_port());
    let out = probe(&["--config", config.to_str().unwrap(), "--url", &down, "--timeout", "500ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("not ready {down}")), "{}", text(&out.stderr));

    // Nothing to probe: a usage error.
    let out = probe(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to probe"), "{}", text(&out.stderr));
}
