import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { matvec, MATVEC_MAX_K, type MatvecArgs } from "../src/ops/matvec.ts";
import { matvecRef } from "../src/ops/matvec_ref.ts";
import { Rng } from "../src/util/rng.ts";

type Case = Omit<MatvecArgs, "w" | "x" | "y"> & { name: string };

async function relativeError(gpu: GpuContext, c: Case, seed: number): Promise<number> {
  const rng = new Rng(seed);
  const ldw = c.ldw ?? c.k;
  const w = Float32Array.from({ length: (c.wOffset ?? 0) + c.n * ldw }, () => rng.normal());
  const x = Float32Array.from({ length: (c.xOffset ?? 0) + c.k }, () => rng.normal());
  const y = Float32Array.from({ length: (c.yOffset ?? 0) + c.n }, () => rng.normal());
  const buffers = { w: gpu.upload(w), x: gpu.upload(x), y: gpu.upload(y) };
  const batch = gpu.batch();
  await matvec(gpu, batch, { ...c, ...buffers });
  const read = batch.read(buffers.y);
  await batch.submit();
  const got = read.f32();
  matvecRef({ ...c, w, x, y });
  let err = 0, max = 0;
  for (let i = 0; i < y.length; i++) {
    err = Math.max(err, Math.abs(got[i] - y[i]));
    max = Math.max(max, Math.abs(y[i]));
  }
  for (const b of Object.values(buffers)) gpu.release(b);
  return err / max;
}

// name | rows n (crossing 4 x 64-row workgroups at 256) | columns k | layout
const cases: Case[] = [
  { name: "vec4 kernel, rows past a workgroup", n: 259, k: 68 },
  { name: "vec4 kernel, accumulate", n: 7, k: 64, accumulate: true },
  {
    name: "vec4 kernel, strides and offsets",
    n: 13,
    k: 20,
    ldw: 28,
    wOffset: 8,
    xOffset: 4,
    yOffset: 5,
  },
  { name: "unaligned k falls back to matmul", n: 37, k: 30 },
  {
    name: "unaligned offset falls back to matmul, accumulate",
    n: 9,
    k: 16,
    xOffset: 3,
    accumulate: true,
  },
];

Deno.test("matvec matches matvecRef", async (t) => {
  const gpu = await GpuContext.create();
  try {
    for (const [i, c] of cases.entries()) {
      await t.step(c.name, async () => {
        const err = await relativeError(gpu, c, 30 + i);
        assert.ok(err < 1e-5, `${c.name}: relative error ${err}`);
      });
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("matvec splits columns above the loop cap", async () => {
  const gpu = await GpuContext.create();
  try {
    const k = 4 * 65600;
    assert.ok(k > MATVEC_MAX_K);
    // more than 65535 vec4 steps in one row
    assert.ok(k / 4 > 65535);
    const err = await relativeError(gpu, { name: "long rows", n: 3, k }, 5);
    assert.ok(err < 1e-4, `relative error ${err}`);
  } finally {
    gpu.destroy();
  }
});
