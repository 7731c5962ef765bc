/**
 * The pipeline report (DIR/report.html): one self-contained HTML file with inline SVG
 * charts (per-layer and per-channel sensitivity, bits per channel group, perplexity
 * against bits per weight) and the results, settings, inputs and step tables. It loads
 * nothing from outside the file and runs no script.
 *
 * @module
 */
import { CORPUS_DATA } from "../data/corpus.ts";
import { join } from "node:path";
import { readPlan } from "../allocate/plan_io.ts";
import type { Plan, PlanLayer } from "../allocate/plan.ts";
import { writeTextFileAtomic } from "../util/atomic_write.ts";
import type { FileFingerprint } from "../pipeline/file_hash.ts";
import type { Manifest } from "../pipeline/manifest.ts";
import { formatBytes, formatValue, type ResultRow } from "../pipeline/summary.ts";
import { barChart, esc, lineChart, type LineSeries, stackedBarChart } from "./svg_charts.ts";

/** File name of the report inside the output folder. */
export const REPORT_FILE = "report.html";

/** WCSG plan of one bit width. */
export interface ReportPlan {
  /** Requested bits per weight. */
  bits: number;
  /** The plan written by the allocate step. */
  plan: Plan;
}

/** Everything the report shows. */
export interface ReportData {
  /** The pipeline manifest (results, settings, inputs, steps). */
  manifest: Manifest;
  /** WCSG plans of the main method by bit width, ascending; empty when it uses none. */
  plans: ReportPlan[];
}

/** Colors of the methods, in the order QUANT_METHODS lists them, then the original model. */
const METHOD_COLORS: Record<string, string> = {
  rtn: "#d62728",
  gptq: "#ff7f0e",
  kmeans: "#8c564b",
  vptq: "#1f77b4",
  rsavq: "#2ca02c",
  original: "#555555",
};

/** Colors of the linear-layer types of a Llama block. */
const LAYER_COLORS: Record<string, string> = {
  q_proj: "#1f77b4",
  k_proj: "#aec7e8",
  v_proj: "#17becf",
  o_proj: "#9467bd",
  gate_proj: "#ff7f0e",
  up_proj: "#ffbb78",
  down_proj: "#d62728",
};

/** Most layers drawn in the per-channel sensitivity chart. */
const MAX_CHANNEL_CURVES = 4;

/**
 * Reads the plans named in the manifest and writes DIR/report.html.
 *
 * @param dir Output folder of the pipeline.
 * @param manifest The manifest just written.
 * @returns Path of the report.
 */
export async function writeReport(dir: string, manifest: Manifest): Promise<string> {
  const plans: ReportData["plans"] = [];
  for (const bits of manifest.settings.bits) {
    if (!manifest.steps[`allocate-${bits}`]) continue;
    plans.push({ bits, plan: await readPlan(join(dir, `plan-${bits}.json`)) });
  }
  const path = join(dir, REPORT_FILE);
  await writeTextFileAtomic(path, buildReportHtml({ manifest, plans }));
  return path;
}

/**
 * Builds the report as one HTML document.
 *
 * @param data Manifest and plans.
 */
