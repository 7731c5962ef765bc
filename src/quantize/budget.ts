/**
 * Turns a target bits-per-weight into per-layer settings that never exceed it, overhead
 * included, using the byte counts of src/quantize/bpw.ts: the widest uniform code, or the
 * largest codebook, whose stored bytes fit the budget of the layer.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { uniformLayerBytes, vqLayerBytes } from "./bpw.ts";

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
  const fits = (k: number) => vqLayerBpw(rows, cols, v, k, residual) <= targetBpw;
  if (!fits(2)) {
    throw new UsageError(
      `--bits ${targetBpw} is below the ${
        vqLayerBpw(rows, cols, v, 2, residual).toFixed(3)
      } bpw that a 2-entry codebook needs on a ${rows}x${cols} layer with vector length ${v}${
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
