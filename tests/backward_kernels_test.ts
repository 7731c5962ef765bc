import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { Rng } from "../src/util/rng.ts";
import {
  crossEntropy64,
  crossEntropyBackward,
  sequenceLabelSeed,
} from "../src/ops/cross_entropy_backward.ts";
import { ShapeError } from "../src/errors.ts";
import {
  rmsnormBackward,
  rmsnormBackward64,
  rmsnormWeightBackward,
} from "../src/ops/rmsnorm_backward.ts";
import {
  attentionBackward64,
  attentionForward64,
  causalSoftmax,
  softmaxBackward,
} from "../src/ops/attention_backward.ts";
import { swigluBackward, swigluBackward64 } from "../src/ops/swiglu_backward.ts";
import { embeddingBackward, embeddingBackward64 } from "../src/ops/embedding_backward.ts";
import { ropeBackward64, ropeBackwardTable } from "../src/ops/rope_backward.ts";
import { linear } from "../src/ops/linear.ts";
import {
  linearBackward64,
  linearBackwardGpu,
  linearForward64,
  linearWeightGradGpu,
} from "../src/ops/linear_backward.ts";
import { statsColsum, statsColsumRef } from "../src/ops/stats_colsum.ts";
import { statsGrad, statsGradRef } from "../src/ops/stats_grad.ts";
import { rope } from "../src/ops/rope.ts";
import { uploadMatrix } from "../src/ops/gpu_matrix.ts";
import { randn } from "./backward_fd.ts";

async function withGpu(fn: (gpu: GpuContext) => Promise<void>): Promise<void> {
  const gpu = await GpuContext.create();
  try {
    await fn(gpu);
  } finally {
    gpu.destroy();
  }
}

/** Asserts max |got - want| <= tol * max |want|. */
function assertClose(
  label: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol = 1e-5,
): void {
  assert.equal(got.length, want.length, `${label}: length`);
  let scale = 0, worst = 0, at = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= worst)) [worst, at] = [e, i];
  }
  assert.ok(
    worst <= tol * scale,
    `${label}: element ${at} is ${got[at]}, expected ${
      want[at]
    } (error ${worst} > ${tol} * ${scale})`,
  );
}

const f32 = (x: Float64Array) => Float32Array.from(x);

Deno.test("crossEntropyBackward kernel matches the reference in row chunks", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(31);
    const T = 67, V = 131; // rows past one workgroup grid row, vocab past two workgroups of 64
    const tokens = Array.from({ length: T }, () => rng.nextInt(V));
    const logits = randn(T * V, rng, 3);
    const want = crossEntropy64(logits, tokens, V);
    const ids = gpu.upload(Uint32Array.from(tokens));
    const buf = gpu.upload(f32(logits));
    const losses = gpu.createBuffer(4 * T);
    const batch = gpu.batch();
    // two chunks: rows [0, 40) and [40, 67), the second including the last position
    await crossEntropyBackward(gpu, batch, {
      tokens: ids,
      logits: buf,
      losses,
      rows: 40,
      vocab: V,
      row0: 0,
      seqLen: T,
    });
    await crossEntropyBackward(gpu, batch, {
      tokens: ids,
      logits: buf,
      losses,
      rows: 27,
      vocab: V,
      row0: 40,
      seqLen: T,
      logitsOffset: 40 * V,
    });
    const d = batch.read(buf), l = batch.read(losses);
    await batch.submit();
    assertClose("dLogits", d.f32(), want.dLogits);
    const loss = l.f32().reduce((a, b) => a + b, 0) / (T - 1);
    assert.ok(Math.abs(loss - want.loss) < 1e-5 * want.loss, `loss ${loss} vs ${want.loss}`);
  });
});

