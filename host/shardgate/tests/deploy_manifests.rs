//! The deployment manifests (issue 14): `config/k8s/shardgate.yaml` must
//! validate against the Kubernetes schemas (`kubernetes-validate --strict`,
//! from PyPI) and stay in step with the compose cluster
//! (`config/compose/`): the same role files (up to the meta members' host
//! names), every role file accepted by `shardgate config check` with the
//! environment its container gets, the same ports, image and strategy setup
//! commands, and `/readyz` / `/healthz` probes on every role.
//!
//! The schema check needs `kubernetes-validate` on PATH (`.ci/run`
//! installs it in a virtual environment); without it that test prints
//! `SKIPPED: ...` and passes, unless `SHARDGATE_REQUIRE_KUBERNETES_VALIDATE=1`
//! (`.ci/test` sets it), when it fails. The consistency checks need nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

#[path = "support/process.rs"]
mod process;
use process::{repo, shardgate};

fn k8s_file() -> PathBuf {
    repo().join("config/k8s/shardgate.yaml")
}

fn k8s_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(k8s_file()).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

use serde::Deserialize;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("config/compose/compose.yaml")).unwrap();
    let mut v: Value = serde_yaml_ng::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    // Merge keys nested one level down (`environment: {<<: *meta-env}`).
    if let Some(services) = v.get_mut("services").and_then(|s| s.as_mapping_mut()) {
        for (_, s) in services.iter_mut() {
            s.apply_merge().unwrap();
            if let Some(env) = s.get_mut("environment") {
                env.apply_merge().unwrap();
            }
        }
    }
    v
}

fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{kind}/{name} missing from {}", k8s_file().display()))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    let spec = &workload["spec"]["template"]["spec"];
    spec["containers"]
        .as_sequence()
        .into_iter()
        .chain(spec["initContainers"].as_sequence())
        .flatten()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("container {name} missing"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| format!("{s:?}")))
        .collect()
}

/// The container's environment, with `$(VAR)` references to the pod's
/// fields replaced by example values.
fn k8s_env(c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => "shardgate-meta-1".to_string(),
                Some("status.podIP") => "10.0.0.7".to_string(),
                other => panic!("unexpected env source {other:?}"),
            },
        };
        env.insert(name, value);
    }
    let resolved: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            for (name, value) in &env {
                v = v.replace(&format!("$({name})"), value);
            }
            (k.clone(), v)
        })
        .collect();
    resolved
}

