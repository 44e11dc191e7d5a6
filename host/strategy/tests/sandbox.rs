//! The strategy host against real components: the built-ins, the
//! `misbehave` test component and hand-written components in WAT for the
//! shapes Rust cannot produce (forbidden imports, the wrong world).

use shardgate_builtins::{BUILTINS, MISBEHAVE, builtin};
use shardgate_strategy::{Limits, NodeSpec, RoutingInput, Sandbox, Strategy, StrategyCache, StrategyError, TableKind, admit};
use std::sync::{Arc, OnceLock};

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new(Limits::default()).unwrap())
}

/// A sandbox with small budgets so the fault tests fail fast.
fn tight() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        Sandbox::new(Limits { memory_bytes: 32 << 20, configure_fuel: 50_000_000, route_fuel: 1_000_000, ..Limits::default() }).unwrap()
    })
}

fn load(name: &str) -> Strategy {
    sandbox().load(builtin(name).unwrap().component).unwrap()
}

fn misbehave() -> &'static Strategy {
    static S: OnceLock<Strategy> = OnceLock::new();
    S.get_or_init(|| tight().load(MISBEHAVE).unwrap())
}

fn nodes(n: usize) -> Vec<NodeSpec> {
    (0..n).map(|i| NodeSpec::new(format!("node-{i}"), 1.0, "")).collect()
}

#[test]
fn every_builtin_loads_and_is_admitted() {
    for b in BUILTINS {
        let s = sandbox().load(b.component).unwrap();
        assert_eq!(s.metadata().name, b.name);
        assert_eq!(s.hash().len(), 64);
        for (n, r) in [(1, 1), (3, 1), (10, 2), (5, 7)] {
            let (router, admission) = admit(&s, "", &nodes(n), r, 500).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(router.width(), n.min(r as usize));
            assert_eq!(admission.sampled_keys, 500);
        }
    }
}

#[test]
fn table_strategies_route_natively() {
    let kinds: Vec<(&str, TableKind)> =
        BUILTINS.iter().map(|b| (b.name, load(b.name).configure("", &nodes(4), 1).unwrap().table_kind())).collect();
    assert_eq!(
        kinds,
        [
            ("rendezvous", TableKind::Slots),
            ("ketama", TableKind::Ring),
            ("maglev", TableKind::Slots),
            ("jump", TableKind::Slots),
            ("pinned", TableKind::PerKey)
        ]
    );
    let exact = load("rendezvous").configure("slots = 0", &nodes(4), 1).unwrap();
    assert_eq!(exact.table_kind(), TableKind::PerKey);
}

/// The host's routing of a component equals the same strategy crate run
/// natively: the table semantics are the same on both sides of the sandbox.
#[test]
fn host_routing_equals_native_strategy() {
    let ns = nodes(7);
    let keys: Vec<Vec<u8>> = (0..5000).map(|i| format!("k{i}").into_bytes()).collect();
    fn compare<S: shardgate_strategy_sdk::Strategy>(name: &str, config: &str, ns: &[NodeSpec], keys: &[Vec<u8>]) {
        let router = load(name).configure(config, ns, 3).unwrap();
        let native = S::configure(config, ns, 3).unwrap();
        for key in keys {
            let mut want = vec![];
            native.route(key, &mut want);
            assert_eq!(router.route(key).unwrap(), want, "{name} {config:?} key {key:?}");
        }
    }
    compare::<shardgate_strategy_rendezvous::Rendezvous>("rendezvous", "", &ns, &keys);
    compare::<shardgate_strategy_rendezvous::Rendezvous>("rendezvous", "slots = 0", &ns, &keys);
    compare::<shardgate_strategy_ketama::Ketama>("ketama", "vnodes = 40", &ns, &keys);
    compare::<shardgate_strategy_maglev::Maglev>("maglev", "", &ns, &keys);
    compare::<shardgate_strategy_jump::Jump>("jump", "slots = 0", &ns, &keys);
    compare::<shardgate_strategy_pinned::Pinned>("pinned", "[[pin]]\nprefix = \"k1\"\nnodes = [\"node-6\"]", &ns, &keys);
}

