/**
 * Element types of stored tensors and their conversions to f32.
 *
 * | dtype | bytes | notes |
 * | ----- | ----- | ----- |
 * | F32   | 4     | IEEE binary32 |
 * | F16   | 2     | IEEE binary16 |
 * | BF16  | 2     | upper half of binary32 |
 * | U8, I32, U32 | 1, 4, 4 | integer data (packed indices, ids) |
 *
 * @module
 */

/** Element types the toolkit reads and writes in safetensors files. */
export type DType = "F32" | "F16" | "BF16" | "U8" | "I32" | "U32";

/** Bytes per element of each {@linkcode DType}. */
export const DTYPE_BYTES: Record<DType, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  U8: 1,
  I32: 4,
  U32: 4,
};

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * Converts an IEEE binary16 bit pattern to a number.
 *
 * @example
 * ```ts
 * import { f16ToF32 } from "./dtype.ts";
 * if (f16ToF32(0x3c00) !== 1) throw new Error("1.0 misread");
 * ```
 * @param h 16-bit pattern.
 */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * Converts a number to the nearest IEEE binary16 bit pattern (round to nearest even).
 *
 * @example
 * ```ts
 * import { f32ToF16 } from "./dtype.ts";
 * if (f32ToF16(1) !== 0x3c00) throw new Error("1.0 miswritten");
 * ```
 * @param value Number to convert; values beyond 65504 become infinity.
 */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mantissa >>> 13;
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/**
 * Converts a bfloat16 bit pattern to a number.
 *
 * @param b 16-bit pattern.
 */
export function bf16ToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/**
 * Converts a number to the nearest bfloat16 bit pattern (round to nearest even).
 *
 * @param value Number to convert.
 */
export function f32ToBf16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Decodes little-endian stored elements of `dtype` into a new Float32Array.
 *
 * @param bytes Raw little-endian bytes, `count * DTYPE_BYTES[dtype]` long.
 * @param dtype Stored element type (F32, F16 or BF16).
 */
export function decodeToF32(bytes: Uint8Array, dtype: DType): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength / DTYPE_BYTES[dtype];
  const out = new Float32Array(count);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case "F16":
      for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(2 * i, true));
      break;
    case "BF16":
      for (let i = 0; i < count; i++) out[i] = bf16ToF32(view.getUint16(2 * i, true));
      break;
    default:
      throw new Error(`Cannot decode ${dtype} to f32: only F32, F16 and BF16 are floating point`);
  }
  return out;
}

/**
 * Encodes f32 values as little-endian `dtype` bytes.
 *
 * @param values Values to store.
 * @param dtype F32, F16 or BF16.
 */
export function encodeFromF32(values: Float32Array, dtype: DType): Uint8Array {
  const out = new Uint8Array(values.length * DTYPE_BYTES[dtype]);
  const view = new DataView(out.buffer);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
      break;
    case "F16":
      for (let i = 0; i < values.length; i++) view.setUint16(2 * i, f32ToF16(values[i]), true);
      break;
    case "BF16":
      for (let i = 0; i < values.length; i++) view.setUint16(2 * i, f32ToBf16(values[i]), true);
      break;
    default:
      throw new Error(`Cannot encode f32 as ${dtype}: only F32, F16 and BF16 are floating point`);
  }
  return out;
}
