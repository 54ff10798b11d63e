// burla dashboard: renders server-sent snapshots. User data only ever goes
// through textContent, never innerHTML, so a job printing <script> shows text.
"use strict";

let csrf = "";
let source = null;
let inputsOffset = 0;
let logLines = [];
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const fmtBytes = (b) => b == null ? "–" : (b / 2 ** 30).toFixed(1) + " GiB";
const fmtSecs = (s) => s == null ? "–" : s < 1 ? (s * 1000).toFixed(1) + " ms" : s < 120 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
const fmtTime = (t) => t ? new Date(t * 1000).toLocaleTimeString() : "–";

function progress(done, failed, total) {
  const bar = el("div", { class: "progress" });
  const denom = total || Math.max(done, 1);
  bar.append(el("div", { style: `width:${(100 * (done - failed)) / denom}%` }));
  bar.append(el("div", { class: "failed", style: `width:${(100 * failed) / denom}%` }));
  return el("div", { class: "progress-cell" }, [bar, el("span", { class: "muted", text: `${done}/${total ?? "?"}${failed ? ` (${failed} failed)` : ""}` })]);
}

async function post(url) {
  const resp = await fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf } });
  if (!resp.ok) alert((await resp.json()).error || resp.statusText);
}

function renderCluster(c) {
  $("cluster-name").textContent = c.name;
  $("cluster-status").textContent = c.status;
  $("totals").textContent = `${c.nodes.length} nodes · ${c.workers} workers · ${c.cpus} CPUs · ${c.jobs_running} running`;
  const body = $("nodes").tBodies[0];
  body.replaceChildren(...c.nodes.map((n) => el("tr", { "data-node": n.node_id }, [
    el("td", { text: n.node_id }), el("td", { text: n.provider }), el("td", { text: n.address || "" }),
    el("td", {}, [el("span", { class: "pill " + n.state, text: n.state })]),
    el("td", { text: n.cpus }), el("td", { text: fmtBytes(n.ram_bytes) }),
    el("td", { text: n.cpu_percent == null ? "–" : n.cpu_percent.toFixed(0) + " %" }),
    el("td", { text: fmtBytes(n.ram_used) }),
    el("td", {}, n.job_id ? [el("a", { href: "#job=" + encodeURIComponent(n.job_id), text: n.job_id })] : ["–"]),
    el("td", { text: n.last_heartbeat_s == null ? "–" : n.last_heartbeat_s.toFixed(1) + " s ago" }),
    el("td", {}, [el("button", { class: "restart", text: "restart", onclick: () => {
      if (confirm(`Restart every worker of ${n.node_id}?`)) post(`/v1/nodes/${encodeURIComponent(n.node_id)}/restart`);
    } })]),
  ])));
}

function renderJobs(jobs) {
  const body = $("jobs").tBodies[0];
  body.replaceChildren(...jobs.map((j) => el("tr", { "data-job": j.job_id }, [
    el("td", {}, [el("a", { href: "#job=" + encodeURIComponent(j.job_id), text: j.job_id })]),
    el("td", { text: j.function }), el("td", { text: j.client }),
    el("td", {}, [el("span", { class: "pill " + j.state, text: j.state })]),
    el("td", {}, [progress(j.done, j.failed, j.total)]),
    el("td", { text: j.rate + "/s" }), el("td", { text: fmtTime(j.started_at) }), el("td", { text: fmtSecs(j.duration_s) }),
  ])));
}

