/**
 * Builds a {@linkcode CausalLM} for a loaded checkpoint on the chosen forward engine, so
 * evaluation and comparison tasks share one `--engine` switch.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import type { LoadedModel } from "../model/model.ts";
import { ReferenceModel } from "../model/reference.ts";
import { GpuModel } from "../model/gpu_model.ts";
import type { GpuContext } from "../gpu/device.ts";
import { UsageError } from "../errors.ts";

/** Forward implementations: WebGPU, or the plain TypeScript reference. */
export type Engine = "gpu" | "reference";

/** Engines accepted by `--engine`, in help order. */
export const ENGINES: readonly Engine[] = ["gpu", "reference"];

/**
 * Parses an `--engine` value.
 *
 * @example
 * ```ts
 * import { parseEngine } from "./engine.ts";
 * if (parseEngine("reference") !== "reference") throw new Error();
 * ```
 * @param value Command-line value.
 * @throws {UsageError} Listing the accepted engines.
 */
export function parseEngine(value: string): Engine {
  if ((ENGINES as readonly string[]).includes(value)) return value as Engine;
  throw new UsageError(
    `Invalid --engine ${JSON.stringify(value)}: expected one of ${ENGINES.join(", ")}`,
  );
}

/** Options of {@linkcode createCausalLM}. */
export interface CreateLmOptions {
  /** WebGPU device for the gpu engine; required there, ignored by the reference. */
  gpu?: GpuContext;
  /**
   * Positions the KV cache needs (the evaluation window); default the model's maxSeqLen.
   * Only the gpu engine sizes its cache by it.
   */
  contextLength?: number;
  /** Report the weight upload on stderr. Default false. */
  progress?: boolean;
}

/**
 * Reads `model`'s weights into a forward implementation on `engine`.
 *
 * @example
 * ```ts ignore
 * const gpu = await GpuContext.create();
 * const lm = await createCausalLM(await loadModel("stories260K.bin"), "gpu", { gpu });
 * ```
 * @param model Loaded checkpoint (its weight store stays open; the caller closes it).
 * @param engine Forward implementation.
 * @param options Device, KV cache length and progress.
 * @returns The model; call `dispose()` when done (the device stays the caller's).
 * @throws {UsageError} For the gpu engine without a device.
 */
export async function createCausalLM(
  model: LoadedModel,
  engine: Engine,
  options: CreateLmOptions = {},
): Promise<CausalLM> {
  if (engine === "reference") return await ReferenceModel.create(model.config, model.weights);
  if (!options.gpu) {
    throw new UsageError("The gpu engine needs a GpuContext: pass options.gpu");
  }
  return await GpuModel.create(options.gpu, model.config, model.weights, {
    contextLength: options.contextLength,
    progress: options.progress,
  });
}
