// What the generation views share: model pickers, schedulers, the sampling fields and request,
// the page that runs one streamed job beside its form.
import { call, stream } from "../api.js";
import { JobPanel, errorBox, field, h, number, select } from "../ui.js";
import { sourceFields } from "./imageinput.js";

export const SCHEDULERS = [
  ["", "default"], // short: it must fit the narrow grid cell
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

const MODEL_STATES = {
  MODEL_STATE_LOADED: ["loaded", "ok"],
  MODEL_STATE_LOADS_ON_FIRST_USE: ["loads on first use", ""],
  MODEL_STATE_NOT_DOWNLOADED: ["not downloaded", "warn"],
};

/** A model's state badge as [text, class]; null for a registry model (training), which has none. */
export function modelState(model) {
  if (MODEL_STATES[model.state]) return MODEL_STATES[model.state];
  if (model.model_id !== undefined && model.name === undefined) return null;
  return model.loaded ? MODEL_STATES.MODEL_STATE_LOADED : ["not loaded", ""]; // a server older than `state`
}

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
          const badges = [model.is_default && "default", modelState(model)?.[0], smokeTest(model) && "smoke test"];
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

/**
 * Steps, guidance, seed and scheduler: the sampling fields of every diffusion form. Sizes, steps and
 * frames start empty ("auto"): the server then picks the model's defaults, lighter on a CPU.
 */
export function samplingFields() {
  return [
    field("Steps", number("steps", "", { min: 1, max: 150, placeholder: "auto" })),
    field("Guidance", number("guidance_scale", 7.5, { min: 0, max: 30, step: 0.5 })),
    field("Seed", number("seed", "", { min: 0, placeholder: "random" })),
    field("Scheduler", select("scheduler", SCHEDULERS, "")),
  ];
}

/**
 * The request every diffusion form sends: its prompts and the `numeric` fields (empty ones left
 * out), scheduler and model when chosen, a preview every step, and the init image (with its
 * strength) when `init` has one.
 */
export function diffusionBody(form, numeric, init) {
  const elements = form.elements;
  const body = {
    prompt: elements.prompt.value,
    negative_prompt: elements.negative_prompt.value,
    ...numbers(form, numeric),
    preview_interval_steps: 1,
  };
  if (elements.scheduler.value) body.scheduler = elements.scheduler.value;
  if (elements.model.value) body.model = elements.model.value;
  const source = init.value();
  if (source) Object.assign(body, sourceFields(source, "init_image"), numbers(form, ["strength"]));
  return body;
}

/**
 * A generation page: `form` beside the live job and its result. Submitting (or Ctrl+Enter) posts
 * `request()` to `path` (nothing when it returns null) and shows the result with `show`.
 */
export function generationPage(container, { heading, form, path, jobTitle, request, show }) {
  const progress = h("div", { class: "slot" });
  const result = h("div", { class: "slot result", "aria-live": "polite" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = request();
    if (!body) return;
    result.replaceChildren();
    const last = await runJob(progress, path, body, { title: jobTitle, submit: form.querySelector("[type=submit]") });
    if (last?.result) result.replaceChildren(show(last.result));
  });
  submitOnCtrlEnter(form);
  container.append(h("h1", {}, heading), h("div", { class: "columns" }, form, h("div", {}, progress, result)));
}

export function submitOnCtrlEnter(form) {
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
}
