//! `jump`: Lamping and Veach's jump consistent hash (2014).
//!
//! O(1) memory, O(ln N) time, no table to store. Bucket i is the i-th node of
//! the list, so keys move minimally when nodes are appended or the last one is
//! removed (the list keeps join order); removing another node moves more, as
//! `shardgate strategy check` shows. Weights are not supported: all nodes must
//! have the same weight. Replica k is jump(mix(hash, k)), skipping positions
//! already chosen.
//!
//! By default the host routes with a table of `slots` rows of jump's answers
//! for slot hashes (one native lookup per key); `slots = 0` calls jump per key
//! in the strategy, with no table at all.
//!
//! Config (TOML, every key optional):
//! ```toml
//! slots = 262144  # rows (default 2^18); 0 = no table, jump per key
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{
    DEFAULT_SLOTS, MAX_SLOTS, Metadata, Node, Strategy, Table, export_strategy, key_hash, mix64, parse_config, tabulate,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    slots: Option<u32>,
}

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("jump", text)?;
    if c.slots.is_some_and(|s| s > MAX_SLOTS) {
        return Err(format!("jump config: slots must be at most {MAX_SLOTS}, got {}", c.slots.unwrap()));
    }
    Ok(c)
}

/// Jump consistent hash: the bucket in [0, buckets) of a 64-bit key.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// `want` distinct buckets for `hash`, replica k from a re-mixed hash.
pub fn jump_top(hash: u64, buckets: u32, want: usize, out: &mut Vec<u32>) {
    let base = out.len();
    let mut k = 0u64;
    while out.len() - base < want {
        let h = if k == 0 { hash } else { mix64(hash.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15))) };
        let b = jump(h, buckets);
        if !out[base..].contains(&b) {
            out.push(b);
        }
        k += 1;
        if k > 64 * buckets as u64 {
            // Unreachable in practice; fill deterministically rather than spin.
            for b in 0..buckets {
                if out.len() - base == want {
                    break;
                }
                if !out[base..].contains(&b) {
                    out.push(b);
                }
            }
        }
    }
}

pub struct Jump {
    buckets: u32,
    width: usize,
    table: Option<Table>,
}

impl Strategy for Jump {
    fn metadata() -> Metadata {
        Metadata::new("jump", "0.1.0", "jump consistent hash: O(1) memory, minimal movement for appended nodes")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        if let Some(n) = nodes.iter().find(|n| n.weight != nodes[0].weight) {
            return Err(format!(
                "jump does not support weights: node {} has weight {} but node {} has {}; use rendezvous or maglev",
                n.id, n.weight, nodes[0].id, nodes[0].weight
            ));
        }
        let buckets = nodes.len() as u32;
        let width = (replicas as usize).min(nodes.len());
        let slots = c.slots.unwrap_or(DEFAULT_SLOTS);
        let table = (slots > 0).then(|| tabulate(slots, width, |h, out| jump_top(h, buckets, width, out)));
        Ok(Jump { buckets, width, table })
    }

    fn table(&self) -> Option<Table> {
        self.table.clone()
    }

    fn route(&self, key: &[u8], out: &mut Vec<u32>) {
        let h = key_hash(key);
        match &self.table {
            Some(t) => {
                t.route(h, self.width, out);
            }
            None => jump_top(h, self.buckets, self.width, out),
        }
    }
}

export_strategy!(Jump);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_and_uniform_spread() {
        assert_eq!(jump(0, 1), 0);
        assert_eq!(jump(u64::MAX, 1), 0);
        let mut seen = [0; 10];
        for k in 0..100_000u64 {
            seen[jump(mix64(k), 10) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (9_500..10_500).contains(&c)), "{seen:?}");
    }

    #[test]
    fn appending_a_bucket_moves_only_to_it() {
        for k in 0..50_000u64 {
            let h = mix64(k);
            let (a, b) = (jump(h, 10), jump(h, 11));
            assert!(a == b || b == 10);
        }
    }

    #[test]
    fn weights_refused() {
        let nodes = [Node::new("a", 1.0, ""), Node::new("b", 2.0, "")];
        assert!(Jump::configure("", &nodes, 1).err().unwrap().contains("does not support weights"));
    }

    #[test]
    fn replicas_distinct() {
        let mut out = vec![];
        jump_top(42, 3, 3, &mut out);
        let mut s = out.clone();
        s.sort();
        assert_eq!(s, [0, 1, 2]);
    }
}
