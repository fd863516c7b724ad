// The testbed dashboard page: runs table, live / recorded run view, compare view. No framework, no build step:
// plain DOM and uPlot (vendored in /static/vendor by `make vendor`).
"use strict";

const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#6e7781"];
const LIVE_WINDOW_S = 40; // simulated seconds of joint history a live plot keeps
const view = document.getElementById("view");
let teardown = []; // closers of the current view (WebSocket, timers, resize handlers)

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function rate(value) { return value === null || value === undefined ? "–" : Number(value).toFixed(2); }

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

function token() { return sessionStorage.getItem("testbed-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const detail = body && (body.message || body.detail) ? (body.message || body.detail) : response.statusText;
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return body;
}

function badge(status) { return el("span", { class: "badge " + status, "data-status": status }, status); }

function card(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

function figure(label, value, id) {
  return el("div", { class: "figure" }, el("div", { class: "value", id: id || null }, value), el("div", { class: "label" }, label));
}

function plotWidth(container) { return Math.max(240, container.clientWidth - 4); }

function makePlot(container, series, opts = {}) {
  const plot = new uPlot(Object.assign({
    width: plotWidth(container), height: opts.height || 200,
    scales: { x: { time: false } },
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    series: series.map((s, i) => (i ? Object.assign({ points: { show: false } }, s) : s)),
    axes: [{ label: opts.xLabel || "" }, { label: opts.yLabel || "" }],
  }, opts.extra || {}), series.map(() => []), container);
  const resize = () => plot.setSize({ width: plotWidth(container), height: opts.height || 200 });
  window.addEventListener("resize", resize);
  teardown.push(() => { window.removeEventListener("resize", resize); plot.destroy(); });
  return plot;
}

function steps(label, color) {
  return { label, stroke: color, fill: color + "33", width: 1.5, paths: uPlot.paths.stepped({ align: 0 }) };
}

// latency bins are spaced logarithmically (lockstep round trips are tens of µs, a reconnect tens of ms)
const LOG_X = { extra: { scales: { x: { time: false, distr: 3 } } } };

function centers(edges) {
  const out = [];
  for (let i = 0; i + 1 < edges.length; i++) out.push(Math.sqrt(Math.max(edges[i], 1e-6) * edges[i + 1]));
  return out;
}

function eventDetail(e) {
  const skip = new Set(["t", "wall", "episode", "kind", "robot"]);
  return Object.entries(e).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

function eventRow(e) {
  return el("tr", { class: "kind-" + e.kind },
    el("td", { class: "num" }, fmt(e.t, 2)), el("td", { class: "num" }, e.episode ?? ""),
    el("td", {}, e.kind), el("td", {}, e.robot || ""), el("td", {}, eventDetail(e)));
}

// ---------------------------------------------------------------- router

function route() {
  for (const close of teardown) { try { close(); } catch (_) { /* already closed */ } }
  teardown = [];
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, arg] = [hash.split("/")[0], decodeURIComponent(hash.split("/").slice(1).join("/"))];
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === (name || "runs"));
  view.replaceChildren();
  const show = name === "run" && arg ? runView(arg) : name === "compare" ? compareView(arg) : runsView();
  show.catch((error) => view.replaceChildren(el("p", { class: "message error", id: "view-error" }, error.message)));
}

// ---------------------------------------------------------------- runs table

const COLUMNS = [ // [label, sort key, cell]
  ["run", "run_id", (r) => r.run_id],
  ["scenario", "scenario", (r) => r.scenario || "–"],
  ["policy", "policy", (r) => r.policy || "–"],
  ["status", "status", (r) => badge(r.status)],
  ["success", "success_rate", (r) => rate(r.success_rate), true],
  ["parts/min", "parts_per_min", (r) => fmt(r.parts_per_min, 1), true],
  ["cycle time (s)", "cycle_time_s", (r) => fmt(r.cycle_time_s, 2), true],
  ["safety stops", "safety_stops", (r) => fmt(r.safety_stops), true],
  ["date", "date", (r) => (r.started || "").replace("T", " ").replace("+00:00", " UTC")],
];
const runsState = { sort: "date", order: "desc", scenario: "", policy: "", status: "", selected: new Set() };

async function runsView() {
  view.append(el("h1", {}, "Runs"));
  view.append(launchPanel());
  const filters = el("div", { class: "toolbar" });
  const compareButton = el("button", { id: "compare-selected", disabled: true, onclick: () => {
    location.hash = "#/compare/" + [...runsState.selected].map(encodeURIComponent).join(",");
  } }, "Compare selected");
  const table = el("table", { id: "runs-table" });
  const policies = el("div", { id: "policies" });
  view.append(el("section", { class: "card wide" }, filters, table), el("div", { style: "height:14px" }),
    card("Policies seen", policies));

  async function refresh() {
    const query = new URLSearchParams({ sort: runsState.sort, order: runsState.order });
    for (const key of ["scenario", "policy", "status"]) if (runsState[key]) query.set(key, runsState[key]);
    const [data, all] = await Promise.all([api("/api/runs?" + query), api("/api/runs?limit=5000")]);
    drawFilters(all.runs);
    drawTable(data.runs);
  }

  function select(key, values) {
    const node = el("select", { id: "filter-" + key, onchange: (ev) => { runsState[key] = ev.target.value; refresh(); } },
      el("option", { value: "" }, { scenario: "all scenarios", policy: "all policies", status: "any status" }[key]), ...[...new Set(values.filter(Boolean))].sort().map((v) => el("option", { value: v }, v)));
    node.value = runsState[key];
    return node;
  }

  function drawFilters(all) {
    filters.replaceChildren(select("scenario", all.map((r) => r.scenario)), select("policy", all.map((r) => r.policy)),
      select("status", ["live", "finished", "aborted", "incomplete"]), compareButton,
      el("span", { class: "muted" }, `${all.length} run(s)`));
  }

  function drawTable(runs) {
    const head = el("tr", {}, el("th", {}, ""), ...COLUMNS.map(([label, key, , numeric]) => {
      const sorted = runsState.sort === key;
      return el("th", { class: `sortable${numeric ? " num" : ""}${sorted ? " sorted" : ""}${sorted && runsState.order === "asc" ? " asc" : ""}`,
        "data-sort": key, onclick: () => {
          runsState.order = runsState.sort === key && runsState.order === "desc" ? "asc" : "desc";
          runsState.sort = key;
          refresh();
        } }, label);
    }));
    const body = el("tbody", {}, runs.map((r) => el("tr", { class: "link", "data-run-id": r.run_id, onclick: (ev) => {
      if (ev.target.tagName !== "INPUT") location.hash = "#/run/" + encodeURIComponent(r.run_id);
    } }, el("td", {}, el("input", { type: "checkbox", checked: runsState.selected.has(r.run_id), onchange: (ev) => {
      if (ev.target.checked) runsState.selected.add(r.run_id); else runsState.selected.delete(r.run_id);
      compareButton.disabled = runsState.selected.size < 2;
      compareButton.textContent = `Compare selected (${runsState.selected.size})`;
    } })), ...COLUMNS.map(([, , cell, numeric]) => el("td", { class: numeric ? "num" : null }, cell(r))))));
    if (!runs.length) body.append(el("tr", {}, el("td", { colspan: COLUMNS.length + 1, class: "muted" }, "no runs recorded yet")));
    table.replaceChildren(el("thead", {}, head), body);
    compareButton.disabled = runsState.selected.size < 2;
  }

  await refresh();
  api("/api/policies").then((data) => {
    policies.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["policy", "runs", "mean success", "latency p50 (ms)", "latency p99 (ms)", "scenarios"]
      .map((h) => el("th", {}, h)))), el("tbody", {}, data.policies.map((p) => el("tr", {},
      el("td", {}, p.policy), el("td", { class: "num" }, p.runs), el("td", { class: "num" }, rate(p.success_rate_mean)),
      el("td", { class: "num" }, fmt(p.latency_ms.p50, 3)), el("td", { class: "num" }, fmt(p.latency_ms.p99, 3)),
      el("td", {}, p.scenarios.join(", ")))))));
  });
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  teardown.push(() => clearInterval(timer));
}

