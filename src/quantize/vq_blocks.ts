/**
 * Column-block helpers of the VQ core (src/quantize/vq_layer.ts): gathering
 * scale-normalized vectors and their metric weights, building the EDSG guide of a block,
 * and the GPTQ-style block update that feeds a block's error into later columns.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { invertUpperBlock } from "./linalg.ts";

/** Normalized vectors q0..q1 of the listed rows, [rows.length, q1 - q0, v], zero padded. */
export function gatherVectors(
  w: ArrayLike<number>,
  scales: Float32Array,
  rows: Uint32Array,
  cols: number,
  v: number,
  q0: number,
  q1: number,
): Float32Array {
  const span = (q1 - q0) * v, out = new Float32Array(rows.length * span);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i], inv = 1 / scales[r];
    for (let j = q0 * v; j < Math.min(cols, q1 * v); j++) {
      out[i * span + j - q0 * v] = w[r * cols + j] * inv;
    }
  }
  return out;
}

/** Metric weights of columns j0..j1 of the listed rows. */
export function gatherWeights(
  weights: Float32Array,
  rows: Uint32Array,
  padded: number,
  j0: number,
  j1: number,
): Float32Array {
  const out = new Float32Array(rows.length * (j1 - j0));
  for (let i = 0; i < rows.length; i++) {
    out.set(weights.subarray(rows[i] * padded + j0, rows[i] * padded + j1), i * (j1 - j0));
  }
  return out;
}

/**
 * Builds the EDSG guide [rows.length, v + 1] of one column block: s_r N_rj per element,
 * then a running sum. The sum covers E_rj N_rj over the columns already assigned, plus
 * (W' - W) N over this block, the part that error feedback has already moved. So the
 * kernel's (s + e . n) is the projection of the row's whole error.
 */
export function edsgGuide(
  rows: Uint32Array,
  target: Float64Array,
  weight: Float32Array,
  direction: Float32Array,
  scales: Float32Array,
  running: Float64Array,
  cols: number,
  v: number,
  q0: number,
  q1: number,
): Float32Array {
  if (q1 - q0 !== 1) throw new ShapeError("EDSG guides are built one column block at a time");
  const out = new Float32Array(rows.length * (v + 1));
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    let s = running[r];
    for (let d = 0; d < v && q0 * v + d < cols; d++) {
      const j = r * cols + q0 * v + d;
      out[i * (v + 1) + d] = scales[r] * direction[j];
      s += (target[j] - weight[j]) * direction[j];
    }
    out[i * (v + 1) + v] = s;
  }
  return out;
}

/**
 * Applies the block OBS update W'[:, j1:] -= (W'[:, j0:j1] - Q[:, j0:j1]) U_bb^{-1} U[j0:j1, j1:].
 * NOTE: this runs in TypeScript at O(rows * cols^2) per layer, which is negligible for
 * small models. A 4096x11008 layer needs about 5e11 multiply-adds, an estimated five
 * minutes in TypeScript, so 7B models need this update moved to the GPU.
 */
export function feedBack(
  target: Float64Array,
  out: Float32Array,
  u: Float64Array,
  rows: number,
  cols: number,
  j0: number,
  j1: number,
): void {
  const bw = j1 - j0,
    binv = invertUpperBlock(u, cols, j0, j1),
    e = new Float64Array(bw),
    d = new Float64Array(bw);
  for (let r = 0; r < rows; r++) {
    for (let a = 0; a < bw; a++) e[a] = target[r * cols + j0 + a] - out[r * cols + j0 + a];
    for (let b = 0; b < bw; b++) {
      let s = 0;
      for (let a = 0; a <= b; a++) s += e[a] * binv[a * bw + b];
      d[b] = s;
    }
    for (let b = 0; b < bw; b++) {
      if (d[b] === 0) continue;
      const urow = (j0 + b) * cols;
      for (let k = j1; k < cols; k++) target[r * cols + k] -= d[b] * u[urow + k];
    }
  }
}
