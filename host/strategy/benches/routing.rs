//! Routing cost: each built-in strategy x N in {3, 10, 100}, natively (the
//! strategy crate compiled into this binary, the algorithm computed per key)
//! against the strategy host (the component loaded in wasmtime): one key per
//! call, and batches of 1000 keys. 16-byte keys, one replica, ns per key,
//! best of 5 rounds.
//!
//! Run: `cargo bench -p shardgate-strategy --bench routing`
//!
//! The bar (issue 2): single <= max(2 x native, native + 40 ns), batch <=
//! max(1.5 x native, native + 10 ns). The last column says whether it holds.
//!
//! A strategy of your own beside the built-in table strategy, in the same
//! run (issue 16: a Python table strategy must route at table speed):
//! `SHARDGATE_BENCH_COMPONENT=python-hrw.wasm [SHARDGATE_BENCH_CONFIG="slots = 4096"]
//! cargo bench -p shardgate-strategy --bench routing`.

use shardgate_builtins::builtin;
use shardgate_strategy::{Limits, NodeSpec, Router, Sandbox, key_hash};
use shardgate_strategy_sdk::{Strategy as _, hrw::Hrw};
use std::hint::black_box;
use std::time::Instant;

const KEYS: usize = 200_000;
const ROUNDS: usize = 5;

fn best_ns_per_key(mut f: impl FnMut() -> usize) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let n = f();
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn nodes(n: usize) -> Vec<NodeSpec> {
    (0..n).map(|i| NodeSpec::new(format!("node-{i}"), 1.0, "")).collect()
}

type Native = Box<dyn Fn(&[u8], &mut Vec<u32>)>;

fn native(name: &str, config: &str, nodes: &[NodeSpec]) -> Native {
    match name {
        // Exact HRW per key: the algorithm itself, not its table.
        "rendezvous" => {
            let hrw = Hrw::new(nodes);
            Box::new(move |k, out| hrw.top(key_hash(k), 1, out))
        }
        "ketama" => {
            let s = shardgate_strategy_ketama::Ketama::configure(config, nodes, 1).unwrap();
            Box::new(move |k, out| s.route(k, out))
        }
        "maglev" => {
            let s = shardgate_strategy_maglev::Maglev::configure(config, nodes, 1).unwrap();
            Box::new(move |k, out| s.route(k, out))
        }
        // Jump computed per key: the algorithm itself, not its table.
        "jump" => {
            let n = nodes.len() as u32;
            Box::new(move |k, out| shardgate_strategy_jump::jump_top(key_hash(k), n, 1, out))
        }
        "pinned" => {
            let s = shardgate_strategy_pinned::Pinned::configure(config, nodes, 1).unwrap();
            Box::new(move |k, out| s.route(k, out))
        }
        _ => unreachable!(),
    }
}

fn main() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key:{i:012}").into_bytes()).collect();
    assert!(keys.iter().all(|k| k.len() == 16));
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let cases = [
        ("rendezvous", ""),
        ("rendezvous", "slots = 0"),
        ("ketama", ""),
        ("maglev", ""),
        ("jump", ""),
        ("jump", "slots = 0"),
        ("pinned", "[[pin]]\nprefix = \"tenant-a/\"\nnodes = [\"node-0\"]"),
    ];
    if let Ok(path) = std::env::var("SHARDGATE_BENCH_COMPONENT") {
        return own_component(&path, &refs);
    }
    println!("| strategy | config | routing | N | native ns/key | wasm single ns/key | wasm batch ns/key | single bar | batch bar |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, config) in cases {
        let strategy = sandbox.load(builtin(name).unwrap().component).unwrap();
        for n in [3, 10, 100] {
            let ns = nodes(n);
            let router: Router = strategy.configure(config, &ns, 1).unwrap();
            let native = native(name, config, &ns);
            // Sanity: the host and the native strategy agree (exact HRW and
            // per-key jump differ from their tables by design).
            let tabulated = (name == "rendezvous" || name == "jump") && config.is_empty();
            if !tabulated {
                for k in refs.iter().take(1000) {
                    let mut want = vec![];
                    native(k, &mut want);
                    assert_eq!(router.route(k).unwrap(), want, "{name} N={n}");
                }
            }
            let mut out = Vec::with_capacity(4);
            let t_native = best_ns_per_key(|| {
                for k in &refs {
                    out.clear();
                    native(black_box(k), &mut out);
                    black_box(&out);
                }
                refs.len()
            });
            let t_single = best_ns_per_key(|| {
                for k in &refs {
                    out.clear();
                    router.route_into(black_box(k), &mut out).unwrap();
                    black_box(&out);
                }
                refs.len()
            });
            let t_batch = best_ns_per_key(|| {
                for chunk in refs.chunks(1000) {
                    black_box(router.route_batch(black_box(chunk)).unwrap());
                }
                refs.len()
            });
            let single_ok = t_single <= (2.0 * t_native).max(t_native + 40.0);
            let batch_ok = t_batch <= (1.5 * t_native).max(t_native + 10.0);
            println!(
                "| {name} | `{}` | {} | {n} | {t_native:.1} | {t_single:.1} | {t_batch:.1} | {} | {} |",
                if config.is_empty() { "default" } else { config.lines().next().unwrap() },
                router.table_kind(),
                if single_ok { "ok" } else { "MISS" },
                if batch_ok { "ok" } else { "MISS" },
            );
        }
    }
}

/// Routing cost of the component at `path` beside rendezvous (a built-in
/// slots table), same keys, same run.
fn own_component(path: &str, refs: &[&[u8]]) {
    let config = std::env::var("SHARDGATE_BENCH_CONFIG").unwrap_or_default();
    let cache = shardgate_strategy::default_compiled_cache_dir().unwrap_or_else(|| std::env::temp_dir().join("shardgate-bench-compiled"));
    let sandbox = Sandbox::with_compiled_cache(Limits::default(), cache, 1 << 30).unwrap();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let started = Instant::now();
    let own = sandbox.load(&bytes).unwrap();
    eprintln!(
        "loaded {path} in {:.2} s ({})",
        started.elapsed().as_secs_f64(),
        if own.from_compiled_cache() { "from the compiled cache" } else { "compiled" }
    );
    let reference = sandbox.load(builtin("rendezvous").unwrap().component).unwrap();
    println!("| strategy | routing | N | single ns/key | batch ns/key |");
    println!("|---|---|---|---|---|");
    for n in [3, 10, 100] {
        let ns = nodes(n);
        for (label, router) in [
            (own.metadata().name.clone(), own.configure(&config, &ns, 1).unwrap()),
            ("rendezvous".to_string(), reference.configure("", &ns, 1).unwrap()),
        ] {
            let mut out = Vec::with_capacity(4);
            let single = best_ns_per_key(|| {
                for k in refs {
                    out.clear();
                    router.route_into(black_box(k), &mut out).unwrap();
                    black_box(&out);
                }
                refs.len()
            });
            let batch = best_ns_per_key(|| {
                for chunk in refs.chunks(1000) {
                    black_box(router.route_batch(black_box(chunk)).unwrap());
                }
                refs.len()
            });
            println!("| {label} | {} | {n} | {single:.1} | {batch:.1} |", router.table_kind());
        }
    }
}
