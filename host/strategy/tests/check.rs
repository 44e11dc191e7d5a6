//! The quality kit over the built-in strategies and a broken one.

use shardgate_builtins::{BUILTINS, MISBEHAVE, builtin};
use shardgate_strategy::check::{CheckOptions, check};
use shardgate_strategy::{Limits, Sandbox};

fn opts(nodes: usize, keys: usize) -> CheckOptions {
    CheckOptions { nodes, keys, ..CheckOptions::default() }
}

#[test]
fn every_builtin_passes_the_kit() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    for b in BUILTINS {
        let s = sandbox.load(b.component).unwrap();
        let mut steps = 0;
        let r = check(&s, &opts(10, 40_000), |_| steps += 1).unwrap();
        assert!(r.passed(), "{}: {:?}", b.name, r.failures);
        assert!(r.deterministic);
        assert!(steps >= 5, "progress is reported");
        assert_eq!(r.removals.len(), 10);
        assert!(r.balance.peak_over_mean < 1.35, "{}: {:?}", b.name, r.balance);
        // Adding one node moves about its share (1/11), never wildly more.
        assert!(r.add.moved < 2.0 * r.add.ideal, "{}: {:?}", b.name, r.add);
        let text = r.to_string();
        assert!(text.contains("result               PASS"), "{text}");
    }
}

#[test]
fn consistent_strategies_never_move_keys_between_unaffected_nodes() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    for name in ["rendezvous", "ketama", "pinned"] {
        let s = sandbox.load(builtin(name).unwrap().component).unwrap();
        let r = check(&s, &opts(8, 20_000), |_| {}).unwrap();
        assert_eq!(r.add.between_unaffected, 0.0, "{name}");
        for m in &r.removals {
            assert_eq!(m.between_unaffected, 0.0, "{name} {}", m.change);
        }
    }
    // Jump: appending is minimal; removing the last bucket is minimal too.
    let s = sandbox.load(builtin("jump").unwrap().component).unwrap();
    let r = check(&s, &opts(8, 20_000), |_| {}).unwrap();
    assert_eq!(r.add.between_unaffected, 0.0);
    assert_eq!(r.removals.last().unwrap().between_unaffected, 0.0);
}

#[test]
fn rendezvous_balance_is_near_the_noise_floor() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let s = sandbox.load(builtin("rendezvous").unwrap().component).unwrap();
    let r = check(&s, &opts(10, 200_000), |_| {}).unwrap();
    // Slot tabulation adds a little imbalance on top of sampling noise.
    assert!(r.balance.peak_over_mean < r.balance.noise_peak_over_mean + 0.03, "{:?}", r.balance);
}

#[test]
fn a_strategy_answering_out_of_range_fails_the_kit() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let s = sandbox.load(MISBEHAVE).unwrap();
    let opts = CheckOptions { config: "fault = \"out-of-range\"\nafter = 100".into(), ..opts(4, 2_000) };
    let r = check(&s, &opts, |_| {}).unwrap();
    assert!(!r.passed());
    assert!(r.failures.iter().any(|f| f.contains("out of range")), "{:?}", r.failures);
    assert!(r.to_string().contains("FAIL"));
}
