// One job: live curves (polling while it runs), best epoch, confusion matrix, checkpoints.

import { api, architectureLabel, bytes, config, getJson, h, millions, number, percent,
  progressCell, say, when } from "./api.js";
import { LineChart } from "./charts.js";

const POLL_MS = 1000;
const STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "classifier"];
const id = config.job_id;
const message = document.getElementById("job-message");
const charts = {};
let job = null;
let epochs = [];
let shownStatus = null;

const bestEpoch = () => job?.best?.epoch ?? null;

function chartData() {
  const x = epochs.map((e) => e.epoch);
  const column = (key, scale = 1) => epochs.map((e) => e[key] == null ? null : e[key] * scale);
  const stages = STAGES.filter((s) => epochs.some((e) => e.grad_norms?.[s] != null));
  return {
    loss: [[x, column("train_loss"), column("val_loss")],
      { series: [{ label: "train loss" }, { label: "val. loss" }], marker: bestEpoch, yLabel: "loss" }],
    accuracy: [[x, column("train_accuracy", 100), column("val_accuracy", 100)],
      { series: [{ label: "train acc. %" }, { label: "val. acc. %" }], marker: bestEpoch, yLabel: "%" }],
    lr: [[x, column("lr")], { series: [{ label: "learning rate" }], yLabel: "lr",
      yValues: (u, values) => values.map((v) => v.toExponential(1)) }],
    grads: [[x, ...stages.map((s) => epochs.map((e) => e.grad_norms?.[s] ?? null))],
      { series: stages.map((s) => ({ label: s })), yLog: true, yLabel: "‖grad‖" }],
  };
}

function drawCharts() {
  for (const [name, [data, spec]] of Object.entries(chartData())) {
    if (charts[name]) charts[name].update(data, spec);
    else charts[name] = new LineChart(document.getElementById(`chart-${name}`), spec, data);
  }
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value ?? "–"));
}

function drawFacts() {
  const status = document.getElementById("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  document.getElementById("job-progress").replaceChildren(progressCell(job));
  document.getElementById("job-title").textContent = `Job ${job.id}: ${architectureLabel(job.architecture)}`;
  document.getElementById("job-facts").replaceChildren(
    fact("dataset", `#${job.dataset_id}`), fact("preset", job.preset),
    fact("best val. accuracy", job.best.val_accuracy == null ? null
      : `${percent(job.best.val_accuracy)} at epoch ${job.best.epoch}`),
    fact("best val. loss", number(job.best.val_loss)),
    fact("parameters", millions(job.num_parameters)), fact("GFLOPs", number(job.gflops, 2)),
    fact("device", job.device), fact("worker", job.worker), fact("attempts", job.attempts),
    fact("created", when(job.created_at)), fact("started", when(job.started_at)),
    fact("ended", when(job.finished_at)), fact("promoted", job.promoted ? "yes: serves /predict" : "no"),
    fact("repeat", job.group_id ? `${job.repeat_index + 1} (seed ${job.hyperparameters.seed})` : "single run"));
  document.getElementById("job-hyper").replaceChildren(
    ...Object.entries(job.hyperparameters).map(([k, v]) => fact(k, v === null ? "none" : String(v))));
  document.getElementById("job-cancel").disabled = finished(job.status) || job.cancel_requested;
  document.getElementById("job-delete").disabled = !finished(job.status);
  document.getElementById("job-promote").disabled = job.status !== "succeeded" || job.promoted;
  const error = document.getElementById("job-error");
  error.hidden = !job.error;
  if (job.error) {
    document.getElementById("job-error-message").textContent = job.error.message;
    document.getElementById("job-traceback").textContent = job.error.traceback || "(no traceback)";
  }
}

function heat(value, max) {
  const alpha = max ? value / max : 0;
  return `rgba(34, 87, 168, ${alpha.toFixed(3)})`;
}

function drawBest() {
  const details = job.best.details;
  const summary = document.getElementById("best-summary");
  if (!details) {
    summary.textContent = job.best.epoch ? `Epoch ${job.best.epoch}.` : "No epoch yet.";
    document.getElementById("confusion").replaceChildren();
    return;
  }
  summary.textContent = `Epoch ${job.best.epoch}: validation accuracy ${percent(job.best.val_accuracy)}, ` +
    `macro F1 ${number(details.macro_f1)}.`;
  const matrix = details.confusion_matrix;
  const max = Math.max(...matrix.flat());
  const names = details.class_names;
  const table = h("table", { class: "data confusion", "aria-label": "confusion matrix" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ predicted"),
      names.map((n) => h("th", { scope: "col" }, n)), h("th", { scope: "col" }, "class acc."))),
    h("tbody", {}, matrix.map((cells, i) => h("tr", {}, h("th", { scope: "row" }, names[i]),
      cells.map((v) => h("td", { style: `background:${heat(v, max)};color:${v > max / 2 ? "#fff" : "inherit"}` }, v)),
      h("td", { class: "num" }, percent(details.per_class_accuracy[names[i]]))))));
  document.getElementById("confusion").replaceChildren(table);
}

