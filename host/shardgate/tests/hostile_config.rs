//! Hostile deployment files: property tests that run the real binary,
//! `shardgate config check FILE`, on random TOML-ish text, random bytes and
//! random keys and values under `[node]`, `[meta]` and `[proxy]` (and random
//! `SHARDGATE_*` environment overrides).
//!
//! Where it sits: this is the first thing `shardgate serve` does with an
//! operator's file (`src/config.rs`). A file that cannot be used must end
//! the process with exit code 2 and ONE line on stderr naming the file (and
//! the line, for anything the parser can place), never a panic (exit 101)
//! or a backtrace; a file that is fine exits 0.
//!
//! Case counts are small so `cargo test` stays quick; raise them with
//! `PROPTEST_CASES=2000 cargo test -p shardgate --test hostile_config`.

#[path = "support/process.rs"]
mod process;
use proptest::prelude::*;
use shardgate_testkit::cases;
use std::path::Path;
use std::process::Output;

/// `shardgate config check <file>` with a clean environment: no inherited
/// `SHARDGATE_*` overrides or log filters, backtraces on (so a panic would
/// show one), plus `env`.
fn check(file: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = process::shardgate();
    cmd.args(["config", "check"]).arg(file);
    for (var, _) in std::env::vars() {
        if var.starts_with("SHARDGATE_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    cmd.env("RUST_BACKTRACE", "1");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("run shardgate")
}

/// What a property needs to know about one run.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    file: String,
}

fn run_on(contents: &[u8], env: &[(String, String)]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.toml");
    std::fs::write(&path, contents).unwrap();
    let out = check(&path, env);
    Outcome { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned(), file: path.display().to_string() }
}

/// Exit 0, or exit 2 with one `error:` line naming the file; never a
/// panic. Returns the line number named in the error, if any.
fn assert_clean_outcome(o: &Outcome, input: &str) -> Option<usize> {
    let input: String = input.chars().take(600).collect();
    assert!(!o.stderr.contains("panicked") && !o.stderr.contains("stack backtrace"), "panic on {input:?}:\n{}", o.stderr);
    match o.code {
        Some(0) => {
            assert!(o.stderr.trim().is_empty(), "ok, but wrote to stderr for {input:?}:\n{}", o.stderr);
            None
        }
        Some(2) => {
            let lines: Vec<&str> = o.stderr.lines().collect();
            assert_eq!(lines.len(), 1, "expected one line on stderr for {input:?}, got:\n{}", o.stderr);
            let line = lines[0];
            let rest = line.strip_prefix("error: ").unwrap_or_else(|| panic!("no `error: ` prefix: {line:?} for {input:?}"));
            let rest = rest.strip_prefix("cannot read config file ").unwrap_or(rest);
            let rest = rest
                .strip_prefix(&o.file)
                .unwrap_or_else(|| panic!("error does not start with the file name {}: {line:?} for {input:?}", o.file));
            // `FILE:LINE: message`, `FILE: message` or `FILE enables no role`.
            let number = rest.strip_prefix(':').and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok());
            assert!(number != Some(0), "line 0 in {line:?}");
            number
        }
        other => panic!("exit code {other:?} (expected 0 or 2) for {input:?}:\n{}", o.stderr),
    }
}

/// Keys of the role tables (real ones, near misses and nonsense).
const NODE_KEYS: &[&str] = &[
    "listen",
    "memory_limit",
    "max_key_size",
    "max_value_size",
    "default_ttl",
    "max_ttl",
    "max_batch_keys",
    "max_batch_size",
    "max_connections",
    "header_read_timeout",
    "body_read_timeout",
    "shutdown_timeout",
    "eviction_policy",
    "memory_limt",
    "Listen",
    "",
];
const META_KEYS: &[&str] = &[
    "id",
    "listen",
    "advertise",
    "data_dir",
    "members",
    "join",
    "heartbeat_interval",
    "election_timeout",
    "snapshot_every",
    "keep_logs",
    "max_component_size",
    "write_timeout",
    "watch_heartbeat",
    "admission_sample_keys",
    "body_read_timeout",
    "max_concurrent_previews",
    "max_concurrent_admissions",
    "promotion_max_lag",
    "membership_timeout",
    "member",
    "id.x",
];
const PROXY_KEYS: &[&str] = &[
    "listen",
    "meta",
    "request_timeout",
    "connect_timeout",
    "upstream_client",
    "pool_max_idle_per_node",
    "read_retries",
    "write_ack",
    "owner_down",
    "migration_window",
    "fault_threshold",
    "max_key_size",
    "max_ttl",
    "max_batch_size",
    "max_staleness",
    "advertise",
    "nodes",
];

