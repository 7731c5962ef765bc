/**
 * Per-sequence gradient statistics on the GPU: running sums of g_s and g_s^2 for the
 * mean gradient and the diagonal empirical Fisher. Reference: {@linkcode statsGradRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";

/**
 * Adds g to sum and g * g to sumSq, elementwise.
 *
 * @example
 * ```ts
 * import { statsGradRef } from "./stats_grad.ts";
 * const sum = new Float64Array(1), sq = new Float64Array(1);
 * statsGradRef(new Float64Array([3]), sum, sq);
 * if (sum[0] !== 3 || sq[0] !== 9) throw new Error();
 * ```
 * @param g One sequence's weight gradient.
 * @param sum Running sum of g, accumulated.
 * @param sumSq Running sum of g^2, accumulated.
 */
export function statsGradRef(g: ArrayLike<number>, sum: Float64Array, sumSq: Float64Array): void {
  for (let i = 0; i < g.length; i++) {
    sum[i] += g[i];
    sumSq[i] += g[i] * g[i];
  }
}

/** Operands of {@linkcode statsGrad}. Whole buffers of n f32. */
export interface StatsGradArgs {
  /** One sequence's weight gradient [n]. */
  g: GPUBuffer;
  /** Running sum of g [n]. */
  sum: GPUBuffer;
  /** Running sum of g^2 [n]. */
  sumSq: GPUBuffer;
  /** Elements. */
  n: number;
}

/**
 * Records sum += g and sumSq += g * g.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and size.
 */
export async function statsGrad(
  gpu: GpuContext,
  batch: GpuBatch,
  args: StatsGradArgs,
): Promise<void> {
  checkSize("statsGrad n", args.n);
  const pipeline = await gpu.pipeline("stats_grad", { WG: FLAT_WORKGROUP });
  const params = batch.uniform(paramWords([args.n]));
  batch.dispatch(pipeline, [args.g, args.sum, args.sumSq, params], flatGrid(gpu, args.n));
}
