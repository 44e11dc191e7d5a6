//! `shardgate meta recover` as an operator meets it: the real binary on a
//! real member's data directory (the recovery of a stuck cluster itself is
//! driven in `host/meta/tests/membership.rs`): refusals that say what to
//! do, `--dry-run` writing nothing, and a member that is already alone left
//! alone.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{Running, free_port, shardgate, text};

fn recover(args: &[&str]) -> Output {
    shardgate().args(["meta", "recover"]).args(args).output().unwrap()
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn meta_recover_refuses_what_it_cannot_do_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("meta-1");

    // No data: a clear refusal.
    let out = recover(&["--id", "1", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no meta data in"), "{}", text(&out.stderr));

    // A one-member cluster, bootstrapped by a real process.
    let port = free_port();
    let config = dir.path().join("meta.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[meta]\nid = 1\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nmembers = [{{ id = 1, addr = \"http://127.0.0.1:{port}\" }}]\n",
            data.display()
        ),
    )
    .unwrap();
    let mut member =
        Running(shardgate().args(["meta", "--config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let http = shardgate_tls::blocking_http_client_system_roots().timeout(Duration::from_secs(2)).no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leads = http
            .get(format!("http://127.0.0.1:{port}/v1/raft/status"))
            .send()
            .ok()
            .and_then(|r| r.text().ok())
            .is_some_and(|body| body.contains("\"state\":\"leader\""));
        if leads {
            break;
        }
        assert!(Instant::now() < deadline, "the member never led its one-member cluster");
        std::thread::sleep(Duration::from_millis(50));
    }

    // While it runs, the database is not touched.
    let out = recover(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("stop it first"), "{}", text(&out.stderr));

    // Stopped as an operator would (SIGTERM: a clean shutdown).
    let pid = member.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let _ = member.0.wait();
    let db = data.join("meta.redb");

    // Another id: refused, naming the members.
    let out = recover(&["--config", config.to_str().unwrap(), "--id", "9"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("member 9 is not in the membership"), "{}", text(&out.stderr));

    // Already the only voter: nothing to do; a dry run works on a copy.
    let before = bytes(&db);
    let out = recover(&["--config", config.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to do"), "{}", text(&out.stdout));
    assert!(bytes(&db) == before, "--dry-run changed meta.redb");
    let out = recover(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to do: member 1 already is the only voter"), "{}", text(&out.stdout));
}
