/**
 * Asymmetric uniform quantization shared by RTN and GPTQ: per row and group of input
 * columns an f16 scale and an f16 integer zero point, codes in [0, 2^bits - 1], and
 * w_hat = scale * (code - zero) in f32, exactly as src/formats/quantized.ts dequantizes.
 *
 * @module
 */
import { f16ToF32, f32ToF16 } from "../formats/dtype.ts";
import { f16Tensor, packIndices, u32Tensor } from "../formats/quantized.ts";
import { uniformLayerBytes } from "./bpw.ts";
import type { QuantizedLayer } from "./types.ts";

/** Scale and zero point of one group, both exactly representable in f16. */
export interface UniformGroupParams {
  scale: number;
  zero: number;
}

/**
 * Rounds to the nearest f16 value.
 *
 * @param x Value.
 */
export function roundF16(x: number): number {
  return f16ToF32(f32ToF16(x));
}

/**
 * Chooses the scale and zero point that map [min, max] of `values` onto the codes.
 *
 * @example
 * ```ts
 * import { groupParams } from "./uniform.ts";
 * const p = groupParams([-1, 0, 2], 2);
 * if (p.scale !== 1 || p.zero !== 1) throw new Error();
 * ```
 * @param values Weights of the group.
 * @param bits Code width.
 */
export function groupParams(values: ArrayLike<number>, bits: number): UniformGroupParams {
  const maxq = 2 ** bits - 1;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]);
    hi = Math.max(hi, values[i]);
  }
  // A constant group still needs a positive range: widen it to include zero.
  if (hi === lo) {
    if (lo > 0) lo = 0;
    else hi = 0;
    if (hi === lo) hi = 1;
  }
  let scale = roundF16((hi - lo) / maxq);
  if (!(scale > 0)) scale = 2 ** -24; // the smallest f16 subnormal
  const zero = Math.min(maxq, Math.max(0, Math.round(-lo / scale)));
  return { scale, zero };
}

/**
 * Quantizes one value: its code and its dequantized f32 value.
 *
 * @param w Weight.
 * @param p Group parameters.
 * @param bits Code width.
 */
export function quantizeValue(
  w: number,
  p: UniformGroupParams,
  bits: number,
): { code: number; value: number } {
  const code = Math.min(2 ** bits - 1, Math.max(0, Math.round(w / p.scale + p.zero)));
  return { code, value: Math.fround(p.scale * (code - p.zero)) };
}

/**
 * Assembles a uniformly quantized layer: codes packed per row, scales and zeros F16
 * [rows, groups].
 *
 * @param prefix Layer prefix.
 * @param rows Output channels.
 * @param cols Input columns.
 * @param bits Code width.
 * @param groupSize Columns per group.
 * @param codes Codes [rows, cols].
 * @param params Group parameters [rows, groups], row-major.
 * @param dequantized Dequantized weights [rows, cols].
 */
export function uniformLayer(
  prefix: string,
  rows: number,
  cols: number,
  bits: number,
  groupSize: number,
  codes: Uint8Array,
  params: UniformGroupParams[],
  dequantized: Float32Array,
): QuantizedLayer {
  const wordsPerRow = Math.ceil((cols * bits) / 32);
  const packed = new Uint32Array(rows * wordsPerRow);
  for (let r = 0; r < rows; r++) {
    packed.set(packIndices(codes.subarray(r * cols, (r + 1) * cols), bits), r * wordsPerRow);
  }
  const groups = Math.ceil(cols / groupSize);
  return {
    desc: { kind: "uniform", rows, cols, bits, groupSize },
    tensors: {
      [`${prefix}.qweight`]: u32Tensor(packed, [rows, wordsPerRow]),
      [`${prefix}.scales`]: f16Tensor(Float32Array.from(params, (p) => p.scale), [rows, groups]),
      [`${prefix}.zeros`]: f16Tensor(Float32Array.from(params, (p) => p.zero), [rows, groups]),
    },
    dequantized,
    bytes: uniformLayerBytes(rows, cols, bits, groupSize),
  };
}
