// Generate a video: frames, fps, format, an init image, prompt travel; live steps, previews and
// frame decoding; cancel.
import { field, h, number, select } from "../ui.js";
import { SCHEDULERS, modelPicker, numbers, runJob } from "./common.js";
import { imageInput, showStrength, sourceFields } from "./imageinput.js";
import { fillForm, reusedSource, takeReuse } from "./reuse.js";
import { travelEditor } from "./travel.js";
import { submitOnCtrlEnter } from "./image.js";

export const title = "Video";

const FORMATS = [
  ["VIDEO_FORMAT_GIF", "GIF"],
  ["VIDEO_FORMAT_MP4", "MP4 (H.264)"],
  ["VIDEO_FORMAT_WEBP", "WebP"],
];

export function render(container) {
  const strength = field("Strength", number("strength", 0.8, { min: 0.01, max: 1, step: "any" }), "how much of the init image is replaced");
  showStrength(strength, null);
  const init = imageInput({ label: "Init image (image-to-video)", name: "init_image", onChange: (source) => showStrength(strength, source) });
  const travel = travelEditor();
  const form = h(
    "form",
    { class: "gen-form", "aria-label": "Generate a video" },
    field("Prompt", h("textarea", { name: "prompt", rows: 3, required: true, placeholder: "waves on a beach" })),
    field("Negative prompt", h("textarea", { name: "negative_prompt", rows: 2 })),
    h(
      "div",
      { class: "grid" },
      field("Frames", number("num_frames", 16, { min: 1, max: 64 })),
      field("FPS", number("fps", 8, { min: 1, max: 60 })),
      field("Format", select("output_format", FORMATS, "VIDEO_FORMAT_GIF")),
      field("Width", number("width", 512, { min: 64, max: 1024, step: 8 })),
      field("Height", number("height", 512, { min: 64, max: 1024, step: 8 })),
      field("Steps", number("steps", 25, { min: 1, max: 150 })),
      field("Guidance", number("guidance_scale", 7.5, { min: 0, max: 30, step: 0.5 })),
      field("Seed", number("seed", "", { min: 0, placeholder: "random" })),
      field("Scheduler", select("scheduler", SCHEDULERS, "")),
    ),
    h(
      "div",
      { class: "grid two" },
      field("Model", modelPicker("/v1/videos")),
      field("Motion adapter", modelPicker("/v1/videos", "motion_adapter", (labels) => labels.kind === "motion_adapter")),
    ),
    travel.element,
    init.element,
    strength,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Generate")),
  );
  const progress = h("div", { class: "slot" });
  const result = h("div", { class: "slot result", "aria-live": "polite" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const elements = form.elements;
    const { schedule, error } = travel.value(Number(elements.num_frames.value.trim() || Number.NaN));
    if (error) return; // the editor shows it, on the row at fault
    const body = {
      prompt: elements.prompt.value,
      negative_prompt: elements.negative_prompt.value,
      output_format: elements.output_format.value,
      ...numbers(form, ["num_frames", "fps", "width", "height", "steps", "guidance_scale", "seed"]),
      preview_interval_steps: 1,
    };
    if (elements.scheduler.value) body.scheduler = elements.scheduler.value;
    if (elements.model.value) body.model = elements.model.value;
    if (elements.motion_adapter.value) body.motion_adapter = elements.motion_adapter.value;
    if (Object.keys(schedule).length) body.prompt_schedule = schedule;
    const source = init.value();
    if (source) Object.assign(body, sourceFields(source, "init_image"), numbers(form, ["strength"]));
    result.replaceChildren();
    const last = await runJob(progress, "/v1/videos:generate", body, {
      title: "Video job",
      submit: form.querySelector("[type=submit]"),
    });
    if (last?.result) result.replaceChildren(videoResult(last.result));
  });
  const reused = takeReuse("video");
  if (reused) {
    const { parameters, artifacts } = reused;
    fillForm(form, parameters);
    travel.set(parameters.prompt_schedule);
    if (parameters.task === "VIDEO_TASK_IMAGE_TO_VIDEO") init.set(reusedSource(parameters.init_media, artifacts));
  }
  submitOnCtrlEnter(form);
  container.append(h("h1", {}, "Generate a video"), h("div", { class: "columns" }, form, h("div", {}, progress, result)));
}

/** The clip itself: <video> for MP4, <img> for GIF and animated WebP. */
export function media(artifact, poster, alt) {
  if (!artifact?.url) return h("p", {}, "no media");
  if (artifact.content_type === "video/mp4") {
    return h("video", { class: "result-image", src: artifact.url, poster: poster?.url, controls: true, loop: true, muted: true, autoplay: true, playsinline: true });
  }
  return h("img", { class: "result-image", src: artifact.url, alt });
}

export function videoResult(result) {
  return h(
    "figure",
    { class: "output" },
    media(result.video, result.poster, `generated clip, seed ${result.seed}`),
    h(
      "figcaption",
      {},
      `${result.num_frames} frames at ${result.fps} fps · seed ${result.seed} · `,
      h("a", { href: result.video.url, target: "_blank", rel: "noopener" }, "download"),
    ),
  );
}
