/**
 * Linear layer y = x W^T + b and its gradients: the double-precision reference that the
 * finite-difference tests check, and the WebGPU products of the backward pass (dx = dy W
 * and dW = dy^T x over row-chunked weights, built on kernels/matmul.wgsl).
 *
 * Shapes: x [T, n] (T tokens, n = in), W [m, n] (m = out, Hugging Face layout), b [m],
 * y and dy [T, m], all row-major.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { matmul } from "./matmul.ts";
import type { GpuMatrix, RowChunk } from "./gpu_matrix.ts";

/**
 * Computes y = x W^T (+ b) in f64.
 *
 * @example
 * ```ts
 * import { linearForward64 } from "./linear_backward.ts";
 * const y = linearForward64(new Float64Array([1, 2]), 1, 2, new Float64Array([3, 4]), 1);
 * if (y[0] !== 11) throw new Error("expected 1*3 + 2*4");
 * ```
 * @param x Input [T, n].
 * @param T Number of rows (tokens).
 * @param n Input width.
 * @param w Weights [m, n].
 * @param m Output width.
 * @param bias Optional bias [m].
 * @returns y [T, m].
 */
export function linearForward64(
  x: Float64Array,
  T: number,
  n: number,
  w: ArrayLike<number>,
  m: number,
  bias?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(T * m);
  for (let t = 0; t < T; t++) {
    const xo = t * n;
    for (let o = 0; o < m; o++) {
      let sum = bias ? bias[o] : 0;
      const wo = o * n;
      for (let i = 0; i < n; i++) sum += w[wo + i] * x[xo + i];
      y[t * m + o] = sum;
    }
  }
  return y;
}

/** Gradients of a linear layer. */
export interface LinearGrads {
  /** dLoss/dx [T, n]. */
  dx: Float64Array;
  /** dLoss/dW [m, n] = dy^T x. */
  dw: Float64Array;
  /** dLoss/db [m] = column sums of dy. */
  db: Float64Array;
}

/**
 * Backpropagates dy through y = x W^T + b: dx = dy W, dW = dy^T x, db = sum_t dy.
 *
 * @param x Input saved by the forward pass [T, n].
 * @param dy Output gradient [T, m].
 * @param T Number of rows.
 * @param n Input width.
 * @param w Weights [m, n].
 * @param m Output width.
 * @returns dx, dW and db.
 */
export function linearBackward64(
  x: Float64Array,
  dy: Float64Array,
  T: number,
  n: number,
  w: ArrayLike<number>,
  m: number,
): LinearGrads {
  const dx = new Float64Array(T * n);
  const dw = new Float64Array(m * n);
  const db = new Float64Array(m);
  for (let t = 0; t < T; t++) {
    const xo = t * n;
    for (let o = 0; o < m; o++) {
      const g = dy[t * m + o];
      if (g === 0) continue;
      db[o] += g;
      const wo = o * n;
      for (let i = 0; i < n; i++) {
        dx[xo + i] += g * w[wo + i];
        dw[wo + i] += g * x[xo + i];
      }
    }
  }
  return { dx, dw, db };
}

/** Operands of {@linkcode linearBackwardGpu} and {@linkcode linearWeightGradGpu}. */
export interface LinearGpuArgs {
  /** Weights [m, n] as row chunks. */
  w: GpuMatrix;
  /** Input x [T, n]. */
  x: GPUBuffer;
  /** Rows T. */
  T: number;
}

/**
 * Records the input gradient dx (+)= dy W (dx [T, n]), summed over the row chunks of W.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Weights, input and rows.
 * @param dy Output gradient [T, m].
 * @param dx Input gradient [T, n].
 * @param accumulate Add to dx instead of overwriting it.
 */
export async function linearBackwardGpu(
  gpu: GpuContext,
  batch: GpuBatch,
  args: LinearGpuArgs,
  dy: GPUBuffer,
  dx: GPUBuffer,
  accumulate: boolean,
): Promise<void> {
  const { w, T } = args;
  for (let i = 0; i < w.chunks.length; i++) {
    const chunk = w.chunks[i];
    await matmul(gpu, batch, {
      a: dy,
      b: chunk.buffer,
      c: dx,
      m: T,
      n: w.cols,
      k: chunk.rows,
      lda: w.rows,
      aOffset: chunk.row0,
      accumulate: accumulate || i > 0,
    });
  }
}

/**
 * Records the weight gradient of row chunk `chunk` of W: g[rows, n] = dy[:, rows]^T x,
 * into `g` (a buffer of at least chunk.rows * n f32).
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Weights (for the widths), input and rows.
 * @param dy Output gradient [T, m].
 * @param chunk Which rows of W.
 * @param g Gradient rows [chunk.rows, n].
 * @param accumulate Add to g instead of overwriting it.
 */
export async function linearWeightGradGpu(
  gpu: GpuContext,
  batch: GpuBatch,
  args: LinearGpuArgs,
  dy: GPUBuffer,
  chunk: RowChunk,
  g: GPUBuffer,
  accumulate = false,
): Promise<void> {
  const { w, x, T } = args;
  await matmul(gpu, batch, {
    a: dy,
    b: x,
    c: g,
    m: chunk.rows,
    n: w.cols,
    k: T,
    transA: true,
    lda: w.rows,
    aOffset: chunk.row0,
    accumulate,
  });
}