function launchPanel() {
  const files = el("select", { id: "launch-file" });
  const overrides = el("textarea", { id: "launch-overrides", placeholder: "key:=value, one per line (e.g. episodes:=3)" });
  const message = el("div", { id: "launch-message", class: "message" });
  const start = el("button", { id: "launch-start", onclick: async () => {
    start.disabled = true;
    message.className = "message";
    message.textContent = "starting…";
    try {
      const body = { launch: files.value, overrides: overrides.value.split(/\n|\s+(?=\S+:=)/).map((s) => s.trim()).filter(Boolean) };
      const started = await api("/api/runs", { method: "POST", body: JSON.stringify(body) });
      message.className = "message ok";
      message.textContent = "started " + started.run_id;
      location.hash = "#/run/" + encodeURIComponent(started.run_id);
    } catch (error) {
      message.className = "message error";
      message.textContent = `refused (${error.status || "error"}): ${error.message}`;
    } finally {
      start.disabled = false;
    }
  } }, "Start run");
  api("/api/launch-files").then((data) => files.replaceChildren(...data.files.map((f) =>
    el("option", { value: f.name }, `${f.name} (${f.scenario}, ${f.episodes} episode${f.episodes === 1 ? "" : "s"})`))));
  return el("details", { class: "card", id: "launch-panel", open: true, style: "margin-bottom:14px" },
    el("summary", {}, el("strong", {}, "Start a run"), el("span", { class: "muted" }, " — needs the dashboard token")),
    el("div", { class: "toolbar", style: "margin-top:8px" }, files, start), overrides, message);
}

