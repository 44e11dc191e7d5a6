//! `maglev`: Google's Maglev lookup table (NSDI '16), weighted.
//!
//! Each node walks its own permutation of the M table slots (offset and skip
//! from the hash of its id) and claims the next free slot, in turns weighted
//! by `weight / max weight`, until the table is full. Replicas: the next
//! distinct owners after a key's slot. The host indexes the table natively.
//!
//! Table size M: a key's slot is `fastrange(hash, M)`, so M must not change
//! with membership or nearly every key moves. The default is the paper's
//! M = 65537, which is at least 100 x N up to 655 nodes; beyond that M is the
//! next prime >= 100 x N (and then changes with N). `table_factor = F` sizes
//! M as the next prime >= F x N instead, for a cluster that never resizes.
//!
//! Config (TOML, every key optional):
//! ```toml
//! table_size = 65537   # an explicit prime M (default 65537, or 100 x N)
//! table_factor = 100   # or: M = next prime >= table_factor * nodes
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{Metadata, Node, Strategy, Table, export_strategy, fastrange, key_hash, mix64, parse_config};

pub const MAX_TABLE: u64 = 1 << 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    table_factor: Option<u64>,
    table_size: Option<u64>,
}

/// The paper's table size, the default while it is >= 100 x N.
pub const DEFAULT_TABLE: u64 = 65_537;

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("maglev", text)?;
    if let Some(f) = c.table_factor {
        if f == 0 || f > 10_000 {
            return Err(format!("maglev config: table_factor must be between 1 and 10000, got {f}"));
        }
        if c.table_size.is_some() {
            return Err("maglev config: set table_size or table_factor, not both".into());
        }
    }
    if let Some(m) = c.table_size {
        if !(2..=MAX_TABLE).contains(&m) || !is_prime(m) {
            return Err(format!("maglev config: table_size must be a prime between 2 and {MAX_TABLE}, got {m}"));
        }
    }
    Ok(c)
}

pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

pub fn next_prime(mut n: u64) -> u64 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// Populates the Maglev table: entry s is the owning node position.
pub fn populate(nodes: &[Node], m: u64) -> Vec<u32> {
    let n = nodes.len();
    let max_w = nodes.iter().map(|x| x.weight).fold(0.0, f64::max);
    let (offset, skip): (Vec<u64>, Vec<u64>) = nodes
        .iter()
        .map(|x| {
            let h = key_hash(x.id.as_bytes());
            (h % m, mix64(h) % (m - 1) + 1)
        })
        .unzip();
    let mut next = vec![0u64; n];
    let mut credit = vec![0.0f64; n];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0u64;
    while filled < m {
        for i in 0..n {
            credit[i] += nodes[i].weight / max_w;
            while credit[i] >= 1.0 {
                credit[i] -= 1.0;
                loop {
                    let slot = (offset[i] + next[i] * skip[i]) % m;
                    next[i] += 1;
                    if table[slot as usize] == u32::MAX {
                        table[slot as usize] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    return table;
                }
            }
        }
    }
    table
}

pub struct Maglev {
    owners: Vec<u32>,
    table: Vec<u32>,
    width: usize,
}

impl Strategy for Maglev {
    fn metadata() -> Metadata {
        Metadata::new("maglev", "0.1.0", "Maglev lookup table (M = 65537 by default), weighted turns")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        let n = nodes.len() as u64;
        let m = match (c.table_size, c.table_factor) {
            (Some(m), _) => m,
            (None, Some(f)) => next_prime(f * n),
            (None, None) => DEFAULT_TABLE.max(next_prime(100 * n)),
        };
        if m > MAX_TABLE {
            return Err(format!("maglev: table size {m} exceeds {MAX_TABLE}; lower table_factor"));
        }
        let owners = populate(nodes, m);
        let width = (replicas as usize).min(nodes.len());
        let mut table = Vec::with_capacity(owners.len() * width);
        for s in 0..owners.len() {
            let start = table.len();
            let mut i = s;
            while table.len() - start < width {
                let p = owners[i % owners.len()];
                if !table[start..].contains(&p) {
                    table.push(p);
                }
                i += 1;
                if i - s > owners.len() {
                    return Err(format!("maglev: table of {m} slots holds fewer than {width} distinct nodes"));
                }
            }
        }
        Ok(Maglev { owners, table, width })
    }

    fn table(&self) -> Option<Table> {
        Some(Table::Slots { width: self.width as u32, entries: self.table.clone() })
    }

    fn route(&self, key: &[u8], out: &mut Vec<u32>) {
        let row = fastrange(key_hash(key), self.owners.len()) * self.width;
        out.extend_from_slice(&self.table[row..row + self.width]);
    }
}

export_strategy!(Maglev);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(weights: &[f64]) -> Vec<Node> {
        weights.iter().enumerate().map(|(i, &w)| Node::new(format!("n{i}"), w, "")).collect()
    }

    #[test]
    fn table_is_prime_and_balanced() {
        let s = Maglev::configure("table_factor = 100", &nodes(&[1.0; 10]), 1).unwrap();
        assert_eq!(s.owners.len(), 1009);
        let mut counts = [0; 10];
        for &o in &s.owners {
            counts[o as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (100..=101).contains(&c)), "{counts:?}");
        assert_eq!(Maglev::configure("", &nodes(&[1.0; 10]), 1).unwrap().owners.len(), 65_537);
        assert_eq!(Maglev::configure("", &nodes(&[1.0; 700]), 1).unwrap().owners.len(), 70_001);
    }

    #[test]
    fn weights_shape_the_table() {
        let s = Maglev::configure("table_size = 10007", &nodes(&[1.0, 3.0]), 1).unwrap();
        let heavy = s.owners.iter().filter(|&&o| o == 1).count() as f64 / 10007.0;
        assert!((heavy - 0.75).abs() < 0.01, "{heavy}");
    }

    #[test]
    fn replicas_are_distinct() {
        let s = Maglev::configure("", &nodes(&[1.0; 4]), 3).unwrap();
        for row in s.table.chunks(3) {
            assert!(row[0] != row[1] && row[1] != row[2] && row[0] != row[2]);
        }
    }

    #[test]
    fn bad_config_rejected() {
        assert!(Maglev::validate_config("table_size = 100").unwrap_err().contains("prime"));
        assert!(Maglev::validate_config("size = 1").unwrap_err().contains("unknown field"));
        assert!(Maglev::validate_config("table_size = 7\ntable_factor = 3").unwrap_err().contains("not both"));
    }
}
