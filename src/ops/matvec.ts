/**
 * Matrix-vector product for single-token decoding, y = W x (or y += W x), with W stored
 * [N, K] like a linear layer's weight. Reference: {@linkcode matvecRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, flatGrid, LOOP_BUDGET, paramWords } from "./_common.ts";
import { matmul } from "./matmul.ts";
export { matvecRef } from "./matvec_ref.ts";

const WG = 64;
/** Columns per dispatch: each invocation runs K / 4 iterations. */
export const MATVEC_MAX_K = 4 * LOOP_BUDGET;

/** Operands of {@linkcode matvec}. Offsets and strides count f32 elements. */
export interface MatvecArgs {
  /** Weights W, stored [n, k] with row stride ldw. */
  w: GPUBuffer;
  /** Input vector x [k]. */
  x: GPUBuffer;
  /** Output vector y [n]; must not share a buffer with W or x. */
  y: GPUBuffer;
  /** Rows of W (outputs). */
  n: number;
  /** Columns of W (inputs). */
  k: number;
  /** Row stride of W; default k. */
  ldw?: number;
  /** Element offset of W[0, 0]. Default 0. */
  wOffset?: number;
  /** Element offset of x[0]. Default 0. */
  xOffset?: number;
  /** Element offset of y[0]. Default 0. */
  yOffset?: number;
  /** Add W x to y instead of overwriting it. Default false. */
  accumulate?: boolean;
}

/**
 * Records y = W x (or y += W x) into `batch`. Runs kernels/matvec.wgsl when k, ldw and
 * the W and x offsets are multiples of 4, and {@linkcode matmul} with m = 1 otherwise.
 * Columns are split into slices below the loop cap that accumulate.
 *
 * @example One decoding step of a linear layer
 * ```ts ignore
 * await matvec(gpu, batch, { w: wq, x: xb, y: q, n: qDim, k: dim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 * @throws {ShapeError} When a size is invalid or an operand runs past its buffer.
 */
export async function matvec(gpu: GpuContext, batch: GpuBatch, args: MatvecArgs): Promise<void> {
  const { n, k } = args;
  checkSize("matvec n", n);
  checkSize("matvec k", k);
  const ldw = args.ldw ?? k;
  const wOffset = args.wOffset ?? 0, xOffset = args.xOffset ?? 0, yOffset = args.yOffset ?? 0;
  if (ldw < k) throw new ShapeError(`matvec row stride ldw ${ldw} is shorter than k ${k}`);
  if (args.y === args.w || args.y === args.x) {
    throw new ShapeError("matvec output y must not share a buffer with W or x");
  }
  if ([k, ldw, wOffset, xOffset].some((v) => v % 4 !== 0)) {
    // unaligned rows: the general kernel with one row, y^T = x^T @ W^T
    return matmul(gpu, batch, {
      a: args.x,
      b: args.w,
      c: args.y,
      m: 1,
      n,
      k,
      transB: true,
      ldb: ldw,
      aOffset: xOffset,
      bOffset: wOffset,
      cOffset: yOffset,
      accumulate: args.accumulate,
    });
  }

  const yRange = bindRange(gpu, args.y, yOffset, n, "matvec y");
  for (let k0 = 0; k0 < k; k0 += MATVEC_MAX_K) {
    const kSlice = Math.min(MATVEC_MAX_K, k - k0);
    const wRange = bindRange(gpu, args.w, wOffset + k0, (n - 1) * ldw + kSlice, "matvec W");
    const xRange = bindRange(gpu, args.x, xOffset + k0, kSlice, "matvec x");
    const pipeline = await gpu.pipeline("matvec", {
      ACCUMULATE: args.accumulate || k0 > 0 ? 1 : 0,
      WG,
    });
    const params = batch.uniform(
      paramWords([n, kSlice, ldw, wRange.offset, xRange.offset, yRange.offset]),
    );
    batch.dispatch(
      pipeline,
      [wRange.binding, xRange.binding, yRange.binding, params],
      flatGrid(gpu, Math.ceil(n / 4), WG),
    );
  }
}