Deno.test("crossEntropyBackward kernel draws the reference's sampled labels", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(33);
    const T = 67, V = 131;
    const tokens = Array.from({ length: T }, () => rng.nextInt(V));
    const logits = randn(T * V, rng, 3);
    const seed = sequenceLabelSeed(7, 3);
    const want = crossEntropy64(logits, tokens, V, seed);
    assert.notDeepEqual(want.dLogits, crossEntropy64(logits, tokens, V).dLogits);
    const ids = gpu.upload(Uint32Array.from(tokens));
    const buf = gpu.upload(f32(logits));
    const losses = gpu.createBuffer(4 * T);
    const batch = gpu.batch();
    // two chunks, so the row index that seeds the draw must be global, not chunk-local
    for (const [row0, rows] of [[0, 40], [40, 27]]) {
      await crossEntropyBackward(gpu, batch, {
        tokens: ids,
        logits: buf,
        losses,
        rows,
        vocab: V,
        row0,
        seqLen: T,
        logitsOffset: row0 * V,
        labelSeed: seed,
      });
    }
    const d = batch.read(buf), l = batch.read(losses);
    await batch.submit();
    // a label drawn differently would move two entries of its row by 1 / (T - 1)
    assertClose("dLogits", d.f32(), want.dLogits);
    const loss = l.f32().reduce((a, b) => a + b, 0) / (T - 1);
    assert.ok(Math.abs(loss - want.loss) < 1e-5 * want.loss, `loss ${loss} vs ${want.loss}`);
  });
});

Deno.test("crossEntropyBackward rejects a vocabulary whose sampled pass would cross the loop cap", async () => {
  await withGpu(async (gpu) => {
    // 15000 columns per invocation: three passes fit under the cap, four do not
    const V = 64 * 15000;
    const ids = gpu.upload(new Uint32Array([0, 1]));
    const buf = gpu.createBuffer(4 * 2 * V);
    const losses = gpu.createBuffer(8);
    const args = { tokens: ids, logits: buf, losses, rows: 2, vocab: V, row0: 0, seqLen: 2 };
    await assert.rejects(
      crossEntropyBackward(gpu, gpu.batch(), { ...args, labelSeed: 1 }),
      (err: Error) => err instanceof ShapeError && /loop cap/.test(err.message),
    );
  });
});

Deno.test("rmsnormBackward kernels match the reference", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(32);
    const T = 9, n = 131;
    const x = randn(T * n, rng),
      dy = randn(T * n, rng),
      w = randn(n, rng),
      prior = randn(T * n, rng);
    const want = rmsnormBackward64(x, dy, T, n, w, 1e-5);
    const bx = gpu.upload(f32(x)), bdy = gpu.upload(f32(dy)), bw = gpu.upload(f32(w));
    const dx = gpu.upload(f32(prior)), rstd = gpu.createBuffer(4 * T), dw = gpu.createBuffer(4 * n);
    const batch = gpu.batch();
    await rmsnormBackward(gpu, batch, {
      x: bx,
      dy: bdy,
      weight: bw,
      dx,
      rstd,
      rows: T,
      dim: n,
      eps: 1e-5,
      accumulate: true,
    });
    await rmsnormWeightBackward(gpu, batch, { x: bx, dy: bdy, rstd, dw, rows: T, dim: n });
    const rdx = batch.read(dx), rdw = batch.read(dw);
    await batch.submit();
    assertClose("dx", rdx.f32(), want.dx.map((v, i) => v + prior[i]));
    assertClose("dw", rdw.f32(), want.dw);
  });
});

Deno.test("rmsnormWeightBackward splits rows above the loop cap", async () => {
  await withGpu(async (gpu) => {
    const T = 65600, n = 3; // one invocation would loop 65600 times
    const x = new Float32Array(T * n).fill(1),
      dy = new Float32Array(T * n).fill(0.5),
      r = new Float32Array(T).fill(2);
    const dw = gpu.createBuffer(4 * n);
    const batch = gpu.batch();
    await rmsnormWeightBackward(gpu, batch, {
      x: gpu.upload(x),
      dy: gpu.upload(dy),
      rstd: gpu.upload(r),
      dw,
      rows: T,
      dim: n,
    });
    const out = batch.read(dw);
    await batch.submit();
    assert.deepEqual([...out.f32()], [T, T, T]);
  });
});

