// The operator console: polls the edge's /console/api/state every second and
// charts what every process says about itself (edge/console.py, edge/readings.py).
import { LiveChart } from "./charts.js";

const POLL_MS = 1000;
const WINDOW_S = 120; // seconds on the charts
const SETTLE_S = 2; // the newest seconds are still arriving from some processes
const TOP_WINDOW_S = 10;
const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;

const frames = new Map(); // second → every process's readings of it, added up
const seen = new Set(); // "url|t": a reading is added once, however often it is fetched
const shardHistory = []; // [{t, commands: {address: total}}], to turn totals into shares
let latest = null; // the last state answer
let maxT = 0;
let token = "";
let timer = null;

const charts = {
  traffic: new LiveChart($("chart-traffic"), { height: 200, axes: ["msg/s in", "deliveries/s out"] }),
  latency: new LiveChart($("chart-latency"), { height: 190 }),
  connections: new LiveChart($("chart-connections"), { height: 190 }),
  redis: new LiveChart($("chart-redis"), { height: 130 }),
};

// ---------------------------------------------------------------- data

function frameAt(second) {
  let frame = frames.get(second);
  if (!frame) {
    frame = { rates: {}, hops: {}, conns: {}, redis: {}, pools: {}, refusals: {}, topIn: {}, topOut: {} };
    frames.set(second, frame);
  }
  return frame;
}

const add = (into, key, value) => { into[key] = (into[key] || 0) + value; };
const worst = (into, key, [count, p99]) => {
  const [c, p] = into[key] || [0, 0];
  into[key] = [c + count, Math.max(p, p99)];
};

function addReading(node, reading) {
  const key = `${node.url}|${reading.t}`;
  if (seen.has(key)) return;
  seen.add(key);
  const frame = frameAt(Math.floor(reading.t / 1000));
  const per = 1 / Math.max(reading.s || 1, 0.2);
  for (const [name, count] of Object.entries(reading.counts || {})) add(frame.rates, name, count * per);
  for (const [hop, value] of Object.entries(reading.hops || {})) worst(frame.hops, hop, value);
  if (reading.e2e) worst(frame.hops, "end to end", reading.e2e);
  if (reading.conns) frame.conns[node.name] = reading.conns;
  for (const [address, value] of Object.entries(reading.redis || {})) worst(frame.redis, address, value);
  for (const [pool, value] of Object.entries(reading.pools || {})) {
    frame.pools[`${node.name}\u0000${pool}`] = value;
  }
  for (const [reason, count] of Object.entries(reading.refusals || {})) add(frame.refusals, reason, count);
  for (const [channel, count] of Object.entries(reading.top_in || {})) add(frame.topIn, channel, count * per);
  for (const [channel, count] of Object.entries(reading.top_out || {})) add(frame.topOut, channel, count * per);
  maxT = Math.max(maxT, reading.t);
}

function forget(now) {
  for (const second of frames.keys()) if (second < now - 300) frames.delete(second);
  if (seen.size > 20000) seen.clear(); // old keys only; readings older than the window are skipped anyway
}

// Complete seconds, oldest first: [second, frame] (missing seconds as empty frames).
function recentSeconds(seconds = WINDOW_S) {
  const last = Math.floor(Date.now() / 1000) - SETTLE_S;
  const found = [];
  for (let second = last - seconds + 1; second <= last; second += 1) found.push([second, frames.get(second)]);
  return found;
}

// ---------------------------------------------------------------- rendering

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else {
      td.textContent = cell;
      if (typeof cell === "number") td.className = "num";
    }
    tr.append(td);
  }
  return tr;
}

const fixed = (value, digits = 0) => (value == null ? "–" : Number(value).toFixed(digits));

function clusterOf(channel) {
  const route = (latest?.routes || []).find((entry) => entry.channel === channel);
  return route ? route.cluster : "main";
}

