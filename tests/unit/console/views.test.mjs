// Unit tests of the console views' own logic: prompt travel, input images, reused settings, the
// Status rows, the registry's two-run comparison and the overlaid chart data.
import assert from "node:assert/strict";
import { test } from "node:test";

import { chartData } from "../../../servers/web/console/js/views/chart.js";
import { base64Of, outputPicture, sourceFields } from "../../../servers/web/console/js/views/imageinput.js";
import { animationOf, fileName, parameterText } from "../../../servers/web/console/js/views/library.js";
import { comparisonSeries, signed, versionLabel } from "../../../servers/web/console/js/views/registry.js";
import { modelState } from "../../../servers/web/console/js/views/common.js";
import { reusedSource } from "../../../servers/web/console/js/views/reuse.js";
import { byteSize, statusRows } from "../../../servers/web/console/js/views/status.js";
import { MAX_ENTRIES, promptSchedule } from "../../../servers/web/console/js/views/travel.js";

test("prompt travel: filled rows become the schedule, empty rows are ignored", () => {
  const rows = [
    { frame: "0", prompt: " a sunny meadow " },
    { frame: "", prompt: "" },
    { frame: "7", prompt: "the meadow at night" },
  ];
  assert.deepEqual(promptSchedule(rows, 8), { schedule: { 0: "a sunny meadow", 7: "the meadow at night" } });
  assert.deepEqual(promptSchedule([], 8), { schedule: {} });
});

test("prompt travel: a frame outside the clip names the row, the field and the range", () => {
  const answer = promptSchedule([{ frame: "2", prompt: "a" }, { frame: "8", prompt: "b" }], 8);
  assert.equal(answer.row, 1);
  assert.equal(answer.field, "frame");
  assert.match(answer.error, /row 2: frame must be a whole number from 0 to 7 \(the clip has 8 frames\); got 8/);
  for (const frame of ["-1", "1.5", "x", ""]) {
    assert.equal(promptSchedule([{ frame, prompt: "b" }], 8).field, "frame", frame);
  }
  // Frames left to the server's default: only the lower bound is known here.
  assert.deepEqual(promptSchedule([{ frame: "40", prompt: "b" }], Number.NaN), { schedule: { 40: "b" } });
});

test("prompt travel: duplicates, empty prompts and too many rows are refused", () => {
  assert.match(promptSchedule([{ frame: "3", prompt: "a" }, { frame: "03", prompt: "b" }], 8).error, /frame 3 is already/);
  const empty = promptSchedule([{ frame: "3", prompt: "  " }], 8);
  assert.equal(empty.field, "prompt");
  assert.match(empty.error, /1 to 10000 characters/);
  const many = Array.from({ length: MAX_ENTRIES + 1 }, (_, i) => ({ frame: String(i), prompt: "p" }));
  const answer = promptSchedule(many, 64);
  assert.match(answer.error, /at most 16 prompt changes \(got 17\)/);
  assert.equal(answer.row, MAX_ENTRIES);
});

test("input images: bytes or a stored object, under the request's field names", () => {
  assert.equal(base64Of("data:image/png;base64,iVBORw0KGgo="), "iVBORw0KGgo=");
  assert.throws(() => base64Of("data:text/plain,hello"), /base64/);
  assert.deepEqual(sourceFields({ data: "AAAA" }, "init_image"), { init_image_data: "AAAA" });
  assert.deepEqual(sourceFields({ ref: { bucket: "outputs", key: "d/img-1/image_0.png" }, url: "u" }, "image"), {
    image_ref: { bucket: "outputs", key: "d/img-1/image_0.png" },
  });
  assert.deepEqual(sourceFields(null, "image"), {});
  const output = { job_id: "img-1", thumbnail: { bucket: "outputs", key: "d/img-1/image_0.png", url: "http://x/outputs/d" } };
  assert.deepEqual(outputPicture(output), { ref: { bucket: "outputs", key: "d/img-1/image_0.png" }, url: "http://x/outputs/d", label: "img-1" });
  assert.equal(outputPicture({ job_id: "txt-1" }), null); // text has no picture
});

test("reused settings: the job's input image, with its URL when it is one of the job's files", () => {
  const ref = { bucket: "outputs", key: "d/img-2/init.png" };
  const artifacts = [{ bucket: "outputs", key: "d/img-2/init.png", url: "http://x/init" }];
  assert.deepEqual(reusedSource(ref, artifacts), { ref, url: "http://x/init", label: "d/img-2/init.png (the job's input)" });
  assert.equal(reusedSource({ bucket: "outputs", key: "d/img-1/image_0.png" }, artifacts).url, "");
  assert.equal(reusedSource(undefined, artifacts), null); // txt2img
});

