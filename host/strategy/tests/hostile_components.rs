//! Hostile input for the strategy host: property tests that throw malformed
//! components at the admission path (`Sandbox::load`, `Strategy::configure`,
//! `admit`) — random bytes, truncated and corrupted built-ins, wrong magic,
//! core modules, components of the wrong world, and a hand-written component
//! whose `configure` answers with arbitrary (huge, truncated, out-of-bounds,
//! unsorted, non-UTF-8) routing tables.
//!
//! Where it sits: these are the bytes meta receives on `POST /v1/strategies`
//! and the tables the proxy receives from `configure` before it swaps
//! routers. Every case must end in `Err(StrategyError)` with a non-empty
//! one-line message (or, for inputs that are still a valid strategy, in a
//! router whose answers pass the host's checks), never a panic; and routers
//! configured before the storm must keep answering identically.
//!
//! Case counts are small so `cargo test` stays quick in a debug build; raise
//! them with `PROPTEST_CASES=2000 cargo test -p shardgate-strategy --test
//! hostile_components`.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, RngSeed};
use shardgate_builtins::{BUILTINS, MISBEHAVE, builtin};
use shardgate_strategy::{Limits, NodeSpec, Router, Sandbox, Strategy as Loaded, StrategyError, admit};
use std::fmt::Write as _;
use std::sync::OnceLock;

/// `default` cases from a fixed seed, so every run (and CI) tests the same
/// inputs; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further.
fn cases(default: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    let set = |var: &str| std::env::var_os(var).is_some();
    ProptestConfig {
        cases: if set("PROPTEST_CASES") { base.cases } else { default },
        rng_seed: if set("PROPTEST_RNG_SEED") { base.rng_seed } else { RngSeed::Fixed(0x5eed_0007) },
        // No regression files in the source tree; failures print their input.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..base
    }
}

/// Default limits, as meta and the proxy run them.
fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new(Limits::default()).unwrap())
}

/// Small budgets, so corrupted components that loop or grow fail fast.
fn tight() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        Sandbox::new(Limits {
            memory_bytes: 32 << 20,
            configure_fuel: 200_000_000,
            control_fuel: 10_000_000,
            route_fuel: 1_000_000,
            max_table_entries: 1 << 16,
            ..Limits::default()
        })
        .unwrap()
    })
}

fn nodes(n: usize) -> Vec<NodeSpec> {
    (0..n).map(|i| NodeSpec::new(format!("node-{i}"), 1.0, "")).collect()
}

fn keys() -> Vec<Vec<u8>> {
    (0..64).map(|i| format!("canary-{i}").into_bytes()).collect()
}

/// Routers configured before any hostile input, with their answers then:
/// one of each routing form (slots, ring, per-key).
struct Baseline {
    routers: Vec<(Router, Vec<Vec<u32>>)>,
}

fn baseline() -> &'static Baseline {
    static B: OnceLock<Baseline> = OnceLock::new();
    B.get_or_init(|| {
        let routers = ["rendezvous", "ketama", "pinned"]
            .into_iter()
            .map(|name| {
                let s = sandbox().load(builtin(name).unwrap().component).unwrap();
                let r = s.configure("", &nodes(5), 2).unwrap();
                let answers = keys().iter().map(|k| r.route(k).unwrap()).collect();
                (r, answers)
            })
            .collect();
        Baseline { routers }
    })
}

/// The routers configured before the storm still answer exactly as before.
fn assert_baseline_unchanged() {
    for (router, answers) in &baseline().routers {
        for (key, want) in keys().iter().zip(answers) {
            assert_eq!(&router.route(key).unwrap(), want, "{:?} changed its answer", router);
        }
        let keys = keys();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let batch = router.route_batch(&refs).unwrap();
        assert_eq!(batch, answers.concat(), "{router:?} changed its batch answer");
    }
}

/// At most the first 300 characters of `text`, for failure messages.
fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

/// A refusal as operators see it: one non-empty line of reasonable length
/// (the text a strategy returns with its own errors included).
fn assert_clear(err: &StrategyError, input: &str) {
    let text = err.to_string();
    let input = clip(input);
    assert!(!text.trim().is_empty(), "{input}: empty error message ({err:?})");
    assert!(!text.contains('\n'), "{input}: error message is not one line: {:?}", clip(&text));
    assert!(text.len() < 4096, "{input}: error message is {} bytes long: {:?}", text.len(), clip(&text));
}

