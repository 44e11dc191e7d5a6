//! What a strategy sees: the one definition of the (config, nodes, replicas)
//! a [`RoutingState`] configures its strategy with.
//!
//! Meta admits a change by building the routing state it would produce and
//! admitting [`RoutingInput::from_state`] of it; every proxy configures its
//! router from [`RoutingInput::from_state`] of the state meta streams. So
//! what meta admits is, by construction, what every proxy routes with.

use shardgate_meta_client::RoutingState;

use crate::NodeSpec;

/// The strategy (by hash) and what it is configured with. Also the key of
/// the router cache ([`crate::StrategyCache`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingInput {
    /// Lowercase hex sha256 of the component.
    pub hash: String,
    /// The strategy's TOML config.
    pub config: String,
    pub replicas: u32,
    /// The nodes handed to the strategy: the state's `active` nodes, in its
    /// (join) order, so position `i` of an answer is the i-th of them.
    pub nodes: Vec<NodeSpec>,
}

impl RoutingInput {
    /// The input `state` configures its strategy with, or `None` while no
    /// strategy is active.
    pub fn from_state(state: &RoutingState) -> Option<RoutingInput> {
        let strategy = state.strategy.as_ref()?;
        Some(RoutingInput {
            hash: strategy.hash.clone(),
            config: state.config.clone(),
            replicas: state.replicas,
            nodes: state.active_nodes().map(|n| NodeSpec::new(n.id.clone(), n.weight, n.zone.clone())).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_meta_client::{NodeState, NodeView, StrategyRef};

    fn node(id: &str, weight: f64, state: NodeState) -> NodeView {
        NodeView { id: id.into(), addr: format!("http://{id}:1"), weight, zone: format!("z-{id}"), state }
    }

    #[test]
    fn active_nodes_in_state_order_with_the_routing_config() {
        let state = RoutingState {
            epoch: 9,
            nodes: vec![node("c", 1.0, NodeState::Active), node("a", 2.0, NodeState::Draining), node("b", 0.5, NodeState::Active)],
            strategy: Some(StrategyRef { hash: "ab".into(), name: "x".into(), version: "1".into() }),
            config: "k = 1\n".into(),
            replicas: 2,
            leader: None,
        };
        let input = RoutingInput::from_state(&state).unwrap();
        assert_eq!(input.hash, "ab");
        assert_eq!(input.config, "k = 1\n");
        assert_eq!(input.replicas, 2);
        let seen: Vec<(&str, f64, &str)> = input.nodes.iter().map(|n| (n.id.as_str(), n.weight, n.zone.as_str())).collect();
        assert_eq!(seen, [("c", 1.0, "z-c"), ("b", 0.5, "z-b")]);
    }

    #[test]
    fn no_strategy_no_input() {
        let state = RoutingState { epoch: 1, nodes: vec![], strategy: None, config: String::new(), replicas: 1, leader: None };
        assert_eq!(RoutingInput::from_state(&state), None);
    }
}
