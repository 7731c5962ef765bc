/**
 * Shared resources of one pipeline run, each created only when a step needs it: the
 * loaded original model, the WebGPU device and a forward pass of the original model.
 * A run that reuses every step creates neither the device nor the forward pass.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import type { LoadedModel } from "../model/model.ts";
import { createCausalLM, type Engine } from "../eval/engine.ts";
import { GpuContext } from "../gpu/device.ts";

/** Lazily created models and device of one pipeline run; call `dispose()` at the end. */
export class PipelineResources {
  /** Original (unquantized) model. */
  readonly model: LoadedModel;
  /** Forward engine of sampling, calibration and evaluation. */
  readonly engine: Engine;
  /** Tokens per calibration sequence and evaluation window. */
  readonly seqLen: number;
  /** Positions every KV cache holds: at least `seqLen`, more for long multiple-choice questions. */
  readonly contextLength: number;
  #gpu: Promise<GpuContext> | null = null;
  #original: Promise<CausalLM> | null = null;

  /**
   * Wraps a loaded model.
   *
   * @param model The original model (closed by `dispose()`).
   * @param engine Forward engine.
   * @param seqLen Window length.
   * @param contextLength KV cache positions, at least `seqLen`. Default `seqLen`.
   */
  constructor(model: LoadedModel, engine: Engine, seqLen: number, contextLength = seqLen) {
    this.model = model;
    this.engine = engine;
    this.seqLen = seqLen;
    this.contextLength = Math.max(seqLen, contextLength);
  }

  /** Returns the WebGPU device for the gpu engine (created on first use), or undefined for the reference engine. */
  async gpu(): Promise<GpuContext | undefined> {
    if (this.engine !== "gpu") return undefined;
    this.#gpu ??= GpuContext.create();
    return await this.#gpu;
  }

  /** Returns the original model's forward pass (created on first use) for sampling and reference logits. */
  async original(): Promise<CausalLM> {
    this.#original ??= this.gpu().then((gpu) =>
      createCausalLM(this.model, this.engine, { gpu, contextLength: this.contextLength })
    );
    return await this.#original;
  }

  /**
   * Builds a forward pass of another model (a quantized one) on the same engine and device.
   *
   * @param model Loaded model; the caller disposes the result and closes the model.
   */
  async forward(model: LoadedModel): Promise<CausalLM> {
    return await createCausalLM(model, this.engine, {
      gpu: await this.gpu(),
      contextLength: this.contextLength,
    });
  }

  /** Releases the forward pass, the device and the model's files. */
  async dispose(): Promise<void> {
    if (this.#original) (await this.#original.catch(() => null))?.dispose();
    if (this.#gpu) (await this.#gpu.catch(() => null))?.destroy();
    this.model.weights.close();
  }
}
