/**
 * Picks the gradient engine behind `--engine`: the WebGPU backward pass or the
 * double-precision TypeScript reference.
 *
 * @module
 */
import type { LoadedModel } from "../model/model.ts";
import type { Engine } from "../eval/engine.ts";
import { CpuEngine, type GradientEngine } from "./engine.ts";
import { UsageError } from "../errors.ts";
import type { GpuContext } from "../gpu/device.ts";
import { GpuEngine } from "./gpu_engine.ts";

/** Options of {@linkcode createEngine}. */
export interface CreateEngineOptions {
  /** Device of the gpu engine; the caller destroys it. */
  gpu?: GpuContext;
  /** Keep full G; must match the calibration run. */
  fullG: boolean;
}

/**
 * Creates the calibration engine for `model`.
 *
 * @example
 * ```ts ignore
 * const engine = await createEngine(model, "reference", { fullG: false });
 * ```
 * @param model Loaded model.
 * @param engine "gpu" or "reference".
 * @param options Device (for "gpu", kept by the caller) and whether full G is kept.
 */
export async function createEngine(
  model: LoadedModel,
  engine: Engine,
  options: CreateEngineOptions,
): Promise<GradientEngine> {
  if (engine === "reference") return await CpuEngine.create(model.config, model.weights);
  if (!options.gpu) {
    throw new UsageError("The gpu calibration engine needs a GpuContext: pass options.gpu");
  }
  return await GpuEngine.create(options.gpu, model.config, model.weights, {
    fullG: options.fullG,
    ownsGpu: false,
  });
}
