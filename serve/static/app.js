// fleet-ray dashboard: plain JS, no build step. Polls the API, follows live events (SSE over fetch,
// so the bearer token can be sent), and posts control actions with the token. Events, grouped errors and
// the spec always need the token; status and the rest only when the API locks reads. The page's CSP
// allows no inline script or style: keep markup free of inline style attributes and on* handlers.
"use strict";

const API = "api/v1";
const TOKEN_KEY = "fleet-ray-token";
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const MAX_EVENTS = 200;
const $ = (id) => document.getElementById(id);

function fmtBrowser(b) {
  // browser slots: pages served, Chromium launches/crashes/memory, proxy health (no credentials)
  if (!b) return "-";
  const bad = b.proxies.filter((p) => p.health !== "healthy").map((p) => `${p.id} ${p.health}`);
  const proxies = b.proxies.length ? ` · proxies ${b.proxies.length - bad.length}/${b.proxies.length} ok` : "";
  const title = `Chromium ${b.chromium || "?"}, ${b.launches} launches, ${b.crashes} crashes, ` +
    `${b.rss_mb.toFixed(0)} MiB` + (b.cpus ? `, CPUs ${b.cpus.join(",")}` : "") +
    (bad.length ? `; ${bad.join(", ")}` : "");
  return `<span title="${esc(title)}">${b.pages} pages · ×${b.launches}${proxies}</span>`;
}

// pools with concurrency_bounds: the slot's effective concurrency, with the last decision's reason
function fmtConcurrency(c) {
  if (!c) return "";
  return ` <span class="badge concurrency" title="${esc(c.reason)}">×${c.current} (${c.min}..${c.max})</span>`;
}

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
// an autoscaled pool's sizing (PoolStatus.autoscale): bounds, ready of desired, what the signal wants, what holds it
function fmtAutoscale(a) {
  if (!a) return "";
  const held = a.held_by ? ` <span class="badge held" title="${esc(a.reason)}">held: ${esc(a.held_by)}</span>` : "";
  const reading = a.reading == null ? "" : ` · ${esc(a.signal)} ${a.reading}`;
  const changed = a.last_change_at ? ` · changed ${fmtTime(a.last_change_at)}` : "";
  return `<div class="autoscale">autoscale <b>${a.min_slots}..${a.max_slots}</b> · ready <b>${a.current}</b>/${a.desired}` +
    ` · wanted <b class="wanted">${a.wanted ?? "-"}</b>${a.pending ? ` · pending ${a.pending}` : ""}${reading}${changed}${held}` +
    ` <span class="muted reason">${esc(a.reason)}</span></div>`;
}

function fmtUptime(s) {
  if (s == null) return "-";
  s = Math.floor(s);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
function fmtTime(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

// -- token & requests ------------------------------------------------------------------------------
function token() { return sessionStorage.getItem(TOKEN_KEY); }
function askToken() {
  const t = window.prompt("API token (FLEET_API_TOKEN or the file in FLEET_API_TOKEN_FILE):");
  if (t && t.trim()) { sessionStorage.setItem(TOKEN_KEY, t.trim()); updateTokenButton(); return t.trim(); }
  return null;
}
function updateTokenButton() { $("token-btn").textContent = token() ? "Forget token" : "Set token"; }

function notice(text, kind = "ok") {
  const n = $("notice");
  n.textContent = text; n.className = kind; n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.hidden = true; }, kind === "error" ? 10000 : 4000);
}

