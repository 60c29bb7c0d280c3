// acvg-bridge migration console. Self-contained (no libraries). The admin token lives in
// sessionStorage and goes out only as an Authorization header: the live stream is read with
// fetch() and a ReadableStream, because EventSource cannot send headers.
"use strict";

const TOKEN_KEY = "acvg-console-token";
const PATHS = ["legacy", "voicegateway"];
const SVG_NS = "http://www.w3.org/2000/svg";

const view = { state: null, divergences: [], routes: new Map(), plans: new Map(), streamAbort: null, retry: 0 };

// ------------------------------------------------------------------ small helpers

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function pct(rate) { return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %"; }
function ms(seconds) { return seconds === null || seconds === undefined ? "–" : (seconds * 1000).toFixed(1) + " ms"; }
function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, (options || {}).headers);
  const response = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    signOut(body.message || "not authorised");
    throw new Error("unauthorised");
  }
  return response;
}

// ------------------------------------------------------------------ sign in / out

function showLogin(message) {
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (view.streamAbort) view.streamAbort.abort();
  view.streamAbort = null;
  setLive(false, "signed out");
  showLogin(message);
}

async function signIn(candidate) {
  const response = await fetch("/console/api/state", {
    headers: { Authorization: "Bearer " + candidate }, cache: "no-store",
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    showLogin(body.message || "sign-in failed (" + response.status + ")");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  start(await response.json());
}

function start(state) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  applyState(state);
  refreshDivergences();
  openStream();
}

// ------------------------------------------------------------------ live stream (SSE over fetch)

function setLive(on, text) {
  const live = $("live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = text;
}

async function openStream() {
  if (view.streamAbort) view.streamAbort.abort();
  const abort = new AbortController();
  view.streamAbort = abort;
  try {
    const response = await api("/console/api/stream", { signal: abort.signal });
    if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
    setLive(true, "live");
    view.retry = 0;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (abort.signal.aborted || error.message === "unauthorised") return;
  }
  if (view.streamAbort !== abort || !token()) return;
  setLive(false, "reconnecting");
  view.retry = Math.min(view.retry + 1, 5);
  setTimeout(() => { if (view.streamAbort === abort && token()) openStream(); }, 1000 * view.retry);
}

function handleEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const body = JSON.parse(data.join("\n"));
  if (name === "state") applyState(body);
  else if (name === "divergences") applyDivergences(body.divergences);
}

// ------------------------------------------------------------------ state

function applyState(state) {
  view.state = state;
  const t = state.thresholds;
  $("thresholds").textContent =
    "Verdict per node: ready at ≥ " + pct(t.ready_match_rate) + " match over at least " +
    t.min_samples + " comparisons; needs review below that (red below " +
    pct(t.review_match_rate) + "); not enough data under " + t.min_samples + " comparisons." +
    (state.fleet && state.fleet.figures === "fleet"
      ? " Counts since each live instance started, summed over the fleet."
      : " Counts since the bridge started.");
  $("clock").textContent = state.time.replace("T", " ").replace("Z", " UTC");
  const banner = $("banner");
  banner.hidden = !state.draining && state.steerable;
  banner.textContent = state.draining ? "The bridge is draining: new calls are refused."
    : "Steering is off: the bridge runs without a config file.";
  renderFleet(state.fleet, state.time);
  renderPlans(state.plans || [], state.time);
  const container = $("routes");
  const seen = new Set();
  for (const route of state.routes) {
    seen.add(route.name);
    let card = view.routes.get(route.name);
    if (!card) {
      card = buildRoute(route);
      view.routes.set(route.name, card);
      container.append(card.root);
    }
    updateRoute(card, route, state);
  }
  for (const [name, card] of view.routes) {
    if (!seen.has(name)) { card.root.remove(); view.routes.delete(name); }
  }
  fillSelect($("div-route"), state.routes.map((r) => r.name));
  renderAudit(state.audit);
}

function buildRoute(route) {
  const card = { name: route.name };
  card.title = el("h2", {}, route.name);
  card.badges = el("span");
  card.title.append(card.badges);
  card.bar = el("div", { class: "splitbar" });
  card.splitRows = el("tbody");
  card.fallbacks = el("p", { class: "hint" });
  card.policy = el("dl");
  card.percentInput = el("input", {
    type: "number", min: "0", max: "100", step: "any", class: "percent-input",
    "aria-label": "voicegateway percent",
  });
  card.message = el("p", { class: "steer-msg", role: "status" });
  const apply = el("button", { type: "button", class: "apply-percent primary" }, "Set percentage");
  apply.addEventListener("click", () => {
    const raw = card.percentInput.value.trim();
    const value = raw === "" ? NaN : Number(raw);
    steer(card, { voicegateway_percent: Number.isFinite(value) ? value : raw });
  });
  card.percentInput.addEventListener("keydown", (e) => { if (e.key === "Enter") apply.click(); });
  const kill = el("button", { type: "button", class: "force-legacy danger" }, "Kill switch: all to legacy");
  kill.addEventListener("click", () => steer(card, { force: "legacy" }));
  const forceVg = el("button", { type: "button", class: "force-voicegateway" }, "Force voicegateway");
  forceVg.addEventListener("click", () => steer(card, { force: "voicegateway" }));
  const clear = el("button", { type: "button", class: "force-clear" }, "Clear kill switch");
  clear.addEventListener("click", () => steer(card, { force: null }));
  card.steerBox = el("div", { class: "steer" },
    el("label", {}, "voicegateway % ", card.percentInput), apply, kill, forceVg, clear);
  card.readyRows = el("tbody");
  card.latencyRows = el("tbody");
  card.kpiRows = el("tbody");
  card.plot = el("div", { class: "plot-box" });
  const left = el("div", {},
    el("h3", {}, "Split (primary calls)"), card.bar,
    el("table", { class: "split" },
      el("thead", {}, el("tr", {}, el("th", {}, "path"), el("th", { class: "num" }, "calls"),
        el("th", { class: "num" }, "active now"), el("th", { class: "num" }, "as shadow"),
        el("th", {}, "decided by"))),
      card.splitRows),
    card.fallbacks,
    el("h3", {}, "Migration policy"),
    el("div", { class: "policy" }, card.policy, card.steerBox, card.message));
  const right = el("div", {},
    el("h3", {}, "Readiness per node (shadow comparisons)"),
    el("table", { class: "readiness" },
      el("thead", {}, el("tr", {}, ...["node", "samples", "match rate", "mismatch", "missing",
        "extra", "verdict"].map((h, i) => el("th", { class: i && i < 6 ? "num" : null }, h)))),
      card.readyRows),
    el("h3", {}, "Turn latency per path"),
    el("table", { class: "latency" },
      el("thead", {}, el("tr", {}, el("th", {}, "path"), el("th", { class: "num" }, "turns"),
        el("th", { class: "num" }, "p50"), el("th", { class: "num" }, "p95"))),
      card.latencyRows),
    el("h3", {}, "Last hour (per minute)"), card.plot);
  card.root = el("section", { class: "panel route", "data-route": route.name },
    card.title, el("div", { class: "route-grid" }, left, right), buildKpiTable(card));
  card.percentInput.value = String(route.migration.voicegateway_percent);
  return card;
}

function updateRoute(card, route, state) {
  const m = route.migration;
  const plan = (state.plans || []).find((p) => p.route === route.name);
  card.badges.replaceChildren(...[
    el("span", { class: "badge" }, route.async_mode ? "async" : "sync"),
    el("span", { class: "badge" }, route.paths.join(" + ")),
    m.shadow ? el("span", { class: "badge" }, "shadow on") : null,
    m.force ? el("span", { class: "badge forced", "data-field": "forced" }, "forced: " + m.force) : null,
    plan ? el("span", { class: "badge plan-" + plan.state, "data-field": "plan" },
      "plan: " + planState(plan.state) + (plan.plan.dry_run ? " (dry run)" : "")) : null,
  ].filter(Boolean));
  const total = PATHS.reduce((sum, p) => sum + route.split[p].calls, 0);
  card.bar.replaceChildren(...PATHS.map((p) => {
    const part = el("div", { class: p, title: p + " " + route.split[p].calls });
    // CSSOM, not a style attribute: the page's CSP forbids inline styles.
    part.style.width = (total ? (100 * route.split[p].calls / total) : 0) + "%";
    return part;
  }));
  card.splitRows.replaceChildren(...PATHS.map((p) => {
    const s = route.split[p];
    const reasons = Object.entries(s.reasons).map(([r, n]) => r + " " + n).join(", ");
    return el("tr", { "data-path": p },
      el("td", { class: "path-" + p }, p),
      el("td", { class: "num", "data-field": "calls", "data-path": p }, String(s.calls)),
      el("td", { class: "num", "data-field": "active", "data-path": p }, String(s.active)),
      el("td", { class: "num" }, String(s.shadow_calls)),
      el("td", {}, reasons || "–"));
  }));
  card.fallbacks.textContent = "Fallbacks to legacy (voicegateway could not start the call): " + route.fallbacks;
  card.fallbacks.setAttribute("data-field", "fallbacks");
  const rules = m.rules.length ? m.rules.map((r) => JSON.stringify(r.match) + " → " + r.path).join("; ") : "none";
  card.policy.replaceChildren(
    el("dt", {}, "voicegateway"), el("dd", { "data-field": "percent" }, m.voicegateway_percent + " %"),
    el("dt", {}, "sticky key"), el("dd", {}, m.sticky_key),
    el("dt", {}, "kill switch"), el("dd", { "data-field": "force" }, m.force ? "forced to " + m.force : "off"),
    el("dt", {}, "rules"), el("dd", {}, rules),
    el("dt", {}, "shadow"), el("dd", {}, m.shadow ? "on" : "off"));
  card.steerBox.hidden = !state.steerable || route.paths.length < 2;
  if (document.activeElement !== card.percentInput && !card.dirty) {
    card.percentInput.value = String(m.voicegateway_percent);
  }
  card.percentInput.oninput = () => { card.dirty = true; };
  const rows = [route.readiness.total, ...route.readiness.nodes];
  card.readyRows.replaceChildren(...rows.map((r, i) => el("tr",
    { class: i === 0 ? "total" : null, "data-node": r.node },
    el("td", {}, r.node),
    el("td", { class: "num" }, String(r.samples)),
    el("td", { class: "num" }, pct(r.match_rate)),
    el("td", { class: "num" }, String(r.mismatch)),
    el("td", { class: "num" }, String(r.missing)),
    el("td", { class: "num" }, String(r.extra)),
    el("td", { class: "verdict " + r.level, "data-field": "verdict" }, r.verdict))));
  if (rows.length === 1 && !rows[0].samples) {
    card.readyRows.append(el("tr", {}, el("td", { colspan: "7", class: "hint" },
      m.shadow ? "no comparisons yet" : "shadow is off: no comparisons")));
  }
  card.latencyRows.replaceChildren(...PATHS.map((p) => {
    const l = route.latency[p];
    return el("tr", { "data-path": p }, el("td", { class: "path-" + p }, p),
      el("td", { class: "num" }, String(l.turns)), el("td", { class: "num" }, ms(l.p50_s)),
      el("td", { class: "num" }, ms(l.p95_s)));
  }));
  renderKpis(card, route.kpis);
  card.plot.replaceChildren(plot(route.name, state.history));
}

// ------------------------------------------------------------------ voice KPIs

// The rows of a route's Voice KPIs table, from `route.kpis[path]` (bridge/console/view.py). Each
// row: its value, how a value and a difference read (`scale`, `digits`, `unit`), and `worse`:
// the direction in which voicegateway differing from legacy is worse ("up" or "down"), or null
// where neither direction is (how many calls ended, how long they lasted).
const OUTCOMES = [
  ["caller_hangup", "caller hung up", null],
  ["bot_hangup", "bot hung up", null],
  ["transferred", "transferred", null],
  ["no_input_giveup", "bot gave up (no input)", "up"],
  ["error", "error", "up"],
  ["early_hangup", "early hangup", "up"],
];
const SHARE = { scale: 100, digits: 1, unit: " pts" };
const KPI_ROWS = [
  { key: "calls_ended", label: "calls ended", value: (k) => k.calls_ended, digits: 0, unit: "",
    worse: null, show: (k) => String(k.calls_ended) },
  ...OUTCOMES.map(([key, label, worse]) => Object.assign({
    key: "outcome-" + key, label: "ended: " + label, worse,
    value: (k) => outcome(k, key).share,
    show: (k) => outcome(k, key).share === null ? "–"
      : pct(outcome(k, key).share) + " (" + outcome(k, key).count + ")",
  }, SHARE)),
  { key: "first_prompt_p50", label: "time to first prompt, median", worse: "up", digits: 2,
    unit: " s", value: (k) => k.first_prompt.p50_s },
  { key: "first_prompt_p95", label: "time to first prompt, p95", worse: "up", digits: 2,
    unit: " s", value: (k) => k.first_prompt.p95_s },
  { key: "turns_per_call", label: "turns per call (mean)", worse: null, digits: 1, unit: "",
    value: (k) => k.turns_per_call },
  { key: "no_input_per_call", label: "no-input events per call", worse: "up", digits: 2, unit: "",
    value: (k) => k.no_input_per_call },
  { key: "duration_mean_s", label: "call duration (mean)", worse: null, digits: 1, unit: " s",
    value: (k) => k.duration_mean_s },
];

function outcome(kpis, name) {
  return kpis.outcomes[name] || { count: 0, share: null };
}

function missing(value) { return value === null || value === undefined; }

function kpiValue(row, kpis) {
  if (!kpis) return "–";
  if (row.show) return row.show(kpis);
  const value = row.value(kpis);
  return missing(value) ? "–" : value.toFixed(row.digits) + row.unit;
}

// voicegateway minus legacy as the table shows it: an arrow for the direction, the signed
// difference, and "(worse)" or "(better)" in words where the row has a worse direction.
function kpiDiff(row, legacy, voicegateway) {
  if (missing(legacy) || missing(voicegateway)) return { arrow: "", text: "–", level: "none" };
  const scale = row.scale || 1;
  const rounded = Number(((voicegateway - legacy) * scale).toFixed(row.digits));
  const size = Math.abs(rounded).toFixed(row.digits) + row.unit;
  if (rounded === 0) return { arrow: "", text: "±" + size, level: "same" };
  const up = rounded > 0;
  const level = !row.worse ? "changed" : (row.worse === "up") === up ? "worse" : "better";
  return {
    arrow: up ? "▲" : "▼",
    text: (up ? "+" : "−") + size + (level === "changed" ? "" : " (" + level + ")"),
    level,
  };
}

function buildKpiTable(card) {
  return el("table", { class: "kpis" },
    el("caption", {}, "Voice KPIs ",
      el("span", { class: "hint" }, "primary calls that ended; difference is voicegateway " +
        "minus legacy, ▲ up ▼ down, flagged where worse")),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "KPI"),
      el("th", { scope: "col", class: "num path-legacy" }, "legacy"),
      el("th", { scope: "col", class: "num path-voicegateway" }, "voicegateway"),
      el("th", { scope: "col", class: "num" }, "difference"))),
    card.kpiRows);
}