/// TOML values of every shape, including the edge cases of the types the
/// config uses (sizes, durations, addresses, ids, enums).
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(65535), Just(65536), Just(u32::MAX as i64 + 1), Just(i64::MAX)]
            .prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,22}(B|KiB|MiB|GiB|TiB|PiB|EiB|kb|mb|gb|XB|)".prop_map(|s| format!("\"{s}\"")),
        "[0-9]{1,22}(ns|ms|s|m|h|d|w|y|years|)".prop_map(|s| format!("\"{s}\"")),
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|localhost|\\[::1\\]|999\\.1\\.1\\.1|)(:[0-9]{0,6})?".prop_map(|s| format!("\"{s}\"")),
        "(http|https|ftp)?(://)?[a-z0-9.:]{0,20}".prop_map(|s| format!("\"{s}\"")),
        "(lru|lfu|tiny_lfu|one|quorum|all|next_owner|fail_fast|hyper|h1)".prop_map(|s| format!("\"{s}\"")),
        // Strings with escapes, control characters and non-ASCII text.
        any::<String>().prop_map(|s| toml_string(&s)),
        "\\PC{0,40}".prop_map(|s| toml_string(&s)),
        "(lru|one|next_owner|5s|1MiB)?[\r\n]{1,2}[a-z ]{0,10}".prop_map(|s| toml_string(&s)),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\"\"multi\nline\"\"\"".to_string()),
        Just("'literal\\path'".to_string()),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("(id|addr|x)", inner), 0..3).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// A basic TOML string holding `s` (escaped, so it always parses; line
/// breaks included, which once split errors over several lines).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `key = value` line of a role table.
fn entry(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    (prop::sample::select(keys), toml_value()).prop_map(|(k, v)| {
        let key = if k.is_empty() || k.contains('.') { format!("\"{k}\"") } else { k.to_string() };
        format!("{key} = {v}")
    })
}

/// A well-formed file with random tables, keys and values: mostly TOML
/// that parses, so the errors come from types and validation.
fn structured_file() -> impl Strategy<Value = String> {
    let version = prop_oneof![
        4 => Just("version = 1".to_string()),
        1 => Just(String::new()),
        1 => toml_value().prop_map(|v| format!("version = {v}")),
    ];
    let table = |name: &'static str, keys: &'static [&'static str]| {
        prop_oneof![
            2 => Just(String::new()),
            4 => proptest::collection::vec(entry(keys), 0..5).prop_map(move |e| format!("[{name}]\n{}\n", e.join("\n"))),
            1 => proptest::collection::vec(entry(keys), 0..3).prop_map(move |e| format!("[[{name}]]\n{}\n", e.join("\n"))),
            1 => toml_value().prop_map(move |v| format!("{name} = {v}\n")),
        ]
    };
    let extra = prop_oneof![
        6 => Just(String::new()),
        1 => Just("[dev]\nx = 1\n".to_string()),
        1 => Just("[node.sub]\nx = 1\n".to_string()),
        1 => Just("unknown = 3\n".to_string()),
    ];
    (version, table("node", NODE_KEYS), table("meta", META_KEYS), table("proxy", PROXY_KEYS), extra)
        .prop_map(|(v, n, m, p, x)| format!("{v}\n{x}{n}{m}{p}"))
}

