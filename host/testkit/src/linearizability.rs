//! A linearizability checker for recorded histories of a concurrent system,
//! against a sequential model of it: the Wing–Gong search with Lowe's
//! memoization, as Porcupine implements it.
//!
//! Where it sits: a fault test records every operation its clients issue
//! (the call time, the return time and the answer, or "unknown" when the
//! outcome was not learned) into a history of [`Operation`]s, then asks
//! [`check`] whether some total order of those operations (a) respects real
//! time (an operation that returned before another was called comes first),
//! and (b) is a legal run of the sequential [`Model`] that produces every
//! recorded answer. [`node_list`] is the model of meta's node list
//! (`/v1/nodes`); `host/shardgate/tests/faults.rs` (scenario 7) checks the
//! histories it records under a leader kill and a partition.
//!
//! The search: events (calls and returns) sorted by time in a doubly linked
//! list; walking it, a call is tentatively linearized (taken out of the list
//! with its return) when the model accepts it in the current state, and a
//! return reached before its operation was linearized means the last choice
//! was wrong (backtrack). The search succeeds when every operation with a
//! known outcome is linearized. Each (set of linearized operations, model
//! state) pair is explored once (the cache), which is what keeps the search
//! polynomial on histories whose concurrency is small.
//!
//! An operation whose outcome is unknown (a write that timed out, a
//! connection reset after the request was sent) has return time +infinity:
//! it may be linearized at any point after its call, where the model applies
//! its effect ([`Model::step`] with `output = None`), or never, which is the
//! same as taking effect after everything else observed. Failed operations
//! that certainly changed nothing and observed nothing (a refused write, a
//! failed read) are simply left out of the history.
//!
//! Bounded by design: the search stops with [`Verdict::Inconclusive`] after
//! [`Limits::max_time`], or when the memoized configurations (a bitset of
//! `n / 8` bytes and a model state each) would take more than
//! [`Limits::max_memory`] bytes.
//!
//! Partitioning (P-compositionality): for a map whose every operation
//! touches one key, a history is linearizable iff each key's sub-history is,
//! so each key could be checked alone. A read of the WHOLE list touches every
//! key at one instant, and checking keys one by one would accept a read that
//! saw a later write to one key and not an earlier write to another; so a
//! history with whole-list reads is checked as one, and the caller keeps its
//! histories small (few keys, a few seconds of operations each).

pub mod node_list;

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sequential specification: states and the legal transitions between them.
pub trait Model {
    /// The state; equal states must behave the same (it is memoized).
    type State: Clone + Eq + Hash + Debug;
    /// What an operation asked.
    type Input: Debug;
    /// What it answered.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` ran in `state` answering `output`, or `None`
    /// if the model cannot answer `output` there. `output` is `None` for an
    /// operation whose outcome is unknown: return the state after it took
    /// effect at this point (the checker itself covers "never took effect").
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;
}

/// One operation of a history. Times are in any monotonic unit shared by all
/// clients (nanoseconds since the run started, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Operation<I, O> {
    /// Who issued it (only for reports).
    pub client: usize,
    pub input: I,
    /// When it was called.
    pub call: u64,
    /// When it returned and what it answered; `None`: the outcome is
    /// unknown (return time +infinity).
    pub returned: Option<(u64, O)>,
}

/// Bounds of one search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time after which the search gives up (inconclusive).
    pub max_time: Duration,
    /// Approximate bytes of memoized configurations after which the search
    /// gives up (each holds a bitset of `n / 8` bytes and a model state).
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_time: Duration::from_secs(30), max_memory: 512 << 20 }
    }
}

/// The answer of [`check`].
#[derive(Debug, Clone)]
pub enum Verdict<S> {
    /// A witness order exists: the operations of `order` (indices into the
    /// history), linearized in this order, explain every answer. Operations
    /// of unknown outcome missing from it never took effect.
    Linearizable { order: Vec<usize> },
    /// No order exists.
    Violation(Violation<S>),
    /// The search hit a [`Limits`] bound; nothing is claimed.
    Inconclusive { reason: String },
}