// ---------------------------------------------------------------- one run (live or recorded)

async function runView(runId) {
  const run = await api("/api/runs/" + encodeURIComponent(runId));
  const status = el("span", { id: "run-status" }, badge(run.status));
  const stop = el("button", { class: "danger", id: "run-stop", onclick: async () => {
    try { await api(`/api/runs/${encodeURIComponent(runId)}/stop`, { method: "POST" }); stop.textContent = "stopping…"; }
    catch (error) { stop.textContent = "stop refused: " + error.message; }
  } }, "Stop run");
  view.append(el("h1", {}, runId, " ", status, " ", run.status === "live" ? stop : null));
  view.append(el("p", { class: "muted" }, `scenario ${run.scenario || "–"} · policy ${run.policy || "–"} · seed ${fmt(run.seed)} · started ${run.started || "–"}`));
  const grid = el("div", { class: "grid", id: "run-grid" });
  view.append(grid);
  if (run.status === "live") liveRun(runId, grid, status, stop);
  else await recordedRun(runId, run, grid);
  if (run.sites) sitesPanel(runId);
}

function metricsCard(m) {
  return el("div", { class: "figures", id: "run-metrics" },
    figure("episodes", fmt(m.episodes ?? m.episodes_done), "m-episodes"),
    figure("success rate", rate(m.success_rate), "m-success"),
    figure("parts placed", fmt(m.parts_placed), "m-placed"),
    figure("parts/min (sim)", fmt(m.parts_per_min, 1), "m-ppm"),
    figure("cycle time (s)", fmt(m.cycle_time_s && typeof m.cycle_time_s === "object" ? m.cycle_time_s.mean : m.cycle_time_s), "m-cycle"),
    figure("safety stops", fmt(m.safety_stops), "m-stops"),
    figure("collisions", fmt(m.collisions), "m-collisions"),
    figure("policy timeouts", fmt(m.policy_timeouts), "m-timeouts"));
}