async function request(method, path, body, needToken) {
  let t = token();
  if (needToken && !t) { t = askToken(); if (!t) throw new Error("a token is needed for this action"); }
  const headers = { "Accept": "application/json" };
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`${API}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = data.error || { code: "internal", message: r.statusText, details: [] };
    if (r.status === 401) { sessionStorage.removeItem(TOKEN_KEY); updateTokenButton(); }
    const e = new Error(err.message + (err.details || []).map((d) => `\n  ${d.loc}: ${d.msg}`).join(""));
    e.status = r.status; e.body = err;
    throw e;
  }
  return data;
}
const get = (path) => request("GET", path, undefined, false);
const getLocked = (path) => request("GET", path, undefined, true);  // asks for the token if none is set
const post = (path, body) => request("POST", path, body, true);

// -- rendering -------------------------------------------------------------------------------------
function renderStatus(st) {
  $("fleet-name").textContent = st.fleet;
  $("fleet-meta").textContent = `namespace ${st.namespace} · supervisor pid ${st.supervisor_pid} · store ${st.store}` +
    (st.store_degraded ? " · STORE DEGRADED" : "") + ` · step ${st.last_step_ms.toFixed(1)} ms`;
  if (!st.pools.length) { $("pools").innerHTML = '<p class="muted">No pools. Apply a spec below.</p>'; return; }
  $("pools").innerHTML = st.pools.map((p) => {
    const counts = Object.entries(p.counts).sort().map(([k, v]) => `<span class="state state-${esc(k)}">${esc(k)} ${v}</span>`).join(" ");
    const rows = p.slots.map((s) => `
      <tr data-slot="${esc(s.id)}">
        <td class="id">${esc(s.id)}</td>
        <td><span class="state state-${esc(s.state)}">${esc(s.state)}</span></td>
        <td class="gen">${s.generation}</td>
        <td class="node" title="${esc(s.node_id)}">${esc(s.node_id.slice(0, 8) || "-")}</td>
        <td>${s.pid ?? "-"}</td>
        <td>${fmtUptime(s.uptime_s)}</td>
        <td>${s.tasks}${fmtConcurrency(s.concurrency)}</td>
        <td class="recycles">${s.recycles}</td>
        <td>${esc(s.phase || "-")}</td>
        <td class="browser">${fmtBrowser(s.browser)}</td>
        <td class="reason">${esc(s.reason)}</td>
        <td><button type="button" class="recycle" data-action="recycle" data-slot="${esc(s.id)}">Recycle</button></td>
      </tr>`).join("");
    return `
    <div class="pool" data-pool="${esc(p.name)}">
      <div class="pool-head">
        <span class="name">${esc(p.name)}</span>
        <span class="state pstate-${esc(p.state)}">${esc(p.state)}</span>
        <span class="badge">${esc(p.automation)}${p.version ? " " + esc(p.version) : ""}</span>
        <span class="badge">${esc(p.kind)}${p.batch ? " · batch" : ""}</span>
        <span>desired <b class="desired">${p.desired}</b></span> ${counts}
        ${p.paused ? '<span class="badge">paused</span>' : ""}
        <span class="muted">${esc(p.reason)}</span>
        <span class="spacer"></span>
        <button type="button" data-action="scale" data-pool="${esc(p.name)}">Scale</button>
        <button type="button" data-action="drain" data-pool="${esc(p.name)}">Drain</button>
        <button type="button" data-action="${p.paused ? "resume" : "pause"}" data-pool="${esc(p.name)}">${p.paused ? "Resume" : "Pause"}</button>
      </div>
      ${fmtAutoscale(p.autoscale)}
      <table><thead><tr><th>slot</th><th>state</th><th>gen</th><th>node</th><th>pid</th><th>uptime</th>
        <th>tasks</th><th>recycles</th><th>phase</th><th>browser</th><th>reason</th><th></th></tr></thead>
      <tbody>${rows || '<tr><td colspan="12" class="muted">no slots</td></tr>'}</tbody></table>
    </div>`;
  }).join("");
}

function lineChart(el, series, field) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) { el.innerHTML = '<p class="muted pad">collecting samples…</p>'; return; }
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
  const ymax = Math.max(1e-9, ...all.map((p) => p[field]));
  const W = 600, H = 140, x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - 10) + 5 : 5), y = (v) => H - 5 - (v / ymax) * (H - 20);
  const lines = series.map((s, i) => {
    const pts = s.points.map((p) => `${x(p.t).toFixed(1)},${y(p[field]).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" points="${pts}"/>`;
  }).join("");
  const legend = series.map((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][field] : 0;
    return `<tspan fill="${COLORS[i % COLORS.length]}">■ ${esc(s.pool)} ${last.toFixed(2)}</tspan> `;
  }).join("");
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">${lines}
    <text x="6" y="12" font-size="11" fill="#6b7280">max ${ymax.toFixed(2)}/s · ${legend}</text></svg>`;
}

function renderErrors(e) {
  const failing = e.failing_slots.map((f) => `<li><b>${esc(f.slot)}</b> ${esc(f.state)} — ${esc(f.reason)}</li>`).join("");
  const groups = e.groups.map((g) => `<tr><td>${g.count}</td><td>${esc(g.kind)}</td><td class="reason">${esc(g.sample)}</td>
    <td>${esc(g.pools.join(", "))}</td><td>${fmtTime(g.last_seen)}</td></tr>`).join("");
  $("errors").innerHTML = (failing ? `<p>Failing now:</p><ul>${failing}</ul>` : "") +
    (groups ? `<table><thead><tr><th>#</th><th>kind</th><th>message</th><th>pools</th><th>last</th></tr></thead><tbody>${groups}</tbody></table>`
            : '<p class="muted">no failures recorded</p>');
}