function moveButtons(channel) {
  const span = el("span");
  const current = clusterOf(channel);
  const clusters = latest?.clusters || [];
  // The one click of a TPP day: to the event cluster, and back to main.
  const targets = current === "main" ? clusters.filter((c) => c === "event") : ["main"];
  for (const cluster of (targets.length ? targets : clusters.filter((c) => c !== current))) {
    const button = el("button", `move to ${cluster}`, "small");
    button.dataset.move = channel;
    button.dataset.to = cluster;
    button.addEventListener("click", () => move(channel, cluster));
    span.append(button);
  }
  return span;
}

function renderTraffic(span) {
  const xs = span.map(([second]) => second);
  const rate = (name) => span.map(([, frame]) => (frame ? frame.rates[name] || 0 : null));
  const received = rate("received");
  const delivered = rate("delivered");
  charts.traffic.update(xs, [
    { label: "in", values: received, scale: "in" },
    { label: "accepted", values: rate("accepted"), scale: "in" },
    { label: "out", values: delivered, scale: "out", dash: [6, 4] }, // its own axis, on the right
  ]);
  const recent = span.slice(-5);
  const mean = (values) => values.reduce((a, b) => a + (b || 0), 0) / Math.max(values.length, 1);
  $("traffic-readout").textContent =
    `${fixed(mean(received.slice(-5)))} msg/s in · ${fixed(mean(delivered.slice(-5)))} deliveries/s out`;
  $("traffic-readout").dataset.in = String(mean(recent.map(([, f]) => f?.rates.received || 0)));
}

function renderTopChannels(span) {
  const recent = span.slice(-TOP_WINDOW_S);
  const totals = {};
  for (const [, frame] of recent) {
    if (!frame) continue;
    for (const [channel, count] of Object.entries(frame.topIn)) (totals[channel] ||= [0, 0])[0] += count;
    for (const [channel, count] of Object.entries(frame.topOut)) (totals[channel] ||= [0, 0])[1] += count;
  }
  const rows = Object.entries(totals).filter(([channel]) => channel.startsWith("#"))
    .map(([channel, [inCount, outCount]]) => [channel, inCount / recent.length, outCount / recent.length])
    .sort((a, b) => b[1] + b[2] - a[1] - a[2]).slice(0, 10);
  const body = $("top-channels").tBodies[0];
  body.replaceChildren(...rows.map(([channel, inRate, outRate]) => {
    const tr = row([channel, fixed(inRate, 1), fixed(outRate, 1), clusterOf(channel), moveButtons(channel)]);
    tr.dataset.channel = channel;
    tr.dataset.in = String(inRate);
    return tr;
  }));
  $("top-empty").hidden = rows.length > 0;
}

function renderLatency(span) {
  const xs = span.map(([second]) => second);
  const names = ["edge→clue", "clue→exchange", "exchange→edge", "end to end"];
  charts.latency.update(xs, names.map((name) => ({
    label: name, values: span.map(([, frame]) => frame?.hops[name]?.[1] ?? null),
  })));
}

function renderConnections(span) {
  const xs = span.map(([second]) => second);
  const edges = [...new Set(span.flatMap(([, frame]) => (frame ? Object.keys(frame.conns) : [])))].sort();
  const series = [];
  for (const edge of edges) {
    for (const kind of ["tcp", "ws"]) {
      series.push({ label: `${edge} ${kind}`, values: span.map(([, frame]) => frame?.conns[edge]?.[kind] ?? null) });
    }
  }
  charts.connections.update(xs, series);
  const last = span.at(-1)?.[1];
  const total = last ? Object.values(last.conns).reduce((sum, c) => sum + c.tcp + c.ws, 0) : 0;
  const eventsub = last ? Object.values(last.conns).reduce((sum, c) => sum + (c.eventsub || 0), 0) : 0;
  $("connections-readout").textContent = `${total} IRC connections · ${eventsub} EventSub sessions`;
}

