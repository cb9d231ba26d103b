// Compare jobs: overlaid curves or mean ± std per configuration, the /compare table with
// deltas to a baseline and noise marks, fairness warnings, trade-offs with the Pareto front,
// and the gradient flow from stem to classifier.

import { architectureLabel, getJson, h, millions, number, percent, say } from "./api.js";
import { colour, fade, LineChart, smooth } from "./charts.js";

const STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "classifier"];
const COSTS = {
  num_parameters: { label: "parameters", format: millions },
  gflops: { label: "GFLOPs", format: (v) => number(v, 2) },
  mean_epoch_seconds: { label: "seconds per epoch", format: (v) => number(v, 1) },
  inference_ms: { label: "latency, ms per image", format: (v) => number(v, 1) },
};
const message = document.getElementById("compare-message");
const controls = {
  jobs: document.getElementById("compare-jobs"), baseline: document.getElementById("compare-baseline"),
  metric: document.getElementById("compare-metric"), mode: document.getElementById("compare-mode"),
  smoothing: document.getElementById("compare-smoothing"), cost: document.getElementById("tradeoff-x"),
};
let comparison = null;
let metrics = new Map(); // job id -> epochs
const charts = {};

const query = new URLSearchParams(window.location.search);
controls.jobs.value = query.get("jobs") || "";

const isAccuracy = () => controls.metric.value.endsWith("accuracy");
const rowLabel = (row) => `#${row.job_id} ${row.label}`;

function epochAxis() {
  const longest = Math.max(0, ...[...metrics.values()].map((rows) => rows.length));
  return Array.from({ length: longest }, (_, i) => i + 1);
}

function valuesByEpoch(jobId, key, x) {
  const byEpoch = new Map((metrics.get(jobId) || []).map((e) => [e.epoch, e[key] * (isAccuracy() ? 100 : 1)]));
  return x.map((epoch) => byEpoch.get(epoch) ?? null);
}

function jobCurves(x, key, weight) {
  const data = [x, ...comparison.rows.map((row) => smooth(valuesByEpoch(row.job_id, key, x), weight))];
  return [data, { series: comparison.rows.map((row) => ({ label: rowLabel(row) })) }];
}

function meanStd(values) {
  const present = values.filter((v) => v != null);
  if (!present.length) return [null, null];
  const mean = present.reduce((a, b) => a + b, 0) / present.length;
  const variance = present.length > 1
    ? present.reduce((a, b) => a + (b - mean) ** 2, 0) / (present.length - 1) : 0;
  return [mean, Math.sqrt(variance)];
}

// One mean line per configuration (jobs that differ only by seed) and a ± std band around it.
function groupCurves(x, key, weight) {
  const data = [x];
  const specs = [];
  const bands = [];
  comparison.groups.forEach((group, index) => {
    const runs = group.job_ids.map((id) => smooth(valuesByEpoch(id, key, x), weight));
    const stats = x.map((_, i) => meanStd(runs.map((run) => run[i])));
    const mean = stats.map(([m]) => m);
    const std = stats.map(([, s]) => s);
    const tone = colour(index);
    data.push(mean, mean.map((m, i) => m == null ? null : m + std[i]), mean.map((m, i) => m == null ? null : m - std[i]));
    const base = data.length - 3;
    specs.push({ label: `${group.label} (n=${group.job_ids.length})`, colour: tone },
      { label: `${group.label} +std`, colour: fade(tone, 0.35), width: 0.5, points: false },
      { label: `${group.label} −std`, colour: fade(tone, 0.35), width: 0.5, points: false });
    bands.push({ series: [base + 1, base + 2], fill: fade(tone, 0.18) });
  });
  return [data, { series: specs, bands }];
}

function drawCurves() {
  const key = controls.metric.value;
  const weight = Number(controls.smoothing.value);
  document.getElementById("smoothing-value").textContent = weight.toFixed(2);
  const x = epochAxis();
  const [data, spec] = controls.mode.value === "groups" ? groupCurves(x, key, weight) : jobCurves(x, key, weight);
  const label = controls.metric.selectedOptions[0].textContent;
  document.getElementById("curves-caption").textContent =
    `${label}${isAccuracy() ? " (%)" : ""} per epoch${weight ? `, smoothed ${weight}` : ""}`;
  spec.yLabel = isAccuracy() ? "%" : "loss";
  spec.height = 260;
  if (charts.curves) charts.curves.update(data, spec);
  else charts.curves = new LineChart(document.getElementById("chart-curves"), spec, data);
}

