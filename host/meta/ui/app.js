// Shardgate operator console. Everything goes through meta's public API on
// the origin that served this page (the same calls `shardgate ctl` makes):
// reads are open, writes carry the admin token typed into the header (kept
// in this tab's sessionStorage only). Live updates: the Raft event stream
// (GET /v1/raft/watch) and the routing watch (GET /v1/watch), with polling
// for what they do not carry (commit and applied indexes, proxies) and as a
// fallback while a stream is down. Reads are linearizable (forwarded to the
// leader), so a list read right after a write of this page shows the write
// even when the page came from a follower.
"use strict";

(function () {
  const TOKEN_KEY = "shardgate.admin_token";
  const POLL_MS = 2000;
  const S = {
    status: null, routing: null, strategies: [], history: [], proxies: null,
    raftLive: false, routingLive: false, candidateHash: null,
  };

  const $ = (id) => document.getElementById(id);

  // A DOM element; attrs may hold `class`, `text`, `on<event>` handlers,
  // `data-*`, and any other attribute. Children are nodes or strings (text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "checked" || k === "disabled" || k === "value") e[k] = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  class ApiError extends Error {
    constructor(status, kind, message) {
      super(message);
      this.status = status;
      this.kind = kind;
    }
  }

  // One API call: the parsed JSON answer, or an ApiError carrying meta's
  // own error message and kind.
  async function api(method, path, body, contentType) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (method !== "GET" && token) headers.Authorization = "Bearer " + token;
    let payload;
    if (body instanceof ArrayBuffer) {
      payload = body;
      headers["Content-Type"] = contentType || "application/wasm";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "unreachable", "cannot reach this meta member: " + e.message);
    }
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    if (!resp.ok) {
      const message = json && json.error ? json.error : text || resp.statusText;
      throw new ApiError(resp.status, json && json.kind ? json.kind : "http", message);
    }
    return json;
  }

  function say(area, text, kind) {
    const box = $(area);
    box.className = "msg " + (kind || "info");
    box.textContent = text;
  }

  function refused(area, e) {
    if (e instanceof ApiError) {
      const where = e.status ? `HTTP ${e.status}, ${e.kind}` : e.kind;
      say(area, `Refused (${where}): ${e.message}`, "error");
    } else {
      say(area, String(e), "error");
    }
  }

  function clear(area) {
    $(area).textContent = "";
    $(area).className = "msg";
  }

  const shortHash = (h) => (h ? h.slice(0, 12) : "");
  const fmtMs = (ms) => (ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60000)} min`);
  const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(2)} MiB`);
  const fmtShare = (x) => `${(100 * x).toFixed(1)}%`;
  const strategyName = (hash) => {
    const s = S.strategies.find((x) => x.hash === hash);
    return s ? `${s.name} ${s.version}` : shortHash(hash);
  };

  function fillBody(table, rows) {
    const body = $(table).tBodies[0];
    body.replaceChildren(...rows);
  }

  // ---- views -------------------------------------------------------------

  function showView() {
    const view = (location.hash || "#cluster").slice(1);
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === view);
    for (const s of document.querySelectorAll(".view")) s.classList.toggle("active", s.id === "view-" + view);
    if (view === "proxies") refreshProxies();
    if (view === "history") refreshHistory();
  }

  // ---- header: this member, the leader, indexes, epoch ------------------

  function renderSummary() {
    const st = S.status;
    const epoch = S.routing ? S.routing.epoch : st ? st.epoch : null;
    const parts = [];
    if (st) {
      parts.push(`member ${st.id} (${st.state})`);
      parts.push(st.leader != null ? `leader ${st.leader}` : "no leader");
      parts.push(`term ${st.term}`);
      parts.push(`commit ${st.committed_index ?? "–"}`);
      parts.push(`applied ${st.applied_index ?? "–"}`);
    }
    if (epoch != null) parts.push(`epoch ${epoch}`);
    $("summary").textContent = parts.join(" · ") || "connecting…";
    $("summary").dataset.epoch = epoch == null ? "" : String(epoch);
    const live = $("live");
    live.textContent = S.raftLive ? "live: raft event stream" : "polling every 2 s";
    live.className = "badge " + (S.raftLive ? "ok" : "warn");
    const eb = $("epoch-badge");
    eb.textContent = epoch == null ? "epoch –" : `epoch ${epoch}` + (S.routingLive ? "" : " (polled)");
    eb.dataset.epoch = epoch == null ? "" : String(epoch);
  }

  function renderMembers() {
    const st = S.status;
    if (!st) return;
    $("raft-facts").replaceChildren(
      el("span", {}, "this member ", el("b", { text: st.id })),
      el("span", {}, "state ", el("b", { text: st.state })),
      el("span", {}, "leader ", el("b", { text: st.leader ?? "none" })),
      el("span", {}, "term ", el("b", { text: st.term })),
      el("span", {}, "last log ", el("b", { text: st.last_log_index ?? "–" })),
      el("span", {}, "committed ", el("b", { text: st.committed_index ?? "–" })),
      el("span", {}, "applied ", el("b", { text: st.applied_index ?? "–" })),
      st.membership_change_pending ? el("span", { class: "badge warn", text: "membership change pending" }) : "",
      st.state !== "leader" ? el("span", { class: "muted", text: "(matched index, lag and last ack are known to the leader only)" }) : "",
    );
    fillBody("members", st.members.map((m) => el("tr", { "data-member": m.id },
      el("td", {}, String(m.id), m.id === st.leader ? el("span", { class: "badge ok", text: "leader" }) : null,
        m.id === st.id ? el("span", { class: "badge", text: "serving this page" }) : null),
      el("td", { class: "mono", text: m.addr }),
      el("td", { text: m.voter ? "voter" : "learner" }),
      el("td", { text: m.matched_index ?? "–" }),
      el("td", { text: m.lag ?? "–" }),
      el("td", { text: m.last_ack_ms == null ? "–" : fmtMs(m.last_ack_ms) }),
    )));
  }

  async function refreshStatus() {
    try {
      S.status = await api("GET", "/v1/raft/status");
    } catch (e) {
      S.status = null;
      $("summary").textContent = "this member does not answer: " + e.message;
      return;
    }
    renderMembers();
    renderSummary();
  }

  // ---- cluster: nodes and their actions ---------------------------------

  async function nodeAction(area, what, call) {
    clear(area);
    try {
      const receipt = await call();
      say(area, `${what}: committed at log index ${receipt.index}, epoch ${receipt.epoch}`, "info");
      await refreshRouting();
    } catch (e) {
      refused(area, e);
    }
  }

  function renderNodes() {
    const nodes = S.routing ? S.routing.nodes : [];
    fillBody("nodes", nodes.map((n) => {
      const weight = el("input", { type: "number", step: "any", min: "0", value: String(n.weight), "aria-label": `weight of ${n.id}` });
      const enc = encodeURIComponent(n.id);
      const toggle = n.state === "active" ? "draining" : "active";
      return el("tr", { "data-node": n.id },
        el("td", { text: n.id }),
        el("td", { class: "mono", text: n.addr }),
        el("td", { text: n.weight }),
        el("td", { text: n.zone || "–" }),
        el("td", {}, el("span", { class: "badge " + (n.state === "active" ? "ok" : "warn"), text: n.state })),
        el("td", {},
          el("button", { type: "button", class: "act-state", text: n.state === "active" ? "drain" : "activate",
            onclick: () => nodeAction("cluster-msg", `${n.id} ${toggle}`, () => api("PATCH", `/v1/nodes/${enc}`, { state: toggle })) }),
          " ", weight,
          el("button", { type: "button", class: "act-weight", text: "set weight",
            onclick: () => nodeAction("cluster-msg", `${n.id} weight ${weight.value}`,
              () => api("PATCH", `/v1/nodes/${enc}`, { weight: Number(weight.value) })) }),
          " ",
          el("button", { type: "button", class: "danger act-remove", text: "remove",
            onclick: () => {
              if (confirm(`Remove node ${n.id}? Its keys move to the other nodes.`)) {
                nodeAction("cluster-msg", `${n.id} removed`, () => api("DELETE", `/v1/nodes/${enc}`));
              }
            } }),
        ));
    }));
  }

  function onRouting(state) {
    const changed = !S.routing || S.routing.epoch !== state.epoch;
    S.routing = state;
    renderNodes();
    renderSummary();
    if (changed) {
      refreshStatus();
      renderCandidateNodes();
      refreshStrategies();
      refreshHistory();
      refreshProxies();
    }
  }

  async function refreshRouting() {
    try {
      onRouting(await api("GET", "/v1/routing"));
    } catch (e) {
      refused("cluster-msg", e);
    }
  }

  // ---- strategies ---------------------------------------------------------

  async function refreshStrategies() {
    try {
      S.strategies = await api("GET", "/v1/strategies");
    } catch (e) {
      refused("strategies-msg", e);
      return;
    }
    S.strategies.sort((a, b) => a.uploaded_at - b.uploaded_at);
    const active = S.routing && S.routing.strategy ? S.routing.strategy.hash : null;
    fillBody("strategies", S.strategies.map((s) => el("tr", { "data-hash": s.hash },
      el("td", {}, s.name, " ", s.hash === active ? el("span", { class: "badge ok", text: "active" }) : null),
      el("td", { text: s.version }),
      el("td", { class: "mono", title: s.hash, text: shortHash(s.hash) }),
      el("td", { text: fmtBytes(s.size) }),
      el("td", { text: (s.uploaded_unix_ms ? new Date(s.uploaded_unix_ms).toLocaleString() + " · " : "") + `log index ${s.uploaded_at}` }),
      el("td", {}, el("button", { type: "button", text: "preview…", onclick: () => {
        S.candidateHash = s.hash;
        renderCandidateStrategies(true);
        location.hash = "#preview";
      } })),
    )));
    renderCandidateStrategies(false);
    renderHistory();
  }

  async function upload(files) {
    clear("strategies-msg");
    for (const file of files) {
      try {
        const info = await api("POST", "/v1/strategies", await file.arrayBuffer(), "application/wasm");
        say("strategies-msg", `${file.name}: ${info.name} ${info.version} stored as ${shortHash(info.hash)}`, "info");
      } catch (e) {
        refused("strategies-msg", e);
        break;
      }
    }
    await refreshStrategies();
  }

  // ---- preview and activation ---------------------------------------------

  function renderCandidateStrategies(selectionChanged) {
    const select = $("pv-strategy");
    const active = S.routing && S.routing.strategy ? S.routing.strategy.hash : null;
    const chosen = S.candidateHash || select.value || active || (S.strategies[0] && S.strategies[0].hash);
    select.replaceChildren(...S.strategies.map((s) => el("option", { value: s.hash,
      text: `${s.name} ${s.version} (${shortHash(s.hash)})${s.hash === active ? " – active" : ""}` })));
    if (chosen) select.value = chosen;
    const previous = select.dataset.hash;
    if (selectionChanged || previous !== select.value) {
      select.dataset.hash = select.value;
      if (S.routing && select.value === active) {
        $("pv-config").value = S.routing.config;
        $("pv-replicas").value = String(S.routing.replicas);
      } else if (selectionChanged) {
        $("pv-config").value = "";
      }
    }
  }

  function renderCandidateNodes() {
    const nodes = S.routing ? S.routing.nodes : [];
    fillBody("pv-nodes", nodes.map((n) => el("tr", { "data-node": n.id },
      el("td", {}, el("input", { type: "checkbox", class: "keep", checked: n.state === "active", "aria-label": `keep ${n.id}` })),
      el("td", { text: n.id }),
      el("td", {}, el("input", { type: "number", class: "weight", step: "any", min: "0", value: String(n.weight) })),
    )));
  }

  // The candidate of the preview form: what a preview sends and the changes
  // an activation commits.
  function candidate() {
    const hash = $("pv-strategy").value;
    if (!hash) throw new Error("upload a strategy first");
    const replicas = Number($("pv-replicas").value);
    const config = $("pv-config").value;
    const current = S.routing ? S.routing.nodes : [];
    const nodes = [];
    const changes = [];
    for (const row of $("pv-nodes").tBodies[0].rows) {
      const n = current.find((x) => x.id === row.dataset.node);
      if (!n) continue;
      const keep = row.querySelector(".keep").checked;
      const weight = Number(row.querySelector(".weight").value);
      const update = {};
      if (keep && n.state !== "active") update.state = "active";
      if (!keep && n.state === "active") update.state = "draining";
      if (weight !== n.weight) update.weight = weight;
      if (Object.keys(update).length) changes.push({ op: "update_node", id: n.id, ...update });
      if (keep) nodes.push({ id: n.id, addr: n.addr, weight, zone: n.zone });
    }
    const lines = $("pv-extra").value.split("\n").map((l) => l.trim()).filter((l) => l);
    for (const line of lines) {
      const [id, addr, weight, zone] = line.split(/\s+/);
      if (!addr) throw new Error(`"${line}": write id http://host:port [weight] [zone]`);
      const node = { id, addr, weight: weight === undefined ? 1 : Number(weight), zone: zone || "" };
      nodes.push(node);
      changes.push({ op: "add_node", ...node });
    }
    return { hash, config, replicas, nodes, changes };
  }

  async function runPreview() {
    clear("preview-msg");
    let c;
    try {
      c = candidate();
    } catch (e) {
      say("preview-msg", e.message, "error");
      return;
    }
    const sample = Number($("pv-sample").value);
    try {
      const report = await api("POST", "/v1/preview", { hash: c.hash, config: c.config, replicas: c.replicas, nodes: c.nodes, sample });
      $("pv-result").replaceChildren(
        el("p", { class: "share", id: "moved-share" }, "keys whose primary owner moves: ", el("b", { text: fmtShare(report.moved_share) }),
          el("span", { class: "muted", text: ` · owner sets changed: ${fmtShare(report.replica_set_changed_share)} · sample ${report.sample} keys` })),
        window.loadChart(report),
      );
    } catch (e) {
      refused("preview-msg", e);
    }
  }

  async function activate() {
    clear("preview-msg");
    let c;
    try {
      c = candidate();
    } catch (e) {
      say("preview-msg", e.message, "error");
      return;
    }
    try {
      let receipt;
      if (c.changes.length === 0) {
        receipt = await api("POST", `/v1/strategies/${c.hash}/activate`, { config: c.config, replicas: c.replicas });
      } else {
        const changes = c.changes.concat([{ op: "activate", hash: c.hash, config: c.config, replicas: c.replicas }]);
        receipt = await api("POST", "/v1/changes", { changes });
      }
      say("preview-msg", `activated ${strategyName(c.hash)}: epoch ${receipt.epoch} (log index ${receipt.index}); see Proxies for convergence`, "info");
      $("pv-extra").value = "";
      await refreshRouting();
    } catch (e) {
      refused("preview-msg", e);
    }
  }

  // ---- history ------------------------------------------------------------

  async function refreshHistory() {
    try {
      S.history = await api("GET", "/v1/routing/history");
    } catch (e) {
      refused("history-msg", e);
      return;
    }
    renderHistory();
  }

  function renderHistory() {
    const current = S.history.length ? S.history[S.history.length - 1].epoch : null;
    fillBody("history", S.history.slice().reverse().map((h) => el("tr", { "data-epoch": h.epoch },
      el("td", { text: h.epoch }),
      el("td", { text: h.at_ms ? new Date(h.at_ms).toLocaleString() : "–" }),
      el("td", {}, strategyName(h.hash), " ", el("span", { class: "mono muted", text: shortHash(h.hash) })),
      el("td", { text: h.replicas }),
      el("td", { class: "mono", title: h.config, text: h.config.length > 60 ? h.config.slice(0, 60) + "…" : h.config || "–" }),
      el("td", { text: h.moved_share == null ? "–" : fmtShare(h.moved_share) }),
      el("td", {}, h.epoch === current ? el("span", { class: "badge ok", text: "in force" }) :
        el("button", { type: "button", text: "roll back", onclick: () => rollback(h.epoch) })),
    )));
  }

  async function rollback(epoch) {
    if (!confirm(`Roll back to the routing of epoch ${epoch}? Keys move as they did then.`)) return;
    clear("history-msg");
    try {
      const r = await api("POST", "/v1/routing/rollback", { epoch });
      say("history-msg", `rolled back to the routing of epoch ${epoch}: now epoch ${r.epoch}`, "info");
      await refreshRouting();
    } catch (e) {
      refused("history-msg", e);
    }
  }

  // ---- key lookup ---------------------------------------------------------

  async function lookup(ev) {
    ev.preventDefault();
    clear("lookup-msg");
    const body = { key: $("lookup-key").value };
    if ($("lookup-candidate").checked) {
      try {
        const c = candidate();
        body.candidate = { hash: c.hash, config: c.config, replicas: c.replicas, nodes: c.nodes };
      } catch (e) {
        say("lookup-msg", e.message, "error");
        return;
      }
    }
    try {
      const r = await api("POST", "/v1/lookup", body);
      const owners = (list) => (list && list.length ? list.map((id, i) => el("span", { class: "badge" + (i === 0 ? " ok" : ""), text: id })) : ["none"]);
      $("lookup-result").replaceChildren(
        el("p", { id: "lookup-active" }, `active routing (epoch ${r.epoch}): `, ...owners(r.active)),
        r.candidate !== undefined ? el("p", { id: "lookup-cand" }, "candidate: ", ...owners(r.candidate)) : null,
      );
    } catch (e) {
      refused("lookup-msg", e);
    }
  }

  // ---- proxies ------------------------------------------------------------

  async function refreshProxies() {
    let list;
    try {
      list = await api("GET", "/v1/proxies");
    } catch (e) {
      refused("proxies-msg", e);
      return;
    }
    clear("proxies-msg");
    S.proxies = list;
    const converged = list.proxies.filter((p) => p.converged && !p.silent).length;
    say("proxies-msg", `member ${list.member} at epoch ${list.epoch}: ${list.proxies.length} proxies, ${converged} converged`, "info");
    fillBody("proxies", list.proxies.map((p) => {
      const state = p.silent ? ["bad", "silent"] : p.converged ? ["ok", "converged"] : ["warn", `behind by ${p.behind}`];
      return el("tr", { "data-proxy": p.id, "data-epoch": p.epoch, "data-converged": String(p.converged && !p.silent) },
        el("td", { class: "mono", text: p.id }),
        el("td", { text: p.epoch === p.meta_epoch ? p.epoch : `${p.epoch} (announced ${p.meta_epoch})` }),
        el("td", { text: p.behind }),
        el("td", {}, el("span", { class: "badge " + state[0], text: state[1] }), p.last_error ? el("div", { class: "muted", text: p.last_error }) : null),
        el("td", { text: fmtMs(p.staleness_ms) }),
        el("td", { text: fmtMs(p.age_ms) + " ago" }),
        el("td", { class: "mono", text: p.following || "–" }),
      );
    }));
  }

  // ---- token ----------------------------------------------------------------

  function renderToken() {
    const has = !!sessionStorage.getItem(TOKEN_KEY);
    $("token-state").textContent = has ? "token set for this tab" : "no token: reads only";
  }

  // ---- live streams -----------------------------------------------------------

  function watchRaft() {
    const es = new EventSource("/v1/raft/watch");
    es.addEventListener("raft", () => {
      S.raftLive = true;
      refreshStatus();
    });
    es.onerror = () => {
      S.raftLive = false;
      renderSummary();
    };
  }

  function watchRouting() {
    // stale=true: show what this member holds even while it has no leader
    // (the header says whether it has one).
    const es = new EventSource("/v1/watch?stale=true");
    es.addEventListener("routing", (e) => {
      S.routingLive = true;
      onRouting(JSON.parse(e.data));
    });
    es.onerror = () => {
      S.routingLive = false;
      renderSummary();
    };
  }

  function start() {
    window.addEventListener("hashchange", showView);
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = $("token-input").value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      $("token-input").value = "";
      renderToken();
    });
    $("token-clear").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      renderToken();
    });
    $("add-node").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const node = { id: $("add-id").value.trim(), addr: $("add-addr").value.trim(), weight: Number($("add-weight").value), zone: $("add-zone").value.trim() };
      nodeAction("cluster-msg", `${node.id} added`, () => api("POST", "/v1/nodes", node));
    });
    $("upload-file").addEventListener("change", (ev) => upload(Array.from(ev.target.files)));
    const drop = $("drop");
    drop.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      drop.classList.remove("over");
      upload(Array.from(ev.dataTransfer.files));
    });
    $("pv-strategy").addEventListener("change", () => {
      S.candidateHash = $("pv-strategy").value;
      renderCandidateStrategies(true);
    });
    $("pv-run").addEventListener("click", runPreview);
    $("pv-activate").addEventListener("click", activate);
    $("lookup-form").addEventListener("submit", lookup);
    renderToken();
    showView();
    refreshStatus();
    refreshRouting();
    watchRaft();
    watchRouting();
    setInterval(() => {
      refreshStatus();
      if (!S.routingLive) refreshRouting();
      const view = (location.hash || "#cluster").slice(1);
      if (view === "proxies") refreshProxies();
    }, POLL_MS);
  }

  start();
})();