test("status rows: health, queue, running and memory; why a service has no numbers", () => {
  const rows = statusRows({
    services: [
      { service: "image", health: "SERVING", metrics: "ok", queue_depth: 2, running: 1, process_memory_bytes: 3 * 1024 ** 3,
        devices: [{ device: "cuda:0", allocated_bytes: 1536, peak_bytes: 5 * 1024 ** 2 }] },
      { service: "text", health: "SERVING", metrics: "ok", queue_depth: 0, running: 0, process_memory_bytes: 0, devices: [] },
      { service: "video", health: "no answer: UNAVAILABLE", metrics: "no answer from its /metrics (ConnectError)" },
    ],
  });
  assert.deepEqual(rows[0], { service: "image", state: "up", health: "SERVING", queue: "2", running: "1",
    device: "cuda:0: 1.5 KiB (peak 5.0 MiB)", memory: "3.0 GiB", note: "" });
  assert.equal(rows[1].device, "none in use (CPU)");
  assert.equal(rows[2].state, "down");
  assert.equal(rows[2].queue, "");
  assert.match(rows[2].note, /no answer/);
  assert.equal(byteSize(512), "512 B");
  assert.equal(byteSize(undefined), "");
});

test("comparing two runs: each metric overlays both runs, each with its own epochs", () => {
  const a = [{ epoch: 1, validation_loss: 0.3, validation: { psnr: 20, ssim: 0.5 } }, { epoch: 2, validation_loss: 0.2, validation: { psnr: 22, ssim: 0.6 } }];
  const b = [{ epoch: 1, validation_loss: 0.25, validation: { psnr: 21, ssim: 0.55 } }];
  const metrics = comparisonSeries([{ label: "v1", history: a }, { label: "v2", history: b }]);
  assert.deepEqual(metrics.map(([title]) => title), ["Validation loss", "PSNR (dB)", "SSIM"]);
  const [, psnr] = metrics[1];
  const { lines, minX, maxX, minY, maxY } = chartData([], psnr);
  assert.deepEqual(lines, [["v1", [[1, 20], [2, 22]]], ["v2", [[1, 21]]]]);
  assert.deepEqual([minX, maxX, minY, maxY], [1, 2, 20, 22]);
  assert.equal(versionLabel({ model_id: "layer_2-20261122_143518", version: 3 }), "layer_2-20261122_143518 (v3)");
  assert.equal(signed(0.4212), "+0.42");
  assert.equal(signed(-0.1, 3), "-0.100");
  assert.equal(signed(undefined), "");
});

test("library files: named within the job's folder; the job's record by its whole key", () => {
  assert.equal(fileName("20261207_0905/img-0-3f9c/image_0.png"), "image_0.png");
  assert.equal(fileName("20261207_0905/vid-0-3f9c/frames/0001.png"), "frames/0001.png");
  assert.equal(fileName("jobs/txt-0-3f9c.json"), "jobs/txt-0-3f9c.json");
});

test("library: a character's animation is found among its files, whatever its format", () => {
  const files = (...keys) => keys.map((key) => ({ key }));
  const folder = "20261207_0905/agt-0-1f";
  assert.equal(animationOf(files(`${folder}/character.json`, `${folder}/portrait.png`, `${folder}/video.gif`)).key, `${folder}/video.gif`);
  assert.equal(animationOf(files(`${folder}/video.mp4`)).key, `${folder}/video.mp4`);
  assert.equal(animationOf(files(`${folder}/portrait.png`, "jobs/agt-0-1f.json")), null); // stopped before the video stage
  assert.equal(animationOf(), null);
});

test("library: parameters read as values, an int64 seed as its number, nested ones too", () => {
  assert.equal(parameterText("42"), "42"); // proto JSON's int64: no quotes shown
  assert.equal(parameterText(7.5), "7.5");
  assert.equal(parameterText(""), "");
  assert.equal(parameterText(null), "");
  assert.equal(parameterText(["STAGE_TEXT", "STAGE_IMAGE"]), "STAGE_TEXT, STAGE_IMAGE");
  assert.equal(parameterText({ bucket: "outputs", key: "20261207_0905/img-0-1/image_0.png" }), "outputs/20261207_0905/img-0-1/image_0.png");
  assert.equal(parameterText({ max_tokens: 12, seed: "3", stop: [] }), "max_tokens 12 · seed 3");
  assert.equal(parameterText([{ name: "ink", weight: 0.8 }]), "name ink · weight 0.8");
  assert.equal(parameterText({ 0: "a meadow", 4: "the meadow at night" }), "0 a meadow · 4 the meadow at night");
});

test("models: one state per model, by the server's rule; a registry model has none", () => {
  assert.deepEqual(modelState({ name: "tiny-sd15", state: "MODEL_STATE_LOADS_ON_FIRST_USE", is_default: true }), ["loads on first use", ""]);
  assert.deepEqual(modelState({ name: "gemma", state: "MODEL_STATE_LOADED", loaded: true }), ["loaded", "ok"]);
  assert.deepEqual(modelState({ name: "pulled", state: "MODEL_STATE_NOT_DOWNLOADED" }), ["not downloaded", "warn"]);
  assert.deepEqual(modelState({ name: "old", loaded: false }), ["not loaded", ""]); // a server older than `state`
  assert.equal(modelState({ model_id: "layer_61/v1", version: 1 }), null);
});
