/**
 * Codebook training and plain assignment for the VQ core: the weighted k-means of one
 * stage, the residual stage trained on what the first stage leaves, and the rule that
 * decides when this work goes to the GPU. A layer's own codebooks (src/quantize/vq_layer.ts)
 * and codebooks shared by a scope of layers (src/quantize/shared_codebooks.ts) are trained
 * by the same function, so a scope of one layer trains exactly the layer's codebook.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { weightedKmeans } from "./kmeans.ts";
import {
  nearestCodewordsCpu,
  nearestCodewordsGpu,
  type NearestJob,
  type NearestResult,
} from "./nearest.ts";
import type { VqSettings } from "./types.ts";
import { roundF16 } from "./uniform.ts";

/** Multiply-adds per pass above which "auto" moves k-means and assignment to the GPU; below
 * it, TypeScript finishes before one GPU round trip would. */
const GPU_WORK = 1 << 24;

/**
 * Returns the GPU context to use for `work` multiply-adds, or null for TypeScript.
 *
 * @param settings Device settings.
 * @param work Multiply-adds of one pass.
 */
export function deviceFor(settings: VqSettings, work: number): GpuContext | null {
  if (!settings.gpu || settings.gpuUse === "never") return null;
  return settings.gpuUse === "always" || work >= GPU_WORK ? settings.gpu : null;
}

/**
 * Trains one f16-exact codebook [k, v] by weighted k-means (advances `settings.rng`).
 *
 * @param points Vectors [n, v] in the scale-normalized space.
 * @param weights Metric weights [n, v] (0 on padding).
 * @param k Codebook size.
 * @param settings Vector length, k-means and device settings.
 */
export async function trainCodebook(
  points: Float32Array,
  weights: Float32Array,
  k: number,
  settings: VqSettings,
): Promise<Float32Array> {
  const { codebook } = await weightedKmeans(points, weights, {
    k,
    vectorLength: settings.vectorLength,
    iterations: settings.iterations,
    seedRounds: settings.seedRounds,
    rng: settings.rng,
    gpu: deviceFor(settings, points.length * k),
  });
  return codebook.map(roundF16);
}

/**
 * Finds the best codeword of every vector of each job, on the GPU when the total work is
 * large enough (see {@linkcode deviceFor}).
 *
 * @param jobs Assignment problems.
 * @param settings Device settings.
 */
export async function assign(jobs: NearestJob[], settings: VqSettings): Promise<NearestResult[]> {
  let work = 0;
  for (const j of jobs) work += j.points.length * (j.codebook.length / j.vectorLength);
  const gpu = deviceFor(settings, work);
  return gpu ? await nearestCodewordsGpu(gpu, jobs) : jobs.map((j) => nearestCodewordsCpu(j));
}

/**
 * Trains the codebooks of one channel group: stage 0 on the vectors, then, when
 * `residualSize` is positive, a residual stage on each vector minus its nearest stage-0
 * codeword under the same weights.
 *
 * @param points Vectors [n, v] in the scale-normalized space.
 * @param weights Metric weights [n, v].
 * @param codebookSize Stage-0 size K.
 * @param residualSize Residual-stage size, 0 for none.
 * @param settings Vector length, k-means and device settings.
 * @returns One f16-exact codebook [K, v] per stage.
 */
export async function trainStageCodebooks(
  points: Float32Array,
  weights: Float32Array,
  codebookSize: number,
  residualSize: number,
  settings: VqSettings,
): Promise<Float32Array[]> {
  const v = settings.vectorLength;
  const codebooks = [await trainCodebook(points, weights, codebookSize, settings)];
  if (residualSize > 0) {
    const [first] = await assign(
      [{ vectorLength: v, points, weights, codebook: codebooks[0] }],
      settings,
    );
    const residual = points.slice();
    for (let i = 0; i < first.index.length; i++) {
      for (let d = 0; d < v; d++) residual[i * v + d] -= codebooks[0][first.index[i] * v + d];
    }
    codebooks.push(await trainCodebook(residual, weights, residualSize, settings));
  }
  return codebooks;
}