function renderKpis(card, kpis) {
  const byPath = kpis || {};
  card.kpiRows.replaceChildren(...KPI_ROWS.map((row) => {
    const [legacy, voicegateway] = PATHS.map((p) => byPath[p] ? row.value(byPath[p]) : null);
    const diff = kpiDiff(row, legacy, voicegateway);
    return el("tr", { "data-kpi": row.key },
      el("th", { scope: "row" }, row.label),
      ...PATHS.map((p) => el("td", { class: "num", "data-path": p }, kpiValue(row, byPath[p]))),
      el("td", { class: "num diff " + diff.level, "data-field": "diff", "data-level": diff.level },
        diff.arrow ? el("span", { "aria-hidden": "true" }, diff.arrow + " ") : null, diff.text));
  }));
}

async function steer(card, change) {
  card.message.className = "steer-msg";
  card.message.textContent = "applying…";
  let response;
  try {
    response = await api("/console/api/routes/" + encodeURIComponent(card.name) + "/migration", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(change),
    });
  } catch (error) {
    if (error.message !== "unauthorised") {
      card.message.className = "steer-msg bad";
      card.message.textContent = "failed: " + error.message;
    }
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    card.message.className = "steer-msg bad";
    card.message.textContent = body.message || ("failed (" + response.status + ")");
    return;
  }
  card.dirty = false;
  card.message.className = "steer-msg ok";
  card.message.textContent = Object.keys(change).map((k) =>
    k + ": " + show(body.old[k]) + " → " + show(body.new[k])).join(", ");
  const fresh = await api("/console/api/state");
  if (fresh.ok) applyState(await fresh.json());
}

