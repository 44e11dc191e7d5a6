//! The sequential model of meta's node list (`/v1/nodes`) for the
//! linearizability checker: a map from node id to its record, changed by
//! `POST /v1/nodes` (add; 409 when the id exists), `PATCH /v1/nodes/{id}`
//! (weight, state; 404 when unknown), `DELETE /v1/nodes/{id}` (404 when
//! unknown) and read whole by `GET /v1/nodes` (linearizable read).
//!
//! Where it sits: the fault scenario 7 in `host/shardgate/tests/faults.rs`
//! maps each answer of the meta API to a [`NodeAnswer`] (or leaves the
//! operation out when the API says nothing was committed, or records an
//! unknown outcome) and checks the history with
//! [`super::check`]`(&NodeList, ..)`. The record holds what the clients vary
//! (weight as an integer, draining or not); reads are projected onto the ids
//! the history uses, so one history's ids are independent of others'.

use std::collections::BTreeMap;

use super::Model;

/// What the model keeps of one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRecord {
    /// The node's weight (the clients use whole numbers).
    pub weight: u32,
    /// `state: draining` (else `active`).
    pub draining: bool,
}

/// The node list: id -> record.
pub type Nodes = BTreeMap<String, NodeRecord>;

/// One call of the node API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOp {
    /// `POST /v1/nodes` (a new node is active).
    Add { id: String, weight: u32 },
    /// `PATCH /v1/nodes/{id}` with the fields that are `Some`.
    Update { id: String, weight: Option<u32>, draining: Option<bool> },
    /// `DELETE /v1/nodes/{id}`.
    Remove { id: String },
    /// `GET /v1/nodes` (linearizable).
    List,
}

/// What a call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAnswer {
    /// 201 / 200: applied.
    Done,
    /// 409 `duplicate_node`: the id exists.
    Duplicate,
    /// 404 `unknown_node`: the id does not exist.
    UnknownNode,
    /// 200 of a read: the list (projected onto the history's ids).
    List(Nodes),
}

/// The model; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeList;

impl NodeList {
    /// The state after `op` took effect in `s` (unchanged where the API
    /// would refuse it).
    pub fn apply(s: &Nodes, op: &NodeOp) -> (Nodes, NodeAnswer) {
        let mut next = s.clone();
        let answer = match op {
            NodeOp::Add { id, weight } => {
                if s.contains_key(id) {
                    NodeAnswer::Duplicate
                } else {
                    next.insert(id.clone(), NodeRecord { weight: *weight, draining: false });
                    NodeAnswer::Done
                }
            }
            NodeOp::Update { id, weight, draining } => match next.get_mut(id) {
                Some(r) => {
                    if let Some(w) = weight {
                        r.weight = *w;
                    }
                    if let Some(d) = draining {
                        r.draining = *d;
                    }
                    NodeAnswer::Done
                }
                None => NodeAnswer::UnknownNode,
            },
            NodeOp::Remove { id } => {
                if next.remove(id).is_some() {
                    NodeAnswer::Done
                } else {
                    NodeAnswer::UnknownNode
                }
            }
            NodeOp::List => NodeAnswer::List(s.clone()),
        };
        (next, answer)
    }
}

impl Model for NodeList {
    type State = Nodes;
    type Input = NodeOp;
    type Output = NodeAnswer;

    fn init(&self) -> Nodes {
        Nodes::new()
    }

