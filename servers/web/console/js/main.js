// The shell: the key form, the navigation and the views (hash routes: #/image, #/jobs, ...).
import { ApiError, UNAUTHORIZED, call, forgetKey, saveKey, storedKey } from "./api.js";
import { h } from "./ui.js";

const VIEWS = {
  image: () => import("./views/image.js"),
  video: () => import("./views/video.js"),
  text: () => import("./views/text.js"),
  character: () => import("./views/character.js"),
  jobs: () => import("./views/jobs.js"),
  library: () => import("./views/library.js"),
  training: () => import("./views/training.js"),
  models: () => import("./views/models.js"),
  status: () => import("./views/status.js"),
};

const main = document.getElementById("view");
const nav = document.getElementById("nav");
const changeKey = document.getElementById("change-key");
let cleanup = null;
let showing = 0; // bumps on every navigation, so a slow view never draws over a newer one

function clear() {
  if (cleanup) cleanup();
  cleanup = null;
  main.replaceChildren();
}

/** The key form: shown first, and again whenever the gateway refuses the key. */
function showKeyForm(message = "") {
  showing++;
  clear();
  nav.hidden = true;
  changeKey.hidden = true;
  const input = h("input", {
    type: "password",
    name: "key",
    id: "api-key",
    autocomplete: "off",
    spellcheck: false,
    required: true,
    placeholder: "the key genmesh up printed",
  });
  const remember = h("input", { type: "checkbox", name: "remember", id: "remember" });
  const note = h("p", { class: message ? "error" : "hint", role: message ? "alert" : undefined }, message);
  const submit = h("button", { type: "submit" }, "Open the console");
  const form = h(
    "form",
    { class: "key-form", id: "key-form", "aria-labelledby": "key-title" },
    h("h1", { id: "key-title" }, "genmesh console"),
    h("p", {}, "Paste an API key of this mesh. It is sent with every call (x-api-key) and kept for this tab only."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("label", { class: "check", for: "remember" }, remember, " Remember on this device"),
    submit,
    note,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    submit.disabled = true;
    note.className = "hint";
    note.removeAttribute("role");
    note.textContent = "Checking the key…";
    try {
      await checkKey(key);
      saveKey(key, remember.checked);
      if (!location.hash || location.hash === "#/") location.hash = "#/image";
      route();
    } catch (error) {
      note.className = "error";
      note.setAttribute("role", "alert");
      note.textContent = error.message;
      submit.disabled = false;
      input.focus();
    }
  });
  main.append(form);
  input.focus();
}

/** A call any key may make; the gateway answers 401 for a wrong one before any service is asked. */
async function checkKey(key) {
  try {
    await call("GET", "/v1/text/models", undefined, { key });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw new Error(refusedMessage(error));
    if (error instanceof ApiError && error.status >= 500) return; // the key passed; a service is down
    throw error;
  }
}

function refusedMessage(error) {
  return `The gateway refused this key (401: ${error.message}). Paste a valid key.`;
}

async function route() {
  if (!storedKey()) return showKeyForm();
  const name = location.hash.replace(/^#\/?/, "").split("/")[0] || "image";
  const load = VIEWS[name] || VIEWS.image;
  const token = ++showing;
  nav.hidden = false;
  changeKey.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear();
  const view = await load();
  if (token !== showing) return;
  document.title = `${view.title} · genmesh console`;
  const container = h("div", { class: `view view-${name}` });
  main.append(container);
  cleanup = view.render(container) || null;
}

window.addEventListener(UNAUTHORIZED, (event) => {
  forgetKey();
  showKeyForm(refusedMessage(event.detail));
});
window.addEventListener("hashchange", route);
changeKey.addEventListener("click", () => {
  forgetKey();
  showKeyForm();
});
route();
