// Small DOM helpers and the job progress panel every generation view shares.
import { cancelJob } from "./api.js";

/** h("button", {class: "x", onclick: f}, "text", child...): an element. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "value") element.value = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat(Infinity).filter((child) => child !== undefined && child !== null && child !== false));
  return element;
}

let ids = 0;

/** A labelled form field; `input` gets an id and the label points at it. */
export function field(label, input, hint) {
  input.id ||= `f${++ids}`;
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hint && h("small", {}, hint));
}

export function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)),
  );
}

export function number(name, value, { min, max, step = 1, placeholder } = {}) {
  // A phone's keypad: digits only for whole numbers, with a decimal point for fractional ones.
  const inputmode = Number.isInteger(step) ? "numeric" : "decimal";
  return h("input", { type: "number", name, value: value ?? "", min, max, step, placeholder, inputmode });
}

export function seconds(value) {
  if (!Number.isFinite(value) || value < 0) return "";
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${Math.round(value % 60)} s`;
}

export function age(isoTime, now = Date.now()) {
  if (!isoTime) return "";
  const value = (now - Date.parse(isoTime)) / 1000;
  if (value < 60) return `${Math.max(0, Math.round(value))} s ago`;
  if (value < 3600) return `${Math.round(value / 60)} min ago`;
  if (value < 86400) return `${Math.round(value / 3600)} h ago`;
  return `${Math.round(value / 86400)} d ago`;
}

/** "JOB_STATE_RUNNING" -> "running", "SCHEDULER_DPMPP_2M" -> "dpmpp 2m". */
export function enumText(value, prefix) {
  return String(value || "")
    .replace(prefix, "")
    .toLowerCase()
    .replaceAll("_", " ");
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

/** Shows a job as its events arrive: state, queue position, step, ETA, latent preview; cancel. */
export class JobPanel {
  constructor({ title = "Progress" } = {}) {
    this.jobId = "";
    this.state = h("p", { class: "state", "aria-live": "polite" }, "Starting…");
    this.bar = h("progress", { max: 1, value: 0 });
    this.detail = h("p", { class: "detail" });
    this.preview = h("img", { class: "preview", alt: "latent preview", hidden: true });
    this.cancel = h("button", { type: "button", class: "danger", onclick: () => this.requestCancel() }, "Cancel");
    this.element = h(
      "section",
      { class: "job-panel", "aria-label": title, "data-state": "starting" },
      h("div", { class: "job-head" }, h("h3", {}, title), this.cancel),
      this.state,
      this.bar,
      this.detail,
      this.preview,
    );
  }

  async requestCancel() {
    if (!this.jobId) return;
    this.cancel.disabled = true;
    this.cancel.textContent = "Cancelling…";
    try {
      await cancelJob(this.jobId);
    } catch (error) {
      this.detail.textContent = `Cancel failed: ${error.message}`;
      this.cancel.disabled = false;
      this.cancel.textContent = "Cancel";
    }
  }

  setState(kind, text) {
    this.element.dataset.state = kind;
    this.state.textContent = text;
  }

  /** One event of a generation stream (any service): updates the panel. */
  update(event) {
    if (event.job_id && !this.jobId) {
      this.jobId = event.job_id;
      this.element.dataset.jobId = event.job_id;
    }
    const id = this.jobId ? ` · ${this.jobId}` : "";
    if (event.queued) this.setState("queued", `Queued: position ${event.queued.queue_position}${id}`);
    if (event.started) this.setState("running", `Running${id}`);
    const progress = event.progress;
    if (progress && (progress.total_steps || progress.fraction)) {
      if (this.element.dataset.state !== "running") this.setState("running", `Running${id}`);
      this.bar.value = progress.fraction || 0;
      this.element.dataset.step = String(progress.step || 0);
      const parts = [];
      if (progress.total_steps) parts.push(`step ${progress.step} of ${progress.total_steps}`);
      if (progress.eta_seconds > 0) parts.push(`ETA ${seconds(progress.eta_seconds)}`);
      if (progress.elapsed_seconds > 0) parts.push(`${seconds(progress.elapsed_seconds)} elapsed`);
      this.detail.textContent = parts.join(" · ");
      this.showPreview(progress.preview);
    }
    const update = event.progress_update;
    if (update?.total_frames) this.detail.textContent += ` · decoded ${update.frames_decoded} of ${update.total_frames} frames`;
    if (update?.stage) this.state.textContent = `Running: ${enumText(update.stage, "STAGE_")}${id}`;
    if (event.result) this.finish("succeeded", `Done${id}`);
    if (event.cancelled) this.finish("cancelled", `Cancelled${id}${event.cancelled.reason ? `: ${event.cancelled.reason}` : ""}`);
    if (event.error) this.finish("failed", `Failed (${event.error.code}): ${event.error.message}`);
  }

  showPreview(preview) {
    if (!preview?.data) return;
    this.preview.src = `data:${preview.content_type || "image/png"};base64,${preview.data}`;
    this.preview.hidden = false;
    this.element.dataset.previews = String(Number(this.element.dataset.previews || 0) + 1);
  }

  finish(kind, text) {
    this.element.dataset.previewsBeforeEnd = this.element.dataset.previews || "0";
    this.setState(kind, text);
    if (kind === "succeeded") this.bar.value = 1;
    this.cancel.hidden = true;
  }

  fail(error) {
    this.finish("failed", error.message || String(error));
    this.state.setAttribute("role", "alert");
  }
}
