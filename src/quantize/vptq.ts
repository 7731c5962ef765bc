/**
 * The `vptq` method, after VPTQ (Liu et al., 2024). Codebooks come from k-means weighted
 * by the Hessian diagonal A_jj, and codewords are assigned under the same weights. Errors
 * are fed back over column blocks of the vector length through the Cholesky factor of
 * the damped inverse of A, as in GPTQ.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { quantizeVqLayer, type VqLayerInput } from "./vq_layer.ts";
import type { QuantizedLayer, VqLayerJob, VqSettings } from "./types.ts";

/**
 * Builds the VQ-core input of a layer for VPTQ: the metric A_jj on every row and A for
 * error feedback.
 *
 * @param job Weights, channel groups and statistics (A is required).
 * @throws {UsageError} Without statistics.
 */
export function vptqLayerInput(job: VqLayerJob): VqLayerInput {
  if (!job.stats) {
    throw new UsageError(
      `vptq needs calibration statistics for ${job.prefix}: run deno task calibrate and pass --fisher`,
    );
  }
  const { rows, cols } = job, a = job.stats.A;
  const metric = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) metric[r * cols + j] = a[j * cols + j];
  }
  return { ...job, metric, hessian: a, direction: null };
}

/**
 * Quantizes a layer VPTQ-style.
 *
 * @param job Weights, channel groups and statistics (A is required).
 * @param settings VQ settings (lambda and the Fisher metric are ignored).
 * @throws {UsageError} Without statistics.
 */
export async function quantizeVptqLayer(
  job: VqLayerJob,
  settings: VqSettings,
): Promise<QuantizedLayer> {
  return await quantizeVqLayer(vptqLayerInput(job), settings);
}
