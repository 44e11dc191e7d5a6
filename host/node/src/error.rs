//! [`NodeError`]: what stops the node role itself. What a request can fail
//! with is the key API's [`shardgate_api::ApiError`].

use crate::config::ConfigError;

/// Why the node role stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node config: {0}")]
    Config(#[from] ConfigError),
    /// `node.data_token_file` could not be read.
    #[error("node.data_token_file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listener address: {0}")]
    Listener(#[source] std::io::Error),
}
