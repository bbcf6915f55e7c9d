// Generate an image: the form, the live job (queue, step, ETA, latent previews), the result.
import { field, h, number } from "../ui.js";
import { diffusionBody, generationPage, modelPicker, samplingFields } from "./common.js";
import { imageInput, showStrength } from "./imageinput.js";
import { fillForm, reusedSource, takeReuse } from "./reuse.js";

export const title = "Image";

export function render(container) {
  // img2img: the strength field shows once there is an init image.
  const strength = field("Strength", number("strength", 0.75, { min: 0.01, max: 1, step: "any" }), "how much of the init image is replaced");
  showStrength(strength, null);
  const init = imageInput({ label: "Init image (img2img)", name: "init_image", onChange: (source) => showStrength(strength, source) });
  const form = h(
    "form",
    { class: "gen-form", "aria-label": "Generate an image" },
    field("Prompt", h("textarea", { name: "prompt", rows: 3, required: true, placeholder: "a lighthouse at dusk" })),
    field("Negative prompt", h("textarea", { name: "negative_prompt", rows: 2, placeholder: "blurry, text" })),
    h(
      "div",
      { class: "grid" },
      field("Width", number("width", "", { min: 64, max: 2048, step: 8, placeholder: "auto" })),
      field("Height", number("height", "", { min: 64, max: 2048, step: 8, placeholder: "auto" })),
      ...samplingFields(),
    ),
    field("Model", modelPicker("/v1/images")),
    init.element,
    strength,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Generate")),
  );
  const reused = takeReuse("image");
  if (reused) {
    fillForm(form, reused.parameters);
    init.set(reusedSource(reused.parameters.init_image, reused.artifacts)); // img2img runs again from the same image
  }
  generationPage(container, {
    heading: "Generate an image",
    form,
    path: "/v1/images:generate",
    jobTitle: "Image job",
    request: () => diffusionBody(form, ["width", "height", "steps", "guidance_scale", "seed"], init),
    show: imageResult,
  });
}

export function imageResult(result) {
  const parameters = result.parameters || {};
  return h(
    "figure",
    { class: "output" },
    ...(result.images || []).map((image) =>
      h(
        "a",
        { href: image.artifact.url, target: "_blank", rel: "noopener" },
        h("img", { class: "result-image", src: image.artifact.url, alt: `generated image, seed ${image.seed}` }),
      ),
    ),
    h(
      "figcaption",
      {},
      `${parameters.model} · ${parameters.width}×${parameters.height} · ${parameters.steps} steps · seed ${(result.images || [])[0]?.seed}` +
        (parameters.init_image?.key ? ` · img2img, strength ${Number(parameters.strength).toFixed(2)}` : "") +
        (result.timings ? ` · ${Number(result.timings.total_seconds).toFixed(1)} s` : ""),
    ),
  );
}
