// Make a character (the agent): idea, style, seed, steps; three stage cards fill as stages finish.
import { field, h, number } from "../ui.js";
import { numbers, runJob, submitOnCtrlEnter } from "./common.js";
import { media } from "./video.js";

export const title = "Character";

const STAGES = [
  ["STAGE_TEXT", "Sheet", "the text model writes the character"],
  ["STAGE_IMAGE", "Portrait", "the image model draws it"],
  ["STAGE_VIDEO", "Animation", "the video model animates the portrait"],
];

export function render(container) {
  const form = h(
    "form",
    { class: "gen-form", "aria-label": "Make a character" },
    field("Idea", h("textarea", { name: "idea", rows: 3, required: true, placeholder: "a night elf ranger who guards a moonlit forest" })),
    field("Style", h("input", { name: "style", placeholder: "watercolor" })),
    h(
      "div",
      { class: "grid" },
      field("Seed", number("seed", "", { min: 0, placeholder: "random" })),
      field("Steps", number("steps", "", { min: 1, max: 150, placeholder: "auto" })),
      field("Portrait size", number("size", "", { min: 64, max: 1024, step: 8, placeholder: "auto" })),
      field("Frames", number("num_frames", "", { min: 1, max: 64, placeholder: "auto" })),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Make the character")),
  );
  const progress = h("div", { class: "slot" });
  const cards = new Map(
    STAGES.map(([stage, name, what]) => {
      const body = h("div", { class: "card-body" }, h("p", { class: "hint" }, what));
      const state = h("span", { class: "badge" }, "waiting");
      const card = h("article", { class: "stage-card", "data-stage": stage, "data-state": "waiting" }, h("header", {}, h("h3", {}, name), state), body);
      return [stage, { card, body, state }];
    }),
  );
  const set = (stage, kind, text) => {
    const entry = cards.get(stage);
    if (!entry) return;
    entry.card.dataset.state = kind;
    entry.state.textContent = text;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const elements = form.elements;
    const values = numbers(form, ["seed", "steps", "size", "num_frames"]);
    const body = { idea: elements.idea.value, style: elements.style.value };
    if (values.seed !== undefined) body.seed = values.seed;
    if (values.steps !== undefined) body.steps = values.steps;
    if (values.size !== undefined) body.image = { width: values.size, height: values.size };
    if (values.num_frames !== undefined) body.video = { num_frames: values.num_frames };
    for (const [stage, , what] of STAGES) {
      set(stage, "waiting", "waiting");
      cards.get(stage).body.replaceChildren(h("p", { class: "hint" }, what));
    }
    const last = await runJob(progress, "/v1/agent/character", body, {
      title: "Character job",
      submit: form.querySelector("[type=submit]"),
      onEvent(event, panel) {
        if (event.stage_started) set(event.stage_started.stage, "running", `running · ${event.stage_started.sub_job_id}`);
        if (event.stage_progress) panel.showPreview(event.stage_progress.sub_progress?.preview);
        if (event.stage_result) fill(event.stage_result);
      },
    });
    const done = last?.error?.completed_stages || last?.cancelled?.completed_stages || [];
    done.forEach(fill);
    if (last?.error?.stage) set(last.error.stage, "failed", "failed");
    if (last?.cancelled?.stage) set(last.cancelled.stage, "cancelled", "cancelled");
  });
  function fill(result) {
    const entry = cards.get(result.stage);
    if (!entry) return;
    set(result.stage, "done", `done in ${Number(result.seconds || 0).toFixed(1)} s`);
    if (result.sheet) entry.body.replaceChildren(sheetCard(result.sheet));
    else if (result.stage === "STAGE_IMAGE") entry.body.replaceChildren(h("img", { class: "result-image", src: result.artifact.url, alt: "portrait" }));
    else entry.body.replaceChildren(media(result.artifact, null, "animation"));
  }
  submitOnCtrlEnter(form);
  container.append(
    h("h1", {}, "Make a character"),
    h("div", { class: "columns" }, form, progress),
    h("div", { class: "cards" }, [...cards.values()].map((entry) => entry.card)),
  );
}

function sheetCard(sheet) {
  const row = (label, value) => value && [h("dt", {}, label), h("dd", {}, value)];
  return h(
    "div",
    { class: "sheet" },
    h("h4", {}, sheet.name || "(unnamed)"),
    h("dl", {}, row("Biography", sheet.biography), row("Personality", sheet.personality), row("Appearance", sheet.appearance_prompt), row("Motion", sheet.motion_prompt)),
  );
}