function drawGradientFlow() {
  const x = STAGES.map((_, i) => i);
  const data = [x];
  const specs = [];
  comparison.rows.forEach((row, index) => {
    const rows = metrics.get(row.job_id) || [];
    if (!rows.length) return;
    for (const [which, epoch] of [["first", rows[0]], ["last", rows[rows.length - 1]]]) {
      data.push(STAGES.map((s) => epoch.grad_norms?.[s] ?? null));
      specs.push({ label: `#${row.job_id} ${which} (epoch ${epoch.epoch})`, colour: colour(index),
        dash: which === "first" ? [5, 4] : undefined });
    }
  });
  const spec = { series: specs, yLog: true, xLabel: "stage", yLabel: "‖grad‖", height: 260,
    xSplits: () => x, xValues: (u, splits) => splits.map((i) => STAGES[i] ?? "") };
  if (charts.flow) charts.flow.update(data, spec);
  else charts.flow = new LineChart(document.getElementById("chart-gradflow"), spec, data);
}

function deltaCell(delta, isAccuracyField) {
  if (!delta || delta.absolute == null) return h("td", { class: "num" }, "–");
  const text = isAccuracyField ? `${(100 * delta.absolute).toFixed(1)} pp` : `${(100 * delta.relative).toFixed(0)}%`;
  const noisy = delta.within_noise;
  return h("td", { class: `num ${noisy ? "noise" : delta.absolute > 0 ? "better" : delta.absolute < 0 ? "worse" : ""}`,
    title: delta.noise != null ? `two standard errors: ±${(100 * delta.noise).toFixed(1)} pp` : "" },
  (delta.absolute > 0 ? "+" : "") + text, noisy ? " ≈ noise" : "");
}

function drawTable() {
  const columns = ["job", "model", "status", "epochs", "best val. acc. (epoch)", "Δ best val. acc.",
    "final val. acc.", "final train acc.", "final val. loss", "params", "Δ params", "GFLOPs", "s/epoch", "latency ms"];
  const table = document.getElementById("compare-table");
  table.tHead.replaceChildren(h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c))));
  table.tBodies[0].replaceChildren(...comparison.rows.map((row) => h("tr", { dataset: { jobId: row.job_id } },
    h("td", {}, h("a", { href: `/ui/jobs/${row.job_id}` }, `#${row.job_id}`),
      row.job_id === comparison.baseline_job_id ? " (baseline)" : ""),
    h("td", { title: architectureLabel({ name: row.architecture, options: row.explicit_options }) }, row.label),
    h("td", { class: `status ${row.status}` }, row.status), h("td", { class: "num" }, row.epochs_run),
    h("td", { class: "num" }, row.best_val_accuracy == null ? "–" : `${percent(row.best_val_accuracy)} (${row.best_epoch})`),
    deltaCell(row.delta.best_val_accuracy, true),
    h("td", { class: "num" }, percent(row.final_val_accuracy)), h("td", { class: "num" }, percent(row.final_train_accuracy)),
    h("td", { class: "num" }, number(row.final_val_loss)), h("td", { class: "num" }, millions(row.num_parameters)),
    deltaCell(row.delta.num_parameters, false), h("td", { class: "num" }, number(row.gflops, 2)),
    h("td", { class: "num" }, number(row.mean_epoch_seconds, 1)), h("td", { class: "num" }, number(row.inference_ms, 1)))));
  const groups = document.getElementById("groups-table");
  const repeated = comparison.groups.some((g) => g.job_ids.length > 1);
  groups.hidden = !repeated;
  if (!repeated) return;
  const stat = (g, key, format) => {
    const s = g.stats[key];
    return !s || s.mean == null ? "–" : `${format(s.mean)}${s.std != null ? ` ± ${format(s.std).replace("%", "")}` : ""}`;
  };
  groups.tHead.replaceChildren(h("tr", {}, ["configuration", "runs (seeds)", "best val. acc.", "Δ best val. acc.",
    "final val. acc.", "final train loss"].map((c) => h("th", { scope: "col" }, c))));
  groups.tBodies[0].replaceChildren(...comparison.groups.map((g) => h("tr", {},
    h("td", {}, g.label), h("td", {}, `${g.job_ids.length} (${g.seeds.join(", ")})`),
    h("td", { class: "num" }, stat(g, "best_val_accuracy", percent)), deltaCell(g.delta.best_val_accuracy, true),
    h("td", { class: "num" }, stat(g, "final_val_accuracy", percent)),
    h("td", { class: "num" }, stat(g, "final_train_loss", number)))));
}

// Points that no other point beats on both accuracy (higher) and cost (lower).
export function paretoFront(points) {
  const sorted = [...points].sort((a, b) => a.x - b.x || b.y - a.y);
  const front = [];
  for (const p of sorted) if (!front.length || p.y > front[front.length - 1].y) front.push(p);
  return front;
}

