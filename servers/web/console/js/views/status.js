// Status: whether each service answers through the gateway, and how fast.
import { SERVICES, call } from "../api.js";
import { h } from "../ui.js";

export const title = "Status";

export function render(container) {
  const rows = h("tbody");
  const refresh = h("button", { type: "button" }, "Check again");
  async function check() {
    refresh.disabled = true;
    const results = await Promise.all(
      Object.entries(SERVICES).map(async ([name, service]) => {
        const started = performance.now();
        // A read-only call every service answers: its models, or (the agent, which has none) its jobs.
        const path = name === "agent" ? `${service.jobs}?page_size=1` : `${service.root}/models`;
        try {
          await call("GET", path);
          return [name, "up", performance.now() - started, ""];
        } catch (error) {
          return [name, "down", performance.now() - started, error.message];
        }
      }),
    );
    rows.replaceChildren(
      ...results.map(([name, state, ms, message]) =>
        h(
          "tr",
          { "data-service": name, "data-state": state },
          h("td", {}, SERVICES[name].label),
          h("td", {}, h("span", { class: `badge ${state === "up" ? "ok" : "bad"}` }, state)),
          h("td", {}, `${ms.toFixed(0)} ms`),
          h("td", {}, message),
        ),
      ),
    );
    refresh.disabled = false;
  }
  refresh.addEventListener("click", check);
  check();
  container.append(
    h("h1", {}, "Status"),
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Service", "State", "Answer", ""].map((text) => h("th", { scope: "col" }, text)))), rows)),
    h("div", { class: "actions" }, refresh),
  );
}
