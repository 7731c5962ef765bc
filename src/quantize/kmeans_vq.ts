/**
 * The `kmeans` method: plain vector quantization. Codebooks come from unweighted k-means
 * on the scale-normalized weight vectors and every vector takes its nearest codeword; no
 * calibration statistics and no error feedback.
 *
 * @module
 */
import { quantizeVqLayer, type VqLayerInput } from "./vq_layer.ts";
import type { QuantizedLayer, VqLayerJob, VqSettings } from "./types.ts";

/**
 * Builds the VQ-core input of a layer for plain k-means: no metric, no error feedback.
 *
 * @param job Weights and channel groups (statistics are ignored).
 */
export function kmeansLayerInput(job: VqLayerJob): VqLayerInput {
  return { ...job, metric: null, hessian: null, direction: null };
}

/**
 * Quantizes a layer with plain k-means VQ.
 *
 * @param job Weights and channel groups (statistics are ignored).
 * @param settings VQ settings (lambda and the Fisher metric are ignored).
 */
export function quantizeKmeansLayer(
  job: VqLayerJob,
  settings: VqSettings,
): Promise<QuantizedLayer> {
  return quantizeVqLayer(kmeansLayerInput(job), settings);
}
