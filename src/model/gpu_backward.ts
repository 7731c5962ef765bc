/**
 * The WebGPU training-mode pass over one sequence: a forward pass that keeps every
 * block's activations on the GPU, then the backward pass of the mean next-token
 * cross-entropy to every linear layer's input and output (and, on request, to every
 * weight). It mirrors {@linkcode ReferenceBackward}, which the tests compare it with.
 *
 * The per-block passes live in gpu_block_passes.ts. Attention is computed one head at a
 * time with matrix products (S = Q_h K_g^T, causal softmax, O_h = P V_g), and the backward
 * pass recomputes P per head instead of keeping all heads' [T, T] probabilities, so memory
 * keeps one head's two [T, T] matrices.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { expectedTensors, type ModelConfig, tensorNames } from "./config.ts";
import type { WeightStore } from "./model.ts";
import { UsageError } from "../errors.ts";
import { embedding } from "../ops/embedding.ts";
import { type GpuMatrix, releaseMatrix, uploadMatrix } from "../ops/gpu_matrix.ts";
import { linear } from "../ops/linear.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsnorm } from "../ops/rmsnorm.ts";
import { ropeTable } from "../ops/rope.ts";
import { crossEntropyBackward } from "../ops/cross_entropy_backward.ts";
import { embeddingBackward } from "../ops/embedding_backward.ts";
import { rmsnormBackward, rmsnormWeightBackward } from "../ops/rmsnorm_backward.ts";
import { ropeBackwardTable } from "../ops/rope_backward.ts";
import {
  allocateSequence,
  releaseSequence,
  releaseTrainWeights,
  type SequenceBuffers,
  type TrainWeights,
  uploadTrainWeights,
} from "./gpu_backward_buffers.ts";
import {
  blockBackward,
  blockForward,
  type BlockPassContext,
  type GpuLinearTap,
} from "./gpu_block_passes.ts";

export type { GpuLinearTap };

/** Options of {@linkcode GpuBackward.run}. */
export interface GpuRunOptions {
  /** Records work on each linear layer's tap into the sequence's batch, last layer first. */
  onLinear?: (tap: GpuLinearTap, batch: GpuBatch) => Promise<void>;
  /** Also compute and return the gradient of every weight. Default false. */
  weightGrads?: boolean;
  /** Run only the forward pass and the loss: no backward pass, no taps. Default false. */
  lossOnly?: boolean;
  /**
   * Backpropagate labels drawn from the model's own distribution with this seed instead
   * of the next tokens (src/ops/cross_entropy_backward.ts); the loss still scores the next
   * tokens. Default null.
   */
  labelSeed?: number | null;
}

/** Result of one sequence. */
export interface GpuRunResult {
  /** Mean next-token cross-entropy (nats), summed in f64 from the per-position losses. */
  loss: number;
  /** With `weightGrads`: gradients by canonical name, f32, shaped like the weights. */
  grads?: Map<string, Float32Array>;
}

/** Options of {@linkcode GpuBackward.create}. */
export interface GpuBackwardOptions {
  /** Cap on the bytes of one weight chunk; default the device's binding limit. Tests lower it to force chunking. */
  maxChunkBytes?: number;
  /**
   * Also keep the head transposed, [dim, vocab], for the head's input gradient
   * dlogits @ H. The product over the vocabulary then reads both operands along
   * contiguous rows, which was about 5x faster on Mesa's software Vulkan with a
   * 49152-token vocabulary, at the cost of a second copy of the head. Only for fixed
   * weights: code that rewrites the weight buffers (training) leaves the copy stale.
   * Default false.
   */
  transposedHead?: boolean;
}

/** Gradient storage of a `weightGrads` run, by canonical name. */
type GradStore = Map<string, GpuMatrix>;

/**
 * Forward and backward passes of whole sequences on WebGPU.
 *
 * @example Gradients of one sequence
 * ```ts ignore
 * const gpu = await GpuContext.create();
 * const pass = await GpuBackward.create(gpu, model.config, model.weights);
 * const { loss, grads } = await pass.run([1, 5, 9, 2], { weightGrads: true });
 * pass.dispose();
 * ```
 */
export class GpuBackward {
  /** Hyperparameters. */
  readonly config: ModelConfig;
  /** Device. */
  readonly gpu: GpuContext;
  #w: TrainWeights;
  #seq: SequenceBuffers | null = null;
  #tables: { forward: GPUBuffer; backward: GPUBuffer } | null = null;
  #maxChunkBytes?: number;

  private constructor(
    gpu: GpuContext,
    config: ModelConfig,
    w: TrainWeights,
    maxChunkBytes?: number,
  ) {
    this.gpu = gpu;
    this.config = config;
    this.#w = w;
    this.#maxChunkBytes = maxChunkBytes;
  }

