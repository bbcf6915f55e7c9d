// Generate a video: frames, fps, format, an init image, prompt travel; live steps, previews and
// frame decoding; cancel.
import { field, h, number, select } from "../ui.js";
import { diffusionBody, generationPage, modelPicker, samplingFields } from "./common.js";
import { imageInput, showStrength } from "./imageinput.js";
import { fillForm, reusedSource, takeReuse } from "./reuse.js";
import { travelEditor } from "./travel.js";

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
      field("Frames", number("num_frames", "", { min: 1, max: 64, placeholder: "auto" })),
      field("FPS", number("fps", 8, { min: 1, max: 60 })),
      field("Format", select("output_format", FORMATS, "VIDEO_FORMAT_GIF")),
      field("Width", number("width", "", { min: 64, max: 1024, step: 8, placeholder: "auto" })),
      field("Height", number("height", "", { min: 64, max: 1024, step: 8, placeholder: "auto" })),
      ...samplingFields(),
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
  // The prompt schedule is checked against the frame count first: the editor shows a bad row.
  const request = () => {
    const elements = form.elements;
    const { schedule, error } = travel.value(Number(elements.num_frames.value.trim() || Number.NaN));
    if (error) return null;
    const body = diffusionBody(form, ["num_frames", "fps", "width", "height", "steps", "guidance_scale", "seed"], init);
    body.output_format = elements.output_format.value;
    if (elements.motion_adapter.value) body.motion_adapter = elements.motion_adapter.value;
    if (Object.keys(schedule).length) body.prompt_schedule = schedule;
    return body;
  };
  const reused = takeReuse("video");
  if (reused) {
    const { parameters, artifacts } = reused;
    fillForm(form, parameters);
    travel.set(parameters.prompt_schedule);
    if (parameters.task === "VIDEO_TASK_IMAGE_TO_VIDEO") init.set(reusedSource(parameters.init_media, artifacts));
  }
  generationPage(container, {
    heading: "Generate a video",
    form,
    path: "/v1/videos:generate",
    jobTitle: "Video job",
    request,
    show: videoResult,
  });
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
