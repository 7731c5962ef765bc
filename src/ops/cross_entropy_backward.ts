/**
 * Mean next-token cross-entropy of one sequence and its gradient: the double-precision
 * reference and the WebGPU kernel cross_entropy_backward.wgsl.
 *
 * Row t of the logits predicts token t + 1, so a sequence of T tokens has T - 1 predicted
 * positions: loss = 1/(T-1) sum_{t<T-1} (logsumexp(z_t) - z_t[tokens[t+1]]). The gradient
 * is dz_t = (softmax(z_t) - onehot(tokens[t+1])) / (T-1), and zero on the last row.
 *
 * Shapes: logits, dLogits [T, vocab]; tokens [T].
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { bindRange, checkSize, LOOP_BUDGET, paramWords } from "./_common.ts";
import { ROW_WORKGROUP, rowGrid } from "./_backward_common.ts";

/**
 * Computes the mean next-token cross-entropy and its gradient with respect to the logits.
 *
 * @example
 * ```ts
 * import { crossEntropy64 } from "./cross_entropy_backward.ts";
 * const { loss } = crossEntropy64(new Float64Array(4), [0, 1], 2);
 * if (Math.abs(loss - Math.log(2)) > 1e-12) throw new Error("uniform logits give log(vocab)");
 * ```
 * @param logits Logits [T, vocab].
 * @param tokens The sequence's token ids, T of them (at least 2).
 * @param vocab Vocabulary size.
 * @returns The loss and dLoss/dLogits [T, vocab].
 */
export function crossEntropy64(
  logits: Float64Array,
  tokens: ArrayLike<number>,
  vocab: number,
): { loss: number; dLogits: Float64Array } {
  const T = tokens.length;
  if (T < 2) throw new ShapeError(`Cross-entropy needs at least 2 tokens to predict one, got ${T}`);
  if (logits.length !== T * vocab) {
    throw new ShapeError(`Logits hold ${logits.length} values, expected [${T}, ${vocab}]`);
  }
  const dLogits = new Float64Array(T * vocab);
  const inv = 1 / (T - 1);
  let loss = 0;
  for (let t = 0; t < T - 1; t++) {
    const o = t * vocab;
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) if (logits[o + j] > max) max = logits[o + j];
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(logits[o + j] - max);
    const target = tokens[t + 1];
    loss += (Math.log(sum) + max - logits[o + target]) * inv;
    for (let j = 0; j < vocab; j++) dLogits[o + j] = (Math.exp(logits[o + j] - max) / sum) * inv;
    dLogits[o + target] -= inv;
  }
  return { loss, dLogits };
}

/** Operands of {@linkcode crossEntropyBackward}. Offsets count elements. */
export interface CrossEntropyBackwardArgs {
  /** Token ids of the whole sequence as u32 [T]; row t's target is tokens[t + 1]. */
  tokens: GPUBuffer;
  /** Logits of rows [row0, row0 + rows) as [rows, vocab]; overwritten with dLoss/dlogits. */
  logits: GPUBuffer;
  /** Per-position losses (nats) [T]; rows [row0, row0 + rows) are written. */
  losses: GPUBuffer;
  /** Rows in this chunk. */
  rows: number;
  /** Vocabulary size. */
  vocab: number;
  /** Sequence index of the chunk's first row. */
  row0: number;
  /** Tokens in the sequence, T >= 2. */
  seqLen: number;
  /** Element offset of logits[0, 0]. Default 0. */
  logitsOffset?: number;
}

/**
 * Records the cross-entropy backward of a chunk of logit rows (see the module doc for
 * the formula) into `batch`.
 *
 * @example
 * ```ts ignore
 * await crossEntropyBackward(gpu, batch, { tokens, logits, losses, rows: T, vocab, row0: 0, seqLen: T });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 * @throws {ShapeError} When the vocabulary is so large that one invocation would pass the loop cap.
 */
export async function crossEntropyBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: CrossEntropyBackwardArgs,
): Promise<void> {
  const { rows, vocab, row0, seqLen } = args;
  checkSize("crossEntropyBackward rows", rows);
  checkSize("crossEntropyBackward vocab", vocab);
  if (seqLen < 2 || row0 + rows > seqLen) {
    throw new ShapeError(
      `crossEntropyBackward: rows [${row0}, ${
        row0 + rows
      }) outside a sequence of ${seqLen} (at least 2) tokens`,
    );
  }
  // three strided passes over the row per invocation, plus the reductions
  if (3 * Math.ceil(vocab / ROW_WORKGROUP) + 3 * ROW_WORKGROUP > LOOP_BUDGET) {
    throw new ShapeError(
      `crossEntropyBackward: vocabulary ${vocab} is too large for one workgroup per row under the loop cap`,
    );
  }
  const logits = bindRange(
    gpu,
    args.logits,
    args.logitsOffset ?? 0,
    rows * vocab,
    "crossEntropyBackward logits",
  );
  const pipeline = await gpu.pipeline("cross_entropy_backward", { WG: ROW_WORKGROUP });
  const params = batch.uniform(
    paramWords([rows, vocab, row0, seqLen, logits.offset], [1 / (seqLen - 1)]),
  );
  batch.dispatch(pipeline, [args.tokens, logits.binding, args.losses, params], rowGrid(gpu, rows));
}
