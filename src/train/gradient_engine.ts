/**
 * The small interface the trainer is written against: loss and gradients of a batch of
 * sequences, whatever computes them. The double-precision TypeScript reference
 * (`ReferenceBackward`) is adapted here; a WebGPU engine plugs in the same way.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import { ReferenceBackward } from "../model/reference_backward.ts";
import { ShapeError } from "../errors.ts";

/** Mean loss of a batch and the gradient of that mean for every parameter. */
export interface BatchGradients {
  /** Mean next-token cross-entropy over the batch (nats per predicted token). */
  loss: number;
  /** dLoss/dParam by canonical name, same lengths as the parameters. */
  grads: Map<string, Float32Array>;
}

/** Computes losses and gradients of a Llama model whose weights the trainer owns. */
export interface GradientEngine {
  /** Hyperparameters. */
  readonly config: ModelConfig;
  /** Short description for logs and the model card, such as "WebGPU (llvmpipe)". */
  readonly label: string;
  /**
   * Replaces the engine's copy of the weights (called after every optimizer step).
   *
   * @param params Every tensor of the model by canonical name.
   */
  setWeights(params: ReadonlyMap<string, Float32Array>): Promise<void>;
  /**
   * Loss and gradients of a batch; every sequence has the same length T >= 2 and the
   * loss is the mean over sequences of each one's mean over its T - 1 predictions.
   *
   * @param batch Token ids, B sequences of T.
   */
  gradients(batch: readonly Int32Array[]): Promise<BatchGradients>;
  /**
   * Mean loss of a batch, forward only.
   *
   * @param batch Token ids, B sequences of T.
   */
  loss(batch: readonly Int32Array[]): Promise<number>;
  /** Frees what the engine holds. */
  dispose(): void;
}

/**
 * {@linkcode GradientEngine} over the f64 TypeScript reference backward pass: exact
 * and deterministic, and slow (one sequence at a time on one core).
 *
 * @example
 * ```ts ignore
 * const engine = await ReferenceGradientEngine.create(config, params);
 * const { loss, grads } = await engine.gradients([Int32Array.from([0, 5, 9])]);
 * ```
 */
export class ReferenceGradientEngine implements GradientEngine {
  readonly config: ModelConfig;
  readonly label = "f64 TypeScript reference";
  #ref: ReferenceBackward;

  private constructor(config: ModelConfig, ref: ReferenceBackward) {
    this.config = config;
    this.#ref = ref;
  }

  /**
   * Builds the engine with a copy of `params`.
   *
   * @param config Hyperparameters.
   * @param params Every tensor by canonical name.
   */
  static async create(
    config: ModelConfig,
    params: ReadonlyMap<string, Float32Array>,
  ): Promise<ReferenceGradientEngine> {
    const ref = await ReferenceBackward.create(config, new Map(params));
    return new ReferenceGradientEngine(config, ref);
  }

  setWeights(params: ReadonlyMap<string, Float32Array>): Promise<void> {
    for (const [name, w] of this.#ref.weights) {
      const p = params.get(name);
      if (!p || p.length !== w.length) {
        throw new ShapeError(
          `Weight ${name}: expected ${w.length} values, got ${p?.length ?? "none"}`,
        );
      }
      // The reference keeps f64 copies; perturbing them in place is its documented use.
      for (let i = 0; i < w.length; i++) w[i] = p[i];
    }
    return Promise.resolve();
  }

  gradients(batch: readonly Int32Array[]): Promise<BatchGradients> {
    const sum = new Map<string, Float64Array>();
    let loss = 0;
    for (const seq of batch) {
      const r = this.#ref.backward(seq);
      loss += r.loss;
      for (const [name, g] of r.grads) {
        const acc = sum.get(name);
        if (!acc) sum.set(name, g);
        else for (let i = 0; i < g.length; i++) acc[i] += g[i];
      }
    }
    const grads = new Map<string, Float32Array>();
    const inv = 1 / batch.length;
    for (const [name, g] of sum) {
      const out = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) out[i] = g[i] * inv;
      grads.set(name, out);
    }
    return Promise.resolve({ loss: loss * inv, grads });
  }

  loss(batch: readonly Int32Array[]): Promise<number> {
    let sum = 0;
    for (const seq of batch) sum += this.#ref.loss(seq);
    return Promise.resolve(sum / batch.length);
  }

  dispose(): void {}
}