/// Where the search got furthest before every order failed: the operations
/// it managed to linearize, the model state after them, and the operation
/// whose return it could not get past (its answer is impossible given
/// everything that must precede it).
#[derive(Debug, Clone)]
pub struct Violation<S> {
    pub linearized: Vec<usize>,
    pub state: S,
    pub blocked: usize,
}

/// What [`check`] found and what it cost.
#[derive(Debug, Clone)]
pub struct Report<S> {
    pub verdict: Verdict<S>,
    pub operations: usize,
    /// Linearization attempts (model steps) made.
    pub steps: u64,
    pub elapsed: Duration,
}

impl<S> Report<S> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable { .. })
    }
    pub fn is_violation(&self) -> bool {
        matches!(self.verdict, Verdict::Violation(_))
    }
}

const NIL: usize = usize::MAX;

/// A fixed-size set of operation indices (hashable for the cache).
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> BitSet {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks `history` against `model`. See the module doc for the method.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], limits: Limits) -> Report<M::State> {
    let started = Instant::now();
    let n = history.len();
    // Events: (time, is_return, op). At equal times calls sort first, which
    // treats the two operations as concurrent (the permissive reading).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        events.push((op.call, false, i));
        if let Some((ret, _)) = &op.returned {
            events.push((*ret.max(&op.call), true, i));
        }
    }
    events.sort();
    let head = events.len();
    // Doubly linked list over the events, with a head sentinel at `head`.
    let mut next: Vec<usize> = (1..=events.len()).map(|i| if i == events.len() { NIL } else { i }).collect();
    next.push(if events.is_empty() { NIL } else { 0 });
    let mut prev: Vec<usize> = (0..events.len()).map(|i| if i == 0 { head } else { i - 1 }).collect();
    prev.push(NIL);
    let mut call_at = vec![NIL; n];
    let mut ret_at = vec![NIL; n];
    for (e, &(_, is_ret, op)) in events.iter().enumerate() {
        if is_ret {
            ret_at[op] = e;
        } else {
            call_at[op] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = next[e];
        if next[e] != NIL {
            prev[next[e]] = prev[e];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };

    let mut remaining = history.iter().filter(|op| op.returned.is_some()).count();
    let mut state = model.init();
    let mut linearized = BitSet::new(n);
    let mut cache: HashSet<(BitSet, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut deepest: Option<Violation<M::State>> = None;
    let mut steps = 0u64;
    let mut cur = next[head];
    // Per memoized configuration: the bitset, the state, the table's own.
    let entry_bytes = linearized.0.len() * 8 + 2 * std::mem::size_of::<M::State>() + 64;
    let report = |verdict, steps| Report { verdict, operations: n, steps, elapsed: started.elapsed() };
    loop {
        if remaining == 0 {
            let order = stack.iter().map(|(op, _)| *op).collect();
            return report(Verdict::Linearizable { order }, steps);
        }
        if steps.is_multiple_of(4096) && started.elapsed() > limits.max_time {
            return report(Verdict::Inconclusive { reason: format!("no answer within {:?}", limits.max_time) }, steps);
        }
        if cache.len().saturating_mul(entry_bytes) > limits.max_memory {
            let reason =
                format!("{} configurations explored, over the {} bytes allowed (Limits::max_memory)", cache.len(), limits.max_memory);
            return report(Verdict::Inconclusive { reason }, steps);
        }
        if cur != NIL && !events[cur].1 {
            // A call: try to linearize it now.
            let op = events[cur].2;
            steps += 1;
            let o = &history[op];
            if let Some(after) = model.step(&state, &o.input, o.returned.as_ref().map(|(_, out)| out)) {
                let mut with = linearized.clone();
                with.set(op);
                if cache.insert((with.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    linearized = with;
                    unlink(&mut next, &mut prev, call_at[op]);
                    if ret_at[op] != NIL {
                        unlink(&mut next, &mut prev, ret_at[op]);
                        remaining -= 1;
                    }
                    cur = next[head];
                    continue;
                }
            }
            cur = next[cur];
            continue;
        }
        // A return (or the end, which cannot come first while an operation
        // with a return is left): the last choice was wrong.
        if cur != NIL && deepest.as_ref().is_none_or(|d| stack.len() > d.linearized.len()) {
            deepest =
                Some(Violation { linearized: stack.iter().map(|(op, _)| *op).collect(), state: state.clone(), blocked: events[cur].2 });
        }
        let Some((op, before)) = stack.pop() else {
            let violation = deepest.unwrap_or_else(|| Violation { linearized: vec![], state: model.init(), blocked: events[0].2 });
            return report(Verdict::Violation(violation), steps);
        };
        state = before;
        linearized.clear(op);
        if ret_at[op] != NIL {
            relink(&mut next, &mut prev, ret_at[op]);
            remaining += 1;
        }
        relink(&mut next, &mut prev, call_at[op]);
        cur = next[call_at[op]];
    }
}

/// The smallest window of `history` that shows `violation`: the last
/// `context` operations linearized before it got stuck, and every operation
/// whose interval overlaps the blocked one's, in call order; one line each,
/// times in milliseconds from `origin` (a time in the history's unit, ns).
pub fn window<I: Debug, O: Debug, S: Debug>(history: &[Operation<I, O>], violation: &Violation<S>, context: usize, origin: u64) -> String {
    let b = &history[violation.blocked];
    let b_ret = b.returned.as_ref().map_or(u64::MAX, |(t, _)| *t);
    let mut ops: Vec<usize> = violation.linearized.iter().rev().take(context).copied().collect();
    for (i, op) in history.iter().enumerate() {
        let ret = op.returned.as_ref().map_or(u64::MAX, |(t, _)| *t);
        if op.call <= b_ret && ret >= b.call && !ops.contains(&i) {
            ops.push(i);
        }
    }
    ops.sort_by_key(|&i| (history[i].call, i));
    let ms = |t: u64| format!("{:.1}", t.saturating_sub(origin) as f64 / 1e6);
    let mut out = format!("state after the {} operations linearized: {:?}\n", violation.linearized.len(), violation.state);
    for i in ops {
        let op = &history[i];
        let mark = if i == violation.blocked {
            "  <- no order explains this answer"
        } else if violation.linearized.contains(&i) {
            "  (linearized)"
        } else {
            ""
        };
        let (ret, out_s) = match &op.returned {
            Some((t, o)) => (ms(*t), format!("{o:?}")),
            None => ("inf".into(), "unknown".into()),
        };
        out.push_str(&format!("#{i} client {} [{} .. {}] {:?} -> {out_s}{mark}\n", op.client, ms(op.call), ret, op.input));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register holding an integer (0 at first): `Some(v)` writes v,
    /// `None` reads; a write answers `None`, a read `Some(value)`.
    struct Register;

    impl Model for Register {
        type State = i64;
        type Input = Option<i64>;
        type Output = Option<i64>;
        fn init(&self) -> i64 {
            0
        }
        fn step(&self, s: &i64, input: &Option<i64>, output: Option<&Option<i64>>) -> Option<i64> {
            match (input, output) {
                (Some(v), None | Some(None)) => Some(*v),
                (None, Some(Some(seen))) => (seen == s).then_some(*s),
                (None, None) => Some(*s),
                _ => None,
            }
        }
    }

    fn op(client: usize, input: Option<i64>, call: u64, ret: Option<u64>, out: Option<i64>) -> Operation<Option<i64>, Option<i64>> {
        Operation { client, input, call, returned: ret.map(|t| (t, out)) }
    }
    fn write(c: usize, v: i64, call: u64, ret: u64) -> Operation<Option<i64>, Option<i64>> {
        op(c, Some(v), call, Some(ret), None)
    }
    fn read(c: usize, v: i64, call: u64, ret: u64) -> Operation<Option<i64>, Option<i64>> {
        op(c, None, call, Some(ret), Some(v))
    }
    fn verdict(h: &[Operation<Option<i64>, Option<i64>>]) -> Report<i64> {
        check(&Register, h, Limits::default())
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert!(verdict(&[]).is_linearizable());
        let h = [write(0, 1, 0, 10), read(1, 1, 20, 30), write(0, 2, 40, 50), read(1, 2, 60, 70)];
        let r = verdict(&h);
        let Verdict::Linearizable { order } = r.verdict else { panic!("{r:?}") };
        assert_eq!(order, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        // The write of 1 returned at 10; a read called at 20 still sees 0.
        let h = [write(0, 1, 0, 10), read(1, 0, 20, 30)];
        let r = verdict(&h);
        let Verdict::Violation(v) = &r.verdict else { panic!("{r:?}") };
        assert_eq!(v.blocked, 1, "the stale read is where it gets stuck: {v:?}");
        assert_eq!(v.linearized, vec![0]);
        let w = window(&h, v, 3, 0);
        assert!(w.contains("#1 client 1") && w.contains("no order explains"), "{w}");
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [0, 1] {
            let h = [write(0, 1, 0, 100), read(1, seen, 10, 20)];
            assert!(verdict(&h).is_linearizable(), "read of {seen}");
        }
        assert!(verdict(&[write(0, 1, 0, 100), read(1, 7, 10, 20)]).is_violation(), "a value never written");
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        // 1 then 2 acknowledged in order; later reads see 1: the write of 2 was lost.
        let h = [write(0, 1, 0, 10), write(0, 2, 20, 30), read(1, 2, 40, 50), read(1, 1, 60, 70)];
        assert!(verdict(&h).is_violation());
        let h = [write(0, 1, 0, 10), write(0, 2, 20, 30), read(1, 1, 40, 50)];
        assert!(verdict(&h).is_violation());
    }

    #[test]
    fn an_unknown_outcome_write_may_be_seen_or_not() {
        let unknown = op(0, Some(5), 0, None, None);
        // Seen, much later: it took effect.
        assert!(verdict(&[unknown.clone(), read(1, 5, 1_000, 1_010)]).is_linearizable());
        // Not seen: it never took effect (or not yet).
        assert!(verdict(&[unknown.clone(), read(1, 0, 1_000, 1_010)]).is_linearizable());
        // Not seen, then seen: it took effect between the reads.
        assert!(verdict(&[unknown.clone(), read(1, 0, 1_000, 1_010), read(1, 5, 2_000, 2_010)]).is_linearizable());
        // Seen, then not seen with nothing else written: impossible.
        assert!(verdict(&[unknown.clone(), read(1, 5, 1_000, 1_010), read(1, 0, 2_000, 2_010)]).is_violation());
        // It cannot take effect before it was called.
        assert!(verdict(&[read(1, 5, 0, 10), op(0, Some(5), 20, None, None)]).is_violation());
    }

    #[test]
    fn real_time_order_is_respected_between_clients() {
        // Two non-overlapping writes by different clients; a later read must
        // see the second.
        let h = [write(0, 1, 0, 10), write(1, 2, 20, 30), read(2, 1, 40, 50)];
        assert!(verdict(&h).is_violation());
        // Overlapping writes: either may be last.
        let h = [write(0, 1, 0, 30), write(1, 2, 10, 40), read(2, 1, 50, 60)];
        assert!(verdict(&h).is_linearizable());
        // But not both orders at once, seen by reads that do not overlap.
        let h = [write(0, 1, 0, 30), write(1, 2, 10, 40), read(2, 1, 50, 60), read(2, 2, 70, 80), read(3, 1, 90, 100)];
        assert!(verdict(&h).is_violation());
    }

    #[test]
    fn limits_give_an_inconclusive_answer_not_a_wrong_one() {
        let h: Vec<_> = (0..200).map(|i| write(i, i as i64, 0, 1_000)).chain([read(999, 5, 2_000, 2_010)]).collect();
        let r = check(&Register, &h, Limits { max_time: Duration::from_secs(30), max_memory: 1_000 });
        assert!(matches!(r.verdict, Verdict::Inconclusive { .. }), "{:?}", r.verdict);
    }
}
