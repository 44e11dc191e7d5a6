//! The `[node]` section of the Shardgate config file: what a cache node
//! listens on, how much memory it may use, and the request limits it
//! enforces. Parsed strictly (unknown keys are errors) and checked by
//! [`NodeConfig::validate`] before [`crate::run`] starts serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::limits::{
    DEFAULT_MAX_BATCH_KEYS, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_KEY_SIZE, DEFAULT_MAX_TTL, DEFAULT_MAX_VALUE_SIZE, DEFAULT_TTL, Limits,
    MAX_CONTENT_TYPE_LEN,
};
use crate::registration::RegisterConfig;
use crate::store::{ENTRY_OVERHEAD_BYTES, EvictionPolicy};

/// `[node]`: the cache node role.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Address the HTTP API listens on (`--listen` overrides it).
    pub listen: SocketAddr,
    /// Upper bound on the bytes the store accounts for: keys + values +
    /// content types + a fixed per-entry overhead.
    pub memory_limit: ByteSize,
    /// Largest key, in bytes after percent-decoding.
    pub max_key_size: ByteSize,
    /// Largest value, in bytes.
    pub max_value_size: ByteSize,
    /// TTL of a write that does not give `?ttl=`.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Largest TTL a write may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Most keys in one batch request.
    pub max_batch_keys: u32,
    /// Largest batch request body, and the size at which a batch read
    /// response stops including values.
    pub max_batch_size: ByteSize,
    /// Most simultaneously open client connections; further connections get
    /// a 503 and are closed.
    pub max_connections: u32,
    /// Time a client has to send a complete request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// On shutdown, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Which entries go first when the store is full.
    pub eviction_policy: EvictionPolicy,
    /// When set, every `/v1/` request must carry `Authorization: Bearer
    /// <token>` (the proxies' token); unset (the default) leaves the data
    /// API open. Health, readiness, metrics and the OpenAPI document stay
    /// open either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_token: Option<String>,
    /// Like `data_token`, read from this file when the node starts
    /// (surrounding whitespace trimmed), so the secret stays out of the
    /// config file. At most one of the two may be set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_token_file: Option<PathBuf>,
    /// Join the cluster by itself: `{ meta = ["http://..."], id = "...",
    /// advertise = "http://...", weight = 1, zone = "", drain = "5s" }`
    /// (see [`crate::registration`]). Unset (the default): an operator adds
    /// the node (`shardgate ctl nodes add`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<RegisterConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            memory_limit: ByteSize::mib(256),
            max_key_size: ByteSize::b(DEFAULT_MAX_KEY_SIZE),
            max_value_size: ByteSize::b(DEFAULT_MAX_VALUE_SIZE),
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS,
            max_batch_size: ByteSize::b(DEFAULT_MAX_BATCH_SIZE),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            eviction_policy: EvictionPolicy::Lru,
            data_token: None,
            data_token_file: None,
            register: None,
        }
    }
}

/// A `[node]` value that cannot work; `key` is the full key path.
pub use shardgate_role::config::ConfigError;

pub use shardgate_auth::MAX_TOKEN_LEN;

/// A token must be sendable as an `Authorization: Bearer` value
/// (`shardgate_auth::validate`).
fn check_token(key: &'static str, token: &str) -> Result<(), ConfigError> {
    shardgate_auth::validate(token).map_err(|reason| ConfigError::new(key, reason))
}