fn refused<T: std::fmt::Debug>(result: Result<T, StrategyError>, input: &str) -> StrategyError {
    match result {
        Err(e) => {
            assert_clear(&e, input);
            e
        }
        Ok(v) => panic!("{input}: accepted, expected a refusal: {v:?}"),
    }
}

/// Top-level section boundaries of a component binary: (offset, section id)
/// of every section, and the end. `None` if the header framing is broken.
fn sections(bytes: &[u8]) -> Option<Vec<(usize, u8)>> {
    let mut out = vec![];
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        let (mut size, mut shift, mut p) = (0u64, 0, at + 1);
        loop {
            let b = *bytes.get(p)?;
            size |= u64::from(b & 0x7f) << shift;
            p += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        out.push((at, id));
        at = p + size as usize;
    }
    (at == bytes.len()).then_some(out)
}

/// Whether `bytes[..cut]` drops nothing but whole trailing custom sections
/// (names, producers): then the prefix is still the same strategy.
fn only_custom_sections_after(bytes: &[u8], cut: usize) -> bool {
    let secs = sections(bytes).expect("built-ins are well-framed");
    secs.iter().any(|&(at, _)| at == cut) && secs.iter().filter(|&&(at, _)| at >= cut).all(|&(_, id)| id == 0)
}

fn builtin_index() -> impl prop::strategy::Strategy<Value = usize> {
    0..BUILTINS.len()
}

// --- not a component at all ----------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    /// Arbitrary bytes, optionally behind the component header so they get
    /// past the magic check into the binary parser.
    #[test]
    fn random_bytes_are_refused(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        header in prop_oneof![
            Just(&b""[..]),
            Just(&b"\0asm"[..]),
            Just(&b"\0asm\x0d\0\x01\0"[..]),
            Just(&b"\0asm\x01\0\0\0"[..]),
        ],
    ) {
        let bytes = [header, &body].concat();
        let err = refused(sandbox().load(&bytes), &format!("{} random bytes after {header:?}", body.len()));
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            prop_assert_eq!(err, StrategyError::NotWasm);
        }
    }

    /// Any four bytes but `\0asm` in front of a real component.
    #[test]
    fn wrong_magic_is_refused(b in builtin_index(), magic in any::<[u8; 4]>()) {
        prop_assume!(&magic != b"\0asm");
        let mut bytes = BUILTINS[b].component.to_vec();
        bytes[..4].copy_from_slice(&magic);
        prop_assert_eq!(refused(sandbox().load(&bytes), "wrong magic"), StrategyError::NotWasm);
    }

    /// Any version/layer but the component's: a core-module layer is named
    /// as such, everything else is an invalid component.
    #[test]
    fn wrong_version_or_layer_is_refused(b in builtin_index(), version in any::<[u8; 4]>()) {
        prop_assume!(&version != b"\x0d\0\x01\0");
        let mut bytes = BUILTINS[b].component.to_vec();
        bytes[4..8].copy_from_slice(&version);
        let err = refused(sandbox().load(&bytes), &format!("version bytes {version:?}"));
        if version[2..] == [0, 0] {
            prop_assert_eq!(err, StrategyError::NotAComponent);
        } else {
            prop_assert!(matches!(err, StrategyError::Invalid(_)), "{:?}", err);
        }
    }
}

// --- damaged built-ins ------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    /// Every prefix of a real component is refused, unless the cut drops
    /// only trailing custom sections (then it is the same strategy and must
    /// load and route like the original).
    #[test]
    fn truncated_components_are_refused(b in builtin_index(), cut in any::<prop::sample::Index>()) {
        let full = BUILTINS[b].component;
        let cut = cut.index(full.len());
        let input = format!("{} cut to {cut} of {} bytes", BUILTINS[b].name, full.len());
        if only_custom_sections_after(full, cut) {
            let s = sandbox().load(&full[..cut]).unwrap_or_else(|e| panic!("{input}: {e}"));
            prop_assert_eq!(&s.metadata().name, BUILTINS[b].name);
        } else {
            refused(sandbox().load(&full[..cut]), &input);
        }
    }
}

proptest! {
    #![proptest_config(cases(16))]

    /// One byte of a real component changed. Most corruptions are refused;
    /// one in a constant or a data segment can leave a valid component that
    /// behaves differently. Either way: a clear error or a router whose
    /// every answer passes the host's checks, and the routers configured
    /// before keep answering identically.
    #[test]
    fn corrupted_components_fail_cleanly(
        b in builtin_index(),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let mut bytes = BUILTINS[b].component.to_vec();
        let at = 8 + at.index(bytes.len() - 8);
        bytes[at] ^= xor;
        let input = format!("{} with byte {at} ^= {xor:#04x}", BUILTINS[b].name);
        match tight().load(&bytes) {
            Err(e) => assert_clear(&e, &input),
            Ok(s) => exercise(&s, "", &input),
        }
        assert_baseline_unchanged();
    }
}

