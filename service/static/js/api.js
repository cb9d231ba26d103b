// Talking to the JSON API: the token on mutating calls, errors as {message, field}, formatting.

export const config = JSON.parse(document.getElementById("config").textContent);
const TOKEN_KEY = "foodlab.token";

export const token = () => localStorage.getItem(TOKEN_KEY) || "";

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

function authHeaders(method) {
  const headers = {};
  if (method !== "GET" && token()) headers.Authorization = `Bearer ${token()}`;
  return headers;
}

function failure(status, body) {
  const detail = (body && typeof body === "object" ? body.detail : body) || `HTTP ${status}`;
  const field = body && typeof body === "object" ? body.field : null;
  if (status === 401) {
    document.getElementById("token-needed").hidden = false;
    return new ApiError(401, `token needed (${detail})`, field);
  }
  return new ApiError(status, String(detail), field);
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// A request the page's head started before the modules loaded (base.html), taken once: a
// later call of the same path (polling) asks the API again.
function early(method, path) {
  const started = method === "GET" && window.foodlabEarly && window.foodlabEarly[path];
  if (started) delete window.foodlabEarly[path];
  return started;
}

// fetch() for the API: JSON in and out; throws ApiError with the API's own message.
export async function api(path, { method = "GET", json, form } = {}) {
  const headers = authHeaders(method);
  let body = form;
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await (early(method, path) || fetch(path, { method, headers, body }));
  const data = await parse(response);
  if (!response.ok) throw failure(response.status, data);
  return { data, response };
}

export const getJson = async (path) => (await api(path)).data;

// A multipart upload with progress events (fetch has none for request bodies).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders("POST"))) request.setRequestHeader(name, value);
    request.responseType = "json";
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onload = () => request.status < 300 ? resolve(request.response)
      : reject(failure(request.status, request.response));
    request.onerror = () => reject(new ApiError(0, "the server could not be reached", null));
    request.send(form);
  });
}

// Show an error beside the control whose data-error-for names its field, else in `fallback`.
export function showFieldError(root, error, fallback) {
  clearFieldErrors(root);
  const target = error.field && root.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`);
  const place = target || fallback;
  if (place) place.textContent = error.message;
  const control = error.field && root.querySelector(`[data-field="${CSS.escape(error.field)}"]`);
  if (control) { control.setAttribute("aria-invalid", "true"); control.focus(); }
}

export function clearFieldErrors(root) {
  root.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
  root.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
}

export function say(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("field-error", isError);
}

// Set the first time something data-driven is on screen: the benchmark reads it.
export function markRendered() {
  if (window.foodlabRenderedAt === undefined) window.foodlabRenderedAt = performance.now();
}

// --- formatting --------------------------------------------------------------------------

export const percent = (value, digits = 1) => value == null ? "–" : `${(100 * value).toFixed(digits)}%`;
export const number = (value, digits = 3) => value == null ? "–" : Number(value).toFixed(digits);
export const millions = (value) => value == null ? "–" : `${(value / 1e6).toFixed(2)}M`;
// One formatter for every date: toLocaleString builds a new one per call (two per table row).
const shortDateTime = new Intl.DateTimeFormat([], { dateStyle: "short", timeStyle: "short" });
export const when = (iso) => iso ? shortDateTime.format(new Date(iso)) : "–";
export function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}
export function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = size, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function architectureLabel(architecture) {
  const options = Object.entries(architecture.options || {}).map(([k, v]) => `${k}=${v}`);
  return options.length ? `${architecture.name} (${options.join(", ")})` : architecture.name;
}

// document.createElement with properties and children, so views stay free of innerHTML.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in el && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

export function progressCell(job) {
  const p = job.progress;
  if (job.status !== "running") return h("span", {}, job.status === "queued" ? "waiting" : "");
  const label = `epoch ${p.epoch}/${p.total_epochs}, ${p.percent.toFixed(0)}%` +
    (p.eta_seconds != null ? `, ETA ${duration(p.eta_seconds)}` : "");
  return h("span", { class: "progress-cell" },
    h("progress", { max: 100, value: p.percent, "aria-label": `progress of job ${job.id}` }), label);
}

// The token field in the header, on every page.
function installTokenForm() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const state = document.getElementById("token-state");
  input.value = token();
  state.textContent = token() ? "saved" : config.tokens_required ? "required" : "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, input.value.trim());
    state.textContent = input.value.trim() ? "saved" : "cleared";
    document.getElementById("token-needed").hidden = true;
  });
}

installTokenForm();