    fn step(&self, state: &Nodes, input: &NodeOp, output: Option<&NodeAnswer>) -> Option<Nodes> {
        let (next, answer) = NodeList::apply(state, input);
        match output {
            // Unknown outcome: if it took effect here, it did what the model
            // does (a refusal changes nothing either).
            None => Some(next),
            Some(seen) => (*seen == answer).then_some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Limits, Operation, check};
    use super::*;

    fn rec(weight: u32, draining: bool) -> NodeRecord {
        NodeRecord { weight, draining }
    }
    fn list(items: &[(&str, u32, bool)]) -> NodeAnswer {
        NodeAnswer::List(items.iter().map(|(id, w, d)| (id.to_string(), rec(*w, *d))).collect())
    }
    fn done(client: usize, input: NodeOp, call: u64, ret: u64, out: NodeAnswer) -> Operation<NodeOp, NodeAnswer> {
        Operation { client, input, call, returned: Some((ret, out)) }
    }
    fn add(id: &str, weight: u32) -> NodeOp {
        NodeOp::Add { id: id.into(), weight }
    }

    #[test]
    fn answers_follow_the_api() {
        let s = Nodes::new();
        assert_eq!(NodeList::apply(&s, &NodeOp::Remove { id: "a".into() }).1, NodeAnswer::UnknownNode);
        let (s, a) = NodeList::apply(&s, &add("a", 2));
        assert_eq!(a, NodeAnswer::Done);
        assert_eq!(NodeList::apply(&s, &add("a", 3)), (s.clone(), NodeAnswer::Duplicate));
        let (s, _) = NodeList::apply(&s, &NodeOp::Update { id: "a".into(), weight: None, draining: Some(true) });
        assert_eq!(s["a"], rec(2, true));
        assert_eq!(NodeList::apply(&s, &NodeOp::List).1, list(&[("a", 2, true)]));
    }

    #[test]
    fn a_409_for_an_id_removed_before_is_a_violation() {
        let h = [
            done(0, add("a", 1), 0, 10, NodeAnswer::Done),
            done(0, NodeOp::Remove { id: "a".into() }, 20, 30, NodeAnswer::Done),
            done(1, add("a", 2), 40, 50, NodeAnswer::Duplicate),
        ];
        assert!(check(&NodeList, &h, Limits::default()).is_violation());
    }

    #[test]
    fn a_whole_list_read_must_be_one_instant() {
        // a and b are added concurrently with two concurrent reads; one read
        // sees only a, the other only b. Key by key this is fine (for a: the
        // read without a, the add, the read with a; for b the other way
        // round), but one order of the two adds cannot explain both lists:
        // why a history with whole-list reads is not split per key.
        let adds = [done(0, add("a", 1), 0, 100, NodeAnswer::Done), done(1, add("b", 1), 0, 100, NodeAnswer::Done)];
        let reads = |second: NodeAnswer| {
            let mut h = adds.to_vec();
            h.push(done(2, NodeOp::List, 10, 50, list(&[("a", 1, false)])));
            h.push(done(3, NodeOp::List, 10, 50, second));
            h
        };
        assert!(check(&NodeList, &reads(list(&[("b", 1, false)])), Limits::default()).is_violation());
        assert!(check(&NodeList, &reads(list(&[("a", 1, false), ("b", 1, false)])), Limits::default()).is_linearizable());
    }

    #[test]
    fn an_unknown_add_may_land_late_but_only_once() {
        let unknown = Operation { client: 0, input: add("a", 7), call: 0, returned: None };
        let h = [unknown.clone(), done(1, NodeOp::List, 10, 20, list(&[])), done(1, NodeOp::List, 30, 40, list(&[("a", 7, false)]))];
        assert!(check(&NodeList, &h, Limits::default()).is_linearizable());
        let h = [
            unknown,
            done(1, NodeOp::List, 10, 20, list(&[("a", 7, false)])),
            done(2, NodeOp::Remove { id: "a".into() }, 30, 40, NodeAnswer::Done),
            done(1, NodeOp::List, 50, 60, list(&[("a", 7, false)])),
        ];
        assert!(check(&NodeList, &h, Limits::default()).is_violation());
    }

    /// The checker's cost on a history the size of a long fault run: 20 000
    /// operations of 8 concurrent clients on 3 ids, 1% of them with a lost
    /// answer. Linearizable by construction (each operation's interval holds
    /// the instant it ran at); prints the time (`--nocapture`), asserts
    /// only the verdict.
    #[test]
    fn cost_on_a_long_concurrent_history() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ids = ["a", "b", "c"];
        let mut state = Nodes::new();
        let mut history = Vec::new();
        for i in 0..20_000u64 {
            let id = ids[next(3) as usize].to_string();
            let op = match next(10) {
                0..4 => NodeOp::List,
                4..6 => NodeOp::Add { id, weight: 1 + next(3) as u32 },
                6..8 => NodeOp::Update { id, weight: Some(1 + next(3) as u32), draining: Some(next(2) == 0) },
                _ => NodeOp::Remove { id },
            };
            let (after, answer) = NodeList::apply(&state, &op);
            state = after;
            // Ran at 100 * i; 8 clients: intervals up to 4 neighbours wide.
            let at = 1_000 + 100 * i;
            let lost = next(100) == 0 && op != NodeOp::List;
            let returned = (!lost).then(|| (at + next(400), answer));
            history.push(Operation { client: (i % 8) as usize, input: op, call: at - next(400), returned });
        }
        let r = check(&NodeList, &history, Limits::default());
        assert!(r.is_linearizable(), "{:?}", r.verdict);
        println!("linearizability checker: {} operations, {} steps, {:?}", r.operations, r.steps, r.elapsed);
    }

