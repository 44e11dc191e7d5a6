//! `panicky`: a test strategy whose `configure` always panics, the empty
//! config (the one upload admission configures with) included, so the
//! host's tests can show that the panic message reaches the operator:
//! `strategy check`, `ctl strategy upload` (never uploaded in production;
//! built beside the real strategies for the tests).

use shardgate_strategy_sdk::{Metadata, Node, Strategy, export_strategy};

/// What every `configure` panics with.
pub const MESSAGE: &str = "panicky: configure panics on purpose";

pub struct Panicky;

impl Strategy for Panicky {
    fn metadata() -> Metadata {
        Metadata::new("panicky", "0.1.0", "test strategy: configure always panics")
    }

    fn validate_config(_text: &str) -> Result<(), String> {
        Ok(())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        panic!("{MESSAGE} (config of {} bytes, {} nodes, {replicas} replicas)", text.len(), nodes.len());
    }

    fn route(&self, _key: &[u8], _out: &mut Vec<u32>) {
        unreachable!("configure never succeeds")
    }
}

export_strategy!(Panicky);
