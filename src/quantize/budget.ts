/**
 * Turns a target bits-per-weight into per-layer settings that never exceed it, overhead
 * included, using the byte counts of src/quantize/bpw.ts: the widest uniform code, or the
 * largest codebook, whose stored bytes fit the budget of the layer. When layers share
 * codebooks, the budget covers the codebook scope's total weights instead, and the shared
 * codebook is paid once.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { codebookBytes, uniformLayerBytes, vqLayerBytes } from "./bpw.ts";

/** Largest codebook the format and the kernels support. */
export const MAX_CODEBOOK_SIZE = 65536;

/**
 * Widest uniform code (1-8 bits) whose layer bpw, scales and zero points included, is at
 * most `targetBpw`.
 *
 * @example
 * ```ts
 * import { chooseUniformBits } from "./budget.ts";
 * // 64 columns in one group: f16 scale and zero cost 0.5 bpw, so 3 bpw leaves 2-bit codes.
 * if (chooseUniformBits(64, 64, 128, 3) !== 2) throw new Error();
 * ```
 * @param rows Output channels.
 * @param cols Input columns.
 * @param groupSize Columns per group.
 * @param targetBpw Target bits per weight.
 * @throws {UsageError} When even 1-bit codes exceed the target.
 */
export function chooseUniformBits(
  rows: number,
  cols: number,
  groupSize: number,
  targetBpw: number,
): number {
  for (let bits = 8; bits >= 1; bits--) {
    if (uniformLayerBytes(rows, cols, bits, groupSize).total * 8 <= targetBpw * rows * cols) {
      return bits;
    }
  }
  const least = (uniformLayerBytes(rows, cols, 1, groupSize).total * 8) / (rows * cols);
  throw new UsageError(
    `--bits ${targetBpw} is below the ${
      least.toFixed(3)
    } bpw that 1-bit codes with groups of ${groupSize} need on a ${rows}x${cols} layer: raise --bits or --group-size`,
  );
}

/**
 * Bits per weight of one VQ layer with a single group.
 *
 * @param rows Output channels.
 * @param cols Input columns.
 * @param v Vector length.
 * @param k First-stage codebook size.
 * @param residual Residual codebook size (0 for none).
 */
export function vqLayerBpw(rows: number, cols: number, v: number, k: number, residual = 0): number {
  const bytes = vqLayerBytes({
    rows,
    cols,
    vectorLength: v,
    groups: [{ rows, codebookSize: k, residualCodebookSize: residual }],
  });
  return (bytes.total * 8) / (rows * cols);
}

/** Shape of one layer in a codebook scope. */
export interface ScopeLayerShape {
  /** Output channels. */
  rows: number;
  /** Input columns. */
  cols: number;
}

/**
 * Bits per weight of a scope of layers that share one codebook per stage: every layer's
 * indices and scales, plus the shared codebooks counted once, over the scope's weights.
 * For one layer this equals {@linkcode vqLayerBpw}.
 *
 * @param layers Shapes of the scope's layers.
 * @param v Vector length.
 * @param k First-stage codebook size.
 * @param residual Residual codebook size (0 for none).
 */
export function vqScopeBpw(layers: ScopeLayerShape[], v: number, k: number, residual = 0): number {
  let bytes = codebookBytes(k, v) + (residual > 0 ? codebookBytes(residual, v) : 0), weights = 0;
  for (const { rows, cols } of layers) {
    bytes += vqLayerBytes({
      rows,
      cols,
      vectorLength: v,
      groups: [{ rows, codebookSize: k, residualCodebookSize: residual, ownsCodebook: false }],
    }).total;
    weights += rows * cols;
  }
  return (bytes * 8) / weights;
}

/**
 * Largest first-stage codebook size K (2 to 65536) for a scope of layers sharing one
 * codebook: the scope's stored bytes (indices, scales and any residual stage of every
 * layer, plus the shared codebooks once) stay at or below `targetBpw` times the scope's
 * weights. A wider scope spreads the codebook over more weights, so a larger K fits.
 *
 * @example A block shares a larger codebook than one of its layers affords
 * ```ts
 * import { chooseScopeCodebookSize } from "./budget.ts";
 * const one = chooseScopeCodebookSize([{ rows: 64, cols: 64 }], 4, 3);
 * const seven = chooseScopeCodebookSize(Array(7).fill({ rows: 64, cols: 64 }), 4, 3);
 * if (!(seven > one)) throw new Error();
 * ```
 * @param layers Shapes of the scope's layers.
 * @param v Vector length.
 * @param targetBpw Target bits per weight.
 * @param residual Residual codebook size (0 for none).
 * @param scopeName Scope key, for the error message (omit for a single layer).
 * @throws {UsageError} When even K = 2 exceeds the target.
 */
export function chooseScopeCodebookSize(
  layers: ScopeLayerShape[],
  v: number,
  targetBpw: number,
  residual = 0,
  scopeName?: string,
): number {
  const fits = (k: number) => vqScopeBpw(layers, v, k, residual) <= targetBpw;
  if (!fits(2)) {
    const where = scopeName
      ? `the ${layers.length} layers of codebook scope ${scopeName}`
      : `a ${layers[0].rows}x${layers[0].cols} layer`;
    throw new UsageError(
      `--bits ${targetBpw} is below the ${
        vqScopeBpw(layers, v, 2, residual).toFixed(3)
      } bpw that a 2-entry codebook needs on ${where} with vector length ${v}${
        residual ? ` and a ${residual}-entry residual stage` : ""
      }: raise --bits or --vector-length`,
    );
  }
  // Stored bytes never decrease as K grows, so binary search for the last K that fits.
  let lo = 2, hi = MAX_CODEBOOK_SIZE;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Largest first-stage codebook size K (2 to 65536) whose layer bpw, with indices,
 * codebooks, scales and any residual stage counted, is at most `targetBpw`.
 *
 * @example
 * ```ts
 * import { chooseCodebookSize, vqLayerBpw } from "./budget.ts";
 * const k = chooseCodebookSize(64, 64, 4, 2);
 * if (vqLayerBpw(64, 64, 4, k) > 2 || vqLayerBpw(64, 64, 4, k + 1) <= 2) throw new Error();
 * ```
 * @param rows Output channels.
 * @param cols Input columns.
 * @param v Vector length.
 * @param targetBpw Target bits per weight.
 * @param residual Residual codebook size (0 for none).
 * @throws {UsageError} When even K = 2 exceeds the target.
 */
export function chooseCodebookSize(
  rows: number,
  cols: number,
  v: number,
  targetBpw: number,
  residual = 0,
): number {
  return chooseScopeCodebookSize([{ rows, cols }], v, targetBpw, residual);
}