function renderShards(span) {
  const now = shardHistory.at(-1);
  const then = shardHistory.find((entry) => entry.t >= (now?.t || 0) - 10_000) || shardHistory[0];
  const deltas = {};
  let all = 0;
  for (const shard of latest.shards) {
    const delta = now && then && now !== then ? (now.commands[shard.address] || 0) - (then.commands[shard.address] || 0) : 0;
    deltas[shard.address] = Math.max(delta, 0);
    all += deltas[shard.address];
  }
  const recent = span.slice(-10).map(([, frame]) => frame).filter(Boolean);
  const body = $("shards").tBodies[0];
  body.replaceChildren(...latest.shards.map((shard) => {
    const share = all ? deltas[shard.address] / all : 0;
    const bar = el("span");
    bar.append(Object.assign(el("span", "", "share"), { style: `width:${Math.round(share * 80)}px` }),
      shard.ok ? `${fixed(share * 100)} %` : "down");
    const calls = recent.reduce((sum, frame) => sum + (frame.redis[shard.address]?.[0] || 0), 0) / Math.max(recent.length, 1);
    const p99 = Math.max(0, ...recent.map((frame) => frame.redis[shard.address]?.[1] || 0));
    const tr = row([shard.address, bar, fixed(calls), fixed(p99, 2)]);
    tr.dataset.shard = shard.address;
    return tr;
  }));
  const xs = span.map(([second]) => second);
  charts.redis.update(xs, latest.shards.map((shard) => ({
    label: `${shard.address} p99`, values: span.map(([, frame]) => frame?.redis[shard.address]?.[1] ?? null),
  })));
}

const TILES = [
  ["slow_consumer", "slow-consumer cuts"],
  ["gaps", "sequence gaps"],
  ["healed", "gaps healed"],
  ["dropped", "deliveries dropped"],
];

function renderRepairs(span) {
  const minute = span.slice(-60).map(([, frame]) => frame).filter(Boolean);
  const total = (name) => Math.round(minute.reduce((sum, frame) => sum + (frame.rates[name] || 0), 0));
  $("tiles").replaceChildren(...TILES.map(([name, label]) => {
    const tile = el("div", "", "tile");
    const value = total(name);
    if (value && name !== "healed") tile.classList.add("warn");
    tile.append(el("b", String(value)), label);
    tile.dataset.counter = name;
    return tile;
  }));
  const refusals = {};
  for (const frame of minute) for (const [reason, count] of Object.entries(frame.refusals)) add(refusals, reason, count);
  $("refusals").tBodies[0].replaceChildren(...Object.entries(refusals).sort((a, b) => b[1] - a[1])
    .map(([reason, count]) => row([reason, count])));
}

function renderPools(span) {
  const highest = {};
  for (const [, frame] of span.slice(-10)) {
    if (!frame) continue;
    for (const [key, value] of Object.entries(frame.pools)) {
      if (!key.includes("\u0000console ")) highest[key] = Math.max(highest[key] || 0, value); // not the console's own
    }
  }
  $("pools").tBodies[0].replaceChildren(...Object.entries(highest).sort((a, b) => b[1] - a[1]).slice(0, 12)
    .map(([key, value]) => row([...key.split("\u0000"), value])));
}

function mapNode(name, ok, facts, cluster = "") {
  const node = el("div", undefined, ok ? "node" : "node down");
  if (cluster && cluster !== "main") node.append(el("span", cluster, "cluster"));
  node.append(el("div", name, "name"), el("div", facts, "facts"));
  node.dataset.node = name;
  node.dataset.ok = String(ok);
  return node;
}

function renderMap() {
  const column = (title, nodes) => {
    const div = el("div", undefined, "column");
    div.append(el("h3", title), ...nodes);
    return div;
  };
  const nodes = latest.nodes;
  const of = (kind) => nodes.filter((node) => node.kind === kind);
  const health = (node) => node.health || {};
  $("map").replaceChildren(
    column("edges", of("edge").map((node) => mapNode(node.name || node.url, node.ok,
      node.ok ? `${health(node).connections ?? 0} connections · ${health(node).channels ?? 0} channels` : node.error || "down"))),
    column("clues", of("clue").map((node) => mapNode(node.name, node.ok, node.ok ? node.url : node.error || "down",
      node.cluster))),
    column("exchanges", of("exchange").map((node) => mapNode(node.name, node.ok,
      node.ok ? `${health(node).channels ?? 0} channels · ${health(node).edges ?? 0} edges` : node.error || "down",
      node.cluster))),
    column("Redis shards", latest.shards.map((shard) => mapNode(shard.address, shard.ok,
      shard.ok ? `${shard.clients} clients · ${(shard.memory / 1048576).toFixed(1)} MiB` : shard.error || "down"))),
  );
}

