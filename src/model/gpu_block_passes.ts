/**
 * One transformer block's training-mode passes on WebGPU, recorded into a batch. The
 * forward pass keeps the block's activations. The backward pass computes the gradient of
 * the block's input, hands every linear layer's input and output gradient to a tap, and on
 * request accumulates the block's weight gradients. GpuBackward runs them block by block.
 *
 * Attention runs one head at a time: S = Q_h K_g^T, causal softmax, O_h = P V_g. The
 * backward pass recomputes each head's probabilities instead of keeping them.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { type ModelConfig, tensorNames } from "./config.ts";
import type { BlockLinear } from "./reference_backward.ts";
import { add } from "../ops/add.ts";
import type { GpuMatrix } from "../ops/gpu_matrix.ts";
import { linear } from "../ops/linear.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsnorm } from "../ops/rmsnorm.ts";
import { rope } from "../ops/rope.ts";
import { swiglu } from "../ops/swiglu.ts";
import { causalSoftmax, softmaxBackward } from "../ops/attention_backward.ts";
import { linearBackwardGpu, linearWeightGradGpu } from "../ops/linear_backward.ts";
import { rmsnormBackward, rmsnormWeightBackward } from "../ops/rmsnorm_backward.ts";
import { swigluBackward } from "../ops/swiglu_backward.ts";
import { statsColsum } from "../ops/stats_colsum.ts";
import type { BlockActivations, BlockWeights, SequenceBuffers } from "./gpu_backward_buffers.ts";

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

/** Device, batch, hyperparameters, buffers and rotary tables that a block pass records into. */
export interface BlockPassContext {
  /** Device. */
  gpu: GpuContext;
  /** Batch the dispatches are recorded into. */
  batch: GpuBatch;
  /** Hyperparameters. */
  config: ModelConfig;
  /** Activations and gradient buffers of the current sequence. */
  seq: SequenceBuffers;
  /** Rotary tables of the forward rotation and of its inverse, for T positions. */
  ropeTables: { forward: GPUBuffer; backward: GPUBuffer };
}

/**
 * Records block `b`'s forward pass from `a.x` into `next`, keeping its activations in `a`.
 *
 * @param ctx Device, batch and buffers.
 * @param b The block's weights.
 * @param a The block's activation buffers; `a.x` holds its input [T, dim].
 * @param next Output [T, dim]: the next block's input or the final residual.
 */
export async function blockForward(
  ctx: BlockPassContext,
  b: BlockWeights,
  a: BlockActivations,
  next: GPUBuffer,
): Promise<void> {
  const { gpu, batch, config: c } = ctx;
  const T = ctx.seq.T, lin = b.linears;
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
  await rotateQK(ctx, ctx.ropeTables.forward, a.q, a.k);

  // causal attention one head at a time: S = Q_h K_g^T, P = softmax, O_h = P V_g
  const s = ctx.seq;
  for (let h = 0; h < c.nHeads; h++) {
    await headProbs(ctx, a, h);
    const kv = kvGroup(c, h) * c.headDim;
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

/** Records head h's attention probabilities into the scores buffer. */
async function headProbs(ctx: BlockPassContext, a: BlockActivations, h: number): Promise<void> {
  const { batch, config: c, seq: s } = ctx, T = s.T;
  const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
  await matmul(ctx.gpu, batch, {
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
    bOffset: kvGroup(c, h) * c.headDim,
  });
  await causalSoftmax(ctx.gpu, batch, { scores: s.scores, T, scale: 1 / Math.sqrt(c.headDim) });
}

/** Rotates q [T, nHeads * headDim] and k [T, nKvHeads * headDim] in place by a rotary table. */
async function rotateQK(
  ctx: BlockPassContext,
  table: GPUBuffer,
  q: GPUBuffer,
  k: GPUBuffer,
): Promise<void> {
  const { gpu, batch, config: c } = ctx, T = ctx.seq.T;
  for (const [x, nHeads] of [[q, c.nHeads], [k, c.nKvHeads]] as const) {
    await rope(gpu, batch, {
      x,
      table,
      rows: T,
      nHeads,
      headDim: c.headDim,
      pos0: 0,
      style: c.ropeStyle,
    });
  }
}

/** Key/value head that query head h reads (grouped-query attention). */
function kvGroup(c: ModelConfig, h: number): number {
  return Math.floor(h / (c.nHeads / c.nKvHeads));
}

/**
 * Records block `l`'s backward pass: from dLoss/dx of its output in `ctx.seq.dx` to
 * dLoss/dx of its input in the same buffer, calling `onLinear` with each linear layer's
 * input and output gradient, last layer first.
 *
 * @param ctx Device, batch and buffers.
 * @param l Block index.
 * @param b The block's weights.
 * @param grads Weight gradients to accumulate into by canonical name, or null for none.
 * @param onLinear Tap that records work on each linear layer's gradients.
 */
export async function blockBackward(
  ctx: BlockPassContext,
  l: number,
  b: BlockWeights,
  grads: Map<string, GpuMatrix> | null,
  onLinear?: (tap: GpuLinearTap, batch: GpuBatch) => Promise<void>,
): Promise<void> {
  const { gpu, batch, config: c, seq: s } = ctx;
  const T = s.T, a = s.blocks[l];
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
    await onLinear?.({ layer: l, linear: which, x, dy, weight, T }, batch);
  };
  // dx (+)= dy W of one linear layer
  const inputGrad = (
    which: BlockLinear,
    x: GPUBuffer,
    dy: GPUBuffer,
    dx: GPUBuffer,
    accumulate: boolean,
  ) => linearBackwardGpu(gpu, batch, { w: b.linears[which], x, T }, dy, dx, accumulate);
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
  await inputGrad("mlp.down_proj", a.h, s.dx, s.dh, false);
  await swigluBackward(gpu, batch, { dh: s.dh, g: a.g, u: a.u, n: T * c.hiddenDim });
  await tap("mlp.gate_proj", a.xn2, a.g);
  await tap("mlp.up_proj", a.xn2, a.u);
  await inputGrad("mlp.gate_proj", a.xn2, a.g, s.dxn, false);
  await inputGrad("mlp.up_proj", a.xn2, a.u, s.dxn, true);
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
  await inputGrad("self_attn.o_proj", a.att, s.dx2, s.datt, false);
  const group = c.nHeads / c.nKvHeads;
  for (let h = 0; h < c.nHeads; h++) {
    const qo = h * c.headDim, kvo = kvGroup(c, h) * c.headDim, first = h % group === 0;
    await headProbs(ctx, a, h);
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
  // rotating by the inverse angles maps the gradients back through the rotation
  await rotateQK(ctx, ctx.ropeTables.backward, s.dq, s.dk);

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
  await inputGrad("self_attn.q_proj", a.xn1, s.dq, s.dxn, false);
  await inputGrad("self_attn.k_proj", a.xn1, s.dk, s.dxn, true);
  await inputGrad("self_attn.v_proj", a.xn1, s.dv, s.dxn, true);
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
