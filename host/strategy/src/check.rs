//! The strategy quality kit behind `shardgate strategy check`.
//!
//! For a strategy, a config and N synthetic nodes it measures, over K keys:
//! balance (keys per node against the sampling noise floor), movement when a
//! node is added and when nodes are removed (against the ideal, and how many
//! keys moved between two nodes that were not involved), determinism (two
//! fresh instances agree on every key) and routing cost in ns/key. Hard
//! failures (a trap, an out-of-range answer, non-determinism) are listed in
//! [`CheckReport::failures`].

use crate::error::StrategyError;
use crate::router::{Router, TableKind};
use crate::sandbox::Strategy;
use serde::Serialize;
use shardgate_strategy_sdk::Node as NodeSpec;
use std::time::Instant;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub config: String,
    pub nodes: usize,
    pub keys: usize,
    pub replicas: u32,
    /// Most single-node removals to try (evenly spread); all when N is at
    /// most this.
    pub max_removals: usize,
    /// Node weights, assigned in turn (node i gets `weights[i % len]`);
    /// empty: every node weighs 1.
    pub weights: Vec<f64>,
    /// Number of zones the synthetic nodes are spread over (node i is in
    /// `zone-{i % zones}`); 0: no zone labels.
    pub zones: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { config: String::new(), nodes: 10, keys: 1_000_000, replicas: 1, max_removals: 16, weights: vec![], zones: 3 }
    }
}

impl CheckOptions {
    /// The synthetic node `i` under these options.
    pub fn node(&self, i: usize) -> NodeSpec {
        let weight = if self.weights.is_empty() { 1.0 } else { self.weights[i % self.weights.len()] };
        let zone = if self.zones == 0 { String::new() } else { format!("zone-{}", i % self.zones) };
        NodeSpec::new(format!("node-{i}"), weight, zone)
    }
}

/// Keys one node owns as primary, against its fair share.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLoad {
    pub id: String,
    pub weight: f64,
    pub zone: String,
    /// Keys whose primary owner this node is.
    pub keys: usize,
    /// keys / (K * weight / total weight): 1.0 is exactly its share.
    pub over_share: f64,
}

