/**
 * {@linkcode GradientEngine} over the WebGPU backward pass (`GpuBackward`): gradients of
 * one sequence per submitted batch, summed over the batch on the CPU. After each
 * optimizer step the new weights are written into the pass's own buffers, so nothing is
 * re-allocated during training.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { GpuBackward } from "../model/gpu_backward.ts";
import type { TrainWeights } from "../model/gpu_backward_buffers.ts";
import { BLOCK_LINEARS, expectedTensors, type ModelConfig, tensorNames } from "../model/config.ts";
import { MemoryWeightStore } from "../model/model.ts";
import type { GpuMatrix } from "../ops/gpu_matrix.ts";
import { ShapeError } from "../errors.ts";
import type { BatchGradients, GradientEngine } from "./gradient_engine.ts";

/**
 * Gradient engine on WebGPU.
 *
 * @example
 * ```ts ignore
 * const gpu = await GpuContext.create();
 * const engine = await GpuGradientEngine.create(gpu, config, params);
 * const { loss, grads } = await engine.gradients([Int32Array.from([0, 5, 9])]);
 * engine.dispose();
 * ```
 */
export class GpuGradientEngine implements GradientEngine {
  readonly config: ModelConfig;
  readonly label: string;
  #gpu: GpuContext;
  #pass: GpuBackward;

  private constructor(gpu: GpuContext, config: ModelConfig, pass: GpuBackward) {
    this.#gpu = gpu;
    this.config = config;
    this.label = `WebGPU (${gpu.adapterName})`;
    this.#pass = pass;
  }

  /**
   * Uploads `params` and builds the pass.
   *
   * @param gpu Device (the caller keeps ownership and destroys it).
   * @param config Hyperparameters.
   * @param params Every tensor by canonical name.
   */
  static async create(
    gpu: GpuContext,
    config: ModelConfig,
    params: ReadonlyMap<string, Float32Array>,
  ): Promise<GpuGradientEngine> {
    const shapes = expectedTensors(config);
    const tensors = new Map(
      [...params].map(([name, data]) => [name, { shape: shapes.get(name)!, data }]),
    );
    const pass = await GpuBackward.create(
      gpu,
      config,
      new MemoryWeightStore("training parameters", tensors),
    );
    return new GpuGradientEngine(gpu, config, pass);
  }

  setWeights(params: ReadonlyMap<string, Float32Array>): Promise<void> {
    for (const [name, target] of weightTargets(this.config, this.#pass.weights)) {
      const data = params.get(name);
      const size = "rows" in target ? target.rows * target.cols : target.size / 4;
      if (!data || data.length !== size) {
        throw new ShapeError(
          `Weight ${name}: expected ${size} values, got ${data?.length ?? "none"}`,
        );
      }
      if (!("rows" in target)) {
        this.#gpu.write(target, data);
        continue;
      }
      for (const chunk of target.chunks) {
        this.#gpu.write(
          chunk.buffer,
          data.subarray(chunk.row0 * target.cols, (chunk.row0 + chunk.rows) * target.cols),
        );
      }
    }
    return Promise.resolve();
  }

  async gradients(batch: readonly Int32Array[]): Promise<BatchGradients> {
    const grads = new Map<string, Float32Array>();
    let loss = 0;
    for (const seq of batch) {
      const r = await this.#pass.run(seq, { weightGrads: true });
      loss += r.loss;
      for (const [name, g] of r.grads!) {
        const acc = grads.get(name);
        if (!acc) grads.set(name, g);
        else for (let i = 0; i < g.length; i++) acc[i] += g[i];
      }
    }
    const inv = 1 / batch.length;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= inv;
    return { loss: loss * inv, grads };
  }

  async loss(batch: readonly Int32Array[]): Promise<number> {
    // TODO: the pass has no forward-only mode, so held-out loss pays for a backward pass.
    let sum = 0;
    for (const seq of batch) sum += (await this.#pass.run(seq)).loss;
    return sum / batch.length;
  }

  dispose(): void {
    this.#pass.dispose();
  }
}

/** Maps each canonical tensor name to the buffer or row-chunked matrix holding it on the GPU. */
function weightTargets(config: ModelConfig, w: TrainWeights): Map<string, GPUBuffer | GpuMatrix> {
  const out = new Map<string, GPUBuffer | GpuMatrix>();
  out.set(tensorNames.embed, w.embed);
  if (!config.tiedEmbeddings) out.set(tensorNames.lmHead, w.head);
  out.set(tensorNames.finalNorm, w.finalNorm);
  w.blocks.forEach((b, l) => {
    out.set(tensorNames.attnNorm(l), b.attnNorm);
    out.set(tensorNames.ffnNorm(l), b.ffnNorm);
    for (const which of BLOCK_LINEARS) out.set(tensorNames.linear(l, which), b.linears[which]);
    if (b.bias) {
      out.set(tensorNames.bias(l, "self_attn.q_proj"), b.bias.q);
      out.set(tensorNames.bias(l, "self_attn.k_proj"), b.bias.k);
      out.set(tensorNames.bias(l, "self_attn.v_proj"), b.bias.v);
    }
  });
  return out;
}