function show(value) { return value === null || value === undefined ? "none" : String(value); }

// ------------------------------------------------------------------ plot (inline SVG)

function plot(name, history) {
  const W = 560, H = 190, L = 44, R = 52, T = 14, mid = 92, B = 170;
  const root = svg("svg", { class: "plot", viewBox: "0 0 " + W + " " + H, role: "img",
    "aria-label": "match rate and turn latency per path over the last hour, route " + name });
  const now = Date.now() / 1000;
  const x0 = now - history.span_s;
  const x = (t) => L + (W - L - R) * Math.max(0, Math.min(1, (t - x0) / history.span_s));
  const points = history.samples.map((s) => ({
    t: s.partial ? now : s.start + history.step_s / 2, start: s.start, point: s.routes[name] || null,
  }));
  let maxLatency = 0;
  for (const p of points) {
    for (const path of PATHS) {
      const l = p.point && p.point.latency[path];
      if (l && l.p95_s !== null) maxLatency = Math.max(maxLatency, l.p95_s);
    }
  }
  maxLatency = niceCeil(maxLatency || 0.01);
  const yRate = (r) => T + (mid - 14 - T) * (1 - r);
  const yLat = (s) => mid + (B - mid) * (1 - s / maxLatency);
  // frames, grid and labels
  for (const [y, label] of [[yRate(1), "100 %"], [yRate(0.5), "50 %"], [yRate(0), "0 %"]]) {
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    root.append(text(L - 4, y + 3, label, "end"));
  }
  for (const [y, label] of [[yLat(maxLatency), ms(maxLatency)], [yLat(0), "0"]]) {
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    root.append(text(L - 4, y + 3, label, "end"));
  }
  for (let m = 0; m <= 60; m += 15) {
    const t = now - m * 60;
    root.append(text(x(t), H - 4, m ? "-" + m + " min" : "now", "middle"));
  }
  root.append(text(W - R + 4, yRate(0.5) + 3, "match", "start"));
  root.append(text(W - R + 4, yLat(maxLatency / 2) + 3, "latency", "start"));
  // series
  drawSeries(root, points, x, (p) => p.point && p.point.match_rate !== null ? yRate(p.point.match_rate) : null,
    "match", history.step_s);
  for (const path of PATHS) {
    for (const [q, cls] of [["p95_s", ""], ["p50_s", " p50"]]) {
      drawSeries(root, points, x, (p) => {
        const l = p.point && p.point.latency[path];
        return l && l[q] !== null ? yLat(l[q]) : null;
      }, path + cls, history.step_s);
    }
  }
  // legend
  const legend = [["match", "match rate"], ["legacy", "legacy p95 (dashed p50)"],
    ["voicegateway", "voicegateway p95 (dashed p50)"]];
  let lx = L;
  for (const [cls, label] of legend) {
    root.append(svg("line", { class: "line " + cls, x1: lx, x2: lx + 14, y1: 6, y2: 6 }));
    root.append(text(lx + 18, 9, label, "start"));
    lx += 34 + label.length * 5;
  }
  return root;
}

