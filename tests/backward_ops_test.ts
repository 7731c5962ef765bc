import assert from "node:assert/strict";
import { Rng } from "../src/util/rng.ts";
import { linearBackward64, linearForward64 } from "../src/ops/linear_backward.ts";
import { rmsnormBackward64, rmsnormForward64 } from "../src/ops/rmsnorm_backward.ts";
import { ropeBackward64, ropeForward64, type RopeParams } from "../src/ops/rope_backward.ts";
import { attentionBackward64, attentionForward64 } from "../src/ops/attention_backward.ts";
import { swigluBackward64, swigluForward64 } from "../src/ops/swiglu_backward.ts";
import { crossEntropy64 } from "../src/ops/cross_entropy_backward.ts";
import { embeddingBackward64, embeddingForward64 } from "../src/ops/embedding_backward.ts";
import { applyRope, rmsnorm } from "../src/model/reference.ts";
import { assertGradient, dot, randn } from "./backward_fd.ts";

// Odd sizes everywhere, so no gradient can hide behind a symmetric or even layout.
const T = 7;

Deno.test("linearBackward64 matches finite differences", () => {
  const rng = new Rng(11);
  const n = 5, m = 9;
  const x = randn(T * n, rng), w = randn(m * n, rng), b = randn(m, rng), r = randn(T * m, rng);
  const f = () => dot(r, linearForward64(x, T, n, w, m, b));
  const g = linearBackward64(x, r, T, n, w, m);
  assertGradient("dx", x, g.dx, f);
  assertGradient("dW", w, g.dw, f);
  assertGradient("db", b, g.db, f);
});

Deno.test("rmsnormBackward64 matches finite differences", () => {
  const rng = new Rng(12);
  const n = 11;
  const x = randn(T * n, rng), w = randn(n, rng), r = randn(T * n, rng);
  const f = () => dot(r, rmsnormForward64(x, T, n, w, 1e-5));
  const g = rmsnormBackward64(x, r, T, n, w, 1e-5);
  assertGradient("dx", x, g.dx, f);
  assertGradient("dw", w, g.dw, f);
});

Deno.test("rmsnormForward64 agrees with the f32 reference", () => {
  const rng = new Rng(13);
  const n = 11;
  const x = randn(n, rng), w = randn(n, rng);
  const out = new Float32Array(n);
  rmsnorm(out, Float32Array.from(x), Float32Array.from(w), 1e-5);
  const y = rmsnormForward64(x, 1, n, w, 1e-5);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(out[i] - y[i]) < 1e-5, `element ${i}`);
});

for (const style of ["adjacent", "half"] as const) {
  Deno.test(`ropeBackward64 ${style} matches finite differences`, () => {
    const rng = new Rng(14);
    const p: RopeParams = { heads: 3, headDim: 6, theta: 500, style, startPos: 2 };
    const x = randn(T * 18, rng), r = randn(T * 18, rng);
    const f = () => dot(r, ropeForward64(x, T, p));
    assertGradient("dx", x, ropeBackward64(r, T, p), f);
  });

  Deno.test(`ropeForward64 ${style} agrees with applyRope`, () => {
    const rng = new Rng(15);
    const p: RopeParams = { heads: 3, headDim: 6, theta: 500, style };
    const x = randn(T * 18, rng);
    const y = ropeForward64(x, T, p);
    for (let t = 0; t < T; t++) {
      const row = Float32Array.from(x.subarray(t * 18, (t + 1) * 18));
      applyRope(row, 6, t, 500, style);
      for (let i = 0; i < 18; i++) {
        assert.ok(Math.abs(row[i] - y[t * 18 + i]) < 1e-5, `row ${t} element ${i}`);
      }
    }
  });
}

Deno.test("attentionBackward64 with grouped heads matches finite differences", () => {
  const rng = new Rng(16);
  const p = { heads: 6, kvHeads: 2, headDim: 3 };
  const q = randn(T * 18, rng),
    k = randn(T * 6, rng),
    v = randn(T * 6, rng),
    r = randn(T * 18, rng);
  const f = () => dot(r, attentionForward64(q, k, v, T, p).out);
  const { probs } = attentionForward64(q, k, v, T, p);
  const g = attentionBackward64(q, k, v, probs, r, T, p);
  assertGradient("dq", q, g.dq, f);
  assertGradient("dk", k, g.dk, f);
  assertGradient("dv", v, g.dv, f);
});

Deno.test("attentionForward64 is causal", () => {
  const rng = new Rng(17);
  const p = { heads: 2, kvHeads: 1, headDim: 3 };
  const q = randn(T * 6, rng), k = randn(T * 3, rng), v = randn(T * 3, rng);
  const before = attentionForward64(q, k, v, T, p).out;
  k[(T - 1) * 3] += 1;
  v[(T - 1) * 3 + 1] += 1;
  const after = attentionForward64(q, k, v, T, p).out;
  for (let i = 0; i < (T - 1) * 6; i++) {
    assert.equal(after[i], before[i], `element ${i} saw the last position`);
  }
  assert.notEqual(after[(T - 1) * 6 + 1], before[(T - 1) * 6 + 1]);
});

Deno.test("swigluBackward64 matches finite differences", () => {
  const rng = new Rng(18);
  const g = randn(T * 13, rng, 2), u = randn(T * 13, rng), r = randn(T * 13, rng);
  const f = () => dot(r, swigluForward64(g, u));
  const d = swigluBackward64(g, u, r);
  assertGradient("dg", g, d.dg, f);
  assertGradient("du", u, d.du, f);
});

Deno.test("crossEntropy64 matches finite differences", () => {
  const rng = new Rng(19);
  const V = 17;
  const tokens = Array.from({ length: T }, () => rng.nextInt(V));
  const logits = randn(T * V, rng, 3);
  const f = () => crossEntropy64(logits, tokens, V).loss;
  const { dLogits } = crossEntropy64(logits, tokens, V);
  assertGradient("dLogits", logits, dLogits, f);
  for (let j = 0; j < V; j++) {
    assert.equal(dLogits[(T - 1) * V + j], 0, "the last position predicts nothing");
  }
});

Deno.test("crossEntropy64 rejects a single token", () => {
  assert.throws(() => crossEntropy64(new Float64Array(5), [1], 5), /at least 2 tokens/);
});

Deno.test("embeddingBackward64 matches finite differences with repeated tokens", () => {
  const rng = new Rng(20);
  const V = 5, dim = 3;
  const tokens = [1, 4, 1, 0, 4, 4, 2];
  const table = randn(V * dim, rng), r = randn(T * dim, rng);
  const f = () => dot(r, embeddingForward64(table, dim, tokens));
  const dTable = new Float64Array(V * dim);
  embeddingBackward64(dTable, r, dim, tokens);
  assertGradient("dE", table, dTable, f);
});
