//! Logs of the code under test, captured by libtest per test.

/// A test-writer subscriber filtered by `RUST_LOG`, or `warn`. Calling it
/// again (or after another test did) does nothing.
pub fn init_tracing() {
    init_tracing_with("warn");
}

/// As [`init_tracing`], with `default` as the filter when `RUST_LOG` is
/// not set.
pub fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
