//! Everything that can go wrong loading, configuring or calling a strategy.
//! Each variant is a clear one-line reason; callers map them to HTTP status
//! codes with [`StrategyError::http_status`] (meta at admission time, the
//! proxy at routing time).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum StrategyError {
    #[error("component is {size} bytes, over the limit of {limit} bytes (max_component_bytes)")]
    TooLarge { size: usize, limit: usize },

    #[error("not a WebAssembly file: it does not start with the \\0asm magic")]
    NotWasm,

    #[error(
        "a core WebAssembly module, not a component: build the strategy with `cargo build --target wasm32-wasip2` (or `wasm-tools component new`)"
    )]
    NotAComponent,

    #[error("invalid component: {0}")]
    Invalid(String),

    #[error("component imports {}, which a strategy may not use: routing must be a pure function of (config, nodes, key)", .0.join(", "))]
    ForbiddenImports(Vec<String>),

    #[error("component does not implement the shardgate:strategy/strategy@0.1.0 world: {0}")]
    WrongWorld(String),

    #[error("strategy metadata is invalid: {0}")]
    BadMetadata(String),

    #[error("strategy rejected its config: {0}")]
    ConfigRejected(String),

    #[error("invalid node list: {0}")]
    BadNodes(String),

    #[error("strategy trapped in `{call}`: {message}")]
    Trap { call: &'static str, message: String },

    #[error("strategy ran out of fuel in `{call}`: its budget of {fuel} units is exhausted (an endless loop, or set a larger {limit})")]
    OutOfFuel { call: &'static str, fuel: u64, limit: &'static str },

    #[error("strategy exceeded its memory limit of {limit} bytes in `{call}` (memory_bytes)")]
    MemoryLimit { call: &'static str, limit: usize },

    #[error("strategy answered {answer:?} for a key: {reason}")]
    BadAnswer { answer: Vec<u32>, reason: String },

    #[error("strategy returned an invalid routing table: {0}")]
    BadTable(String),

    #[error("strategy is not deterministic: {0}")]
    NonDeterministic(String),

    #[error("component bytes hash to sha256 {actual}, not the {expected} they were fetched as")]
    HashMismatch { expected: String, actual: String },

    #[error("wasmtime: {0}")]
    Engine(String),
}

impl StrategyError {
    /// The HTTP status that fits the error when a client caused it: 413 for
    /// an oversized upload, 422 for a component or config that fails
    /// admission, 502 for a fault while routing a request, 500 for an engine
    /// failure.
    pub fn http_status(&self) -> u16 {
        match self {
            StrategyError::TooLarge { .. } => 413,
            StrategyError::Engine(_) => 500,
            _ => 422,
        }
    }

    /// True for faults of a configured strategy at routing time (a trap, an
    /// exhausted budget, a bad answer): the proxy counts them and falls back.
    pub fn is_routing_fault(&self) -> bool {
        matches!(
            self,
            StrategyError::Trap { .. }
                | StrategyError::OutOfFuel { .. }
                | StrategyError::MemoryLimit { .. }
                | StrategyError::BadAnswer { .. }
        )
    }
}
