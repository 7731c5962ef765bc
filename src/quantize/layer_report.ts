/**
 * Per-layer measures that quantizeModel reports: the relative output error of a
 * quantized layer and byte totals over layers.
 *
 * @module
 */
import type { StorageBytes } from "./bpw.ts";
import type { LayerResult, LayerStatistics } from "./types.ts";

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
  let num = 0, den = 0;
  const e = new Float64Array(cols);
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
    for (let i = 0; i < cols; i++) {
      let se = 0, sw = 0;
      for (let j = 0; j < cols; j++) {
        se += a[i * cols + j] * e[j];
        sw += a[i * cols + j] * w[r * cols + j];
      }
      num += e[i] * se;
      den += w[r * cols + i] * sw;
    }
  }
  return den > 0 ? num / den : 0;
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
