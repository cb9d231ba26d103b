// The jobs page: one page of GET /jobs at a time (fast at any number of jobs), live while
// jobs run, with filters, sorting, selection for /ui/compare, cancel and delete.

import { api, architectureLabel, getJson, h, markRendered, millions, number, percent,
  progressCell, say, when } from "./api.js";
import { installJobForm } from "./jobform.js";

const POLL_MS = 2000;
const message = document.getElementById("jobs-message");
const tbody = document.querySelector("#jobs-table tbody");
const selected = new Set();
const datasetNames = new Map();
let state = readState();
let pollTimer;
// Fetched once, beside the first page of jobs, to name datasets and fill the filters and form.
const datasetsReady = getJson("/datasets?limit=500").then((page) => page.data);
const architecturesReady = getJson("/architectures").then((page) => page.data);

function readState() {
  const query = new URLSearchParams(window.location.search);
  return {
    status: query.get("status") || "", architecture: query.get("architecture") || "",
    dataset_id: query.get("dataset_id") || "", sort: query.get("sort") || "-id",
    limit: Number(query.get("limit")) || 50, offset: Number(query.get("offset")) || 0,
  };
}

function queryString() {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) if (value !== "") query.set(key, value);
  return query.toString();
}

function actions(job) {
  const finished = ["succeeded", "failed", "cancelled"].includes(job.status);
  const act = (label, run, danger = false) => h("button", {
    type: "button", class: danger ? "danger" : "", "aria-label": `${label} job ${job.id}`,
    onclick: () => run().then(refresh).catch((error) => say(message, error.message, true)),
  }, label);
  if (!finished) return act("Cancel", () => api(`/jobs/${job.id}/cancel`, { method: "POST" }));
  return act("Delete", async () => {
    if (!window.confirm(`Delete job ${job.id} and its checkpoints?`)) return;
    await api(`/jobs/${job.id}`, { method: "DELETE" });
    selected.delete(job.id);
  }, true);
}

function row(job) {
  const checkbox = h("input", { type: "checkbox", checked: selected.has(job.id),
    "aria-label": `select job ${job.id}`,
    onchange: (event) => { event.target.checked ? selected.add(job.id) : selected.delete(job.id); showSelection(); } });
  const best = job.best.val_accuracy == null ? "–" : `${percent(job.best.val_accuracy)} (${job.best.epoch})`;
  return h("tr", { dataset: { jobId: job.id, status: job.status } },
    h("td", {}, checkbox),
    h("td", {}, h("a", { href: `/ui/jobs/${job.id}` }, `#${job.id}`),
      job.promoted ? h("span", { title: "promoted: serves /predict" }, " ★") : null),
    h("td", {}, architectureLabel(job.architecture),
      job.group_id ? h("span", { class: "hint" }, ` seed ${job.hyperparameters.seed}`) : null),
    h("td", {}, datasetNames.get(job.dataset_id) || `#${job.dataset_id}`),
    h("td", {}, job.preset || "–"),
    h("td", { class: `status ${job.status}` }, job.status),
    h("td", {}, progressCell(job)),
    h("td", { class: "num" }, best),
    h("td", { class: "num" }, millions(job.num_parameters)),
    h("td", { class: "num" }, number(job.gflops, 2)),
    h("td", {}, when(job.started_at)),
    h("td", {}, when(job.finished_at)),
    h("td", {}, actions(job)));
}

function showSelection() {
  const button = document.getElementById("compare-selected");
  button.textContent = `Compare selected (${selected.size})`;
  button.disabled = selected.size === 0;
}

function showSort() {
  document.getElementById("sort").value = state.sort;
  document.querySelectorAll("th button.sort").forEach((button) => {
    const key = state.sort.replace(/^-/, "");
    if (button.dataset.sort === key) button.dataset.active = state.sort.startsWith("-") ? "desc" : "asc";
    else delete button.dataset.active;
  });
}

async function refresh() {
  clearTimeout(pollTimer);
  history.replaceState(null, "", `/ui/?${queryString()}`);
  let page;
  try {
    page = await getJson(`/jobs?${queryString()}`);
  } catch (error) {
    say(message, error.message, true);
    return;
  }
  render(page);
  if (page.data.some((job) => job.status === "running" || job.status === "queued")) {
    pollTimer = setTimeout(refresh, POLL_MS);
  }
}

let lastPage = null;

function render(page) {
  lastPage = page;
  tbody.replaceChildren(...page.data.map(row));
  if (!page.data.length) tbody.append(h("tr", {}, h("td", { colSpan: 13 }, "No jobs match.")));
  const last = Math.min(state.offset + state.limit, page.count);
  document.getElementById("page-info").textContent =
    page.count ? `${state.offset + 1}–${last} of ${page.count.toLocaleString()}` : "0 jobs";
  document.getElementById("page-prev").disabled = state.offset === 0;
  document.getElementById("page-next").disabled = last >= page.count;
  showSort();
  markRendered();
}

function installControls() {
  const filters = document.getElementById("filters");
  for (const [id, key] of [["filter-status", "status"], ["filter-architecture", "architecture"],
    ["filter-dataset", "dataset_id"], ["sort", "sort"], ["page-size", "limit"]]) {
    const control = document.getElementById(id);
    control.value = String(state[key]);
    control.addEventListener("change", () => {
      state[key] = key === "limit" ? Number(control.value) : control.value;
      state.offset = 0;
      refresh();
    });
  }
  filters.addEventListener("submit", (event) => event.preventDefault());
  document.querySelectorAll("th button.sort").forEach((button) => button.addEventListener("click", () => {
    const key = button.dataset.sort;
    state.sort = state.sort === `-${key}` ? key : `-${key}`;
    state.offset = 0;
    refresh();
  }));
  document.getElementById("page-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit); refresh();
  });
  document.getElementById("page-next").addEventListener("click", () => {
    state.offset += state.limit; refresh();
  });
  document.getElementById("compare-selected").addEventListener("click", () => {
    window.location.assign(`/ui/compare?jobs=${[...selected].sort((a, b) => a - b).join(",")}`);
  });
  document.getElementById("clear-selection").addEventListener("click", () => {
    selected.clear(); showSelection(); tbody.querySelectorAll("input[type=checkbox]").forEach((c) => { c.checked = false; });
  });
  const toggle = document.getElementById("new-job-toggle");
  toggle.addEventListener("click", () => {
    const panel = document.getElementById("new-job");
    panel.hidden = !panel.hidden;
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
  });
}

async function start() {
  installControls();
  showSelection();
  if (new URLSearchParams(window.location.search).has("new")) document.getElementById("new-job-toggle").click();
  const shown = refresh(); // never held back by the lookups
  const form = installJobForm(document.getElementById("job-form"), datasetsReady, architecturesReady);
  const datasets = await datasetsReady;
  for (const d of datasets) datasetNames.set(d.id, d.name);
  document.getElementById("filter-dataset").append(...datasets.map((d) =>
    h("option", { value: d.id }, `${d.id}: ${d.name}`)));
  document.getElementById("filter-dataset").value = state.dataset_id;
  await shown;
  if (lastPage) render(lastPage); // now with dataset names
  const architectures = await architecturesReady;
  document.getElementById("filter-architecture").append(...architectures.map((a) =>
    h("option", { value: a.name }, a.name)));
  document.getElementById("filter-architecture").value = state.architecture;
  await form;
}

start().catch((error) => say(message, error.message, true));