function renderRoutes() {
  const select = $("move-cluster");
  const clusters = latest.clusters || [];
  if (select.options.length !== clusters.length) {
    select.replaceChildren(...clusters.map((cluster) => Object.assign(el("option", cluster), { value: cluster })));
    if (clusters.includes("event")) select.value = "event";
  }
  const routes = latest.routes || [];
  $("routes").tBodies[0].replaceChildren(...routes.map((route) => {
    const tr = row([route.channel, route.cluster, route.version, moveButtons(route.channel)]);
    tr.dataset.channel = route.channel;
    tr.dataset.cluster = route.cluster;
    return tr;
  }));
  $("routes-empty").hidden = routes.length > 0;
}

function render() {
  if (!latest) return;
  const span = recentSeconds();
  renderTraffic(span);
  renderTopChannels(span);
  renderLatency(span);
  renderConnections(span);
  renderShards(span);
  renderRepairs(span);
  renderPools(span);
  renderMap();
  renderRoutes();
}

// ---------------------------------------------------------------- talking to the edge

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } });
  if (response.status === 401) {
    stop();
    askToken("That token was refused.");
    throw new Error("unauthorized");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

async function poll() {
  const started = Date.now();
  try {
    latest = await api(`/console/api/state?since=${Math.max(0, maxT - 5000)}`);
    for (const node of latest.nodes) for (const reading of node.readings) addReading(node, reading);
    shardHistory.push({ t: latest.t, commands: Object.fromEntries(latest.shards.map((s) => [s.address, s.commands])) });
    while (shardHistory.length > 30) shardHistory.shift();
    forget(Math.floor(latest.t / 1000));
    render();
    const down = latest.nodes.filter((node) => !node.ok).length + latest.shards.filter((s) => !s.ok).length;
    $("poll").textContent = `${latest.nodes.length} processes, ${latest.shards.length} shards` +
      (down ? ` · ${down} down` : " · all up") + ` · polled in ${Date.now() - started} ms`;
  } catch (error) {
    if (error.message !== "unauthorized") $("poll").textContent = `poll failed: ${error.message}`;
  }
}

async function move(channel, cluster) {
  $("notice").textContent = `moving ${channel} to ${cluster}…`;
  try {
    const entry = await api("/console/api/routes", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ channel, cluster }),
    });
    $("notice").textContent = `${entry.channel} is on ${entry.cluster} (route v${entry.version})`;
  } catch (error) {
    $("notice").textContent = `move failed: ${error.message}`;
  }
  await poll();
}