function drawEpochs() {
  const columns = [["epoch", "epoch", (v) => v], ["train loss", "train_loss", number],
    ["val. loss", "val_loss", number], ["train acc.", "train_accuracy", percent],
    ["val. acc.", "val_accuracy", percent], ["lr", "lr", (v) => v.toExponential(2)],
    ["seconds", "epoch_seconds", (v) => number(v, 1)], ["images/s", "train_images_per_second", (v) => number(v, 0)],
    ["gap", "generalization_gap", percent]];
  const table = document.getElementById("epochs");
  table.tHead.replaceChildren(h("tr", {}, columns.map(([label]) => h("th", { scope: "col", class: "num" }, label))));
  table.tBodies[0].replaceChildren(...epochs.map((e) => h("tr", { class: e.epoch === bestEpoch() ? "best" : "",
    title: e.epoch === bestEpoch() ? "best epoch" : "" },
    columns.map(([, key, format]) => h("td", { class: "num" }, format(e[key]),
      key === "epoch" && e.epoch === bestEpoch() ? " ★" : "")))));
}

async function drawCheckpoints() {
  const rows = await getJson(`/jobs/${id}/checkpoints`);
  document.querySelector("#checkpoints tbody").replaceChildren(...rows.map((c) => h("tr", {},
    h("td", {}, c.kind), h("td", { class: "num" }, c.epoch), h("td", { class: "num" }, bytes(c.size_bytes)),
    h("td", { title: c.path }, h("code", {}, c.sha256)))));
}

const finished = (status) => ["succeeded", "failed", "cancelled"].includes(status);

async function poll() {
  try {
    const [latest, metrics] = await Promise.all([getJson(`/jobs/${id}`), getJson(`/jobs/${id}/metrics`)]);
    job = latest;
    drawFacts();
    // Redraw when an epoch lands or the status changes, not on every tick.
    if (metrics.count !== epochs.length || job.status !== shownStatus || !charts.loss) {
      epochs = metrics.data;
      shownStatus = job.status;
      drawCharts();
      drawEpochs();
      drawBest();
      await drawCheckpoints();
    }
  } catch (error) {
    say(message, error.message, true);
    if (error.status === 404) return;
  }
  if (!job || !finished(job.status)) setTimeout(poll, POLL_MS);
}

function button(idName, run) {
  document.getElementById(idName).addEventListener("click", async () => {
    try {
      await run();
      say(message, "");
      shownStatus = null;
      await poll();
    } catch (error) {
      say(message, error.message, true);
    }
  });
}

button("job-cancel", () => api(`/jobs/${id}/cancel`, { method: "POST" }));
button("job-promote", () => api(`/models/${id}/promote`, { method: "POST" }));
document.getElementById("job-delete").addEventListener("click", async () => {
  if (!window.confirm(`Delete job ${id} and its checkpoints?`)) return;
  try {
    await api(`/jobs/${id}`, { method: "DELETE" });
    window.location.assign("/ui/");
  } catch (error) {
    say(message, error.message, true);
  }
});
poll();