function drawTradeoff() {
  const cost = controls.cost.value;
  const { label, format } = COSTS[cost];
  const points = comparison.rows.filter((r) => r[cost] != null && r.best_val_accuracy != null)
    .map((r, i) => ({ x: r[cost], y: r.best_val_accuracy * 100, row: r, tone: colour(comparison.rows.indexOf(r)) }));
  const box = document.getElementById("tradeoff");
  if (!points.length) { box.replaceChildren(h("p", { class: "hint" }, `No job has ${label} and an accuracy yet.`)); return; }
  const W = 900, H = 320, L = 64, R = 170, T = 14, B = 40;
  const span = (values) => { const lo = Math.min(...values), hi = Math.max(...values), pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.02 || 1; return [lo - pad, hi + pad]; };
  const [x0, x1] = span(points.map((p) => p.x));
  const [y0, y1] = span(points.map((p) => p.y));
  const sx = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
  const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const svg = (tag, attrs, ...kids) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    el.append(...kids);
    return el;
  };
  const ticks = (lo, hi) => Array.from({ length: 5 }, (_, i) => lo + (hi - lo) * (i / 4));
  const front = paretoFront(points);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `best validation accuracy against ${label}` },
    ...ticks(x0, x1).map((v) => svg("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle", "font-size": 11 }, format(v))),
    ...ticks(y0, y1).map((v) => svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end", "font-size": 11 }, `${v.toFixed(1)}%`)),
    svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }),
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }),
    svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 12 }, label),
    svg("text", { x: 12, y: (T + H - B) / 2, "font-size": 12, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" }, "best val. accuracy"),
    svg("polyline", { class: "pareto", points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" "), fill: "none",
      stroke: "#1f7a3a", "stroke-width": 1.5, "stroke-dasharray": "6 4" }),
    svg("text", { x: W - R + 8, y: T + 12, "font-size": 11, fill: "#1f7a3a" }, "- - Pareto front"),
    ...points.map((p) => svg("g", { class: "point", "data-job-id": p.row.job_id },
      svg("circle", { cx: sx(p.x), cy: sy(p.y), r: front.includes(p) ? 6 : 4.5, fill: p.tone, stroke: "#fff" }),
      svg("text", { x: sx(p.x) + 8, y: sy(p.y) + 4, "font-size": 11 }, `#${p.row.job_id} ${p.row.label}`),
      svg("title", {}, `#${p.row.job_id} ${p.row.label}: ${p.y.toFixed(1)}%, ${format(p.x)} ${label}`))));
  box.replaceChildren(root);
}

function drawWarnings() {
  document.getElementById("warnings").replaceChildren(...comparison.warnings.map((w) =>
    h("li", { title: w.field }, `⚠ ${w.message}`)));
}

function exportLinks(ids, baseline) {
  const base = `/compare?jobs=${ids}${baseline ? `&baseline=${baseline}` : ""}`;
  document.getElementById("export-csv").href = `${base}&format=csv`;
  document.getElementById("export-csv").download = `compare-${ids.replaceAll(",", "-")}.csv`;
  document.getElementById("export-md").href = `${base}&format=md`;
  document.getElementById("export-md").download = `compare-${ids.replaceAll(",", "-")}.md`;
  const report = document.getElementById("export-report");
  report.href = `/compare/report?jobs=${ids}&format=zip`;
  report.download = `report-${ids.replaceAll(",", "-")}.zip`;
}

async function load() {
  const ids = controls.jobs.value.split(",").map((s) => s.trim()).filter(Boolean).join(",");
  if (!ids) { say(message, "Choose jobs on the Jobs page, or type their ids above."); return; }
  const baseline = controls.baseline.dataset.chosen || query.get("baseline") || "";
  history.replaceState(null, "", `/ui/compare?jobs=${ids}${baseline ? `&baseline=${baseline}` : ""}`);
  say(message, "Loading…");
  try {
    const [result, rows] = await Promise.all([
      getJson(`/compare?jobs=${ids}${baseline ? `&baseline=${baseline}` : ""}`),
      getJson(`/compare/metrics?jobs=${ids}`)]);
    comparison = result;
    metrics = new Map(rows.map((r) => [r.job_id, r.data]));
  } catch (error) {
    say(message, error.message, true);
    return;
  }
  say(message, `${comparison.rows.length} jobs; differing: ${comparison.differing.join(", ") || "nothing but the model"}.`);
  controls.baseline.replaceChildren(...comparison.rows.map((r) => h("option", { value: r.job_id }, rowLabel(r))));
  controls.baseline.value = String(comparison.baseline_job_id);
  exportLinks(ids, baseline);
  drawCurves();
  drawGradientFlow();
  drawTable();
  drawWarnings();
  drawTradeoff();
}

document.getElementById("compare-form").addEventListener("submit", (event) => {
  event.preventDefault();
  delete controls.baseline.dataset.chosen;
  load();
});
controls.baseline.addEventListener("change", () => { controls.baseline.dataset.chosen = controls.baseline.value; load(); });
for (const control of [controls.metric, controls.mode, controls.smoothing]) {
  control.addEventListener("input", () => comparison && drawCurves());
}
controls.cost.addEventListener("change", () => comparison && drawTradeoff());
load();
