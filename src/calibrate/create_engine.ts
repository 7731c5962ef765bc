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

/**
 * Creates the calibration engine for `model`.
 *
 * @example
 * ```ts ignore
 * const engine = await createEngine(model, "reference");
 * ```
 * @param model Loaded model.
 * @param engine "gpu" or "reference".
 */
export async function createEngine(model: LoadedModel, engine: Engine): Promise<GradientEngine> {
  if (engine === "reference") return await CpuEngine.create(model.config, model.weights);
  throw new UsageError("The gpu calibration engine is not available yet: pass --engine reference");
}