#[test]
fn batch_equals_single() {
    for b in BUILTINS {
        let r = load(b.name).configure("", &nodes(9), 2).unwrap();
        let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("key-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let batch = r.route_batch(&refs).unwrap();
        for (i, k) in refs.iter().enumerate() {
            assert_eq!(r.route(k).unwrap(), batch[i * 2..i * 2 + 2], "{}", b.name);
        }
    }
}

// --- bad files -----------------------------------------------------------

#[test]
fn not_wasm_is_refused() {
    assert_eq!(sandbox().load(b"#!/bin/sh\necho hi\n").unwrap_err(), StrategyError::NotWasm);
    assert_eq!(sandbox().load(b"").unwrap_err(), StrategyError::NotWasm);
    // Text format is not accepted either: uploads are binary components.
    assert_eq!(sandbox().load(b"(component)").unwrap_err(), StrategyError::NotWasm);
}

#[test]
fn core_module_is_refused() {
    let module = wat::parse_str("(module (func (export \"route\")))").unwrap();
    let err = sandbox().load(&module).unwrap_err();
    assert_eq!(err, StrategyError::NotAComponent);
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn truncated_component_is_refused() {
    let bytes = builtin("ketama").unwrap().component;
    for cut in [9, 100, bytes.len() / 2, bytes.len() - 1] {
        match sandbox().load(&bytes[..cut]) {
            Err(StrategyError::Invalid(msg)) => assert!(!msg.is_empty()),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversized_component_is_refused_naming_the_limit() {
    let small = Sandbox::new(Limits { max_component_bytes: 1000, ..Limits::default() }).unwrap();
    let err = small.load(builtin("ketama").unwrap().component).unwrap_err();
    assert!(matches!(err, StrategyError::TooLarge { limit: 1000, .. }));
    assert!(err.to_string().contains("max_component_bytes"), "{err}");
    assert_eq!(err.http_status(), 413);
}

/// A component importing `interface` (one function), exporting nothing.
fn importing(interface: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (import "{interface}" (instance (export "f" (func (result u32)))))
        )"#
    ))
    .unwrap()
}

#[test]
fn forbidden_imports_are_refused_by_name() {
    for interface in [
        "wasi:filesystem/types@0.2.0",
        "wasi:sockets/tcp@0.2.0",
        "wasi:http/outgoing-handler@0.2.0",
        // Deterministic stand-ins exist for 0.2 only.
        "wasi:random/random@0.3.0",
        // An allowed std interface at an unknown major version is refused too.
        "wasi:cli/stdout@0.3.0",
    ] {
        match sandbox().load(&importing(interface)) {
            Err(StrategyError::ForbiddenImports(names)) => assert_eq!(names, [interface]),
            other => panic!("{interface}: {other:?}"),
        }
    }
}

#[test]
fn std_stub_imports_pass_the_policy_but_the_world_is_checked() {
    // Allowed imports (inert stubs, and the deterministic clocks and random
    // that language runtimes call at start-up), but no strategy exports:
    // refused for the world, not for the import.
    for interface in
        ["wasi:cli/stdout@0.2.6", "wasi:clocks/wall-clock@0.2.0", "wasi:random/random@0.2.6", "wasi:random/insecure-seed@0.2.0"]
    {
        match sandbox().load(&importing(interface)) {
            Err(StrategyError::WrongWorld(msg)) => assert!(!msg.is_empty()),
            other => panic!("{interface}: {other:?}"),
        }
    }
}

#[test]
fn imports_are_refused_before_anything_is_compiled() {
    // The core module is invalid (it would never compile); the refusal
    // still names the import: the policy read the bytes first.
    let mut c = wat::parse_str(
        r#"(component
            (import "wasi:filesystem/types@0.2.0" (instance (export "f" (func (result u32)))))
            (core module (func (export "g") (result i32) i32.const 1))
        )"#,
    )
    .unwrap();
    // Make the nested module's function body invalid: `i32.const 1` (0x41 0x01) becomes 0xff 0x01.
    let at = c.windows(3).rposition(|w| w == [0x41, 0x01, 0x0b]).unwrap();
    c[at] = 0xff;
    match sandbox().load(&c) {
        Err(StrategyError::ForbiddenImports(names)) => assert_eq!(names, ["wasi:filesystem/types@0.2.0"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panic_message_appears_in_the_error() {
    // misbehave panics with this message; Rust's panic hook writes it to
    // stderr, which the host keeps and shows with the trap.
    let err = configure_misbehave("fault = \"trap\"\nat = \"configure\"", 1).unwrap_err();
    assert!(matches!(err, StrategyError::Trap { call: "configure", .. }), "{err}");
    assert!(err.to_string().contains("misbehave: trap requested"), "{err}");
    let r = configure_misbehave("fault = \"trap\"\nafter = 0", 1).unwrap();
    let err = r.route(b"k").unwrap_err();
    assert!(err.to_string().contains("misbehave: trap requested"), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk_and_damage_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = builtin("maglev").unwrap().component;
    let cached = || Sandbox::with_compiled_cache(Limits::default(), dir.path().to_path_buf(), 1 << 30).unwrap();
    let first = cached().load(bytes).unwrap();
    assert!(!first.from_compiled_cache());
    // A new sandbox (a restart) finds the compiled form.
    let second = cached().load(bytes).unwrap();
    assert!(second.from_compiled_cache());
    let n = nodes(5);
    assert_eq!(first.configure("", &n, 2).unwrap().table(), second.configure("", &n, 2).unwrap().table());
    // A damaged file is removed and the component compiled again.
    let file =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "cwasm")).unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let third = cached().load(bytes).unwrap();
    assert!(!third.from_compiled_cache());
    assert!(cached().load(bytes).unwrap().from_compiled_cache());
    // A file that is not ours at all is not trusted either.
    std::fs::write(&file, b"not a compiled component").unwrap();
    assert!(!cached().load(bytes).unwrap().from_compiled_cache());
}

#[test]
fn the_compiled_cache_is_bounded_and_an_unwritable_one_only_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let s = Sandbox::with_compiled_cache(Limits::default(), dir.path().join("probe"), 1 << 30).unwrap();
        s.load(builtin("jump").unwrap().component).unwrap();
        std::fs::read_dir(dir.path().join("probe")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum::<u64>()
    };
    // Room for about one and a half compiled built-ins: loading three keeps one or two.
    let bounded = Sandbox::with_compiled_cache(Limits::default(), dir.path().join("bounded"), one * 3 / 2).unwrap();
    for name in ["jump", "rendezvous", "ketama"] {
        bounded.load(builtin(name).unwrap().component).unwrap();
    }
    let total: u64 = std::fs::read_dir(dir.path().join("bounded")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total <= one * 3 / 2, "{total} bytes kept, bound {}", one * 3 / 2);
    // A "directory" that is a file cannot be written: loads still work.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let unwritable = Sandbox::with_compiled_cache(Limits::default(), file, 1 << 30).unwrap();
    for _ in 0..2 {
        let s = unwritable.load(builtin("jump").unwrap().component).unwrap();
        assert!(!s.from_compiled_cache());
    }
}

#[test]
fn wrong_world_is_refused() {
    let c = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 1))
            (core instance $i (instantiate $m))
            (func (export "metadata") (result u32) (canon lift (core func $i "f")))
        )"#,
    )
    .unwrap();
    match sandbox().load(&c) {
        Err(e @ StrategyError::WrongWorld(_)) => assert!(e.to_string().contains("shardgate:strategy"), "{e}"),
        other => panic!("{other:?}"),
    }
}

