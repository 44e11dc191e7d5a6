//! The one `bindgen!` of the host, private to this crate, and conversions
//! between its generated types and the SDK's (which the rest of the crate
//! uses). The WIT is read from `wit/` at the repository root: the same file
//! the guests are built from.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "strategy",
});

use shardgate::strategy::types as wit;
use shardgate_strategy_sdk as sdk;

impl From<&sdk::Node> for wit::Node {
    fn from(n: &sdk::Node) -> Self {
        wit::Node { id: n.id.clone(), weight: n.weight, zone: n.zone.clone() }
    }
}

impl From<wit::Metadata> for sdk::Metadata {
    fn from(m: wit::Metadata) -> Self {
        sdk::Metadata { name: m.name, version: m.version, description: m.description }
    }
}

impl From<wit::RoutingTable> for sdk::Table {
    fn from(t: wit::RoutingTable) -> Self {
        match t {
            wit::RoutingTable::PerKey => sdk::Table::PerKey,
            wit::RoutingTable::Slots(s) => sdk::Table::Slots { width: s.width, entries: s.entries },
            wit::RoutingTable::Ring(points) => {
                sdk::Table::Ring(points.into_iter().map(|p| sdk::RingPoint { hash: p.hash, position: p.position }).collect())
            }
        }
    }
}
