// jobmon dashboard: reads the JSON API, redraws when /api/stream says something changed.
// Everything the server sends is put into the page with textContent or
// setAttribute, never parsed as HTML: a job id like "<script>" stays text.
"use strict";

const PAGE_SIZE = 50;
const STATUSES = ["pending", "queued", "running", "retrying", "completed", "failed", "cancelled"];
const STATUS_COLOUR = {
  pending: "grey", queued: "grey", cancelled: "grey", running: "yellow",
  completed: "green", failed: "red", retrying: "orange",
};
const SVG_NS = "http://www.w3.org/2000/svg";

const view = {
  status: "", q: "", cursors: [null], page: 0, nextCursor: null, detail: null, failures: [],
};
const $ = (id) => document.getElementById(id);

// Grey: not run yet (or cancelled); yellow: running; green: completed;
// red: failed or an alert firing; orange: retrying, or late (its expected run
// time has passed, within its grace, before missed_run fires).
function colourOf(job, now) {
  if (job.status === "failed" || (job.alerts && job.alerts.length)) return "red";
  if (job.status === "retrying") return "orange";
  const expected = job.monitor && job.monitor.next_expected_at;
  if (expected && job.status !== "running" && Date.parse(expected) < now) return "orange";
  return STATUS_COLOUR[job.status] || "grey";
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// Today: the time of day; before: a short date and time (the browser's zone).
function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (isNaN(date)) return String(iso);
  if (date.toDateString() === new Date().toDateString()) return date.toLocaleTimeString();
  return date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

class SignInNeeded extends Error {}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401) throw new SignInNeeded("sign in");
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.text : response.statusText);
  return body;
}

// --token: the page asks for it once; the server answers with an HttpOnly cookie.
function askToSignIn() {
  $("signin").hidden = false;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const response = await fetch("/api/session", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("signin-error").textContent = body.error ? body.error.text : response.statusText;
    return;
  }
  $("token").value = "";
  $("signin-error").textContent = "";
  $("signin").hidden = true;
  listen();
  refresh();
  refreshAnalytics();
}

// -- counts ------------------------------------------------------------------
function drawCounts(stats) {
  const nav = $("counts");
  const buttons = [["", `all ${stats.total}`, "grey"]];
  for (const status of STATUSES) {
    const n = stats.by_status[status] || 0;
    if (n || status === view.status) buttons.push([status, `${status} ${n}`, STATUS_COLOUR[status]]);
  }
  nav.replaceChildren(...buttons.map(([status, label, colour]) => {
    const button = el("button", label, `b-${colour}`);
    button.type = "button";
    button.dataset.status = status;
    button.setAttribute("aria-pressed", String(status === view.status));
    button.addEventListener("click", () => setFilter(status, view.q));
    return button;
  }));
  view.failures = stats.failures_by_hour || [];
  drawFailures(view.failures);
}

// -- firing alerts -------------------------------------------------------------
const LATE_KINDS = new Set(["missed_heartbeat", "missed_run", "overrun", "stalled", "slow_run"]);

function drawAlerts(alerts) {
  const list = $("alerts");
  $("alert-count").textContent = String(alerts.length);
  $("alert-count").classList.toggle("hot", alerts.length > 0);
  if (!alerts.length) {
    list.replaceChildren(el("li", "No alert is firing.", "empty"));
    return;
  }
  list.replaceChildren(...alerts.map((alert) => {
    const item = el("li", null, LATE_KINDS.has(alert.kind) ? "late" : "");
    item.dataset.jobId = alert.job_id;
    item.append(el("span", alert.kind, "kind"), el("span", alert.job_id, "job"),
      el("span", alert.text, "text"),
      el("span", when(alert.fired_at), "when"));
    item.addEventListener("click", () => openDetail(alert.job_id));
    return item;
  }));
}

