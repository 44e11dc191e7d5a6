//! `ketama`: consistent hashing on a ring of virtual nodes.
//!
//! Every node gets `vnodes * weight / mean weight` points (at least one) on
//! a 64-bit hash ring; a key belongs to the first point clockwise of its hash,
//! replicas to the next distinct nodes. The strategy hands the host the ring;
//! the host binary-searches it natively, with no WebAssembly call per key.
//!
//! Config (TOML, every key optional):
//! ```toml
//! vnodes = 160    # points per node of mean weight, 1..=4096
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{Metadata, Node, RingPoint, Strategy, Table, export_strategy, key_hash, mix64, parse_config, ring_walk};

pub const DEFAULT_VNODES: u32 = 160;
pub const MAX_VNODES: u32 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_vnodes")]
    vnodes: u32,
}

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("ketama", text)?;
    if c.vnodes == 0 || c.vnodes > MAX_VNODES {
        return Err(format!("ketama config: vnodes must be between 1 and {MAX_VNODES}, got {}", c.vnodes));
    }
    Ok(c)
}

pub struct Ketama {
    ring: Vec<RingPoint>,
    width: usize,
}

/// Builds the sorted ring for `nodes` with `vnodes` points per node of mean
/// weight.
pub fn build_ring(nodes: &[Node], vnodes: u32) -> Vec<RingPoint> {
    let mean = nodes.iter().map(|n| n.weight).sum::<f64>() / nodes.len() as f64;
    let mut ring = Vec::new();
    for (pos, node) in nodes.iter().enumerate() {
        let count = ((vnodes as f64 * node.weight / mean).round() as u64).max(1);
        let seed = key_hash(node.id.as_bytes());
        for v in 0..count {
            ring.push(RingPoint { hash: mix64(seed.wrapping_add(v.wrapping_mul(0x9e37_79b9_7f4a_7c15))), position: pos as u32 });
        }
    }
    ring.sort_unstable();
    ring
}

impl Strategy for Ketama {
    fn metadata() -> Metadata {
        Metadata::new("ketama", "0.1.0", "consistent hashing with weighted virtual nodes (ketama ring)")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        Ok(Ketama { ring: build_ring(nodes, c.vnodes), width: (replicas as usize).min(nodes.len()) })
    }

    fn table(&self) -> Option<Table> {
        Some(Table::Ring(self.ring.clone()))
    }

    fn route(&self, key: &[u8], out: &mut Vec<u32>) {
        ring_walk(&self.ring, key_hash(key), self.width, out);
    }
}

export_strategy!(Ketama);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(weights: &[f64]) -> Vec<Node> {
        weights.iter().enumerate().map(|(i, &w)| Node::new(format!("n{i}"), w, "")).collect()
    }

    #[test]
    fn vnodes_follow_weight() {
        let ring = build_ring(&nodes(&[1.0, 3.0]), 100);
        let heavy = ring.iter().filter(|p| p.position == 1).count();
        assert_eq!(ring.len(), 50 + 150);
        assert_eq!(heavy, 150);
    }

    #[test]
    fn replicas_are_distinct() {
        let s = Ketama::configure("vnodes = 16", &nodes(&[1.0; 5]), 3).unwrap();
        for k in 0..1000u32 {
            let mut out = vec![];
            s.route(&k.to_be_bytes(), &mut out);
            assert_eq!(out.len(), 3);
            assert!(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        }
    }

    #[test]
    fn adding_a_node_only_takes_keys() {
        let before = Ketama::configure("", &nodes(&[1.0; 4]), 1).unwrap();
        let after = Ketama::configure("", &nodes(&[1.0; 5]), 1).unwrap();
        for k in 0..10_000u32 {
            let (mut a, mut b) = (vec![], vec![]);
            before.route(&k.to_be_bytes(), &mut a);
            after.route(&k.to_be_bytes(), &mut b);
            assert!(a == b || b[0] == 4, "key {k} moved between old nodes");
        }
    }

    #[test]
    fn bad_vnodes_rejected() {
        assert!(Ketama::validate_config("vnodes = 0").unwrap_err().contains("vnodes must be"));
        assert!(Ketama::validate_config("vnodes = \"x\"").unwrap_err().contains("line 1"));
    }
}
