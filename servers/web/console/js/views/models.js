// Models: each service's ListModels with its state (loaded / loads on first use / not downloaded)
// and default / smoke-test badges.
import { SERVICES, call } from "../api.js";
import { errorBox, h } from "../ui.js";
import { modelState, smokeTest } from "./common.js";

export const title = "Models";
const WITH_MODELS = ["text", "image", "video", "training"];

export function render(container) {
  container.append(h("h1", {}, "Models"));
  for (const name of WITH_MODELS) {
    const section = h("section", { class: "panel", "data-service": name }, h("h2", {}, SERVICES[name].label), h("p", { class: "hint" }, "Loading…"));
    container.append(section);
    call("GET", `${SERVICES[name].root}/models`).then(
      ({ models = [] }) => {
        const items = models.map((model) => {
          const state = modelState(model);
          return h(
            "li",
            { "data-state": state ? state[0] : "" },
            h("strong", {}, model.name || model.model_id || "(unnamed)"),
            state && h("span", { class: `badge state ${state[1]}`.trim() }, state[0]),
            model.is_default && h("span", { class: "badge" }, "default"),
            smokeTest(model) && h("span", { class: "badge warn" }, "smoke test"),
            model.description && h("small", {}, model.description),
          );
        });
        section.lastChild.replaceWith(items.length ? h("ul", { class: "models" }, items) : h("p", { class: "hint" }, "No models."));
      },
      (error) => section.lastChild.replaceWith(errorBox(error)),
    );
  }
}
