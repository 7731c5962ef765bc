/**
 * Gradient engines: what runs the forward and backward pass of one calibration sequence
 * and adds its statistics to the accumulator. The CPU engine is the double-precision
 * TypeScript reference; the WebGPU engine (gpu_engine.ts) keeps its sums on the device
 * and copies them into the accumulator only for checkpoints and the final file.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { ReferenceBackward } from "../model/reference_backward.ts";
import type { FisherAccumulator } from "./accumulator.ts";

/** Runs sequences through forward and backward passes and accumulates their statistics. */
export interface GradientEngine {
  /** Short name for progress lines ("cpu", "gpu"). */
  readonly name: string;
  /**
   * Makes the engine's sums equal to `acc.sums` (after a resumed checkpoint is loaded).
   *
   * @param acc Accumulator whose sums to start from.
   */
  load(acc: FisherAccumulator): Promise<void>;
  /**
   * Runs one sequence and adds its statistics; `acc` counts are updated by the caller.
   *
   * @param tokens Token ids of the sequence at positions 0..T-1.
   * @param acc Accumulator (engines that keep sums elsewhere only read its layout).
   * @param labelSeed Seed of labels drawn from the model for the backward pass, or null
   *   to backpropagate the next tokens.
   * @returns The sequence's mean next-token cross-entropy.
   */
  accumulate(tokens: Int32Array, acc: FisherAccumulator, labelSeed: number | null): Promise<number>;
  /**
   * Copies the engine's sums into `acc.sums` (before a checkpoint or the final file).
   *
   * @param acc Accumulator to fill.
   */
  store(acc: FisherAccumulator): Promise<void>;
  /** Frees device memory. */
  dispose(): void;
}

/**
 * The CPU engine: double-precision reference forward and backward, sums in f64.
 *
 * @example
 * ```ts ignore
 * const engine = await CpuEngine.create(model.config, model.weights);
 * const loss = await engine.accumulate(tokens, acc);
 * ```
 */
export class CpuEngine implements GradientEngine {
  readonly name = "cpu";
  #ref: ReferenceBackward;

  private constructor(ref: ReferenceBackward) {
    this.#ref = ref;
  }

  /**
   * Reads the model's weights into the reference backward pass.
   *
   * @param config Hyperparameters.
   * @param weights Tensor store.
   */
  static async create(config: ModelConfig, weights: WeightStore): Promise<CpuEngine> {
    return new CpuEngine(await ReferenceBackward.create(config, weights));
  }

  load(): Promise<void> {
    return Promise.resolve();
  }

  accumulate(
    tokens: Int32Array,
    acc: FisherAccumulator,
    labelSeed: number | null,
  ): Promise<number> {
    const { loss } = this.#ref.backward(tokens, { onLinear: (tap) => acc.addTap(tap), labelSeed });
    return Promise.resolve(loss);
  }

  store(): Promise<void> {
    return Promise.resolve();
  }

  dispose(): void {}
}
