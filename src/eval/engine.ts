/**
 * Builds a {@linkcode CausalLM} for a loaded checkpoint on the chosen forward engine, so
 * evaluation and comparison tasks share one `--engine` switch.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import type { LoadedModel } from "../model/model.ts";
import { ReferenceModel } from "../model/reference.ts";
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

/**
 * Reads `model`'s weights into a forward implementation on `engine`.
 *
 * @example
 * ```ts ignore
 * const lm = await createCausalLM(await loadModel("stories260K.bin"), "reference");
 * ```
 * @param model Loaded checkpoint (its weight store stays open; the caller closes it).
 * @param engine Forward implementation.
 * @returns The model; call `dispose()` when done.
 */
export async function createCausalLM(model: LoadedModel, engine: Engine): Promise<CausalLM> {
  if (engine === "reference") return await ReferenceModel.create(model.config, model.weights);
  // TODO: wire the WebGPU forward (GpuModel) in here once it exists.
  throw new UsageError("The gpu engine is not available yet: pass --engine reference");
}
