//! The request limits a node enforces, in one value that HTTP handlers, the
//! batch codec and (later) the proxy share, so that a proxy in front of
//! nodes rejects exactly what a node would, with the same messages (each
//! naming its own config key: `node.max_key_size` or `proxy.max_key_size`).

use std::time::Duration;

/// Largest `node.max_value_size` accepted: values travel with u32 lengths in
/// batches and the store weighs entries with u32.
pub const MAX_VALUE_SIZE_CEILING: u64 = 512 * 1024 * 1024;

/// Longest `Content-Type` stored with a value, in bytes (the batch format
/// gives it a one-byte length).
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Limits on one request. Error messages name them by their config key
/// (`node.max_key_size`, or `proxy.max_key_size` in a proxy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The config table these limits come from (`node` or `proxy`): error
    /// messages name `<role>.max_key_size` and so on.
    pub role: &'static str,
    /// `node.max_key_size`: bytes of a key after percent-decoding.
    pub max_key_size: usize,
    /// `node.max_value_size`: bytes of a value.
    pub max_value_size: usize,
    /// `node.default_ttl`: TTL of a write that gives none.
    pub default_ttl: Duration,
    /// `node.max_ttl`: largest TTL a write may ask for.
    pub max_ttl: Duration,
    /// `node.max_batch_keys`: entries in one batch request.
    pub max_batch_keys: usize,
    /// `node.max_batch_size`: bytes of a batch request body; also where a
    /// batch read response stops including values.
    pub max_batch_size: usize,
}

impl Limits {
    /// The config key of the limit `field`, e.g. `node.max_key_size`.
    pub fn name(&self, field: &str) -> String {
        format!("{}.{field}", self.role)
    }
}

impl Default for Limits {
    fn default() -> Self {
        crate::NodeConfig::default().limits()
    }
}