function drawSeries(root, points, x, y, cls, step) {
  let d = "", last = null;
  for (const p of points) {
    const value = y(p);
    if (value === null) { last = null; continue; }
    const gap = last !== null && p.start - last > step * 1.5;
    d += (last === null || gap ? "M" : "L") + x(p.t).toFixed(1) + " " + value.toFixed(1) + " ";
    last = p.start;
    if (!cls.includes("p50")) root.append(svg("circle", { class: cls, cx: x(p.t), cy: value, r: 2 }));
  }
  if (d) root.append(svg("path", { class: "line " + cls, d }));
}

function text(x, y, content, anchor) {
  const node = svg("text", { x, y, "text-anchor": anchor });
  node.textContent = content;
  return node;
}

function niceCeil(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

// ------------------------------------------------------------------ fleet

// Shown only with a shared store (state.fleet is null for one instance on its own).
function renderFleet(fleet, time) {
  const panel = $("fleet");
  panel.hidden = !fleet;
  if (!fleet) return;
  const counted = fleet.instances.filter((i) => i.counted).length;
  const live = fleet.instances.length;
  $("fleet-hint").textContent = fleet.figures === "fleet"
    ? "figures below are summed over " + counted + " of " + live + " live instance(s)"
    : "figures below are this instance's only";
  const warning = $("fleet-store");
  warning.hidden = fleet.figures === "fleet";
  const only = " those of " + fleet.instance_id + " only.";
  warning.textContent = fleet.store === "down"
    ? "The shared store (Redis) is unreachable: figures and divergences are" + only
    : "The other instances' figures could not be read: figures are" + only;
  const now = Date.parse(time) / 1000;
  $("fleet-rows").replaceChildren(...fleet.instances.map((i) => el("tr",
    { class: i.this ? "this" : null, "data-instance": i.id },
    el("td", {}, i.id, i.this ? el("span", { class: "badge" }, "this console") : null),
    el("td", { class: "num", "data-field": "calls" }, String(i.calls)),
    el("td", { class: "num", "data-field": "calls-started" },
      i.calls_started === null ? "–" : String(i.calls_started)),
    el("td", { class: i.draining ? "state-draining" : "state-serving", "data-field": "state" },
      i.draining ? "draining" : "serving"),
    el("td", { class: "num" }, Math.max(0, Math.round(now - i.last_seen)) + " s ago"))));
}

// ------------------------------------------------------------------ migration plans

// One block per route with a plan, each exactly what GET /admin/plan?route=R answers
// (bridge/rollout.py). Approve and Resume go to POST /admin/plan with the same token.
const PLAN_STATES = {
  running: "running", awaiting_approval: "awaiting approval", rolled_back: "rolled back",
  paused: "paused", complete: "complete",
};
const GATE_STATUS = { pass: "pass", fail: "fail", no_data: "no data" };
const DECISION_LEVEL = { promote: "ok", approved: "ok", hold: "warn", rollback: "bad" };
const OPS = { ">=": "≥", "<=": "≤" };
const HISTORY_SHOWN = 20;

function planState(name) { return PLAN_STATES[name] || name; }
function percent(value) { return value === null || value === undefined ? "–" : value + " %"; }
function stamp(iso) { return iso ? iso.replace("T", " ").replace(/(\.\d+)?Z$/, "") : "–"; }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  const m = Math.floor((s % 3600) / 60);
  return Math.floor(s / 3600) + " h" + (m ? " " + m + " min" : "");
}

