/**
 * Next-token sampling: greedy at temperature 0, otherwise temperature softmax with
 * nucleus (top-p) truncation, drawn from the toolkit's seeded {@linkcode Rng}.
 *
 * @module
 */
import type { Rng } from "../util/rng.ts";

/** Sampling settings. */
export interface SamplerOptions {
  /** Softmax temperature; 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; 1 disables truncation. Default 1. */
  topP?: number;
}

/**
 * Returns the index of the largest logit (the lowest index on ties).
 *
 * @example
 * ```ts
 * import { argmax } from "./sampler.ts";
 * if (argmax(new Float32Array([0, 3, 1])) !== 1) throw new Error();
 * ```
 * @param logits Scores.
 */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Draws the next token id from `logits`.
 *
 * @example Greedy
 * ```ts
 * import { sampleToken } from "./sampler.ts";
 * import { Rng } from "../util/rng.ts";
 * if (sampleToken(new Float32Array([0, 5, 1]), { temperature: 0 }, new Rng(1)) !== 1) throw new Error();
 * ```
 * @param logits Next-token logits [vocab].
 * @param options Temperature and top-p.
 * @param rng Seeded generator.
 */
export function sampleToken(logits: Float32Array, options: SamplerOptions, rng: Rng): number {
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 1;
  if (temperature <= 0) return argmax(logits);
  const probs = new Float64Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature);
    sum += probs[i];
  }
  for (let i = 0; i < probs.length; i++) probs[i] /= sum;
  if (topP >= 1) return drawFrom(probs, Array.from(probs.keys()), 1, rng);

  // nucleus: the smallest set of most likely tokens whose mass reaches topP
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  let mass = 0, cut = 0;
  while (cut < order.length && mass < topP) mass += probs[order[cut++]];
  return drawFrom(probs, order.slice(0, cut), mass, rng);
}

function drawFrom(probs: Float64Array, candidates: number[], mass: number, rng: Rng): number {
  const r = rng.next() * mass;
  let cdf = 0;
  for (const i of candidates) {
    cdf += probs[i];
    if (r < cdf) return i;
  }
  return candidates[candidates.length - 1];
}
