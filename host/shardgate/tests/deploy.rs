//! Deployment files as a user meets them: every example in `config/`
//! passes `config check`, every bad fixture fails with its expected
//! one-line error, the one-host version of the three-host cluster
//! starts as three separate `shardgate serve` processes and serves a key,
//! and a deployment with `meta.tls` is driven by `ctl --ca-cert` and
//! followed by a proxy through `proxy.meta_ca`.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{free_port, repo, shardgate, text};

#[test]
fn every_example_deployment_file_passes_check() {
    let mut files = vec![repo().join("config/dev.toml")];
    for dir in ["config/cluster", "config/local"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    assert!(files.len() >= 7);
    for f in files {
        let out = shardgate().args(["config", "check"]).arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), text(&out.stderr));
        assert!(text(&out.stdout).contains(": ok (version 1, roles: meta, node"), "{}", text(&out.stdout));
    }
}

#[test]
fn every_bad_fixture_fails_with_its_expected_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let body = std::fs::read_to_string(&path).unwrap();
        let expect = body.lines().next().unwrap().strip_prefix("# expect: ").expect("first line: # expect: ...");
        // Run from the fixture directory so the file name is relative.
        let out = shardgate().current_dir(&dir).args(["config", "check"]).arg(path.file_name().unwrap()).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expect), "{}: expected {expect:?} in {stderr:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 10);
}

#[test]
fn a_missing_file_and_a_port_in_use_are_one_line_errors() {
    let out = shardgate().args(["serve", "--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent.toml"), "{}", text(&out.stderr));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, format!("version = 1\n[node]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = shardgate().args(["serve", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port} for [node]")), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

/// Child processes killed when the test ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ctl(meta: &str, args: &[&str]) -> Output {
    ctl_with(meta, &[], args)
}

fn ctl_with(meta: &str, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut command = shardgate();
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.args(["ctl", "--meta", meta, "--timeout", "10s"]).args(args).output().unwrap();
    assert!(out.status.success(), "ctl {args:?}: {}", text(&out.stderr));
    out
}

fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let client = shardgate_tls::blocking_http_client_system_roots().timeout(Duration::from_secs(5)).no_proxy().build().unwrap();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    match req.send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn the_one_host_cluster_example_starts_as_three_processes_and_serves_a_key() {
    let data = tempfile::tempdir().unwrap();
    let mut procs = Processes(vec![]);
    for i in 1..=3 {
        let log = std::fs::File::create(data.path().join(format!("host-{i}.log"))).unwrap();
        procs.0.push(
            shardgate()
                .args(["serve", "--config"])
                .arg(repo().join(format!("config/local/host-{i}.toml")))
                // The file as shipped, but data in a fresh directory.
                .env("SHARDGATE_META__DATA_DIR", data.path().join(format!("meta-{i}")))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let meta = "http://127.0.0.1:7111,http://127.0.0.1:7112,http://127.0.0.1:7113";
    ctl(meta, &["nodes", "add", "node-1", "http://127.0.0.1:7211"]);
    ctl(meta, &["nodes", "add", "node-2", "http://127.0.0.1:7212"]);
    ctl(meta, &["nodes", "add", "node-3", "http://127.0.0.1:7213"]);
    ctl(meta, &["strategy", "upload", "rendezvous"]);
    ctl(
        meta,
        &["strategy", "activate", "rendezvous", "--replicas", "2", "--wait", "--proxy", "http://127.0.0.1:7011,http://127.0.0.1:7012"],
    );
    let (status, body) = http("PUT", "http://127.0.0.1:7011/v1/keys/greeting", Some("hello from host 1"));
    assert!(status == 201 || status == 204, "PUT: {status} {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http("GET", "http://127.0.0.1:7012/v1/keys/greeting", None);
        if status == 200 {
            assert_eq!(body, "hello from host 1");
            break;
        }
        assert!(Instant::now() < deadline, "GET through the other proxy: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = ctl(meta, &["status", "--proxy", "http://127.0.0.1:7011,http://127.0.0.1:7012"]);
    let report = text(&status.stdout);
    assert!(report.contains("strategy   rendezvous") && !report.contains("behind"), "{report}");
}

#[test]
fn a_meta_tls_deployment_is_driven_by_ctl_ca_cert_and_followed_by_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    // A CA (meta-ca.pem) and a certificate for 127.0.0.1 it signed
    // (meta-cert.pem, meta-key.pem).
    let ca = shardgate_testkit::TestCa::new(dir.path(), "meta");
    ca.leaf_for("meta", &["127.0.0.1"]);

    let (meta_port, node_port, proxy_port) = (free_port(), free_port(), free_port());
    let file = path("tls.toml");
    std::fs::write(
        &file,
        format!(
            r#"version = 1
[meta]
id = 1
listen = "127.0.0.1:{meta_port}"
data_dir = "{data}"
members = [{{ id = 1, addr = "https://127.0.0.1:{meta_port}" }}]
tls = {{ cert = "{cert}", key = "{key}" }}
[node]
listen = "127.0.0.1:{node_port}"
[proxy]
listen = "127.0.0.1:{proxy_port}"
meta = ["https://127.0.0.1:{meta_port}"]
meta_ca = "{ca}"
"#,
            data = path("meta").display(),
            cert = path("meta-cert.pem").display(),
            key = path("meta-key.pem").display(),
            ca = path("meta-ca.pem").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(path("serve.log")).unwrap();
    let _procs = Processes(vec![
        shardgate()
            .args(["serve", "--config"])
            .arg(&file)
            // meta.tls.ca through the environment, like any other key.
            .env("SHARDGATE_META__TLS__CA", path("meta-ca.pem"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ]);
    let meta = format!("https://127.0.0.1:{meta_port}");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let ca_cert = path("meta-ca.pem");
    ctl(&meta, &["--ca-cert", ca_cert.to_str().unwrap(), "nodes", "add", "node-1", &format!("http://127.0.0.1:{node_port}")]);
    // Without the CA: a one-line error naming the certificate problem.
    let out = shardgate().args(["ctl", "--meta", &meta, "--timeout", "2s", "nodes", "list"]).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && stderr.contains("UnknownIssuer") && stderr.lines().count() == 1, "{stderr}");
    // SHARDGATE_CA_CERT works like --ca-cert.
    let env = [("SHARDGATE_CA_CERT", ca_cert.as_path())];
    ctl_with(&meta, &env, &["strategy", "upload", "rendezvous"]);
    ctl_with(&meta, &env, &["strategy", "activate", "rendezvous", "--wait", "--proxy", &proxy]);
    let (status, body) = http("PUT", &format!("{proxy}/v1/keys/tls"), Some("routed by a strategy fetched over TLS"));
    assert!(status == 201 || status == 204, "PUT: {status} {body}");
    let (status, body) = http("GET", &format!("{proxy}/v1/keys/tls"), None);
    assert_eq!((status, body.as_str()), (200, "routed by a strategy fetched over TLS"));
    let report = text(&ctl_with(&meta, &env, &["status", "--proxy", &proxy]).stdout);
    assert!(report.contains(&format!("https://127.0.0.1:{meta_port}")) && !report.contains("behind"), "{report}");
}
