/**
 * Inline SVG charts for the pipeline report: a line chart, a bar chart and a stacked
 * bar chart. Each is returned as one `<svg>` string with its axes, ticks and legend, so
 * the report needs no script, font or stylesheet from outside the file. Every drawn data
 * element carries the class `mark`, which the report test measures after layout.
 *
 * @module
 */

/** Width and height of every chart's view box, in SVG user units (CSS pixels at 100%). */
const WIDTH = 720;
const HEIGHT = 320;
/** Plot-area margins: room for tick labels and axis titles, and on the right for the legend. */
const MARGIN = { left: 64, right: 150, top: 16, bottom: 56 };
/** Extra height of a bar chart for its rotated category labels. */
const BAR_LABEL_HEIGHT = 36;

/** One line of a {@linkcode lineChart}. */
export interface LineSeries {
  /** Legend text. */
  name: string;
  /** Points in data units, drawn in the given order. */
  points: [number, number][];
  /** CSS color. */
  color: string;
  /** Draw a dashed line without point markers (reference lines). Default false. */
  dashed?: boolean;
}

/** Axis settings shared by the charts. */
export interface AxisOptions {
  /** Axis title. */
  label: string;
  /** Logarithmic scale (every value must be positive). Default false. */
  log?: boolean;
}

/** Options of {@linkcode lineChart}. */
export interface LineChartOptions {
  /** Element id of the `<svg>`. */
  id: string;
  /** Accessible title. */
  title: string;
  /** Horizontal axis. */
  x: AxisOptions;
  /** Vertical axis. */
  y: AxisOptions;
  /** Lines in legend order. */
  series: LineSeries[];
}

/**
 * Draws line series with point markers and a legend.
 *
 * @example
 * ```ts
 * import { lineChart } from "./svg_charts.ts";
 * const svg = lineChart({ id: "rd", title: "t", x: { label: "bpw" }, y: { label: "ppl", log: true },
 *   series: [{ name: "rtn", color: "#c00", points: [[2, 40], [3, 20]] }] });
 * if (!svg.startsWith("<svg") || !svg.includes("class=\"mark\"")) throw new Error();
 * ```
 * @param options Id, title, axes and series.
 */
export function lineChart(options: LineChartOptions): string {
  const all = options.series.flatMap((s) => s.points);
  const xScale = scale(
    all.map((p) => p[0]),
    options.x.log ?? false,
    MARGIN.left,
    WIDTH - MARGIN.right,
  );
  const yScale = scale(
    all.map((p) => p[1]),
    options.y.log ?? false,
    HEIGHT - MARGIN.bottom,
    MARGIN.top,
  );
  const parts: string[] = [axes(xScale, yScale, options.x.label, options.y.label)];
  for (const s of options.series) {
    if (s.points.length === 0) continue;
    const d = s.points.map(([x, y], i) =>
      `${i === 0 ? "M" : "L"}${fmt(xScale.map(x))},${fmt(yScale.map(y))}`
    ).join(" ");
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    parts.push(
      `<path class="mark" d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}><title>${
        esc(s.name)
      }</title></path>`,
    );
    if (!s.dashed) {
      for (const [x, y] of s.points) {
        parts.push(
          `<circle class="mark" cx="${fmt(xScale.map(x))}" cy="${
            fmt(yScale.map(y))
          }" r="4" fill="${s.color}"><title>${
            esc(`${s.name}: ${tick(x)}, ${tick(y)}`)
          }</title></circle>`,
        );
      }
    }
  }
  parts.push(legend(options.series.map((s) => ({ name: s.name, color: s.color }))));
  return svg(options.id, options.title, parts);
}

/** One bar of a {@linkcode barChart}. */
export interface Bar {
  /** Category label under the bar. */
  label: string;
  /** Height in data units. */
  value: number;
  /** CSS color. */
  color: string;
  /** Tooltip text. */
  title?: string;
}

/** Options of {@linkcode barChart}. */
export interface BarChartOptions {
  /** Element id of the `<svg>`. */
  id: string;
  /** Accessible title. */
  title: string;
  /** Title of the category axis. */
  xLabel: string;
  /** Value axis. */
  y: AxisOptions;
  /** Bars left to right. */
  bars: Bar[];
  /** Legend entries (for example one color per layer type). Default none. */
  legend?: { name: string; color: string }[];
}

/**
 * Draws one vertical bar per category.
 *
 * @param options Id, title, axis and bars.
 */
