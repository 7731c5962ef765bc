/**
 * Round-to-nearest (RTN): asymmetric uniform quantization per group of input columns,
 * with no calibration data.
 *
 * @module
 */
import { groupParams, quantizeValue, type UniformGroupParams, uniformLayer } from "./uniform.ts";
import type { QuantizedLayer } from "./types.ts";

/** Options of {@linkcode quantizeRtnLayer}. */
export interface RtnOptions {
  /** Code width in bits (1-8). */
  bits: number;
  /** Input columns per scale and zero point (the last group of a row may be partial). */
  groupSize: number;
}

/**
 * Quantizes a layer by round to nearest.
 *
 * @example
 * ```ts
 * import { quantizeRtnLayer } from "./rtn.ts";
 * const q = quantizeRtnLayer("l", new Float32Array([0, 1, 2, 3]), 1, 4, { bits: 2, groupSize: 4 });
 * if (q.dequantized.join() !== "0,1,2,3") throw new Error();
 * ```
 * @param prefix Layer prefix (tensor names).
 * @param weight Weights [rows, cols].
 * @param rows Output channels.
 * @param cols Input columns.
 * @param options Bits and group size.
 */
export function quantizeRtnLayer(
  prefix: string,
  weight: Float32Array,
  rows: number,
  cols: number,
  options: RtnOptions,
): QuantizedLayer {
  const { bits, groupSize } = options;
  const groups = Math.ceil(cols / groupSize);
  const codes = new Uint8Array(rows * cols), out = new Float32Array(rows * cols);
  const params: UniformGroupParams[] = [];
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const c0 = r * cols + g * groupSize, c1 = r * cols + Math.min(cols, (g + 1) * groupSize);
      const p = groupParams(weight.subarray(c0, c1), bits);
      params.push(p);
      for (let i = c0; i < c1; i++) {
        const { code, value } = quantizeValue(weight[i], p, bits);
        codes[i] = code;
        out[i] = value;
      }
    }
  }
  return uniformLayer(prefix, rows, cols, bits, groupSize, codes, params, out);
}
