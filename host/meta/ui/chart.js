// Shardgate console: the preview chart, drawn as inline SVG (no library).
// loadChart(report) answers an <svg> with one row per node: the share of the
// sample it owns (primary) before and after the candidate.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function pct(n, total) {
    return total > 0 ? (100 * n) / total : 0;
  }

  window.loadChart = function (report) {
    const rows = report.load;
    const total = report.sample;
    const label = 140, bar = 12, gap = 4, rowH = 2 * bar + gap + 12, width = 720, plot = width - label - 70;
    const max = Math.max(1, ...rows.map((r) => Math.max(r.before, r.after)));
    const height = 30 + rows.length * rowH;
    const root = svg("svg", { class: "chart", id: "load-chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "keys per node before and after" });
    const legend = svg("g", { transform: "translate(" + label + ",4)" });
    legend.appendChild(svg("rect", { class: "before", x: 0, y: 0, width: 12, height: 12 }));
    legend.appendChild(svg("text", { x: 18, y: 10 }, "before (active routing)"));
    legend.appendChild(svg("rect", { class: "after", x: 180, y: 0, width: 12, height: 12 }));
    legend.appendChild(svg("text", { x: 198, y: 10 }, "after (candidate)"));
    root.appendChild(legend);
    rows.forEach((r, i) => {
      const y = 26 + i * rowH;
      const g = svg("g", { class: "node-row", "data-node": r.id });
      g.appendChild(svg("text", { x: 0, y: y + bar + 2 }, r.id));
      [["before", r.before, 0], ["after", r.after, bar + 2]].forEach(([cls, n, dy]) => {
        const w = Math.max(n > 0 ? 1 : 0, (plot * n) / max);
        const rect = svg("rect", { class: cls, x: label, y: y + dy, width: w.toFixed(1), height: bar });
        rect.appendChild(svg("title", {}, `${r.id} ${cls}: ${n} keys (${pct(n, total).toFixed(1)}%)`));
        g.appendChild(rect);
        g.appendChild(svg("text", { x: label + w + 4, y: y + dy + bar - 2 }, `${pct(n, total).toFixed(1)}%`));
      });
      root.appendChild(g);
    });
    root.appendChild(svg("line", { class: "axis", x1: label, y1: 22, x2: label, y2: height }));
    return root;
  };
})();
