"""The status page and its login form: plain HTML, inline CSS and script, no CDN.

The script fetches ``/status/data.json`` (same origin: the cookie goes along) every
``REFRESH_MS`` and redraws every section; the throughput plot is an inline SVG
drawn from the server's samples. Elements carry ids (``tasks-SUCCEEDED``,
``nodes-attached``, ...) so a test or a person can find each number.
"""

REFRESH_MS = 2000

LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cortex status: sign in</title>
<style>body{font:15px system-ui,sans-serif;margin:3em;color:#222}
input{font:inherit;padding:.3em;width:28em}button{font:inherit;padding:.3em 1em}
.err{color:#b00}</style></head>
<body><h1>Cortex status</h1>
<p>The page needs an admin token (as <code>cortexctl</code> uses; the hub's
<code>admin.token</code>).</p>
<p class="err" id="login-error">{message}</p>
<form method="post" action="/status/login">
<input type="password" name="token" id="token" placeholder="admin token" autofocus>
<button type="submit" id="sign-in">Sign in</button></form></body></html>
"""

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cortex status</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:15px;margin:1.2em 0 .4em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:7em}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.bad{color:#b00;font-weight:600}.warn{color:#a60}#meta{color:#666}
svg{background:#fff;border:1px solid #ddd;border-radius:6px}
</style></head>
<body>
<h1>Cortex status</h1>
<div id="meta">host <span id="host">-</span> &middot; hub hosts: <span id="hosts">-</span>
&middot; updated <span id="updated">never</span> &middot;
<a href="/status/logout">sign out</a></div>
<h2>Tasks by state</h2><div class="cards" id="tasks"></div>
<h2>Throughput: tasks ended per <span id="bucket">10</span> s, last 10 minutes
(<span id="throughput-total">0</span> since the hub started)</h2>
<svg id="plot" width="640" height="160" viewBox="0 0 640 160" role="img"
 aria-label="tasks ended per interval"></svg>
<h2>Nodes</h2>
<div class="cards">
<div class="card"><b id="nodes-attached">-</b><span>attached</span></div>
<div class="card"><b id="nodes-draining">-</b><span>draining</span></div>
<div class="card"><b id="nodes-total">-</b><span>known</span></div>
<div class="card"><b id="nodes-load">-</b><span>running / capacity</span></div>
</div>
<table id="nodes-table" style="margin-top:.5em"><thead><tr><th class="l">node</th>
<th class="l">status</th><th>shard</th><th>running</th><th>capacity</th>
<th class="l">hub</th></tr></thead><tbody></tbody></table>
<h2>Shards</h2>
<table id="shards-table"><thead><tr><th class="l">hub</th><th>shard</th><th>pid</th>
<th class="l">state</th><th>nodes</th><th>restarts</th></tr></thead><tbody></tbody></table>
<h2>Recent failures</h2>
<table id="failures"><thead><tr><th class="l">task</th><th class="l">state</th>
<th class="l">node</th><th>exit</th><th class="l">reason</th></tr></thead><tbody></tbody>
</table>
<script>
"use strict";
const STATES = ["QUEUED","ASSIGNED","RUNNING","SUCCEEDED","FAILED","CANCELLED",
                "TIMED_OUT","LOST"];
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function rows(id, items, cells) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...items.map(item => {
    const tr = el("tr");
    for (const [text, cls] of cells(item)) tr.appendChild(el("td", text, cls));
    return tr;
  }));
}
function plot(series) {
  const svg = document.getElementById("plot"), W = 640, H = 160, pad = 24;
  const max = Math.max(1, ...series.map(p => p.finished));
  const bw = (W - 2 * pad) / Math.max(1, series.length);
  const ns = "http://www.w3.org/2000/svg";
  const parts = [];
  series.forEach((p, i) => {
    const h = (H - 2 * pad) * p.finished / max;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", pad + i * bw); r.setAttribute("width", Math.max(1, bw - 1));
    r.setAttribute("y", H - pad - h); r.setAttribute("height", h);
    r.setAttribute("fill", "#4a7bd0"); r.setAttribute("data-finished", p.finished);
    parts.push(r);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4); label.setAttribute("y", 14);
  label.setAttribute("font-size", "11"); label.textContent = "max " + max;
  parts.push(label);
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", pad); axis.setAttribute("x2", W - pad);
  axis.setAttribute("y1", H - pad); axis.setAttribute("y2", H - pad);
  axis.setAttribute("stroke", "#999");
  parts.push(axis);
  svg.replaceChildren(...parts);
}
function render(s) {
  document.getElementById("host").textContent = s.host;
  document.getElementById("hosts").textContent = s.hosts.join(", ");
  document.getElementById("updated").textContent = new Date(s.generated_ms)
    .toLocaleTimeString();
  const tasks = document.getElementById("tasks");
  tasks.replaceChildren(...STATES.map(state => {
    const card = el("div", undefined, "card");
    const b = el("b", s.tasks[state] || 0);
    b.id = "tasks-" + state;
    card.append(b, el("span", state));
    return card;
  }));
  const n = s.nodes;
  document.getElementById("nodes-attached").textContent = n.attached;
  document.getElementById("nodes-draining").textContent = n.draining;
  document.getElementById("nodes-total").textContent = n.total;
  document.getElementById("nodes-load").textContent = n.running + " / " + n.capacity;
  rows("nodes-table", n.list, x => [[x.node_id, "l"],
    [x.attached ? (x.draining ? "draining" : "attached") : "detached",
     "l " + (x.attached ? (x.draining ? "warn" : "") : "bad")],
    [x.attached ? x.shard : "-"], [x.running], [x.capacity], [x.hub_id || "-", "l"]]);
  rows("shards-table", s.shards, x => [[x.hub_id, "l"], [x.shard], [x.pid],
    [x.alive ? (x.draining ? "drained" : "alive") : "DOWN",
     "l " + (x.alive ? (x.draining ? "warn" : "") : "bad")], [x.nodes], [x.restarts]]);
  rows("failures", s.failures, x => [[x.task_id, "l"], [x.state, "l bad"],
    [x.node_id || "-", "l"], [x.exit_code === null ? "-" : x.exit_code], [x.reason, "l"]]);
  document.getElementById("bucket").textContent = s.throughput.bucket_s;
  document.getElementById("throughput-total").textContent = s.throughput.total;
  plot(s.throughput.series);
}
async function refresh() {
  try {
    const r = await fetch("/status/data.json", {credentials: "same-origin",
                                                  cache: "no-store"});
    if (r.status === 401) { location.href = "/status/login"; return; }
    render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "failed: " + e;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script></body></html>
""".replace("REFRESH_MS);", f"{REFRESH_MS});")
