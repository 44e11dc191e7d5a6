//! One proptest configuration for every property test: a fixed number of
//! cases from a fixed seed, so every run (and CI) tests the same inputs;
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further.

use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// The seed every run starts from unless `PROPTEST_RNG_SEED` is set.
pub const SEED: u64 = 0x5eed_0007;

/// `default` cases from [`SEED`]; `PROPTEST_CASES` and `PROPTEST_RNG_SEED`
/// (proptest's own variables) replace either. No regression files are
/// written into the source tree: a failure prints its input.
pub fn cases(default: u32) -> Config {
    let base = Config::default();
    let set = |var: &str| std::env::var_os(var).is_some();
    Config {
        cases: if set("PROPTEST_CASES") { base.cases } else { default },
        rng_seed: if set("PROPTEST_RNG_SEED") { base.rng_seed } else { RngSeed::Fixed(SEED) },
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..base
    }
}