export function barChart(options: BarChartOptions): string {
  const values = options.bars.map((b) => b.value);
  const yScale = scale(values, options.y.log ?? false, HEIGHT - MARGIN.bottom, MARGIN.top);
  const n = options.bars.length;
  const step = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(1, n);
  const parts: string[] = [
    yAxis(yScale, options.y.label),
    xTitle(options.xLabel, HEIGHT + BAR_LABEL_HEIGHT - 6),
  ];
  const labelEvery = Math.max(1, Math.ceil(n / 40));
  options.bars.forEach((b, i) => {
    const x = MARGIN.left + i * step + step * 0.1;
    const top = yScale.map(b.value);
    const bottom = HEIGHT - MARGIN.bottom;
    const height = Math.max(1, bottom - top);
    parts.push(
      `<rect class="mark" x="${fmt(x)}" y="${fmt(bottom - height)}" width="${
        fmt(step * 0.8)
      }" height="${fmt(height)}" fill="${b.color}"><title>${
        esc(b.title ?? `${b.label}: ${tick(b.value)}`)
      }</title></rect>`,
    );
    if (i % labelEvery === 0) {
      const cx = x + step * 0.4;
      parts.push(
        `<text x="${fmt(cx)}" y="${
          bottom + 8
        }" font-size="9" text-anchor="end" transform="rotate(-60 ${fmt(cx)} ${bottom + 8})">${
          esc(b.label)
        }</text>`,
      );
    }
  });
  if (options.legend) parts.push(legend(options.legend));
  return svg(options.id, options.title, parts, HEIGHT + BAR_LABEL_HEIGHT);
}

/** One segment of a row of a {@linkcode stackedBarChart}. */
export interface Segment {
  /** Share of the row, any positive unit (segments are scaled to fill the row). */
  size: number;
  /** CSS color. */
  color: string;
  /** Text drawn inside the segment when it is wide enough. */
  text: string;
  /** CSS color of the text. Default white. */
  textColor?: string;
  /** Tooltip. */
  title: string;
}

/** Options of {@linkcode stackedBarChart}. */
export interface StackedBarChartOptions {
  /** Element id of the `<svg>`. */
  id: string;
  /** Accessible title. */
  title: string;
  /** Rows top to bottom. */
  rows: { label: string; segments: Segment[] }[];
  /** Title under the bars. */
  xLabel: string;
  /** Legend entries under the bars. Default none. */
  legend?: { name: string; color: string }[];
}

/**
 * Draws one horizontal bar per row, split into segments that fill its width.
 *
 * @param options Id, title and rows.
 */
export function stackedBarChart(options: StackedBarChartOptions): string {
  const rowHeight = 14;
  const left = 150;
  const right = WIDTH - 16;
  const height = MARGIN.top + options.rows.length * rowHeight + 48;
  const parts: string[] = [];
  options.rows.forEach((row, r) => {
    const y = MARGIN.top + r * rowHeight;
    parts.push(
      `<text x="${left - 6}" y="${y + rowHeight - 4}" font-size="10" text-anchor="end">${
        esc(row.label)
      }</text>`,
    );
    const total = row.segments.reduce((n, s) => n + s.size, 0);
    let x = left;
    for (const s of row.segments) {
      const w = total > 0 ? (s.size / total) * (right - left) : 0;
      parts.push(
        `<rect class="mark" x="${fmt(x)}" y="${y + 1}" width="${fmt(w)}" height="${
          rowHeight - 2
        }" fill="${s.color}" stroke="#fff" stroke-width="1"><title>${esc(s.title)}</title></rect>`,
      );
      if (w > 6 * s.text.length + 4) {
        parts.push(
          `<text x="${fmt(x + w / 2)}" y="${
            y + rowHeight - 4
          }" font-size="9" text-anchor="middle" fill="${s.textColor ?? "#fff"}">${
            esc(s.text)
          }</text>`,
        );
      }
      x += w;
    }
  });
  const bottom = MARGIN.top + options.rows.length * rowHeight;
  parts.push(
    `<text x="${(left + right) / 2}" y="${bottom + 16}" font-size="11" text-anchor="middle">${
      esc(options.xLabel)
    }</text>`,
  );
  if (options.legend) {
    options.legend.forEach((l, i) => {
      const x = left + i * 90;
      parts.push(
        `<rect x="${x}" y="${bottom + 26}" width="10" height="10" fill="${l.color}"/><text x="${
          x + 14
        }" y="${bottom + 35}" font-size="10">${esc(l.name)}</text>`,
      );
    });
  }
  return svg(options.id, options.title, parts, height);
}

/** A mapping from data units to pixels, with the ticks to label. */
interface Scale {
  map(value: number): number;
  ticks: number[];
  log: boolean;
}