function figure(value) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
}

function renderPlans(plans, time) {
  $("plans").hidden = !plans.length;
  const seen = new Set();
  for (const plan of plans) {
    seen.add(plan.route);
    let card = view.plans.get(plan.route);
    if (!card) {
      card = buildPlan(plan.route);
      view.plans.set(plan.route, card);
      $("plan-list").append(card.root);
    }
    updatePlan(card, plan, time);
  }
  for (const [name, card] of view.plans) {
    if (!seen.has(name)) { card.root.remove(); view.plans.delete(name); }
  }
}

function buildPlan(name) {
  const card = { name, busy: false };
  card.badges = el("span");
  card.steps = el("ol", { class: "plan-steps", "aria-label": "steps of the plan, route " + name });
  card.dryNote = el("p", { class: "plan-dry hint", "data-field": "dry-run" });
  card.facts = el("dl");
  card.approve = el("button", { type: "button", class: "plan-approve primary" }, "Approve promotion");
  card.approve.addEventListener("click", () => planAction(card, "approve"));
  card.resume = el("button", { type: "button", class: "plan-resume" }, "Resume plan");
  card.resume.addEventListener("click", () => planAction(card, "resume"));
  card.message = el("p", { class: "steer-msg plan-msg", role: "status" });
  card.verdict = el("p", { class: "plan-verdict", "data-field": "verdict" });
  card.gateRows = el("tbody");
  card.historyRows = el("tbody");
  const left = el("div", {},
    el("div", { class: "policy" }, card.facts),
    el("div", { class: "steer plan-actions" }, card.approve, card.resume), card.message);
  const right = el("div", {},
    el("h4", {}, "Gates (last verdict)"), card.verdict,
    el("table", { class: "plan-gates" },
      el("thead", {}, el("tr", {}, ...["gate", "critical", "figure", "threshold", "status",
        "detail"].map((h, i) => el("th", { class: i === 2 || i === 3 ? "num" : null }, h)))),
      card.gateRows));
  card.root = el("article", { class: "plan", "data-route": name },
    el("h3", { class: "plan-title" }, name, card.badges),
    card.steps, card.dryNote,
    el("div", { class: "plan-grid" }, left, right),
    el("h4", {}, "Decisions (newest first)"),
    el("table", { class: "plan-history" },
      el("thead", {}, el("tr", {}, ...["time", "decision", "from → to", "dry run", "failed gates",
        "reason"].map((h) => el("th", {}, h)))),
      card.historyRows));
  return card;
}

