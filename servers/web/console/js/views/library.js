// Library: the outputs, newest first, a page at a time (lazy thumbnails), filter by kind; each
// opens with its parameters, its files, delete (confirmed) and "reuse settings". A character is one
// output (its portrait the thumbnail, its animation in its detail); the sub-jobs that made its parts
// show only when asked, each naming its character.
import { call } from "../api.js";
import { age, enumText, errorBox, h, select } from "../ui.js";
import { offerReuse } from "./reuse.js";

export const title = "Library";
const PAGE_SIZE = 48;
const KINDS = [
  ["", "every kind"],
  ["OUTPUT_KIND_IMAGE", "images"],
  ["OUTPUT_KIND_VIDEO", "videos"],
  ["OUTPUT_KIND_CHARACTER", "characters"],
  ["OUTPUT_KIND_TEXT", "text"],
  ["OUTPUT_KIND_RESTORED_IMAGE", "restored images"],
];

export function render(container) {
  const kind = select("kind", KINDS, "");
  const subJobs = h("input", { type: "checkbox", name: "include_sub_jobs", id: "library-sub-jobs" });
  const grid = h("ul", { class: "library", "aria-label": "Outputs, newest first" });
  const status = h("p", { class: "hint", "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const detail = h("div", { class: "slot" });
  let token = "";
  let count = 0;
  let generation = 0;

  async function load(reset) {
    const mine = reset ? ++generation : generation;
    if (reset) {
      token = "";
      count = 0;
      grid.replaceChildren();
      detail.replaceChildren();
    }
    more.disabled = true;
    status.textContent = "Loading…";
    const query = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (token) query.set("page_token", token);
    if (kind.value) query.set("kind", kind.value);
    if (subJobs.checked) query.set("include_sub_jobs", "true");
    try {
      const page = await call("GET", `/v1/outputs?${query}`);
      if (mine !== generation) return;
      const outputs = page.outputs || [];
      count += outputs.length;
      grid.append(...outputs.map((output) => tile(output)));
      token = page.next_page_token || "";
      more.hidden = !token;
      status.textContent = count ? `${count} outputs${token ? " (more below)" : ""}` : "Nothing here yet.";
    } catch (error) {
      status.replaceChildren(errorBox(error));
    } finally {
      more.disabled = false;
    }
  }

  function tile(output) {
    const picture = output.thumbnail?.url
      ? h("img", { src: output.thumbnail.url, alt: "", loading: "lazy", decoding: "async" })
      : h("span", { class: "text-tile" }, enumText(output.kind, "OUTPUT_KIND_"));
    const button = h(
      "button",
      { type: "button", class: "tile", "aria-label": `${enumText(output.kind, "OUTPUT_KIND_")} ${output.job_id}` },
      picture,
      h("small", {}, `${enumText(output.kind, "OUTPUT_KIND_")}${output.parent_job_id ? " (sub-job)" : ""} · ${age(output.create_time)}`),
    );
    const item = h("li", { "data-job-id": output.job_id, "data-kind": output.kind, "data-parent": output.parent_job_id || "" }, button);
    button.addEventListener("click", () => open(output, item));
    return item;
  }

  function open(output, item) {
    const parameters = output.parameters || {};
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete every file of ${output.job_id}? This cannot be undone.`)) return;
      remove.disabled = true;
      try {
        await call("DELETE", `/v1/outputs/${output.job_id}`);
        item.remove();
        detail.replaceChildren(h("p", { class: "hint", role: "status" }, `Deleted ${output.job_id}.`));
      } catch (error) {
        detail.append(errorBox(error));
        remove.disabled = false;
      }
    });
    const reuse = offerReuse(output);
    const animation = output.kind === "OUTPUT_KIND_CHARACTER" ? animationOf(output.artifacts) : null;
    detail.replaceChildren(
      h(
        "section",
        { class: "panel output-detail", "aria-label": `Output ${output.job_id}`, "data-job-id": output.job_id },
        h("h2", {}, `${enumText(output.kind, "OUTPUT_KIND_")} · `, h("code", {}, output.job_id)),
        output.thumbnail?.url && h("img", { class: "result-image", src: output.thumbnail.url, alt: "the output" }),
        animation &&
          (animation.content_type?.startsWith("video/")
            ? h("video", { class: "result-image animation", src: animation.url, controls: true, loop: true, muted: true, "aria-label": "the animation" })
            : h("img", { class: "result-image animation", src: animation.url, alt: "the animation" })),
        h("p", { class: "hint" }, `${new Date(output.create_time).toLocaleString()} · ${output.method.split("/").pop()}`),
        output.parent_job_id && h("p", { class: "hint parent" }, "A sub-job of ", h("code", {}, output.parent_job_id), ": that job's output holds what it made."),
        h(
          "dl",
          { class: "parameters" },
          Object.entries(parameters)
            .map(([name, value]) => [name, parameterText(value)])
            .filter(([, text]) => text !== "")
            .map(([name, text]) => [h("dt", {}, name), h("dd", {}, text)]),
        ),
        h(
          "ul",
          { class: "files" },
          (output.artifacts || []).map((artifact) =>
            h("li", {}, h("a", { href: artifact.url, target: "_blank", rel: "noopener" }, fileName(artifact.key))),
          ),
        ),
        h("div", { class: "actions" }, reuse, remove),
      ),
    );
    detail.scrollIntoView({ block: "nearest" });
    detail.querySelector("h2").focus?.();
  }

  kind.addEventListener("change", () => load(true));
  subJobs.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));
  load(true);
  container.append(
    h("h1", {}, "Library"),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: (kind.id = "library-kind") }, "Show"),
      kind,
      h("label", { class: "check" }, subJobs, " sub-jobs too"),
      status,
    ),
    detail,
    grid,
    h("div", { class: "actions" }, more),
  );
}

/**
 * A parameter as people read it. The REST shape stays proto JSON (an int64 seed is the string "42",
 * to send back as it is): shown as text it reads as the number it is, nested ones included, where
 * JSON would quote it. Stored objects read as bucket/key; nested values as "name value" pairs;
 * empty values give "".
 */
export function parameterText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(parameterText).filter((text) => text !== "").join(", ");
  if (typeof value === "object") {
    if (typeof value.bucket === "string" && typeof value.key === "string") return `${value.bucket}/${value.key}`;
    return Object.entries(value)
      .map(([name, item]) => [name, parameterText(item)])
      .filter(([, text]) => text !== "")
      .map(([name, text]) => `${name} ${text}`)
      .join(" · ");
  }
  return String(value);
}

/** A character's animation among its files (video.gif, video.mp4, ...), or null. */
export function animationOf(artifacts = []) {
  return artifacts.find((artifact) => /\/video\.[a-z0-9]+$/.test(artifact.key)) || null;
}

/** A file's name within its job's folder ("image_0.png", "frames/0001.png"); the job's record
 * (jobs/<job_id>.json) is outside any folder and keeps its whole key. */
export function fileName(key) {
  const parts = key.split("/");
  return parts.length > 2 ? parts.slice(2).join("/") : key;
}