/// Drives a loaded (possibly broken) strategy through admission and
/// routing: every outcome must be a clear error or a checked answer.
fn exercise(s: &Loaded, config: &str, input: &str) {
    let ns = nodes(4);
    match admit(s, config, &ns, 2, 50) {
        Err(e) => assert_clear(&e, input),
        Ok((router, admission)) => {
            assert_eq!(admission.width, 2, "{input}");
            for key in keys().iter().take(8) {
                match router.route(key) {
                    Ok(answer) => {
                        assert_eq!(answer.len(), 2, "{input}");
                        assert!(answer.iter().all(|&p| p < 4) && answer[0] != answer[1], "{input}: {answer:?}");
                    }
                    Err(e) => assert_clear(&e, input),
                }
            }
        }
    }
}

// --- core modules and the wrong world ---------------------------------------

/// Interface names a WAT component may import: allowed std stubs, the
/// contract's types at the wrong version, and forbidden capabilities.
const IMPORTS: &[&str] = &[
    "wasi:cli/stdout@0.2.6",
    "wasi:io/error@0.2.0",
    "shardgate:strategy/types@0.2.0",
    // Allowed: answered with fixed bytes.
    "wasi:random/random@0.2.0",
    "wasi:clocks/wall-clock@0.3.0",
    "wasi:filesystem/types@0.2.0",
    "my:own/thing",
];

/// Export names of the world plus near misses.
const EXPORT_NAMES: &[&str] = &["metadata", "validate-config", "configure", "route", "route-batch", "route-batches", "meta-data", "config"];

/// Function types a component can lift without memory: none of them is a
/// type the world uses.
const FUNC_TYPES: &[(&str, &str)] = &[
    ("", ""),
    ("(result u32)", "(result i32) i32.const 7"),
    ("(param \"key\" u32) (result u32)", "(param i32) (result i32) local.get 0"),
    ("(param \"a\" u64) (param \"b\" f64)", "(param i64 f64)"),
    ("(result bool)", "(result i32) i32.const 1"),
];

fn wrong_world_component(imports: &[usize], exports: &[(usize, usize)]) -> String {
    let mut wat = String::from("(component\n");
    for &i in imports {
        writeln!(wat, "  (import \"{}\" (instance (export \"f\" (func (result u32)))))", IMPORTS[i]).unwrap();
    }
    wat.push_str("  (core module $m\n");
    for (n, &(_, t)) in exports.iter().enumerate() {
        writeln!(wat, "    (func (export \"f{n}\") {})", FUNC_TYPES[t].1).unwrap();
    }
    wat.push_str("  )\n  (core instance $i (instantiate $m))\n");
    let mut seen = std::collections::BTreeSet::new();
    for (n, &(name, t)) in exports.iter().enumerate() {
        if seen.insert(name) {
            writeln!(wat, "  (func (export \"{}\") {} (canon lift (core func $i \"f{n}\")))", EXPORT_NAMES[name], FUNC_TYPES[t].0).unwrap();
        }
    }
    wat.push(')');
    wat
}

proptest! {
    #![proptest_config(cases(64))]

    /// A valid core module (functions named like the world's, a memory) is
    /// named as a core module, with the command that makes a component.
    #[test]
    fn core_modules_are_refused(
        funcs in proptest::collection::vec((0..EXPORT_NAMES.len(), 0..FUNC_TYPES.len()), 0..6),
        pages in 0..4u32,
    ) {
        let mut wat = format!("(module (memory {pages})\n");
        let mut seen = std::collections::BTreeSet::new();
        for &(name, t) in &funcs {
            if seen.insert(name) {
                writeln!(wat, "  (func (export \"{}\") {})", EXPORT_NAMES[name], FUNC_TYPES[t].1).unwrap();
            }
        }
        wat.push(')');
        let module = wat::parse_str(&wat).unwrap();
        let err = refused(sandbox().load(&module), &wat);
        prop_assert_eq!(&err, &StrategyError::NotAComponent);
        prop_assert!(err.to_string().contains("wasm32-wasip2"));
    }

    /// Components with random imports and random exports of the wrong
    /// types: forbidden imports are named, everything else is the wrong
    /// world.
    #[test]
    fn components_of_the_wrong_world_are_refused(
        imports in proptest::sample::subsequence((0..IMPORTS.len()).collect::<Vec<_>>(), 0..=3),
        exports in proptest::collection::vec((0..EXPORT_NAMES.len(), 0..FUNC_TYPES.len()), 0..7),
    ) {
        let wat = wrong_world_component(&imports, &exports);
        let component = wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"));
        let err = refused(sandbox().load(&component), &wat);
        let forbidden: Vec<String> =
            imports.iter().map(|&i| IMPORTS[i]).filter(|i| !i.starts_with("wasi:cli") && !i.starts_with("wasi:io") && !i.starts_with("wasi:random")).map(String::from).collect();
        if forbidden.is_empty() {
            prop_assert!(matches!(err, StrategyError::WrongWorld(_)), "{:?}\n{}", err, wat);
        } else {
            prop_assert_eq!(err, StrategyError::ForbiddenImports(forbidden));
        }
    }
}

