/**
 * Bit packing of codebook indices and uniform codes into u32 words, and the helpers that
 * wrap arrays as F16 and U32 tensors for the quantized-model writer.
 *
 * @module
 */
import { encodeFromF32 } from "./dtype.ts";
import type { TensorToWrite } from "./safetensors.ts";

/**
 * Packs indices of `bits` bits each into little-endian u32 words, least significant bit
 * first: index i occupies stream bits [i * bits, (i + 1) * bits), stream bit t being bit
 * t mod 32 of word floor(t / 32).
 *
 * @example
 * ```ts
 * import { packIndices, unpackIndices } from "./quantized_pack.ts";
 * const words = packIndices([1, 2, 3], 2);
 * if (words[0] !== 0b111001 || unpackIndices(words, 3, 2)[2] !== 3) throw new Error();
 * ```
 * @param indices Values below 2^bits.
 * @param bits Width, 1 to 32.
 * @returns ceil(n * bits / 32) words.
 */
export function packIndices(indices: ArrayLike<number>, bits: number): Uint32Array {
  const words = new Uint32Array(Math.ceil((indices.length * bits) / 32));
  for (let i = 0; i < indices.length; i++) {
    const value = indices[i];
    if (value < 0 || value >= 2 ** bits) {
      throw new RangeError(`Index ${value} at ${i} does not fit in ${bits} bits`);
    }
    const bit = i * bits, w = bit >>> 5, shift = bit & 31;
    words[w] |= value << shift;
    if (shift + bits > 32) words[w + 1] |= value >>> (32 - shift);
  }
  return words;
}

/**
 * Unpacks `count` indices of `bits` bits from words written by {@linkcode packIndices}.
 *
 * @param words Packed words.
 * @param count Number of indices.
 * @param bits Width, 1 to 32.
 */
export function unpackIndices(words: Uint32Array, count: number, bits: number): Uint32Array {
  const out = new Uint32Array(count);
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const bit = i * bits, w = bit >>> 5, shift = bit & 31;
    let value = words[w] >>> shift;
    if (shift + bits > 32) value |= words[w + 1] << (32 - shift);
    out[i] = (value & mask) >>> 0;
  }
  return out;
}

/**
 * Bits of one index into a codebook of `size` entries (at least 1), as src/quantize/bpw.ts
 * counts them.
 *
 * @param size Codebook entries.
 */
export function indexWidth(size: number): number {
  return Math.max(1, Math.ceil(Math.log2(size)));
}

/**
 * Packs a channel order (stored position -> row) at ceil(log2 rows) bits per entry (at
 * least 1), into little-endian u32 words exactly as {@linkcode packIndices} packs indices.
 *
 * @example A 64-row layer costs 6 bits per row
 * ```ts
 * import { packChannelOrder, unpackChannelOrder } from "./quantized_pack.ts";
 * const order = Array.from({ length: 64 }, (_, i) => 63 - i);
 * const words = packChannelOrder(order);
 * if (words.length !== 12 || unpackChannelOrder(words, 64)[0] !== 63) throw new Error();
 * ```
 * @param order Rows in stored order, a permutation of 0..rows-1.
 * @returns ceil(rows * ceil(log2 rows) / 32) words.
 */
export function packChannelOrder(order: ArrayLike<number>): Uint32Array {
  return packIndices(order, indexWidth(order.length));
}

/**
 * Unpacks a channel order written by {@linkcode packChannelOrder}. It does not check that
 * the result is a permutation; callers that index with it do.
 *
 * @param words Packed words, ceil(rows * ceil(log2 rows) / 32) of them.
 * @param rows Rows of the layer.
 * @returns Stored position -> row, [rows].
 */
export function unpackChannelOrder(words: Uint32Array, rows: number): Uint32Array {
  return unpackIndices(words, rows, indexWidth(rows));
}

/**
 * Words of a packed channel order of `rows` entries.
 *
 * @param rows Rows of the layer.
 */
export function channelOrderWords(rows: number): number {
  return Math.ceil((rows * indexWidth(rows)) / 32);
}

/**
 * Wraps f32 values as an F16 tensor to write.
 *
 * @param values Values (rounded to nearest f16).
 * @param shape Shape.
 */
export function f16Tensor(values: Float32Array, shape: number[]): TensorToWrite {
  return { dtype: "F16", shape, data: encodeFromF32(values, "F16") };
}

/**
 * Wraps u32 words as a U32 tensor to write.
 *
 * @param words Words.
 * @param shape Shape.
 */
export function u32Tensor(words: Uint32Array, shape: number[]): TensorToWrite {
  return {
    dtype: "U32",
    shape,
    data: new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
  };
}
