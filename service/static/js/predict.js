// Predict: drop or pick photos, read the top-k classes and which model answered; choose
// another model or promote the one that answered.

import { api, getJson, h, percent, say } from "./api.js";

const message = document.getElementById("predict-message");
const modelSelect = document.getElementById("predict-model");
const fileInput = document.getElementById("predict-files");
const drop = document.getElementById("drop-zone");
let answered = null;

async function loadModels() {
  const models = await getJson("/models");
  modelSelect.replaceChildren(h("option", { value: "" }, "serving model (automatic)"),
    ...models.data.map((m) => h("option", { value: m.job_id },
      `#${m.job_id} ${m.architecture.name} · dataset ${m.dataset_id} · ${percent(m.val_accuracy)}${m.serving ? " · serving" : ""}${m.promoted ? " ★" : ""}`)));
  const chosen = new URLSearchParams(window.location.search).get("job_id");
  if (chosen) modelSelect.value = chosen;
  if (!models.data.length) say(message, "No trained model yet: a job must succeed first.");
}

function bars(prediction) {
  return h("div", { class: "bars" }, h("strong", {}, prediction.top_k[0]?.class_name ?? "?"),
    prediction.top_k.map((c) => h("div", { class: "row" }, h("span", {}, c.class_name),
      h("span", { class: "track", role: "meter", "aria-valuenow": c.probability.toFixed(3), "aria-valuemin": 0,
        "aria-valuemax": 1, "aria-label": `${c.class_name} probability` },
      h("span", { class: "fill", style: `display:block;width:${(100 * c.probability).toFixed(1)}%` })),
      h("span", { class: "num" }, percent(c.probability)))));
}

function showAnswer(result, files) {
  const m = result.model;
  answered = m;
  document.getElementById("answer").hidden = false;
  document.getElementById("answer-model").textContent =
    `job #${m.job_id} · ${m.architecture.name} · epoch ${m.epoch} · val. accuracy ${percent(m.val_accuracy)} · ` +
    `${result.precision} · selected by ${m.selected_by} · ${result.latency_ms.toFixed(0)} ms`;
  document.getElementById("answer-promote").disabled = m.promoted;
  const previews = new Map(files.map((f) => [f.name, URL.createObjectURL(f)]));
  document.getElementById("predictions").replaceChildren(...result.data.map((p) => h("div", { class: "prediction" },
    h("img", { src: previews.get(p.file) || "", alt: p.file }), h("div", { class: "bars" }, h("div", { class: "hint" }, p.file), bars(p)))));
}

async function classify(files) {
  if (!files.length) { say(message, "Pick or drop at least one photo.", true); return; }
  const body = new FormData();
  for (const file of files) body.append("file", file);
  const query = new URLSearchParams({ top_k: document.getElementById("predict-topk").value || "3" });
  if (modelSelect.value) query.set("job_id", modelSelect.value);
  say(message, "Classifying…");
  try {
    const { data } = await api(`/predict?${query}`, { method: "POST", form: body });
    say(message, "");
    showAnswer(data, files);
  } catch (error) {
    say(message, error.message, true);
  }
}

document.getElementById("predict-form").addEventListener("submit", (event) => {
  event.preventDefault();
  classify([...fileInput.files]);
});
fileInput.addEventListener("change", () => classify([...fileInput.files]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify([...event.dataTransfer.files]);
});
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") fileInput.click(); });
document.getElementById("answer-promote").addEventListener("click", async () => {
  try {
    await api(`/models/${answered.job_id}/promote`, { method: "POST" });
    say(message, `Job #${answered.job_id} now serves its dataset.`);
    document.getElementById("answer-promote").disabled = true;
    await loadModels();
  } catch (error) {
    say(message, error.message, true);
  }
});
loadModels().catch((error) => say(message, error.message, true));
