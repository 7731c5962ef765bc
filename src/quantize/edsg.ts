/**
 * Error Direction Sensitivity Guidance (EDSG): the natural-gradient direction
 * N = G^{-1} g A^{-1} and its per-layer normalization. RSAVQ's codeword assignment
 * penalizes quantization error along N, the direction in which the loss is most
 * sensitive under the Fisher metric G (x) A.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { choleskyLower, dampHessian } from "./linalg.ts";

/**
 * Computes N = G^{-1} g A^{-1} with diagonal G, both damped: A + damp * mean(diag A) I
 * and G_rr + damp * mean(G).
 * NOTE: the full output-gradient moment G [out, out] that calibrate can store is not used.
 *
 * @param gradMean Mean gradient g [rows, cols].
 * @param gDiag Output-gradient second moments G_rr [rows].
 * @param hessian A = E[x x^T] [cols, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @param damp Relative damping.
 * @returns N [rows, cols] (not normalized; see {@linkcode normalizeDirection}).
 */
export function naturalGradient(
  gradMean: Float32Array,
  gDiag: Float32Array,
  hessian: Float32Array,
  rows: number,
  cols: number,
  damp: number,
): Float32Array {
  if (gradMean.length !== rows * cols || gDiag.length !== rows) {
    throw new ShapeError(
      `Natural gradient: grad_mean has ${gradMean.length} values and G_diag ${gDiag.length}, expected [${rows}, ${cols}] and [${rows}]`,
    );
  }
  const { h } = dampHessian(hessian, cols, damp);
  choleskyLower(h, cols);
  let gMean = 0;
  for (const x of gDiag) gMean += Math.max(0, x) / rows;
  const gDamp = damp * gMean;
  const out = new Float32Array(rows * cols);
  const y = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    // Solve A y = g_r by forward then back substitution with A = L L^T.
    for (let i = 0; i < cols; i++) {
      let s = gradMean[r * cols + i];
      for (let k = 0; k < i; k++) s -= h[i * cols + k] * y[k];
      y[i] = s / h[i * cols + i];
    }
    for (let i = cols - 1; i >= 0; i--) {
      let s = y[i];
      for (let k = i + 1; k < cols; k++) s -= h[k * cols + i] * y[k];
      y[i] = s / h[i * cols + i];
    }
    const gInv = 1 / (Math.max(0, gDiag[r]) + gDamp || 1);
    for (let i = 0; i < cols; i++) out[r * cols + i] = y[i] * gInv;
  }
  return out;
}

/**
 * Scales N so that the mean over rows of sum_j N_rj^2 / M_rj is 1, M being the layer's
 * Fisher metric. By Cauchy-Schwarz, (sum_j E_rj N_rj)^2 <= (sum_j M_rj E_rj^2)
 * (sum_j N_rj^2 / M_rj), so after this scaling the projection term of an average row is
 * at most its Fisher-metric error and lambda is a relative weight. Elements with M = 0
 * get N = 0.
 *
 * @example
 * ```ts
 * import { normalizeDirection } from "./edsg.ts";
 * const n = normalizeDirection(new Float32Array([3, 4]), new Float32Array([1, 1]), 1, 2);
 * if (Math.abs(n[0] - 0.6) > 1e-6) throw new Error();
 * ```
 * @param direction N [rows, cols].
 * @param metric M [rows, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @returns Scaled copy.
 */
export function normalizeDirection(
  direction: Float32Array,
  metric: Float32Array,
  rows: number,
  cols: number,
): Float32Array {
  const out = new Float32Array(direction.length);
  let total = 0;
  for (let i = 0; i < rows * cols; i++) {
    if (metric[i] > 0) {
      out[i] = direction[i];
      total += (direction[i] * direction[i]) / metric[i];
    }
  }
  const c = total / rows;
  if (c > 0) {
    const f = 1 / Math.sqrt(c);
    for (let i = 0; i < out.length; i++) out[i] *= f;
  }
  return out;
}
