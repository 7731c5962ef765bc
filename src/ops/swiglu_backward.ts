/**
 * SwiGLU gate h = silu(g) * u with silu(g) = g * sigmoid(g), and its gradient (the f64
 * reference and the WebGPU kernel swiglu_backward.wgsl): dg = dh * u * s * (1 + g * (1 - s)) with s = sigmoid(g), du = dh * silu(g).
 *
 * Shapes: g, u, h, dh [T, hidden].
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";

/**
 * Computes silu(g) * u elementwise.
 *
 * @example
 * ```ts
 * import { swigluForward64 } from "./swiglu_backward.ts";
 * const h = swigluForward64(new Float64Array([0]), new Float64Array([5]));
 * if (h[0] !== 0) throw new Error("silu(0) is 0");
 * ```
 * @param g Gate projection [T, hidden].
 * @param u Up projection [T, hidden].
 * @returns h [T, hidden].
 */
export function swigluForward64(g: Float64Array, u: Float64Array): Float64Array {
  const h = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) h[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  return h;
}

/**
 * Backpropagates dh through h = silu(g) * u.
 *
 * @param g Gate projection saved by the forward pass.
 * @param u Up projection saved by the forward pass.
 * @param dh Output gradient.
 * @returns dg and du, same shape as g.
 */
export function swigluBackward64(
  g: Float64Array,
  u: Float64Array,
  dh: Float64Array,
): { dg: Float64Array; du: Float64Array } {
  const dg = new Float64Array(g.length);
  const du = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) {
    const s = 1 / (1 + Math.exp(-g[i]));
    du[i] = dh[i] * g[i] * s;
    dg[i] = dh[i] * u[i] * s * (1 + g[i] * (1 - s));
  }
  return { dg, du };
}

/** Operands of {@linkcode swigluBackward}. Whole buffers. */
export interface SwigluBackwardArgs {
  /** Output gradient dh [n]. */
  dh: GPUBuffer;
  /** Gate projection g [n], replaced by dg. */
  g: GPUBuffer;
  /** Up projection u [n], replaced by du. */
  u: GPUBuffer;
  /** Elements. */
  n: number;
}

/**
 * Records the SwiGLU backward, in place on g and u.
 *
 * @example
 * ```ts ignore
 * await swigluBackward(gpu, batch, { dh, g, u, n: T * hidden });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and size.
 */
export async function swigluBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: SwigluBackwardArgs,
): Promise<void> {
  checkSize("swigluBackward n", args.n);
  const pipeline = await gpu.pipeline("swiglu_backward", { WG: FLAT_WORKGROUP });
  const params = batch.uniform(paramWords([args.n]));
  batch.dispatch(pipeline, [args.dh, args.g, args.u, params], flatGrid(gpu, args.n));
}
