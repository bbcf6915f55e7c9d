// An input image (img2img and image-to-video init, the image to restore): uploaded, dropped on the
// field, or picked from the Library; shown as a thumbnail with a Clear button. The request carries
// it as bytes (base64 in JSON) or as a reference to the stored object.
import { call } from "../api.js";
import { errorBox, h } from "../ui.js";

const PICK_PAGE = 24;

/** "data:image/png;base64,AAAA" -> "AAAA". */
export function base64Of(dataUrl) {
  const comma = dataUrl.indexOf(",");
  if (!dataUrl.startsWith("data:") || comma < 0 || !dataUrl.slice(0, comma).endsWith(";base64")) {
    throw new Error("not a base64 data URL");
  }
  return dataUrl.slice(comma + 1);
}

/**
 * The request fields for a chosen source: {[`${prefix}_data`]: base64} or {[`${prefix}_ref`]:
 * {bucket, key}}; {} when none. prefix: "init_image" (image, video) or "image" (restore).
 */
export function sourceFields(source, prefix) {
  if (source?.data) return { [`${prefix}_data`]: source.data };
  if (source?.ref?.bucket && source.ref.key) return { [`${prefix}_ref`]: { bucket: source.ref.bucket, key: source.ref.key } };
  return {};
}

/** The strength field shows (and is checked by the form) only while there is an input image. */
export function showStrength(strengthField, source) {
  strengthField.hidden = !source;
  strengthField.querySelector("input").disabled = !source;
}

/** The stored picture of a Library output to start from (its first image, poster or restored image). */
export function outputPicture(output) {
  const picture = output.thumbnail;
  return picture?.bucket && picture.key ? { ref: { bucket: picture.bucket, key: picture.key }, url: picture.url, label: output.job_id } : null;
}

/**
 * The field. `label`: its visible name; `kinds`: the Library kinds offered. `onChange(source)` is
 * called when the image is set or cleared. Returns {element, value(), set(source)}.
 */
export function imageInput({ label, name, kinds = ["OUTPUT_KIND_IMAGE", "OUTPUT_KIND_RESTORED_IMAGE"], onChange } = {}) {
  let source = null;
  // The native input is hidden behind its label (one tab stop; Enter or Space opens the chooser).
  const file = h("input", { type: "file", accept: "image/*", name: `${name}_file`, class: "sr-only", tabindex: "-1" });
  const fileId = (file.id = `${name}-file`);
  const thumb = h("img", { class: "input-thumb", alt: `${label}: the chosen image`, hidden: true });
  const caption = h("small", { class: "hint" }, "None: drop an image here, upload one or pick one from the Library.");
  const clear = h("button", { type: "button", class: "small", hidden: true }, "Clear");
  const pickButton = h("button", { type: "button", class: "small", "aria-expanded": "false" }, "Pick from the Library");
  const picker = h("div", { class: "picker", hidden: true });
  const zone = h(
    "div",
    { class: "drop-zone", "data-input": name, "data-source": "none" },
    thumb,
    caption,
    h(
      "div",
      { class: "actions" },
      h("label", { for: fileId, class: "button small", tabindex: "0", role: "button" }, "Upload…"),
      file,
      pickButton,
      clear,
    ),
  );
  const element = h("fieldset", { class: "image-input" }, h("legend", {}, label), zone, picker);

  function set(next) {
    if (source?.objectUrl) URL.revokeObjectURL(source.objectUrl);
    source = next;
    zone.dataset.source = !next ? "none" : next.data ? "upload" : "library";
    zone.dataset.key = next?.ref?.key || "";
    thumb.hidden = !next?.url;
    if (next?.url) thumb.src = next.url;
    else thumb.removeAttribute("src");
    caption.textContent = next ? next.label : "None: drop an image here, upload one or pick one from the Library.";
    clear.hidden = !next;
    onChange?.(next);
  }

  function readFile(chosen) {
    if (!chosen) return;
    if (!chosen.type.startsWith("image/")) {
      caption.replaceChildren(errorBox(new Error(`${chosen.name} is not an image (${chosen.type || "unknown type"})`)));
      return;
    }
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const objectUrl = URL.createObjectURL(chosen);
      set({ data: base64Of(reader.result), url: objectUrl, objectUrl, label: `${chosen.name} (${Math.round(chosen.size / 1024)} KiB, uploaded)` });
    });
    reader.readAsDataURL(chosen);
  }

  file.addEventListener("change", () => readFile(file.files[0]));
  zone.querySelector("label").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      file.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    readFile(event.dataTransfer?.files?.[0]);
  });
  clear.addEventListener("click", () => {
    file.value = "";
    set(null);
  });
  pickButton.addEventListener("click", () => {
    const open = picker.hidden;
    picker.hidden = !open;
    pickButton.setAttribute("aria-expanded", String(open));
    if (open) loadPicker();
  });

  /** The newest Library pictures of the kinds offered, as buttons; choosing one sets the source. */
  async function loadPicker() {
    picker.replaceChildren(h("p", { class: "hint" }, "Loading the Library…"));
    try {
      const pages = await Promise.all(
        kinds.map((kind) => call("GET", `/v1/outputs?${new URLSearchParams({ page_size: String(PICK_PAGE), kind })}`)),
      );
      const outputs = pages.flatMap((page) => page.outputs || []).sort((a, b) => Date.parse(b.create_time) - Date.parse(a.create_time));
      const choices = outputs.map(outputPicture).filter(Boolean).slice(0, PICK_PAGE);
      if (!choices.length) {
        picker.replaceChildren(h("p", { class: "hint" }, "No images in the Library yet."));
        return;
      }
      picker.replaceChildren(
        h(
          "ul",
          { class: "library small", "aria-label": `Library images for ${label}` },
          choices.map((choice) =>
            h(
              "li",
              { "data-job-id": choice.label },
              h(
                "button",
                {
                  type: "button",
                  class: "tile",
                  "aria-label": `Use ${choice.label}`,
                  onclick: () => {
                    set(choice);
                    picker.hidden = true;
                    pickButton.setAttribute("aria-expanded", "false");
                    pickButton.focus();
                  },
                },
                h("img", { src: choice.url, alt: "", loading: "lazy", decoding: "async" }),
                h("small", {}, choice.label),
              ),
            ),
          ),
        ),
      );
      picker.querySelector("button")?.focus();
    } catch (error) {
      picker.replaceChildren(errorBox(error));
    }
  }

  return { element, value: () => source, set };
}
