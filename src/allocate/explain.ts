/**
 * A plain-text table that explains a plan: per layer, how widely channel sensitivities
 * spread, what each group received, and what the continuous water-filling optimum would
 * have given it.
 *
 * @module
 */
import type { Plan, PlanLayer } from "./plan.ts";
import { planBytes } from "./plan.ts";

/** Sensitivities below this fraction of the scope's largest are clamped before logs. */
const LOG_FLOOR = 1e-12;

/**
 * Formats `plan` as a table with one row per layer:
 * - `I min / median / max` and `max/min`: spread of channel sensitivities;
 * - `K per group`: codebook sizes, most sensitive group first;
 * - `bits given`: index bits per weight of each group, log2(K) / v;
 * - `water-filling`: b_mean + 1/2 log2(geomean I of the group / geomean I of the scope),
 *   with b_mean the index bits actually spent in the scope (the layer, or the model);
 * - `bpw`: the layer's stored bits per weight, overhead included (a shared codebook in
 *   proportion to the layer's share of its scope's weights).
 *
 * @example
 * ```ts
 * import { explainPlan } from "./explain.ts";
 * const layer = { rows: 2, cols: 4, vectorLength: 4, channelOrder: [1, 0], sensitivity: [1, 4],
 *   groups: [{ start: 0, end: 1, codebookSize: 4 }, { start: 1, end: 2, codebookSize: 2 }], bpw: 43 };
 * const plan = { format: "rsavq-plan" as const, version: 2 as const, bits: 50, scope: "layer" as const,
 *   vectorLength: 4, bpw: 43, layers: { l: layer } };
 * if (!explainPlan(plan).includes("4,2")) throw new Error();
 * ```
 * @param plan A plan.
 */
export function explainPlan(plan: Plan): string {
  const entries = Object.entries(plan.layers);
  const scopeStats = plan.scope === "model" ? scopeOf(entries.map(([, l]) => l)) : null;
  const header = [
    "layer",
    "m x n",
    "I min",
    "I median",
    "I max",
    "max/min",
    "K per group",
    "bits given",
    "water-filling",
    "bpw",
  ];
  const rows = entries.map(([name, layer]) => {
    const stats = scopeStats ?? scopeOf([layer]);
    const sorted = [...layer.sensitivity].sort((a, b) => a - b);
    const min = sorted[0], max = sorted[sorted.length - 1];
    const median = sorted[Math.floor(sorted.length / 2)];
    const given = layer.groups.map((g) => Math.log2(g.codebookSize) / layer.vectorLength);
    const ideal = layer.groups.map((g) => {
      const meanLog = meanLog2(
        layer.channelOrder.slice(g.start, g.end).map((c) => layer.sensitivity[c]),
        stats.floor,
      );
      return stats.meanBits + 0.5 * (meanLog - stats.meanLog);
    });
    return [
      name,
      `${layer.rows} x ${layer.cols}`,
      fmt(min),
      fmt(median),
      fmt(max),
      min > 0 ? fmt(max / min) : "inf",
      layer.groups.map((g) => g.codebookSize).join(","),
      given.map((b) => b.toFixed(2)).join(","),
      ideal.map((b) => b.toFixed(2)).join(","),
      layer.bpw.toFixed(4),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const codebookScope = plan.codebookScope ?? "layer";
  const bytes = planBytes(plan.layers, codebookScope).total;
  return [
    `plan: ${plan.bits} bits per weight requested, ${
      plan.bpw.toFixed(4)
    } stored (${bytes} bytes), scope ${plan.scope}, ` +
    `codebook scope ${codebookScope}, ` +
    `vector length ${plan.vectorLength}${plan.solver ? `, solver ${plan.solver}` : ""}`,
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ].join("\n");
}

/** Mean index bits and mean log2 sensitivity over the channels of `layers`. */
function scopeOf(layers: PlanLayer[]): { meanBits: number; meanLog: number; floor: number } {
  let maxI = 0;
  for (const l of layers) for (const s of l.sensitivity) maxI = Math.max(maxI, s);
  const floor = maxI > 0 ? maxI * LOG_FLOOR : 1;
  let bits = 0, weights = 0, logSum = 0, channels = 0;
  for (const l of layers) {
    for (const g of l.groups) {
      bits += (g.end - g.start) * l.cols * (Math.log2(g.codebookSize) / l.vectorLength);
      weights += (g.end - g.start) * l.cols;
    }
    for (const s of l.sensitivity) logSum += Math.log2(Math.max(s, floor));
    channels += l.sensitivity.length;
  }
  return { meanBits: bits / weights, meanLog: logSum / channels, floor };
}

function meanLog2(values: number[], floor: number): number {
  return values.reduce((sum, s) => sum + Math.log2(Math.max(s, floor)), 0) / values.length;
}

function fmt(x: number): string {
  return x === 0 ? "0" : x.toPrecision(3);
}
