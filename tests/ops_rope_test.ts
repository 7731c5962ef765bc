import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { rope, ropeTable } from "../src/ops/rope.ts";
import { ropeRef } from "../src/ops/rope_ref.ts";
import { Rng } from "../src/util/rng.ts";
import { ShapeError } from "../src/errors.ts";

// style | rows from pos0 | heads x head width | row layout (stride, offset)
const cases = [
  { style: "adjacent", rows: 37, pos0: 0, nHeads: 3, headDim: 6, rowStride: 18, offset: 0 },
  { style: "half", rows: 37, pos0: 0, nHeads: 3, headDim: 6, rowStride: 18, offset: 0 },
  { style: "adjacent", rows: 3, pos0: 2040, nHeads: 9, headDim: 64, rowStride: 576, offset: 0 },
  { style: "half", rows: 3, pos0: 2040, nHeads: 9, headDim: 64, rowStride: 576, offset: 0 },
  { style: "half", rows: 4, pos0: 17, nHeads: 2, headDim: 8, rowStride: 24, offset: 5 },
] as const;

Deno.test("rope matches ropeRef in both pairing styles", async (t) => {
  const gpu = await GpuContext.create();
  try {
    const theta = 10000, positions = 2048;
    const tables = new Map<number, GPUBuffer>();
    for (const [i, c] of cases.entries()) {
      await t.step(
        `${c.style}, ${c.rows} rows from position ${c.pos0}, head width ${c.headDim}`,
        async () => {
          if (!tables.has(c.headDim)) {
            tables.set(c.headDim, gpu.upload(ropeTable(positions, c.headDim, theta)));
          }
          const rng = new Rng(20 + i);
          const x = Float32Array.from(
            { length: c.offset + c.rows * c.rowStride },
            () => rng.normal(),
          );
          const buffer = gpu.upload(x);
          const batch = gpu.batch();
          await rope(gpu, batch, { ...c, x: buffer, table: tables.get(c.headDim)! });
          const read = batch.read(buffer);
          await batch.submit();
          const got = read.f32();
          ropeRef({ ...c, x, theta });
          for (let j = 0; j < x.length; j++) {
            assert.ok(
              Math.abs(got[j] - x[j]) < 2e-6 * Math.max(1, Math.abs(x[j])),
              `element ${j}: ${got[j]} vs ${x[j]}`,
            );
          }
          gpu.release(buffer);
        },
      );
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("rope rejects positions past its table", async () => {
  const gpu = await GpuContext.create();
  try {
    const table = gpu.upload(ropeTable(8, 4, 10000));
    const x = gpu.createBuffer(4 * 4 * 2);
    await assert.rejects(
      () =>
        rope(gpu, gpu.batch(), {
          x,
          table,
          rows: 2,
          nHeads: 1,
          headDim: 4,
          pos0: 7,
          style: "half",
        }),
      (err: Error) => err instanceof ShapeError && /exceed the table/.test(err.message),
    );
  } finally {
    gpu.destroy();
  }
});
