// Jobs: one list across services (GET /v1/jobs, which merges every service's ListJobs newest
// first), refreshed live, with cancel on every queued or running job.
import { SERVICES, call, cancelJob } from "../api.js";
import { age, enumText, errorBox, h } from "../ui.js";

export const title = "Jobs";
const REFRESH_MS = 2000;
const PAGE_SIZE = 50;

/** The newest jobs of every service; services that did not answer are named, not fatal. */
export async function listJobs(signal) {
  const { jobs = [], unavailable = [] } = await call("GET", `/v1/jobs?page_size=${PAGE_SIZE}`, undefined, { signal });
  return {
    jobs: jobs.filter((job) => SERVICES[job.service]).map((job) => ({ service: job.service, ...job.status })),
    unavailable,
  };
}

export function render(container) {
  const status = h("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  const body = h("tbody");
  const problems = h("div");
  const table = h(
    "table",
    { class: "jobs" },
    h("caption", { class: "sr-only" }, "Jobs across services, newest first"),
    h("thead", {}, h("tr", {}, ["Job", "Service", "Method", "State", "Progress", "Created", ""].map((text) => h("th", { scope: "col" }, text)))),
    body,
  );
  let timer = 0;
  let stopped = false;
  const controller = new AbortController();
  async function refresh() {
    try {
      const { jobs, unavailable } = await listJobs(controller.signal);
      if (stopped) return;
      body.replaceChildren(...jobs.map(row));
      status.textContent = `${jobs.length} jobs · refreshed ${new Date().toLocaleTimeString()}`;
      problems.replaceChildren(
        ...unavailable.map((name) => errorBox(new Error(`${SERVICES[name]?.label || name}: not answering, its jobs are not listed`))),
      );
    } catch (error) {
      if (error.name === "AbortError") return;
      status.replaceChildren(errorBox(error));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  container.append(h("h1", {}, "Jobs"), status, problems, h("div", { class: "table-wrap" }, table));
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}

function row(job) {
  const state = enumText(job.state, "JOB_STATE_");
  const cancellable = state === "queued" || state === "running";
  const cancel = h("button", { type: "button", class: "danger small", "aria-label": `Cancel ${job.job_id}` }, "Cancel");
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await cancelJob(job.job_id);
      cancel.textContent = "Cancelled";
    } catch (error) {
      cancel.replaceWith(errorBox(error));
    }
  });
  let progress = "";
  if (state === "queued") progress = `position ${job.queue_position}`;
  else if (state === "running" && job.progress) progress = `${Math.round((job.progress.fraction || 0) * 100)} %`;
  else if (state === "failed") progress = job.error?.message || "";
  return h(
    "tr",
    { "data-job-id": job.job_id, "data-state": state },
    h("td", {}, h("code", {}, job.job_id)),
    h("td", {}, SERVICES[job.service].label),
    h("td", {}, (job.method || "").split("/").pop()),
    h("td", {}, h("span", { class: `badge state-${state}` }, state)),
    h("td", {}, progress),
    h("td", { title: job.create_time || "" }, age(job.create_time)),
    h("td", {}, cancellable ? cancel : ""),
  );
}
