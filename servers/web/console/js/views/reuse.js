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
    sessionStorage.setItem(KEY, JSON.stringify({ view, parameters: output.parameters }));
    location.hash = `#/${view}`;
  });
  return button;
}

/** The parameters waiting for `view` (taken once), or null. */
export function takeReuse(view) {
  const stored = sessionStorage.getItem(KEY);
  if (!stored) return null;
  const { view: target, parameters } = JSON.parse(stored);
  if (target !== view) return null;
  sessionStorage.removeItem(KEY);
  return parameters;
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
