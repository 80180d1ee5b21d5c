// A small bar chart drawn as SVG, no library: a value axis with its ticks on the left (an SVG of
// fixed width) beside the plot (an SVG that takes the rest). Columns are placed in percentages of the
// plot's width and heights in pixels, so the chart fills any page width while its text keeps its size
// (a viewBox would shrink the labels on a phone). Colours come from the stylesheet through class
// names: the Content-Security-Policy allows no style attributes, and needs none here.

const SVG = "http://www.w3.org/2000/svg";

const HEIGHT = 260; // pixels, labels included
const TOP = 28; // room for the value above the tallest bar, and the axis's name
const BOTTOM = 30; // room for the labels under the bars
const PLOT = HEIGHT - TOP - BOTTOM;
const AXIS = 40; // the value axis's width

function element(name, attributes = {}, text = "") {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

const pct = (value) => `${value.toFixed(3)}%`;

/** A round step (1, 2 or 5 times a power of ten) that cuts `top` into about four. */
function tickStep(top) {
  const rough = top / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough) ?? rough;
}

/**
 * An SVG bar chart, one bar per entry, with a value axis.
 * @param {object} chart
 * @param {string} chart.title   read by screen readers as the image's name, shown on hover
 * @param {{label: string, value: number|null, text: string}[]} chart.bars
 *        `text` is the value as written above the bar; a bar whose value is null is drawn as a dash
 * @param {{value: number, text: string}} [chart.line]  a dashed level across the chart (an average, an aim)
 * @param {string} chart.axis  the value axis's name, written above it ("years")
 * @param {number} [chart.max]  the top of the scale (else a round number above the tallest bar)
 * @returns {HTMLDivElement}
 */
export function barChart({ title, bars, line = null, axis = "", max = null }) {
  const highest = Math.max(line?.value ?? 0, ...bars.map((bar) => bar.value ?? 0)) || 1;
  const step = tickStep(max ?? highest);
  const top = max ?? Math.ceil(highest / step - 1e-9) * step;
  const y = (value) => TOP + PLOT - (value / top) * PLOT;

  const scale = element("svg", { class: "bar-chart chart-axis", width: AXIS, height: HEIGHT, "aria-hidden": "true" });
  scale.append(element("text", { class: "axis-name", x: 0, y: 12 }, axis));
  const svg = element("svg", { class: "bar-chart", width: "100%", height: HEIGHT, role: "img" });
  svg.append(element("title", {}, title));
  for (let tick = 0; tick <= top + 1e-9; tick += step) {
    const at = y(tick);
    scale.append(element("text", { class: "tick", x: AXIS - 6, y: at + 4, "text-anchor": "end" }, String(Math.round(tick * 10) / 10)));
    if (tick > 0) svg.append(element("line", { class: "grid", x1: "0%", x2: "100%", y1: at, y2: at }));
  }
  svg.append(element("line", { class: "axis", x1: "0%", x2: "100%", y1: y(0), y2: y(0) }));
  svg.append(element("line", { class: "axis", x1: 0.75, x2: 0.75, y1: TOP - 4, y2: y(0) }));
  if (line) {
    // Drawn before the bars, so it passes behind them; their values are outlined in the
    // stylesheet, so that the line never strikes one through.
    const at = y(line.value);
    const level = element("line", { class: "level", x1: "0%", x2: "100%", y1: at, y2: at, "data-level": line.value });
    level.append(element("title", {}, line.text));
    svg.append(level);
  }

  const column = 100 / Math.max(bars.length, 1);
  bars.forEach((bar, index) => {
    const middle = pct(column * (index + 0.5));
    const group = element("g", { class: "bar", "data-bar": bar.label });
    group.append(element("title", {}, `${bar.label}: ${bar.text}`));
    if (bar.value === null) {
      group.dataset.empty = "";
      group.append(element("text", { class: "value", x: middle, y: y(0) - 6, "text-anchor": "middle" }, "–"));
    } else {
      const height = Math.max(y(0) - y(bar.value), 1);
      group.append(
        element("rect", {
          x: pct(column * (index + 0.2)),
          y: y(0) - height,
          width: pct(column * 0.6),
          height,
          rx: 3,
          "data-value": bar.value,
        }),
      );
      group.append(element("text", { class: "value", x: middle, y: y(0) - height - 7, "text-anchor": "middle" }, bar.text));
    }
    group.append(element("text", { class: "label", x: middle, y: HEIGHT - 10, "text-anchor": "middle" }, bar.label));
    svg.append(group);
  });
  const box = document.createElement("div");
  box.className = "bar-chart-box";
  box.append(scale, svg);
  return box;
}
