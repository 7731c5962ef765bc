/**
 * Per-layer measures that quantizeModel reports: the relative output error and the
 * Fisher-weighted error of a quantized layer, and byte totals over layers.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { StorageBytes } from "./bpw.ts";
import type { FisherMetric, LayerResult, LayerStatistics } from "./types.ts";

/** Errors of one quantized layer, measured on its calibration statistics. */
export interface LayerErrors {
  /** tr(E A E^T) / tr(W A W^T), or ||E||^2 / ||W||^2 without statistics. */
  relative: number;
  /** Fisher-weighted error, null without statistics: with the K-FAC metric
   * sum_r G_rr e_r^T A e_r (the second-order loss term vec(E)^T (G (x) A) vec(E) with G
   * diagonal, full A), with the empirical metric sum_rj D_rj E_rj^2. */
  fisher: number | null;
}

/**
 * Measures a quantized layer's relative output error and its Fisher-weighted error in one
 * pass over the rows (O(rows * cols^2) with statistics). E = W_hat - W.
 *
 * @example
 * ```ts
 * import { layerErrors } from "./layer_report.ts";
 * const w = new Float32Array([1, 0, 0, 1]), q = new Float32Array([1, 0, 0, 0]);
 * const A = new Float32Array([1, 0, 0, 1]), gDiag = new Float32Array([1, 3]);
 * const e = layerErrors(w, q, 2, 2, { A, gDiag }, "kfac");
 * if (e.relative !== 0.5 || e.fisher !== 3) throw new Error();
 * ```
 * @param w Original weights [rows, cols].
 * @param q Dequantized weights [rows, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @param stats Statistics with A (and G_diag or fisher_diag for the Fisher error), or null.
 * @param metric "kfac" (G_rr and the full A; G_rr = 1 when G_diag is missing) or
 *   "empirical" (fisher_diag).
 * @throws {FormatError} With the empirical metric when fisher_diag is missing.
 */
export function layerErrors(
  w: Float32Array,
  q: Float32Array,
  rows: number,
  cols: number,
  stats: LayerStatistics | null,
  metric: FisherMetric = "kfac",
): LayerErrors {
  let num = 0, den = 0, fisher = 0;
  const e = new Float64Array(cols);
  if (stats && metric === "empirical" && !stats.fisherDiag) {
    throw new FormatError(
      "statistics",
      "fisher_diag",
      "Missing tensor: the empirical Fisher error needs it; rerun deno task calibrate or use --fisher-metric kfac",
    );
  }
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) e[j] = q[r * cols + j] - w[r * cols + j];
    if (!stats) {
      for (let j = 0; j < cols; j++) {
        num += e[j] * e[j];
        den += w[r * cols + j] * w[r * cols + j];
      }
      continue;
    }
    const a = stats.A;
    let rowError = 0;
    for (let i = 0; i < cols; i++) {
      let se = 0, sw = 0;
      for (let j = 0; j < cols; j++) {
        se += a[i * cols + j] * e[j];
        sw += a[i * cols + j] * w[r * cols + j];
      }
      // num accumulates term by term (not per row) so it matches a plain double loop exactly.
      num += e[i] * se;
      rowError += e[i] * se;
      den += w[r * cols + i] * sw;
    }
    if (metric === "empirical") {
      for (let j = 0; j < cols; j++) fisher += stats.fisherDiag![r * cols + j] * e[j] * e[j];
    } else {
      fisher += (stats.gDiag ? stats.gDiag[r] : 1) * rowError;
    }
  }
  return { relative: den > 0 ? num / den : 0, fisher: stats ? fisher : null };
}

/**
 * Relative error of a quantized layer: tr(E A E^T) / tr(W A W^T) with E = W_hat - W and A
 * from the statistics, or ||E||^2 / ||W||^2 without statistics.
 *
 * @param w Original weights [rows, cols].
 * @param q Dequantized weights [rows, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @param stats Statistics with A, or null.
 */
export function relativeError(
  w: Float32Array,
  q: Float32Array,
  rows: number,
  cols: number,
  stats: LayerStatistics | null,
): number {
  return layerErrors(w, q, rows, cols, stats ? { A: stats.A } : null).relative;
}

/**
 * Sums stored bytes by component over layer results.
 *
 * @param layers Per-layer results.
 */
export function totalBytes(layers: LayerResult[]): StorageBytes {
  const t = { indices: 0, codebooks: 0, scales: 0, permutation: 0, total: 0 };
  for (const l of layers) {
    for (const k of Object.keys(t) as (keyof StorageBytes)[]) t[k] += l.bytes[k];
  }
  return t;
}
