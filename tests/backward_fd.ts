/**
 * Central finite differences in double precision, shared by the backward-pass tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Rng } from "../src/util/rng.ts";

/** Returns n standard normal samples from a seeded generator. */
export function randn(n: number, rng: Rng, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * rng.normal();
  return out;
}

/** Returns sum_i r_i y_i, the scalar whose gradient with respect to y is r. */
export function dot(r: ArrayLike<number>, y: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += r[i] * y[i];
  return s;
}

/**
 * Checks `analytic` against central differences of `f` with respect to `x`, at the given
 * indices (all by default), restoring x afterwards.
 *
 * @param label Name shown when the check fails.
 * @param x Input perturbed in place.
 * @param analytic Claimed gradient df/dx, same length as x.
 * @param f Scalar function reading x.
 * @param options Step, tolerance (relative to max(|fd|, floor)) and the indices to check.
 */
export function assertGradient(
  label: string,
  x: Float64Array,
  analytic: ArrayLike<number>,
  f: () => number,
  options: { step?: number; tol?: number; floor?: number; indices?: number[] } = {},
): void {
  const step = options.step ?? 1e-6, tol = options.tol ?? 1e-6, floor = options.floor ?? 1e-3;
  const indices = options.indices ?? Array.from({ length: x.length }, (_, i) => i);
  assert.equal(analytic.length, x.length, `${label}: gradient length`);
  let worst = 0, worstAt = -1, worstFd = 0;
  for (const i of indices) {
    const saved = x[i];
    x[i] = saved + step;
    const up = f();
    x[i] = saved - step;
    const down = f();
    x[i] = saved;
    const fd = (up - down) / (2 * step);
    const err = Math.abs(analytic[i] - fd) / Math.max(Math.abs(fd), floor);
    if (err > worst) [worst, worstAt, worstFd] = [err, i, fd];
  }
  assert.ok(
    worst <= tol,
    `${label}: element ${worstAt} analytic ${
      analytic[worstAt]
    } vs finite difference ${worstFd} (relative error ${worst.toExponential(2)} > ${tol})`,
  );
}

/** Picks `count` distinct seeded indices in [0, n), or all of them when n <= count. */
export function sampleIndices(n: number, count: number, rng: Rng): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(rng.nextInt(n));
  return [...picked];
}