/// Balance over primary owners: each key counts once, for the first
/// position of its answer (replicas are not counted). With weights, each
/// node is compared with its weighted share, so "mean" reads "share".
#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    /// What is counted: "primaries".
    pub counts: &'static str,
    /// Most keys on one node / its share.
    pub peak_over_mean: f64,
    /// Fewest keys on one node / its share.
    pub min_over_mean: f64,
    /// Standard deviation of keys/share over the nodes.
    pub stddev_over_mean: f64,
    /// What pure sampling noise gives for K keys on N equal nodes: the
    /// expected peak/mean and stddev/mean of a perfect strategy.
    pub noise_peak_over_mean: f64,
    pub noise_stddev_over_mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Movement {
    /// What changed: "add node-10" or "remove node-3".
    pub change: String,
    /// Share of keys whose primary owner changed.
    pub moved: f64,
    /// The least that must move: the new node's share, or the removed one's.
    pub ideal: f64,
    /// Share of keys that moved between two nodes the change did not touch.
    pub between_unaffected: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub version: String,
    pub description: String,
    pub hash: String,
    pub table: TableKind,
    pub nodes: usize,
    pub keys: usize,
    pub replicas: u32,
    pub balance: Balance,
    /// Keys per node (primaries).
    pub load: Vec<NodeLoad>,
    pub add: Movement,
    pub removals: Vec<Movement>,
    pub deterministic: bool,
    pub ns_per_key_single: f64,
    pub ns_per_key_batch: f64,
    pub failures: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The synthetic node `i` used by the kit.
pub fn check_node(i: usize) -> NodeSpec {
    NodeSpec::new(format!("node-{i}"), 1.0, format!("zone-{}", i % 3))
}

/// The synthetic key `i` used by the kit.
pub fn check_key(i: usize) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

/// Routes every key, primary owners only, through the batch path.
fn primaries(router: &Router, keys: &[Vec<u8>]) -> Result<Vec<u32>, StrategyError> {
    let width = router.width();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(4096) {
        let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
        let answer = router.route_batch(&refs)?;
        out.extend(answer.chunks(width).map(|a| a[0]));
    }
    Ok(out)
}

/// Share of keys whose owner (by node id) changed, and share that moved
/// between two nodes other than `touched`.
fn movement(change: String, before: (&[u32], &[NodeSpec]), after: (&[u32], &[NodeSpec]), touched: &str, ideal: f64) -> Movement {
    let (mut moved, mut between) = (0usize, 0usize);
    for (a, b) in before.0.iter().zip(after.0) {
        let (old, new) = (&before.1[*a as usize].id, &after.1[*b as usize].id);
        if old != new {
            moved += 1;
            if old != touched && new != touched {
                between += 1;
            }
        }
    }
    let k = before.0.len().max(1) as f64;
    Movement { change, moved: moved as f64 / k, ideal, between_unaffected: between as f64 / k }
}

/// Runs the kit. `progress` receives one line per step (the CLI prints them
/// to stderr). Errors from the strategy itself become failures in the
/// report; only a strategy that cannot be configured at all is an `Err`.
pub fn check(strategy: &Strategy, opts: &CheckOptions, mut progress: impl FnMut(&str)) -> Result<CheckReport, StrategyError> {
    let n = opts.nodes.max(1);
    let nodes: Vec<NodeSpec> = (0..n).map(|i| opts.node(i)).collect();
    progress(&format!("configuring {} with {n} nodes, {} replica(s)", strategy.metadata().name, opts.replicas));
    strategy.validate_config(&opts.config)?;
    let router = strategy.configure(&opts.config, &nodes, opts.replicas)?;
    let keys: Vec<Vec<u8>> = (0..opts.keys).map(check_key).collect();
    let mut failures = Vec::new();

    progress(&format!("routing {} keys ({} routing)", keys.len(), router.table_kind()));
    let owners = match primaries(&router, &keys) {
        Ok(o) => o,
        Err(e) => {
            failures.push(format!("routing failed: {e}"));
            vec![0; keys.len()]
        }
    };
    let mut counts = vec![0usize; n];
    owners.iter().for_each(|&o| counts[o as usize] += 1);
    let total_weight: f64 = nodes.iter().map(|n| n.weight).sum();
    let load: Vec<NodeLoad> = nodes
        .iter()
        .zip(&counts)
        .map(|(node, &c)| NodeLoad {
            id: node.id.clone(),
            weight: node.weight,
            zone: node.zone.clone(),
            keys: c,
            over_share: c as f64 / (keys.len().max(1) as f64 * node.weight / total_weight),
        })
        .collect();
    let ratios: Vec<f64> = load.iter().map(|l| l.over_share).collect();
    let var = ratios.iter().map(|r| (r - 1.0).powi(2)).sum::<f64>() / n as f64;
    let noise_sd = ((n as f64 - 1.0) / keys.len().max(1) as f64).sqrt();
    let balance = Balance {
        counts: "primaries",
        peak_over_mean: ratios.iter().copied().fold(f64::MIN, f64::max),
        min_over_mean: ratios.iter().copied().fold(f64::MAX, f64::min),
        stddev_over_mean: var.sqrt(),
        noise_peak_over_mean: 1.0 + noise_sd * expected_max_normal(n),
        noise_stddev_over_mean: noise_sd,
    };

    progress("determinism: routing every key through a second, fresh instance");
    let deterministic = match strategy.configure(&opts.config, &nodes, opts.replicas) {
        Ok(second) => {
            let mut same = second.table() == router.table();
            if same {
                let mut out = Vec::with_capacity(router.width());
                for (i, key) in keys.iter().enumerate() {
                    out.clear();
                    match second.route_into(key, &mut out) {
                        Ok(()) if out[0] == owners[i] => {}
                        Ok(()) => {
                            failures.push(format!("key {:?}: owner {} then {}", String::from_utf8_lossy(key), owners[i], out[0]));
                            same = false;
                            break;
                        }
                        Err(e) => {
                            failures.push(format!("routing failed: {e}"));
                            same = false;
                            break;
                        }
                    }
                }
            } else {
                failures.push("two identically configured instances returned different tables".into());
            }
            same
        }
        Err(e) => {
            failures.push(format!("second configure failed: {e}"));
            false
        }
    };
    if !deterministic && !failures.iter().any(|f| f.contains("owner") || f.contains("tables")) {
        failures.push("not deterministic".into());
    }

    progress(&format!("movement: adding node-{n}"));
    let mut grown = nodes.clone();
    grown.push(opts.node(n));
    let add_ideal = grown[n].weight / (total_weight + grown[n].weight);
    let add = match strategy.configure(&opts.config, &grown, opts.replicas).and_then(|r| primaries(&r, &keys)) {
        Ok(after) => movement(format!("add node-{n}"), (&owners, &nodes), (&after, &grown), &grown[n].id, add_ideal),
        Err(e) => {
            failures.push(format!("adding a node failed: {e}"));
            Movement { change: format!("add node-{n}"), moved: f64::NAN, ideal: add_ideal, between_unaffected: f64::NAN }
        }
    };

    let mut removals = Vec::new();
    if n > 1 {
        let picks: Vec<usize> = if n <= opts.max_removals {
            (0..n).collect()
        } else {
            let step = n as f64 / opts.max_removals as f64;
            (0..opts.max_removals).map(|i| (i as f64 * step) as usize).chain([n - 1]).collect()
        };
        for (done, &i) in picks.iter().enumerate() {
            progress(&format!("movement: removing node-{i} ({}/{})", done + 1, picks.len()));
            let mut shrunk = nodes.clone();
            shrunk.remove(i);
            let ideal = counts[i] as f64 / keys.len().max(1) as f64;
            match strategy.configure(&opts.config, &shrunk, opts.replicas).and_then(|r| primaries(&r, &keys)) {
                Ok(after) => removals.push(movement(format!("remove node-{i}"), (&owners, &nodes), (&after, &shrunk), &nodes[i].id, ideal)),
                Err(e) => failures.push(format!("removing node-{i} failed: {e}")),
            }
        }
    }

    progress("timing: single-key and batched routing");
    let timed = keys.len().min(200_000);
    let mut out = Vec::with_capacity(router.width());
    let start = Instant::now();
    for key in &keys[..timed] {
        out.clear();
        if let Err(e) = router.route_into(key, &mut out) {
            failures.push(format!("routing failed: {e}"));
            break;
        }
    }
    let ns_single = start.elapsed().as_nanos() as f64 / timed.max(1) as f64;
    let start = Instant::now();
    let _ = primaries(&router, &keys[..timed]);
    let ns_batch = start.elapsed().as_nanos() as f64 / timed.max(1) as f64;

    let m = strategy.metadata();
    failures.dedup();
    Ok(CheckReport {
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        hash: strategy.hash().to_string(),
        table: router.table_kind(),
        nodes: n,
        keys: keys.len(),
        replicas: opts.replicas,
        balance,
        load,
        add,
        removals,
        deterministic,
        ns_per_key_single: ns_single,
        ns_per_key_batch: ns_batch,
        failures,
    })
}

/// Expected maximum of n standard normal variables (Blom's approximation),
/// for the sampling-noise peak/mean of a perfectly balanced strategy.
fn expected_max_normal(n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let p = (n as f64 - 0.375) / (n as f64 + 0.25);
    inverse_normal_cdf(p)
}

/// Acklam's rational approximation of the standard normal quantile
/// (relative error below 1.2e-9).
// The coefficients as published, digit for digit.
#[allow(clippy::excessive_precision)]
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383577518672690e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
    // The quantile of the lower tail q = min(p, 1 - p) (negative), mirrored
    // for the upper half.
    let q = p.min(1.0 - p);
    let lower = if q < 0.02425 {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5]) / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    } else {
        let r = q - 0.5;
        let s = r * r;
        (((((A[0] * s + A[1]) * s + A[2]) * s + A[3]) * s + A[4]) * s + A[5]) * r
            / (((((B[0] * s + B[1]) * s + B[2]) * s + B[3]) * s + B[4]) * s + 1.0)
    };
    if p < 0.5 { lower } else { -lower }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "strategy   {} {} ({})", self.name, self.version, self.description)?;
        writeln!(f, "component  sha256:{}", self.hash)?;
        writeln!(f, "routing    {} table, {} nodes, {} replica(s), {} keys", self.table, self.nodes, self.replicas, self.keys)?;
        let b = &self.balance;
        writeln!(f, "\nbalance (primary owners only: each key counted once, for the first of its {} position(s))", self.replicas)?;
        writeln!(f, "                     measured   noise floor")?;
        writeln!(f, "  peak/mean          {:>8.4}   {:>8.4}", b.peak_over_mean, b.noise_peak_over_mean)?;
        writeln!(f, "  min/mean           {:>8.4}   {:>8.4}", b.min_over_mean, 2.0 - b.noise_peak_over_mean)?;
        writeln!(f, "  stddev/mean        {:>8.4}   {:>8.4}", b.stddev_over_mean, b.noise_stddev_over_mean)?;
        writeln!(f, "  (mean: a node's fair share of the keys, by weight. The noise floor is what a perfect strategy")?;
        writeln!(f, "  measures with {} random keys on {} nodes: values near it are as good as sampling allows.)", self.keys, self.nodes)?;
        writeln!(f, "\nmovement             moved     ideal   moved/ideal   between unaffected")?;
        writeln!(f, "  (moved: share of keys whose primary changed; ideal: the least that must move, the added or")?;
        writeln!(f, "  removed node's share; between unaffected: keys moved between two nodes the change did not touch, 0 for")?;
        writeln!(f, "  a consistent strategy)")?;
        let row = |f: &mut std::fmt::Formatter<'_>, m: &Movement| {
            writeln!(
                f,
                "  {:<18} {:>6.2}%   {:>6.2}%   {:>9.3}     {:>6.3}%",
                m.change,
                m.moved * 100.0,
                m.ideal * 100.0,
                m.moved / m.ideal,
                m.between_unaffected * 100.0
            )
        };
        row(f, &self.add)?;
        if !self.removals.is_empty() {
            let worst = self.removals.iter().max_by(|a, b| (a.moved / a.ideal).total_cmp(&(b.moved / b.ideal))).unwrap();
            let mean_ratio = self.removals.iter().map(|m| m.moved / m.ideal).sum::<f64>() / self.removals.len() as f64;
            let mean_between = self.removals.iter().map(|m| m.between_unaffected).sum::<f64>() / self.removals.len() as f64;
            writeln!(
                f,
                "  remove, {} tried:   mean moved/ideal {:.3}, mean between unaffected {:.3}%",
                self.removals.len(),
                mean_ratio,
                mean_between * 100.0
            )?;
            row(f, worst)?;
        }
        writeln!(f, "\ndeterminism          {}", if self.deterministic { "two fresh instances agree on every key" } else { "FAILED" })?;
        writeln!(f, "cost                 {:.1} ns/key single, {:.1} ns/key batched", self.ns_per_key_single, self.ns_per_key_batch)?;
        if self.failures.is_empty() {
            writeln!(f, "\nresult               PASS")
        } else {
            writeln!(f, "\nresult               FAIL")?;
            for failure in &self.failures {
                writeln!(f, "  - {failure}")?;
            }
            Ok(())
        }
    }
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG: one bar per (label, value), a
/// dashed reference line at `reference` (and at `band`, when given).
fn bar_chart(title: &str, bars: &[(String, f64, &str)], reference: f64, band: Option<f64>, unit: &str) -> String {
    let (row, label_w, plot_w) = (18.0, 150.0, 460.0);
    let height = 40.0 + row * bars.len() as f64;
    let top = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(reference.max(band.unwrap_or(0.0)), f64::max) * 1.1;
    let x = |v: f64| label_w + plot_w * (v / top.max(f64::MIN_POSITIVE));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12"><text x="4" y="16" font-weight="bold">{t}</text>"#,
        w = label_w + plot_w + 80.0,
        t = esc(title)
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let v = if value.is_finite() { *value } else { 0.0 };
        svg.push_str(&format!(
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{l}</text><rect x="{label_w}" y="{y}" width="{bw:.1}" height="{h}" fill="{color}"/><text x="{vx:.1}" y="{ty}">{v:.3}{unit}</text>"#,
            lx = label_w - 6.0,
            ty = y + 12.0,
            l = esc(label),
            bw = x(v) - label_w,
            h = row - 4.0,
            vx = x(v) + 4.0,
        ));
    }
    for (at, name) in [(Some(reference), "ideal"), (band, "noise")] {
        if let Some(at) = at {
            svg.push_str(&format!(
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="24" y2="{y2}" stroke="#333" stroke-dasharray="4 3"/><text x="{px:.1}" y="{ly}" font-size="10">{name}</text>"##,
                px = x(at),
                y2 = height - 8.0,
                ly = height - 1.0
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

impl CheckReport {
    /// The report as one self-contained HTML page (inline SVG, no script,
    /// nothing fetched): load per node against its share and the noise
    /// floor, and keys moved against the ideal when a node is added or
    /// removed.
    pub fn to_html(&self) -> String {
        let load: Vec<(String, f64, &str)> = self
            .load
            .iter()
            .map(|l| {
                let color = if l.over_share > self.balance.noise_peak_over_mean { "#d9822b" } else { "#3b7dd8" };
                (format!("{} (w {})", l.id, l.weight), l.over_share, color)
            })
            .collect();
        let mut moves = vec![(self.add.change.clone(), self.add.moved / self.add.ideal, "#3b7dd8")];
        moves.extend(self.removals.iter().map(|m| (m.change.clone(), m.moved / m.ideal, "#6a9f3a")));
        let between: Vec<(String, f64, &str)> =
            std::iter::once(&self.add).chain(&self.removals).map(|m| (m.change.clone(), m.between_unaffected * 100.0, "#c0392b")).collect();
        format!(
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>strategy check: {name} {version}</title>
<style>body{{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}} pre{{background:#f4f4f4;padding:1em;overflow-x:auto;font-size:12px}} p.note{{color:#555;font-size:13px}}</style></head>
<body><h1>{name} {version}: {result}</h1>
<p>{description}</p>
<h2>Load per node</h2>
<p class="note">Keys whose primary owner each node is, divided by its fair share (by weight). 1.0 is exact; the noise line is the peak a perfect strategy shows with {keys} random keys on {nodes} nodes. Orange bars are above it.</p>
{load_svg}
<h2>Movement</h2>
<p class="note">Keys whose primary changed, divided by the least that must move (the added or removed node's share): 1.0 is minimal.</p>
{moves_svg}
<p class="note">Keys moved between two nodes the change did not touch, in percent: 0 for a consistent strategy.</p>
{between_svg}
<h2>Full report</h2>
<pre>{text}</pre>
</body></html>
"#,
            name = esc(&self.name),
            version = esc(&self.version),
            description = esc(&self.description),
            result = if self.passed() { "PASS" } else { "FAIL" },
            keys = self.keys,
            nodes = self.nodes,
            load_svg = bar_chart("keys / share", &load, 1.0, Some(self.balance.noise_peak_over_mean), ""),
            moves_svg = bar_chart("moved / ideal", &moves, 1.0, None, ""),
            between_svg = bar_chart("moved between unaffected nodes", &between, 0.0, None, "%"),
            text = esc(&self.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles() {
        for (p, z) in [(0.5, 0.0), (0.975, 1.959964), (0.025, -1.959964), (0.9938, 2.500), (0.001, -3.090232), (0.84134, 0.99998)] {
            assert!((inverse_normal_cdf(p) - z).abs() < 2e-3, "quantile({p}) = {} not {z}", inverse_normal_cdf(p));
        }
    }

    #[test]
    fn expected_maximum_grows_with_n() {
        // E[max of n standard normals]: 1.54 for 10, 2.51 for 100 (tables).
        assert!((expected_max_normal(10) - 1.54).abs() < 0.03, "{}", expected_max_normal(10));
        assert!((expected_max_normal(100) - 2.51).abs() < 0.03, "{}", expected_max_normal(100));
        assert_eq!(expected_max_normal(1), 0.0);
    }
}