// --- misbehaving strategies ------------------------------------------------

fn configure_misbehave(config: &str, replicas: u32) -> Result<shardgate_strategy::Router, StrategyError> {
    misbehave().configure(config, &nodes(3), replicas)
}

#[test]
fn trap_in_route_is_a_typed_error_and_the_router_recovers() {
    let r = configure_misbehave("fault = \"trap\"\nafter = 2", 1).unwrap();
    assert!(r.route(b"a").is_ok());
    assert!(r.route(b"b").is_ok());
    let err = r.route(b"c").unwrap_err();
    assert!(matches!(err, StrategyError::Trap { call: "route", .. }), "{err}");
    assert!(err.is_routing_fault());
    // The trapped instance was dropped; a fresh one serves the next call.
    assert!(r.route(b"d").is_ok());
}

#[test]
fn endless_loop_exhausts_fuel() {
    let r = configure_misbehave("fault = \"loop\"", 1).unwrap();
    let err = r.route(b"k").unwrap_err();
    assert!(matches!(err, StrategyError::OutOfFuel { call: "route", fuel: 1_000_000, .. }), "{err}");
    assert!(err.to_string().contains("route_fuel"), "{err}");
    let err = configure_misbehave("fault = \"loop\"\nat = \"configure\"", 1).unwrap_err();
    assert!(matches!(err, StrategyError::OutOfFuel { call: "configure", .. }), "{err}");
}

#[test]
fn memory_growth_past_the_limit_is_stopped() {
    let err = configure_misbehave("fault = \"grow\"\nat = \"configure\"", 1).unwrap_err();
    assert!(matches!(err, StrategyError::MemoryLimit { call: "configure", limit } if limit == 32 << 20), "{err}");
    let r = configure_misbehave("fault = \"grow\"", 1).unwrap();
    assert!(matches!(r.route(b"k").unwrap_err(), StrategyError::MemoryLimit { call: "route", .. }));
}