export function buildReportHtml(data: ReportData): string {
  const m = data.manifest;
  const s = m.settings;
  const sections: string[] = [];
  sections.push(`<h1>Quantization report: ${esc(s.model)}</h1>`);
  sections.push(
    `<p>Main method <b>${esc(s.method)}</b>${
      s.compare.length ? `, compared with ${esc(s.compare.join(", "))}` : ""
    }, at ${esc(s.bits.join(", "))} bits per weight. ` +
      `Bits per weight (bpw) count every stored byte of the quantized linear layers: indices, codebooks, scales and channel permutations. ` +
      `<b>The token embeddings, the norms and the output head are not quantized: they are stored in 16 bits (F16) and are not counted in bpw</b>, ` +
      `but they are part of the file size.</p>`,
  );
  sections.push(`<p>${esc(dataDescription(m))}</p>`);

  sections.push(`<h2>Results</h2>`, resultsTable(m.results));
  sections.push(`<h2>Perplexity against bits per weight</h2>`, rateDistortionChart(m));

  if (data.plans.length > 0) {
    const layers = Object.entries(data.plans[0].plan.layers);
    sections.push(
      `<h2>Sensitivity per layer</h2>`,
      `<p>Sum over output channels of the channel sensitivity I_c (${
        esc(data.plans[0].plan.sensitivity ?? "trace")
      } formula, ` +
        `${
          esc(data.plans[0].plan.fisher ?? "kfac")
        } Fisher diagonal) from the calibration statistics.</p>`,
      layerSensitivityChart(layers),
      `<h2>Sensitivity per channel</h2>`,
      `<p>Channel sensitivities of each layer sorted from most to least sensitive, for the most, median and least sensitive layers.</p>`,
      channelSensitivityChart(layers),
    );
    const allRates = data.plans.flatMap(({ plan }) => [...planRates(plan)]);
    const lo = Math.min(...allRates);
    const hi = Math.max(...allRates);
    for (const { bits, plan } of data.plans) {
      sections.push(
        `<h2>Bits per channel group at ${bits} bits (plan bpw ${plan.bpw.toFixed(4)})</h2>`,
        `<p>Each bar is one layer; its segments are the channel groups in order of decreasing sensitivity, as wide as their share of the channels. ` +
          `The number is the index rate log2(K)/v in bits per weight; scales, permutation and codebook storage come on top.</p>`,
        groupBitsChart(`group-bits-${bits}`, plan, lo, hi),
      );
    }
  } else {
    sections.push(
      `<p>No sensitivity or group charts: the main method ${
        esc(s.method)
      } does not follow an allocation plan.</p>`,
    );
  }

  sections.push(`<h2>Steps</h2>`, stepsTable(m));
  sections.push(`<h2>Inputs</h2>`, inputsTable(m));
  sections.push(
    `<h2>Settings and versions</h2>`,
    `<pre>${esc(JSON.stringify({ settings: s, tool: m.tool }, null, 2))}</pre>`,
  );
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(`Quantization report: ${s.model}`)}</title>
<style>
body { font-family: sans-serif; margin: 24px auto; max-width: 980px; color: #222; line-height: 1.4; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
td.text { white-space: normal; overflow-wrap: anywhere; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
code { font-size: 12px; }
</style>
</head>
<body>
${sections.join("\n")}
</body>
</html>
`;
}

function dataDescription(m: Manifest): string {
  const calib = m.steps["calibrate"]?.result as {
    data?: string;
    sequences?: number;
    tokens?: number;
  } | undefined;
  const evalSteps = Object.entries(m.steps).filter(([name]) => name.startsWith("eval-"));
  const evalResult = evalSteps[0]?.[1].result as
    | { tokens?: number; windows?: number; ctx?: number }
    | undefined;
  const parts: string[] = [];
  const corpus = (part: string) =>
    `chunks of the ${part} part of the npm corpus (Moby Dick and the State of the Union addresses)`;
  if (m.settings.calibData.length === 0) {
    parts.push(`Calibration: tokens sampled from the original model with seed ${m.settings.seed}.`);
  } else if (m.settings.calibData[0] === CORPUS_DATA) {
    parts.push(`Calibration: ${corpus("training")}, seed ${m.settings.seed}.`);
  } else parts.push(`Calibration: ${m.settings.calibData.join(", ")}.`);
  if (calib?.sequences) parts.push(`${calib.sequences} sequences of ${m.settings.seqLen} tokens.`);
  if (m.settings.evalData.length === 0) {
    parts.push(
      `Evaluation: a separate stream sampled from the original model with seed ${
        m.settings.seed + 1
      }, checked to share no window with the calibration data.`,
    );
  } else if (m.settings.evalData[0] === CORPUS_DATA) {
    parts.push(`Evaluation: ${corpus("held-out")}, seed ${m.settings.seed + 1}.`);
  } else parts.push(`Evaluation: ${m.settings.evalData.join(", ")}.`);
  if (evalResult?.windows) {
    parts.push(
      `${evalResult.windows} windows of up to ${evalResult.ctx} tokens, ${evalResult.tokens} scored tokens; KL divergence and top-1 agreement are measured against the original model on the same tokens.`,
    );
  }
  return parts.join(" ");
}

function resultsTable(rows: ResultRow[]): string {
  const zeroShot = rows.some((r) => r.zeroShotAcc !== undefined);
  const percent = (v: number | undefined) => (v === undefined ? "-" : `${(100 * v).toFixed(2)}%`);
  const head =
    `<tr><th>method</th><th>bits</th><th>bpw</th><th>perplexity</th><th>KL div. mean</th><th>KL div. p99</th><th>top-1 agreement</th>` +
    `${
      zeroShot ? "<th>0-shot acc</th><th>acc_norm</th>" : ""
    }<th>file size</th><th>quantize time</th><th>file</th></tr>`;
  const body = rows.map((r) =>
    `<tr><td>${esc(r.method)}</td><td>${r.bits ?? "-"}</td><td>${
      r.bpw === null ? "-" : r.bpw.toFixed(4)
    }</td>` +
    `<td>${formatValue(r.ppl)} ± ${formatValue(r.pplStderr)}</td><td>${
      r.kldMean.toFixed(4)
    }</td><td>${r.kldP99.toFixed(4)}</td>` +
    `<td>${(100 * r.top1).toFixed(2)}%</td>${
      zeroShot ? `<td>${percent(r.zeroShotAcc)}</td><td>${percent(r.zeroShotAccNorm)}</td>` : ""
    }` +
    `<td>${esc(formatBytes(r.fileBytes))}</td>` +
    `<td>${
      r.quantizeSeconds === null ? "-" : `${r.quantizeSeconds.toFixed(1)} s`
    }</td><td class="text"><code>${esc(r.file)}</code></td></tr>`
  ).join("");
  return `<table id="results">${head}${body}</table>`;
}

function rateDistortionChart(m: Manifest): string {
  const quantized = m.results.filter((r) => r.bpw !== null);
  const methods = [...new Set(quantized.map((r) => r.method))];
  const series: LineSeries[] = methods.map((method) => ({
    name: method,
    color: METHOD_COLORS[method] ?? "#333",
    points: quantized.filter((r) => r.method === method).map((r) =>
      [r.bpw!, r.ppl] as [number, number]
    ).sort((a, b) => a[0] - b[0]),
  }));
  const original = m.results.find((r) => r.method === "original");
  if (original && quantized.length > 0) {
    const xs = quantized.map((r) => r.bpw!);
    let lo = Math.min(...xs), hi = Math.max(...xs);
    if (hi - lo < 0.5) [lo, hi] = [lo - 0.25, hi + 0.25];
    series.push({
      name: `original (${original.ppl.toPrecision(4)})`,
      color: METHOD_COLORS.original,
      dashed: true,
      points: [[lo, original.ppl], [hi, original.ppl]],
    });
  }
  const note = m.settings.bits.length > 1
    ? ""
    : `<p>Only one bit width was run, so each method is a single point; pass several, for example --bits 2,3,4, for curves.</p>`;
  return note + lineChart({
    id: "rate-distortion",
    title: "Perplexity against stored bits per weight, per method",
    x: { label: "bits per weight (quantized layers, overhead included)" },
    y: { label: "perplexity", log: true },
    series,
  });
}

function layerSensitivityChart(layers: [string, PlanLayer][]): string {
  const bars = layers.map(([name, layer]) => {
    const total = layer.sensitivity.reduce((a, b) => a + b, 0);
    return {
      label: shortName(name),
      value: total,
      color: LAYER_COLORS[layerType(name)] ?? "#777",
      title: `${name}: ${total.toExponential(3)}`,
    };
  });
  const types = [...new Set(layers.map(([name]) => layerType(name)))];
  return barChart({
    id: "layer-sensitivity",
    title: "Sensitivity per layer",
    xLabel: "layer (block.projection)",
    y: { label: "sum of channel sensitivity I_c", log: true },
    bars,
    legend: types.map((t) => ({ name: t, color: LAYER_COLORS[t] ?? "#777" })),
  });
}

function channelSensitivityChart(layers: [string, PlanLayer][]): string {
  const byTotal = layers
    .map(([name, layer]) => ({ name, layer, total: layer.sensitivity.reduce((a, b) => a + b, 0) }))
    .sort((a, b) => b.total - a.total);
  const picks = [0, 1, Math.floor(byTotal.length / 2), byTotal.length - 1]
    .filter((i, k, all) => i < byTotal.length && all.indexOf(i) === k)
    .slice(0, MAX_CHANNEL_CURVES)
    .map((i) => byTotal[i]);
  const palette = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"];
  const series: LineSeries[] = picks.map((p, i) => {
    const sorted = [...p.layer.sensitivity].sort((a, b) => b - a);
    const floor = Math.min(...sorted.filter((v) => v > 0), Infinity);
    const m = sorted.length;
    return {
      name: shortName(p.name),
      color: palette[i % palette.length],
      points: sorted.map((v, r) =>
        [m > 1 ? r / (m - 1) : 0, v > 0 ? v : floor] as [number, number]
      ),
    };
  });
  return lineChart({
    id: "channel-sensitivity",
    title: "Sorted channel sensitivity of selected layers",
    x: { label: "channel rank (0 = most sensitive, 1 = least)" },
    y: { label: "channel sensitivity I_c", log: true },
    series: series.map((s) => ({ ...s, points: thin(s.points, 256) })),
  }).replace(/<circle [^>]*>.*?<\/circle>/g, "");
}

/** Index rates log2(K)/v of every group of a plan, in bits per weight. */
function planRates(plan: Plan): Set<number> {
  const rates = new Set<number>();
  for (const layer of Object.values(plan.layers)) {
    for (const g of layer.groups) rates.add(Math.log2(g.codebookSize) / layer.vectorLength);
  }
  return rates;
}

/** Draws one plan's group rates, colored on the scale [lo, hi] shared by every plan of the report. */
function groupBitsChart(id: string, plan: Plan, lo: number, hi: number): string {
  const rates = planRates(plan);
  const position = (rate: number) => (hi > lo ? (rate - lo) / (hi - lo) : 0.5);
  const rateColor = (rate: number) => viridis(position(rate));
  const rows = Object.entries(plan.layers).map(([name, layer]) => ({
    label: `${shortName(name)} (${layer.bpw.toFixed(2)} bpw)`,
    segments: layer.groups.map((g) => {
      const rate = Math.log2(g.codebookSize) / layer.vectorLength;
      return {
        size: g.end - g.start,
        color: rateColor(rate),
        text: rate.toFixed(2),
        textColor: position(rate) > 0.6 ? "#222" : "#fff",
        title: `${name}: channels ${g.start}..${
          g.end - 1
        } of ${layer.rows} by sensitivity, K = ${g.codebookSize}, ${
          rate.toFixed(3)
        } index bits per weight`,
      };
    }),
  }));
  return stackedBarChart({
    id,
    title: `Index bits per channel group at ${plan.bits} bits`,
    rows,
    xLabel: "share of the layer's output channels, most sensitive first",
    legend: [...rates].sort((a, b) => a - b).map((r) => ({
      name: `${r.toFixed(2)} bits`,
      color: rateColor(r),
    })),
  });
}

function stepsTable(m: Manifest): string {
  const head =
    `<tr><th>step</th><th>this run</th><th>seconds</th><th>finished</th><th>outputs</th></tr>`;
  const body = Object.entries(m.steps).map(([name, r]) =>
    `<tr><td>${esc(name)}</td><td class="text">${
      m.run.reused.includes(name) ? "reused" : "ran"
    }</td><td>${r.seconds.toFixed(1)}</td>` +
    `<td class="text">${esc(r.finishedAt)}</td><td class="text">${
      esc(Object.keys(r.outputs).join(", "))
    }</td></tr>`
  ).join("");
  return `<table id="steps">${head}${body}</table><p>This run took ${
    m.run.seconds.toFixed(1)
  } s: ${m.run.ran.length} steps ran, ${m.run.reused.length} were reused.</p>`;
}

function inputsTable(m: Manifest): string {
  const files: [string, FileFingerprint][] = [
    ["model", m.inputs.model],
    ...m.inputs.calibData.map((f): [string, FileFingerprint] => ["calibration data", f]),
    ...m.inputs.evalData.map((f): [string, FileFingerprint] => ["evaluation data", f]),
  ];
  const body = files.map(([role, f]) =>
    `<tr><td>${role}</td><td class="text"><code>${esc(f.path)}</code></td><td>${
      esc(formatBytes(f.bytes))
    }</td><td class="text"><code>${f.sha256}</code></td></tr>`
  ).join("");
  return `<table id="inputs"><tr><th>role</th><th>path</th><th>size</th><th>sha256</th></tr>${body}</table>`;
}

/** "model.layers.3.mlp.down_proj" to "3.down_proj". */
function shortName(name: string): string {
  const match = /layers\.(\d+)\.(?:[a-z_]+\.)?([a-z_]+)$/.exec(name);
  return match ? `${match[1]}.${match[2]}` : name;
}

function layerType(name: string): string {
  return name.slice(name.lastIndexOf(".") + 1);
}

/** Stops of the viridis color map (dark purple to yellow), evenly spaced over [0, 1]. */
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/** Color of `t` in [0, 1] on the viridis map, a sequential scale that stays readable in grey. */
function viridis(t: number): string {
  const x = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** Keeps at most `max` points evenly spaced, always the first and last. */
function thin(points: [number, number][], max: number): [number, number][] {
  if (points.length <= max) return points;
  const out: [number, number][] = [];
  for (let i = 0; i < max; i++) out.push(points[Math.round((i * (points.length - 1)) / (max - 1))]);
  return out;
}
