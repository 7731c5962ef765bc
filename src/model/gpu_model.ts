/**
 * The WebGPU forward pass in f32: the same decoder as {@linkcode ReferenceModel}
 * (RMSNorm, both rotary conventions, grouped-query attention, optional q/k/v biases,
 * SwiGLU, tied or untied head) with weights and the KV cache on the GPU. Each
 * `forward` call records every dispatch into one batch, submits once and reads the
 * logits back once.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import type { ModelConfig } from "./config.ts";
import type { CausalLM, ForwardOptions } from "./causal_lm.ts";
import type { WeightStore } from "./model.ts";
import { UsageError } from "../errors.ts";
import { add } from "../ops/add.ts";
import { attention } from "../ops/attention.ts";
import { embedding } from "../ops/embedding.ts";
import { linearAny as linear } from "../ops/quantized_linear.ts";
import { rmsnorm } from "../ops/rmsnorm.ts";
import { rope } from "../ops/rope.ts";
import { swiglu } from "../ops/swiglu.ts";
import {
  allocateRunBuffers,
  checkShapes,
  type ModelWeights,
  releaseRunBuffers,
  releaseWeights,
  type RunBuffers,
  uploadWeights,
  weightBytes,
} from "./gpu_model_buffers.ts";

/** Options of {@linkcode GpuModel.create}. */
export interface GpuModelOptions {
  /** Positions the KV cache holds; default and maximum config.maxSeqLen. */
  contextLength?: number;
  /**
   * Tokens processed per pass inside one forward call (longer prompts take several
   * passes in the same submit). Default 128, lowered so that activations fit one
   * storage binding.
   */
  maxBatchTokens?: number;
  /** Cap on the bytes of one weight chunk; default the device's binding limit. Tests lower it to force chunking. */
  maxChunkBytes?: number;
  /** Report the weight upload on stderr. Default false. */
  progress?: boolean;
}

/**
 * The WebGPU decoder.
 *
 * @example Greedy next token after BOS
 * ```ts ignore
 * const gpu = await GpuContext.create();
 * const lm = await GpuModel.create(gpu, model.config, model.weights);
 * const next = argmax(await lm.forward([1], { lastOnly: true }));
 * lm.dispose();
 * gpu.destroy();
 * ```
 */
export class GpuModel implements CausalLM {
  readonly config: ModelConfig;
  /** Positions the KV cache holds. */
  readonly contextLength: number;
  #gpu: GpuContext;
  #weights: ModelWeights;
  #run: RunBuffers;
  #pos = 0;

  private constructor(
    gpu: GpuContext,
    config: ModelConfig,
    contextLength: number,
    weights: ModelWeights,
    run: RunBuffers,
  ) {
    this.#gpu = gpu;
    this.config = config;
    this.contextLength = contextLength;
    this.#weights = weights;
    this.#run = run;
  }

  /**
   * Checks every tensor's shape, uploads the weights one tensor at a time (matrices
   * larger than one storage binding are split into row chunks) and allocates the KV
   * cache and activations.
   *
   * @param gpu Device to run on.
   * @param config Hyperparameters.
   * @param weights Tensor store under canonical names.
   * @param options Context length, pass size, chunk cap, progress.
   * @throws {ShapeError} When a tensor's shape disagrees with the config.
   * @throws {UsageError} When the context or pass size is invalid or cannot fit the device.
   */
  static async create(
    gpu: GpuContext,
    config: ModelConfig,
    weights: WeightStore,
    options: GpuModelOptions = {},
  ): Promise<GpuModel> {
    checkShapes(config, weights);
    const contextLength = options.contextLength ?? config.maxSeqLen;
    if (
      !Number.isSafeInteger(contextLength) || contextLength < 1 || contextLength > config.maxSeqLen
    ) {
      throw new UsageError(
        `contextLength ${contextLength} must be an integer in [1, ${config.maxSeqLen}] (the model's maxSeqLen)`,
      );
    }
    const run = allocateRunBuffers(gpu, config, contextLength, options.maxBatchTokens ?? 128);
    try {
      const uploaded = await uploadWeights(gpu, config, weights, options);
      return new GpuModel(gpu, config, contextLength, uploaded, run);
    } catch (err) {
      releaseRunBuffers(gpu, run);
      throw err;
    }
  }

