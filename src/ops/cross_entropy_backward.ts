/**
 * Mean next-token cross-entropy of one sequence and its gradient: the double-precision
 * reference and the WebGPU kernel cross_entropy_backward.wgsl.
 *
 * Row t of the logits predicts token t + 1, so a sequence of T tokens has T - 1 predicted
 * positions: loss = 1/(T-1) sum_{t<T-1} (logsumexp(z_t) - z_t[tokens[t+1]]). The gradient
 * is dz_t = (softmax(z_t) - onehot(tokens[t+1])) / (T-1), and zero on the last row.
 *
 * With sampled labels the gradient's target at row t is not tokens[t + 1] but a label drawn
 * from softmax(z_t) by the Gumbel-max trick, with noise from a hash of (seed, t, column).
 * Then the expected outer product of such gradients is the true Fisher of the model's
 * predictive distribution (the metric of a KL divergence to it) rather than the empirical
 * Fisher of the data's next tokens. The loss still scores the next tokens.
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
 * @param labelSeed Seed of labels sampled from the model (see {@linkcode sampledLabel}), or
 *   null for the next tokens.
 * @returns The loss and dLoss/dLogits [T, vocab].
 */
export function crossEntropy64(
  logits: Float64Array,
  tokens: ArrayLike<number>,
  vocab: number,
  labelSeed: number | null = null,
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
    const label = labelSeed === null
      ? target
      : sampledLabel(logits.subarray(o, o + vocab), labelSeed, t);
    dLogits[o + label] -= inv;
  }
  return { loss, dLogits };
}

/**
 * PCG hash of a 32-bit integer (Jarzynski and Olano, "Hash Functions for GPU Rendering",
 * JCGT 2020), the same as `pcg` in cross_entropy_backward.wgsl.
 *
 * @example
 * ```ts
 * import { pcgHash } from "./cross_entropy_backward.ts";
 * if (pcgHash(1) === pcgHash(2) || pcgHash(1) !== pcgHash(1)) throw new Error();
 * ```
 * @param v Any integer; taken modulo 2^32.
 * @returns An unsigned 32-bit integer.
 */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/**
 * Draws the label of one row from softmax(logits) by the Gumbel-max trick: the argmax
 * of logits[j] - log(-log(u_j)), with u_j in (0, 1) from 24 bits of
 * pcg(seed + pcg(t + pcg(j))). Equal values go to the smaller index. The kernel draws the
 * same label except where two columns tie within f32 rounding.
 *
 * @example
 * ```ts
 * import { sampledLabel } from "./cross_entropy_backward.ts";
 * // one column far above the rest is drawn almost surely
 * if (sampledLabel(new Float64Array([0, 50, 0]), 7, 0) !== 1) throw new Error();
 * ```
 * @param logits One row of logits [vocab].
 * @param seed Label seed of the sequence (u32).
 * @param t Row (position) in the sequence.
 * @returns The drawn column.
 */
export function sampledLabel(logits: ArrayLike<number>, seed: number, t: number): number {
  let best = -Infinity, bestIndex = 0;
  for (let j = 0; j < logits.length; j++) {
    const h = pcgHash((seed >>> 0) + pcgHash(t + pcgHash(j)));
    const u = ((h >>> 8) + 0.5) / 16777216;
    const v = logits[j] - Math.log(-Math.log(u));
    if (v > best) {
      best = v;
      bestIndex = j;
    }
  }
  return bestIndex;
}

/**
 * Label seed of one calibration sequence: a hash of the run's seed and the sequence's
 * index, so every sequence draws its own labels and a resumed run draws the same ones.
 *
 * @example
 * ```ts
 * import { sequenceLabelSeed } from "./cross_entropy_backward.ts";
 * if (sequenceLabelSeed(0, 1) === sequenceLabelSeed(0, 2)) throw new Error();
 * ```
 * @param seed Seed of the run.
 * @param sequence Index of the sequence in the run.
 */
export function sequenceLabelSeed(seed: number, sequence: number): number {
  return pcgHash((seed >>> 0) + pcgHash(sequence));
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
  /** Seed of labels sampled from the model ({@linkcode sampledLabel}); null or absent for the next tokens. */
  labelSeed?: number | null;
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
  // three strided passes over the row per invocation (four with sampled labels), plus the reductions
  const sampled = args.labelSeed !== undefined && args.labelSeed !== null;
  const passes = sampled ? 4 : 3;
  if (passes * Math.ceil(vocab / ROW_WORKGROUP) + passes * ROW_WORKGROUP > LOOP_BUDGET) {
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
    paramWords(
      [
        rows,
        vocab,
        row0,
        seqLen,
        logits.offset,
        sampled ? 1 : 0,
        sampled ? args.labelSeed! >>> 0 : 0,
      ],
      [1 / (seqLen - 1)],
    ),
  );
  batch.dispatch(pipeline, [args.tokens, logits.binding, args.losses, params], rowGrid(gpu, rows));
}
