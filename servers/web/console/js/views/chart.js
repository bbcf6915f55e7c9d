// A small SVG line chart: one point per epoch, one line per series (no library).
import { h } from "../ui.js";

const NS = "http://www.w3.org/2000/svg";
const W = 320;
const H = 160;
const PAD = 28;

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/**
 * The chart's data: per series its [epoch, value] points (epochs without a finite value are
 * skipped, e.g. a metric the server did not send), the bounds, and the pixel scales. A series may
 * bring its own epochs as a third element (two runs overlaid); else it reads `epochs`.
 */
export function chartData(epochs, series) {
  const own = series.map(([, , runEpochs]) => runEpochs || epochs);
  const lines = series.map(([name, value], index) => [name, own[index].map((epoch) => [epoch.epoch, value(epoch)]).filter(([, y]) => Number.isFinite(y))]);
  const ys = lines.flatMap(([, points]) => points.map(([, y]) => y));
  const xs = own.flat().map((epoch) => epoch.epoch);
  const [minY, maxY] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  const [minX, maxX] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  const sx = (x) => PAD + ((x - minX) / (maxX - minX || 1)) * (W - 2 * PAD);
  const sy = (y) => H - PAD - ((y - minY) / (maxY - minY || 1)) * (H - 2 * PAD);
  return { lines, xs, ys, minX, maxX, minY, maxY, sx, sy };
}

/** series: [[name, (epoch) => value, epochs?], ...]. */
export function lineChart(title, epochs, series) {
  const { lines, xs, ys, maxX, minY, maxY, sx, sy } = chartData(epochs, series);
  const plot = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} per epoch` },
    svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: "axis" }),
    svg("text", { x: 2, y: PAD - 8, class: "tick" }, ys.length ? maxY.toPrecision(4) : ""),
    svg("text", { x: 2, y: H - PAD + 4, class: "tick" }, ys.length ? minY.toPrecision(4) : ""),
    svg("text", { x: W - PAD, y: H - 6, class: "tick", "text-anchor": "end" }, xs.length ? `epoch ${maxX}` : "no epochs yet"),
  );
  lines.forEach(([name, points], index) => {
    const path = points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    plot.append(svg("path", { d: path, class: `series s${index}`, "data-series": name }));
    for (const [x, y] of points) plot.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3, class: `point s${index}` }, svg("title", {}, `${name}, epoch ${x}: ${y.toPrecision(4)}`)));
  });
  const legend = h("p", { class: "legend" }, lines.map(([name], index) => h("span", { class: `key s${index}` }, name)));
  return h("figure", { class: "chart", "data-title": title }, h("figcaption", {}, title), plot, legend);
}
