//! The shape of a config error, shared by every role: the full key path
//! (`node.max_value_size`, `meta.members[0].addr`, `proxy.tls.cert`) and
//! what is wrong with its value. Each role's `validate` returns it before
//! the role starts serving; `shardgate serve` / `config check` put the file
//! and line in front.

/// A config value that cannot work. Display: `{key}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Full key path, e.g. `node.max_value_size`.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    /// The error for `key` (a full key path).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_key_colon_message() {
        let e = ConfigError::new("node.max_connections", "must be at least 1");
        assert_eq!(e.to_string(), "node.max_connections: must be at least 1");
        assert_eq!(e.key, "node.max_connections");
    }
}
