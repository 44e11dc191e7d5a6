//! `pinned`: key prefixes pinned to named nodes, everything else by HRW.
//!
//! Not a hash function at all, which is the point of pluggable strategies:
//! a tenant, a hot key family or a data-residency rule can own its nodes.
//! A key whose bytes start with a pinned prefix (the longest match wins) goes
//! to the listed nodes in order; replicas beyond the list, and every other
//! key, come from weighted rendezvous hashing. Pinned nodes that are not in
//! the current node list are skipped, so removing a node never breaks routing.
//! Routing depends on the key bytes, so the host calls the strategy per key.
//!
//! Config (TOML):
//! ```toml
//! [[pin]]
//! prefix = "tenant-a/"
//! nodes = ["node-1", "node-2"]
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{Metadata, Node, Strategy, export_strategy, hrw::Hrw, key_hash, parse_config};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    pin: Vec<Pin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pin {
    prefix: String,
    nodes: Vec<String>,
}

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("pinned", text)?;
    for (i, p) in c.pin.iter().enumerate() {
        if p.prefix.is_empty() {
            return Err(format!("pinned config: pin[{i}].prefix must not be empty"));
        }
        if p.nodes.is_empty() {
            return Err(format!("pinned config: pin[{i}].nodes must name at least one node"));
        }
        if c.pin[..i].iter().any(|q| q.prefix == p.prefix) {
            return Err(format!("pinned config: pin[{i}].prefix {:?} is pinned twice", p.prefix));
        }
    }
    Ok(c)
}

pub struct Pinned {
    /// (prefix, positions present in the node list), longest prefix first.
    pins: Vec<(Vec<u8>, Vec<u32>)>,
    hrw: Hrw,
    width: usize,
}

impl Strategy for Pinned {
    fn metadata() -> Metadata {
        Metadata::new("pinned", "0.1.0", "key prefixes pinned to named nodes, everything else by weighted HRW")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        let mut pins: Vec<(Vec<u8>, Vec<u32>)> = c
            .pin
            .into_iter()
            .map(|p| {
                let mut positions: Vec<u32> = Vec::new();
                for id in &p.nodes {
                    if let Some(pos) = nodes.iter().position(|n| &n.id == id) {
                        if !positions.contains(&(pos as u32)) {
                            positions.push(pos as u32);
                        }
                    }
                }
                (p.prefix.into_bytes(), positions)
            })
            .collect();
        pins.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        Ok(Pinned { pins, hrw: Hrw::new(nodes), width: (replicas as usize).min(nodes.len()) })
    }

    fn route(&self, key: &[u8], out: &mut Vec<u32>) {
        let base = out.len();
        if let Some((_, positions)) = self.pins.iter().find(|(prefix, _)| key.starts_with(prefix)) {
            out.extend(positions.iter().take(self.width));
        }
        let pinned = out.len() - base;
        if pinned == 0 {
            self.hrw.top(key_hash(key), self.width, out);
        } else if pinned < self.width {
            // The best `width` HRW nodes that are not pinned already are among
            // the best `width + pinned`.
            let mut ranked = Vec::with_capacity(self.width + pinned);
            self.hrw.top(key_hash(key), self.width + pinned, &mut ranked);
            for p in ranked {
                if out.len() - base == self.width {
                    break;
                }
                if !out[base..].contains(&p) {
                    out.push(p);
                }
            }
        }
    }
}

export_strategy!(Pinned);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<Node> {
        (0..5).map(|i| Node::new(format!("node-{i}"), 1.0, "")).collect()
    }

    const CONFIG: &str = r#"
[[pin]]
prefix = "tenant-a/"
nodes = ["node-3", "node-1"]

[[pin]]
prefix = "tenant-a/vip/"
nodes = ["node-4"]
"#;

    #[test]
    fn pinned_prefix_goes_to_its_nodes() {
        let s = Pinned::configure(CONFIG, &nodes(), 2).unwrap();
        let mut out = vec![];
        s.route(b"tenant-a/x", &mut out);
        assert_eq!(out, [3, 1]);
    }

    #[test]
    fn longest_prefix_wins_and_replicas_fill_from_hrw() {
        let s = Pinned::configure(CONFIG, &nodes(), 2).unwrap();
        let mut out = vec![];
        s.route(b"tenant-a/vip/1", &mut out);
        assert_eq!(out[0], 4);
        assert_eq!(out.len(), 2);
        assert_ne!(out[1], 4);
    }

    #[test]
    fn other_keys_use_hrw() {
        let s = Pinned::configure(CONFIG, &nodes(), 1).unwrap();
        let hrw = Hrw::new(&nodes());
        let mut out = vec![];
        let mut want = vec![];
        s.route(b"tenant-b/1", &mut out);
        hrw.top(key_hash(b"tenant-b/1"), 1, &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn missing_pinned_node_is_skipped() {
        let mut few = nodes();
        few.remove(3);
        let s = Pinned::configure(CONFIG, &few, 1).unwrap();
        let mut out = vec![];
        s.route(b"tenant-a/x", &mut out);
        assert_eq!(few[out[0] as usize].id, "node-1");
    }

    #[test]
    fn bad_config_named() {
        let e = Pinned::validate_config("[[pin]]\nprefix = \"\"\nnodes = [\"a\"]").unwrap_err();
        assert!(e.contains("pin[0].prefix"), "{e}");
        let e = Pinned::validate_config("[[pin]]\nprefix = \"a\"\nnode = [\"a\"]").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }
}