function updatePlan(card, p, time) {
  const plan = p.plan;
  card.root.className = "plan state-" + p.state + (plan.dry_run ? " dry-run" : "");
  card.root.setAttribute("data-state", p.state);
  card.badges.replaceChildren(...[
    el("span", { class: "badge plan-" + p.state, "data-field": "state-badge" }, planState(p.state)),
    plan.dry_run ? el("span", { class: "badge dry", "data-field": "dry-run-badge" }, "dry run") : null,
    el("span", { class: "badge" }, "approve: " + plan.approve),
    el("span", { class: "badge" }, "on failure: " + plan.on_failure),
    // another instance runs the plans: this is its state as last published (bridge/console/plan.py)
    p.leader === false ? el("span", { class: "badge", title: "another instance runs the plans" },
      "as the leader last published") : null,
  ].filter(Boolean));
  card.steps.replaceChildren(...plan.steps.map((s, i) => {
    const where = p.step_index === null ? "todo"
      : i < p.step_index ? "done" : i === p.step_index ? "current"
        : i === p.step_index + 1 && p.state === "awaiting_approval" ? "pending" : "todo";
    return el("li", {
      class: "step " + where, "data-step": s, "aria-current": where === "current" ? "step" : null,
      title: { current: "the plan stands here", done: "passed", pending: "awaits approval" }[where] || "ahead",
    }, s + " %");
  }));
  card.dryNote.hidden = !plan.dry_run;
  card.dryNote.textContent = plan.dry_run
    ? "Dry run: the plan judges and logs its verdicts on a step it only imagines; nothing moves " +
      "(voicegateway_percent stays " + percent(p.voicegateway_percent) + ")."
    : "";
  const stepText = p.step === null || p.step === undefined ? "not started"
    : percent(p.step) + " (step " + (p.step_index + 1) + " of " + plan.steps.length + ")" +
      (plan.dry_run ? ", imagined" : "");
  card.facts.replaceChildren(
    el("dt", {}, "state"),
    el("dd", { class: "plan-state " + p.state, "data-field": "state" }, planState(p.state)),
    el("dt", {}, "why"), el("dd", { "data-field": "reason" }, p.reason || "–"),
    el("dt", {}, "step"), el("dd", { "data-field": "step" }, stepText),
    el("dt", {}, "voicegateway"), el("dd", { "data-field": "percent" },
      percent(p.voicegateway_percent) + (p.force ? ", forced to " + p.force : "")),
    el("dt", {}, "time on step"), el("dd", { "data-field": "time-on-step" },
      duration(p.time_on_step_s) + " (hold " + duration(plan.hold) + "), since " + stamp(p.since)),
    el("dt", {}, "voicegateway calls"), el("dd", { "data-field": "calls",
      class: p.voicegateway_calls >= plan.min_calls ? null : "short" },
    p.voicegateway_calls + " of " + plan.min_calls + " needed"),
    el("dt", {}, "next evaluation"), el("dd", { "data-field": "next-evaluation" },
      nextEvaluation(p, time)),
    el("dt", {}, "scores"), el("dd", {},
      "promote at ≥ " + plan.pass_score + ", fail below " + plan.marginal_score +
      "; re-judged every " + duration(plan.evaluate_every) + " after a hold"));
  card.approve.hidden = p.state !== "awaiting_approval";
  card.resume.hidden = p.state !== "rolled_back";
  if (p.state === "awaiting_approval" && p.step_index !== null && p.step_index + 1 < plan.steps.length) {
    card.approve.textContent = "Approve: promote to " + percent(plan.steps[p.step_index + 1]);
  }
  card.approve.disabled = card.resume.disabled = card.busy;
  renderVerdict(card, p);
  renderPlanHistory(card, p.history || []);
}

