import assert from "node:assert/strict";
import {
  dampHessian,
  invertSpd,
  invertUpperBlock,
  upperCholeskyOfInverse,
} from "../src/quantize/linalg.ts";
import { naturalGradient } from "../src/quantize/edsg.ts";
import { Rng } from "../src/util/rng.ts";

function randomSpd(n: number, rng: Rng): Float64Array {
  const x = Array.from({ length: 2 * n * n }, () => rng.normal());
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      for (let t = 0; t < 2 * n; t++) a[i * n + j] += x[t * n + i] * x[t * n + j] / (2 * n);
    }
  }
  return a;
}

Deno.test("upperCholeskyOfInverse factors the inverse", () => {
  const rng = new Rng(1), n = 9;
  const { h } = dampHessian(randomSpd(n, rng), n, 0.01);
  const u = upperCholeskyOfInverse(h, n), inv = invertSpd(h, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, check = 0;
      for (let k = 0; k < n; k++) {
        s += u[k * n + i] * u[k * n + j];
        check += h[i * n + k] * inv[k * n + j];
      }
      assert.ok(Math.abs(s - inv[i * n + j]) < 1e-9 * (1 + Math.abs(inv[i * n + j])));
      assert.ok(Math.abs(check - (i === j ? 1 : 0)) < 1e-9);
      if (i > j) assert.equal(u[i * n + j], 0);
    }
  }
  const b = invertUpperBlock(u, n, 3, 7);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += u[(3 + i) * n + 3 + k] * b[k * 4 + j];
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-9);
    }
  }
});

Deno.test("naturalGradient solves G N A = g", () => {
  const rng = new Rng(2), n = 6, m = 3;
  const a = randomSpd(n, rng);
  for (let k = 0; k < n; k++) a[2 * n + k] = a[k * n + 2] = 0;
  const { h, dead } = dampHessian(a, n, 0.01);
  assert.deepEqual(dead, [2]);
  assert.ok(h[2 * n + 2] > 1);
  const g = Float32Array.from({ length: m * n }, () => rng.normal());
  const gDiag = Float32Array.from({ length: m }, () => 0.5 + rng.next());
  const nat = naturalGradient(g, gDiag, Float32Array.from(a), m, n, 0.01);
  let gMean = 0;
  for (const x of gDiag) gMean += x / m;
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += nat[r * n + k] * h[k * n + j];
      assert.ok(Math.abs(s * (gDiag[r] + 0.01 * gMean) - g[r * n + j]) < 1e-4, `row ${r} col ${j}`);
    }
  }
});