Deno.test("causal softmax and softmaxBackward kernels give attention gradients", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(33);
    const T = 70, d = 5; // T past one workgroup of 64
    const q = randn(T * d, rng),
      k = randn(T * d, rng),
      v = randn(T * d, rng),
      dOut = randn(T * d, rng);
    const p = { heads: 1, kvHeads: 1, headDim: d };
    const { probs, out } = attentionForward64(q, k, v, T, p);
    const want = attentionBackward64(q, k, v, probs, dOut, T, p);
    const scale = 1 / Math.sqrt(d);
    // S = Q K^T and dP = dO V^T computed on the host, so the test isolates the two kernels
    const s = new Float64Array(T * T), dp = new Float64Array(T * T);
    for (let t = 0; t < T; t++) {
      for (let u = 0; u < T; u++) {
        for (let i = 0; i < d; i++) {
          s[t * T + u] += q[t * d + i] * k[u * d + i];
          dp[t * T + u] += dOut[t * d + i] * v[u * d + i];
        }
      }
    }
    const bs = gpu.upload(f32(s)), bdp = gpu.upload(f32(dp));
    const batch = gpu.batch();
    await causalSoftmax(gpu, batch, { scores: bs, T, scale });
    await softmaxBackward(gpu, batch, { probs: bs, dp: bdp, T, scale });
    const rp = batch.read(bs), rds = batch.read(bdp);
    await batch.submit();
    const gp = rp.f32();
    assertClose("probs", gp, probs);
    // dq = dS K with dS from the kernel must equal the reference dq
    const ds = rds.f32(), dq = new Float64Array(T * d), o = new Float64Array(T * d);
    for (let t = 0; t < T; t++) {
      for (let u = 0; u < T; u++) {
        for (let i = 0; i < d; i++) {
          dq[t * d + i] += ds[t * T + u] * k[u * d + i];
          o[t * d + i] += gp[t * T + u] * v[u * d + i];
        }
      }
    }
    assertClose("dq", dq, want.dq, 1e-4);
    assertClose("out", o, out, 1e-5);
  });
});

Deno.test("swigluBackward kernel matches the reference", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(34);
    const n = 4099;
    const g = randn(n, rng, 3), u = randn(n, rng), dh = randn(n, rng);
    const want = swigluBackward64(g, u, dh);
    const bg = gpu.upload(f32(g)), bu = gpu.upload(f32(u));
    const batch = gpu.batch();
    await swigluBackward(gpu, batch, { dh: gpu.upload(f32(dh)), g: bg, u: bu, n });
    const rg = batch.read(bg), ru = batch.read(bu);
    await batch.submit();
    assertClose("dg", rg.f32(), want.dg);
    assertClose("du", ru.f32(), want.du);
  });
});

Deno.test("embeddingBackward kernel adds repeated tokens across table chunks", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(35);
    const V = 11, dim = 67, T = 66000; // tokens above the loop cap; table split in 3-row chunks
    const tokens = Array.from({ length: T }, () => rng.nextInt(V));
    const dx = randn(T * dim, rng);
    const want = new Float64Array(V * dim);
    embeddingBackward64(want, dx, dim, tokens);
    const table = uploadMatrix(gpu, new Float32Array(V * dim), V, dim, "dE", 3 * dim * 4);
    assert.equal(table.chunks.length, 4);
    const batch = gpu.batch();
    await embeddingBackward(gpu, batch, {
      ids: gpu.upload(Uint32Array.from(tokens)),
      dx: gpu.upload(f32(dx)),
      table,
      tokens: T,
    });
    const reads = table.chunks.map((c) => batch.read(c.buffer));
    await batch.submit();
    const got = new Float32Array(V * dim);
    table.chunks.forEach((c, i) => got.set(reads[i].f32(), c.row0 * dim));
    assertClose("dE", got, want, 1e-4);
  });
});

