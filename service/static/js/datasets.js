// Datasets: upload a zip (with a progress bar), register a server folder, and look at each
// dataset's classes, split counts, skipped files and a few cached thumbnails per class.

import { api, config, getJson, h, say, showFieldError, upload, when, clearFieldErrors } from "./api.js";

const THUMBS_PER_CLASS = 4;
const message = document.getElementById("datasets-message");

function thumbnails(dataset, className, classIndex, total) {
  const count = Math.min(THUMBS_PER_CLASS, total);
  return h("div", { class: "thumbs" }, Array.from({ length: count }, (_, i) => h("img", {
    src: `/datasets/${dataset.id}/thumbnails/${classIndex}/${i}`, alt: `${className} example ${i + 1}`,
    loading: "lazy", width: 64, height: 64 })));
}

function card(dataset) {
  const rows = dataset.classes.map((name, index) => {
    const counts = dataset.counts[name] || {};
    return h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, counts.total ?? "–"),
      h("td", { class: "num" }, counts.train ?? "–"), h("td", { class: "num" }, counts.val ?? "–"),
      h("td", {}, thumbnails(dataset, name, index, counts.total ?? 0)));
  });
  const skipped = dataset.skipped.length
    ? h("details", {}, h("summary", {}, `${dataset.skipped.length} skipped file(s)`),
      h("ul", {}, dataset.skipped.map((s) => h("li", {}, h("code", {}, s.file || s.path), `: ${s.reason}`))))
    : h("p", { class: "hint" }, "No skipped files.");
  const remove = h("button", { type: "button", class: "danger", "aria-label": `delete dataset ${dataset.id}`,
    onclick: async () => {
      if (!window.confirm(`Forget dataset ${dataset.name}?`)) return;
      try { await api(`/datasets/${dataset.id}`, { method: "DELETE" }); refresh(); } catch (error) { say(message, error.message, true); }
    } }, "Delete");
  return h("article", { class: "dataset", dataset: { datasetId: dataset.id } },
    h("div", { class: "bar" }, h("h2", {}, `#${dataset.id} ${dataset.name}`),
      h("span", { class: "hint" }, `${dataset.source} · ${dataset.num_images} images · ${dataset.classes.length} classes · ${when(dataset.created_at)}`),
      h("span", { class: "spacer" }),
      h("a", { class: "button", href: `/ui/?dataset_id=${dataset.id}&new=1` }, "Train on it"), remove),
    h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ["class", "images", "train", "val.", "examples"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))),
    skipped);
}

async function refresh() {
  try {
    const page = await getJson("/datasets?limit=500");
    const list = document.getElementById("datasets");
    list.replaceChildren(...page.data.map(card));
    if (!page.data.length) list.append(h("p", { class: "hint" }, "No dataset yet: upload a zip above."));
  } catch (error) {
    say(message, error.message, true);
  }
}

document.getElementById("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearFieldErrors(form);
  const file = document.getElementById("upload-file").files[0];
  const status = document.getElementById("upload-status");
  if (!file) { say(status, "Choose a .zip file first.", true); return; }
  const body = new FormData();
  body.append("file", file);
  const name = document.getElementById("upload-name").value.trim();
  if (name) body.append("name", name);
  const bar = document.getElementById("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  say(status, "Uploading…");
  try {
    const dataset = await upload("/datasets", body, (fraction) => {
      bar.value = fraction;
      if (fraction >= 1) say(status, "Checking the images…");
    });
    bar.value = 1;
    say(status, `Dataset #${dataset.id} ${dataset.name}: ${dataset.num_images} images in ${dataset.classes.length} classes.`);
    form.reset();
    await refresh();
  } catch (error) {
    say(status, "");
    showFieldError(form, error, status);
  }
});

if (config.register_enabled) {
  document.getElementById("register-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    clearFieldErrors(form);
    const status = document.getElementById("register-status");
    const name = document.getElementById("register-name").value.trim();
    try {
      const { data } = await api("/datasets/register", { method: "POST",
        json: { path: document.getElementById("register-path").value, ...(name ? { name } : {}) } });
      say(status, `Dataset #${data.id} ${data.name}: ${data.num_images} images.`);
      await refresh();
    } catch (error) {
      showFieldError(form, error, status);
    }
  });
} else {
  document.getElementById("register-form").addEventListener("submit", (event) => event.preventDefault());
}

refresh();