function nextEvaluation(p, time) {
  if (p.state === "awaiting_approval") return "waits for a person to approve";
  if (p.state === "rolled_back") return "waits for a person to resume";
  if (p.state === "complete") return "none: on the last step";
  if (p.state === "paused") return "none while paused";
  if (!p.next_evaluation) return "–";
  const left = (Date.parse(p.next_evaluation) - Date.parse(time)) / 1000;
  return stamp(p.next_evaluation) + (left > 0 ? " (in " + duration(left) + ")" : " (due)");
}

function renderVerdict(card, p) {
  const v = p.verdict;
  if (!v) {
    card.verdict.className = "plan-verdict hint";
    card.verdict.textContent = "Not judged yet on this plan.";
    card.gateRows.replaceChildren(...p.plan.gates.map((name) => el("tr", { "data-gate": name },
      el("td", {}, name), el("td", {}, "–"), el("td", { class: "num" }, "–"),
      el("td", { class: "num" }, "–"),
      el("td", { class: "gate none", "data-field": "status" }, "not judged"), el("td", {}, ""))));
    if (!p.plan.gates.length) {
      card.gateRows.append(el("tr", {}, el("td", { colspan: "6", class: "hint" }, "no gates")));
    }
    return;
  }
  card.verdict.className = "plan-verdict";
  card.verdict.replaceChildren(
    el("span", { class: "verdict " + (DECISION_LEVEL[v.decision] || "none"), "data-field": "decision" },
      v.decision),
    " — " + v.reason + (v.score === null ? "" : " (score " + v.score.toFixed(2) + ")") +
    ", " + stamp(v.at));
  card.gateRows.replaceChildren(...v.gates.map((g) => el("tr", { "data-gate": g.name, "data-status": g.status },
    el("td", {}, g.name),
    el("td", { "data-field": "critical" }, g.critical ? "yes" : "no, weight " + g.weight),
    el("td", { class: "num", "data-field": "figure" }, figure(g.figure)),
    el("td", { class: "num", "data-field": "threshold" }, (OPS[g.op] || g.op) + " " + figure(g.threshold)),
    el("td", { class: "gate " + g.status, "data-field": "status" }, GATE_STATUS[g.status] || g.status),
    el("td", { class: "detail" }, g.detail || ""))));
  if (!v.gates.length) {
    card.gateRows.append(el("tr", {}, el("td", { colspan: "6", class: "hint" }, "no gates")));
  }
}

function renderPlanHistory(card, history) {
  const rows = history.slice(0, HISTORY_SHOWN).map((h) => el("tr", { "data-decision": h.decision },
    el("td", {}, stamp(h.time)),
    el("td", { class: "verdict " + (DECISION_LEVEL[h.decision] || "none"), "data-field": "decision" },
      h.decision),
    el("td", { "data-field": "change" }, percent(h.old) + " → " + percent(h.new)),
    el("td", { "data-field": "dry-run" }, h.dry_run ? el("span", { class: "badge dry" }, "dry run") : ""),
    el("td", { "data-field": "failed" }, h.failed && h.failed.length ? h.failed.join(", ") : "–"),
    el("td", {}, h.reason || "")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "6", class: "hint" }, "no decisions yet")));
  if (history.length > HISTORY_SHOWN) {
    rows.push(el("tr", {}, el("td", { colspan: "6", class: "hint" },
      (history.length - HISTORY_SHOWN) + " older in the audit log")));
  }
  card.historyRows.replaceChildren(...rows);
}

async function planAction(card, action) {
  if (card.busy) return;
  card.busy = true;
  card.approve.disabled = card.resume.disabled = true;
  card.message.className = "steer-msg plan-msg";
  card.message.textContent = action === "approve" ? "approving…" : "resuming…";
  try {
    const response = await api("/admin/plan?route=" + encodeURIComponent(card.name), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || body.state === "paused") {
      card.message.className = "steer-msg plan-msg bad";
      card.message.textContent = body.message || body.reason || ("failed (" + response.status + ")");
    } else {
      card.message.className = "steer-msg plan-msg ok";
      card.message.textContent = (action === "approve" ? "approved: now on " : "resumed on ") +
        percent(body.step);
    }
    const fresh = await api("/console/api/state");
    if (fresh.ok) applyState(await fresh.json());
  } catch (error) {
    if (error.message !== "unauthorised") {
      card.message.className = "steer-msg plan-msg bad";
      card.message.textContent = "failed: " + error.message;
    }
  } finally {
    card.busy = false;
    card.approve.disabled = card.resume.disabled = false;
  }
}

// ------------------------------------------------------------------ divergences

