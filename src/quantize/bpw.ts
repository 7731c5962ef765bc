/**
 * Bits-per-weight accounting from what is stored. Every component is counted at the byte
 * size it occupies in the quantized file (packed index words included), so the bpw a plan
 * promises, the bpw a quantizer reports and the file's byte counts agree exactly.
 *
 * bpw = (index + codebook + scale + permutation bytes) * 8 / quantized weights, where the
 * quantized weights are rows * cols of the layer (input padding to a multiple of the
 * vector length is stored but never counted as weights). A channel permutation is stored
 * only when a layer has several channel groups whose order is not the identity
 * ({@linkcode storesChannelOrder}), bit-packed at ceil(log2 rows) bits per row.
 *
 * @module
 */

/** One group of output channels sharing a codebook (WCSG splits a layer into a few). */
export interface VqGroupStorage {
  /** Output channels in the group. */
  rows: number;
  /** Codebook entries of the first stage (K); indices are ceil(log2 K) bits wide. */
  codebookSize: number;
  /** Entries of the optional residual stage codebook, 0 when there is none. */
  residualCodebookSize?: number;
  /** Whether the group's codebooks are stored with this layer (false when shared and counted elsewhere). */
  ownsCodebook?: boolean;
}

/** Storage of one vector-quantized linear layer. */
export interface VqLayerStorage {
  /** Output channels (m). */
  rows: number;
  /** Input columns (n), before padding. */
  cols: number;
  /** Vector length v along the input dimension. */
  vectorLength: number;
  /** Channel groups, in stored order; their rows sum to `rows`. */
  groups: VqGroupStorage[];
  /** Whether a per-output-channel f16 scale is stored. Default true. */
  scales?: boolean;
  /** Whether a channel permutation (ceil(log2 rows) bits per row, packed) is stored. Default false. */
  permutation?: boolean;
}

/** Byte counts of a layer's stored components. */
export interface StorageBytes {
  /** Bytes of the packed indices. */
  indices: number;
  /** Bytes of the f16 codebooks (0 for uniform layers). */
  codebooks: number;
  /** Bytes of the f16 scales: one per row (VQ), or a scale and a zero point per group (uniform). */
  scales: number;
  /** Bytes of the packed channel permutation (0 when not stored). */
  permutation: number;
  /** Sum of the four components, in bytes. */
  total: number;
}

/**
 * Bits needed to store one index into a codebook of `size` entries (at least 1).
 *
 * @example
 * ```ts
 * import { indexBits } from "./bpw.ts";
 * if (indexBits(256) !== 8 || indexBits(65536) !== 16 || indexBits(3) !== 2) throw new Error();
 * ```
 * @param size Codebook entries.
 */
export function indexBits(size: number): number {
  return Math.max(1, Math.ceil(Math.log2(size)));
}

/**
 * Bytes of `count` indices of `bits` bits, bit-packed into little-endian u32 words.
 *
 * @param count Number of indices.
 * @param bits Width of one index.
 */
export function packedIndexBytes(count: number, bits: number): number {
  return 4 * Math.ceil((count * bits) / 32);
}

/**
 * Byte counts of a vector-quantized layer as stored: per group, packed indices of each
 * stage and f16 codebooks [K, v]; per row an f16 scale; optionally a permutation of
 * ceil(log2 rows) bits per row, packed into u32 words like the indices.
 *
 * @example 2 bits per weight from indices alone
 * ```ts
 * import { vqLayerBytes } from "./bpw.ts";
 * const b = vqLayerBytes({ rows: 64, cols: 64, vectorLength: 4, groups: [{ rows: 64, codebookSize: 256 }], scales: false });
 * if (b.indices * 8 / (64 * 64) !== 2) throw new Error();
 * ```
 * @param layer Layer storage description.
 */