function scale(values: number[], log: boolean, from: number, to: number): Scale {
  const finite = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  let lo = finite.length ? Math.min(...finite) : 0;
  let hi = finite.length ? Math.max(...finite) : 1;
  if (log) {
    if (!finite.length) [lo, hi] = [1, 10];
    const a = Math.floor(Math.log10(lo));
    const b = Math.ceil(Math.log10(hi));
    const e0 = a === b ? a - 1 : a;
    const e1 = a === b ? b + 1 : b;
    const ticks: number[] = [];
    const stride = Math.max(1, Math.ceil((e1 - e0) / 8));
    for (let e = e0; e <= e1; e += stride) ticks.push(10 ** e);
    const map = (v: number) =>
      from + ((Math.log10(Math.max(v, 10 ** e0)) - e0) / (e1 - e0)) * (to - from);
    return { map, ticks, log };
  }
  if (lo === hi) {
    [lo, hi] = [lo - Math.max(1, Math.abs(lo) * 0.1), hi + Math.max(1, Math.abs(hi) * 0.1)];
  }
  const span = hi - lo;
  const unit = 10 ** Math.floor(Math.log10(span / 5));
  const stepSize = [1, 2, 5, 10].map((m) => m * unit).find((s) => span / s <= 6) ?? 10 * unit;
  const start = Math.floor(lo / stepSize) * stepSize;
  const end = Math.ceil(hi / stepSize) * stepSize;
  const ticks: number[] = [];
  for (let t = start; t <= end + stepSize / 2; t += stepSize) ticks.push(Number(t.toPrecision(12)));
  const map = (v: number) => from + ((v - start) / (end - start)) * (to - from);
  return { map, ticks, log };
}

function axes(x: Scale, y: Scale, xLabel: string, yLabel: string): string {
  const bottom = HEIGHT - MARGIN.bottom;
  const parts = [
    yAxis(y, yLabel),
    xTitle(xLabel, HEIGHT - 6),
    `<line x1="${MARGIN.left}" y1="${bottom}" x2="${
      WIDTH - MARGIN.right
    }" y2="${bottom}" stroke="#444"/>`,
  ];
  for (const t of x.ticks) {
    const px = fmt(x.map(t));
    parts.push(
      `<line x1="${px}" y1="${bottom}" x2="${px}" y2="${
        bottom + 4
      }" stroke="#444"/><text x="${px}" y="${bottom + 16}" font-size="10" text-anchor="middle">${
        tick(t)
      }</text>`,
    );
  }
  return parts.join("");
}

function yAxis(y: Scale, label: string): string {
  const parts = [
    `<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${
      HEIGHT - MARGIN.bottom
    }" stroke="#444"/>`,
  ];
  for (const t of y.ticks) {
    const py = fmt(y.map(t));
    parts.push(
      `<line x1="${MARGIN.left}" y1="${py}" x2="${
        WIDTH - MARGIN.right
      }" y2="${py}" stroke="#e4e4e4"/><text x="${
        MARGIN.left - 6
      }" y="${py}" font-size="10" text-anchor="end" dominant-baseline="middle">${tick(t)}</text>`,
    );
  }
  const cy = (MARGIN.top + HEIGHT - MARGIN.bottom) / 2;
  parts.push(
    `<text x="14" y="${cy}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${cy})">${
      esc(label)
    }${y.log ? " (log)" : ""}</text>`,
  );
  return parts.join("");
}

function xTitle(label: string, y: number): string {
  return `<text x="${
    (MARGIN.left + WIDTH - MARGIN.right) / 2
  }" y="${y}" font-size="11" text-anchor="middle">${esc(label)}</text>`;
}

function legend(entries: { name: string; color: string }[]): string {
  return entries.map((e, i) => {
    const y = MARGIN.top + 6 + i * 16;
    const x = WIDTH - MARGIN.right + 12;
    return `<rect x="${x}" y="${y - 8}" width="12" height="10" fill="${e.color}"/><text x="${
      x + 18
    }" y="${y}" font-size="11">${esc(e.name)}</text>`;
  }).join("");
}

function svg(id: string, title: string, parts: string[], height = HEIGHT): string {
  return `<svg id="${
    esc(id)
  }" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="${
    esc(title)
  }" font-family="sans-serif"><title>${esc(title)}</title>${parts.join("")}</svg>`;
}

/** Formats a tick value compactly: 1e-3, 0.25, 12, 3.5k. */
function tick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
  return Number(v.toPrecision(3)).toString();
}

function fmt(v: number): string {
  return Number.isFinite(v) ? v.toFixed(1) : "0";
}

/**
 * Escapes text for HTML and SVG content and attribute values.
 *
 * @example
 * ```ts
 * import { esc } from "./svg_charts.ts";
 * if (esc(`a<b & "c"`) !== "a&lt;b &amp; &quot;c&quot;") throw new Error();
 * ```
 * @param text Raw text.
 */
export function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}
