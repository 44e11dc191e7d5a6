//! `rendezvous`: weighted rendezvous hashing (HRW) with exact weights.
//!
//! Every node scores a key with `-ln(u)/w` and the best `replicas` scores own
//! it, best first. By default the strategy tabulates HRW over hash slots
//! (`slots`, 2^18 rows by default, independent of the node list so that
//! membership changes move only the keys they must) so the host routes with one native table
//! lookup; `slots = 0` routes every key exactly, calling the strategy per key.
//!
//! Config (TOML, every key optional):
//! ```toml
//! slots = 262144  # rows of the routing table (default 2^18); 0 = exact per-key HRW
//! ```

use serde::Deserialize;
use shardgate_strategy_sdk::{
    DEFAULT_SLOTS, MAX_SLOTS, Metadata, Node, Strategy, Table, export_strategy, hrw::Hrw, key_hash, parse_config, tabulate,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    slots: Option<u32>,
}

fn config(text: &str) -> Result<Config, String> {
    let c: Config = parse_config("rendezvous", text)?;
    if c.slots.is_some_and(|s| s > MAX_SLOTS) {
        return Err(format!("rendezvous config: slots must be at most {MAX_SLOTS}, got {}", c.slots.unwrap()));
    }
    Ok(c)
}

pub struct Rendezvous {
    hrw: Hrw,
    width: usize,
    table: Option<Table>,
}

impl Strategy for Rendezvous {
    fn metadata() -> Metadata {
        Metadata::new("rendezvous", "0.1.0", "weighted rendezvous hashing (HRW), exact weights, best-R replicas")
    }

    fn validate_config(text: &str) -> Result<(), String> {
        config(text).map(|_| ())
    }

    fn configure(text: &str, nodes: &[Node], replicas: u32) -> Result<Self, String> {
        let c = config(text)?;
        let hrw = Hrw::new(nodes);
        let width = (replicas as usize).min(nodes.len());
        let slots = c.slots.unwrap_or(DEFAULT_SLOTS);
        let table = (slots > 0).then(|| tabulate(slots, width, |h, out| hrw.top(h, width, out)));
        Ok(Rendezvous { hrw, width, table })
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
            None => self.hrw.top(h, self.width, out),
        }
    }
}

/// Exact HRW for one key, natively: the reference the benchmark compares
/// the host's routing with.
pub fn route_exact(hrw: &Hrw, key: &[u8], want: usize, out: &mut Vec<u32>) {
    hrw.top(key_hash(key), want, out)
}

export_strategy!(Rendezvous);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|i| Node::new(format!("node-{i}"), 1.0, "")).collect()
    }

    #[test]
    fn default_config_tabulates() {
        let s = Rendezvous::configure("", &nodes(10), 2).unwrap();
        match s.table().unwrap() {
            Table::Slots { width, entries } => {
                assert_eq!(width, 2);
                assert_eq!(entries.len(), 2 * DEFAULT_SLOTS as usize);
            }
            other => panic!("expected slots, got {other:?}"),
        }
    }

    #[test]
    fn zero_slots_is_exact_per_key() {
        let s = Rendezvous::configure("slots = 0", &nodes(10), 1).unwrap();
        assert!(s.table().is_none());
        let mut a = vec![];
        let mut b = vec![];
        s.route(b"user:42", &mut a);
        route_exact(&Hrw::new(&nodes(10)), b"user:42", 1, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn table_agrees_with_hrw_on_the_slot_hash() {
        let s = Rendezvous::configure("slots = 1024", &nodes(5), 3).unwrap();
        let hrw = Hrw::new(&nodes(5));
        for key in [b"a".as_slice(), b"bb", b"ccc"] {
            let row = shardgate_strategy_sdk::fastrange(key_hash(key), 1024) as u64;
            let mut want = vec![];
            hrw.top(shardgate_strategy_sdk::slot_hash(row), 3, &mut want);
            let mut got = vec![];
            s.route(key, &mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = Rendezvous::validate_config("slot = 3").unwrap_err();
        assert!(e.contains("slot") && e.contains("line 1"), "{e}");
        let e = Rendezvous::validate_config("slots = 99999999").unwrap_err();
        assert!(e.contains("slots must be at most"), "{e}");
    }
}
