/**
 * Dense symmetric linear algebra for the error-feedback quantizers, in f64: Cholesky
 * factorization, the damped inverse of the input Hessian A, and the upper Cholesky factor
 * of that inverse that GPTQ and VPTQ propagate quantization errors through.
 *
 * All matrices are row-major Float64Array [n, n].
 *
 * @module
 */
import { ShapeError } from "../errors.ts";

/**
 * Factors a symmetric positive definite matrix in place as A = L L^T and zeroes the upper
 * triangle, so `a` contains L.
 *
 * @example
 * ```ts
 * import { choleskyLower } from "./linalg.ts";
 * const a = new Float64Array([4, 2, 2, 3]);
 * choleskyLower(a, 2);
 * if (a[0] !== 2 || a[2] !== 1 || a[1] !== 0) throw new Error();
 * ```
 * @param a Matrix [n, n], overwritten by L.
 * @param n Order.
 * @throws {ShapeError} When a pivot is not positive (the matrix is not positive definite).
 */
export function choleskyLower(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) {
      throw new ShapeError(
        `Cholesky factorization failed at pivot ${j} (value ${d}): the matrix is not positive definite, raise the damping`,
      );
    }
    const ljj = Math.sqrt(d);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / ljj;
    }
    for (let k = j + 1; k < n; k++) a[j * n + k] = 0;
  }
}

/**
 * Inverts a symmetric positive definite matrix through its Cholesky factor.
 *
 * @param a Matrix [n, n] (not modified).
 * @param n Order.
 * @returns A^{-1} [n, n].
 */
export function invertSpd(a: Float64Array, n: number): Float64Array {
  const l = a.slice();
  choleskyLower(l, n);
  const linv = invertLower(l, n);
  // A^{-1} = Linv^T Linv.
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = j; k < n; k++) s += linv[k * n + i] * linv[k * n + j];
      inv[i * n + j] = s;
      inv[j * n + i] = s;
    }
  }
  return inv;
}

/** Inverts a lower-triangular matrix column by column. */
function invertLower(l: Float64Array, n: number): Float64Array {
  const linv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    linv[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += l[i * n + k] * linv[k * n + j];
      linv[i * n + j] = -s / l[i * n + i];
    }
  }
  return linv;
}

/**
 * Damps the input Hessian as GPTQ does: columns whose diagonal is zero (inputs that were
 * never active) get diagonal 1, then `damp` times the mean diagonal is added to every
 * diagonal entry.
 *
 * @param a A = E[x x^T], f32 or f64 [n, n].
 * @param n Order.
 * @param damp Relative damping (GPTQ uses 0.01).
 * @returns Damped copy in f64, and the indices of dead columns.
 */
export function dampHessian(
  a: ArrayLike<number>,
  n: number,
  damp: number,
): { h: Float64Array; dead: number[] } {
  if (a.length !== n * n) {
    throw new ShapeError(`Hessian has ${a.length} elements, expected [${n}, ${n}]`);
  }
  const h = Float64Array.from(a as ArrayLike<number>);
  const dead: number[] = [];
  let mean = 0;
  for (let j = 0; j < n; j++) {
    if (!(h[j * n + j] > 0)) {
      dead.push(j);
      for (let k = 0; k < n; k++) h[j * n + k] = h[k * n + j] = 0;
      h[j * n + j] = 1;
    }
    mean += h[j * n + j];
  }
  mean /= n;
  for (let j = 0; j < n; j++) h[j * n + j] += damp * mean;
  return { h, dead };
}

/**
 * Upper Cholesky factor U of the inverse of the damped Hessian (H^{-1} = U^T U). Row j of U,
 * from the diagonal on, is the inverse Hessian of the columns not yet quantized once columns
 * 0..j-1 are fixed, scaled by 1/sqrt of its diagonal. GPTQ's error feedback needs exactly
 * these rows.
 *
 * @param h Damped Hessian [n, n] (see {@linkcode dampHessian}).
 * @param n Order.
 * @returns U [n, n], upper triangular.
 */
export function upperCholeskyOfInverse(h: Float64Array, n: number): Float64Array {
  // With J the order-reversing permutation, J H J = L L^T gives H^{-1} = U^T U for the upper
  // triangular U = J L^{-1} J: one factorization and one triangular inverse, no full inverse.
  const reversed = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) reversed[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
  }
  choleskyLower(reversed, n);
  const m = invertLower(reversed, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
  }
  return u;
}

/**
 * Inverts a small upper-triangular block U[b0:b1, b0:b1] of `u`.
 *
 * @param u Upper-triangular matrix [n, n].
 * @param n Order of u.
 * @param b0 First row/column of the block.
 * @param b1 One past the last.
 * @returns The block's inverse [b1 - b0, b1 - b0], upper triangular.
 */
export function invertUpperBlock(u: Float64Array, n: number, b0: number, b1: number): Float64Array {
  const s = b1 - b0;
  const inv = new Float64Array(s * s);
  for (let i = s - 1; i >= 0; i--) {
    inv[i * s + i] = 1 / u[(b0 + i) * n + b0 + i];
    for (let j = i + 1; j < s; j++) {
      let acc = 0;
      for (let k = i + 1; k <= j; k++) acc += u[(b0 + i) * n + b0 + k] * inv[k * s + j];
      inv[i * s + j] = -acc * inv[i * s + i];
    }
  }
  return inv;
}