export function vqLayerBytes(layer: VqLayerStorage): StorageBytes {
  const vectorsPerRow = Math.ceil(layer.cols / layer.vectorLength);
  let indices = 0, codebooks = 0;
  for (const g of layer.groups) {
    const stages = [g.codebookSize, g.residualCodebookSize ?? 0].filter((k) => k > 0);
    for (const k of stages) {
      indices += packedIndexBytes(g.rows * vectorsPerRow, indexBits(k));
      if (g.ownsCodebook ?? true) codebooks += codebookBytes(k, layer.vectorLength);
    }
  }
  const scales = (layer.scales ?? true) ? 2 * layer.rows : 0;
  const permutation = layer.permutation ? packedIndexBytes(layer.rows, indexBits(layer.rows)) : 0;
  return {
    indices,
    codebooks,
    scales,
    permutation,
    total: indices + codebooks + scales + permutation,
  };
}

/**
 * Whether a layer stores its channel order: only when it has several channel groups and
 * the order is not the identity. A layer with one group has nothing to reorder (its rows
 * are quantized in natural order), so the allocator's plan and the quantizer's file agree
 * on this rule.
 *
 * @example
 * ```ts
 * import { storesChannelOrder } from "./bpw.ts";
 * if (storesChannelOrder([1, 0], 1) || storesChannelOrder([0, 1], 2) || !storesChannelOrder([1, 0], 2)) throw new Error();
 * ```
 * @param order Rows in stored order, [rows].
 * @param groupCount Channel groups of the layer.
 */
export function storesChannelOrder(order: ArrayLike<number>, groupCount: number): boolean {
  if (groupCount <= 1) return false;
  for (let i = 0; i < order.length; i++) if (order[i] !== i) return true;
  return false;
}

/**
 * Bytes of one f16 codebook [size, v]. A codebook shared by several layers is counted once,
 * in the `sharedBytes` of {@linkcode bitsPerWeight}, and in no layer's own bytes.
 *
 * @example
 * ```ts
 * import { codebookBytes } from "./bpw.ts";
 * if (codebookBytes(256, 4) !== 2048) throw new Error();
 * ```
 * @param size Codebook entries K.
 * @param vectorLength Vector length v.
 */
export function codebookBytes(size: number, vectorLength: number): number {
  return 2 * size * vectorLength;
}

/**
 * Byte counts of a uniformly quantized layer (RTN, GPTQ): `bits`-bit codes packed per row
 * into u32 words, and an f16 scale and an f16 zero point per group of `groupSize` columns
 * (the last group of a row may be partial).
 *
 * @param rows Output channels.
 * @param cols Input columns.
 * @param bits Code width in bits (1-8).
 * @param groupSize Columns per scale group.
 */
export function uniformLayerBytes(
  rows: number,
  cols: number,
  bits: number,
  groupSize: number,
): StorageBytes {
  const indices = rows * packedIndexBytes(cols, bits);
  const scales = rows * Math.ceil(cols / groupSize) * 2 * 2;
  return { indices, codebooks: 0, scales, permutation: 0, total: indices + scales };
}

/**
 * Bits per weight of a set of layers: their stored bytes plus `sharedBytes`, times 8, over
 * their weight count. Layers whose groups use shared codebooks leave those codebooks out
 * of their own bytes (`ownsCodebook: false`), and `sharedBytes` counts each shared
 * codebook once, so the result equals the file's bytes over the weights.
 *
 * @example Two layers sharing one codebook
 * ```ts
 * import { bitsPerWeight, codebookBytes, vqLayerBytes } from "./bpw.ts";
 * const bytes = vqLayerBytes({ rows: 8, cols: 8, vectorLength: 4,
 *   groups: [{ rows: 8, codebookSize: 16, ownsCodebook: false }] });
 * const layers = [{ bytes, weights: 64 }, { bytes, weights: 64 }];
 * const bpw = bitsPerWeight(layers, codebookBytes(16, 4));
 * if (bpw !== ((2 * bytes.total + 128) * 8) / 128) throw new Error();
 * ```
 * @param layers Byte counts and weight counts of each quantized layer.
 * @param sharedBytes Bytes stored once for several layers (shared codebooks).
 */
export function bitsPerWeight(
  layers: { bytes: StorageBytes; weights: number }[],
  sharedBytes = 0,
): number {
  let bytes = sharedBytes, weights = 0;
  for (const l of layers) {
    bytes += l.bytes.total;
    weights += l.weights;
  }
  return weights ? (bytes * 8) / weights : 0;
}
