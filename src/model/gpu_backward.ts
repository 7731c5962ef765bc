/**
 * The WebGPU training-mode pass over one sequence: a forward pass that keeps every
 * block's activations on the GPU, then the backward pass of the mean next-token
 * cross-entropy to every linear layer's input and output (and, on request, to every
 * weight). It mirrors {@linkcode ReferenceBackward}, which the tests compare it with.
 *
 * Attention is computed one head at a time with matrix products: S = Q_h K_g^T, causal
 * softmax, O_h = P V_g. The backward pass recomputes P per head instead of keeping all
 * heads' [T, T] probabilities, so memory keeps one head's two [T, T] matrices.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { expectedTensors, type ModelConfig, tensorNames } from "./config.ts";
import type { WeightStore } from "./model.ts";
import type { BlockLinear } from "./reference_backward.ts";
import { UsageError } from "../errors.ts";
import { add } from "../ops/add.ts";
import { embedding } from "../ops/embedding.ts";
import { type GpuMatrix, releaseMatrix, uploadMatrix } from "../ops/gpu_matrix.ts";
import { linear } from "../ops/linear.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsnorm } from "../ops/rmsnorm.ts";
import { rope, ropeTable } from "../ops/rope.ts";
import { swiglu } from "../ops/swiglu.ts";
import { causalSoftmax, softmaxBackward } from "../ops/attention_backward.ts";
import { crossEntropyBackward } from "../ops/cross_entropy_backward.ts";
import { embeddingBackward } from "../ops/embedding_backward.ts";
import { linearBackwardGpu, linearWeightGradGpu } from "../ops/linear_backward.ts";
import { rmsnormBackward, rmsnormWeightBackward } from "../ops/rmsnorm_backward.ts";
import { ropeBackwardTable } from "../ops/rope_backward.ts";
import { swigluBackward } from "../ops/swiglu_backward.ts";
import { statsColsum } from "../ops/stats_colsum.ts";
import {
  allocateSequence,
  type BlockActivations,
  releaseSequence,
  releaseTrainWeights,
  type SequenceBuffers,
  type TrainWeights,
  uploadTrainWeights,
} from "./gpu_backward_buffers.ts";

/** One linear layer's input and output gradient on the GPU, handed to a tap. */
export interface GpuLinearTap {
  /** Block index. */
  layer: number;
  /** The block's linear layer. */
  linear: BlockLinear;
  /** Layer input x [T, in]. */
  x: GPUBuffer;
  /** Output gradient delta [T, out]. */
  dy: GPUBuffer;
  /** Layer weight [out, in] as row chunks (for the widths and the chunking). */
  weight: GpuMatrix;
  /** Tokens. */
  T: number;
}

/** Options of {@linkcode GpuBackward.run}. */
export interface GpuRunOptions {
  /** Records work on each linear layer's tap into the sequence's batch, last layer first. */
  onLinear?: (tap: GpuLinearTap, batch: GpuBatch) => Promise<void>;
  /** Also compute and return the gradient of every weight. Default false. */
  weightGrads?: boolean;
  /** Run only the forward pass and the loss: no backward pass, no taps. Default false. */
  lossOnly?: boolean;
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
      await this.#blockForward(batch, l, s.blocks[l], next);
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
    await this.#headBackward(batch, s, grads, options.lossOnly ?? false);
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

    for (let l = c.nLayers - 1; l >= 0; l--) await this.#blockBackward(batch, l, s, grads, options);
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

