// The new-job form, built from GET /architectures and GET /hyperparameters (the schemas the
// API validates with), so it offers exactly the fields POST /jobs accepts.

import { api, clearFieldErrors, getJson, h, showFieldError } from "./api.js";

function describe(schema) {
  if (!schema.anyOf) return { ...schema, nullable: false };
  const concrete = schema.anyOf.filter((s) => s.type !== "null");
  return { ...schema, ...concrete[0], nullable: concrete.length < schema.anyOf.length };
}

function makeField(name, schema, path) {
  const kind = describe(schema);
  const common = { id: `field-${path}`, dataset: { field: path }, title: kind.description || "" };
  let input;
  if (kind.enum) input = h("select", common, kind.enum.map((v) => h("option", { value: v }, v)));
  else if (kind.type === "boolean") input = h("input", { ...common, type: "checkbox" });
  else if (kind.type === "integer" || kind.type === "number") {
    input = h("input", { ...common, type: "number", step: kind.type === "integer" ? "1" : "any",
      placeholder: kind.nullable ? "none" : "" });
  } else input = h("input", { ...common, type: "text", placeholder: kind.nullable ? "none" : "" });
  const label = h("label", { for: common.id }, kind.title || name);
  const wrapper = h("div", { class: "field" }, label, input,
    h("span", { class: "field-error", dataset: { errorFor: path } }));
  return { name, kind, input, wrapper };
}

function write(field, value) {
  if (field.kind.type === "boolean") field.input.checked = Boolean(value);
  else field.input.value = value == null ? "" : String(value);
}

function read(field) {
  const raw = field.input.value;
  if (field.kind.type === "boolean") return field.input.checked;
  if (raw === "") return field.kind.nullable ? null : raw; // the API names the empty field
  if (field.kind.type === "integer" || field.kind.type === "number") {
    return Number.isNaN(Number(raw)) ? raw : Number(raw);
  }
  return raw;
}

// Only what differs from the defaults, so a job's preset keeps its meaning.
function changed(fields, defaults) {
  const out = {};
  for (const field of fields) {
    const value = read(field);
    if (value !== (defaults[field.name] ?? null)) out[field.name] = value;
  }
  return out;
}

// Hyperparameters first (cheap); the architectures come when ready (cold, they take seconds).
export async function installJobForm(form, datasetsReady, architecturesReady) {
  const hyper = await getJson("/hyperparameters");
  const presetSelect = form.querySelector("#job-preset");
  presetSelect.replaceChildren(...Object.keys(hyper.presets).map((p) => h("option", { value: p }, p)));
  presetSelect.value = hyper.default_preset;
  const properties = (schema, prefix) => Object.entries(schema.properties)
    .map(([name, prop]) => makeField(name, prop, `${prefix}.${name}`));
  const hyperFields = properties(hyper.schema, "hyperparameters");
  form.querySelector("#hyper-fields").replaceChildren(...hyperFields.map((f) => f.wrapper));
  const fillPreset = () => hyperFields.forEach((f) => write(f, hyper.presets[presetSelect.value][f.name]));
  presetSelect.addEventListener("change", fillPreset);
  fillPreset();

  const datasets = await datasetsReady;
  const datasetSelect = form.querySelector("#job-dataset");
  datasetSelect.replaceChildren(...datasets.map((d) => h("option", { value: d.id }, `${d.id}: ${d.name}`)));
  const wanted = new URLSearchParams(window.location.search).get("dataset_id");
  if (wanted) datasetSelect.value = wanted;

  const architectures = await architecturesReady;
  const byName = Object.fromEntries(architectures.map((a) => [a.name, a]));
  const archSelect = form.querySelector("#job-architecture");
  archSelect.replaceChildren(...architectures.map((a) => h("option", { value: a.name }, a.name)));
  const optionFields = properties(architectures[0].options, "architecture.options");
  form.querySelector("#option-fields").replaceChildren(...optionFields.map((f) => f.wrapper));
  const fillArchitecture = () => {
    const arch = byName[archSelect.value];
    optionFields.forEach((f) => write(f, arch.default_options[f.name]));
    form.querySelector("#architecture-info").textContent =
      `${arch.description} · ${(arch.parameters / 1e6).toFixed(2)}M parameters · ${arch.gflops.toFixed(2)} GFLOPs at 224x224`;
  };
  archSelect.addEventListener("change", fillArchitecture);
  fillArchitecture();
  form.querySelector("#job-submit").disabled = false;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const arch = byName[archSelect.value];
    const repeats = form.querySelector("#job-repeats").value;
    const body = {
      dataset_id: Number(datasetSelect.value) || datasetSelect.value,
      architecture: { name: arch.name, options: changed(optionFields, arch.default_options) },
      preset: presetSelect.value,
      hyperparameters: changed(hyperFields, hyper.presets[presetSelect.value]),
      repeats: repeats === "" ? 1 : Number(repeats),
    };
    const button = form.querySelector("#job-submit");
    button.disabled = true;
    try {
      const { data } = await api("/jobs", { method: "POST", json: body });
      window.location.assign(`/ui/jobs/${data.id}`);
    } catch (error) {
      showFieldError(form, error, form.querySelector("#job-form-error"));
    } finally {
      button.disabled = false;
    }
  });
}