// -- the jobs table --------------------------------------------------------------
function jobRow(job, now) {
  const colour = colourOf(job, now);
  const row = el("tr", null, `c-${colour}`);
  row.dataset.jobId = job.job_id;
  row.dataset.colour = colour;
  row.append(el("td", job.job_id, "job"));
  const status = el("td");
  const others = (job.alerts || []).filter((kind) => kind !== job.status);
  const label = others.length ? `${job.status} · ${others.join(", ")}` : job.status;
  status.append(el("span", label, `badge b-${colour}`));
  row.append(status);
  const progress = el("td");
  if (job.status === "running" || job.status === "completed") {
    const bar = el("span", null, job.status === "completed" ? "bar done" : "bar");
    const fill = el("span");
    fill.style.width = `${Math.max(0, Math.min(100, job.progress))}%`;
    bar.append(fill);
    bar.title = `${job.progress}%`;
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuenow", String(job.progress));
    progress.append(bar);
  }
  row.append(progress, el("td", job.runs, "wide"), el("td", duration(job.duration_ms), "wide"),
    el("td", when(job.updated_at), "wide"), el("td", job.error, "error"));
  row.addEventListener("click", () => openDetail(job.job_id));
  return row;
}

function drawJobs(page) {
  const now = Date.now();
  const body = $("jobs").tBodies[0];
  if (!page.jobs.length) {
    const row = el("tr");
    const cell = el("td", view.q || view.status ? "No job matches." : "No job has reported yet.");
    cell.colSpan = 7;
    row.append(cell);
    body.replaceChildren(row);
  } else {
    body.replaceChildren(...page.jobs.map((job) => jobRow(job, now)));
  }
  view.nextCursor = page.next_cursor;
  $("prev").disabled = view.page === 0;
  $("next").disabled = !page.next_cursor;
  $("page-info").textContent = `page ${view.page + 1}`;
}

function jobsPath() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (view.status) params.set("status", view.status);
  if (view.q) params.set("q", view.q);
  const cursor = view.cursors[view.page];
  if (cursor) params.set("cursor", cursor);
  return `/api/jobs?${params}`;
}

function setFilter(status, q) {
  view.status = status;
  view.q = q;
  view.cursors = [null];
  view.page = 0;
  $("status-filter").value = status;
  refresh();
}

// -- charts ----------------------------------------------------------------------
function barChart(node, bars, height) {
  // Drawn at the element's own width, so the labels keep their shape.
  const width = Math.max(200, Math.round(node.getBoundingClientRect().width) || 400);
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...bars.map((b) => b.value));
  const slot = width / Math.max(1, bars.length);
  const parts = [svg("line", { x1: 0, y1: height - 14, x2: width, y2: height - 14, class: "axis" })];
  bars.forEach((bar, i) => {
    const h = ((height - 26) * bar.value) / max;
    const rect = svg("rect", {
      x: i * slot + slot * 0.15, y: height - 14 - h, width: slot * 0.7, height: h, class: bar.className,
    });
    const title = svg("title");
    title.textContent = bar.title;
    rect.append(title);
    parts.push(rect);
    if (bar.label) {
      // The first label starts at the edge, or half of it would be cut off.
      const label = svg("text", i === 0
        ? { x: 0, y: height - 2, "text-anchor": "start" }
        : { x: i * slot + slot / 2, y: height - 2, "text-anchor": "middle" });
      label.textContent = bar.label;
      parts.push(label);
    }
  });
  const top = svg("text", { x: 2, y: 10 });
  top.textContent = bars.maxLabel ? bars.maxLabel(max) : String(max);
  parts.push(top);
  node.replaceChildren(...parts);
}

function drawFailures(hours) {
  const bars = hours.map((h, i) => {
    const hour = new Date(h.hour);
    return {
      value: h.failures, className: "fail",
      title: `${hour.toLocaleString()}: ${h.failures} failed`,
      label: i % 6 === 3 ? `${String(hour.getHours()).padStart(2, "0")}:00` : "",
    };
  });
  barChart($("failures-chart"), bars, 140);
}

function drawDurations(runs) {
  const timed = runs.filter((r) => r.duration_ms !== null).reverse();  // oldest first
  const bars = timed.map((r) => ({
    value: r.duration_ms,
    className: r.status === "completed" ? "ok" : r.status === "failed" ? "fail" : "other",
    title: `${when(r.finished_at)}: ${duration(r.duration_ms)} (${r.status})`,
    label: "",
  }));
  bars.maxLabel = (max) => duration(max);
  barChart($("duration-chart"), bars, 120);
}

