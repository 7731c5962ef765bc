/**
 * Causal self-attention with grouped-query heads and its gradient: the double-precision
 * reference, and the two WebGPU kernels the GPU path builds attention from (the scaled
 * causal softmax and its backward; the products around them use kernels/matmul.wgsl).
 *
 * Query head h reads key/value head floor(h / (heads / kvHeads)). For each head:
 * s_tu = scale * q_t . k_u for u <= t, p_t = softmax(s_t), o_t = sum_u p_tu v_u.
 * Backward: dp_tu = do_t . v_u, ds_tu = p_tu (dp_tu - sum_u' p_tu' dp_tu'),
 * dq_t = scale sum_u ds_tu k_u, dk_u += scale ds_tu q_t, dv_u += p_tu do_t.
 *
 * Shapes: q, o, do [T, heads * headDim]; k, v, dk, dv [T, kvHeads * headDim];
 * probabilities [heads, T, T] (row t holds zeros beyond column t).
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, LOOP_BUDGET, paramWords } from "./_common.ts";
import { ROW_WORKGROUP, rowGrid } from "./_backward_common.ts";

/** Attention sizes. */
export interface AttentionParams {
  /** Query heads. */
  heads: number;
  /** Key/value heads; divides `heads`. */
  kvHeads: number;
  /** Head width. */
  headDim: number;
}

/** What the forward pass returns and the backward pass needs. */
export interface AttentionForward {
  /** Output o [T, heads * headDim]. */
  out: Float64Array;
  /** Softmax probabilities [heads, T, T]. */
  probs: Float64Array;
}

/**
 * Computes causal grouped-query attention over T positions.
 *
 * @example
 * ```ts
 * import { attentionForward64 } from "./attention_backward.ts";
 * const v = new Float64Array([2]);
 * const { out } = attentionForward64(new Float64Array([1]), new Float64Array([1]), v, 1, { heads: 1, kvHeads: 1, headDim: 1 });
 * if (out[0] !== 2) throw new Error("one position attends only to itself");
 * ```
 * @param q Rotated queries [T, heads * headDim].
 * @param k Rotated keys [T, kvHeads * headDim].
 * @param v Values [T, kvHeads * headDim].
 * @param T Number of positions.
 * @param p Head counts and width.
 */
export function attentionForward64(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  T: number,
  p: AttentionParams,
): AttentionForward {
  const { heads, kvHeads, headDim: d } = p;
  const qw = heads * d, kw = kvHeads * d, group = heads / kvHeads;
  const scale = 1 / Math.sqrt(d);
  const out = new Float64Array(T * qw);
  const probs = new Float64Array(heads * T * T);
  for (let h = 0; h < heads; h++) {
    const qo = h * d, ko = Math.floor(h / group) * d;
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      let max = -Infinity;
      for (let u = 0; u <= t; u++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += q[t * qw + qo + i] * k[u * kw + ko + i];
        probs[row + u] = dot * scale;
        if (probs[row + u] > max) max = probs[row + u];
      }
      let sum = 0;
      for (let u = 0; u <= t; u++) {
        probs[row + u] = Math.exp(probs[row + u] - max);
        sum += probs[row + u];
      }
      for (let u = 0; u <= t; u++) probs[row + u] /= sum;
      for (let u = 0; u <= t; u++) {
        const pu = probs[row + u];
        for (let i = 0; i < d; i++) out[t * qw + qo + i] += pu * v[u * kw + ko + i];
      }
    }
  }
  return { out, probs };
}

/** Gradients of attention with respect to its three inputs. */
export interface AttentionGrads {
  /** dLoss/dq [T, heads * headDim]. */
  dq: Float64Array;
  /** dLoss/dk [T, kvHeads * headDim], summed over the query heads of each group. */
  dk: Float64Array;
  /** dLoss/dv [T, kvHeads * headDim], summed over the query heads of each group. */
  dv: Float64Array;
}

/**
 * Backpropagates dOut through causal grouped-query attention.
 *
 * @param q Rotated queries [T, heads * headDim].
 * @param k Rotated keys [T, kvHeads * headDim].
 * @param v Values [T, kvHeads * headDim].
 * @param probs Probabilities from the forward pass [heads, T, T].
 * @param dOut Output gradient [T, heads * headDim].
 * @param T Number of positions.
 * @param p Head counts and width.
 */