// --- a component that answers with arbitrary tables ---------------------------

/// Memory layout of the hand-written strategy below.
const META: u32 = 0x100; // metadata record: three (ptr, len) strings
const RET: u32 = 0x180; // configure's return area: result<routing-table, string>
const ROUTE: u32 = 0x1c0; // route's return area: list<u32>
const BATCH: u32 = 0x1d0; // route-batch's return area
const ANSWER: u32 = 0x200; // what route answers for every key (<= 16 positions)
const STRINGS: u32 = 0x400; // metadata strings (<= 3 KiB)
const PAYLOAD: u32 = 0x1000; // table entries or ring points (<= 32 KiB)
const PAYLOAD_MAX: usize = 0x8000;
const BUMP: u32 = 0x11000; // cabi_realloc allocates from here

/// What the hand-written component's functions answer: raw canonical-ABI
/// bytes, so the tests can send anything a hostile guest could.
#[derive(Debug, Clone)]
struct TableComponent {
    name: Vec<u8>,
    version: Vec<u8>,
    description: Vec<u8>,
    /// The 20 bytes of configure's return area.
    ret: [u8; 20],
    payload: Vec<u8>,
    answer: Vec<u32>,
    /// Initial memory in 64 KiB pages (at least 2).
    pages: u32,
}

impl TableComponent {
    fn new(ret: [u8; 20], payload: Vec<u8>) -> Self {
        TableComponent {
            name: b"table".to_vec(),
            version: b"0.1.0".to_vec(),
            description: b"answers whatever table the test asks for".to_vec(),
            ret,
            payload,
            answer: vec![0],
            pages: 2,
        }
    }

    /// configure returns `ok(slots { width, entries: list at (ptr, len) })`.
    fn slots(width: u32, ptr: u32, len: u32, payload: Vec<u8>) -> Self {
        Self::new(ret_area(0, 1, [width, ptr, len]), payload)
    }

    /// configure returns `ok(ring(list at (ptr, len)))`.
    fn ring(ptr: u32, len: u32, payload: Vec<u8>) -> Self {
        Self::new(ret_area(0, 2, [ptr, len, 0]), payload)
    }

