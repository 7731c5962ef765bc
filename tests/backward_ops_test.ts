import assert from "node:assert/strict";
import { Rng } from "../src/util/rng.ts";
import { linearBackward64, linearForward64 } from "../src/ops/linear_backward.ts";
import { rmsnormBackward64, rmsnormForward64 } from "../src/ops/rmsnorm_backward.ts";
import { ropeBackward64, ropeForward64, type RopeParams } from "../src/ops/rope_backward.ts";
import { attentionBackward64, attentionForward64 } from "../src/ops/attention_backward.ts";
import { swigluBackward64, swigluForward64 } from "../src/ops/swiglu_backward.ts";
import {
  crossEntropy64,
  pcgHash,
  sampledLabel,
  sequenceLabelSeed,
} from "../src/ops/cross_entropy_backward.ts";
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

Deno.test("crossEntropy64 with sampled labels backpropagates the drawn labels, scores the next tokens", () => {
  const rng = new Rng(20);
  const V = 17;
  const tokens = Array.from({ length: T }, () => rng.nextInt(V));
  const logits = randn(T * V, rng, 3);
  const seed = 12345;
  const labels = Array.from(
    { length: T },
    (_, t) => t + 1 < T ? sampledLabel(logits.subarray(t * V, (t + 1) * V), seed, t) : 0,
  );
  // the drawn labels as the next tokens give the same gradient
  const shifted = [tokens[0], ...labels.slice(0, T - 1)];
  const sampled = crossEntropy64(logits, tokens, V, seed);
  const asTokens = crossEntropy64(logits, shifted, V);
  assert.deepEqual(sampled.dLogits, asTokens.dLogits);
  assert.equal(sampled.loss, crossEntropy64(logits, tokens, V).loss);
  assert.notDeepEqual(labels.slice(0, T - 1), tokens.slice(1), "the labels are not the data");
});

Deno.test("sampledLabel draws labels with the softmax probabilities", () => {
  const logits = [0.5, -1, 2, 0, 1.2];
  const z = logits.reduce((a, x) => a + Math.exp(x), 0);
  const p = logits.map((x) => Math.exp(x) / z);
  const draws = 20000;
  const counts = new Array(logits.length).fill(0);
  for (let t = 0; t < draws; t++) counts[sampledLabel(logits, 99, t)]++;
  let chi2 = 0;
  for (let j = 0; j < logits.length; j++) chi2 += (counts[j] - draws * p[j]) ** 2 / (draws * p[j]);
  // 4 degrees of freedom: P(chi2 > 18.5) is about 0.001
  assert.ok(chi2 < 18.5, `chi-square ${chi2.toFixed(2)} for counts ${counts}`);
  const other = Array.from({ length: 50 }, (_, t) => sampledLabel(logits, 100, t));
  const same = Array.from({ length: 50 }, (_, t) => sampledLabel(logits, 99, t));
  assert.notDeepEqual(other, same, "another seed draws other labels");
});

Deno.test("pcgHash wraps to 32 bits like the WGSL u32 arithmetic", () => {
  // reference values from the published PCG hash, computed with BigInt arithmetic
  const pcgBig = (v: number) => {
    const m = (x: bigint) => x & 0xffffffffn;
    const state = m(BigInt(v) * 747796405n + 2891336453n);
    const word = m(((state >> ((state >> 28n) + 4n)) ^ state) * 277803737n);
    return Number((word >> 22n) ^ word);
  };
  for (const v of [0, 1, 2, 12345, 0x7fffffff, 0xffffffff]) assert.equal(pcgHash(v), pcgBig(v));
  assert.equal(pcgHash(2 ** 32 + 5), pcgHash(5));
  assert.notEqual(sequenceLabelSeed(3, 0), sequenceLabelSeed(4, 0));
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
