//! `misbehave`: a test strategy that fails on demand, so the host's
//! sandboxing can be tested against a real component (never uploaded in
//! production; built beside the real strategies for the tests).
//!
//! Healthy answer: positions (h, h+1, ...) mod n for h = key hash mod n.
//!
//! Config (TOML):
//! ```toml
//! fault = "trap"   # none | trap | loop | grow | out-of-range | duplicate
//!                  # | short | reject-config | bad-table
//! at = "route"     # route | configure
//! after = 0        # healthy route calls (per instance) before the fault
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{Metadata, Node, Strategy, Table, export_strategy, key_hash, parse_config};
use std::cell::Cell;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    None,
    Trap,
    Loop,
    Grow,
    OutOfRange,
    Duplicate,
    Short,
    RejectConfig,
    BadTable,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum At {
    Route,
    Configure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fault: Fault,
    #[serde(default = "route")]
    at: At,
    #[serde(default)]
    after: u64,
}

fn route() -> At {
    At::Route
}

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("misbehave", text)?;
    if c.fault == Fault::RejectConfig {
        return Err("misbehave config: fault = \"reject-config\" rejects this config on purpose".into());
    }
    Ok(c)
}

pub struct Misbehave {
    fault: Fault,
    after: u64,
    calls: Cell<u64>,
    n: u32,
    width: usize,
}

fn misbehave(fault: Fault) {
    match fault {
        Fault::Trap => panic!("misbehave: trap requested"),
        Fault::Loop => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Fault::Grow => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserve 1 MiB at a time without filling it: memory grows
                // fast while fuel is barely spent.
                let mut chunk = Vec::<u8>::with_capacity(1 << 20);
                chunk.push(1);
                hog.push(std::hint::black_box(chunk));
            }
        }
        _ => {}
    }
}

impl Strategy for Misbehave {
    fn metadata() -> Metadata {
        Metadata::new("misbehave", "0.1.0", "test strategy: fails on demand (trap, loop, grow, bad answers)")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        if c.at == At::Configure {
            misbehave(c.fault);
        }
        Ok(Misbehave {
            fault: if c.at == At::Route { c.fault } else { Fault::None },
            after: c.after,
            calls: Cell::new(0),
            n: nodes.len() as u32,
            width: (replicas as usize).min(nodes.len()),
        })
    }

    fn table(&self) -> Option<Table> {
        if self.fault == Fault::BadTable {
            // Row 0 names a position past the end of the node list.
            let mut entries: Vec<u32> = (0..16 * self.width as u32).map(|i| i % self.n).collect();
            entries[0] = self.n;
            return Some(Table::Slots { width: self.width as u32, entries });
        }
        None
    }

    fn route(&self, key: &[u8], out: &mut Vec<u32>) {
        let calls = self.calls.get();
        self.calls.set(calls + 1);
        let h = (key_hash(key) % self.n as u64) as u32;
        let healthy = |out: &mut Vec<u32>| out.extend((0..self.width as u32).map(|i| (h + i) % self.n));
        if calls < self.after {
            return healthy(out);
        }
        match self.fault {
            Fault::OutOfRange => out.extend((0..self.width as u32).map(|i| self.n + i)),
            Fault::Duplicate => out.extend(std::iter::repeat_n(h, self.width.max(2))),
            Fault::Short => out.extend((0..self.width as u32 - 1).map(|i| (h + i) % self.n)),
            f => {
                misbehave(f);
                healthy(out)
            }
        }
    }
}

export_strategy!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|i| Node::new(format!("n{i}"), 1.0, "")).collect()
    }

    #[test]
    fn healthy_until_after() {
        let s = Misbehave::configure("fault = \"out-of-range\"\nafter = 2", &nodes(3), 1).unwrap();
        for _ in 0..2 {
            let mut out = vec![];
            s.route(b"k", &mut out);
            assert!(out[0] < 3);
        }
        let mut out = vec![];
        s.route(b"k", &mut out);
        assert_eq!(out, [3]);
    }

    #[test]
    fn reject_config_rejects() {
        assert!(Misbehave::validate_config("fault = \"reject-config\"").unwrap_err().contains("on purpose"));
    }
}