impl NodeConfig {
    /// Checks every value and the relations between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The key API's limits obey the same rules in node and proxy.
        self.limits().validate().map_err(|e| ConfigError::new(e.key, e.message))?;
        // The largest entry must fit, or the store would drop it on insert.
        let memory = self.memory_limit.as_u64();
        let largest_entry = self.largest_entry();
        if memory < largest_entry {
            return Err(ConfigError::new(
                "node.memory_limit",
                format!(
                    "{memory} bytes cannot hold one entry of node.max_key_size + node.max_value_size \
                     + overhead = {largest_entry} bytes"
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("node.max_connections", "must be at least 1"));
        }
        for (key, d) in [("node.header_read_timeout", self.header_read_timeout), ("node.body_read_timeout", self.body_read_timeout)] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        if self.data_token.is_some() && self.data_token_file.is_some() {
            return Err(ConfigError::new("node.data_token", "set node.data_token or node.data_token_file, not both"));
        }
        if let Some(token) = &self.data_token {
            check_token("node.data_token", token)?;
        }
        if let Some(register) = &self.register {
            register.validate(self.shutdown_timeout)?;
        }
        Ok(())
    }

    /// The data token in force: `node.data_token`, or the contents of
    /// `node.data_token_file` (trimmed, checked like `node.data_token`), or
    /// `None` when neither is set.
    pub fn resolve_data_token(&self) -> Result<Option<String>, crate::NodeError> {
        if let Some(token) = &self.data_token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.data_token_file else {
            return Ok(None);
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| crate::NodeError::TokenFile { path: path.display().to_string(), source })?;
        let token = text.trim().to_string();
        check_token("node.data_token_file", &token)?;
        Ok(Some(token))
    }

    /// Weighed bytes of the largest entry a request can create:
    /// `node.max_key_size` + `node.max_value_size` + the longest content
    /// type + the per-entry overhead.
    pub fn largest_entry(&self) -> u64 {
        self.max_key_size.as_u64() + self.max_value_size.as_u64() + MAX_CONTENT_TYPE_LEN as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// The request limits this config implies (what HTTP handlers and the
    /// batch codec enforce).
    pub fn limits(&self) -> Limits {
        Limits {
            role: "node",
            max_key_size: self.max_key_size.as_u64() as usize,
            max_value_size: self.max_value_size.as_u64() as usize,
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            max_batch_keys: self.max_batch_keys as usize,
            max_batch_size: self.max_batch_size.as_u64() as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn sizes_parse_from_strings_and_integers() {
        let c: NodeConfig = toml::from_str("memory_limit = \"64MiB\"\nmax_value_size = 4096\ndefault_ttl = \"5m\"").unwrap();
        assert_eq!(c.memory_limit.as_u64(), 64 * 1024 * 1024);
        assert_eq!(c.max_value_size.as_u64(), 4096);
        assert_eq!(c.default_ttl, Duration::from_secs(300));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = toml::from_str::<NodeConfig>("listen = \"127.0.0.1:1\"\nmax_valeu_size = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_valeu_size"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn validate_names_the_key_path() {
        let c = NodeConfig { default_ttl: Duration::from_secs(100), max_ttl: Duration::from_secs(10), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "node.default_ttl");
        let c = NodeConfig { memory_limit: ByteSize::kib(64), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "node.memory_limit");
        let c = NodeConfig { max_key_size: ByteSize::b(0), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "node.max_key_size");
        let c = NodeConfig { max_batch_size: ByteSize::kib(4), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "node.max_batch_size");
        let c = NodeConfig { max_connections: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "node.max_connections: must be at least 1");
    }

    #[test]
    fn data_token_is_checked() {
        let with = |token: &str| NodeConfig { data_token: Some(token.into()), ..Default::default() };
        with("abc-123_XYZ").validate().unwrap();
        assert_eq!(with("").validate().unwrap_err().key, "node.data_token");
        assert_eq!(with("has space").validate().unwrap_err().key, "node.data_token");
        assert_eq!(with("naïve").validate().unwrap_err().key, "node.data_token");
        let both = NodeConfig { data_token: Some("a".into()), data_token_file: Some("/nonexistent".into()), ..Default::default() };
        assert!(both.validate().unwrap_err().to_string().contains("not both"));
    }

    #[test]
    fn data_token_file_is_read_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("shardgate-node-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = NodeConfig { data_token_file: Some(path.clone()), ..Default::default() };
        config.validate().unwrap();
        assert_eq!(config.resolve_data_token().unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        let err = config.resolve_data_token().unwrap_err().to_string();
        assert!(err.contains("node.data_token_file"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = config.resolve_data_token().unwrap_err().to_string();
        assert!(err.contains("node.data_token_file"), "{err}");
        assert_eq!(NodeConfig::default().resolve_data_token().unwrap(), None);
    }
}
