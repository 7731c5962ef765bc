/**
 * GPTQ: asymmetric uniform quantization column by column, each column's rounding error
 * fed back into the columns not yet quantized through the upper Cholesky factor of the
 * damped inverse of the input Hessian A (Frantar et al., 2022). Group parameters are
 * chosen from the updated weights when the quantizer reaches a group's first column.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { dampHessian, upperCholeskyOfInverse } from "./linalg.ts";
import { groupParams, quantizeValue, type UniformGroupParams, uniformLayer } from "./uniform.ts";
import type { QuantizedLayer } from "./types.ts";

/** Options of {@linkcode quantizeGptqLayer}. */
export interface GptqOptions {
  /** Code width in bits (1-8). */
  bits: number;
  /** Input columns per scale and zero point. */
  groupSize: number;
  /** Relative damping of A. Default 0.01. */
  damp?: number;
}

/**
 * Quantizes a layer with GPTQ.
 *
 * @param prefix Layer prefix (tensor names).
 * @param weight Weights [rows, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @param hessian A = E[x x^T], [cols, cols].
 * @param options Bits, group size and damping.
 */
export function quantizeGptqLayer(
  prefix: string,
  weight: Float32Array,
  rows: number,
  cols: number,
  hessian: Float32Array,
  options: GptqOptions,
): QuantizedLayer {
  if (hessian.length !== cols * cols) {
    throw new ShapeError(`${prefix}.A has ${hessian.length} elements, expected [${cols}, ${cols}]`);
  }
  const { bits, groupSize } = options;
  const { h, dead } = dampHessian(hessian, cols, options.damp ?? 0.01);
  const u = upperCholeskyOfInverse(h, cols);
  const w = Float64Array.from(weight);
  for (const j of dead) for (let r = 0; r < rows; r++) w[r * cols + j] = 0;
  const groups = Math.ceil(cols / groupSize);
  const codes = new Uint8Array(rows * cols), out = new Float32Array(rows * cols);
  const params: UniformGroupParams[] = new Array(rows * groups);
  for (let j = 0; j < cols; j++) {
    const g = Math.floor(j / groupSize);
    if (j % groupSize === 0) {
      const end = Math.min(cols, j + groupSize);
      for (let r = 0; r < rows; r++) {
        params[r * groups + g] = groupParams(w.subarray(r * cols + j, r * cols + end), bits);
      }
    }
    const ujj = u[j * cols + j];
    for (let r = 0; r < rows; r++) {
      const i = r * cols + j;
      const { code, value } = quantizeValue(w[i], params[r * groups + g], bits);
      codes[i] = code;
      out[i] = value;
      // Feed the scaled error into the later columns of this row.
      const err = (w[i] - value) / ujj;
      for (let k = j + 1; k < cols; k++) w[r * cols + k] -= err * u[j * cols + k];
    }
  }
  return uniformLayer(prefix, rows, cols, bits, groupSize, codes, params, out);
}