/// Text made of TOML's punctuation, key names and line breaks: mostly
/// syntax errors in every position.
fn toml_ish_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("version".to_string()),
        Just("[node]".to_string()),
        Just("[meta]".to_string()),
        Just("[proxy]".to_string()),
        prop::sample::select(NODE_KEYS).prop_map(String::from),
        prop::sample::select(META_KEYS).prop_map(String::from),
        "[\\[\\]{}=\"'.,#\n\t \\\\]".prop_map(String::from),
        "[0-9a-z_-]{1,6}".prop_map(String::from),
        Just("\n".to_string()),
        Just(" = ".to_string()),
        Just("\"\"\"".to_string()),
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Random tables, keys and values: exit 0 or a one-line error naming
    /// the file; a TOML syntax error always names its line.
    #[test]
    fn random_role_tables_get_a_one_line_error(text in structured_file()) {
        let o = run_on(text.as_bytes(), &[]);
        let line = assert_clean_outcome(&o, &text);
        if let Some(line) = line {
            prop_assert!(line <= text.lines().count().max(1), "line {} of a {}-line file: {}", line, text.lines().count(), o.stderr);
        }
        if text.parse::<toml::Table>().is_err() {
            prop_assert_eq!(o.code, Some(2));
            prop_assert!(line.is_some(), "syntax error without a line: {}", o.stderr);
        }
    }

    /// Text made of TOML punctuation and key names.
    #[test]
    fn toml_ish_text_gets_a_one_line_error(text in toml_ish_text()) {
        let o = run_on(text.as_bytes(), &[]);
        let line = assert_clean_outcome(&o, &text);
        if text.parse::<toml::Table>().is_err() {
            prop_assert_eq!(o.code, Some(2));
            prop_assert!(line.is_some(), "syntax error without a line: {}", o.stderr);
        }
    }

    /// Bytes that may not even be UTF-8.
    #[test]
    fn random_bytes_get_a_one_line_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let o = run_on(&bytes, &[]);
        assert_clean_outcome(&o, &String::from_utf8_lossy(&bytes));
        prop_assert_eq!(o.code, Some(2), "random bytes were accepted");
    }

    /// A valid file with random `SHARDGATE_<TABLE>__<KEY>` overrides: ok,
    /// or a one-line error.
    #[test]
    fn random_environment_overrides_get_a_one_line_error(
        overrides in proptest::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(NODE_KEYS).prop_map(|k| format!("SHARDGATE_NODE__{}", k.to_uppercase())),
                    prop::sample::select(META_KEYS).prop_map(|k| format!("SHARDGATE_META__{}", k.to_uppercase())),
                    "SHARDGATE_[A-Z_]{1,12}__[A-Z_]{0,12}",
                ],
                prop_oneof![toml_value(), "[ -~]{0,30}"],
            ),
            1..4,
        ),
    ) {
        let text = "version = 1\n[node]\nlisten = \"127.0.0.1:0\"\n[meta]\nid = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n";
        let env: Vec<(String, String)> = overrides.into_iter().filter(|(k, _)| !k.contains('=')).collect();
        let o = run_on(text.as_bytes(), &env);
        assert_clean_outcome(&o, &format!("{env:?}"));
    }
}

/// Files that must fail, with the line they name: a few fixed points the
/// random search may take long to hit.
#[test]
fn edge_cases_name_file_and_line() {
    for (text, line) in [
        ("version = 1\n[node]\nmax_ttl = \"\\u0000\"\n", Some(3)),
        ("version = 1\n[node]\nmax_value_size = \"99999999999999999999999EiB\"\n", Some(3)),
        ("version = 1\n[node]\nmax_key_size = -1\n", Some(3)),
        ("version = 1\n[meta]\nid = 18446744073709551616\n", Some(3)),
        ("version = 1\n[meta]\nmembers = [{ id = 1 }]\n", Some(3)),
        ("version = 1\n[node]\nlisten = \"127.0.0.1:99999\"\n", Some(3)),
        ("version = 1\n[node]\n[node]\n", Some(3)),
        ("version = 1\nversion = 1\n[node]\n", Some(2)),
        ("\u{feff}version = 1\n[node]\n[[meta]]\n", Some(3)),
        ("version = 4294967296\n[node]\n", Some(1)),
    ] {
        let o = run_on(text.as_bytes(), &[]);
        assert_eq!(o.code, Some(2), "{text:?}: {}", o.stderr);
        assert_eq!(assert_clean_outcome(&o, text), line, "{text:?}: {}", o.stderr);
    }
}

/// serde's "unknown variant" (and similar) messages quote the offending
/// value verbatim, so a value holding a line break splits the one-line
/// error over several lines.
#[test]
fn values_with_line_breaks_still_give_one_line() {
    for text in [
        "version = 1\n[node]\neviction_policy = \"lru\\nsecond line\"\n",
        "version = 1\n[proxy]\nowner_down = \"next_owner\\nfail_fast\"\n",
        "version = 1\n[proxy]\nwrite_ack = \"one\\r\\nall\"\n",
    ] {
        let o = run_on(text.as_bytes(), &[]);
        assert_eq!(o.code, Some(2), "{}", o.stderr);
        assert_clean_outcome(&o, text);
    }
}

/// serde fills a struct from a sequence by position, so a role "table"
/// written as an array passes the strict loader: `node = ["127.0.0.1:7201"]`
/// is a node listening there, `meta = [2]` is meta member 2, and
/// `[[node]]` fails with the misleading "invalid type: map, expected socket
/// address".
#[test]
fn arrays_are_not_accepted_as_role_tables() {
    for text in ["version = 1\nnode = [\"127.0.0.1:7201\"]\n", "version = 1\nmeta = [2]\n", "version = 1\n[[node]]\n"] {
        let o = run_on(text.as_bytes(), &[]);
        assert_eq!(o.code, Some(2), "{text:?} was accepted: {}", o.stderr);
        assert_clean_outcome(&o, text);
        assert!(o.stderr.contains("table"), "{text:?}: the error should say a table is expected: {}", o.stderr);
    }
}