  /**
   * Uploads the weights.
   *
   * @param gpu Device.
   * @param config Hyperparameters.
   * @param weights Tensor store.
   * @param options See {@linkcode GpuBackwardOptions}.
   */
  static async create(
    gpu: GpuContext,
    config: ModelConfig,
    weights: WeightStore,
    options: GpuBackwardOptions = {},
  ): Promise<GpuBackward> {
    const w = await uploadTrainWeights(gpu, config, weights, options);
    return new GpuBackward(gpu, config, w, options.maxChunkBytes);
  }

  /** The uploaded weights' layer matrices, for engines that size statistics like them. */
  get weights(): TrainWeights {
    return this.#w;
  }

  /**
   * Runs the forward and backward pass of one sequence in one submitted batch.
   *
   * @param tokens Token ids at positions 0..T-1 (2 <= T <= maxSeqLen).
   * @param options Linear taps and weight gradients.
   */
  async run(tokens: ArrayLike<number>, options: GpuRunOptions = {}): Promise<GpuRunResult> {
    const c = this.config, gpu = this.gpu, T = tokens.length;
    if (T < 2 || T > c.maxSeqLen) {
      throw new UsageError(
        `Sequence of ${T} tokens: expected between 2 and the model's context ${c.maxSeqLen}`,
      );
    }
    for (let t = 0; t < T; t++) {
      if (!(Number.isInteger(tokens[t]) && tokens[t] >= 0 && tokens[t] < c.vocabSize)) {
        throw new UsageError(
          `Token id ${tokens[t]} at position ${t} is outside the vocabulary [0, ${c.vocabSize})`,
        );
      }
    }
    // NOTE: attention keeps one head's [T, T] scores in one storage binding, which bounds T
    // (8192 tokens need 256 MiB); longer sequences need a tiled attention backward.
    const maxT = Math.floor(Math.sqrt(gpu.limits.maxStorageBufferBindingSize / 4));
    if (T > maxT) {
      throw new UsageError(
        `Sequence of ${T} tokens needs a [${T}, ${T}] f32 attention buffer, beyond this device's maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}: use --seq-len ${maxT} or less, or --engine reference`,
      );
    }
    if (options.lossOnly && (options.weightGrads || options.onLinear)) {
      throw new UsageError(
        "GpuBackward.run: lossOnly runs no backward pass, so it takes neither weightGrads nor onLinear",
      );
    }
    const s = this.#sequence(T);
    gpu.write(s.ids, Uint32Array.from(tokens));
    const grads = options.weightGrads ? this.#zeroGrads() : null;
    const batch = gpu.batch();

    // forward: embedding, blocks, final norm
    await embedding(gpu, batch, {
      ids: s.ids,
      table: this.#w.embed,
      out: s.blocks[0].x,
      tokens: T,
    });
    for (let l = 0; l < c.nLayers; l++) {
      const next = l + 1 < c.nLayers ? s.blocks[l + 1].x : s.xFinal;
      await blockForward(this.#passContext(batch, s), this.#w.blocks[l], s.blocks[l], next);
    }
    await rmsnorm(gpu, batch, {
      x: s.xFinal,
      weight: this.#w.finalNorm,
      out: s.xnFinal,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
    });

    // head and cross-entropy in row chunks, giving dLoss/dxnFinal in s.dxn
    await this.#headBackward(batch, s, grads, options.lossOnly ?? false, options.labelSeed ?? null);
    if (options.lossOnly) return await this.#finish(batch, s, null);
    await rmsnormBackward(gpu, batch, {
      x: s.xFinal,
      dy: s.dxn,
      weight: this.#w.finalNorm,
      dx: s.dx,
      rstd: s.rstd,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
    });
    if (grads) {
      await rmsnormWeightBackward(gpu, batch, {
        x: s.xFinal,
        dy: s.dxn,
        rstd: s.rstd,
        dw: grads.get(tensorNames.finalNorm)!.chunks[0].buffer,
        rows: T,
        dim: c.dim,
      });
    }

    const pass = this.#passContext(batch, s);
    for (let l = c.nLayers - 1; l >= 0; l--) {
      await blockBackward(pass, l, this.#w.blocks[l], grads, options.onLinear);
    }
    if (grads) {
      await embeddingBackward(gpu, batch, {
        ids: s.ids,
        dx: s.dx,
        table: grads.get(tensorNames.embed)!,
        tokens: T,
      });
    }

    return await this.#finish(batch, s, grads);
  }

  /** Submits the batch, reads the losses (and gradients) and sums the loss in f64. */
  async #finish(
    batch: GpuBatch,
    s: SequenceBuffers,
    grads: GradStore | null,
  ): Promise<GpuRunResult> {
    const T = s.T;
    const lossRead = batch.read(s.losses, 4 * T);
    const gradReads = grads
      ? [...grads].map(([name, m]) => ({
        name,
        m,
        reads: m.chunks.map((ch) => batch.read(ch.buffer)),
      }))
      : [];
    await batch.submit();
    const losses = lossRead.f32();
    let sum = 0;
    for (let t = 0; t < T - 1; t++) sum += losses[t];
    const result: GpuRunResult = { loss: sum / (T - 1) };
    if (grads) {
      result.grads = new Map();
      for (const { name, m, reads } of gradReads) {
        const out = new Float32Array(m.rows * m.cols);
        m.chunks.forEach((ch, i) =>
          out.set(reads[i].f32().subarray(0, ch.rows * m.cols), ch.row0 * m.cols)
        );
        result.grads.set(name, out);
        releaseMatrix(this.gpu, m);
      }
    }
    return result;
  }

  /** Frees the weights and activations. */
  dispose(): void {
    if (this.#seq) releaseSequence(this.gpu, this.#seq);
    if (this.#tables) {
      this.gpu.release(this.#tables.forward);
      this.gpu.release(this.#tables.backward);
    }
    releaseTrainWeights(this.gpu, this.#w);
  }

  #sequence(T: number): SequenceBuffers {
    if (this.#seq?.T === T) return this.#seq;
    if (this.#seq) releaseSequence(this.gpu, this.#seq);
    if (this.#tables) {
      this.gpu.release(this.#tables.forward);
      this.gpu.release(this.#tables.backward);
    }
    const c = this.config;
    this.#seq = allocateSequence(this.gpu, c, T);
    this.#tables = {
      forward: this.gpu.upload(ropeTable(T, c.headDim, c.ropeTheta), "rope"),
      backward: this.gpu.upload(ropeBackwardTable(T, c.headDim, c.ropeTheta), "rope backward"),
    };
    return this.#seq;
  }

  /** The device, batch, sequence buffers and rotary tables that a block pass works on. */
  #passContext(batch: GpuBatch, seq: SequenceBuffers): BlockPassContext {
    return { gpu: this.gpu, batch, config: this.config, seq, ropeTables: this.#tables! };
  }

  #zeroGrads(): GradStore {
    const grads: GradStore = new Map();
    for (const [name, shape] of expectedTensors(this.config)) {
      const [rows, cols] = shape.length === 2 ? shape : [1, shape[0]];
      grads.set(
        name,
        uploadMatrix(
          this.gpu,
          new Float32Array(rows * cols),
          rows,
          cols,
          `grad ${name}`,
          this.#maxChunkBytes,
        ),
      );
    }
    return grads;
  }

  async #headBackward(
    batch: GpuBatch,
    s: SequenceBuffers,
    grads: GradStore | null,
    lossOnly: boolean,
    labelSeed: number | null,
  ): Promise<void> {
    const c = this.config, gpu = this.gpu, T = s.T, V = c.vocabSize, head = this.#w.head;
    const headGrad = grads?.get(c.tiedEmbeddings ? tensorNames.embed : tensorNames.lmHead);
    for (let t0 = 0; t0 < T; t0 += s.logitRows) {
      const rows = Math.min(s.logitRows, T - t0);
      await linear(gpu, batch, { x: s.xnFinal, xOffset: t0 * c.dim, w: head, y: s.logits, rows });
      await crossEntropyBackward(gpu, batch, {
        tokens: s.ids,
        logits: s.logits,
        losses: s.losses,
        rows,
        vocab: V,
        row0: t0,
        seqLen: T,
        labelSeed,
      });
      if (lossOnly) continue;
      // dxn[t0 : t0 + rows] = dlogits H, from the transposed copy when there is one
      const headT = this.#w.headT;
      if (headT) {
        for (const ch of headT.chunks) {
          await matmul(gpu, batch, {
            a: s.logits,
            b: ch.buffer,
            c: s.dxn,
            m: rows,
            n: ch.rows,
            k: V,
            transB: true,
            ldc: c.dim,
            cOffset: t0 * c.dim + ch.row0,
          });
        }
      }
      for (let i = 0; i < head.chunks.length; i++) {
        const ch = head.chunks[i];
        if (!headT) {
          await matmul(gpu, batch, {
            a: s.logits,
            b: ch.buffer,
            c: s.dxn,
            m: rows,
            n: c.dim,
            k: ch.rows,
            lda: V,
            aOffset: ch.row0,
            cOffset: t0 * c.dim,
            accumulate: i > 0,
          });
        }
        if (headGrad) {
          await matmul(gpu, batch, {
            a: s.logits,
            b: s.xnFinal,
            c: headGrad.chunks[i].buffer,
            m: ch.rows,
            n: c.dim,
            k: rows,
            transA: true,
            lda: V,
            aOffset: ch.row0,
            bOffset: t0 * c.dim,
            accumulate: true,
          });
        }
      }
    }
  }
}
