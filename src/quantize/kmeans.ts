/**
 * Weighted k-means for codebook training: k-means++ seeding and Lloyd iterations under
 * the diagonal metric sum_d w_d (x_d - c_d)^2, on WebGPU (kernels/nearest_codeword.wgsl
 * and kernels/kmeans_update.wgsl) or, without a GPU, in plain TypeScript.
 *
 * Seeding is k-means++ in rounds: each round samples up to ceil(K / rounds) new centers
 * in proportion to the current squared distance D^2, then one GPU pass updates D^2. With
 * K <= rounds that is exactly k-means++; larger codebooks need only `rounds` round trips
 * (each costs milliseconds on a software adapter). Empty clusters keep their codeword,
 * so the objective never increases from one Lloyd iteration to the next (up to f32
 * rounding on the GPU).
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import type { Rng } from "../util/rng.ts";
import { ShapeError } from "../errors.ts";
import { nearestCodewordsCpu } from "./nearest.ts";
import { GpuKmeans, membersPerPass } from "./kmeans_gpu.ts";

/** Options of {@linkcode weightedKmeans}. */
export interface KmeansOptions {
  /** Codebook size K. */
  k: number;
  /** Vector length v. */
  vectorLength: number;
  /** Lloyd iterations at most; stops earlier when no assignment changes. Default 10. */
  iterations?: number;
  /** Seeding rounds (see the module notes). Default 16. */
  seedRounds?: number;
  /** Seeded generator for k-means++. */
  rng: Rng;
  /** WebGPU context, or null for the TypeScript path. */
  gpu: GpuContext | null;
  /** Members per cluster visited by one update dispatch (tests lower it); default from the loop cap. */
  passCount?: number;
}

/** A trained codebook. */
export interface KmeansResult {
  /** Codewords [K, v]. */
  codebook: Float32Array;
  /** Codeword of each vector under the final codebook [n]. */
  assignment: Uint32Array;
  /** Weighted objective after seeding and after each Lloyd iteration. */
  objective: number[];
}

/**
 * Runs a weighted Lloyd update in TypeScript, the reference for kmeans_update.wgsl. Each
 * codeword becomes the per-dimension weighted mean of its members, and dimensions whose
 * member weights sum to zero keep their value.
 *
 * @example
 * ```ts
 * import { weightedCentroidsCpu } from "./kmeans.ts";
 * const c = weightedCentroidsCpu(new Float32Array([0, 2, 9]), new Float32Array([1, 3, 1]),
 *   new Uint32Array([0, 0, 1]), new Float32Array([5, 5]), 1);
 * if (c[0] !== 1.5 || c[1] !== 9) throw new Error();
 * ```
 * @param points Vectors [n, v].
 * @param weights Weights [n, v].
 * @param assignment Cluster of each vector [n].
 * @param codebook Current codewords [K, v].
 * @param v Vector length.
 * @returns New codewords [K, v].
 */
export function weightedCentroidsCpu(
  points: Float32Array,
  weights: Float32Array,
  assignment: Uint32Array,
  codebook: Float32Array,
  v: number,
): Float32Array {
  const k = codebook.length / v;
  const sum = new Float64Array(k * v), wsum = new Float64Array(k * v);
  for (let i = 0; i < assignment.length; i++) {
    const c = assignment[i] * v;
    for (let d = 0; d < v; d++) {
      const w = weights[i * v + d];
      sum[c + d] += w * points[i * v + d];
      wsum[c + d] += w;
    }
  }
  const out = codebook.slice();
  for (let j = 0; j < k * v; j++) if (wsum[j] > 0) out[j] = sum[j] / wsum[j];
  return out;
}

/**
 * Seeds K codewords by k-means++ in rounds (see the module notes).
 *
 * @param points Vectors [n, v].
 * @param v Vector length.
 * @param k Codebook size.
 * @param rounds Seeding rounds.
 * @param rng Seeded generator.
 * @param distanceTo Weighted squared distance of every vector to its nearest of a center batch.
 * @returns Seed codewords [K, v].
 */