    fn wat(&self) -> String {
        let (name, version) = (STRINGS, STRINGS + self.name.len() as u32);
        let description = version + self.version.len() as u32;
        let mut meta = vec![];
        for (ptr, s) in [(name, &self.name), (version, &self.version), (description, &self.description)] {
            meta.extend_from_slice(&ptr.to_le_bytes());
            meta.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        let strings = [&self.name[..], &self.version, &self.description].concat();
        assert!(strings.len() <= (PAYLOAD - STRINGS) as usize && self.payload.len() <= PAYLOAD_MAX);
        let answer: Vec<u8> = self.answer.iter().flat_map(|p| p.to_le_bytes()).collect();
        let route = [ANSWER.to_le_bytes(), (self.answer.len() as u32).to_le_bytes()].concat();
        let answer_bytes = answer.len();
        let answer_len = self.answer.len();
        let data = |at: u32, bytes: &[u8]| format!("(data (i32.const {at}) \"{}\")", escape(bytes));
        format!(
            r#"(component
  (import "shardgate:strategy/types@0.1.0" (instance $types
    (type $metadata' (record (field "name" string) (field "version" string) (field "description" string)))
    (export "metadata" (type $metadata (eq $metadata')))
    (type $node' (record (field "id" string) (field "weight" f64) (field "zone" string)))
    (export "node" (type $node (eq $node')))
    (type $slot-table' (record (field "width" u32) (field "entries" (list u32))))
    (export "slot-table" (type $slot-table (eq $slot-table')))
    (type $ring-point' (record (field "hash" u64) (field "position" u32)))
    (export "ring-point" (type $ring-point (eq $ring-point')))
    (type $routing-table' (variant (case "per-key") (case "slots" $slot-table) (case "ring" (list $ring-point))))
    (export "routing-table" (type $routing-table (eq $routing-table')))
  ))
  (alias export $types "metadata" (type $metadata))
  (alias export $types "node" (type $node))
  (alias export $types "routing-table" (type $routing-table))
  (core module $m
    (memory (export "memory") {pages})
    (global $bump (mut i32) (i32.const {BUMP}))
    (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
      (local.set $end (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.const 1)
          (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)))))))
      (global.set $bump (local.get $end))
      (local.get $p))
    (func (export "metadata") (result i32) (i32.const {META}))
    (func (export "validate-config") (param i32 i32) (result i32) (i32.const {VALID}))
    (func (export "configure") (param i32 i32 i32 i32 i32) (result i32) (i32.const {RET}))
    (func (export "route") (param i32 i32) (result i32) (i32.const {ROUTE}))
    (func (export "route-batch") (param i32 i32 i32 i32) (result i32)
      (local $out i32) (local $i i32)
      (local.set $out (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
                                     (i32.mul (local.get 3) (i32.const {answer_bytes}))))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get 3)))
        (memory.copy (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const {answer_bytes})))
                     (i32.const {ANSWER}) (i32.const {answer_bytes}))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (i32.store (i32.const {BATCH}) (local.get $out))
      (i32.store (i32.const {BATCH_LEN}) (i32.mul (local.get 3) (i32.const {answer_len})))
      (i32.const {BATCH}))
    {meta_data}
    {ret_data}
    {route_data}
    {answer_data}
    {strings_data}
    {payload_data}
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "cabi_realloc" (core func $realloc))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $i "metadata") (memory $mem) (realloc $realloc) string-encoding=utf8))
  (func (export "validate-config") (param "config" string) (result (result (error string)))
    (canon lift (core func $i "validate-config") (memory $mem) (realloc $realloc) string-encoding=utf8))
  (func (export "configure") (param "config" string) (param "nodes" (list $node)) (param "replicas" u32)
    (result (result $routing-table (error string)))
    (canon lift (core func $i "configure") (memory $mem) (realloc $realloc) string-encoding=utf8))
  (func (export "route") (param "key" (list u8)) (result (list u32))
    (canon lift (core func $i "route") (memory $mem) (realloc $realloc)))
  (func (export "route-batch") (param "keys" (list u8)) (param "ends" (list u32)) (result (list u32))
    (canon lift (core func $i "route-batch") (memory $mem) (realloc $realloc)))
)"#,
            pages = self.pages.max(2),
            VALID = RET + 0x30,
            BATCH_LEN = BATCH + 4,
            meta_data = data(META, &meta),
            ret_data = data(RET, &self.ret),
            route_data = data(ROUTE, &route),
            answer_data = data(ANSWER, &answer),
            strings_data = data(STRINGS, &strings),
            payload_data = data(PAYLOAD, &self.payload),
        )
    }

    fn component(&self) -> Vec<u8> {
        let wat = self.wat();
        wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"))
    }
}

/// configure's return area: result discriminant, routing-table
/// discriminant (at offset 4), then three u32 words of payload.
fn ret_area(result: u8, table: u8, words: [u32; 3]) -> [u8; 20] {
    let mut ret = [0u8; 20];
    ret[0] = result;
    ret[4] = table;
    for (i, w) in words.iter().enumerate() {
        ret[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    ret
}

fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn points(ps: &[(u64, u32)]) -> Vec<u8> {
    ps.iter().flat_map(|&(h, p)| [&h.to_le_bytes()[..], &p.to_le_bytes(), &[0; 4]].concat()).collect()
}

/// Loads a table component into `sandbox` and configures it with `n` nodes.
fn configure_table(sandbox: &Sandbox, c: &TableComponent, n: usize, replicas: u32) -> Result<Router, StrategyError> {
    let s = sandbox.load(&c.component()).unwrap_or_else(|e| panic!("the table component must load: {e}"));
    s.configure("", &nodes(n), replicas)
}

#[test]
fn a_well_formed_table_component_is_admitted() {
    // The harness itself: a healthy slot table, ring and per-key answer are
    // accepted and routed, so the refusals below are about the tables.
    let r = configure_table(tight(), &TableComponent::slots(2, PAYLOAD, 8, words(&[0, 1, 1, 2, 2, 0, 1, 0])), 3, 2).unwrap();
    assert_eq!(r.table_kind(), shardgate_strategy::TableKind::Slots);
    assert_eq!(r.route(b"k").unwrap().len(), 2);
    let r = configure_table(tight(), &TableComponent::ring(PAYLOAD, 3, points(&[(1, 0), (5, 1), (9, 2)])), 3, 2).unwrap();
    assert_eq!(r.table_kind(), shardgate_strategy::TableKind::Ring);
    let mut c = TableComponent::new(ret_area(0, 0, [0; 3]), vec![]);
    c.answer = vec![2, 0];
    let s = tight().load(&c.component()).unwrap();
    let (r, _) = admit(&s, "", &nodes(3), 2, 100).unwrap();
    assert_eq!(r.route(b"k").unwrap(), [2, 0]);
    assert_eq!(r.route_batch(&[b"a".as_slice(), b"b"]).unwrap(), [2, 0, 2, 0]);
}

#[test]
fn huge_tables_are_refused_naming_the_limit() {
    // 2^24 + 1 slot entries (64 MiB of zeros): one over the default limit.
    let len = (1u32 << 24) + 1;
    let mut c = TableComponent::slots(1, BUMP, len, vec![]);
    c.pages = (BUMP + len * 4).div_ceil(65536) + 1;
    let err = refused(configure_table(sandbox(), &c, 3, 1), "huge slot table");
    assert!(matches!(err, StrategyError::BadTable(_)) && err.to_string().contains("max_table_entries"), "{err}");

    // A ring one point over a (smaller) limit.
    let limit = tight().limits().max_table_entries as u32;
    let mut c = TableComponent::ring(BUMP, limit + 1, vec![]);
    c.pages = (BUMP + (limit + 1) * 16).div_ceil(65536) + 1;
    let err = refused(configure_table(tight(), &c, 1, 1), "huge ring");
    assert!(matches!(err, StrategyError::BadTable(_)) && err.to_string().contains("max_table_entries"), "{err}");

    // Lengths that claim more than the guest's memory holds, or more than
    // 4 GiB: the lift fails inside wasmtime, reported as a fault of the call.
    for (what, c) in [
        ("slots past memory", TableComponent::slots(1, PAYLOAD, 0x0100_0000, vec![])),
        ("slots of 4 GiB", TableComponent::slots(1, PAYLOAD, 0x4000_0000, vec![])),
        ("slots of u32::MAX entries", TableComponent::slots(1, PAYLOAD, u32::MAX, vec![])),
        ("ring of u32::MAX points", TableComponent::ring(PAYLOAD, u32::MAX, vec![])),
        ("error string past memory", TableComponent::new(ret_area(1, 0, [u32::MAX - 3, 0, 0]), vec![])),
    ] {
        let mut c = c;
        if what == "error string past memory" {
            // ok = 1 (error): the string is (ptr at offset 4, len at 8).
            c.ret = [0; 20];
            c.ret[0] = 1;
            c.ret[4..8].copy_from_slice(&PAYLOAD.to_le_bytes());
            c.ret[8..12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        }
        let err = refused(configure_table(tight(), &c, 3, 1), what);
        assert!(matches!(err, StrategyError::Trap { call: "configure", .. }), "{what}: {err}");
    }
    assert_baseline_unchanged();
}

#[test]
fn malformed_tables_are_refused_with_the_reason() {
    let cases: Vec<(&str, TableComponent, usize, u32, &str)> = vec![
        ("empty slot table", TableComponent::slots(1, PAYLOAD, 0, vec![]), 3, 1, "not a positive multiple"),
        ("width 0", TableComponent::slots(0, PAYLOAD, 4, words(&[0; 4])), 3, 1, "width is 0"),
        ("width above replicas", TableComponent::slots(3, PAYLOAD, 6, words(&[0, 1, 2, 0, 1, 2])), 3, 2, "width is 3"),
        ("ragged rows", TableComponent::slots(2, PAYLOAD, 5, words(&[0, 1, 1, 2, 2])), 3, 2, "not a positive multiple"),
        ("position out of range", TableComponent::slots(1, PAYLOAD, 4, words(&[0, 1, 3, 2])), 3, 1, "row 2"),
        ("duplicate in a row", TableComponent::slots(2, PAYLOAD, 4, words(&[0, 1, 2, 2])), 3, 2, "appears twice"),
        ("empty ring", TableComponent::ring(PAYLOAD, 0, vec![]), 3, 1, "no points"),
        ("unsorted ring", TableComponent::ring(PAYLOAD, 3, points(&[(5, 0), (1, 1), (9, 2)])), 3, 1, "not sorted"),
        ("ring position out of range", TableComponent::ring(PAYLOAD, 2, points(&[(1, 0), (2, 7)])), 3, 1, "out of range"),
        ("ring too narrow", TableComponent::ring(PAYLOAD, 3, points(&[(1, 0), (2, 0), (3, 0)])), 3, 2, "fewer than the 2"),
    ];
    for (what, c, n, replicas, needle) in cases {
        let err = refused(configure_table(tight(), &c, n, replicas), what);
        assert!(matches!(err, StrategyError::BadTable(_)) && err.to_string().contains(needle), "{what}: {err}");
    }
    // Discriminants that name no case, misaligned lists, text that is not
    // UTF-8: refused by the lift.
    let mut bad_utf8 = TableComponent::new([0; 20], vec![0xff, 0xfe, b'x']);
    bad_utf8.ret[0] = 1;
    bad_utf8.ret[4..8].copy_from_slice(&PAYLOAD.to_le_bytes());
    bad_utf8.ret[8..12].copy_from_slice(&3u32.to_le_bytes());
    for (what, c) in [
        ("result discriminant 2", TableComponent::new(ret_area(2, 0, [0; 3]), vec![])),
        ("table discriminant 3", TableComponent::new(ret_area(0, 3, [0; 3]), vec![])),
        ("table discriminant 255", TableComponent::new(ret_area(0, 255, [0; 3]), vec![])),
        ("misaligned entries", TableComponent::slots(1, PAYLOAD + 1, 1, vec![0; 8])),
        ("misaligned ring", TableComponent::ring(PAYLOAD + 4, 1, vec![0; 32])),
        ("error text not UTF-8", bad_utf8),
    ] {
        let err = refused(configure_table(tight(), &c, 3, 1), what);
        assert!(matches!(err, StrategyError::Trap { call: "configure", .. }), "{what}: {err}");
    }
    assert_baseline_unchanged();
}

/// Arbitrary return areas and payloads for `configure`.
fn any_table_component() -> impl prop::strategy::Strategy<Value = TableComponent> {
    let small = prop_oneof![4 => 0..8u32, 1 => any::<u32>()];
    let ptr = prop_oneof![
        4 => Just(PAYLOAD),
        1 => (0..16u32).prop_map(|o| PAYLOAD + o),
        1 => any::<u32>(),
        1 => Just(0x1_fff0u32),
    ];
    let len = prop_oneof![4 => 0..64u32, 1 => any::<u32>(), 1 => Just(0x0100_0000u32)];
    let payload = prop_oneof![
        proptest::collection::vec(small.clone(), 0..64).prop_map(|w| words(&w)),
        proptest::collection::vec((any::<u64>(), small.clone()), 0..32).prop_map(|mut p| {
            if p.len() % 2 == 0 {
                p.sort();
            }
            points(&p)
        }),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    let ret = prop_oneof![
        4 => (small.clone(), ptr.clone(), len.clone()).prop_map(|(w, p, l)| ret_area(0, 1, [w, p, l])),
        4 => (ptr.clone(), len.clone()).prop_map(|(p, l)| ret_area(0, 2, [p, l, 0])),
        1 => Just(ret_area(0, 0, [0; 3])),
        1 => (ptr, len).prop_map(|(p, l)| ret_area(1, 0, [p, l, 0])),
        1 => any::<[u8; 20]>(),
    ];
    let answer = proptest::collection::vec(small, 0..6);
    (ret, payload, answer).prop_map(|(ret, payload, answer)| {
        let mut c = TableComponent::new(ret, payload);
        c.answer = answer;
        c
    })
}

proptest! {
    #![proptest_config(cases(96))]

    /// Whatever `configure` answers, the host refuses it clearly or routes
    /// with it, every answer checked; earlier routers are untouched.
    #[test]
    fn arbitrary_tables_are_refused_or_routed_correctly(
        c in any_table_component(),
        n in 1..6usize,
        replicas in 1..4u32,
    ) {
        let s = tight().load(&c.component()).unwrap();
        let input = format!("{:?} with {n} nodes, {replicas} replicas", (c.ret, c.payload.len(), &c.answer));
        match s.configure("", &nodes(n), replicas) {
            Err(e) => assert_clear(&e, &input),
            Ok(router) => {
                let width = n.min(replicas as usize);
                for key in keys().iter().take(16) {
                    match router.route(key) {
                        Ok(a) => {
                            prop_assert_eq!(a.len(), width, "{}", input);
                            prop_assert!(a.iter().all(|&p| (p as usize) < n), "{}: {:?}", input, a);
                        }
                        Err(e) => assert_clear(&e, &input),
                    }
                }
                let keys = keys();
                let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                if let Err(e) = router.route_batch(&refs) {
                    assert_clear(&e, &input);
                }
            }
        }
        assert_baseline_unchanged();
    }

    /// Metadata of any bytes: loaded exactly when it follows the rules
    /// (identifiers of [A-Za-z0-9-_.], a one-line description), otherwise
    /// refused; bytes that are not UTF-8 fail the lift.
    #[test]
    fn arbitrary_metadata_is_checked(
        name in prop_oneof![proptest::collection::vec(any::<u8>(), 0..80), "[a-z0-9._-]{1,70}".prop_map(String::into_bytes)],
        version in prop_oneof![proptest::collection::vec(any::<u8>(), 0..40), "[0-9.]{1,40}".prop_map(String::into_bytes)],
        description in prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), "[ -~]{0,250}".prop_map(String::into_bytes)],
    ) {
        let mut c = TableComponent::slots(1, PAYLOAD, 1, words(&[0]));
        (c.name, c.version, c.description) = (name.clone(), version.clone(), description.clone());
        let ident = |s: &[u8], max: usize| !s.is_empty() && s.len() <= max && s.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
        let utf8 = std::str::from_utf8(&description).is_ok();
        let valid = ident(&name, 64) && ident(&version, 32) && utf8 && description.len() <= 200 && !description.contains(&b'\n');
        let input = format!("metadata {:?} {:?} {:?}", String::from_utf8_lossy(&name), String::from_utf8_lossy(&version), String::from_utf8_lossy(&description));
        match tight().load(&c.component()) {
            Ok(s) => {
                prop_assert!(valid, "{}: accepted", input);
                prop_assert_eq!(s.metadata().name.as_bytes(), &name[..]);
            }
            Err(e) => {
                assert_clear(&e, &input);
                prop_assert!(!valid, "{}: refused: {}", input, e);
            }
        }
    }
}

#[test]
fn misbehaving_strategies_never_disturb_configured_routers() {
    // The misbehave component's faults, through the whole admission path.
    let s = tight().load(MISBEHAVE).unwrap();
    let faults = ["trap", "loop", "grow", "out-of-range", "duplicate", "short", "reject-config", "bad-table"];
    let mut configs: Vec<String> = faults.iter().flat_map(|f| [0, 3].map(|after| format!("fault = \"{f}\"\nafter = {after}"))).collect();
    // Only these act inside `configure` itself.
    configs.extend(["trap", "loop", "grow"].map(|f| format!("fault = \"{f}\"\nat = \"configure\"")));
    for config in &configs {
        let err = refused(admit(&s, config, &nodes(4), 2, 50), config);
        assert!(!matches!(err, StrategyError::Engine(_)), "{config}: {err}");
    }
    // Configs that are not TOML, or not the strategy's: named, refused.
    for config in ["fault = ", "fault = \"nope\"", "[[[", "\u{0}", "fault = \"trap\"\nextra = 1"] {
        let err = refused(admit(&s, config, &nodes(4), 2, 50), config);
        assert!(matches!(err, StrategyError::ConfigRejected(_)), "{config:?}: {err}");
    }
    assert_baseline_unchanged();
}

/// The text a strategy returns with `err(...)` from `configure` (and
/// `validate-config`) reaches operators, meta's HTTP error bodies and logs:
/// it must be one bounded line too, whatever the guest sends (newlines,
/// NULs, 20 KB). Found by `arbitrary_tables_are_refused_or_routed_correctly`;
/// fixed in the host by bounding and flattening guest text.
#[test]
fn guest_error_text_is_one_bounded_line() {
    let text = [&b"first line\nsecond line\0"[..], &[b'x'; 20_000]].concat();
    let mut c = TableComponent::new([0; 20], text);
    c.ret[0] = 1;
    c.ret[4..8].copy_from_slice(&PAYLOAD.to_le_bytes());
    c.ret[8..12].copy_from_slice(&(c.payload.len() as u32).to_le_bytes());
    let err = refused(configure_table(tight(), &c, 3, 1), "configure returning a long multi-line error");
    let message = err.to_string();
    assert!(!message.contains('\n') && !message.contains('\0'), "not one line: {:?}", clip(&message));
    assert!(message.len() < 4096, "error message is {} bytes long", message.len());
}
