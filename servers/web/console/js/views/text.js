// Chat with a text model: streamed replies, model picker, optional JSON-schema output; stop.
import { cancelJob, stream } from "../api.js";
import { errorBox, field, h, number } from "../ui.js";
import { modelPicker, numbers } from "./common.js";

export const title = "Text";

export function render(container) {
  const messages = [];
  const log = h("ol", { class: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const input = h("textarea", { name: "content", rows: 3, required: true, placeholder: "Write a message (Ctrl+Enter sends)" });
  const schemaToggle = h("input", { type: "checkbox", name: "json" });
  const schema = h("textarea", {
    name: "schema",
    rows: 5,
    hidden: true,
    spellcheck: false,
    value: '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}',
  });
  schemaToggle.addEventListener("change", () => (schema.hidden = !schemaToggle.checked));
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", class: "danger", hidden: true }, "Stop");
  const clear = h("button", { type: "button", class: "quiet" }, "New chat");
  let jobId = "";
  stop.addEventListener("click", () => jobId && cancelJob(jobId).catch(() => {}));
  clear.addEventListener("click", () => {
    messages.length = 0;
    log.replaceChildren();
  });
  const form = h(
    "form",
    { class: "chat-form", "aria-label": "Chat" },
    field("Message", input),
    h(
      "div",
      { class: "grid two" },
      field("Model", modelPicker("/v1/text")),
      field("Max tokens", number("max_tokens", 256, { min: 1, max: 32768 })),
      field("Temperature", number("temperature", 0.7, { min: 0, max: 2, step: 0.1 })),
      field("Seed", number("seed", "", { min: 0, placeholder: "random" })),
    ),
    h("label", { class: "check" }, schemaToggle, " Answer as JSON matching a schema"),
    schema,
    h("div", { class: "actions" }, send, stop, clear),
  );
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    const body = { messages: [...messages, { role: "user", content }], sampling: numbers(form, ["max_tokens", "temperature", "seed"]) };
    if (form.elements.model.value) body.model = form.elements.model.value;
    if (schemaToggle.checked) {
      try {
        body.response_format = { type: "TYPE_JSON", json_schema: JSON.parse(schema.value) };
      } catch (error) {
        log.append(h("li", { class: "msg error" }, errorBox(new Error(`The schema is not valid JSON: ${error.message}`))));
        return;
      }
    }
    messages.push({ role: "user", content });
    log.append(h("li", { class: "msg user" }, h("span", { class: "who" }, "You"), h("p", {}, content)));
    input.value = "";
    const text = h("p", {}, "");
    const meta = h("small", { class: "meta" }, "waiting…");
    const reply = h("li", { class: "msg assistant", "data-state": "running" }, h("span", { class: "who" }, "Model"), text, meta);
    log.append(reply);
    send.disabled = true;
    stop.hidden = false;
    jobId = "";
    try {
      for await (const event of stream("/v1/text:chat", body)) {
        if (event.job_id) jobId = event.job_id;
        if (event.queued) meta.textContent = `queued: position ${event.queued.queue_position}`;
        if (event.started) meta.textContent = "writing…";
        if (event.delta) text.textContent += event.delta.text;
        if (event.result) {
          text.textContent = event.result.text;
          const timings = event.result.timings || {};
          meta.textContent = `${event.result.model} · ${event.result.usage?.completion_tokens ?? "?"} tokens · ${Number(timings.tokens_per_second || 0).toFixed(0)} tokens/s · ${jobId}`;
          messages.push({ role: "assistant", content: event.result.text });
          reply.dataset.state = "succeeded";
        }
        if (event.cancelled) {
          meta.textContent = "stopped";
          reply.dataset.state = "cancelled";
        }
        if (event.error) {
          meta.replaceChildren(errorBox(new Error(`${event.error.code}: ${event.error.message}`)));
          reply.dataset.state = "failed";
        }
      }
    } catch (error) {
      meta.replaceChildren(errorBox(error));
      reply.dataset.state = "failed";
    } finally {
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
  });
  container.append(h("h1", {}, "Chat"), log, form);
}