  /** Bytes of the weights on the GPU (quantized layers count their stored bytes). */
  get weightBytes(): number {
    return weightBytes(this.#weights);
  }

  get position(): number {
    return this.#pos;
  }

  reset(): void {
    this.#pos = 0;
  }

  /**
   * Drops cached positions at and after `position`; the rows before it stay valid
   * because each position's keys and values are written once.
   *
   * @param position New cache length, from 0 to the current position.
   * @throws {UsageError} When `position` is outside that range.
   */
  truncate(position: number): void {
    if (!(Number.isSafeInteger(position) && position >= 0 && position <= this.#pos)) {
      throw new UsageError(`Cannot truncate the KV cache to ${position}: expected 0..${this.#pos}`);
    }
    this.#pos = position;
  }

  async forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    const c = this.config, run = this.#run, gpu = this.#gpu;
    const T = tokens.length;
    if (T === 0) throw new UsageError("Empty token list: forward needs at least one token");
    if (this.#pos + T > this.contextLength) {
      throw new UsageError(
        `Context is full: ${T} tokens at position ${this.#pos} pass the context length ${this.contextLength}`,
      );
    }
    const ids = new Uint32Array(T);
    for (let t = 0; t < T; t++) {
      const id = tokens[t];
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) {
        throw new UsageError(`Token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
      }
      ids[t] = id;
    }
    gpu.write(run.ids, ids);

    // passes of up to run.tokens rows; each pass's logits are copied out before the next overwrites them
    const V = c.vocabSize;
    const batch = gpu.batch();
    const reads: { row: number; rows: number; handle: ReturnType<GpuBatch["read"]> }[] = [];
    for (let t0 = 0; t0 < T; t0 += run.tokens) {
      const n = Math.min(run.tokens, T - t0);
      const pos = this.#pos + t0;
      const isLast = t0 + n === T;

      // token embedding: x = embed[ids]
      await embedding(gpu, batch, {
        ids: run.ids,
        idsOffset: t0,
        table: this.#weights.embed,
        out: run.x,
        tokens: n,
      });
      for (let l = 0; l < c.nLayers; l++) {
        await this.#attentionBlock(batch, l, n, pos);
        await this.#feedForwardBlock(batch, l, n);
      }

      // final norm and classifier, on the last row only with lastOnly
      if (options.lastOnly && !isLast) continue;
      const rows = options.lastOnly ? 1 : n;
      await rmsnorm(gpu, batch, {
        x: run.x,
        weight: this.#weights.finalNorm,
        out: run.xb,
        rows,
        dim: c.dim,
        eps: c.normEps,
        xOffset: (n - rows) * c.dim,
      });
      await linear(gpu, batch, { x: run.xb, w: this.#weights.head, y: run.logits, rows });
      reads.push({
        row: options.lastOnly ? 0 : t0,
        rows,
        handle: batch.read(run.logits, rows * V * 4),
      });
    }
    await batch.submit();
    this.#pos += T;

    const out = new Float32Array(options.lastOnly ? V : T * V);
    for (const r of reads) out.set(r.handle.f32(), r.row * V);
    return out;
  }

  dispose(): void {
    releaseWeights(this.#gpu, this.#weights);
    releaseRunBuffers(this.#gpu, this.#run);
  }

  // x += Wo @ attention(rope(Wq xb), rope(Wk xb), Wv xb), with xb = rmsnorm(x), for n rows at pos
  async #attentionBlock(batch: GpuBatch, l: number, n: number, pos: number): Promise<void> {
    const c = this.config, run = this.#run, gpu = this.#gpu, w = this.#weights.blocks[l];
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
    const keys = run.keyCache[l], values = run.valueCache[l];
    const cacheRow = pos * kvDim;

    // q, k, v projections of the normed residual; k and v go straight into the cache
    await rmsnorm(gpu, batch, {
      x: run.x,
      weight: w.attnNorm,
      out: run.xb,
      rows: n,
      dim: c.dim,
      eps: c.normEps,
    });
    await linear(gpu, batch, { x: run.xb, w: w.wq, y: run.q, rows: n });
    await linear(gpu, batch, { x: run.xb, w: w.wk, y: keys, rows: n, yOffset: cacheRow });
    await linear(gpu, batch, { x: run.xb, w: w.wv, y: values, rows: n, yOffset: cacheRow });
    if (w.bq && w.bk && w.bv) {
      await add(gpu, batch, { x: run.q, y: w.bq, n: n * qDim, period: qDim });
      await add(gpu, batch, { x: keys, y: w.bk, n: n * kvDim, period: kvDim, xOffset: cacheRow });
      await add(gpu, batch, { x: values, y: w.bv, n: n * kvDim, period: kvDim, xOffset: cacheRow });
    }

    // rotary embedding of q and of the new cached keys
    const style = c.ropeStyle, headDim = c.headDim, table = run.ropeTable;
    await rope(gpu, batch, {
      x: run.q,
      table,
      rows: n,
      nHeads: c.nHeads,
      headDim,
      pos0: pos,
      style,
    });
    await rope(gpu, batch, {
      x: keys,
      table,
      rows: n,
      nHeads: c.nKvHeads,
      headDim,
      pos0: pos,
      style,
      offset: cacheRow,
    });

    // causal attention over positions 0 .. pos + n - 1, then x += Wo @ att
    await attention(gpu, batch, {
      q: run.q,
      kCache: keys,
      vCache: values,
      out: run.att,
      scratch: run.scratch,
      rows: n,
      pos0: pos,
      nHeads: c.nHeads,
      nKvHeads: c.nKvHeads,
      headDim,
    });
    await linear(gpu, batch, { x: run.att, w: w.wo, y: run.x, rows: n, accumulate: true });
  }

  // x += W_down @ (silu(W_gate @ xb) * (W_up @ xb)), with xb = rmsnorm(x)
  async #feedForwardBlock(batch: GpuBatch, l: number, n: number): Promise<void> {
    const c = this.config, run = this.#run, gpu = this.#gpu, w = this.#weights.blocks[l];
    await rmsnorm(gpu, batch, {
      x: run.x,
      weight: w.ffnNorm,
      out: run.xb,
      rows: n,
      dim: c.dim,
      eps: c.normEps,
    });
    await linear(gpu, batch, { x: run.xb, w: w.wGate, y: run.gate, rows: n });
    await linear(gpu, batch, { x: run.xb, w: w.wUp, y: run.up, rows: n });
    await swiglu(gpu, batch, { gate: run.gate, up: run.up, n: n * c.hiddenDim });
    await linear(gpu, batch, { x: run.gate, w: w.wDown, y: run.x, rows: n, accumulate: true });
  }
}