function renderStreams(streams) {
  $("streams").innerHTML = streams.length ? `<table><thead><tr><th>stream</th><th>depth</th><th>capacity</th><th>in/s</th><th>out/s</th><th>emitted</th></tr></thead><tbody>` +
    streams.map((s) => `<tr><td>${esc(s.name)}</td><td>${s.depth}</td><td>${s.capacity ?? "-"}</td><td>${s.in_rate.toFixed(1)}</td><td>${s.out_rate.toFixed(1)}</td><td>${s.items_emitted}</td></tr>`).join("") +
    "</tbody></table>" : '<p class="muted">no streams</p>';
}

function renderBreakers(list) {
  $("breakers").innerHTML = list.length ? `<table><thead><tr><th>target</th><th>state</th><th>window</th><th>reason</th><th></th></tr></thead><tbody>` +
    list.map((b) => `<tr data-breaker="${esc(b.target)}"><td>${esc(b.target)}</td>
      <td><span class="state ${b.tripped ? "state-failed" : "state-running"}">${b.tripped ? "tripped" : "closed"}</span></td>
      <td>${b.failures}/${b.samples}</td><td class="reason">${esc(b.reason)}</td>
      <td>${b.tripped ? `<button type="button" data-action="reset-breaker" data-target="${esc(b.target)}">Reset</button>` : ""}</td></tr>`).join("") +
    "</tbody></table>" : '<p class="muted">no breakers</p>';
}

function renderNodes(nodes) {
  $("nodes").innerHTML = `<table><thead><tr><th>node</th><th>alive</th><th>tags</th><th>slots</th></tr></thead><tbody>` +
    nodes.map((n) => {
      const tags = Object.entries(n.resources).filter(([k]) => !["CPU", "memory", "object_store_memory"].includes(k))
        .map(([k, v]) => `${esc(k)}=${v}`).concat(Object.entries(n.labels).map(([k, v]) => `${esc(k)}:${esc(v)}`)).join(" ");
      return `<tr><td title="${esc(n.node_id)}">${esc(n.node_id.slice(0, 8))}${n.is_head ? " (head)" : ""}</td><td>${n.alive ? "yes" : "NO"}</td>
        <td>${tags || "-"}</td><td>${n.slots.length}</td></tr>`;
    }).join("") + "</tbody></table>";
}

function addEvent(e) {
  const ol = $("events");
  const li = document.createElement("li");
  const bad = /died|failed|unhealthy|escalated|rejected/.test(e.kind), good = /ready/.test(e.kind);
  li.innerHTML = `${fmtTime(e.at)} <span class="k ${bad ? "k-bad" : good ? "k-good" : ""}">${esc(e.kind)}</span> ` +
    `${esc(e.slot || e.pool || "")}${e.generation ? " g" + e.generation : ""} <span class="muted">${esc(e.message)}</span>`;
  li.dataset.kind = e.kind;
  ol.prepend(li);
  while (ol.children.length > MAX_EVENTS) ol.lastChild.remove();
}

