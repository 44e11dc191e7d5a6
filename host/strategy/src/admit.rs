//! Admission: the checks a strategy must pass before meta commits it as
//! active (and the proxy before it swaps to it).
//!
//! Two fresh instances are configured with the same (config, nodes,
//! replicas); their routing tables must be identical, and a sample of keys
//! routed through both must get identical, in-range, duplicate-free answers
//! within the fuel budget.

use crate::error::StrategyError;
use crate::router::{Router, TableKind};
use crate::sandbox::Strategy;
use shardgate_strategy_sdk::Node as NodeSpec;

/// What admission found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Admission {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub table: TableKind,
    pub width: usize,
    pub sampled_keys: usize,
}

/// Deterministic sample keys: text keys of several shapes plus edge cases
/// (empty, binary, 1 KiB).
pub fn sample_keys(count: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0xff; 3], vec![0u8; 1024], b"/".to_vec()];
    let mut i = 0u64;
    while keys.len() < count.max(keys.len()) {
        keys.push(match i % 3 {
            0 => format!("user:{i}").into_bytes(),
            1 => format!("session/{:016x}", shardgate_strategy_sdk::mix64(i)).into_bytes(),
            _ => shardgate_strategy_sdk::mix64(i).to_le_bytes().to_vec(),
        });
        i += 1;
    }
    keys.truncate(count.max(4));
    keys
}

/// Admits (strategy, config, nodes, replicas) or says why not.
pub fn admit(
    strategy: &Strategy,
    config: &str,
    nodes: &[NodeSpec],
    replicas: u32,
    samples: usize,
) -> Result<(Router, Admission), StrategyError> {
    strategy.validate_config(config)?;
    let a = strategy.configure(config, nodes, replicas)?;
    let b = strategy.configure(config, nodes, replicas)?;
    if a.table() != b.table() {
        return Err(StrategyError::NonDeterministic("two instances configured identically returned different routing tables".into()));
    }
    let keys = sample_keys(samples);
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let batch_a = a.route_batch(&refs)?;
    let width = a.width();
    for (i, key) in refs.iter().enumerate() {
        let single = b.route(key)?;
        if single != batch_a[i * width..(i + 1) * width] {
            return Err(StrategyError::NonDeterministic(format!(
                "key {:?} routed to {:?} by one instance and {:?} by another",
                String::from_utf8_lossy(key),
                &batch_a[i * width..(i + 1) * width],
                single
            )));
        }
    }
    let admission = Admission {
        name: strategy.metadata().name.clone(),
        version: strategy.metadata().version.clone(),
        hash: strategy.hash().to_string(),
        table: a.table_kind(),
        width,
        sampled_keys: keys.len(),
    };
    Ok((a, admission))
}
