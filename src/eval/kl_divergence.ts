/**
 * KL divergence of a model's next-token distribution from a reference model's. The
 * statistics follow llama.cpp's perplexity tool (tools/perplexity/perplexity.cpp): the mean
 * with its standard error, percentiles of the per-token values, and how often both models
 * rank the same token first.
 *
 * @module
 */
import { standardError } from "./perplexity.ts";
import { ShapeError } from "../errors.ts";

/**
 * KL(P_ref || P_model) = sum_i p_ref[i] * (log p_ref[i] - log p_model[i]), in nats.
 * Terms where p_ref[i] is exactly 0 contribute 0 (the limit of p log p).
 *
 * @example Two distributions over two ids
 * ```ts
 * import { klDivergence } from "./kl_divergence.ts";
 * const ref = new Float64Array([Math.log(0.5), Math.log(0.5)]);
 * const model = new Float64Array([Math.log(0.25), Math.log(0.75)]);
 * const expected = 0.5 * Math.log(0.5 / 0.25) + 0.5 * Math.log(0.5 / 0.75);
 * if (Math.abs(klDivergence(ref, model) - expected) > 1e-15) throw new Error("wrong KL");
 * ```
 * @param logPRef Reference log-probabilities [vocab].
 * @param logPModel Model log-probabilities [vocab].
 * @param vocab Number of entries to sum over; default the length of `logPRef`.
 * @returns The divergence in nats; exactly 0 for identical inputs.
 */
export function klDivergence(
  logPRef: Float64Array,
  logPModel: Float64Array,
  vocab = logPRef.length,
): number {
  if (logPModel.length < vocab || logPRef.length < vocab) {
    throw new ShapeError(
      `KL divergence needs two rows of ${vocab} log-probabilities, got ${logPRef.length} and ${logPModel.length}`,
    );
  }
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const p = Math.exp(logPRef[i]);
    if (p > 0) sum += p * (logPRef[i] - logPModel[i]);
  }
  return sum;
}

/**
 * Value at `fraction` of sorted `values`, interpolating linearly between the two nearest
 * ranks at position fraction * (n - 1) (the definition llama.cpp's KL statistics use).
 *
 * @example
 * ```ts
 * import { percentile } from "./kl_divergence.ts";
 * if (percentile(new Float64Array([0, 10, 20]), 0.75) !== 15) throw new Error("expected 15");
 * ```
 * @param sorted Values in ascending order, at least one.
 * @param fraction Quantile in [0, 1].
 */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (fraction <= 0) return sorted[0];
  if (fraction >= 1) return sorted[n - 1];
  const position = fraction * (n - 1);
  const low = Math.floor(position);
  const high = Math.min(low + 1, n - 1);
  const weight = position - low;
  return (1 - weight) * sorted[low] + weight * sorted[high];
}

/** Per-token KL divergences and top-1 matches, collected over an evaluation. */
export class KldStats {
  #values: number[] = [];
  #sum = 0;
  #sumSquares = 0;
  #sameTop = 0;

  /**
   * Adds one position's divergence and whether both models' argmax agree.
   *
   * @param kld KL(P_ref || P_model) at this position, in nats.
   * @param sameTop Whether the most likely token is the same under both models.
   */
  add(kld: number, sameTop: boolean): void {
    this.#values.push(kld);
    this.#sum += kld;
    this.#sumSquares += kld * kld;
    if (sameTop) this.#sameTop++;
  }

  /** Number of positions added. */
  get count(): number {
    return this.#values.length;
  }

  /** Mean divergence in nats. */
  get mean(): number {
    return this.#sum / this.count;
  }

  /** Standard error of the mean. */
  get stderr(): number {
    return standardError(this.#sum, this.#sumSquares, this.count);
  }

  /** Fraction of positions whose argmax agrees, in [0, 1]. */
  get top1Agreement(): number {
    return this.#sameTop / this.count;
  }

  /** Standard error of {@linkcode KldStats.top1Agreement}: sqrt(p (1 - p) / (n - 1)). */
  get top1Stderr(): number {
    const p = this.top1Agreement;
    return this.count < 2 ? 0 : Math.sqrt((p * (1 - p)) / (this.count - 1));
  }

  /**
   * Divergence at quantile `fraction` of the per-position values.
   *
   * @param fraction Quantile in [0, 1]: 0.99 for the 99th percentile, 0.5 for the median.
   */
  percentile(fraction: number): number {
    const sorted = Float64Array.from(this.#values).sort();
    return percentile(sorted, fraction);
  }
}
