/**
 * Log-softmax of one row of logits in double precision, the shared first step of
 * perplexity and KL divergence. Working in f64 keeps the KL divergence of a model against
 * itself at exactly 0 and avoids the cancellation that f32 `log(sum(exp))` suffers on
 * large vocabularies.
 *
 * @module
 */

/**
 * Writes log p[i] = x[i] - max(x) - log(sum_j exp(x[j] - max(x))) for one row of `logits`.
 *
 * @example Two equal logits have log-probability log(1/2)
 * ```ts
 * import { logSoftmax } from "./log_softmax.ts";
 * const out = new Float64Array(2);
 * logSoftmax(new Float32Array([3, 3]), 0, 2, out);
 * if (Math.abs(out[0] - Math.log(0.5)) > 1e-15) throw new Error("wrong log-softmax");
 * ```
 * @param logits Row-major logits, [rows, vocab]; only one row is read.
 * @param offset Index of the row's first element in `logits`.
 * @param vocab Row length.
 * @param out Destination, at least `vocab` long; receives the log-probabilities.
 * @returns The index of the largest logit (the lowest index on ties), which top-1
 *   agreement needs and which the max search finds anyway.
 */
export function logSoftmax(
  logits: ArrayLike<number>,
  offset: number,
  vocab: number,
  out: Float64Array,
): number {
  let argmax = 0;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const x = logits[offset + i];
    if (x > max) {
      max = x;
      argmax = i;
    }
  }

  // Shifting by the max keeps exp from overflowing. The max is subtracted before adding
  // -log(sum), because max + log(sum) rounds log(sum) away when the logits are large.
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i] - max);
  const logSum = Math.log(sum);

  for (let i = 0; i < vocab; i++) out[i] = logits[offset + i] - max - logSum;
  return argmax;
}
