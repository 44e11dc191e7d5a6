//! The request limits of the key API, in one value that the HTTP handlers
//! and the batch codec of node and proxy share, so that a proxy in front of
//! nodes rejects exactly what a node would, with the same messages (each
//! naming its own config key: `node.max_key_size` or `proxy.max_key_size`).
//! [`Limits::validate`] holds the rules both roles' configs obey.

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

/// Default of `<role>.max_key_size`: 1 KiB.
pub const DEFAULT_MAX_KEY_SIZE: u64 = 1024;
/// Default of `<role>.max_value_size`: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: u64 = 1024 * 1024;
/// Default TTL of a write that gives none (`node.default_ttl`): 1 h.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default of `<role>.max_ttl`: 30 days.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default of `<role>.max_batch_keys`.
pub const DEFAULT_MAX_BATCH_KEYS: u32 = 1024;
/// Default of `<role>.max_batch_size`: 32 MiB.
pub const DEFAULT_MAX_BATCH_SIZE: u64 = 32 * 1024 * 1024;

/// A limit that cannot work, named by its config key (`node.max_ttl`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidLimit {
    pub key: String,
    pub message: String,
}

impl Limits {
    /// The defaults, as enforced by `role`.
    pub fn defaults(role: &'static str) -> Limits {
        Limits {
            role,
            max_key_size: DEFAULT_MAX_KEY_SIZE as usize,
            max_value_size: DEFAULT_MAX_VALUE_SIZE as usize,
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS as usize,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE as usize,
        }
    }

    /// Checks every limit and the relations between them; the first that
    /// cannot work is named with this role's config key.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let invalid = |field: &str, message: String| InvalidLimit { key: self.name(field), message };
        let key = self.max_key_size as u64;
        let value = self.max_value_size as u64;
        if key == 0 || key > u64::from(u16::MAX) {
            return Err(invalid("max_key_size", format!("must be between 1 and 65535 bytes, got {key}")));
        }
        if value == 0 || value > MAX_VALUE_SIZE_CEILING {
            return Err(invalid("max_value_size", format!("must be between 1 and {MAX_VALUE_SIZE_CEILING} bytes, got {value}")));
        }
        if self.default_ttl < Duration::from_secs(1) {
            return Err(invalid("default_ttl", "must be at least 1s".into()));
        }
        if self.max_ttl < Duration::from_secs(1) || self.max_ttl.as_secs() > u64::from(u32::MAX) {
            return Err(invalid("max_ttl", format!("must be between 1s and {}s", u32::MAX)));
        }
        if self.default_ttl > self.max_ttl {
            return Err(invalid(
                "default_ttl",
                format!(
                    "{} is longer than {} ({})",
                    humantime::format_duration(self.default_ttl),
                    self.name("max_ttl"),
                    humantime::format_duration(self.max_ttl)
                ),
            ));
        }
        if self.max_batch_keys == 0 {
            return Err(invalid("max_batch_keys", "must be at least 1".into()));
        }
        let batch = self.max_batch_size as u64;
        if batch < value + key + 64 {
            return Err(invalid(
                "max_batch_size",
                format!(
                    "{batch} bytes cannot hold one key of {} and one value of {} ({} bytes with framing)",
                    self.name("max_key_size"),
                    self.name("max_value_size"),
                    value + key + 64
                ),
            ));
        }
        if batch > u64::from(u32::MAX) {
            return Err(invalid("max_batch_size", format!("must be at most {} bytes", u32::MAX)));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// The defaults as a node enforces them.
    fn default() -> Self {
        Limits::defaults("node")
    }
}