// -- live events: SSE parsed from a fetch stream ---------------------------------------------------
async function followEvents() {
  let cursor = null;
  for (;;) {
    if (!token()) {  // live events need the token: wait for one (Set token, or the first action)
      $("events-state").textContent = "(set a token to follow live events)";
      await new Promise((res) => setTimeout(res, 500));
      continue;
    }
    try {
      const headers = { "Accept": "text/event-stream", "Authorization": `Bearer ${token()}` };
      if (cursor) headers["Last-Event-ID"] = cursor;
      const r = await fetch(`${API}/events/stream?backlog=${cursor ? 0 : 50}`, { headers });
      if (r.status === 401) { sessionStorage.removeItem(TOKEN_KEY); updateTokenButton(); continue; }
      if (!r.ok) throw new Error(`events: HTTP ${r.status}`);
      $("events-state").textContent = "(live)";
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i); buf = buf.slice(i + 2);
          let data = null;
          for (const line of frame.split("\n")) {
            if (line.startsWith("id:")) cursor = line.slice(3).trim();
            else if (line.startsWith("data:")) data = line.slice(5).trim();
          }
          if (data) addEvent(JSON.parse(data));
        }
      }
    } catch (err) {
      $("events-state").textContent = `(reconnecting: ${err.message})`;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

// -- polling ---------------------------------------------------------------------------------------
async function refreshStatus() {
  try {
    renderStatus(await get("/status"));
    $("conn").textContent = "live"; $("conn").className = "badge state-running";
  } catch (err) {
    $("conn").textContent = err.status === 401 ? "token needed" : "disconnected";
    $("conn").className = "badge state-failed";
    if (err.status === 401 && !token()) askToken();
  }
}
async function refreshSlow() {
  const jobs = [
    get("/metrics/series").then((m) => { lineChart($("chart-tasks"), m.pools, "tasks_per_s"); lineChart($("chart-errors"), m.pools, "failures_per_s"); }),
    token() ? get("/errors").then(renderErrors)
      : Promise.resolve().then(() => { $("errors").innerHTML = '<p class="muted">set a token to see grouped errors</p>'; }),
    get("/streams").then((s) => renderStreams(s.streams)),
    get("/nodes").then((n) => renderNodes(n.nodes)),
    get("/breakers").then((b) => renderBreakers(b.breakers)),
  ];
  await Promise.allSettled(jobs);
}

// -- actions ---------------------------------------------------------------------------------------
const actions = {
  async token() {
    if (token()) { sessionStorage.removeItem(TOKEN_KEY); updateTokenButton(); notice("token forgotten"); }
    else if (askToken()) notice("token set for this tab");
  },
  async recycle(el) {
    const r = await post(`/slots/${encodeURIComponent(el.dataset.slot)}/recycle`);
    notice(`slot ${r.slot}: generation ${r.generation} will be replaced`);
  },
  async scale(el) {
    const n = window.prompt(`Slots for pool ${el.dataset.pool}:`);
    if (n === null) return;
    if (!/^\d+$/.test(n.trim())) throw new Error(`not a slot count: ${n}`);
    const r = await post(`/pools/${encodeURIComponent(el.dataset.pool)}/scale`, { slots: parseInt(n, 10) });
    notice(`pool ${r.pool}: ${r.message}`);
  },
  async drain(el) {
    const r = await post(`/pools/${encodeURIComponent(el.dataset.pool)}/drain`);
    notice(`pool ${r.pool}: ${r.message}`);
  },
  async pause(el) { const r = await post(`/pools/${encodeURIComponent(el.dataset.pool)}/pause`); notice(`pool ${r.pool}: ${r.message}`); },
  async resume(el) { const r = await post(`/pools/${encodeURIComponent(el.dataset.pool)}/resume`); notice(`pool ${r.pool}: ${r.message}`); },
  async "reset-breaker"(el) {
    const r = await post(`/breakers/${encodeURIComponent(el.dataset.target)}/reset`);
    notice(`breaker for ${r.target} reset${r.tripped ? " (it was tripped)" : ""}`);
    refreshSlow();
  },
  async "load-spec"() { const s = await getLocked("/spec"); $("spec-text").value = JSON.stringify(s.spec, null, 2);
    if (s.redacted.length) notice(`masked values: ${s.redacted.join(", ")} — replace them before applying`, "error"); },
  async apply() {
    const out = $("apply-result");
    let spec;
    try { spec = JSON.parse($("spec-text").value); } catch (e) { out.className = "error"; out.textContent = `not JSON: ${e.message}`; return; }
    try {
      const r = await post("/spec", spec);
      out.className = "ok"; out.textContent = `applied: added ${r.added.join(", ") || "-"}; changed ${r.changed.join(", ") || "-"}; removed ${r.removed.join(", ") || "-"}`;
    } catch (e) { out.className = "error"; out.textContent = e.message; }
  },
};

document.addEventListener("click", async (ev) => {
  const el = ev.target.closest("[data-action]");
  if (!el || !actions[el.dataset.action]) return;
  try { await actions[el.dataset.action](el); refreshStatus(); }
  catch (err) { notice(err.message, "error"); }
});

updateTokenButton();
refreshStatus(); refreshSlow(); followEvents();
setInterval(refreshStatus, 1000);
setInterval(refreshSlow, 3000);
