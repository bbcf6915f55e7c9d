// Prompt travel: frame -> prompt rows (GenerateVideoRequest.prompt_schedule), checked against the
// clip's frame count before the request goes out, with the same limits the server enforces.
import { h } from "../ui.js";

export const MAX_ENTRIES = 16;
export const MAX_PROMPT = 10000;

/**
 * rows: [{frame: "8", prompt: "night"}, ...] as typed. Returns {schedule: {"8": "night"}} (empty
 * rows are ignored), or {error, row, field} naming the first problem.
 */
export function promptSchedule(rows, numFrames) {
  const schedule = {};
  const filled = rows.map((row, index) => ({ ...row, index })).filter((row) => String(row.frame).trim() !== "" || row.prompt.trim() !== "");
  if (filled.length > MAX_ENTRIES) {
    return { error: `prompt travel: at most ${MAX_ENTRIES} prompt changes (got ${filled.length})`, row: filled[MAX_ENTRIES].index, field: "frame" };
  }
  // Frames left empty take the server's default: then only the server knows the upper bound.
  const known = Number.isInteger(numFrames) && numFrames > 0;
  const range = known ? `from 0 to ${numFrames - 1} (the clip has ${numFrames} frames)` : "from 0 up";
  for (const row of filled) {
    const text = String(row.frame).trim();
    const frame = Number(text);
    const where = `prompt travel row ${row.index + 1}`;
    if (!/^\d+$/.test(text) || (known && frame > numFrames - 1)) {
      return { error: `${where}: frame must be a whole number ${range}; got ${text || "nothing"}`, row: row.index, field: "frame" };
    }
    if (String(frame) in schedule) return { error: `${where}: frame ${frame} is already in the schedule`, row: row.index, field: "frame" };
    const prompt = row.prompt.trim();
    if (!prompt || prompt.length > MAX_PROMPT) {
      return { error: `${where}: the prompt must have 1 to ${MAX_PROMPT} characters (got ${prompt.length})`, row: row.index, field: "prompt" };
    }
    schedule[String(frame)] = prompt;
  }
  return { schedule };
}

/**
 * The editor: rows of (frame, prompt, remove), "Add a prompt change". value(numFrames) gives
 * promptSchedule's answer and marks the row at fault; set(schedule) fills it (reused settings).
 */
export function travelEditor() {
  const list = h("ol", { class: "travel-rows" });
  const message = h("p", { class: "error", role: "alert", hidden: true });
  const add = h("button", { type: "button", class: "small" }, "Add a prompt change");
  const element = h(
    "fieldset",
    { class: "travel" },
    h("legend", {}, "Prompt travel"),
    h("small", { class: "hint" }, "From a frame on, the clip moves towards another prompt (frame 0 is the prompt above unless named here)."),
    list,
    message,
    h("div", { class: "actions" }, add),
  );
  let count = 0;

  function addRow(frame = "", prompt = "") {
    const n = ++count;
    const frameInput = h("input", { type: "number", name: "travel_frame", min: 0, step: 1, value: frame, inputmode: "numeric", id: `travel-frame-${n}` });
    const promptInput = h("input", { type: "text", name: "travel_prompt", value: prompt, id: `travel-prompt-${n}` });
    const item = h(
      "li",
      { class: "travel-row" },
      h("label", { for: frameInput.id }, "From frame"),
      frameInput,
      h("label", { for: promptInput.id }, "to prompt"),
      promptInput,
    );
    const remove = h("button", { type: "button", class: "small danger", "aria-label": `Remove prompt change ${n}` }, "Remove");
    remove.addEventListener("click", () => {
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      clearError();
      (next?.querySelector("input") || add).focus();
    });
    item.append(remove);
    list.append(item);
    return frameInput;
  }

  function clearError() {
    message.hidden = true;
    for (const input of list.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  add.addEventListener("click", () => addRow().focus());
  list.addEventListener("input", clearError); // a corrected row is no longer marked

  function value(numFrames) {
    clearError();
    const items = [...list.children];
    const rows = items.map((item) => ({ frame: item.querySelector("[name=travel_frame]").value, prompt: item.querySelector("[name=travel_prompt]").value }));
    const answer = promptSchedule(rows, numFrames);
    if (answer.error) {
      message.textContent = answer.error;
      message.hidden = false;
      const input = items[answer.row]?.querySelector(`[name=travel_${answer.field}]`);
      input?.setAttribute("aria-invalid", "true");
      input?.focus();
    }
    return answer;
  }

  function set(schedule) {
    list.replaceChildren();
    for (const [frame, prompt] of Object.entries(schedule || {}).sort(([a], [b]) => Number(a) - Number(b))) addRow(frame, prompt);
  }

  return { element, value, set };
}