#[test]
fn bad_answers_are_refused() {
    let cases = [("out-of-range", 1, "out of range"), ("duplicate", 2, "appears twice"), ("short", 2, "expected 2 positions")];
    for (fault, replicas, needle) in cases {
        let r = configure_misbehave(&format!("fault = \"{fault}\""), replicas).unwrap();
        let err = r.route(b"k").unwrap_err();
        assert!(matches!(err, StrategyError::BadAnswer { .. }) && err.to_string().contains(needle), "{fault}: {err}");
        let err = r.route_batch(&[b"k".as_slice(), b"l"]).unwrap_err();
        assert!(matches!(err, StrategyError::BadAnswer { .. }), "{fault} batch: {err}");
    }
}

#[test]
fn bad_table_is_refused_at_configure() {
    let err = configure_misbehave("fault = \"bad-table\"", 1).unwrap_err();
    assert!(matches!(err, StrategyError::BadTable(ref m) if m.contains("row 0") && m.contains("out of range")), "{err}");
}

#[test]
fn rejected_config_names_the_reason() {
    let err = configure_misbehave("fault = \"reject-config\"", 1).unwrap_err();
    assert!(matches!(err, StrategyError::ConfigRejected(ref m) if m.contains("on purpose")), "{err}");
    let err = load("ketama").validate_config("vnodes = 0").unwrap_err();
    assert!(err.to_string().contains("vnodes must be between 1 and 4096"), "{err}");
    let err = load("ketama").configure("vnode = 3", &nodes(3), 1).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn bad_node_lists_are_refused() {
    let s = load("rendezvous");
    let e = s.configure("", &[], 1).unwrap_err();
    assert!(e.to_string().contains("node list is empty"), "{e}");
    let mut dup = nodes(3);
    dup[2].id = "node-0".into();
    assert!(s.configure("", &dup, 1).unwrap_err().to_string().contains("appears twice"));
    let mut w = nodes(2);
    w[1].weight = f64::NAN;
    assert!(s.configure("", &w, 1).unwrap_err().to_string().contains("weights must be finite"));
    assert!(s.configure("", &nodes(2), 0).unwrap_err().to_string().contains("replicas"));
}

#[test]
fn a_failed_configure_leaves_the_cached_router_serving() {
    let cache = StrategyCache::new(tight().clone(), 4, 4);
    let good = RoutingInput { hash: misbehave().hash().into(), config: "fault = \"none\"".into(), replicas: 1, nodes: nodes(3) };
    let router = cache.configure(misbehave(), &good).unwrap();
    let before = router.route(b"key").unwrap();
    for bad in ["fault = \"trap\"\nat = \"configure\"", "fault = \"bad-table\"", "fault = \"reject-config\""] {
        let input = RoutingInput { config: bad.into(), ..good.clone() };
        assert!(cache.configure(misbehave(), &input).is_err(), "{bad}");
        assert!(cache.router(&input).is_none(), "{bad}: a failed configure must not be cached");
    }
    let now = cache.router(&good).expect("the working router stays cached");
    assert_eq!(now.route(b"key").unwrap(), before);
}

#[test]
fn the_cache_refuses_bytes_that_do_not_match_their_hash_and_stays_bounded() {
    let cache = StrategyCache::new(sandbox().clone(), 2, 2);
    let rendezvous = builtin("rendezvous").unwrap().component;
    let err = cache.load(&"0".repeat(64), rendezvous).unwrap_err();
    assert!(matches!(err, StrategyError::HashMismatch { .. }), "{err}");
    assert!(cache.strategy(&"0".repeat(64)).is_none());
    let mut hashes = vec![];
    for name in ["rendezvous", "ketama", "maglev"] {
        let s = load(name);
        hashes.push(s.hash().to_string());
        cache.load(s.hash(), builtin(name).unwrap().component).unwrap();
    }
    assert_eq!(cache.len().0, 2);
    assert!(cache.strategy(&hashes[0]).is_none(), "the least recently used is evicted");
    assert!(cache.strategy(&hashes[2]).is_some());
    let s = cache.strategy(&hashes[2]).unwrap();
    for n in 2..6 {
        let input = RoutingInput { hash: s.hash().into(), config: String::new(), replicas: 1, nodes: nodes(n) };
        cache.configure(&s, &input).unwrap();
    }
    assert_eq!(cache.len().1, 2);
}

// --- concurrency -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_routing_from_many_tasks_agrees_with_one_thread() {
    let router = load("pinned").configure("", &nodes(5), 2).unwrap();
    let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("t{i}").into_bytes()).collect();
    let expected: Vec<Vec<u32>> = keys.iter().map(|k| router.route(k).unwrap()).collect();
    let keys = Arc::new(keys);
    let expected = Arc::new(expected);
    let mut tasks = vec![];
    for t in 0..16 {
        let (router, keys, expected) = (router.clone(), keys.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..keys.len()).step_by(3) {
                assert_eq!(router.route(&keys[i]).unwrap(), expected[i]);
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
