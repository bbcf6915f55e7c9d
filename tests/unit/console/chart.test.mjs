// Unit tests of the Training charts' data (servers/web/console/js/views/chart.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { chartData } from "../../../servers/web/console/js/views/chart.js";

const EPOCHS = [
  { epoch: 1, train_loss: 0.3, validation: { psnr: 20 }, baseline: { psnr: 18 } },
  { epoch: 2, train_loss: 0.2, validation: { psnr: 24 }, baseline: { psnr: 18 } },
  { epoch: 3, train_loss: 0.1, validation: {}, baseline: { psnr: 18 } },
];

test("one point per epoch and series; missing values are skipped", () => {
  const { lines } = chartData(EPOCHS, [
    ["restored", (e) => e.validation?.psnr],
    ["input", (e) => e.baseline?.psnr],
  ]);
  assert.deepEqual(lines, [
    ["restored", [[1, 20], [2, 24]]],
    ["input", [[1, 18], [2, 18], [3, 18]]],
  ]);
});

test("the scales map the bounds to the plot's edges, the lowest value at the bottom", () => {
  const { sx, sy, minY, maxY } = chartData(EPOCHS, [["loss", (e) => e.train_loss]]);
  assert.equal(minY, 0.1);
  assert.equal(maxY, 0.3);
  assert.ok(sx(1) < sx(2) && sx(2) < sx(3));
  assert.ok(sy(0.1) > sy(0.3)); // SVG's y grows downwards
  assert.equal(sx(1), 28);
  assert.equal(sy(0.3), 28);
});

test("no epochs yet, or one flat value, never divides by zero", () => {
  const empty = chartData([], [["loss", (e) => e.train_loss]]);
  assert.deepEqual(empty.lines, [["loss", []]]);
  const flat = chartData([{ epoch: 1, train_loss: 0.5 }], [["loss", (e) => e.train_loss]]);
  assert.ok(Number.isFinite(flat.sx(1)) && Number.isFinite(flat.sy(0.5)));
});
