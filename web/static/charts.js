// Live line charts over uPlot (web/static/vendor, loaded by the page as a plain script).
// A chart is rebuilt when its set of series changes (an edge joins) and only fed new data otherwise.

const COLORS = ["#9147ff", "#00c853", "#ffb31a", "#1e90ff", "#ff4f4d", "#e005b9", "#5f9ea0", "#ff7f50"];
const AXIS = { stroke: "#adadb8", grid: { stroke: "#2f2f35", width: 1 }, ticks: { stroke: "#2f2f35" } };

export class LiveChart {
  constructor(element, { height = 180, axes = [] } = {}) {
    this.element = element;
    this.height = height;
    this.axisLabels = axes; // two labels: series on scale "out" get a right-hand axis
    this.names = null;
    this.plot = null;
  }

  options(series) {
    const scales = [...new Set(series.map((s) => s.scale || "y"))];
    const axes = [{ ...AXIS }];
    scales.forEach((scale, index) => {
      axes.push({ ...AXIS, scale, side: index ? 1 : 3, label: this.axisLabels[index] || "",
        size: 50, grid: index ? { show: false } : AXIS.grid });
    });
    return {
      width: Math.max(this.element.clientWidth, 200),
      height: this.height,
      cursor: { drag: { x: false, y: false } },
      scales: Object.fromEntries(scales.map((scale) => [scale, { auto: true, range: (u, min, max) => [0, Math.max(max, 1)] }])),
      axes,
      series: [{}, ...series.map((s, i) => ({
        label: s.label, scale: s.scale || "y", stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
        points: { show: false }, dash: s.dash,
      }))],
    };
  }

  update(xs, series) {
    const data = [xs, ...series.map((s) => s.values)];
    const names = series.map((s) => s.label).join("|");
    if (this.plot === null || names !== this.names) {
      this.plot?.destroy();
      this.element.replaceChildren();
      this.plot = new window.uPlot(this.options(series), data, this.element);
      this.names = names;
    } else {
      this.plot.setData(data);
    }
    // What the chart shows at its highest, per series: readable by people and by tests.
    this.element.dataset.peaks = JSON.stringify(Object.fromEntries(series.map((s) => [
      s.label, Math.max(0, ...s.values.filter((v) => v !== null && v !== undefined))])));
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(this.element.clientWidth, 200), height: this.height });
  }
}