function latencyPlot(container, hist) {
  if (!hist || !hist.edges || !hist.edges.length) {
    container.replaceChildren(el("p", { class: "muted" }, hist && hist.p50 != null
      ? `p50 ${fmt(hist.p50, 3)} ms, p99 ${fmt(hist.p99, 3)} ms (no per-request samples recorded)` : "no policy requests yet"));
    return null;
  }
  container.replaceChildren();
  const plot = makePlot(container, [{ label: "ms" }, steps("requests", COLORS[0])],
    Object.assign({ xLabel: "policy latency (ms, log scale)", yLabel: "requests", height: 180 }, LOG_X));
  plot.setData([centers(hist.edges), hist.counts]);
  container.dataset.count = hist.count;
  return plot;
}

function liveRun(runId, grid, status, stop) {
  const camera = el("img", { id: "camera", alt: "camera" });
  const cameraCaption = el("div", { class: "muted", id: "camera-caption" }, "waiting for a frame…");
  const states = el("table", { id: "controller-states" });
  const metrics = el("div", { id: "metrics-holder" }, metricsCard({}));
  const plots = el("div", { id: "joint-plots" });
  const latency = el("div", { class: "plot", id: "latency-plot" });
  const events = el("tbody");
  const eventBox = el("div", { class: "events" }, el("table", { id: "event-log" }, el("thead", {}, el("tr", {},
    ["t (s)", "ep", "kind", "robot", ""].map((h) => el("th", {}, h)))), events));
  const episodes = el("div", { class: "episodes", id: "episode-results" });
  grid.append(card("Camera", camera, cameraCaption), card("Controller states", el("div", { class: "scroll" }, states)), card("Running metrics", metrics, el("h2", { style: "margin-top:10px" }, "Episodes"), episodes),
    el("section", { class: "card wide" }, el("h2", {}, "Joint positions (rad)"), plots),
    card("Policy latency", latency), el("section", { class: "card" }, el("h2", {}, "Event log"), eventBox));

  const jointPlots = {}; // robot -> {plot, data, container}
  let latencyShown = null;
  let dirty = false;
  let episodeOffset = 0; // simulated time of the episodes before this one: x is the run's simulated time
  let lastEpisode = null;
  let lastT = 0;

  function ensurePlots(robots) {
    for (const robot of robots) {
      if (jointPlots[robot.name]) continue;
      const names = robot.joint_names.length ? robot.joint_names : robot.joints.map((_, i) => "j" + (i + 1));
      const container = el("div", { class: "plot joint-plot", "data-robot": robot.name, "data-samples": "0" });
      plots.append(el("div", { class: "muted" }, robot.name), container);
      const series = [{ label: "t (s)" }, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5 }))];
      jointPlots[robot.name] = { plot: makePlot(container, series, { xLabel: "run time (simulated s)", yLabel: "rad", height: 220 }),
        data: series.map(() => []), container, samples: 0 };
    }
  }

  let robotsMeta = [];
  function onState(state) {
    if (lastEpisode !== null && state.episode !== lastEpisode) episodeOffset += lastT;
    lastEpisode = state.episode;
    lastT = state.t;
    const now = episodeOffset + state.t;
    const rows = [el("tr", {}, ["robot", "state", "suction", "TCP x, y, z (m)", "placed"].map((h) => el("th", {}, h)))];
    for (const [name, r] of Object.entries(state.robots || {})) {
      if (!jointPlots[name]) ensurePlots([{ name, joint_names: (robotsMeta.find((m) => m.name === name) || {}).joint_names || [], joints: r.joint_pos }]);
      const entry = jointPlots[name];
      entry.data[0].push(now);
      r.joint_pos.forEach((q, j) => { if (entry.data[j + 1]) entry.data[j + 1].push(q); });
      while (entry.data[0].length && entry.data[0][0] < now - LIVE_WINDOW_S) for (const column of entry.data) column.shift();
      entry.samples += 1;
      const tally = state.episode_tally || {};
      rows.push(el("tr", { "data-robot": name }, el("td", {}, name), el("td", {}, el("span", { class: "badge " + (r.state === "ACTIVE" ? "ok" : "bad") }, r.state)),
        el("td", {}, r.suction ? "on" : "off"), el("td", { class: "num" }, (r.tcp_xyz || []).map((x) => x.toFixed(3)).join(", ")),
        el("td", { class: "num" }, `${tally.placed ?? "–"} / ${tally.parts ?? "–"}`)));
    }
    states.replaceChildren(...rows);
    dirty = true;
  }

  function draw() {
    if (dirty) {
      for (const entry of Object.values(jointPlots)) {
        entry.plot.setData(entry.data);
        entry.container.dataset.samples = String(entry.samples);
      }
      dirty = false;
    }
    frame = requestAnimationFrame(draw);
  }
  let frame = requestAnimationFrame(draw);
  teardown.push(() => cancelAnimationFrame(frame));

  function onMetrics(m) {
    metrics.replaceChildren(metricsCard(m));
    episodes.replaceChildren(...(m.episode_results || []).map((e) => el("span", { class: e.success ? "pass" : "fail", title: `episode ${e.episode}: ${e.placed}/${e.parts} ${e.reason || ""}` })));
    const hist = m.policy_latency_ms;
    if (hist && hist.count && (!latencyShown || latencyShown.count !== hist.count)) {
      if (latencyShown && latencyShown.plot && hist.edges.length === latencyShown.edges) {
        latencyShown.plot.setData([centers(hist.edges), hist.counts]);
      } else {
        if (latencyShown && latencyShown.plot) latencyShown.plot.destroy();
        latencyShown = { plot: latencyPlot(latency, hist), edges: hist.edges.length };
      }
      latencyShown.count = hist.count;
      latency.dataset.count = hist.count;
    }
  }

  function onEvents(list) {
    for (const e of list) events.prepend(eventRow(e));
    while (events.children.length > 300) events.lastChild.remove();
  }

  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/runs/${encodeURIComponent(runId)}/live`);
  socket.onopen = () => socket.send(JSON.stringify({ token: token() || null, frames: true }));
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "hello") { robotsMeta = data.robots; }
    else if (data.type === "tick") { // one message per server pump: new events, newest state and frames, metrics
      if (data.events.length) onEvents(data.events);
      if (data.state) onState(data.state);
      for (const frame of data.frames) {
        camera.src = frame.data;
        camera.dataset.seq = frame.seq;
        cameraCaption.textContent = `${frame.camera} · episode ${frame.episode} · t ${fmt(frame.t, 2)} s`;
      }
      if (data.metrics) onMetrics(data.metrics);
    } else if (data.type === "end") {
      ended("ended");
    } else if (data.type === "error") {
      grid.prepend(el("p", { class: "message error card wide" }, data.detail));
    }
  };
  let over = false;
  function ended(word) {
    if (over) return;
    over = true;
    status.replaceChildren(badge(word), " ", el("a", { href: "#/run/" + encodeURIComponent(runId), onclick: () => setTimeout(route, 0) }, "show the record"));
    stop.remove();
  }
  socket.onclose = () => ended("disconnected");
  teardown.push(() => { socket.onclose = null; socket.close(); });
}

async function recordedRun(runId, run, grid) {
  const id = encodeURIComponent(runId);
  const metricsHolder = el("div", {});
  const episodes = el("div", { class: "episodes", id: "episode-results" });
  const plots = el("div", { id: "joint-plots" });
  const episodeSelect = el("select", { id: "episode-select" });
  const latency = el("div", { class: "plot", id: "latency-plot" });
  const events = el("tbody");
  const more = el("button", {}, "more");
  grid.append(card("Metrics", metricsHolder, el("h2", { style: "margin-top:10px" }, "Episodes"), episodes),
    card("Policy latency", latency),
    el("section", { class: "card wide" }, el("div", { class: "toolbar" }, el("h2", { style: "margin:0" }, "Joint positions (rad)"), episodeSelect), plots),
    el("section", { class: "card wide" }, el("h2", {}, "Events"), el("div", { class: "events" }, el("table", { id: "event-log" },
      el("thead", {}, el("tr", {}, ["t (s)", "ep", "kind", "robot", ""].map((h) => el("th", {}, h)))), events)), more));
  try {
    const m = await api(`/api/runs/${id}/metrics`);
    metricsHolder.replaceChildren(metricsCard(Object.assign({}, m, { parts_per_min: run.parts_per_min })));
    episodes.replaceChildren(...(m.episode_results || []).map((e) => el("span", { class: e.success ? "pass" : "fail", title: `episode ${e.episode}: ${e.placed}/${e.parts} ${e.end_reason || ""}` })));
  } catch (error) {
    metricsHolder.replaceChildren(el("p", { class: "muted" }, error.message + (run.reason ? ` — ${run.reason}` : "")));
  }
  api(`/api/runs/${id}/latency`).then((hist) => latencyPlot(latency, hist)).catch((error) => latency.replaceChildren(el("p", { class: "muted" }, error.message)));
  let offset = 0;
  async function loadEvents() {
    const page = await api(`/api/runs/${id}/events?offset=${offset}&limit=300`);
    for (const e of page.events) events.append(eventRow(e));
    offset = page.next_offset;
    more.hidden = offset === null;
  }
  more.onclick = loadEvents;
  loadEvents();
  async function showEpisode(episode) {
    const query = episode === undefined ? "" : `?episode=${episode}`;
    let trace;
    try { trace = await api(`/api/runs/${id}/joints${query}`); } catch (error) { plots.replaceChildren(el("p", { class: "muted" }, error.message)); return; }
    if (!episodeSelect.options.length) {
      episodeSelect.replaceChildren(...trace.episodes.map((e) => el("option", { value: e }, "episode " + e)));
      episodeSelect.onchange = () => showEpisode(episodeSelect.value);
    }
    episodeSelect.value = trace.episode;
    for (const close of plotClosers.splice(0)) close();
    plots.replaceChildren();
    for (const [name, r] of Object.entries(trace.robots)) {
      const container = el("div", { class: "plot joint-plot", "data-robot": name, "data-samples": r.t_s.length });
      plots.append(el("div", { class: "muted" }, name), container);
      const before = teardown.length;
      const plot = makePlot(container, [{ label: "t (s)" }, ...r.joint_names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5 }))],
        { xLabel: "episode time (s)", yLabel: "rad", height: 240 });
      plot.setData([r.t_s, ...r.position]);
      plotClosers.push(...teardown.splice(before));
    }
  }
  const plotClosers = [];
  teardown.push(() => { for (const close of plotClosers) close(); });
  await showEpisode(undefined);
}

async function sitesPanel(runId) {
  let data;
  try { data = await api(`/api/runs/${encodeURIComponent(runId)}/sites`); } catch (_) { return; }
  const grid = document.getElementById("run-grid");
  if (!grid) return;
  const verdict = data.verdict;
  const verdictText = verdict.ok ? `audit ok (${verdict.reason})` : `audit broken at line ${verdict.broken_line}: ${verdict.reason}`;
  const table = (id, headers, rows) => el("table", { id }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
  const sites = table("sites-table", ["site", "jurisdiction", "region", "roles"], data.sites.map((s) =>
    el("tr", {}, el("td", {}, s.name), el("td", {}, s.jurisdiction), el("td", {}, s.region || ""), el("td", {}, (s.roles || []).join(", ")))));
  const flows = table("flows", ["flow", "from", "to", "fields", "messages", "bytes", "rules"], data.flows.map((f) =>
    el("tr", {}, el("td", {}, f.flow), el("td", {}, f.from), el("td", {}, f.to), el("td", {}, f.fields.join(", ")),
      el("td", { class: "num" }, f.messages), el("td", { class: "num" }, f.bytes),
      el("td", {}, [...new Set(Object.values(f.rules))].join(", ")))));
  grid.append(el("section", { class: "card wide", id: "sites" },
    el("h2", {}, "Sites, flows and audit ", el("span", { class: "badge " + (verdict.ok ? "ok" : "bad"), id: "audit-verdict" }, verdictText)),
    sites, el("h2", { style: "margin-top:12px" }, "Flows between sites"), flows));
}

// ---------------------------------------------------------------- compare

async function compareView(arg) {
  const ids = arg ? arg.split(",").filter(Boolean) : [];
  view.append(el("h1", {}, "Compare runs"));
  if (ids.length < 2) {
    view.append(el("p", { class: "muted" }, "Pick two or more runs in the runs table and press “Compare selected”."));
    return;
  }
  const query = new URLSearchParams();
  for (const id of ids) query.append("runs", id);
  const data = await api("/api/compare?" + query);
  const runs = data.runs;
  const head = el("tr", {}, el("th", {}, "metric"), ...runs.map((r, i) => el("th", { class: "num" }, el("a", { href: "#/run/" + encodeURIComponent(r.run_id) }, r.run_id), i ? " (Δ vs first)" : "")));
  const rows = data.metrics.map((m) => el("tr", { "data-metric": m.key }, el("td", {}, m.label), ...m.values.map((v, i) => {
    const diff = m.diff[i];
    let cls = "diff";
    if (i && diff) cls += (diff > 0) === m.higher_is_better ? " better" : " worse";
    const show = m.key === "success_rate" ? rate : (x) => fmt(x, 3);
    return el("td", { class: "num", "data-run-id": runs[i].run_id }, show(v), i && diff !== null ? el("span", { class: cls }, ` (${diff > 0 ? "+" : ""}${show(diff)})`) : null);
  })));
  const episodes = el("table", { id: "compare-episodes" }, el("tbody", {}, runs.map((r) => el("tr", {}, el("td", {}, r.run_id),
    el("td", {}, el("div", { class: "episodes" }, (data.episodes[r.run_id] || []).map((e) => el("span", { class: e.success ? "pass" : "fail", title: `episode ${e.episode}: ${e.placed}/${e.parts}` }))))))));
  const latency = el("div", { class: "plot", id: "compare-latency" });
  view.append(el("div", { class: "grid" },
    el("section", { class: "card wide" }, el("h2", {}, "Metrics"), el("table", { id: "compare-table" }, el("thead", {}, head), el("tbody", {}, rows))),
    card("Success per episode", episodes),
    card("Policy latency distributions", latency)));
  const edges = data.latency.edges;
  if (edges.length) {
    const series = [{ label: "ms" }, ...runs.map((r, i) => steps(r.run_id, COLORS[i % COLORS.length]))];
    const plot = makePlot(latency, series, Object.assign({ xLabel: "policy latency (ms, log scale)", yLabel: "share of requests", height: 240 }, LOG_X));
    plot.setData([centers(edges), ...runs.map((r) => {
      const h = data.latency.runs[r.run_id];
      const total = (h.counts || []).reduce((a, b) => a + b, 0) || 1;
      return (h.counts && h.counts.length ? h.counts : edges.slice(1).map(() => null)).map((c) => c === null ? null : c / total);
    })]);
  } else {
    latency.append(el("p", { class: "muted" }, runs.map((r) => `${r.run_id}: p50 ${fmt(r.policy_latency_p50_ms, 3)} ms, p99 ${fmt(r.policy_latency_p99_ms, 3)} ms`).join(" · ")));
  }
}

// ---------------------------------------------------------------- start

const tokenInput = document.getElementById("token");
tokenInput.value = token();
tokenInput.addEventListener("change", () => sessionStorage.setItem("testbed-token", tokenInput.value.trim()));
tokenInput.addEventListener("input", () => sessionStorage.setItem("testbed-token", tokenInput.value.trim()));
window.addEventListener("hashchange", route);
route();