function fillSelect(select, values) {
  const wanted = ["", ...values];
  const have = Array.from(select.options).map((o) => o.value);
  if (wanted.length === have.length && wanted.every((v, i) => v === have[i])) return;
  const current = select.value;
  select.replaceChildren(select.options[0], ...values.map((v) => el("option", { value: v }, v)));
  select.value = wanted.includes(current) ? current : "";
}

async function refreshDivergences() {
  const response = await api("/console/api/divergences?limit=200");
  if (response.ok) applyDivergences((await response.json()).divergences);
}

function applyDivergences(items) {
  view.divergences = items;
  fillSelect($("div-node"), [...new Set(items.map((d) => d.node))].sort());
  renderDivergences();
}

function renderDivergences() {
  const route = $("div-route").value;
  const node = $("div-node").value;
  const shown = view.divergences.filter((d) => (!route || d.route === route) && (!node || d.node === node));
  $("div-count").textContent = shown.length + " of " + view.divergences.length + " shown";
  const list = $("div-list");
  if (!shown.length) {
    list.replaceChildren(el("p", { class: "hint" }, "No divergences" + (route || node ? " for this filter." : " yet.")));
    return;
  }
  list.replaceChildren(...shown.slice(0, 50).map(renderDivergence));
}

function renderDivergence(d) {
  const fields = d.fields.length
    ? el("span", { class: "fields" }, "fields: ", ...d.fields.flatMap((f, i) => [
      i ? ", " : "", el("code", { title: d.field_kinds[f] || "" }, f + (d.field_kinds[f] ? " (" + d.field_kinds[f] + ")" : ""))]))
    : null;
  return el("article", { class: "divergence", "data-route": d.route, "data-node": d.node, "data-result": d.result },
    el("div", { class: "head" },
      el("span", {}, (d.time || "").replace("T", " ").replace("Z", "")),
      el("strong", {}, d.route), el("span", {}, "turn " + d.turn), el("span", {}, "node " + d.node),
      el("span", {}, d.result), d.order_matches === false ? el("span", {}, "order differs") : null, fields),
    el("div", { class: "sides" },
      side("primary", d.primary_path, d.primary, d.fields, d.result === "missing"),
      side("shadow", d.shadow_path, d.shadow, d.fields, d.result === "extra")));
}

function side(role, path, activity, fields, whole) {
  const box = el("div", { class: "side " + role, "data-path": path || "" },
    el("h4", {}, el("span", { class: "path-" + path }, path || "?"), " (" + role + ")"));
  if (activity === null || activity === undefined) {
    box.append(el("div", { class: "json" }, el("span", { class: "none" }, "(no activity)")));
    return box;
  }
  const out = el("div", { class: "json" + (whole ? " diff-all" : "") });
  renderJson(out, activity, "", 0, fields);
  box.append(out);
  return box;
}

function differs(path, fields) {
  return fields.some((f) => f === path || f.startsWith(path + ".") || f.startsWith(path + "[") ||
    path.startsWith(f + ".") || path.startsWith(f + "["));
}

// Renders JSON with every leaf tagged by its field path, in the comparison's notation
// (`a.b[0].c`), so the differing fields can be highlighted.
function renderJson(out, value, path, depth, fields) {
  const pad = "  ".repeat(depth);
  const isObject = value !== null && typeof value === "object";
  if (!isObject || (Array.isArray(value) ? !value.length : !Object.keys(value).length)) {
    const leafPath = path || "$";
    out.append(el("span", { class: "leaf" + (differs(leafPath, fields) ? " diff" : ""), "data-path": leafPath },
      JSON.stringify(value)));
    return;
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  out.append(Array.isArray(value) ? "[\n" : "{\n");
  entries.forEach(([key, sub], index) => {
    out.append(pad + "  ");
    const subPath = Array.isArray(value) ? path + "[" + key + "]" : (path ? path + "." + key : String(key));
    if (!Array.isArray(value)) out.append(el("span", { class: "key" }, JSON.stringify(key)), ": ");
    renderJson(out, sub, subPath, depth + 1, fields);
    out.append(index < entries.length - 1 ? ",\n" : "\n");
  });
  out.append(pad + (Array.isArray(value) ? "]" : "}"));
}

// ------------------------------------------------------------------ audit

function renderAudit(entries) {
  const rows = (entries || []).map((a) => el("tr", { "data-route": a.route, "data-setting": a.setting },
    el("td", {}, (a.time || "").replace("T", " ").replace("Z", "")), el("td", {}, a.who),
    el("td", {}, a.route), el("td", {}, a.setting),
    el("td", { "data-field": "change" }, show(a.old) + " → " + show(a.new))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "hint" }, "no changes yet")));
  $("audit-rows").replaceChildren(...rows);
}

// ------------------------------------------------------------------ boot

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = $("token").value.trim();
    $("token").value = "";
    if (candidate) signIn(candidate);
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("div-route").addEventListener("change", renderDivergences);
  $("div-node").addEventListener("change", renderDivergences);
  const saved = token();
  if (saved) signIn(saved); else showLogin("");
});