export function attentionBackward64(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  probs: Float64Array,
  dOut: Float64Array,
  T: number,
  p: AttentionParams,
): AttentionGrads {
  const { heads, kvHeads, headDim: d } = p;
  const qw = heads * d, kw = kvHeads * d, group = heads / kvHeads;
  const scale = 1 / Math.sqrt(d);
  const dq = new Float64Array(T * qw);
  const dk = new Float64Array(T * kw);
  const dv = new Float64Array(T * kw);
  const dp = new Float64Array(T);
  for (let h = 0; h < heads; h++) {
    const qo = h * d, ko = Math.floor(h / group) * d;
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      // dp_tu = do_t . v_u and the softmax correction sum_u p_tu dp_tu
      let weighted = 0;
      for (let u = 0; u <= t; u++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += dOut[t * qw + qo + i] * v[u * kw + ko + i];
        dp[u] = dot;
        weighted += probs[row + u] * dot;
      }
      for (let u = 0; u <= t; u++) {
        const pu = probs[row + u];
        const ds = pu * (dp[u] - weighted) * scale;
        for (let i = 0; i < d; i++) {
          dq[t * qw + qo + i] += ds * k[u * kw + ko + i];
          dk[u * kw + ko + i] += ds * q[t * qw + qo + i];
          dv[u * kw + ko + i] += pu * dOut[t * qw + qo + i];
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** Operands of {@linkcode causalSoftmax}. */
export interface CausalSoftmaxArgs {
  /** Raw scores S = Q K^T of one head [T, T], replaced by probabilities. */
  scores: GPUBuffer;
  /** Positions T. */
  T: number;
  /** Score scale, 1 / sqrt(headDim). */
  scale: number;
  /** Element offset of scores[0, 0]. Default 0. */
  offset?: number;
}

/**
 * Records the scaled causal softmax of one head's scores, in place.
 *
 * @example
 * ```ts ignore
 * await causalSoftmax(gpu, batch, { scores, T, scale: 1 / Math.sqrt(headDim) });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function causalSoftmax(
  gpu: GpuContext,
  batch: GpuBatch,
  args: CausalSoftmaxArgs,
): Promise<void> {
  const { T } = args;
  checkSize("causalSoftmax T", T);
  if (4 * Math.ceil(T / ROW_WORKGROUP) + 3 * ROW_WORKGROUP > LOOP_BUDGET) {
    throw new ShapeError(
      `causalSoftmax: ${T} positions exceed the loop cap of one workgroup per row`,
    );
  }
  const scores = bindRange(gpu, args.scores, args.offset ?? 0, T * T, "causalSoftmax scores");
  const pipeline = await gpu.pipeline("attention_probs_backward", { WG: ROW_WORKGROUP });
  const params = batch.uniform(paramWords([T, scores.offset], [args.scale]));
  batch.dispatch(pipeline, [scores.binding, params], rowGrid(gpu, T));
}

/** Operands of {@linkcode softmaxBackward}. */
export interface SoftmaxBackwardArgs {
  /** Probabilities of one head [T, T]. */
  probs: GPUBuffer;
  /** dLoss/dP [T, T], replaced by dLoss/dS for the raw scores. */
  dp: GPUBuffer;
  /** Positions T. */
  T: number;
  /** Score scale, 1 / sqrt(headDim). */
  scale: number;
}

/**
 * Records dS = scale * P * (dP - rowsum(P * dP)), in place on dP.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function softmaxBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: SoftmaxBackwardArgs,
): Promise<void> {
  const { T } = args;
  checkSize("softmaxBackward T", T);
  if (2 * Math.ceil(T / ROW_WORKGROUP) + ROW_WORKGROUP > LOOP_BUDGET) {
    throw new ShapeError(
      `softmaxBackward: ${T} positions exceed the loop cap of one workgroup per row`,
    );
  }
  const probs = bindRange(gpu, args.probs, 0, T * T, "softmaxBackward probs");
  const dp = bindRange(gpu, args.dp, 0, T * T, "softmaxBackward dp");
  const pipeline = await gpu.pipeline("softmax_backward", { WG: ROW_WORKGROUP });
  const params = batch.uniform(paramWords([T, probs.offset, dp.offset], [args.scale]));
  batch.dispatch(pipeline, [probs.binding, dp.binding, params], rowGrid(gpu, T));
}