// -- analytics (asked for every 30 s, not on every change: it sorts every job's cost) -----
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function money(value) {
  return `$${value.toFixed(2)}`;
}

async function refreshAnalytics() {
  let report;
  try {
    report = await getJSON(`/api/analytics?top=8&tz=${encodeURIComponent(ZONE)}`);
  } catch (error) {
    if (error instanceof SignInNeeded) return;
    $("analytics-tz").textContent = `could not load: ${error.message}`;
    return;
  }
  $("analytics-tz").textContent = `(${report.tz})`;
  barChart($("hour-of-day-chart"), report.failures_by_hour_of_day.map((n, hour) => ({
    value: n, className: "fail", title: `${String(hour).padStart(2, "0")}:00: ${n} failed`,
    label: hour % 6 === 0 ? `${String(hour).padStart(2, "0")}h` : "",
  })), 120);
  const rows = report.top_jobs_by_cost.map((job) => {
    const row = el("tr");
    row.dataset.jobId = job.job_id;
    row.append(el("td", job.job_id), el("td", job.runs), el("td", money(job.total)),
      el("td", money(job.average)), el("td", duration(job.durations.p50)),
      el("td", duration(job.durations.p99)));
    row.addEventListener("click", () => openDetail(job.job_id));
    return row;
  });
  $("costs").tBodies[0].replaceChildren(...rows);
  const items = report.high_memory_arguments.map((entry) => {
    const item = el("li");
    item.append(el("code", entry.arguments.join(" ")),
      el("span", ` ${entry.runs_over} runs over, in ${entry.jobs.join(", ")}`));
    return item;
  });
  $("high-memory").replaceChildren(...(items.length ? items : [el("li", "none", "muted")]));
}

function usageText(usage) {
  if (!usage) return "";
  const parts = [];
  for (const [name, value] of Object.entries(usage)) {
    if (name === "cpu_percent") parts.push(`CPU ${value}%`);
    else if (name === "memory_mb") parts.push(`memory ${value} MB`);
    else parts.push(`${name} ${typeof value === "object" ? JSON.stringify(value) : value}`);
  }
  return parts.join(" · ");
}

// -- the detail view -----------------------------------------------------------------
function openDetail(jobId) {
  view.detail = jobId;
  history.replaceState(null, "", `#job=${encodeURIComponent(jobId)}`);
  drawDetail();
}

function closeDetail() {
  view.detail = null;
  $("detail").hidden = true;
  history.replaceState(null, "", location.pathname + location.search);
}