Deno.test("rope with the backward table inverts the rotation", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(36);
    for (const style of ["adjacent", "half"] as const) {
      const T = 13, heads = 3, hd = 6;
      const dy = randn(T * heads * hd, rng);
      const want = ropeBackward64(dy, T, { heads, headDim: hd, theta: 10000, style, startPos: 4 });
      const x = gpu.upload(f32(dy));
      const batch = gpu.batch();
      await rope(gpu, batch, {
        x,
        table: gpu.upload(ropeBackwardTable(32, hd, 10000)),
        rows: T,
        nHeads: heads,
        headDim: hd,
        pos0: 4,
        style,
      });
      const r = batch.read(x);
      await batch.submit();
      assertClose(style, r.f32(), want);
    }
  });
});

Deno.test("linear GPU products match the reference with a chunked weight", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(37);
    const T = 7, n = 13, m = 17;
    const x = randn(T * n, rng), w = randn(m * n, rng), dy = randn(T * m, rng);
    const want = linearBackward64(x, dy, T, n, w, m);
    const wm = uploadMatrix(gpu, f32(w), m, n, "w", 5 * n * 4); // chunks of 5 rows
    const bx = gpu.upload(f32(x)), bdy = gpu.upload(f32(dy));
    const y = gpu.createBuffer(4 * T * m),
      dx = gpu.createBuffer(4 * T * n),
      g = gpu.createBuffer(4 * m * n);
    const batch = gpu.batch();
    await linear(gpu, batch, { x: bx, w: wm, y, rows: T });
    await linearBackwardGpu(gpu, batch, { w: wm, x: bx, T }, bdy, dx, false);
    for (const chunk of wm.chunks) {
      await linearWeightGradGpu(gpu, batch, { w: wm, x: bx, T }, bdy, chunk, g);
      batch.copy(g, 0, chunk.buffer, 0, chunk.rows * n * 4); // reuse the chunk to keep its rows
    }
    const ry = batch.read(y), rdx = batch.read(dx);
    const rw = wm.chunks.map((c) => batch.read(c.buffer));
    await batch.submit();
    assertClose("y", ry.f32(), linearForward64(x, T, n, w, m));
    assertClose("dx", rdx.f32(), want.dx);
    const dw = new Float32Array(m * n);
    wm.chunks.forEach((c, i) => dw.set(rw[i].f32(), c.row0 * n));
    assertClose("dW", dw, want.dw);
  });
});

Deno.test("stats kernels match the reference above the loop cap", async () => {
  await withGpu(async (gpu) => {
    const rng = new Rng(38);
    const rows = 70001, cols = 3;
    const x = randn(rows * cols, rng);
    const sq = new Float64Array(cols), plain = new Float64Array(cols);
    statsColsumRef(sq, x, rows, cols, true);
    statsColsumRef(plain, x, rows, cols, false);
    const bx = gpu.upload(f32(x)),
      bsq = gpu.createBuffer(4 * cols),
      bplain = gpu.createBuffer(4 * cols);
    const g = randn(131, rng), sum = new Float64Array(131), sumSq = new Float64Array(131);
    statsGradRef(g, sum, sumSq);
    statsGradRef(g, sum, sumSq);
    const bg = gpu.upload(f32(g)),
      bsum = gpu.createBuffer(4 * 131),
      bsumSq = gpu.createBuffer(4 * 131);
    const batch = gpu.batch();
    await statsColsum(gpu, batch, { x: bx, out: bsq, rows, cols, square: true });
    await statsColsum(gpu, batch, { x: bx, out: bplain, rows, cols, square: false });
    await statsGrad(gpu, batch, { g: bg, sum: bsum, sumSq: bsumSq, n: 131 });
    await statsGrad(gpu, batch, { g: bg, sum: bsum, sumSq: bsumSq, n: 131 });
    const r = [bsq, bplain, bsum, bsumSq].map((b) => batch.read(b));
    await batch.submit();
    assertClose("square", r[0].f32(), sq, 1e-4);
    assertClose("plain", r[1].f32(), plain, 1e-3);
    assertClose("sum", r[2].f32(), sum);
    assertClose("sumSq", r[3].f32(), sumSq);
  });
});