export async function seedKmeansPlusPlus(
  points: Float32Array,
  v: number,
  k: number,
  rounds: number,
  rng: Rng,
  distanceTo: (centers: Float32Array) => Promise<Float64Array>,
): Promise<Float32Array> {
  const n = points.length / v;
  const chosen: number[] = [rng.nextInt(n)];
  let batch = [chosen[0]];
  const d2 = new Float64Array(n).fill(Infinity);
  const perRound = Math.max(1, Math.ceil(k / rounds));
  const cumulative = new Float64Array(n);
  while (chosen.length < k) {
    const dist = await distanceTo(gather(points, v, batch));
    let total = 0;
    for (let i = 0; i < n; i++) {
      if (dist[i] < d2[i]) d2[i] = dist[i];
      total += d2[i] > 0 ? d2[i] : 0;
      cumulative[i] = total;
    }
    if (!(total > 0)) break;
    const seen = new Set<string>();
    batch = [];
    const want = Math.min(perRound, k - chosen.length);
    for (let s = 0; s < want; s++) {
      const i = upperBound(cumulative, rng.next() * total);
      const key = points.subarray(i * v, i * v + v).join(",");
      if (seen.has(key)) continue;
      seen.add(key);
      batch.push(i);
    }
    chosen.push(...batch);
  }
  // Fewer distinct vectors than codewords: the rest repeat chosen seeds (they stay unused).
  while (chosen.length < k) chosen.push(chosen[rng.nextInt(chosen.length)]);
  return gather(points, v, chosen);
}

function upperBound(cumulative: Float64Array, target: number): number {
  let lo = 0, hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid] > target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function gather(points: Float32Array, v: number, ids: number[]): Float32Array {
  const out = new Float32Array(ids.length * v);
  ids.forEach((id, j) => out.set(points.subarray(id * v, id * v + v), j * v));
  return out;
}

/**
 * Trains a codebook by weighted k-means (k-means++ seeding, Lloyd iterations).
 *
 * @example
 * ```ts
 * import { weightedKmeans } from "./kmeans.ts";
 * import { Rng } from "../util/rng.ts";
 * const points = new Float32Array([0, 0.1, 5, 5.1]);
 * const r = await weightedKmeans(points, new Float32Array(4).fill(1), { k: 2, vectorLength: 1, rng: new Rng(1), gpu: null });
 * if (Math.abs(r.codebook[r.assignment[3]] - 5.05) > 1e-6) throw new Error();
 * ```
 * @param points Vectors [n, v].
 * @param weights Per-element weights [n, v] (0 for padding).
 * @param options Codebook size, iterations, seed and device.
 */
export async function weightedKmeans(
  points: Float32Array,
  weights: Float32Array,
  options: KmeansOptions,
): Promise<KmeansResult> {
  const v = options.vectorLength, k = options.k, n = points.length / v;
  if (!Number.isInteger(n) || n < 1 || weights.length !== points.length || !(k >= 1)) {
    throw new ShapeError(
      `Weighted k-means needs points [n >= 1, ${v}] and weights of the same shape and K >= 1: got ${points.length} points, ${weights.length} weights, K ${k}`,
    );
  }
  const iterations = options.iterations ?? 10, rounds = options.seedRounds ?? 16;
  if (options.gpu) {
    const state = new GpuKmeans(
      options.gpu,
      points,
      weights,
      v,
      k,
      options.passCount ?? membersPerPass(v),
    );
    try {
      const seed = await seedKmeansPlusPlus(
        points,
        v,
        k,
        rounds,
        options.rng,
        (c) => state.distanceTo(c),
      );
      options.gpu.write(state.codebook, seed);
      return await lloyd(iterations, (a) => state.step(a));
    } finally {
      state.destroy();
    }
  }
  const job = { vectorLength: v, points, weights };
  const seed = await seedKmeansPlusPlus(
    points,
    v,
    k,
    rounds,
    options.rng,
    (c) => Promise.resolve(nearestCodewordsCpu({ ...job, codebook: c }).score),
  );
  let codebook = seed;
  return await lloyd(iterations, (a) => {
    if (a) codebook = weightedCentroidsCpu(points, weights, a, codebook, v);
    return Promise.resolve({ ...nearestCodewordsCpu({ ...job, codebook }), codebook });
  });
}

async function lloyd(
  iterations: number,
  step: (
    a: Uint32Array | null,
  ) => Promise<{ index: Uint32Array; score: Float64Array; codebook: Float32Array }>,
): Promise<KmeansResult> {
  let current = await step(null);
  const objective = [sum(current.score)];
  for (let t = 0; t < iterations; t++) {
    const next = await step(current.index);
    objective.push(sum(next.score));
    const changed = next.index.some((a, i) => a !== current.index[i]);
    current = next;
    if (!changed) break;
  }
  return { codebook: current.codebook, assignment: current.index, objective };
}

function sum(a: Float64Array): number {
  let s = 0;
  for (const x of a) s += x;
  return s;
}
