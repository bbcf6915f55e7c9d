// Status: each service's health, queue depth, running jobs and memory (GET /v1/status, answered by
// the web front door from the services' health and their own metrics), refreshed live.
import { SERVICES, call } from "../api.js";
import { errorBox, h } from "../ui.js";

export const title = "Status";
const REFRESH_MS = 3000;

/** 1536 -> "1.5 KiB"; "" for a missing number. */
export function byteSize(value) {
  if (!Number.isFinite(value) || value < 0) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
}

/**
 * One row's text per service of a /v1/status answer: health ("up" only when SERVING), queue,
 * running, device memory (allocated of peak, per device; "CPU" without one), process memory.
 */
export function statusRows(body) {
  return (body.services || []).map((service) => {
    const numbers = service.metrics === "ok";
    const devices = (service.devices || []).map(
      (device) => `${device.device}: ${byteSize(device.allocated_bytes)} (peak ${byteSize(device.peak_bytes)})`,
    );
    return {
      service: service.service,
      state: service.health === "SERVING" ? "up" : "down",
      health: service.health,
      queue: numbers ? String(service.queue_depth) : "",
      running: numbers ? String(service.running) : "",
      device: numbers ? devices.join(", ") || "none in use (CPU)" : "",
      memory: numbers ? byteSize(service.process_memory_bytes) : "",
      note: numbers ? "" : service.metrics || "",
    };
  });
}

export function render(container) {
  const rows = h("tbody");
  const stamp = h("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  const problem = h("div");
  const refresh = h("button", { type: "button" }, "Check now");
  let timer = 0;
  let stopped = false;
  const controller = new AbortController();
  async function check() {
    clearTimeout(timer);
    refresh.disabled = true;
    const started = performance.now();
    try {
      const body = await call("GET", "/v1/status", undefined, { signal: controller.signal });
      if (stopped) return;
      rows.replaceChildren(...statusRows(body).map(row));
      stamp.textContent = `answered in ${(performance.now() - started).toFixed(0)} ms · refreshed ${new Date().toLocaleTimeString()}`;
      problem.replaceChildren();
    } catch (error) {
      if (error.name === "AbortError") return;
      problem.replaceChildren(errorBox(error));
    } finally {
      refresh.disabled = false;
    }
    if (!stopped) timer = setTimeout(check, REFRESH_MS);
  }
  refresh.addEventListener("click", check);
  check();
  const headings = ["Service", "Health", "Queued", "Running", "Device memory", "Process memory", ""];
  container.append(
    h("h1", {}, "Status"),
    stamp,
    problem,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "status" },
        h("caption", { class: "sr-only" }, "Each service's health, queue and memory"),
        h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
        rows,
      ),
    ),
    h("div", { class: "actions" }, refresh),
  );
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}

function row(item) {
  return h(
    "tr",
    { "data-service": item.service, "data-state": item.state, "data-queue": item.queue },
    h("th", { scope: "row" }, SERVICES[item.service]?.label || item.service),
    h("td", {}, h("span", { class: `badge ${item.state === "up" ? "ok" : "bad"}` }, item.state === "up" ? "up" : item.health)),
    h("td", { class: "queue", "data-label": "queued" }, item.queue),
    h("td", { class: "running", "data-label": "running" }, item.running),
    h("td", { class: "device", "data-label": "device" }, item.device),
    h("td", { class: "memory", "data-label": "process" }, item.memory),
    h("td", { class: "hint" }, item.note),
  );
}
