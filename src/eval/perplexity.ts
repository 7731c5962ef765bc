/**
 * Perplexity: the exponential of the mean negative log-likelihood of each next token,
 * accumulated in double precision, with the standard error of the mean as llama.cpp's
 * perplexity tool reports it.
 *
 * @module
 */
import { logSoftmax } from "./log_softmax.ts";
import { ShapeError } from "../errors.ts";

/** Running sums of per-token negative log-likelihoods (natural log, nats). */
export class NllStats {
  /** Number of scored tokens. */
  count = 0;
  #sum = 0;
  #sumSquares = 0;

  /**
   * Adds one token's negative log-likelihood.
   *
   * @param nll -log p(token | prefix), in nats.
   */
  add(nll: number): void {
    this.count++;
    this.#sum += nll;
    this.#sumSquares += nll * nll;
  }

  /** Mean negative log-likelihood in nats per token (NaN before any token). */
  get mean(): number {
    return this.#sum / this.count;
  }

  /** Standard error of {@linkcode NllStats.mean} (sample variance over count - 1); 0 for one token. */
  get stderr(): number {
    return standardError(this.#sum, this.#sumSquares, this.count);
  }

  /** Perplexity, exp(mean). */
  get perplexity(): number {
    return Math.exp(this.mean);
  }
}

/**
 * Standard error of a mean from running sums: sqrt(var / (n - 1)) with var the population
 * variance sum2/n - mean^2, as llama.cpp's `mean_and_uncertainty` computes it.
 *
 * @param sum Sum of the values.
 * @param sumSquares Sum of their squares.
 * @param count Number of values.
 * @returns The standard error, 0 when count < 2 (and never NaN from rounding below 0).
 */
export function standardError(sum: number, sumSquares: number, count: number): number {
  if (count < 2) return 0;
  const mean = sum / count;
  const variance = Math.max(0, sumSquares / count - mean * mean);
  return Math.sqrt(variance / (count - 1));
}

/**
 * Perplexity of one window from its logits: position t's logits predict token t + 1, so a
 * window of T tokens scores T - 1 predictions.
 *
 * @example Uniform logits over 4 ids give perplexity 4
 * ```ts
 * import { windowPerplexity } from "./perplexity.ts";
 * const ppl = windowPerplexity(new Float32Array(3 * 4), [0, 1, 2], 4);
 * if (Math.abs(ppl - 4) > 1e-12) throw new Error("expected 4");
 * ```
 * @param logits Logits [rows, vocab] with rows >= tokens.length - 1; row t predicts tokens[t + 1].
 * @param tokens The window's token ids, T >= 2 of them.
 * @param vocab Vocabulary size.
 * @returns exp(mean over t of -log softmax(logits[t])[tokens[t + 1]]).
 */
export function windowPerplexity(
  logits: Float32Array,
  tokens: ArrayLike<number>,
  vocab: number,
): number {
  if (tokens.length < 2) {
    throw new ShapeError(
      `A window needs at least 2 tokens to score one prediction, got ${tokens.length}`,
    );
  }
  if (logits.length < (tokens.length - 1) * vocab) {
    throw new ShapeError(
      `Logits hold ${logits.length / vocab} rows of ${vocab}, expected at least ${
        tokens.length - 1
      }`,
    );
  }
  const stats = new NllStats();
  const logProbs = new Float64Array(vocab);
  for (let t = 0; t + 1 < tokens.length; t++) {
    logSoftmax(logits, t * vocab, vocab, logProbs);
    stats.add(-logProbs[tokens[t + 1]]);
  }
  return stats.perplexity;
}
