// "Reuse settings": a library item's parameters open the view that made it, filled in.
import { h } from "../ui.js";

const KEY = "genmesh.reuse";
const VIEWS = { OUTPUT_KIND_IMAGE: "image", OUTPUT_KIND_VIDEO: "video" };

/** A "Reuse settings" button for outputs whose view can take their parameters, else nothing. */
export function offerReuse(output) {
  const view = VIEWS[output.kind];
  if (!view || !output.parameters) return null;
  const button = h("button", { type: "button", class: "primary" }, "Reuse settings");
  button.addEventListener("click", () => {
    // The files come along: an img2img init image stored with the job is shown from its URL.
    sessionStorage.setItem(KEY, JSON.stringify({ view, parameters: output.parameters, artifacts: output.artifacts || [] }));
    location.hash = `#/${view}`;
  });
  return button;
}

/** {parameters, artifacts} waiting for `view` (taken once), or null. */
export function takeReuse(view) {
  const stored = sessionStorage.getItem(KEY);
  if (!stored) return null;
  const { view: target, parameters, artifacts = [] } = JSON.parse(stored);
  if (target !== view) return null;
  sessionStorage.removeItem(KEY);
  return { parameters, artifacts };
}

/**
 * The input image a job ran from (its parameters' ObjectRef), as an image input's source: with the
 * URL of the job's own copy when it is among the job's files, else named by its key alone.
 */
export function reusedSource(ref, artifacts = []) {
  if (!ref?.bucket || !ref.key) return null;
  const stored = artifacts.find((artifact) => artifact.bucket === ref.bucket && artifact.key === ref.key);
  return { ref: { bucket: ref.bucket, key: ref.key }, url: stored?.url || "", label: `${ref.key} (the job's input)` };
}

/** Fills the form's fields named like the parameters; a model is chosen once the picker has it. */
export function fillForm(form, parameters) {
  for (const [name, value] of Object.entries(parameters)) {
    const element = form.elements[name];
    if (!element || value === null || typeof value === "object") continue;
    if (element.tagName === "SELECT" && element.options.length <= 1 && name.includes("model")) {
      element.dataset.want = String(value); // the picker selects it when ListModels answers
      continue;
    }
    element.value = String(value);
  }
}
