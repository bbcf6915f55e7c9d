// Training: make synthetic pairs, start a job, watch its Loss/PSNR/SSIM per epoch live (the watch
// stream, no refresh), cancel it; below, the registry (registry.js): versions, two runs compared,
// restore with a version.
import { call, stream } from "../api.js";
import { JobPanel, errorBox, field, h, number, select } from "../ui.js";
import { numbers, runJob } from "./common.js";
import { lineChart } from "./chart.js";
import { registry } from "./registry.js";

export const title = "Training";
const PRESETS = ["gaussian-noise", "blur", "jpeg", "downsample", "mixed", "document-clean", "document-heavy"];
const ARCHITECTURES = [
  ["ARCHITECTURE_TINY", "tiny"],
  ["ARCHITECTURE_SMALL", "small"],
  ["ARCHITECTURE_BASE", "base"],
];

export function render(container) {
  const dataForm = sectionForm("Make synthetic data", "Synthetic data", "Make pairs", [
    field("Preset", select("degradation_type", PRESETS.map((name) => [name, name]), "gaussian-noise")),
    field("Pairs", number("num_images", 40, { min: 1, max: 10000 })),
    field("Data seed", number("seed", 1, { min: 0 })),
  ]);
  const dataSlot = h("div", { class: "slot" });
  dataForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { degradation_type: dataForm.elements.degradation_type.value, ...numbers(dataForm, ["num_images", "seed"]) };
    await runJob(dataSlot, "/v1/training/synthetic-data:generate", body, { title: "Synthetic data", submit: dataForm.querySelector("[type=submit]") });
  });

  const trainForm = sectionForm("Start a training job", "Train", "Start training", [
    field("Layer", number("layer", 1, { min: 1, max: 99 })),
    field("Architecture", select("architecture", ARCHITECTURES, "ARCHITECTURE_TINY")),
    field("Epochs", number("num_epochs", 3, { min: 1, max: 1000 })),
    field("Batch size", number("batch_size", 4, { min: 1, max: 256 })),
    field("Patch size", number("patch_size", 64, { min: 16, max: 512, step: 8 })),
    field("Dataset prefix", h("input", { name: "dataset_prefix", placeholder: "synthetic_" })),
  ], "primary");
  const watchSlot = h("div", { class: "slot" });
  const charts = h("div", { class: "charts" });
  const epochs = [];
  let controller = null;
  const draw = () =>
    charts.replaceChildren(
      lineChart("Loss", epochs, [["train", (e) => e.train_loss], ["validation", (e) => e.validation_loss]]),
      lineChart("PSNR (dB)", epochs, [["restored", (e) => e.validation?.psnr], ["degraded input", (e) => e.baseline?.psnr]]),
      lineChart("SSIM", epochs, [["restored", (e) => e.validation?.ssim], ["degraded input", (e) => e.baseline?.ssim]]),
    );
  trainForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = trainForm.querySelector("[type=submit]");
    const spec = {
      architecture: trainForm.elements.architecture.value,
      dataset_prefix: trainForm.elements.dataset_prefix.value,
      ...numbers(trainForm, ["layer", "num_epochs", "batch_size", "patch_size"]),
    };
    epochs.length = 0;
    draw();
    submit.disabled = true;
    const panel = new JobPanel({ title: "Training job" });
    watchSlot.replaceChildren(panel.element);
    try {
      const job = await call("POST", "/v1/training/jobs", spec); // returns at once; the job runs detached
      panel.update({ job_id: job.job_id });
      controller?.abort();
      controller = new AbortController();
      for await (const update of stream(`/v1/training/jobs/${job.job_id}:watch`, undefined, { signal: controller.signal })) {
        panel.update(update);
        const epoch = update.progress_update;
        if (epoch?.epoch) panel.detail.textContent = `epoch ${epoch.epoch} of ${epoch.total_epochs} · step ${epoch.step} of ${epoch.steps_per_epoch}`;
        if (update.epoch_completed) {
          epochs.push(update.epoch_completed);
          charts.dataset.epochs = String(epochs.length);
          draw();
        }
      }
      if (epochs.length) versions.showReport(job.job_id); // written before the job's last event
    } catch (error) {
      if (error.name !== "AbortError") {
        panel.fail(error);
        watchSlot.append(errorBox(error));
      }
    } finally {
      submit.disabled = false;
      versions.reload(); // a finished job registered a new version
    }
  });
  draw();
  const versions = registry();
  container.append(
    h("h1", {}, "Training"),
    h("div", { class: "columns" }, h("div", {}, dataForm, dataSlot), h("div", {}, trainForm, watchSlot)),
    charts,
    versions.element,
  );
  return () => controller?.abort(); // leaving the view stops watching; the job keeps running
}

/** One of the page's forms: a heading, a grid of fields, a submit button (`buttonClass`: "primary"). */
function sectionForm(label, heading, button, fields, buttonClass) {
  return h(
    "form",
    { class: "gen-form", "aria-label": label },
    h("h2", {}, heading),
    h("div", { class: "grid" }, ...fields),
    h("div", { class: "actions" }, h("button", { type: "submit", ...(buttonClass && { class: buttonClass }) }, button)),
  );
}
