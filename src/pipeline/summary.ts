/**
 * The pipeline's results table: one row for the original model and one per method and
 * bit width, printed on stdout at the end of every run and stored in the manifest.
 *
 * @module
 */

/** One row of the results table. */
export interface ResultRow {
  /** Quantization method, or "original" for the unquantized model. */
  method: string;
  /** Requested bits per weight, or null for the original model. */
  bits: number | null;
  /** Stored bits per weight of the quantized linear layers, overhead included (null for the original). */
  bpw: number | null;
  /** Perplexity on the evaluation data. */
  ppl: number;
  /** Standard error of the perplexity (ppl times the standard error of the mean NLL). */
  pplStderr: number;
  /** Mean KL(P_original || P_quantized) in nats per token (0 for the original). */
  kldMean: number;
  /** 99th percentile of the per-token KL divergence. */
  kldP99: number;
  /** Fraction of positions where both models' most likely token agrees. */
  top1: number;
  /** Size of the model file in bytes. */
  fileBytes: number;
  /**
   * Wall-clock seconds of quantization, writing included, plus the WCSG allocation for
   * the method that follows the plan (null for the original).
   */
  quantizeSeconds: number | null;
  /** Model file: the checkpoint path for the original, a name in the output folder otherwise. */
  file: string;
  /** Zero-shot multiple-choice accuracy averaged over tasks, when task files were given. */
  zeroShotAcc?: number;
  /** Length-normalized zero-shot accuracy averaged over tasks, when task files were given. */
  zeroShotAccNorm?: number;
}

/**
 * Formats the results as an aligned text table.
 *
 * @example
 * ```ts
 * import { formatSummaryTable } from "./summary.ts";
 * const table = formatSummaryTable([{ method: "rtn", bits: 2, bpw: 2.125, ppl: 30.5, pplStderr: 1,
 *   kldMean: 0.5, kldP99: 3, top1: 0.75, fileBytes: 2048, quantizeSeconds: 0.2, file: "rtn-2.safetensors" }]);
 * if (!table.includes("2.1250") || !table.includes("75.00%")) throw new Error(table);
 * ```
 * @param rows Rows in display order.
 */
export function formatSummaryTable(rows: ResultRow[]): string {
  const zeroShot = rows.some((r) => r.zeroShotAcc !== undefined);
  const header = [
    "method",
    "bits",
    "bpw",
    "perplexity",
    "KL div (mean)",
    "KL div (p99)",
    "top-1 agree",
    "file size",
    "quantize time",
  ];
  if (zeroShot) header.push("0-shot acc", "acc_norm");
  const percent = (v: number | undefined) => (v === undefined ? "-" : `${(100 * v).toFixed(2)}%`);
  const body = rows.map((r) => [
    r.method,
    r.bits === null ? "-" : String(r.bits),
    r.bpw === null ? "-" : r.bpw.toFixed(4),
    `${formatValue(r.ppl)} ± ${formatValue(r.pplStderr)}`,
    r.kldMean.toFixed(4),
    r.kldP99.toFixed(4),
    `${(100 * r.top1).toFixed(2)}%`,
    formatBytes(r.fileBytes),
    r.quantizeSeconds === null ? "-" : `${r.quantizeSeconds.toFixed(1)} s`,
    ...(zeroShot ? [percent(r.zeroShotAcc), percent(r.zeroShotAccNorm)] : []),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((row) => row[c].length)));
  const line = (cells: string[]) =>
    cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(
      "  ",
    );
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/**
 * Formats a byte count with a binary unit ("512 B", "1.50 KiB", "3.20 MiB").
 *
 * @param bytes Byte count.
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[unit]}`;
}

/**
 * Formats a positive figure such as a perplexity with four significant digits below 100
 * and one decimal above, without an exponent below 10^6.
 *
 * @example
 * ```ts
 * import { formatValue } from "./summary.ts";
 * if (formatValue(14.5912) !== "14.59" || formatValue(62229.04) !== "62229.0") throw new Error();
 * ```
 * @param value The figure.
 */
export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 1e6) return value.toExponential(3);
  return value >= 100 ? value.toFixed(1) : value.toPrecision(4);
}
