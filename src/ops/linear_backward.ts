/**
 * Linear layer y = x W^T + b and its gradients, in double precision: the reference the
 * WebGPU backward pass and the finite-difference tests are checked against.
 *
 * Shapes: x [T, n] (T tokens, n = in), W [m, n] (m = out, Hugging Face layout), b [m],
 * y and dy [T, m], all row-major.
 *
 * @module
 */

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