    fn any_op() -> impl Strategy<Value = NodeOp> {
        let id = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
        prop_oneof![
            (id.clone(), 1..4u32).prop_map(|(id, weight)| NodeOp::Add { id, weight }),
            (id.clone(), prop::option::of(1..4u32), prop::option::of(any::<bool>())).prop_map(|(id, weight, draining)| NodeOp::Update {
                id,
                weight,
                draining
            }),
            id.prop_map(|id| NodeOp::Remove { id }),
            Just(NodeOp::List),
            Just(NodeOp::List),
        ]
    }

    /// How one generated operation is recorded.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Returned,
        /// Took effect, its answer was lost.
        Unknown,
        /// Unknown and never took effect.
        Phantom,
    }

    proptest! {
        #![proptest_config(crate::cases(256))]

        /// Run operations one by one on the model at instants 0, 10, 20..;
        /// give each an interval around its instant (so they overlap at
        /// random), lose some answers, add some writes that never happen:
        /// the history is always accepted.
        #[test]
        fn histories_of_a_sequential_execution_are_accepted(
            ops in prop::collection::vec((any_op(), 0..25u64, 0..25u64, 0..10u8, 0..4usize), 0..60),
        ) {
            let mut state = Nodes::new();
            let mut history = Vec::new();
            for (i, (op, before, after, fate, client)) in ops.into_iter().enumerate() {
                let at = 100 + 10 * i as u64;
                let fate = match fate { 0 => Fate::Unknown, 1 => Fate::Phantom, _ => Fate::Returned };
                let call = at - before * 4;
                if matches!(fate, Fate::Phantom) {
                    if !matches!(op, NodeOp::List) {
                        history.push(Operation { client, input: op, call, returned: None });
                    }
                    continue;
                }
                let (next, answer) = NodeList::apply(&state, &op);
                state = next;
                let returned = match fate {
                    Fate::Returned => Some((at + after * 4, answer)),
                    _ if matches!(op, NodeOp::List) => continue, // an unanswered read is left out
                    _ => None,
                };
                history.push(Operation { client, input: op, call, returned });
            }
            let r = check(&NodeList, &history, Limits::default());
            prop_assert!(r.is_linearizable(), "{:?}\n{history:#?}", r.verdict);
        }

        /// The other direction: a strictly sequential history (no overlap, no
        /// lost answers) with one read's answer changed to a list the model
        /// did not hold at that point is always refused.
        #[test]
        fn a_sequential_history_with_one_wrong_read_is_refused(
            ops in prop::collection::vec(any_op(), 1..40),
            pick in any::<prop::sample::Index>(),
            wrong in prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from), (1..4u32, any::<bool>()), 0..3),
        ) {
            let mut state = Nodes::new();
            let mut history = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                let (next, answer) = NodeList::apply(&state, &op);
                state = next;
                history.push(done(i % 3, op, 10 * i as u64, 10 * i as u64 + 5, answer));
            }
            history.push(done(0, NodeOp::List, 10_000, 10_005, NodeAnswer::List(state.clone())));
            let reads: Vec<usize> = (0..history.len()).filter(|&i| history[i].input == NodeOp::List).collect();
            let victim = reads[pick.index(reads.len())];
            let wrong: Nodes = wrong.into_iter().map(|(id, (weight, draining))| (id, NodeRecord { weight, draining })).collect();
            let Some((at, NodeAnswer::List(right))) = history[victim].returned.clone() else { unreachable!() };
            prop_assume!(right != wrong);
            history[victim].returned = Some((at, NodeAnswer::List(wrong)));
            let r = check(&NodeList, &history, Limits::default());
            prop_assert!(r.is_violation(), "{:?}\n{history:#?}", r.verdict);
        }
    }
}