  async #blockForward(
    batch: GpuBatch,
    l: number,
    a: BlockActivations,
    next: GPUBuffer,
  ): Promise<void> {
    const c = this.config, gpu = this.gpu, T = this.#seq!.T;
    const b = this.#w.blocks[l], lin = b.linears;
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;

    // q, k, v projections of the normed residual (plus biases), rotated q and k
    await rmsnorm(gpu, batch, {
      x: a.x,
      weight: b.attnNorm,
      out: a.xn1,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
    });
    await linear(gpu, batch, { x: a.xn1, w: lin["self_attn.q_proj"], y: a.q, rows: T });
    await linear(gpu, batch, { x: a.xn1, w: lin["self_attn.k_proj"], y: a.k, rows: T });
    await linear(gpu, batch, { x: a.xn1, w: lin["self_attn.v_proj"], y: a.v, rows: T });
    if (b.bias) {
      await add(gpu, batch, { x: a.q, y: b.bias.q, n: T * qDim, period: qDim });
      await add(gpu, batch, { x: a.k, y: b.bias.k, n: T * kvDim, period: kvDim });
      await add(gpu, batch, { x: a.v, y: b.bias.v, n: T * kvDim, period: kvDim });
    }
    const table = this.#tables!.forward;
    await rope(gpu, batch, {
      x: a.q,
      table,
      rows: T,
      nHeads: c.nHeads,
      headDim: c.headDim,
      pos0: 0,
      style: c.ropeStyle,
    });
    await rope(gpu, batch, {
      x: a.k,
      table,
      rows: T,
      nHeads: c.nKvHeads,
      headDim: c.headDim,
      pos0: 0,
      style: c.ropeStyle,
    });

    // causal attention one head at a time: S = Q_h K_g^T, P = softmax, O_h = P V_g
    const s = this.#seq!;
    for (let h = 0; h < c.nHeads; h++) {
      await this.#probs(batch, a, h);
      const kv = this.#group(h) * c.headDim;
      await matmul(gpu, batch, {
        a: s.scores,
        b: a.v,
        c: a.att,
        m: T,
        n: c.headDim,
        k: T,
        ldb: kvDim,
        bOffset: kv,
        ldc: qDim,
        cOffset: h * c.headDim,
      });
    }

    // x2 = x + o_proj(att); feed-forward x_next = x2 + down(silu(gate(xn2)) * up(xn2))
    batch.copy(a.x, 0, a.x2, 0, 4 * T * c.dim);
    await linear(gpu, batch, {
      x: a.att,
      w: lin["self_attn.o_proj"],
      y: a.x2,
      rows: T,
      accumulate: true,
    });
    await rmsnorm(gpu, batch, {
      x: a.x2,
      weight: b.ffnNorm,
      out: a.xn2,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
    });
    await linear(gpu, batch, { x: a.xn2, w: lin["mlp.gate_proj"], y: a.g, rows: T });
    await linear(gpu, batch, { x: a.xn2, w: lin["mlp.up_proj"], y: a.u, rows: T });
    batch.copy(a.g, 0, a.h, 0, 4 * T * c.hiddenDim);
    await swiglu(gpu, batch, { gate: a.h, up: a.u, n: T * c.hiddenDim });
    batch.copy(a.x2, 0, next, 0, 4 * T * c.dim);
    await linear(gpu, batch, {
      x: a.h,
      w: lin["mlp.down_proj"],
      y: next,
      rows: T,
      accumulate: true,
    });
  }

  /** Computes head h's attention probabilities into the scores buffer. */
  async #probs(batch: GpuBatch, a: BlockActivations, h: number): Promise<void> {
    const c = this.config, s = this.#seq!, T = s.T;
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
    await matmul(this.gpu, batch, {
      a: a.q,
      b: a.k,
      c: s.scores,
      m: T,
      n: T,
      k: c.headDim,
      transB: true,
      lda: qDim,
      aOffset: h * c.headDim,
      ldb: kvDim,
      bOffset: this.#group(h) * c.headDim,
    });
    await causalSoftmax(this.gpu, batch, { scores: s.scores, T, scale: 1 / Math.sqrt(c.headDim) });
  }

  #group(h: number): number {
    return Math.floor(h / (this.config.nHeads / this.config.nKvHeads));
  }

  async #headBackward(
    batch: GpuBatch,
    s: SequenceBuffers,
    grads: GradStore | null,
    lossOnly: boolean,
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

  async #blockBackward(
    batch: GpuBatch,
    l: number,
    s: SequenceBuffers,
    grads: GradStore | null,
    options: GpuRunOptions,
  ): Promise<void> {
    const c = this.config, gpu = this.gpu, T = s.T, a = s.blocks[l], b = this.#w.blocks[l];
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
    const tap = async (which: BlockLinear, x: GPUBuffer, dy: GPUBuffer) => {
      const weight = b.linears[which];
      if (grads) {
        const g = grads.get(tensorNames.linear(l, which))!;
        for (let i = 0; i < weight.chunks.length; i++) {
          await linearWeightGradGpu(
            gpu,
            batch,
            { w: weight, x, T },
            dy,
            weight.chunks[i],
            g.chunks[i].buffer,
          );
        }
      }
      await options.onLinear?.({ layer: l, linear: which, x, dy, weight, T }, batch);
    };
    const normWeightGrad = async (x: GPUBuffer, dy: GPUBuffer, name: string) => {
      if (grads) {
        await rmsnormWeightBackward(gpu, batch, {
          x,
          dy,
          rstd: s.rstd,
          dw: grads.get(name)!.chunks[0].buffer,
          rows: T,
          dim: c.dim,
        });
      }
    };

    // feed-forward: dh = dx W_down, SwiGLU backward, dxn = dg W_gate + du W_up
    await tap("mlp.down_proj", a.h, s.dx);
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["mlp.down_proj"], x: a.h, T },
      s.dx,
      s.dh,
      false,
    );
    await swigluBackward(gpu, batch, { dh: s.dh, g: a.g, u: a.u, n: T * c.hiddenDim });
    await tap("mlp.gate_proj", a.xn2, a.g);
    await tap("mlp.up_proj", a.xn2, a.u);
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["mlp.gate_proj"], x: a.xn2, T },
      a.g,
      s.dxn,
      false,
    );
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["mlp.up_proj"], x: a.xn2, T },
      a.u,
      s.dxn,
      true,
    );
    batch.copy(s.dx, 0, s.dx2, 0, 4 * T * c.dim);
    await rmsnormBackward(gpu, batch, {
      x: a.x2,
      dy: s.dxn,
      weight: b.ffnNorm,
      dx: s.dx2,
      rstd: s.rstd,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
      accumulate: true,
    });
    await normWeightGrad(a.x2, s.dxn, tensorNames.ffnNorm(l));

    // attention output projection, then attention per head with recomputed probabilities
    await tap("self_attn.o_proj", a.att, s.dx2);
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["self_attn.o_proj"], x: a.att, T },
      s.dx2,
      s.datt,
      false,
    );
    const group = c.nHeads / c.nKvHeads;
    for (let h = 0; h < c.nHeads; h++) {
      const qo = h * c.headDim, kvo = this.#group(h) * c.headDim, first = h % group === 0;
      await this.#probs(batch, a, h);
      // dP = dO_h V_g^T, dS = softmax backward, dQ_h = dS K_g, dK_g += dS^T Q_h, dV_g += P^T dO_h
      await matmul(gpu, batch, {
        a: s.datt,
        b: a.v,
        c: s.dp,
        m: T,
        n: T,
        k: c.headDim,
        transB: true,
        lda: qDim,
        aOffset: qo,
        ldb: kvDim,
        bOffset: kvo,
      });
      await softmaxBackward(gpu, batch, {
        probs: s.scores,
        dp: s.dp,
        T,
        scale: 1 / Math.sqrt(c.headDim),
      });
      await matmul(gpu, batch, {
        a: s.dp,
        b: a.k,
        c: s.dq,
        m: T,
        n: c.headDim,
        k: T,
        ldb: kvDim,
        bOffset: kvo,
        ldc: qDim,
        cOffset: qo,
      });
      await matmul(gpu, batch, {
        a: s.dp,
        b: a.q,
        c: s.dk,
        m: T,
        n: c.headDim,
        k: T,
        transA: true,
        ldb: qDim,
        bOffset: qo,
        ldc: kvDim,
        cOffset: kvo,
        accumulate: !first,
      });
      await matmul(gpu, batch, {
        a: s.scores,
        b: s.datt,
        c: s.dv,
        m: T,
        n: c.headDim,
        k: T,
        transA: true,
        ldb: qDim,
        bOffset: qo,
        ldc: kvDim,
        cOffset: kvo,
        accumulate: !first,
      });
    }
    const table = this.#tables!.backward;
    await rope(gpu, batch, {
      x: s.dq,
      table,
      rows: T,
      nHeads: c.nHeads,
      headDim: c.headDim,
      pos0: 0,
      style: c.ropeStyle,
    });
    await rope(gpu, batch, {
      x: s.dk,
      table,
      rows: T,
      nHeads: c.nKvHeads,
      headDim: c.headDim,
      pos0: 0,
      style: c.ropeStyle,
    });

    // q, k, v projections (and biases), then the attention norm and the residual
    await tap("self_attn.q_proj", a.xn1, s.dq);
    await tap("self_attn.k_proj", a.xn1, s.dk);
    await tap("self_attn.v_proj", a.xn1, s.dv);
    if (grads && c.qkvBias) {
      const biases: [
        GPUBuffer,
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj",
        number,
      ][] = [
        [s.dq, "self_attn.q_proj", qDim],
        [s.dk, "self_attn.k_proj", kvDim],
        [s.dv, "self_attn.v_proj", kvDim],
      ];
      for (const [dy, which, n] of biases) {
        await statsColsum(gpu, batch, {
          x: dy,
          out: grads.get(tensorNames.bias(l, which))!.chunks[0].buffer,
          rows: T,
          cols: n,
          square: false,
        });
      }
    }
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["self_attn.q_proj"], x: a.xn1, T },
      s.dq,
      s.dxn,
      false,
    );
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["self_attn.k_proj"], x: a.xn1, T },
      s.dk,
      s.dxn,
      true,
    );
    await linearBackwardGpu(
      gpu,
      batch,
      { w: b.linears["self_attn.v_proj"], x: a.xn1, T },
      s.dv,
      s.dxn,
      true,
    );
    batch.copy(s.dx2, 0, s.dx, 0, 4 * T * c.dim);
    await rmsnormBackward(gpu, batch, {
      x: a.x,
      dy: s.dxn,
      weight: b.attnNorm,
      dx: s.dx,
      rstd: s.rstd,
      rows: T,
      dim: c.dim,
      eps: c.normEps,
      accumulate: true,
    });
    await normWeightGrad(a.x, s.dxn, tensorNames.attnNorm(l));
  }
}
