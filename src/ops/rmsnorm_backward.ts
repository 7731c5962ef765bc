/**
 * RMSNorm y = x / sqrt(mean(x^2) + eps) * w and its gradients: the double-precision
 * reference, and the WebGPU kernels rmsnorm_backward.wgsl (dx) and
 * rmsnorm_weight_backward.wgsl (dw) that compute the same in f32.
 *
 * With r = (mean(x^2) + eps)^(-1/2) per row, the backward pass is
 * dw_i = sum_t dy_ti x_ti r_t and
 * dx_ti = r_t w_i dy_ti - (r_t^3 / n) x_ti sum_j w_j dy_tj x_tj.
 *
 * Shapes: x, y, dy [T, n]; w [n].
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { checkSize, FLAT_WORKGROUP, flatGrid, LOOP_BUDGET, paramWords } from "./_common.ts";
import { ROW_WORKGROUP, rowGrid } from "./_backward_common.ts";

/**
 * Computes RMSNorm row by row in f64.
 *
 * @example
 * ```ts
 * import { rmsnormForward64 } from "./rmsnorm_backward.ts";
 * const y = rmsnormForward64(new Float64Array([3, 4]), 1, 2, new Float64Array([1, 1]), 0);
 * if (Math.abs(y[0] - 3 / Math.sqrt(12.5)) > 1e-12) throw new Error("wrong scale");
 * ```
 * @param x Input [T, n].
 * @param T Number of rows.
 * @param n Row width.
 * @param w Gain [n].
 * @param eps Added to the mean square.
 * @returns y [T, n].
 */
export function rmsnormForward64(
  x: Float64Array,
  T: number,
  n: number,
  w: ArrayLike<number>,
  eps: number,
): Float64Array {
  const y = new Float64Array(T * n);
  for (let t = 0; t < T; t++) {
    const r = rowScale(x, t * n, n, eps);
    for (let i = 0; i < n; i++) y[t * n + i] = x[t * n + i] * r * w[i];
  }
  return y;
}

/** Gradients of RMSNorm. */
export interface RmsnormGrads {
  /** dLoss/dx [T, n]. */
  dx: Float64Array;
  /** dLoss/dw [n]. */
  dw: Float64Array;
}

/**
 * Backpropagates dy through RMSNorm.
 *
 * @param x Input saved by the forward pass [T, n].
 * @param dy Output gradient [T, n].
 * @param T Number of rows.
 * @param n Row width.
 * @param w Gain [n].
 * @param eps Added to the mean square.
 * @returns dx and dw.
 */
export function rmsnormBackward64(
  x: Float64Array,
  dy: Float64Array,
  T: number,
  n: number,
  w: ArrayLike<number>,
  eps: number,
): RmsnormGrads {
  const dx = new Float64Array(T * n);
  const dw = new Float64Array(n);
  for (let t = 0; t < T; t++) {
    const o = t * n;
    const r = rowScale(x, o, n, eps);
    let dot = 0;
    for (let i = 0; i < n; i++) {
      dot += w[i] * dy[o + i] * x[o + i];
      dw[i] += dy[o + i] * x[o + i] * r;
    }
    const c = (r * r * r * dot) / n;
    for (let i = 0; i < n; i++) dx[o + i] = r * w[i] * dy[o + i] - c * x[o + i];
  }
  return { dx, dw };
}

/** Returns (mean(x_row^2) + eps)^(-1/2) of the row starting at `offset`. */
function rowScale(x: Float64Array, offset: number, n: number, eps: number): number {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[offset + i] * x[offset + i];
  return 1 / Math.sqrt(ss / n + eps);
}

/** Operands of {@linkcode rmsnormBackward}. Whole buffers, row-major. */
export interface RmsnormBackwardArgs {
  /** Input saved by the forward pass [rows, dim]. */
  x: GPUBuffer;
  /** Output gradient [rows, dim]. */
  dy: GPUBuffer;
  /** Gain [dim]. */
  weight: GPUBuffer;
  /** Input gradient [rows, dim]; overwritten, or added to with `accumulate`. */
  dx: GPUBuffer;
  /** Receives r_t = (mean(x_t^2) + eps)^(-1/2) [rows], for the weight gradient. */
  rstd: GPUBuffer;
  /** Rows. */
  rows: number;
  /** Row length. */
  dim: number;
  /** Epsilon. */
  eps: number;
  /** Add to dx instead of overwriting it (a residual gradient already there). Default false. */
  accumulate?: boolean;
}

/**
 * Records the RMSNorm input gradient (and r_t) into `batch`.
 *
 * @example
 * ```ts ignore
 * await rmsnormBackward(gpu, batch, { x, dy, weight, dx, rstd, rows: T, dim, eps, accumulate: true });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function rmsnormBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: RmsnormBackwardArgs,
): Promise<void> {
  const { rows, dim } = args;
  checkSize("rmsnormBackward rows", rows);
  checkSize("rmsnormBackward dim", dim);
  const pipeline = await gpu.pipeline("rmsnorm_backward", {
    WG: ROW_WORKGROUP,
    ACCUMULATE: args.accumulate ? 1 : 0,
  });
  const params = batch.uniform(paramWords([rows, dim], [args.eps]));
  batch.dispatch(
    pipeline,
    [args.x, args.dy, args.weight, args.dx, args.rstd, params],
    rowGrid(gpu, rows),
  );
}

/** Operands of {@linkcode rmsnormWeightBackward}. */
export interface RmsnormWeightBackwardArgs {
  /** Input saved by the forward pass [rows, dim]. */
  x: GPUBuffer;
  /** Output gradient [rows, dim]. */
  dy: GPUBuffer;
  /** r_t from {@linkcode rmsnormBackward} [rows]. */
  rstd: GPUBuffer;
  /** Gain gradient [dim], accumulated. */
  dw: GPUBuffer;
  /** Rows. */
  rows: number;
  /** Row length. */
  dim: number;
}

/**
 * Records dw[i] += sum_t dy[t, i] x[t, i] r_t, split into dispatches of at most
 * LOOP_BUDGET rows so no invocation passes the loop cap.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function rmsnormWeightBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: RmsnormWeightBackwardArgs,
): Promise<void> {
  const { rows, dim } = args;
  checkSize("rmsnormWeightBackward rows", rows);
  checkSize("rmsnormWeightBackward dim", dim);
  const pipeline = await gpu.pipeline("rmsnorm_weight_backward", { WG: FLAT_WORKGROUP });
  for (let row0 = 0; row0 < rows; row0 += LOOP_BUDGET) {
    const params = batch.uniform(paramWords([Math.min(LOOP_BUDGET, rows - row0), dim, row0]));
    batch.dispatch(pipeline, [args.x, args.dy, args.rstd, args.dw, params], flatGrid(gpu, dim));
  }
}
