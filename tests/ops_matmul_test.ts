import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { matmul, MATMUL_MAX_K, type MatmulArgs } from "../src/ops/matmul.ts";
import { matmulRef } from "../src/ops/matmul_ref.ts";
import { Rng } from "../src/util/rng.ts";

function randomArray(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

type Case = Omit<MatmulArgs, "a" | "b" | "c"> & { name: string };

/** Runs one case on the GPU and on the reference; returns the max error over the max |C|. */
async function compare(gpu: GpuContext, spec: Case, seed: number): Promise<number> {
  const rng = new Rng(seed);
  const { m, n, k } = spec;
  const transA = spec.transA ?? false, transB = spec.transB ?? false;
  const lda = spec.lda ?? (transA ? m : k), ldb = spec.ldb ?? (transB ? k : n), ldc = spec.ldc ?? n;
  const aLen = (spec.aOffset ?? 0) + (transA ? k : m) * lda;
  const bLen = (spec.bOffset ?? 0) + (transB ? n : k) * ldb;
  const cLen = (spec.cOffset ?? 0) + m * ldc;
  // at least one element each: an empty upload is not a valid buffer write
  const a = randomArray(rng, Math.max(aLen, 1)), b = randomArray(rng, Math.max(bLen, 1));
  const c = randomArray(rng, cLen);
  const bufA = gpu.upload(a), bufB = gpu.upload(b), bufC = gpu.upload(c);
  const batch = gpu.batch();
  await matmul(gpu, batch, { ...spec, a: bufA, b: bufB, c: bufC });
  const read = batch.read(bufC);
  await batch.submit();
  const got = read.f32();
  matmulRef({ ...spec, a, b, c });
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < cLen; i++) {
    maxErr = Math.max(maxErr, Math.abs(got[i] - c[i]));
    maxRef = Math.max(maxRef, Math.abs(c[i]));
  }
  for (const buf of [bufA, bufB, bufC]) gpu.release(buf);
  return maxRef > 0 ? maxErr / maxRef : maxErr;
}

// name | m n k | layout: sizes 33..45 cross the 32-wide workgroup tile; k % 4 != 0 takes the
// scalar kernel, k % 4 == 0 (with aligned strides) the vec4 one
const cases: Case[] = [
  { name: "NT scalar", m: 37, n: 45, k: 29, transB: true },
  { name: "NT vec4", m: 37, n: 45, k: 68, transB: true },
  { name: "NN scalar", m: 33, n: 41, k: 30 },
  { name: "NN vec4", m: 33, n: 44, k: 28 },
  { name: "TN scalar", m: 35, n: 40, k: 19, transA: true },
  { name: "TN vec4", m: 36, n: 40, k: 19, transA: true },
  { name: "TT scalar", m: 34, n: 39, k: 21, transA: true, transB: true },
  { name: "TT vec4", m: 36, n: 39, k: 24, transA: true, transB: true },
  { name: "accumulate vec4", m: 5, n: 70, k: 64, transB: true, accumulate: true },
  { name: "accumulate scalar", m: 5, n: 70, k: 63, transB: true, accumulate: true },
  {
    name: "strides and offsets vec4",
    m: 9,
    n: 13,
    k: 20,
    transB: true,
    lda: 24,
    ldb: 28,
    ldc: 17,
    aOffset: 8,
    bOffset: 4,
    cOffset: 3,
  },
  {
    name: "unaligned offsets scalar",
    m: 9,
    n: 13,
    k: 20,
    transB: true,
    lda: 24,
    ldb: 28,
    ldc: 17,
    aOffset: 5,
    bOffset: 4,
    cOffset: 3,
  },
  { name: "single row (decode shape)", m: 1, n: 129, k: 64, transB: true },
  { name: "empty inner dimension", m: 3, n: 5, k: 0 },
];

Deno.test("matmul matches matmulRef on every layout", async (t) => {
  const gpu = await GpuContext.create();
  try {
    for (const [i, spec] of cases.entries()) {
      await t.step(spec.name, async () => {
        const err = await compare(gpu, spec, 100 + i);
        assert.ok(err < 1e-5, `${spec.name}: relative error ${err}`);
      });
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("matmul splits an inner dimension above the loop cap", async () => {
  // k / 4 = 65550 iterations would pass the 65535 cap in one invocation
  const k = 4 * 65550;
  assert.ok(k > MATMUL_MAX_K);
  const gpu = await GpuContext.create();
  try {
    for (
      const spec of [
        { name: "vec4", m: 3, n: 5, k, transB: true },
        { name: "scalar", m: 3, n: 5, k: k + 1, transB: true },
      ]
    ) {
      const err = await compare(gpu, spec, 7);
      assert.ok(err < 1e-4, `${spec.name}: relative error ${err}`);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("matmul rejects an operand that runs past its buffer", async () => {
  const gpu = await GpuContext.create();
  try {
    const a = gpu.createBuffer(4 * 8), b = gpu.createBuffer(4 * 8), c = gpu.createBuffer(4 * 4);
    await assert.rejects(() => matmul(gpu, gpu.batch(), { a, b, c, m: 2, n: 2, k: 5 }), /matmul A/);
  } finally {
    gpu.destroy();
  }
});