/// `shardgate config check` of `text` with `env` (and nothing else of ours).
fn config_check(text: &str, env: &BTreeMap<String, String>, what: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardgate.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = shardgate();
    cmd.args(["config", "check"]).arg(&path);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHARDGATE_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env.iter().filter(|(k, _)| k.contains("__")) {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{what}: shardgate config check failed: {out}");
    out
}

/// A role file with the meta members' addresses written the compose way.
fn normalized(text: &str) -> toml::Table {
    let mut text = text.to_string();
    for i in 0..3 {
        text = text.replace(&format!("http://shardgate-meta-{i}.shardgate-meta:7101"), &format!("http://meta-{}:7101", i + 1));
    }
    toml::from_str(&text).unwrap()
}

#[test]
fn k8s_role_files_match_compose_and_pass_config_check() {
    let docs = k8s_docs();
    let config = doc(&docs, "ConfigMap", "shardgate-config");
    for role in ["meta", "node", "proxy"] {
        let file = format!("{role}.toml");
        let k8s = config["data"][file.as_str()].as_str().unwrap_or_else(|| panic!("ConfigMap has no {file}"));
        let compose_text = std::fs::read_to_string(repo().join("config/compose").join(&file)).unwrap();
        assert_eq!(normalized(k8s), normalized(&compose_text), "{file}: the Kubernetes ConfigMap and config/compose/{file} differ");
    }

    // Every role file passes `config check` with its container's environment.
    let compose = compose();
    let services = &compose["services"];
    for (service, file) in [("meta-2", "meta.toml"), ("node", "node.toml"), ("proxy-1", "proxy.toml")] {
        let env: BTreeMap<String, String> = services[service]["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(env.get("SHARDGATE_CONFIG").map(String::as_str), Some(format!("/etc/shardgate/{file}").as_str()));
        let text = std::fs::read_to_string(repo().join("config/compose").join(file)).unwrap();
        config_check(&text, &env, &format!("compose {service}"));
    }
    for (kind, name, c, file) in [
        ("StatefulSet", "shardgate-meta", "meta", "meta.toml"),
        ("Deployment", "shardgate-node", "node", "node.toml"),
        ("Deployment", "shardgate-proxy", "proxy", "proxy.toml"),
    ] {
        let c = container(doc(&docs, kind, name), c);
        let env = k8s_env(c);
        assert_eq!(env.get("SHARDGATE_CONFIG").map(String::as_str), Some(format!("/etc/shardgate/{file}").as_str()));
        let out = config_check(config["data"][file].as_str().unwrap(), &env, name);
        assert!(out.contains("ok"), "{out}");
    }
}

#[test]
fn meta_pods_find_their_raft_id_from_the_pod_name() {
    // Pods shardgate-meta-0..2 are found in members (the test above checks
    // shardgate-meta-1 with `config check`); a pod name members does not
    // list (a fourth replica) is refused, naming meta.id and the address.
    let docs = k8s_docs();
    let config = doc(&docs, "ConfigMap", "shardgate-config");
    let text = config["data"]["meta.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.toml");
    std::fs::write(&path, text).unwrap();
    let o = shardgate()
        .args(["config", "check"])
        .arg(&path)
        .env("SHARDGATE_META__ADVERTISE", "http://shardgate-meta-3.shardgate-meta:7101")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("meta.id") && err.contains("shardgate-meta-3"), "{err}");
}

#[test]
fn k8s_ports_probes_image_and_setup_match_compose() {
    let docs = k8s_docs();
    let compose = compose();
    let services = &compose["services"];
    let image = services["proxy-1"]["image"].as_str().unwrap();
    let default_image = image.trim_start_matches("${SHARDGATE_IMAGE:-").trim_end_matches('}');
    for (kind, name, c, port) in [
        ("StatefulSet", "shardgate-meta", "meta", 7101),
        ("Deployment", "shardgate-node", "node", 7100),
        ("Deployment", "shardgate-proxy", "proxy", 7000),
    ] {
        let c = container(doc(&docs, kind, name), c);
        assert_eq!(c["image"].as_str(), Some(default_image), "{name}: image");
        assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port), "{name}: port");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{name}: readiness");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{name}: liveness");
        assert!(c["resources"]["requests"]["cpu"].as_str().is_some(), "{name}: resource requests");
    }
    for (service, port) in [("meta-1", 7101), ("proxy-1", 7000), ("proxy-2", 7000)] {
        let published = strings(&services[service]["ports"]);
        assert!(published[0].ends_with(&format!(":{port}")), "{service}: {published:?}");
    }
    // The strategy setup: the same ctl commands.
    let job = doc(&docs, "Job", "shardgate-strategies");
    assert_eq!(strings(&container(job, "upload")["args"]), strings(&services["strategies"]["command"]));
    assert_eq!(strings(&container(job, "activate")["args"]), strings(&services["activate"]["command"]));
    // The meta StatefulSet: ordinal -> id through members, stable names, a volume.
    let meta = doc(&docs, "StatefulSet", "shardgate-meta");
    assert_eq!(meta["spec"]["serviceName"].as_str(), Some("shardgate-meta"));
    assert_eq!(meta["spec"]["replicas"].as_u64(), Some(3));
    assert_eq!(doc(&docs, "Service", "shardgate-meta")["spec"]["clusterIP"].as_str(), Some("None"));
    assert!(meta["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].as_str().is_some());
}

fn kubernetes_validate() -> Option<String> {
    let found = Command::new("kubernetes-validate").arg("--version").output().ok().filter(|o| o.status.success());
    if found.is_some() {
        return Some("kubernetes-validate".to_string());
    }
    let reason = "kubernetes-validate is not on PATH (pip install kubernetes-validate; .ci/run does)";
    if std::env::var("SHARDGATE_REQUIRE_KUBERNETES_VALIDATE").as_deref() == Ok("1") {
        panic!("{reason} (SHARDGATE_REQUIRE_KUBERNETES_VALIDATE=1)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: k8s_manifests_validate_against_the_kubernetes_schemas: {reason}");
    None
}

fn validate(tool: &str, file: &Path) -> (bool, String) {
    // The oldest Kubernetes still supported when this was written, and the
    // newest the tool knows.
    let mut out = String::new();
    let mut ok = true;
    for version in ["1.30.0", "latest"] {
        let mut cmd = Command::new(tool);
        cmd.arg("--strict");
        if version != "latest" {
            cmd.args(["-k", version]);
        }
        let o = cmd.arg(file).output().unwrap();
        ok &= o.status.success();
        out.push_str(&String::from_utf8_lossy(&o.stdout));
        out.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    (ok, out)
}

#[test]
fn k8s_manifests_validate_against_the_kubernetes_schemas() {
    let Some(tool) = kubernetes_validate() else { return };
    let (ok, out) = validate(&tool, &k8s_file());
    assert!(ok, "kubernetes-validate refused {}:\n{out}", k8s_file().display());
    assert_eq!(out.matches("passed for resource").count(), 2 * k8s_docs().len(), "every resource checked: {out}");
    // The check can fail: a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(k8s_file()).unwrap();
    std::fs::write(&bad, text.replacen("readinessProbe:", "readinesProbe:", 1)).unwrap();
    let (ok, out) = validate(&tool, &bad);
    assert!(!ok, "a misspelt field passed: {out}");
}
