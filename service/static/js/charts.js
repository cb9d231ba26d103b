// Line charts on uPlot (vendored, see ../vendor/uplot/VERSION.md) with a best-epoch marker.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { markRendered } from "./api.js";

const PALETTE = ["#2257a8", "#d1495b", "#2a9d8f", "#e09f3e", "#7b2cbf", "#5c6b73", "#8ab17d",
  "#c05299", "#3d5a80", "#9c6644", "#00a6a6", "#ef476f"];
export const colour = (index) => PALETTE[index % PALETTE.length];
export const fade = (hex, alpha) => hex + Math.round(alpha * 255).toString(16).padStart(2, "0");

// A dashed vertical line at `at()` (an x value), e.g. the best epoch.
function markerPlugin(at) {
  return {
    hooks: {
      draw: (u) => {
        const x = at();
        if (x == null) return;
        const left = u.valToPos(x, "x", true);
        const { ctx, bbox } = u;
        ctx.save();
        ctx.strokeStyle = "#1f7a3a";
        ctx.setLineDash([5, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(left, bbox.top);
        ctx.lineTo(left, bbox.top + bbox.height);
        ctx.stroke();
        ctx.fillStyle = "#1f7a3a";
        ctx.font = `${11 * devicePixelRatio}px system-ui`;
        ctx.fillText("best", left + 4, bbox.top + 12 * devicePixelRatio);
        ctx.restore();
      },
    },
  };
}

function options(container, spec) {
  const series = [{ label: spec.xLabel || "epoch" }, ...spec.series.map((s, i) => ({
    label: s.label,
    stroke: s.colour || colour(i),
    width: s.width ?? 1.6,
    dash: s.dash,
    fill: s.fill,
    spanGaps: true,
    points: { show: s.points ?? true, size: 5 },
  }))];
  // Epochs and stages are whole numbers: no ticks at 1.5.
  const xAxis = { label: spec.xLabel || "epoch", values: spec.xValues, incrs: [1, 2, 5, 10, 20, 50, 100] };
  if (spec.xSplits) xAxis.splits = spec.xSplits;
  return {
    width: Math.max(300, container.clientWidth - 8),
    height: spec.height || 220,
    series,
    bands: spec.bands,
    scales: { x: { time: false }, y: spec.yLog ? { distr: 3 } : {} },
    axes: [xAxis, { label: spec.yLabel, size: 60, values: spec.yValues }],
    legend: { live: true },
    plugins: spec.marker ? [markerPlugin(spec.marker)] : [],
    hooks: {
      draw: [(u) => {
        container.dataset.points = String(u.data[0].length);
        container.dataset.series = String(spec.series.length);
        if (u.data[0].length) markRendered();
      }],
    },
  };
}

// A chart bound to a container; update() redraws in place, or rebuilds when the series change.
export class LineChart {
  constructor(container, spec, data) {
    this.container = container;
    this.spec = spec;
    this.plot = new uPlot(options(container, spec), data, container);
    charts.add(this);
  }

  update(data, spec = this.spec) {
    const sameSeries = spec.series.length === this.spec.series.length &&
      spec.series.every((s, i) => s.label === this.spec.series[i].label);
    if (sameSeries) {
      this.spec = spec;
      this.plot.setData(data);
      return;
    }
    this.plot.destroy();
    this.spec = spec;
    this.plot = new uPlot(options(this.container, spec), data, this.container);
  }

  destroy() {
    this.plot.destroy();
    charts.delete(this);
  }
}

const charts = new Set();
let resizeTimer;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => charts.forEach((c) =>
    c.plot.setSize({ width: Math.max(300, c.container.clientWidth - 8), height: c.plot.height })), 150);
});

// Exponential moving average, as TensorBoard's smoothing slider does (0: none).
export function smooth(values, weight) {
  if (!weight) return values;
  let last = null;
  return values.map((v) => {
    if (v == null) return null;
    last = last == null ? v : last * weight + (1 - weight) * v;
    return last;
  });
}
