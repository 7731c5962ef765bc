/**
 * Trial quantizations for WCSG's measured distortions (`allocateBits` with
 * `distortion: "measured"`): quantize every linear layer in memory with one fixed codebook
 * size and report each layer's Fisher-weighted error. The allocator calls it for a few
 * sizes and fits its knapsack to what the quantizer really leaves, error feedback
 * included, instead of the high-rate model.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import type { LoadedModel } from "../model/model.ts";
import { quantizeLayers } from "./quantize_layers.ts";
import { linearPrefixes } from "./quantize_model.ts";
import { checkQuantizeOptions, resolveQuantizeOptions } from "./quantize_options.ts";
import type { CodebookScope } from "./scope.ts";
import type { StatisticsSource } from "./statistics.ts";
import type { QuantMethod } from "./types.ts";

/** Settings of the trial quantizations; the same as the real quantization's. */
export interface TrialOptions {
  /** VQ method. Default "rsavq". */
  method?: Extract<QuantMethod, "kmeans" | "vptq" | "rsavq">;
  /** Codebook sharing, as in the plan. */
  codebookScope: CodebookScope;
  /** Vector length v. */
  vectorLength: number;
  /** Seed of k-means++. Default 0. */
  seed?: number;
  /** WebGPU context for k-means and assignment, or null. */
  gpu?: GpuContext | null;
  /** Print no per-layer progress. Default false. */
  quiet?: boolean;
}

/**
 * Returns a function that quantizes every linear layer of `model` with codebooks of a
 * given size and returns each layer's Fisher-weighted error (loss units, the K-FAC metric
 * of src/quantize/layer_report.ts) by layer prefix.
 *
 * @example
 * ```ts ignore
 * const trial = trialQuantization(model, stats, { codebookScope: "block", vectorLength: 4 });
 * const plan = await allocateBits(fisher, model.weights, {
 *   bits: 2, groups: 1, scope: "model", codebookScope: "block", distortion: "measured", trial,
 * });
 * ```
 * @param model Model to quantize.
 * @param stats Calibration statistics (the same file the allocation reads).
 * @param options Method, scope, vector length and device.
 */
export function trialQuantization(
  model: LoadedModel,
  stats: StatisticsSource,
  options: TrialOptions,
): (codebookSize: number) => Promise<Map<string, number>> {
  return async (codebookSize) => {
    const o = resolveQuantizeOptions({
      method: options.method ?? "rsavq",
      // The size is fixed, so the target only has to admit it. A codebook can cost more
      // than 16 bits per weight on a small layer, so no finite target is safe.
      bits: Number.POSITIVE_INFINITY,
      out: "",
      codebookSize,
      codebookScope: options.codebookScope,
      vectorLength: options.vectorLength,
      seed: options.seed ?? 0,
      gpu: options.gpu ?? null,
      quiet: options.quiet ?? false,
    });
    checkQuantizeOptions(o, stats);
    const pass = await quantizeLayers(
      model,
      stats,
      o,
      linearPrefixes(model),
      options.codebookScope,
    );
    return new Map(pass.results.map((r) => [r.prefix, r.fisherError ?? NaN]));
  };
}