async function drawDetail() {
  const jobId = view.detail;
  if (jobId === null) return;
  let job;
  try {
    job = (await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`)).job;
  } catch (error) {
    $("detail-title").textContent = jobId;
    $("detail-fields").replaceChildren(el("dt", "error"), el("dd", error.message));
    $("detail").hidden = false;
    return;
  }
  if (view.detail !== jobId) return;
  const colour = colourOf(job, Date.now());
  $("detail").dataset.colour = colour;
  $("detail-title").textContent = job.job_id;
  const fields = [
    ["status", job.status], ["progress", `${job.progress}%`], ["runs", job.runs],
    ["started", when(job.started_at)], ["finished", when(job.finished_at)],
    ["last duration", duration(job.duration_ms)], ["last success", when(job.last_success_at)],
    ["retries", `${job.retries} of ${job.max_retries}`], ["error", job.error],
    ["alerts firing", (job.alerts || []).join(", ")],
    ["live runs", (job.live_runs || []).map((r) => `${r.run_id} (${r.status})`).join(", ")],
    ["resource usage", usageText(job.resource_usage)],
  ];
  if (job.monitor) {
    const m = job.monitor;
    fields.push(["schedule", m.schedule ? JSON.stringify(m.schedule) : ""],
      ["next expected", when(m.next_expected_at)], ["heartbeat ttl", duration(m.heartbeat_ttl_ms)],
      ["paused", m.paused ? "yes" : "no"], ["labels", JSON.stringify(m.labels)]);
  }
  try {
    const figures = (await getJSON(`/api/analytics?top=0&job_id=${encodeURIComponent(jobId)}`)).job;
    const d = figures.durations;
    if (d.runs) fields.push(["durations", `p50 ${duration(d.p50)} · p90 ${duration(d.p90)} · p99 ${duration(d.p99)}`]);
    if (figures.cost.runs) fields.push(["cost", `${money(figures.cost.total)} over ${figures.cost.runs} attempts, ${money(figures.cost.average)} an attempt`]);
  } catch (error) {
    if (!(error instanceof SignInNeeded)) fields.push(["analytics", error.message]);
  }
  if (view.detail !== jobId) return;
  $("detail-fields").replaceChildren(...fields.filter(([, v]) => v !== "" && v !== null && v !== undefined)
    .flatMap(([name, value]) => [el("dt", name), el("dd", value)]));
  const runs = job.recent_runs || [];
  $("runs").tBodies[0].replaceChildren(...runs.map((run) => {
    const row = el("tr", null, `c-${STATUS_COLOUR[run.status] || "grey"}`);
    // A run's output: a wrapper's stderr tail, or the body of the ping that ended it.
    const output = el("td", null, "output");
    if (run.output) output.append(el("pre", run.output));
    row.append(el("td", when(run.finished_at)), el("td", run.status), el("td", duration(run.duration_ms)),
      el("td", run.retries), el("td", run.error, "error"), output);
    if (run.run_id) row.dataset.runId = run.run_id;
    return row;
  }));
  $("detail").hidden = false;
  drawDurations(runs);  // once shown: the chart takes the panel's width
}

// -- keeping up to date -----------------------------------------------------------------
let refreshing = false;
let again = false;

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [stats, alerts, page] = await Promise.all([
      getJSON("/api/stats"), getJSON("/api/alerts?state=firing&limit=100"), getJSON(jobsPath()),
    ]);
    drawCounts(stats);
    drawAlerts(alerts.alerts);
    drawJobs(page);
    if (view.detail !== null) await drawDetail();
    document.body.dataset.loaded = "true";
  } catch (error) {
    if (error instanceof SignInNeeded) askToSignIn();
    else $("page-info").textContent = `could not load: ${error.message}`;
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 0); }
  }
}

// Events arrive in bursts (a batch of jobs); redraw at most every 250 ms.
let scheduled = null;
function soon() {
  if (scheduled === null) scheduled = setTimeout(() => { scheduled = null; refresh(); }, 250);
}

let stream = null;

function listen() {
  // "changes" is coalesced by the server (one event per 250 ms at most), so an
  // open dashboard costs nothing per job event, however fast they arrive.
  if (stream) stream.close();
  stream = new EventSource("/api/stream?topics=alerts,changes");
  const live = $("live");
  stream.onopen = () => { live.textContent = "live"; live.className = "live on"; soon(); };
  stream.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  stream.addEventListener("changed", refresh);
  stream.addEventListener("alert", soon);
}

function start() {
  const select = $("status-filter");
  for (const status of STATUSES) select.append(el("option", status));
  select.addEventListener("change", () => setFilter(select.value, view.q));
  let typing = null;
  $("search").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => setFilter(view.status, event.target.value.trim()), 200);
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("prev").addEventListener("click", () => { if (view.page > 0) { view.page -= 1; refresh(); } });
  $("next").addEventListener("click", () => {
    if (!view.nextCursor) return;
    view.cursors[view.page + 1] = view.nextCursor;
    view.page += 1;
    refresh();
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("signin").addEventListener("submit", signIn);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });
  const linked = /^#job=(.+)$/.exec(location.hash);
  if (linked) view.detail = decodeURIComponent(linked[1]);
  refresh();
  listen();
  window.addEventListener("resize", () => drawFailures(view.failures));
  refreshAnalytics();
  setInterval(refreshAnalytics, 30000);
  // Colours that depend on the time (late) change without an event.
  setInterval(refresh, 30000);
}

start();
