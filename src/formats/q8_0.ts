/**
 * ggml's Q8_0 block format, as `quantize_row_q8_0_ref` in ggml-quants.c defines it: blocks
 * of 32 values, each stored as an f16 scale d = amax / 127 followed by 32 int8 values
 * round(x / d), 34 bytes per block. Dequantized x = d * q.
 *
 * @module
 */
import { f16ToF32, f32ToF16 } from "./dtype.ts";

/** Values per Q8_0 block. */
export const Q8_0_BLOCK = 32;
/** Bytes per Q8_0 block: f16 scale plus 32 int8. */
export const Q8_0_BLOCK_BYTES = 34;

/**
 * Quantizes values to Q8_0 blocks in f32 arithmetic, rounding half away from zero like C `roundf`.
 *
 * @example
 * ```ts
 * import { dequantizeQ8_0, quantizeQ8_0 } from "./q8_0.ts";
 * const x = new Float32Array(32).map((_, i) => i - 16);
 * const back = dequantizeQ8_0(quantizeQ8_0(x), 32);
 * if (Math.abs(back[0] + 16) > 0.1) throw new Error("lost precision");
 * ```
 * @param values Length a multiple of 32.
 * @returns `values.length / 32 * 34` bytes.
 */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) {
    throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${values.length}`);
  }
  const blocks = values.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(values[base + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * Q8_0_BLOCK_BYTES, f32ToF16(d), true);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x = Math.fround(values[base + j] * id);
      view.setInt8(b * Q8_0_BLOCK_BYTES + 2 + j, Math.sign(x) * Math.round(Math.abs(x)));
    }
  }
  return out;
}

/**
 * Dequantizes Q8_0 blocks to f32.
 *
 * @param bytes `count / 32 * 34` bytes.
 * @param count Number of values (a multiple of 32).
 */
export function dequantizeQ8_0(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / Q8_0_BLOCK; b++) {
    const d = f16ToF32(view.getUint16(b * Q8_0_BLOCK_BYTES, true));
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      out[b * Q8_0_BLOCK + j] = d * view.getInt8(b * Q8_0_BLOCK_BYTES + 2 + j);
    }
  }
  return out;
}
