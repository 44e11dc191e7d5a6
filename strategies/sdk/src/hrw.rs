//! Weighted rendezvous hashing (HRW), the building block of `rendezvous` and
//! the fallback of `pinned`.
//!
//! Node i scores a key hash h with `-ln(u) / w_i`, where `u` in (0, 1] is
//! derived from (h, hash of the node id); the lowest score wins. `-ln(u)` is
//! exponentially distributed, so node i wins with probability exactly
//! `w_i / sum(w)`: weights are exact, and adding or removing a node moves only
//! the keys it wins or owned.

use crate::{Node, key_hash, mix64, unit_interval};

/// The per-node inputs of HRW, precomputed at configure time.
#[derive(Debug, Clone)]
pub struct Hrw {
    seeds: Vec<u64>,
    inv_weights: Vec<f64>,
    /// All weights equal: compare raw hashes, no logarithm needed.
    uniform: bool,
}

impl Hrw {
    pub fn new(nodes: &[Node]) -> Self {
        let uniform = nodes.windows(2).all(|w| w[0].weight == w[1].weight);
        Hrw {
            seeds: nodes.iter().map(|n| key_hash(n.id.as_bytes())).collect(),
            inv_weights: nodes.iter().map(|n| 1.0 / n.weight).collect(),
            uniform,
        }
    }

    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    #[inline]
    fn score(&self, hash: u64, i: usize) -> f64 {
        let x = mix64(hash ^ self.seeds[i]);
        if self.uniform {
            // Monotone in -ln(u): smaller is better, as for the weighted score.
            -(x as f64)
        } else {
            -unit_interval(x).ln() * self.inv_weights[i]
        }
    }

    /// Pushes the `want` best positions for `hash` onto `out`, best first.
    pub fn top(&self, hash: u64, want: usize, out: &mut Vec<u32>) {
        let want = want.min(self.seeds.len());
        if want == 1 {
            let mut best = 0;
            let mut best_score = self.score(hash, 0);
            for i in 1..self.seeds.len() {
                let s = self.score(hash, i);
                if s < best_score {
                    best = i;
                    best_score = s;
                }
            }
            out.push(best as u32);
            return;
        }
        // Insertion into a small sorted buffer of the best `want` scores.
        let mut best: Vec<(f64, u32)> = Vec::with_capacity(want + 1);
        for i in 0..self.seeds.len() {
            let s = self.score(hash, i);
            if best.len() == want && s >= best[want - 1].0 {
                continue;
            }
            let at = best.partition_point(|&(b, _)| b <= s);
            best.insert(at, (s, i as u32));
            best.truncate(want);
        }
        out.extend(best.iter().map(|&(_, p)| p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(weights: &[f64]) -> Vec<Node> {
        weights.iter().enumerate().map(|(i, &w)| Node::new(format!("node-{i}"), w, "")).collect()
    }

    #[test]
    fn top_is_distinct_and_ordered_prefix() {
        let hrw = Hrw::new(&nodes(&[1.0, 2.0, 3.0, 4.0]));
        for k in 0..1000u64 {
            let h = key_hash(&k.to_le_bytes());
            let mut all = vec![];
            hrw.top(h, 4, &mut all);
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 4);
            let mut first = vec![];
            hrw.top(h, 1, &mut first);
            assert_eq!(first[0], all[0], "top-1 is the head of top-4");
        }
    }

    #[test]
    fn weights_are_exact_within_sampling_noise() {
        let weights = [1.0, 2.0, 3.0, 4.0];
        let hrw = Hrw::new(&nodes(&weights));
        let mut counts = [0usize; 4];
        let n = 200_000;
        for k in 0..n as u64 {
            let mut out = vec![];
            hrw.top(key_hash(&k.to_le_bytes()), 1, &mut out);
            counts[out[0] as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let expect = weights[i] / 10.0;
            let got = c as f64 / n as f64;
            assert!((got - expect).abs() / expect < 0.02, "node {i}: {got} vs {expect}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let all = nodes(&[1.0; 10]);
        let before = Hrw::new(&all);
        let mut fewer = all.clone();
        fewer.remove(3);
        let after = Hrw::new(&fewer);
        for k in 0..20_000u64 {
            let h = key_hash(&k.to_le_bytes());
            let (mut a, mut b) = (vec![], vec![]);
            before.top(h, 1, &mut a);
            after.top(h, 1, &mut b);
            let old_id = &all[a[0] as usize].id;
            let new_id = &fewer[b[0] as usize].id;
            if a[0] != 3 {
                assert_eq!(old_id, new_id, "key {k} moved off a surviving node");
            }
        }
    }
}