function renderChart(series) {
  const svg = $("chart");
  svg.replaceChildren();
  if (series.length < 2) return;
  const t0 = series[0][0], t1 = series[series.length - 1][0] || t0 + 1;
  const rates = [];
  for (let i = 1; i < series.length; i++) {
    const dt = series[i][0] - series[i - 1][0];
    rates.push([series[i][0], dt > 0 ? (series[i][1] - series[i - 1][1]) / dt : 0]);
  }
  const maxRate = Math.max(...rates.map((r) => r[1]), 1);
  const x = (t) => (600 * (t - t0)) / Math.max(t1 - t0, 1e-9);
  const y = (r) => 150 - (140 * r) / maxRate;
  const pts = rates.map(([t, r]) => `${x(t).toFixed(1)},${y(r).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", `0,150 ${pts}`);
  line.setAttribute("class", "rate");
  svg.append(line);
  $("chart-label").textContent = `inputs/s over ${fmtSecs(t1 - t0)} · peak ${maxRate.toFixed(0)}/s`;
}

function renderJob(j) {
  $("job-title").textContent = `${j.function} · ${j.job_id}`;
  $("job-state").textContent = j.state;
  $("job-state").className = "pill " + j.state;
  $("cancel").hidden = j.state !== "running";
  const denom = j.total || Math.max(j.done, 1);
  $("job-bar").style.width = `${(100 * (j.done - j.failed)) / denom}%`;
  $("job-bar-failed").style.width = `${(100 * j.failed) / denom}%`;
  $("job-stats").textContent = `${j.done}/${j.total ?? "?"} done · ${j.failed} failed · ${j.retried} retried · ` +
    `${j.rate}/s · started ${fmtTime(j.started_at)} · ${fmtSecs(j.duration_s)} · client ${j.client}`;
  $("job-error").textContent = j.error ? `${j.error.kind}: ${j.error.message}` : "";
  renderChart(j.series);
  $("errors-box").hidden = !j.errors.length;
  // a traceback the user opened stays open across the twice-a-second refresh
  const opened = new Set([...document.querySelectorAll("#errors details[open]")].map((d) => d.dataset.index));
  $("errors").replaceChildren(...j.errors.slice(0, 50).map((e) => el("details", {
    class: "err", "data-index": e.index, ...(opened.has(String(e.index)) ? { open: "" } : {}),
  }, [
    el("summary", { text: `input ${e.index}: ${e.type}` }), el("pre", { text: e.traceback }),
  ])));
  $("inputs-range").textContent = j.inputs.length ? `${j.offset}–${j.offset + j.inputs.length - 1}` : "";
  $("inputs").tBodies[0].replaceChildren(...j.inputs.map((i) => el("tr", { "data-index": i.index }, [
    el("td", { text: i.index }), el("td", {}, [el("span", { class: "pill " + i.state, text: i.state })]),
    el("td", { text: i.node ?? "–" }), el("td", { text: i.worker ?? "–" }), el("td", { text: fmtSecs(i.duration_s) }),
    el("td", { text: i.retries }),
    el("td", {}, [el("button", { class: "logs", text: `logs (${i.log_lines})`, onclick: () => showLogs(j.job_id, i.index) })]),
  ])));
}

async function showLogs(jobId, index) {
  const resp = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/inputs/${index}`);
  const data = await resp.json();
  $("log-index").textContent = index;
  logLines = data.lines;
  renderLogs();
  $("log-error").textContent = data.error ? data.error.traceback : "";
}

function renderLogs() {
  const q = $("log-search").value.toLowerCase();
  const shown = logLines.filter((l) => !q || l.text.toLowerCase().includes(q));
  $("log-lines").replaceChildren(...shown.map((l) => el("div", { class: l.stream, text: l.text })));
}

function route() {
  const m = location.hash.match(/job=([^&]+)/);
  const jobId = m ? decodeURIComponent(m[1]) : null;
  $("cluster-view").hidden = !!jobId;
  $("job-view").hidden = !jobId;
  if (source) source.close();
  const url = "/v1/events" + (jobId ? `?job=${encodeURIComponent(jobId)}&offset=${inputsOffset}` : "");
  source = new EventSource(url);
  source.onmessage = (ev) => {
    const snap = JSON.parse(ev.data);
    renderCluster(snap.cluster);
    renderJobs(snap.jobs);
    if (jobId && snap.job) renderJob(snap.job);
  };
  $("cancel").onclick = () => jobId && confirm("Cancel this job?") && post(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
}

async function main() {
  const resp = await fetch("/v1/session");
  if (resp.status === 401) { location.href = "/login"; return; }
  csrf = (await resp.json()).csrf;
  $("log-search").addEventListener("input", renderLogs);
  $("prev").onclick = () => { inputsOffset = Math.max(0, inputsOffset - 500); route(); };
  $("next").onclick = () => { inputsOffset += 500; route(); };
  $("logout").onclick = async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
    location.href = "/login";
  };
  window.addEventListener("hashchange", () => { inputsOffset = 0; route(); });
  route();
}

main();
