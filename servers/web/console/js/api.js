// Every call to the gateway: same origin, the user's key in x-api-key, errors as ApiError.
import { readEvents } from "./sse.js";

const KEY = "genmesh.apiKey";

/** The key for this tab (sessionStorage), else the one remembered on this device (localStorage). */
export function storedKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function saveKey(key, remember) {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** An error answered by the gateway or a service: HTTP status, gRPC code (number or name), message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Fired (on window) when the gateway refuses the key: the shell shows the key form. */
export const UNAUTHORIZED = "genmesh:unauthorized";

async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Envoy's own replies are JSON too; anything else keeps the status text.
  }
  const message = body.message || body.error?.message || `${response.status} ${response.statusText}`;
  const error = new ApiError(response.status, body.code ?? response.status, message);
  if (response.status === 401) window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: error }));
  return error;
}

async function send(method, path, body, signal, key) {
  const headers = { "x-api-key": key ?? storedKey() };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "UNAVAILABLE", `the gateway did not answer (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** A unary call: the JSON answer. `key` overrides the stored key (checking a new one). */
export async function call(method, path, body, { signal, key } = {}) {
  const response = await send(method, path, body, signal, key);
  return response.json();
}

/** A streaming call: yields each event (parsed JSON) as it arrives. */
export async function* stream(path, body, { signal } = {}) {
  const response = await send(body === undefined ? "GET" : "POST", path, body, signal);
  yield* readEvents(response.body);
}

/** The services, with their REST roots (genmesh's own API through the gateway). */
export const SERVICES = {
  text: { label: "Text", root: "/v1/text", prefixes: ["txt"], jobs: "/v1/text/jobs" },
  image: { label: "Image", root: "/v1/images", prefixes: ["img"], jobs: "/v1/images/jobs" },
  video: { label: "Video", root: "/v1/videos", prefixes: ["vid"], jobs: "/v1/videos/jobs" },
  agent: { label: "Agent", root: "/v1/agent", prefixes: ["agt"], jobs: "/v1/agent/jobs" },
  // Training's jobs and its tasks (synthetic data, restore, evaluate) answer under all-jobs.
  training: { label: "Training", root: "/v1/training", prefixes: ["trn", "tsk"], jobs: "/v1/training/all-jobs" },
};

/** The service a job id belongs to ("img-..." -> image), or undefined. */
export function serviceOfJob(jobId) {
  const prefix = jobId.split("-", 1)[0];
  return Object.keys(SERVICES).find((name) => SERVICES[name].prefixes.includes(prefix));
}

export function cancelJob(jobId) {
  const service = SERVICES[serviceOfJob(jobId)];
  if (!service) return Promise.reject(new ApiError(0, "INVALID_ARGUMENT", `unknown job id ${jobId}`));
  const path = jobId.startsWith("tsk-") ? service.jobs : `${service.root}/jobs`;
  return call("POST", `${path}/${jobId}:cancel`, {});
}