async function loadModlog() {
  try {
    const { entries } = await api("/console/api/moderation?limit=50");
    $("modlog").tBodies[0].replaceChildren(...entries.map((entry) => {
      const tr = row([new Date(entry.ts).toLocaleTimeString(), entry.channel, entry.moderator, entry.action,
        entry.target, entry.detail]);
      tr.dataset.action = entry.action;
      return tr;
    }));
    $("modlog-empty").hidden = entries.length > 0;
  } catch (error) {
    if (error.message !== "unauthorized") $("modlog-empty").textContent = `unavailable: ${error.message}`;
  }
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

async function loadTimeline(channel) {
  const box = $("timeline");
  let answer;
  try {
    answer = await api(`/console/api/timeline?channel=${encodeURIComponent(channel.replace(/^#/, ""))}`);
  } catch (error) {
    box.replaceChildren(el("p", `unavailable: ${error.message}`, "error"));
    return;
  }
  const { highlights, sessions } = answer;
  const parts = [];
  const say = (what, found) => {
    if (!found.available) return `${what}: none yet${found.error ? ` (${found.error})` : ""}`;
    return `${what}: ${found.data.length}`;
  };
  const summary = el("p", `${answer.channel} · ${say("highlights", highlights)} · ${say("stream sessions", sessions)}`,
    "muted");
  summary.id = "timeline-summary";
  parts.push(summary);
  const utc = (text) => Date.parse(`${text.replace(" ", "T")}Z`); // sessions' times: "2026-03-05 14:13:00", UTC
  const spans = sessions.data.map((s) => [utc(s.start_time), s.open ? Date.now() : utc(s.end_time), s]);
  const points = highlights.data.map((h) => [h.window_start_ms, h.window_end_ms, h]);
  const times = [...spans.flatMap(([a, b]) => [a, b]), ...points.flatMap(([a, b]) => [a, b])].filter(Number.isFinite);
  if (times.length) {
    const from = Math.min(...times);
    const to = Math.max(...times, from + 60_000);
    const width = 1000;
    const x = (t) => 10 + ((t - from) / (to - from)) * (width - 20);
    const chart = svg("svg", { viewBox: `0 0 ${width} 120`, preserveAspectRatio: "none", role: "img" });
    for (const [start, end, session] of spans) {
      const rect = svg("rect", { x: x(start), y: 20, width: Math.max(2, x(end) - x(start)), height: 40, class: "session" });
      rect.append(svg("title", {}));
      rect.firstChild.textContent = `session ${session.id}: ${session.start_time} – ${session.open ? "live" : session.end_time} UTC`;
      chart.append(rect);
    }
    for (const [start, end, highlight] of points) {
      const dot = svg("circle", { cx: x((start + end) / 2), cy: 80, r: 5, class: "highlight" });
      dot.append(svg("title", {}));
      dot.firstChild.textContent = `highlight: ${highlight.rate} msg/s (baseline ${highlight.baseline}), score ${highlight.score}`;
      chart.append(dot);
    }
    for (const t of [from, to]) {
      const label = svg("text", { x: x(t), y: 112, class: "axis", "text-anchor": t === from ? "start" : "end" });
      label.textContent = new Date(t).toLocaleString();
      chart.append(label);
    }
    parts.push(chart);
    const list = el("ul");
    for (const [, , highlight] of points.slice(-8)) {
      list.append(el("li", `${new Date(highlight.window_start_ms).toLocaleTimeString()}: ${highlight.rate} msg/s, ` +
        `score ${highlight.score}, ${highlight.message_ids?.length || 0} messages`));
    }
    parts.push(list);
  }
  box.replaceChildren(...parts);
}

// ---------------------------------------------------------------- start

function stop() {
  clearInterval(timer);
  timer = null;
}

function start() {
  $("login").hidden = true;
  stop();
  poll();
  loadModlog();
  timer = setInterval(() => {
    poll();
    if (Math.floor(Date.now() / POLL_MS) % 5 === 0) loadModlog();
  }, POLL_MS);
}

function askToken(error = "") {
  $("login-error").textContent = error;
  $("login-error").hidden = !error;
  $("login").hidden = false;
  $("login-token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("login-token").value.trim();
  store.setItem("chatd.console", token);
  start();
});
$("move-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const channel = `#${$("move-channel").value.trim().replace(/^#/, "").toLowerCase()}`;
  move(channel, $("move-cluster").value);
});
$("timeline-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadTimeline($("timeline-channel").value.trim());
});
window.addEventListener("resize", () => Object.values(charts).forEach((chart) => chart.resize()));

// `chatd console` prints a link carrying the token after `#token=`: kept for this tab, then hidden.
const fromLink = new URLSearchParams(window.location.hash.slice(1)).get("token");
if (fromLink) {
  store.setItem("chatd.console", fromLink);
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
}
token = store.getItem("chatd.console") || "";
if (token) start();
else askToken();
