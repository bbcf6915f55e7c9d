// Training's registry: the registered versions (ListModels), each with its job's report and plots,
// two runs overlaid on the charts for comparison (each version's training job history), and
// restoring an image with a chosen version, before and after side by side.
import { call } from "../api.js";
import { errorBox, field, h, number, select } from "../ui.js";
import { lineChart } from "./chart.js";
import { runJob } from "./common.js";
import { imageInput, sourceFields } from "./imageinput.js";

const METRICS = [
  ["Validation loss", (e) => e.validation_loss],
  ["PSNR (dB)", (e) => e.validation?.psnr],
  ["SSIM", (e) => e.validation?.ssim],
];

/** runs: [{label, history}] -> per metric [title, series] with each run's own epochs (the overlay). */
export function comparisonSeries(runs) {
  return METRICS.map(([title, value]) => [title, runs.map((run) => [run.label, value, run.history || []])]);
}

/** A version's name in the table and on the charts: "layer_2-20261122_143518 (v3)". */
export function versionLabel(model) {
  return `${model.model_id} (v${model.version})`;
}

/** "+0.42" / "-0.10" / "" (version 1 has nothing to compare with). */
export function signed(value, digits = 2) {
  if (!Number.isFinite(value)) return "";
  return `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
}

export function registry() {
  const status = h("p", { class: "hint versions-status", "aria-live": "polite" }, "Loading…");
  const rows = h("tbody");
  const compareNote = h("p", { class: "hint" }, "Tick two versions to overlay their training runs.");
  const charts = h("div", { class: "charts compare" });
  const report = h("div", { class: "slot report-slot", "aria-live": "polite" });
  const versionPicker = select("model_id", [["", "no versions yet"]], "");
  const restoreSlot = h("div", { class: "slot" });
  const restoreResult = h("div", { class: "slot result", "aria-live": "polite" });
  const source = imageInput({ label: "Image to restore", name: "restore_image" });
  const restoreForm = h(
    "form",
    { class: "gen-form", "aria-label": "Restore an image" },
    h("h2", {}, "Restore an image"),
    field("Version", versionPicker),
    source.element,
    field("Tile size", number("tile_size", "", { min: 0, max: 4096, step: 8, placeholder: "512" }), "0: the whole image at once"),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Restore")),
  );
  let models = [];
  const chosen = []; // model ids ticked for comparison, oldest first (at most two)
  let comparing = 0;

  async function load() {
    status.textContent = "Loading…";
    try {
      ({ models = [] } = await call("GET", "/v1/training/models?page_size=100"));
      rows.replaceChildren(...models.map(row));
      status.textContent = models.length ? `${models.length} versions, newest first` : "No trained versions yet: train one above.";
      const keep = versionPicker.value;
      versionPicker.replaceChildren(...(models.length ? models.map((model) => h("option", { value: model.model_id }, versionLabel(model))) : [h("option", { value: "" }, "no versions yet")]));
      if (models.some((model) => model.model_id === keep)) versionPicker.value = keep;
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  }

  function row(model) {
    const tick = h("input", { type: "checkbox", "aria-label": `Compare ${versionLabel(model)}`, checked: chosen.includes(model.model_id) });
    tick.addEventListener("change", () => toggle(model.model_id, tick.checked));
    const metrics = model.metrics || {};
    const delta = model.delta_vs_previous || {};
    return h(
      "tr",
      { "data-model-id": model.model_id },
      h("td", {}, tick),
      h("td", {}, h("code", {}, model.model_id)),
      h("td", {}, `${model.layer} · v${model.version}`),
      h("td", {}, String(model.best_epoch)),
      h("td", {}, Number.isFinite(metrics.psnr) ? `${metrics.psnr.toFixed(2)} dB ${signed(delta.psnr)}`.trim() : ""),
      h("td", {}, Number.isFinite(metrics.ssim) ? `${metrics.ssim.toFixed(3)} ${signed(delta.ssim, 3)}`.trim() : ""),
      h("td", {}, h("code", {}, model.job_id)),
      h("td", {}, h("button", { type: "button", class: "small", "aria-label": `Report of ${versionLabel(model)}`, onclick: () => showReport(model.job_id) }, "Report")),
    );
  }

  /** A training job's report: its plots (PNG charts), its text, and the stored files. */
  async function showReport(jobId) {
    report.replaceChildren(h("p", { class: "hint" }, `Loading the report of ${jobId}…`));
    try {
      const answer = await call("GET", `/v1/training/jobs/${encodeURIComponent(jobId)}/report`);
      report.replaceChildren(
        h(
          "section",
          { class: "panel report", "data-job-id": jobId, "aria-label": `Report of ${jobId}` },
          h("h3", {}, "Report of ", h("code", {}, jobId)),
          h(
            "div",
            { class: "plots" },
            (answer.plots || []).map((plot) => h("figure", {}, h("img", { src: plot.artifact.url, alt: plot.title, loading: "lazy" }), h("figcaption", {}, plot.title))),
          ),
          h("details", {}, h("summary", {}, "The report as text"), h("pre", {}, answer.text || "")),
          h(
            "p",
            { class: "actions" },
            answer.text_artifact?.url && h("a", { href: answer.text_artifact.url, target: "_blank", rel: "noopener" }, "report.txt"),
            answer.json_artifact?.url && h("a", { href: answer.json_artifact.url, target: "_blank", rel: "noopener" }, "report.json"),
          ),
        ),
      );
    } catch (error) {
      report.replaceChildren(errorBox(error));
    }
  }

  function toggle(modelId, on) {
    const at = chosen.indexOf(modelId);
    if (on && at < 0) chosen.push(modelId);
    if (!on && at >= 0) chosen.splice(at, 1);
    if (chosen.length > 2) {
      const dropped = chosen.shift(); // the third tick replaces the oldest one
      const box = rows.querySelector(`tr[data-model-id="${CSS.escape(dropped)}"] input`);
      if (box) box.checked = false;
    }
    compare();
  }

  async function compare() {
    const mine = ++comparing;
    charts.replaceChildren();
    delete charts.dataset.runs;
    if (chosen.length < 2) {
      compareNote.textContent = "Tick two versions to overlay their training runs.";
      return;
    }
    const picked = chosen.map((id) => models.find((model) => model.model_id === id)).filter(Boolean);
    compareNote.textContent = "Loading both runs…";
    try {
      const jobs = await Promise.all(picked.map((model) => call("GET", `/v1/training/jobs/${model.job_id}`)));
      if (mine !== comparing) return;
      const runs = picked.map((model, index) => ({ label: versionLabel(model), history: jobs[index].history || [] }));
      charts.replaceChildren(...comparisonSeries(runs).map(([title, series]) => lineChart(title, [], series)));
      charts.dataset.runs = String(runs.length);
      compareNote.textContent = `Comparing ${runs.map((run) => `${run.label}: ${run.history.length} epochs`).join(" · ")}`;
    } catch (error) {
      if (mine === comparing) compareNote.replaceChildren(errorBox(error));
    }
  }

  restoreForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const modelId = versionPicker.value;
    const image = source.value();
    restoreResult.replaceChildren();
    if (!modelId || !image) {
      restoreResult.replaceChildren(errorBox(new Error(!modelId ? "Choose a version first (train one above)." : "Choose an image to restore.")));
      return;
    }
    const body = { ...sourceFields(image, "image") };
    const tile = restoreForm.elements.tile_size.value.trim();
    if (tile !== "") body.tile_size = Number(tile);
    const last = await runJob(restoreSlot, `/v1/training/models/${encodeURIComponent(modelId)}:restore`, body, {
      title: "Restore job",
      submit: restoreForm.querySelector("[type=submit]"),
    });
    if (last?.result) restoreResult.replaceChildren(beforeAfter(image, last.result));
  });

  const element = h(
    "section",
    { class: "registry", "aria-labelledby": "registry-title" },
    h("h2", { id: "registry-title" }, "Registered versions"),
    status,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "versions" },
        h("caption", { class: "sr-only" }, "Registered versions, newest first"),
        h("thead", {}, h("tr", {}, ["Compare", "Model", "Layer · version", "Best epoch", "PSNR (Δ previous)", "SSIM (Δ previous)", "Job", ""].map((text) => h("th", { scope: "col" }, text)))),
        rows,
      ),
    ),
    report,
    compareNote,
    charts,
    h("div", { class: "columns restore" }, h("div", {}, restoreForm), h("div", {}, restoreSlot, restoreResult)),
  );
  load();
  return { element, reload: load, showReport };
}

/** The image as given and as restored, side by side (stacked on a phone). */
function beforeAfter(image, result) {
  const picture = (src, alt) => h("img", { class: "result-image", src, alt });
  return h(
    "figure",
    { class: "output before-after" },
    h("div", { class: "pair" },
      h("figure", { class: "before" }, image.url ? picture(image.url, "before: the image as given") : h("p", { class: "hint" }, image.label), h("figcaption", {}, "Before")),
      h("figure", { class: "after" }, picture(result.image.url, `after: restored by ${result.model_id}`), h("figcaption", {}, "After")),
    ), // fmt
    h(
      "figcaption",
      {},
      `${result.model_id} · ${result.width}×${result.height} · ${result.tile_count} tile${result.tile_count === 1 ? "" : "s"} · ${Number(result.total_seconds).toFixed(1)} s · `,
      h("a", { href: result.image.url, target: "_blank", rel: "noopener" }, "download"),
    ),
  );
}
