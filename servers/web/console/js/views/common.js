// What the generation views share: model pickers, schedulers, running one streamed job.
import { call, stream } from "../api.js";
import { JobPanel, errorBox, h, select } from "../ui.js";

export const SCHEDULERS = [
  ["", "model default"],
  ...[
    "EULER",
    "EULER_ANCESTRAL",
    "DPMPP_2M",
    "DPMPP_2M_KARRAS",
    "DPMPP_2M_SDE",
    "DPMPP_2M_SDE_KARRAS",
    "DPMPP_SDE",
    "DPMPP_SDE_KARRAS",
    "DDIM",
    "UNIPC",
    "LMS",
    "LMS_KARRAS",
    "PNDM",
    "HEUN",
    "DEIS",
  ].map((name) => [`SCHEDULER_${name}`, name.toLowerCase().replaceAll("_", " ").replace("dpmpp", "dpm++")]),
];

/**
 * A <select> of a service's models (ListModels) of one kind (labels.kind: Video lists its motion
 * adapters beside the image models), the default chosen; smoke-test models say so.
 */
export function modelPicker(root, name = "model", kind = (labels) => labels.kind !== "motion_adapter") {
  const picker = select(name, [["", "loading models…"]], "");
  call("GET", `${root}/models`).then(
    ({ models = [] }) => {
      picker.replaceChildren(
        ...models.filter((model) => kind(model.labels || {})).map((model) => {
          const badges = [model.is_default && "default", model.loaded && "loaded", smokeTest(model) && "smoke test"];
          const text = [model.name, ...badges.filter(Boolean)].join(" · ");
          return h("option", { value: model.name, selected: model.is_default }, text);
        }),
      );
      if (picker.dataset.want) picker.value = picker.dataset.want; // reused settings name a model
      if (picker.selectedIndex < 0) picker.selectedIndex = 0;
    },
    (error) => picker.replaceChildren(h("option", { value: "" }, `server default (${error.message})`)),
  );
  return picker;
}

export function smokeTest(model) {
  const labels = model.labels || {};
  return Object.entries(labels).some(([key, value]) => /smoke/i.test(key) || /smoke/i.test(value));
}

/** Optional numbers: empty inputs are left out so the server's defaults apply. */
export function numbers(form, names, parse = Number) {
  const out = {};
  for (const name of names) {
    const value = form.elements[name].value.trim();
    if (value !== "") out[name] = parse(value);
  }
  return out;
}

/**
 * Runs one streamed job: a JobPanel in `slot`, each event passed to `onEvent` too. Returns the
 * terminal event (result, error or cancelled), or undefined when the stream failed.
 */
export async function runJob(slot, path, body, { title, onEvent, submit } = {}) {
  const panel = new JobPanel({ title });
  slot.replaceChildren(panel.element);
  panel.element.scrollIntoView({ block: "nearest" }); // on a phone the panel is below the form
  if (submit) submit.disabled = true;
  let last;
  try {
    for await (const event of stream(path, body)) {
      panel.update(event);
      onEvent?.(event, panel);
      if (event.result || event.error || event.cancelled) last = event;
    }
    if (!last) panel.fail(new Error("the stream ended without a result"));
  } catch (error) {
    panel.fail(error);
    slot.append(errorBox(error));
  } finally {
    if (submit) submit.disabled = false;
  }
  return last;
}
